import re
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from matebit.cli import run


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("cli")
    shutil.copytree(tiny_model, root / "model")
    astronaut = data.astronaut()
    Image.fromarray(cv2.resize(astronaut, (64, 64), interpolation=cv2.INTER_AREA)).save(root / "ex.jpg")
    Image.fromarray(cv2.resize(astronaut, (48, 40), interpolation=cv2.INTER_AREA)).save(root / "photo.png")
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    (root / "maps").mkdir()
    (root / "exemplars").mkdir()
    for i, (w, h) in enumerate([(70, 50), (48, 48)]):
        Image.fromarray(cv2.Canny(cv2.resize(grey, (w, h)), 80, 160)).save(root / "maps" / f"m{i}.png")
        Image.fromarray(cv2.resize(astronaut, (w, h))).save(root / "exemplars" / f"m{i}.jpg")
    return root


def _run(args, capsys):
    code = run(["translate", *map(str, args)])
    return code, capsys.readouterr().err


def test_single_pair(files, tmp_path, capsys):
    out = tmp_path / "sub" / "out.png"
    code, err = _run(["--model", files / "model", "--structure", files / "maps" / "m0.png",
                      "--exemplar", files / "ex.jpg", "--out", out, "--save-warped", "--save-uncor",
                      "--device", "cpu"], capsys)
    assert code == 0, err
    assert Image.open(out).size == (70, 50)
    assert Image.open(tmp_path / "sub" / "out_warped.png").mode == "RGB"
    assert Image.open(tmp_path / "sub" / "out_uncor.png").mode == "L"
    jpg = tmp_path / "o.jpg"
    code, err = _run(["--model", files / "model", "--structure", files / "maps" / "m1.png", "--exemplar",
                      files / "ex.jpg", "--out", jpg, "--size-policy", "resize", "--size", "32"], capsys)
    assert code == 0, err
    assert Image.open(jpg).format == "JPEG" and Image.open(jpg).size == (48, 48)


