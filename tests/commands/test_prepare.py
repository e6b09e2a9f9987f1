"""`matebit prepare`: converters over folders and the retrieval list, through the command line."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from matebit.cli import run


@pytest.fixture()
def photos(tmp_path):
    from skimage import data

    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(data.astronaut()[::4, ::4]).save(src / "astro.jpg")
    Image.fromarray(data.coffee()[::4, ::4]).save(src / "cup.png")
    (src / "notes.txt").write_text("ignored: not an image")
    return src


def prepare(*argv) -> int:
    return run(["prepare", *map(str, argv)])


def test_canny_ok(photos, tmp_path):
    dst = tmp_path / "out"
    assert prepare("canny", photos, dst, "--quiet", "--blur", "2") == 0
    assert sorted(os.listdir(dst)) == ["astro.png", "cup.png"]


def test_bad_input_is_one_line_exit_2(photos, tmp_path, capsys):
    (photos / "broken.jpg").write_bytes(b"nope")
    rc = prepare("canny", photos, tmp_path / "out", "--quiet")
    err = capsys.readouterr().err
    assert rc == 2 and "broken.jpg" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    rc = prepare("canny", photos, tmp_path / "out2", "--quiet", "--skip-errors")
    err = capsys.readouterr().err
    assert rc == 2 and sorted(os.listdir(tmp_path / "out2")) == ["astro.png", "cup.png"]
    assert prepare("canny", tmp_path / "missing", tmp_path / "o") == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert prepare("canny", photos, tmp_path / "o", "--low", "90", "--high", "10") == 2
    assert "--low" in capsys.readouterr().err
    assert prepare() == 2  # no converter named
    assert "choose a converter" in capsys.readouterr().err


def test_argument_errors_exit_2(photos, tmp_path):
    with pytest.raises(SystemExit) as exc:
        prepare("pose", photos, tmp_path / "o")  # --size is required
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        prepare("pose", photos, tmp_path / "o", "--size", "axb")
    assert exc.value.code == 2


def test_pose_and_retrieval(tmp_path, photos):
    src = tmp_path / "json"
    src.mkdir()
    kp = [100, 50, 0.9, 100, 80, 0.9] + [0, 0, 0] * 16
    (src / "a_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": kp}]}))
    assert prepare("pose", src, tmp_path / "poses", "--size", "200x150", "--quiet") == 0
    im = Image.open(tmp_path / "poses" / "a.png")
    assert im.mode == "RGB" and im.size == (200, 150) and np.asarray(im)[65, 100].max() > 0

    pairs = tmp_path / "pairs.txt"
    assert prepare("retrieval", photos, pairs, "--features", "color-hist", "--k", "1", "--quiet") == 0
    assert pairs.read_text().split("\n")[:2] == ["astro cup", "cup astro"]


def test_one_file_in_one_file_out(photos, tmp_path, capsys):
    out = tmp_path / "edges.png"
    assert prepare("canny", photos / "astro.jpg", out) == 0
    assert Image.open(out).size == (128, 128)
    err = capsys.readouterr().err
    assert f"canny: wrote 1 map to {out}" in err and " s per map)" in err
    assert prepare("canny", photos / "cup.png", tmp_path / "maps", "--quiet") == 0  # a folder gets <stem>.png
    assert os.listdir(tmp_path / "maps") == ["cup.png"]
    assert prepare("canny", photos / "astro.jpg", tmp_path / "edges.jpg") == 2
    assert "PNG" in capsys.readouterr().err
    (photos / "bad.jpg").write_bytes(b"nope")
    assert prepare("canny", photos / "bad.jpg", tmp_path / "bad.png") == 2
    assert "bad.jpg" in capsys.readouterr().err and not (tmp_path / "bad.png").exists()


def test_hed_output_size(photos, tmp_path):
    assert prepare("hed", photos / "astro.jpg", tmp_path / "a.png", "--size", "48", "--quiet") == 0
    assert Image.open(tmp_path / "a.png").size == (48, 48)
    assert prepare("hed", photos, tmp_path / "maps", "--size", "40x24", "--max-side", "64", "--quiet") == 0
    assert {Image.open(p).size for p in (tmp_path / "maps").iterdir()} == {(40, 24)}
    assert prepare("hed", photos, tmp_path / "o", "--size", "0") == 2  # one line naming --size (matebit.bounds)
