"""matebit.io: reading images (the contract of `load_image`), tensor <-> uint8, atomic writes, tables."""

import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from matebit.errors import ImageInputError, NotAFolderError
from matebit.io import (atomic_directory, atomic_write, atomic_write_bytes, format_table, from_uint8, load_image,
                        package_data_file, to_pil, to_uint8)

# -- reading images --------------------------------------------------------------------------------------------


def _bomb_png(path, w=100_000, h=100_000):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_bad_files_are_named(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    blob = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(blob[: len(blob) // 2])
    Image.new("RGB", (10, 40)).save(tmp_path / "tiny.png")
    _bomb_png(tmp_path / "bomb.png")
    cases = {
        "missing.png": "missing.png: no such file",
        "empty.png": "empty.png: empty file",
        "text.png": "text.png: not an image",
        "t.png": "t.png: cannot decode image, truncated",
        "tiny.png": "tiny.png: 10x40 is too small",
        "bomb.png": "bomb.png: .*decompression bomb",
        ".": "is a folder",
    }
    for name, pattern in cases.items():
        with pytest.raises(ImageInputError, match=pattern):
            load_image(tmp_path / name)
    Image.new("RGB", (64, 64)).save(tmp_path / "ok.png")
    with pytest.raises(ImageInputError, match="more than 1,000 pixels"):
        load_image(tmp_path / "ok.png", max_pixels=1000)


def test_a_corrupt_tiff_frame_is_an_image_error_not_a_type_error(tmp_path):
    """PIL raises TypeError ("Missing dimensions") for a second TIFF frame without an ImageWidth tag."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (24, 20)).save(buf, format="TIFF", save_all=True, append_images=[Image.new("RGB", (24, 20))])
    data = bytearray(buf.getvalue())
    first = struct.unpack("<I", data[4:8])[0]
    n = struct.unpack("<H", data[first:first + 2])[0]
    second = struct.unpack("<I", data[first + 2 + 12 * n:first + 6 + 12 * n])[0]
    for i in range(struct.unpack("<H", data[second:second + 2])[0]):
        if struct.unpack("<H", data[second + 2 + 12 * i:second + 4 + 12 * i])[0] == 256:  # ImageWidth
            data[second + 2 + 12 * i:second + 4 + 12 * i] = struct.pack("<H", 65000)
    (tmp_path / "frames.tif").write_bytes(bytes(data))
    with pytest.raises(ImageInputError, match="frames.tif: cannot decode image"):
        load_image(tmp_path / "frames.tif")


def test_bad_values_are_refused():
    with pytest.raises(ImageInputError, match="structure: contains NaN"):
        load_image(np.full((32, 32), np.nan, np.float32), role="structure")
    with pytest.raises(ImageInputError, match=r"float array must lie in \[0, 1\]"):
        load_image(np.full((32, 32, 3), 2.0))
    with pytest.raises(ImageInputError, match=r"exemplar tensor must lie in \[-1, 1\]"):
        load_image(torch.full((3, 32, 32), 1.5))
    with pytest.raises(ImageInputError, match=r"structure tensor must lie in \[0, 1\]"):
        load_image(torch.full((3, 32, 32), -0.5), role="structure")
    with pytest.raises(ImageInputError, match="int64"):
        load_image(np.zeros((32, 32), np.int64))
    with pytest.raises(ImageInputError, match="unsupported input type"):
        load_image(42)


def test_channels():
    grey = np.zeros((32, 32), np.uint8)
    assert load_image(grey, role="structure", channels=3).shape == (3, 32, 32)
    grey_rgb = np.repeat(grey[..., None], 3, axis=2)
    assert load_image(grey_rgb, role="structure", channels=1).shape == (1, 32, 32)
    colour = grey_rgb.copy()
    colour[..., 0] = 200
    with pytest.raises(ImageInputError, match="convert it to greyscale"):
        load_image(colour, role="structure", channels=1)
    with pytest.raises(ImageInputError, match="3 channels, but the model takes 5"):
        load_image(colour, role="structure", channels=5)
    assert load_image(grey).shape == (3, 32, 32)  # a grey exemplar becomes RGB


def test_modes(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 128  # transparent grey
    # Transparent parts become the map's background (black) for structures, white for exemplars.
    assert float(load_image(Image.fromarray(rgba, "RGBA"), role="structure").max()) == 0.0
    assert float(load_image(Image.fromarray(rgba, "RGBA")).min()) == 1.0
    la = Image.fromarray(rgba[..., :2].copy(), "LA")
    assert load_image(la, role="structure", channels=1).shape == (1, 32, 32)
    pal = Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).convert("P")
    assert float(load_image(pal, role="structure").min()) == 1.0
    cmyk = Image.new("CMYK", (32, 32), (0, 0, 0, 0))
    assert float(load_image(cmyk).min()) == 1.0  # no ink = white
    Image.fromarray(np.full((32, 32), 65535, np.uint16)).save(tmp_path / "deep.png")
    assert float(load_image(tmp_path / "deep.png", role="structure").min()) == 1.0
    assert load_image(Image.new("1", (32, 32), 1), role="structure").shape == (3, 32, 32)


def test_exif_orientation_and_first_frame(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (48, 32), "white").save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").shape == (3, 48, 32)
    frames = [Image.new("L", (32, 32), 255), Image.new("L", (32, 32), 0)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert float(load_image(tmp_path / "anim.gif", role="structure").min()) == 1.0


# -- atomic writes ---------------------------------------------------------------------------------------------


def test_atomic_write_replaces_and_keeps_old_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def fail(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # no temp file left
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_atomic_directory(tmp_path):
    target = tmp_path / "d"
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_directory(target) as tmp:
            (tmp / "a").write_text("2")
            raise ValueError("boom")
    assert (target / "a").read_text() == "1"
    with atomic_directory(target) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"]  # replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no leftovers


def test_new_files_get_the_umask_mode_and_existing_files_keep_theirs(tmp_path):
    umask = os.umask(0o022)  # this test alone sets the umask, and puts it back
    try:
        atomic_write_bytes(tmp_path / "new.bin", b"x")
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "a").write_text("1")
    finally:
        os.umask(umask)
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    os.chmod(tmp_path / "new.bin", 0o600)
    atomic_write_bytes(tmp_path / "new.bin", b"y")
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o600


def test_safetensors_files_get_the_umask_mode_too(tmp_path):
    # safetensors' save_file writes 0o600 whatever the umask: checkpoints and model folders were private to their
    # writer (a shipped model exported so was unreadable by other users of the machine).
    from safetensors.torch import save_file

    from matebit.checkpoint import save_tensors

    umask = os.umask(0o022)
    try:
        save_tensors(tmp_path / "ckpt.safetensors", {"w": torch.zeros(2)})
        with atomic_directory(tmp_path / "model") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
    finally:
        os.umask(umask)
    assert (tmp_path / "ckpt.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_importing_matebit_leaves_the_umask_alone():
    import subprocess
    import sys

    code = "import os; os.umask(0o077); import matebit.checkpoint, matebit.io; print(oct(os.umask(0)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "0o77"


def test_write_errors_are_user_errors_naming_the_target(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotAFolderError, match="file/out.bin: cannot write"):
        atomic_write_bytes(tmp_path / "file" / "out.bin", b"x")


def test_uint8_round_trip_and_layouts():
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 14
    t = from_uint8(pixels)
    assert t.shape == (3, 2, 3) and float(t.min()) >= -1 and float(t.max()) <= 1
    np.testing.assert_array_equal(to_uint8(t), pixels)
    grey = from_uint8(pixels[..., 0], low=0.0)
    assert grey.shape == (1, 2, 3) and torch.equal(grey, torch.from_numpy(pixels[..., 0]).float()[None] / 255)
    np.testing.assert_array_equal(to_uint8(grey, low=0.0), pixels[..., 0])
    assert to_pil(t).mode == "RGB" and to_pil(grey, low=0.0).mode == "L"
    assert from_uint8(np.stack([pixels, pixels])).shape == (2, 3, 2, 3)  # a batch, channels last
    np.testing.assert_array_equal(to_uint8(torch.full((1, 2, 2), 3.0)), np.full((2, 2), 255, np.uint8))


def test_format_table():
    head, rows = ["", "a", "b"], [["x", "1", "22"], ["long name", "333", "4"]]
    assert format_table(head, rows, markdown=True).splitlines()[:2] == ["|  | a | b |", "|---|---:|---:|"]
    plain = format_table(head, rows).splitlines()
    assert plain[0] == "             a   b" and plain[2] == "x            1  22"


def test_package_data_file():
    import numpy

    assert package_data_file("numpy", "__init__.py") == package_data_file("numpy", "__init__.py")
    assert str(package_data_file("numpy", "__init__.py")).startswith(os.path.dirname(numpy.__file__))
    assert package_data_file("numpy", "no-such-file") is None
    assert package_data_file("no_such_package_matebit") is None
