import os

import numpy as np
import pytest
from PIL import Image

from matebit.convert._common import parse_size
from matebit.errors import ConvertError
from matebit.io import as_rgb_array, read_rgb, save_png
from matebit.errors import InputError


def test_unreadable_file_error_names_it(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(ConvertError, match="broken.jpg"):
        read_rgb(bad, ConvertError)
    with pytest.raises(ConvertError, match="missing.png: no such file"):
        read_rgb(tmp_path / "missing.png", ConvertError)
    # The CLI treats these as bad input (exit 2) through the package's error base.
    assert issubclass(ConvertError, InputError)


def test_array_inputs_agree(astronaut):
    ref = as_rgb_array(Image.fromarray(astronaut))
    assert ref.dtype == np.uint8 and ref.shape == astronaut.shape
    assert np.array_equal(as_rgb_array(astronaut.astype(np.float32) / 255.0), ref)
    gray = as_rgb_array(astronaut[:, :, 0])
    assert gray.shape == astronaut.shape and np.array_equal(gray[:, :, 2], astronaut[:, :, 0])
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    assert np.array_equal(as_rgb_array(rgba), ref)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_rgb_array(astronaut.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        as_rgb_array(np.zeros((4, 4, 2), np.uint8))


def test_transparent_png_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, 3] = 255  # top half opaque black, bottom half transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    rgb = np.asarray(read_rgb(tmp_path / "a.png"))
    assert (rgb[:4] == 0).all() and (rgb[4:] == 255).all()


def test_atomic_save_leaves_only_the_png(tmp_path):
    im = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    out = save_png(im, tmp_path / "sub" / "x.png")
    assert sorted(os.listdir(tmp_path / "sub")) == ["x.png"]
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(im))


def test_atomic_save_failure_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "y.png"
    target.write_bytes(b"old")

    def boom(self, fp, format=None, **kw):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_png(Image.new("L", (4, 4)), target)
    # The old file is untouched and no temp file is left behind.
    assert sorted(os.listdir(tmp_path)) == ["y.png"]
    assert target.read_bytes() == b"old"


@pytest.mark.parametrize("text,expected", [("176x256", (176, 256)), ("64", (64, 64)), ((3, 5), (3, 5)), (7, (7, 7))])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["axb", "0x5", (1, -2), "1x2x3"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)
