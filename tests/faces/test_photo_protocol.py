"""The moved-exemplar protocol on photos (`matebit eval moved --photos`): landmark files of both formats, the cheek
colour, the pooled PCK and its baselines, failures counted as misses, and the command's output files."""

import json

import numpy as np
import pytest
from PIL import Image

from matebit.cli import run
from matebit.errors import InputError
from matebit.metrics.moved import (PhotoMovedSettings, cheek_colour, evaluate_moved_photos, landmarked_photos,
                                   summarise_photo_draws)

pytest.importorskip("dlib")


def test_landmark_files_of_both_formats_and_identities(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "001_03.jpg")
    (tmp_path / "001_03.json").write_text(json.dumps({"size": [80, 60], "points": [[10, 20], [30, 40]]}))
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (50, 50)).save(tmp_path / "sub" / "anna.png")
    (tmp_path / "sub" / "anna.tem").write_text("2\n5 6\n7 8\n1\n0 1\n")
    Image.new("RGB", (10, 10)).save(tmp_path / "no_landmarks.png")
    photos = landmarked_photos(tmp_path)
    assert [p.identity for p in photos] == ["001", "anna"]
    # The JSON was written for a photo twice the size: its points are scaled to this one (pixel centres).
    assert np.allclose(photos[0].landmarks, [[4.75, 9.75], [14.75, 19.75]])
    assert np.allclose(photos[1].landmarks, [[5, 6], [7, 8]])
    assert [p.identity for p in landmarked_photos(tmp_path, ["anna"])] == ["anna"]
    (tmp_path / "sub" / "anna.tem").write_text("3\n5 6\n7 8\n9 9\n")
    with pytest.raises(InputError, match="different templates"):
        landmarked_photos(tmp_path)


def test_cheek_colour_reads_both_cheeks():
    from skimage import data

    from matebit.align import find_face

    img = data.astronaut().copy()
    lm = find_face(img).landmarks
    lab = cheek_colour(img, lm)
    assert 40 < lab[0] < 90 and lab[1] > 0  # skin: light and reddish
    img[:] = (0, 0, 255)
    assert cheek_colour(img, lm)[2] < -50  # pure blue reads blue


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    """Four 'people' (the astronaut under colour shifts), each with dlib's landmarks as the truth."""
    from skimage import data

    from matebit.align import find_face

    root = tmp_path_factory.mktemp("photos")
    img = data.astronaut()
    lm = find_face(img).landmarks
    for i, gains in enumerate(((1, 1, 1), (1.1, 0.9, 0.9), (0.9, 1, 1.1), (0.8, 0.8, 0.8))):
        Image.fromarray(np.clip(img * np.array(gains), 0, 255).astype(np.uint8)).save(root / f"p{i}.png")
        (root / f"p{i}.json").write_text(json.dumps({"size": [512, 512], "points": lm.tolist()}))
    return root


def test_the_protocol_scores_the_pipeline_and_its_baselines(face_model, photo_set):
    photos = landmarked_photos(photo_set)
    report = evaluate_moved_photos(str(face_model), photos, PhotoMovedSettings(pairs=3, seed=1), progress=False)
    rows = report["rows"]
    assert set(rows) == {"MATEBIT (masked rows)", "MATEBIT (full rows)", "identity guess", "alignment guess",
                         "grid ceiling"}
    # The same face in every photo: the alignment carries each landmark back to its place, the identity guess does
    # not (the exemplar is moved), and the grid ceiling is the token quantisation alone.
    assert rows["alignment guess"]["pck@0.05"] > 0.95 and rows["grid ceiling"]["pck@0.1"] == 1.0
    assert rows["identity guess"]["pck@0.05"] < rows["alignment guess"]["pck@0.05"]
    assert report["n_pairs"] == 3 and report["points_kept"] > 0 and report["failed_pairs"] == 0
    assert set(report["skin_colour_error"]) >= {"output_mean", "structure_photo_mean", "pairs_output_closer"}
    summary = summarise_photo_draws([report, report])
    assert summary["rows"]["identity guess"]["pck@0.05"]["sd"] == 0.0 and summary["draws"] == 2


def test_a_pair_without_a_face_counts_as_missed(face_model, photo_set, tmp_path, monkeypatch):
    from matebit.inference import Translator

    photos = landmarked_photos(photo_set)
    translator = Translator.from_pretrained(face_model, dtype="fp32")
    calls = {"n": 0}
    real = translator.processor.exemplar

    def blind_once(photo, align=None, name="exemplar", warn=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise InputError(f"{name}: no face found")
        return real(photo, align, name, warn)

    monkeypatch.setattr(translator.processor, "exemplar", blind_once)
    report = evaluate_moved_photos(translator, photos, PhotoMovedSettings(pairs=2, seed=0), progress=False)
    assert report["failed_pairs"] == 1 and report["pairs"][0]["failure"].endswith("no face found")
    assert report["pairs"][0]["pck"]["MATEBIT (masked rows)"]["pck@0.1"] == 0.0


def test_eval_moved_photos_command(face_model, photo_set, tmp_path, capsys):
    out = tmp_path / "ev"
    assert run(["eval", "moved", "--model", str(face_model), "--photos", str(photo_set), "--pairs", "2",
                "--seeds", "0,1", "--out", str(out)]) == 0
    data = json.loads((out / "moved-photos.json").read_text())
    assert data["seeds"] == [0, 1] and len(data["draws"]) == 2 and (out / "pairs.png").is_file()
    assert "alignment guess" in (out / "moved-photos.md").read_text()
    assert run(["eval", "moved", "--model", str(face_model), "--photos", str(photo_set), "--data", str(photo_set),
                "--out", str(out)]) == 2
