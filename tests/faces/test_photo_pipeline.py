"""Photos in, portraits out: a face model's whole pipeline through the Python API and `matebit translate`.

The correspondence is checked in the user's coordinates: a point of the structure photo is matched in a copy of
that photo moved by a known similarity transform, and must be found where the transform puts it (the two
alignments and the model's match composed)."""

import shutil

import cv2
import numpy as np
import pytest
from faces_helpers import needs_hed
from PIL import Image

from matebit.align import find_face
from matebit.cli import run
from matebit.errors import InputError
from matebit.image_processor import PROCESSOR_FILE

pytest.importorskip("dlib")
pytestmark = needs_hed


@pytest.fixture(scope="module")
def translator(face_model):
    from matebit.inference import Translator

    return Translator.from_pretrained(face_model, dtype="fp32")


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


def _move(image: np.ndarray, angle=14.0, scale=0.85, shift=(30, -18)):
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
    m[:, 2] += shift
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE), m


def test_a_point_is_found_where_the_move_puts_it(translator, astronaut):
    moved, m = _move(astronaut)
    result = translator(Image.fromarray(astronaut), Image.fromarray(moved), from_photo="hed")
    assert result.image.size == (128, 128)  # the aligned portrait at the model's size
    lm = find_face(astronaut).landmarks
    points = lm[[36, 39, 42, 45, 30, 33, 48, 54, 57, 8]]
    truth = points @ m[:, :2].T + m[:, 2]
    found = result.match(points)
    err = np.linalg.norm(found - truth, axis=1)
    # Same person, so the model's correspondence is near the identity in the aligned frame: within a token's reach
    # (8 px of the 128 px crop, about 22 px of this photo, where the face is 90 px wide and the crop 330 px).
    assert np.median(err) < 0.05 * 512 and (err < 0.1 * 512).mean() >= 0.8
    masked, full = result.correspondence(points[:3])
    assert masked.shape == full.shape == (3, 512, 512)
    assert np.allclose(masked.sum((1, 2)), 1, atol=1e-4)
    peak = np.stack(np.unravel_index(masked.reshape(3, -1).argmax(1), (512, 512)), 1)[:, ::-1]
    assert np.linalg.norm(peak - truth[:3], axis=1).max() < 0.1 * 512


def test_points_outside_the_aligned_crop_are_refused(translator, astronaut):
    result = translator(Image.fromarray(astronaut), Image.fromarray(astronaut), from_photo="hed")
    with pytest.raises(InputError, match="outside the aligned face crop"):
        result.match([[2, 505]])
    with pytest.raises(InputError, match="outside the 512x512 structure image"):
        result.match([[600, 10]])


def test_paste_back_returns_the_photo_frame(translator, astronaut):
    out = translator(Image.fromarray(astronaut), Image.fromarray(astronaut), from_photo="hed", paste_back=True).image
    assert out.size == (512, 512)
    a = np.asarray(out)
    assert np.array_equal(a[480:, :40], astronaut[480:, :40])  # far from the face, the photo itself


def test_align_false_skips_the_alignment(translator, astronaut):
    result = translator(Image.fromarray(astronaut), Image.fromarray(astronaut), from_photo="hed", align=False)
    assert result.photos[0].structure_align is None and result.photos[0].exemplar_align is None


def test_align_true_needs_a_face_model(astronaut, face_model, tmp_path):
    from matebit.inference import Translator

    plain = tmp_path / "plain"  # the same weights with no face template: not a face model
    shutil.copytree(face_model, plain)
    (plain / PROCESSOR_FILE).unlink()
    with pytest.raises(InputError, match="no face template"):
        Translator.from_pretrained(plain)(Image.fromarray(astronaut), Image.fromarray(astronaut), from_photo="hed",
                                          align=True)


# -- the command line ------------------------------------------------------------------------------------------


def _photo(path, image):
    Image.fromarray(image).save(path)
    return str(path)


def test_translate_a_small_off_centre_face_on_a_coloured_backdrop(face_model, astronaut, tmp_path, capsys):
    canvas = np.empty((600, 900, 3), np.uint8)
    canvas[:] = (200, 60, 160)
    head = np.asarray(Image.fromarray(astronaut[30:290, 100:360]).resize((180, 180), Image.LANCZOS))
    canvas[60:240, 600:780] = head  # the face spans about a tenth of the width, top right
    s = _photo(tmp_path / "small.png", canvas)
    e = _photo(tmp_path / "ex.jpg", astronaut)
    out = tmp_path / "out.png"
    assert run(["translate", "--model", str(face_model), "--from-photo", "hed", "--structure", s, "--exemplar", e,
                "--out", str(out)]) == 0
    assert Image.open(out).size == (128, 128)
    pasted = tmp_path / "pasted.png"
    assert run(["translate", "--model", str(face_model), "--from-photo", "hed", "--structure", s, "--exemplar", e,
                "--out", str(pasted), "--paste-back"]) == 0
    assert Image.open(pasted).size == (900, 600)
    raw = tmp_path / "raw.png"
    assert run(["translate", "--model", str(face_model), "--from-photo", "hed", "--structure", s, "--exemplar", e,
                "--out", str(raw), "--no-align"]) == 0
    assert Image.open(raw).size == (900, 600)  # no alignment: the structure photo's own frame, as other models


def test_a_photo_without_a_face_exits_2_and_writes_nothing(face_model, astronaut, tmp_path, capsys):
    rng = np.random.default_rng(1)
    s = _photo(tmp_path / "wall.png", (rng.random((300, 300, 3)) * 60 + 100).astype(np.uint8))
    e = _photo(tmp_path / "ex.png", astronaut)
    out = tmp_path / "out.png"
    code = run(["translate", "--model", str(face_model), "--from-photo", "hed", "--structure", s, "--exemplar", e,
                "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert len(err) == 1 and "wall.png" in err[0] and "no face found" in err[0]


def test_paste_back_needs_a_face_model_and_a_photo(face_model, astronaut, tmp_path, capsys):
    s = _photo(tmp_path / "s.png", astronaut)
    code = run(["translate", "--model", str(face_model), "--structure", s, "--exemplar", s,
                "--out", str(tmp_path / "o.png"), "--paste-back"])
    assert code == 2 and "--paste-back needs --from-photo" in capsys.readouterr().err


def test_the_web_app_aligns_photos_for_a_face_model(translator, astronaut, tmp_path):
    from matebit.app import ServeApp

    photo = _photo(tmp_path / "p.png", astronaut)
    app = ServeApp(translator)
    structure = app.convert_photo(photo, "hed")
    assert structure.size == (128, 128)  # the aligned face's HED map at the model's size
    t = app.translate(structure, photo)
    assert t.output.size == (128, 128)
    marked, masked, full = app.correspondence(structure, t.exemplar, 64, 60)  # a point between the eyes
    assert masked.size == t.exemplar.size  # heat maps over the exemplar photo as uploaded


def test_without_the_landmarks_extra_a_face_model_says_what_to_install(face_model, astronaut, tmp_path, capsys,
                                                                        monkeypatch):
    import sys

    from matebit import align

    align._dlib_models.cache_clear()
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` now fails as if it were not installed
    try:
        s = _photo(tmp_path / "s.png", astronaut)
        code = run(["translate", "--model", str(face_model), "--from-photo", "hed", "--structure", s,
                    "--exemplar", s, "--out", str(tmp_path / "o.png")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "pip install -e '.[landmarks]'" in err[0]
        assert not (tmp_path / "o.png").exists()
    finally:
        align._dlib_models.cache_clear()
