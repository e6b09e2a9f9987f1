import os

import numpy as np
import pytest
from PIL import Image

from matebit.convert import CONVERTERS, ConvertError, convert_folder


@pytest.fixture()
def photos(tmp_path, astronaut, coffee):
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(astronaut[::4, ::4]).save(src / "astro.jpg")
    Image.fromarray(coffee[::4, ::4]).save(src / "cup.png")
    (src / "notes.txt").write_text("ignored: not an image")
    return src


def test_registry_names():
    assert set(CONVERTERS) == {"canny", "hed", "landmarks", "pose"}
    assert all(callable(f) for f in CONVERTERS.values())


def test_convert_folder_writes_same_stems(photos, tmp_path):
    dst = tmp_path / "maps"
    report = convert_folder("canny", photos, dst, progress=False)
    assert sorted(os.listdir(dst)) == ["astro.png", "cup.png"]
    for p in dst.iterdir():
        im = Image.open(p)
        assert im.mode == "L" and (np.asarray(im) > 0).mean() > 0.01
    assert len(report.written) == 2 and not report.failed


def test_bad_file_stops_or_is_skipped(photos, tmp_path):
    (photos / "broken.png").write_bytes(b"\x89PNG truncated")
    dst = tmp_path / "maps"
    with pytest.raises(ConvertError, match="broken.png"):
        convert_folder("canny", photos, dst, progress=False)
    report = convert_folder("canny", photos, dst, skip_errors=True, progress=False)
    assert [p.name for p, _ in report.failed] == ["broken.png"]
    assert sorted(os.listdir(dst)) == ["astro.png", "cup.png"]  # nothing half-written, no temp files


def test_resume_and_guards(photos, tmp_path):
    dst = tmp_path / "maps"
    convert_folder("canny", photos, dst, progress=False)
    report = convert_folder("canny", photos, dst, overwrite=False, progress=False)
    assert len(report.skipped) == 2 and not report.written
    Image.new("RGB", (8, 8)).save(photos / "astro.png")  # astro.jpg and astro.png -> same output
    with pytest.raises(ConvertError, match="same output name"):
        convert_folder("canny", photos, dst, progress=False)
    os.remove(photos / "astro.png")
    with pytest.raises(ConvertError, match="is the input .*photos"):
        convert_folder("canny", photos, photos, progress=False)
    with pytest.raises(ValueError, match="unknown converter"):
        convert_folder("sobel", photos, dst, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConvertError, match="no input files"):
        convert_folder("canny", empty, dst, progress=False)


def test_recursive_mirrors_subfolders(photos, tmp_path):
    sub = photos / "more"
    sub.mkdir()
    Image.open(photos / "cup.png").save(sub / "cup2.png")
    dst = tmp_path / "maps"
    convert_folder("canny", photos, dst, recursive=True, progress=False)
    assert (dst / "more" / "cup2.png").is_file() and (dst / "cup.png").is_file()