def test_batch_folder_with_matching_stems_and_with_one_exemplar(files, tmp_path, capsys):
    code, err = _run(["--model", files / "model", "--structure", files / "maps", "--exemplar", files / "exemplars",
                      "--out", tmp_path / "a", "--save-warped", "--save-uncor", "--batch-size", "1"], capsys)
    assert code == 0, err
    for sub in ("", "warped/", "uncor/"):
        assert Image.open(tmp_path / "a" / f"{sub}m0.png").size == (70, 50)
        assert Image.open(tmp_path / "a" / f"{sub}m1.png").size == (48, 48)
    code, err = _run(["--model", files / "model", "--structure", files / "maps", "--exemplar", files / "ex.jpg",
                      "--out", tmp_path / "b"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["m0.png", "m1.png"]


def test_pairs_file_relative_paths_and_repeated_stems(files, tmp_path, capsys):
    pairs = files / "pairs.txt"
    pairs.write_text("# structure exemplar\nmaps/m0.png ex.jpg\n\nmaps/m0.png exemplars/m1.jpg\n")
    code, err = _run(["--model", files / "model", "--pairs", pairs, "--out", tmp_path / "p"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["m0__ex.png", "m0__m1.png"]


def test_from_photo(files, tmp_path, capsys):
    code, err = _run(["--model", files / "model", "--structure", files / "photo.png", "--from-photo", "canny",
                      "--exemplar", files / "ex.jpg", "--out", tmp_path / "x.png"], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "x.png").size == (48, 40)


def _bad_cases(files, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "model.pt").write_bytes(b"\x80\x02}q\x00.")
    (tmp_path / "lonely").mkdir()
    Image.new("L", (32, 32)).save(tmp_path / "lonely" / "zz.png")
    model, ex, m0 = files / "model", files / "ex.jpg", files / "maps" / "m0.png"
    return {
        "missing structure": ([model, "--structure", tmp_path / "nope.png", "--exemplar", ex], "no such file"),
        "corrupt structure": ([model, "--structure", bad, "--exemplar", ex], "bad.png.*not an image"),
        "out under a file": ([model, "--structure", m0, "--exemplar", ex], "a_file"),
        "pickle model": ([tmp_path / "pickled", "--structure", m0, "--exemplar", ex], "pickle"),
        "unknown extension": ([model, "--structure", m0, "--exemplar", ex], "unknown image extension"),
        "stem without exemplar": ([model, "--structure", tmp_path / "lonely", "--exemplar", files / "exemplars"],
                                  "no exemplar with the same stem.*zz.png"),
        "unknown converter": ([model, "--structure", m0, "--exemplar", ex, "--from-photo", "nope"], "unknown method"),
        "size with pad": ([model, "--structure", m0, "--exemplar", ex, "--size", "32", "--size-policy", "pad"],
                          "--size"),
    }


@pytest.mark.parametrize("case", ["missing structure", "corrupt structure", "out under a file", "pickle model",
                                  "unknown extension", "stem without exemplar", "unknown converter",
                                  "size with pad"])
def test_bad_input_exits_2_with_one_line_and_no_output(files, tmp_path, capsys, case):
    args, pattern = _bad_cases(files, tmp_path)[case]
    out = {"out under a file": tmp_path / "a_file" / "o.png", "unknown extension": tmp_path / "o.xyz",
           "stem without exemplar": tmp_path / "outdir"}.get(case, tmp_path / "o.png")
    before = {p.name for p in tmp_path.rglob("*")}
    code, err = _run(["--model", *args, "--out", out], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("matebit translate: error:"), err
    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists()
    after = {p.name for p in tmp_path.rglob("*")}
    assert after == before


def test_from_photo_hed_with_a_face_model_makes_the_map_as_its_recipe_did(files, tmp_path, capsys, monkeypatch):
    """A card that records hed_size (the face recipe's) -> HED at hed_size, resized to the trained size."""
    import shutil

    import importlib

    import matebit.convert

    hed_module = importlib.import_module("matebit.convert.hed")  # the package's `hed` name is the function

    face = tmp_path / "face-model"
    shutil.copytree(files / "model", face)
    card = (face / "README.md").read_text()
    (face / "README.md").write_text("---\nname: tiny-face\nstructure: hed\nhed_size: 96\ntrained_size: 32\n---\n" + card)
    calls = []

    def fake_recipe_hed(photo, max_side=None, size=None, **kwargs):
        calls.append((photo.size, size[0], "hed", max_side))
        return Image.new("L", size, 255)

    def plain_hed(photo, **kwargs):
        calls.append(("plain hed", photo.size))
        return Image.new("L", photo.size, 255)

    monkeypatch.setattr(hed_module, "hed", fake_recipe_hed)
    monkeypatch.setitem(matebit.convert.CONVERTERS, "hed", plain_hed)
    code, err = _run(["--model", face, "--structure", files / "photo.png", "--from-photo", "hed",
                      "--exemplar", files / "ex.jpg", "--out", tmp_path / "x.png"], capsys)
    assert code == 0, err
    assert calls == [((48, 40), 32, "hed", 96)]
    assert Image.open(tmp_path / "x.png").size == (48, 40)  # back at the photo's size
    calls.clear()  # a card without hed_size: HED at the photo's size, as before
    code, err = _run(["--model", files / "model", "--structure", files / "photo.png", "--from-photo", "hed",
                      "--exemplar", files / "ex.jpg", "--out", tmp_path / "y.png"], capsys)
    assert code == 0, err
    assert calls == [("plain hed", (48, 40))]


def test_translate_threads_flag_fixes_the_count(files, tmp_path, capsys, monkeypatch):
    import torch

    from matebit import speed

    monkeypatch.setattr(speed, "_fixed", None)
    before = torch.get_num_threads()
    try:
        code, err = _run(["--model", files / "model", "--structure", files / "maps", "--exemplar", files / "ex.jpg",
                          "--out", tmp_path / "t", "--threads", "1", "--quiet"], capsys)
        assert code == 0, err
        assert torch.get_num_threads() == 1 and speed.choose_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert _run(["--model", files / "model", "--structure", files / "maps", "--exemplar", files / "ex.jpg",
                 "--out", tmp_path / "u", "--threads", "0"], capsys)[0] == 2
