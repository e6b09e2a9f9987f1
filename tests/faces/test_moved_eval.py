"""The moved-exemplar protocol: exact moved truth, seeded pairs of different people, all rows, soft measures."""

import json
import shutil

import numpy as np
import pytest
from faces_helpers import needs_hed

from matebit.cli import run
from matebit.data.faces import prepare_faces, read_identities
from matebit.metrics.moved import (MovedSettings, draw_moved_pairs, evaluate_moved, move_image, move_points,
                                   similarity_matrix)


@pytest.fixture(scope="module")
def setup(fake_london, tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("moved")
    prepare_faces(fake_london, root / "data", size=64, val_identities=3, structure="canny", progress=False)
    shutil.copytree(tiny_models(64), root / "model")
    return root


def test_image_and_points_move_together():
    size = (64, 48)
    img = np.zeros((48, 64, 3), np.uint8)
    pts = np.array([[20.0, 15.0], [40.0, 30.0], [2.0, 2.0]])
    for x, y in pts.astype(int):
        img[y, x] = 255
    m = similarity_matrix(12.0, 1.1, (0.05, -0.03), size)
    moved, inside = move_points(pts, m, size)
    out = move_image(img, m)
    for (x, y), ok in zip(moved, inside):
        if ok:  # the bright pixel lands (bilinearly spread) where the moved point says
            ys, xs = np.nonzero(out[..., 0] > 0)
            assert np.min(np.hypot(xs - x, ys - y)) < 1.0
    far = move_points(np.array([[63.0, 47.0]]), similarity_matrix(0, 1.15, (0.08, 0.08), size), size)[1]
    assert not far[0]  # pushed out of the image: dropped


def test_pairs_are_seeded_and_never_the_same_person(setup):
    data = setup / "data"
    ids = read_identities(data)
    stems = [s for s in (data / "val.txt").read_text().split() if s.endswith("_neutral")]
    a = draw_moved_pairs(stems, ids, MovedSettings(pairs=5, seed=1))
    assert a == draw_moved_pairs(stems, ids, MovedSettings(pairs=5, seed=1))
    assert a != draw_moved_pairs(stems, ids, MovedSettings(pairs=5, seed=2))
    assert len(a) == 5 and all(ids[p.structure] != ids[p.exemplar] for p in a)
    assert all(abs(p.angle) <= 15 and 0.85 <= p.scale <= 1.15 and max(map(abs, p.shift)) <= 0.08 for p in a)
    assert len(draw_moved_pairs(stems, ids, MovedSettings(pairs=None))) == 3 * 2  # every ordered pair


def test_report_rows_and_what_moving_does(setup):
    report = evaluate_moved(setup / "model", setup / "data", MovedSettings(pairs=None, seed=0), image_metrics=(),
                            progress=False)
    assert report.size == 64 and report.n_pairs == 6 and report.n_points + report.dropped_points == 6 * 22
    for kind in ("used", "masked", "full"):
        row = report.rows[f"MATEBIT ({kind} rows)"]
        assert set(row) == {"pck@0.02", "pck@0.05", "pck@0.1", "soft_error", "soft_spread"}
        assert 0 <= row["soft_error"] <= 1.5 and 0 <= row["soft_spread"] <= 1
    assert report.rows["MATEBIT (used rows)"] == report.rows["MATEBIT (masked rows)"]  # the paper's block
    assert report.rows["grid ceiling"]["pck@0.1"] == 1.0  # at 64 px a token centre is <= 5.7 px away
    moved, still = report.rows["identity guess"], report.rows["identity guess, exemplar not moved"]
    assert moved["pck@0.05"] < still["pck@0.05"]  # moving the exemplar defeats the identity guess
    unmoved = evaluate_moved(setup / "model", setup / "data",
                             MovedSettings(pairs=None, max_rotation=0, zoom=(1, 1), max_shift=0), image_metrics=(),
                             progress=False)
    assert unmoved.rows["identity guess"] == unmoved.rows["identity guess, exemplar not moved"]
    assert unmoved.dropped_points == 0


def test_cli_writes_json_markdown_and_figure(setup, tmp_path, capsys):
    out = tmp_path / "moved"
    assert run(["eval", "moved", "--model", str(setup / "model"), "--data", str(setup / "data"), "--out", str(out),
                "--pairs", "4", "--seed", "3", "--metrics", "none", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "identity guess" in printed and "PCK@0.10" in printed and "grid ceiling" in printed
    report = json.loads((out / "moved.json").read_text())
    assert report["n_pairs"] == 4 and report["settings"]["seed"] == 3 and len(report["pairs"]) == 4
    assert "similarity transform" in report["protocol"]
    assert "| MATEBIT (full rows) |" in (out / "moved.md").read_text()
    from PIL import Image

    assert Image.open(out / "pairs.png").size == (5 * 64, 4 * 64 + 3 * 4)
    assert run(["eval", "moved", "--model", str(setup / "model"), "--data", str(setup / "data"), "--out",
                str(tmp_path / "x"), "--metrics", "fid"]) == 2
    assert run(["eval", "moved", "--data", str(setup / "data"), "--out", str(tmp_path / "x")]) == 2


@needs_hed
def test_image_scores_are_named_by_their_network(setup):
    report = evaluate_moved(setup / "model", setup / "data", MovedSettings(pairs=3), progress=False)
    assert set(report.image_scores) == {"color[hed-vgg16]", "texture[hed-vgg16]", "semantic[hed-vgg16]"}
    assert report.feature_network == "hed-vgg16"
