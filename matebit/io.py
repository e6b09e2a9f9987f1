"""Files in and out: reading images for the generator, `.npy` maps, sizes, tensor <-> uint8, atomic writes, tables;
and the checks every command shares (docs/robustness.md):

* `open_regular`: the one way a file a user named is opened; FIFOs, devices and folders are "not a regular file",
  never waited on or read without end. `read_text` / `read_json` add a size cap (`MAX_TEXT_BYTES`) and bounded JSON
  (`matebit.bounds.parse_json`).
* `IMAGE_FORMATS`: the only Pillow decoders any image goes to, whatever its name (`Image.open(fp, formats=...)`).
* `check_outputs`: no output onto, or into, what the command reads.
* Temp files of atomic writes carry matebit's mark and the writer's pid, so `clean_temp_files` removes only a dead
  writer's; `FolderLock` keeps a second batch out of an output folder in use.

    from matebit.io import load_image
    structure = load_image("sketch.png", role="structure")     # float32 (3, H, W) in [0, 1]
    exemplar = load_image("portrait.jpg")                      # float32 (3, H, W) in [-1, 1]

Accepted inputs of `load_image` (for both roles):

* a path (str or Path) to an image file or a .npy array (as below, (C, H, W) also accepted); PIL images;
  numpy arrays (H, W) or (H, W, C), channels last,
  uint8 (0..255), uint16 (0..65535), bool, or float in [0, 1];
* torch tensors, channels first, (C, H, W) or (1, C, H, W): a **structure** tensor is in
  [0, 1] and an **exemplar** tensor in [-1, 1], the ranges the generator itself takes.

How images are read:

* EXIF orientation is applied; animated images (GIF, APNG, WebP) use their first frame.
* Palette, CMYK, YCbCr, LAB and HSV images become RGB; '1' becomes greyscale; 16-bit images ('I;16', 'I')
  are scaled from 0..65535; 32-bit float images ('F') must already lie in [0, 1].
* Transparency is composited away: structure maps onto **black** (their background: white lines on
  black), exemplars onto **white**.
* Structure channels: a greyscale map is replicated for a 3-channel model; an RGB map for a 1-channel model
  is accepted only if it is grey (all channels equal), otherwise it is an error. A greyscale exemplar is
  replicated to RGB.
* Refused with an `ImageInputError` that names the input ("structure[2]" or the path): missing, empty, truncated
  or undecodable files, anything but a regular file, formats outside `IMAGE_FORMATS`, images with a side under
  `MIN_SIDE` px (before any resizing), more than `MAX_PIXELS` pixels (checked from the header, before decoding:
  decompression bombs), empty .npy arrays, NaN/inf, values outside the documented range.

The data set (`matebit.data`), the evaluation set (`matebit.metrics.evalset`) and the converters read files with
`open_image` too, without EXIF rotation: their images are pixel-aligned with structure or label maps that were made
from the stored pixels.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import stat
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from matebit.bounds import parse_json
from matebit.config import SIZE_STRIDE
from matebit.errors import (ImageInputError, InputError, MissingPathError, NotAFolderError, NotWritableError,
                            PathError, UserError, first_line)
from matebit.runlock import pid_running

PathLike = Union[str, os.PathLike]
Role = Literal["structure", "exemplar"]
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, Tensor]

MAX_PIXELS = 64_000_000  # ~8000 x 8000; bigger images are refused before decoding
MIN_SIDE = SIZE_STRIDE  # one token of the 1/16 bottleneck
# Config, JSON, model-card and list files are read whole; far above any real one, far below a memory problem.
MAX_TEXT_BYTES = 64 * 2**20

# File types matebit reads as images. The data set and evaluation folders take only PNG and JPEG: lossless outputs
# for metrics, and the two formats image data sets ship in.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
JPEG_EXTENSIONS = (".jpg", ".jpeg")
DATASET_EXTENSIONS = (".png", *JPEG_EXTENSIONS)
# The Pillow plugins allowed to decode anything matebit reads, whatever the file is named: Pillow would otherwise
# hand a PostScript file named .png to its EPS plugin, which runs Ghostscript. (Camera JPEGs with several pictures,
# MPO, come through the JPEG plugin.)
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
IMAGE_FORMATS_TEXT = "PNG, JPEG, WebP, BMP, TIFF or GIF"


def list_images(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """The entries directly in `folder` named like images (by extension, hidden files skipped), sorted by name.

    Anything so named is listed, FIFOs and devices too, so that reading it names it ("not a regular file") instead
    of leaving it out unsaid."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in extensions and not p.name.startswith("."))


# --------------------------------------------------------------------------------------------------------------
# Reading files: regular files only (a FIFO would wait forever, /dev/zero never ends), text and JSON with a cap

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    """None for a regular file, else what it is ("a FIFO", ...)."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a file")


def _not_regular_text(kind: str) -> str:
    return "is a folder, not a regular file" if kind == "a folder" else f"not a regular file ({kind})"


def _not_regular_error(name: str, kind: str, error: type[UserError]) -> UserError:
    return error(f"{name}: {_not_regular_text(kind)}")


def missing_reason(path: PathLike) -> str:
    """Why `path` cannot be read as a file although it was named: "symlink loop", "broken symlink to X",
    "no such file", "not a regular file (a FIFO)", ..."""
    path = Path(path)
    try:
        kind = _not_regular(os.stat(path).st_mode)
        if kind is not None:
            return _not_regular_text(kind)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            return f"broken symlink to {os.readlink(path)}"
        if exc.errno == errno.EACCES:
            return "permission denied"
        if exc.errno == errno.ENOTDIR:
            return "no such file (a parent is not a folder)"
    return "no such file"


def present(path: PathLike) -> bool:
    """Whether anything is at `path`, a broken link included: an optional file that is there but cannot be read
    (a FIFO, a dangling link) must be said, not taken for absent."""
    return os.path.lexists(path)


def open_regular(path: PathLike, name: str | None = None, error: type[UserError] = InputError) -> IO[bytes]:
    """`path` opened for binary reading if it is a regular file (after symlinks); else an `error` naming `name`:
    "no such file", "is a folder, not a regular file", "not a regular file (a FIFO)", "permission denied".

    The one way matebit opens a file a user named. The type is looked up before opening (opening a device can have
    effects) and checked again on the open descriptor; the open never blocks (O_NONBLOCK), so a FIFO swapped in
    between the two is refused too, not waited on.
    """
    name = name or str(path)
    try:
        kind = _not_regular(os.stat(path).st_mode)
        if kind is not None:
            raise _not_regular_error(name, kind, error)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{name}: {missing_reason(path)}") from None
    except PermissionError:
        raise error(f"{name}: permission denied") from None
    except OSError as exc:
        reason = missing_reason(path) if exc.errno in (errno.ELOOP, errno.ENOTDIR) else exc.strerror or exc
        raise error(f"{name}: cannot open ({reason})") from None
    try:
        kind = _not_regular(os.fstat(fd).st_mode)
        if kind is not None:
            raise _not_regular_error(name, kind, error)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: PathLike, name: str | None = None, limit: int = MAX_TEXT_BYTES,
               error: type[UserError] = InputError) -> bytes:
    """The whole of a regular file (`open_regular`) of at most `limit` bytes."""
    name = name or str(path)
    with open_regular(path, name, error) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise error(f"{name}: {size:,} bytes, more than the {limit:,} a file of this kind may have")
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise error(f"{name}: cannot read ({exc.strerror or first_line(exc)})") from None
    if len(data) > limit:  # grew while read
        raise error(f"{name}: more than the {limit:,} bytes a file of this kind may have")
    return data


def read_text(path: PathLike, name: str | None = None, limit: int = MAX_TEXT_BYTES,
              error: type[UserError] = InputError) -> str:
    """A UTF-8 text file read with `read_bytes`; a byte-order mark is dropped (it is not part of the first line)."""
    name = name or str(path)
    data = read_bytes(path, name, limit, error)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{name}: not UTF-8 text (byte {exc.start})") from None


def read_json(path: PathLike, name: str | None = None, limit: int = MAX_TEXT_BYTES,
              error: type[UserError] = InputError) -> Any:
    """A JSON file: `read_text`, then `parse_json`."""
    name = name or str(path)
    return parse_json(read_text(path, name, limit, error), name, error)


# --------------------------------------------------------------------------------------------------------------
# Reading one image


def check_pixels(size: tuple[int, int], name: str, max_pixels: int = MAX_PIXELS,
                 error: type[UserError] = ImageInputError) -> None:
    """Refuse a (width, height) of more than `max_pixels` pixels (a possible decompression bomb)."""
    w, h = size
    if w * h > max_pixels:
        raise error(f"{name}: {w}x{h} is more than {max_pixels:,} pixels; refused as a possible "
                    f"decompression bomb (downscale it first)")


def check_sides(size: tuple[int, int], name: str, error: type[UserError] = ImageInputError) -> None:
    """Refuse a (width, height) with a side under `MIN_SIDE` px, before anything is resized: a 1x2000 image is
    as unusable as a 1x10 one."""
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise error(f"{name}: {w}x{h} is too small; both sides must be at least {MIN_SIDE} px")


def image_size(path: PathLike, name: str | None = None, error: type[UserError] = ImageInputError) -> tuple[int, int]:
    """(width, height) of an image file from its header alone (a regular file, an `IMAGE_FORMATS` decoder)."""
    name = name or str(path)
    with open_regular(path, name, error) as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller decides what is too big
        try:
            with Image.open(fh, formats=IMAGE_FORMATS) as im:
                return im.size
        except UnidentifiedImageError:
            raise error(f"{name}: not an image file matebit reads ({IMAGE_FORMATS_TEXT})") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise error(f"{name}: cannot read the image header ({first_line(exc)})") from None


def restrict_pillow_formats() -> None:
    """Leave only the `IMAGE_FORMATS` decoders in this process's Pillow registry, for servers whose uploads other
    code (gradio's components) also decodes, without passing `formats=`."""
    Image.init()
    for fmt in list(Image.OPEN):
        if fmt not in IMAGE_FORMATS:
            del Image.OPEN[fmt]
    Image.ID[:] = [fmt for fmt in Image.ID if fmt in IMAGE_FORMATS]


def open_image(path: PathLike, name: str | None = None, max_pixels: int = MAX_PIXELS, *,
               transpose_exif: bool = True, error: type[UserError] = ImageInputError) -> Image.Image:
    """Open and fully decode an image file (first frame), with errors of class `error` naming `name`.

    Only regular files and the `IMAGE_FORMATS` decoders, whatever the extension. The size is checked from the header
    before any pixel is decoded. `transpose_exif` applies the EXIF orientation (inference); readers of pixel-aligned
    pairs turn it off.
    """
    name = name or str(path)
    with open_regular(path, name, error) as fh, warnings.catch_warnings():
        if os.fstat(fh.fileno()).st_size == 0:
            raise error(f"{name}: empty file")
        # PIL only warns between its own limit and twice that; treat the warning as the error it is for us.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(fh, formats=IMAGE_FORMATS) as im:
                check_pixels(im.size, name, max_pixels, error)
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)
                im.load()
                return ImageOps.exif_transpose(im) if transpose_exif else im.copy()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise error(f"{name}: refused as a possible decompression bomb ({exc})") from None
        except UnidentifiedImageError:
            raise error(f"{name}: not an image file matebit reads ({IMAGE_FORMATS_TEXT})") from None
        except PermissionError:
            raise error(f"{name}: permission denied") from None
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:  # noqa: BLE001  PIL's plugins raise anything on corrupt files (a TIFF frame
            if isinstance(exc, error):  # without a size: TypeError; bad tags: KeyError, IndexError, struct.error)
                raise
            raise error(f"{name}: cannot decode image, truncated or corrupt ({first_line(exc)})") from None


def read_npy(path: PathLike, name: str | None = None, error: type[UserError] = ImageInputError,
             max_elements: int = 4 * MAX_PIXELS) -> np.ndarray:
    """A .npy file as an in-memory array; never unpickles (an object array is refused from its header), and an
    empty array or one of more than `max_elements` values is refused from its header too."""
    name = name or str(path)
    with open_regular(path, name, error) as fh:
        try:  # the header alone: dtype and shape, checked before any data is read
            major, _ = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            if dtype.hasobject:
                raise error(f"{name}: a .npy of Python objects (a pickle); refused, matebit never unpickles")
            count = int(np.prod(shape, dtype=object))
            if count == 0:
                raise error(f"{name}: an empty array (shape {tuple(shape)})")
            if count > max_elements:
                raise error(f"{name}: {count:,} values (shape {tuple(shape)}), more than the {max_elements:,} "
                            f"matebit reads from a .npy file")
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
        except error:
            raise
        except (OSError, ValueError, EOFError) as exc:
            raise error(f"{name}: cannot read .npy file ({first_line(exc)})") from None


def _npy_channels_last(arr: np.ndarray, name: str, max_pixels: int) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = arr.transpose(1, 2, 0)  # (C, H, W), the layout the data set also accepts
    if arr.ndim in (2, 3):
        check_pixels((arr.shape[1], arr.shape[0]), name, max_pixels)
    return arr


def _pil_to_array(im: Image.Image, name: str) -> np.ndarray:
    """PIL image -> float32 (H, W, C) in [0, 1]; C is 1, 2 (L+alpha), 3 or 4 (RGB+alpha)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.float32) / 65535.0
        return np.clip(arr, 0.0, 1.0)[..., None]
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        _check_unit_range(arr, name, "a 32-bit float image")
        return arr[..., None]
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "1":
        im = im.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    arr = np.asarray(im, dtype=np.uint8).astype(np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def _check_unit_range(arr: np.ndarray | Tensor, name: str, what: str, low: float = 0.0, high: float = 1.0) -> None:
    finite = np.isfinite(arr).all() if isinstance(arr, np.ndarray) else bool(torch.isfinite(arr).all())
    if not finite:
        raise ImageInputError(f"{name}: contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    tol = 1e-4  # float round-off from the caller's own normalisation
    if lo < low - tol or hi > high + tol:
        raise ImageInputError(f"{name}: {what} must lie in [{low:g}, {high:g}], got values in [{lo:.4g}, {hi:.4g}]")


def _array_to_unit(arr: np.ndarray, name: str) -> np.ndarray:
    """numpy (H, W) or (H, W, C) -> float32 (H, W, C) in [0, 1]."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ImageInputError(f"{name}: expected an array (H, W) or (H, W, C) with C in 1..4 (channels last), "
                              f"got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        _check_unit_range(arr, name, "a float array")  # before the cast: float64 beyond float32's range overflows
        return np.clip(arr.astype(np.float32), 0.0, 1.0)
    raise ImageInputError(f"{name}: arrays must be uint8, uint16, bool or float in [0, 1], got {arr.dtype}")


def _composite(unit: Tensor, background: float) -> Tensor:
    """(C, H, W) with a trailing alpha channel (C = 2 or 4) -> alpha-composited onto `background`."""
    colour, alpha = unit[:-1], unit[-1:]
    return colour * alpha + background * (1 - alpha)


def _fit_channels(unit: Tensor, channels: int, role: Role, name: str) -> Tensor:
    c = unit.shape[0]
    if c == channels:
        return unit
    if c == 1:
        return unit.expand(channels, -1, -1).clone()  # grey map for a colour model: replicate
    if channels == 1 and c == 3:
        if float((unit - unit[:1]).abs().max()) <= 1.0 / 255 + 1e-6:
            return unit[:1].clone()
        raise ImageInputError(f"{name}: a colour {role} for a model that takes 1-channel {role} maps; "
                              f"convert it to greyscale first")
    raise ImageInputError(f"{name}: {c} channels, but the model takes {channels}-channel {role} inputs")


def load_image(source: ImageInput, *, role: Role = "exemplar", channels: int = 3, name: str | None = None,
               max_pixels: int = MAX_PIXELS) -> Tensor:
    """Read one image for the generator: float32 (channels, H, W), structure in [0, 1], exemplar in [-1, 1].

    `source` is a path, PIL image, numpy array or tensor (see the module docstring for ranges and modes);
    `name` is what error messages call it (default: the path, or the role).
    """
    if role not in ("structure", "exemplar"):
        raise ValueError(f"role must be 'structure' or 'exemplar', got {role!r}")
    if isinstance(source, (str, os.PathLike)):
        name = name or str(source)
        if Path(source).suffix.lower() == ".npy":  # training reads .npy structure maps, so inference must too
            source = _npy_channels_last(read_npy(source, name), name, max_pixels)
        else:
            source = open_image(source, name=name, max_pixels=max_pixels)
    name = name or role
    alpha_background = 0.0 if role == "structure" else 1.0

    if isinstance(source, Image.Image):
        check_pixels(source.size, name, max_pixels)
        if getattr(source, "n_frames", 1) > 1:
            source.seek(0)
        unit = torch.from_numpy(np.ascontiguousarray(_pil_to_array(source, name))).permute(2, 0, 1)
        if unit.shape[0] in (2, 4):
            unit = _composite(unit, alpha_background)
    elif isinstance(source, np.ndarray):
        unit = torch.from_numpy(np.ascontiguousarray(_array_to_unit(source, name))).permute(2, 0, 1)
        if unit.shape[0] in (2, 4):
            unit = _composite(unit, alpha_background)
    elif isinstance(source, Tensor):
        t = source.detach()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3:
            raise ImageInputError(f"{name}: expected a tensor (C, H, W) (channels first), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ImageInputError(f"{name}: tensors must be floating point, got {t.dtype}")
        t = t.to("cpu", torch.float32)
        if role == "structure":
            _check_unit_range(t, name, "a structure tensor")
            unit = t.clamp(0, 1)
        else:
            _check_unit_range(t, name, "an exemplar tensor", -1.0, 1.0)
            unit = ((t + 1) / 2).clamp(0, 1)
    else:
        raise ImageInputError(f"{name}: unsupported input type {type(source).__name__}; give a path, PIL image, "
                              f"numpy array or torch tensor")

    check_sides((unit.shape[-1], unit.shape[-2]), name)
    unit = _fit_channels(unit, channels, role, name).contiguous()
    return unit if role == "structure" else unit * 2 - 1


def fitted_size(width: int, height: int, side: int, name: str = "image") -> tuple[int, int]:
    """(width, height) scaled down (never up) so the longer side is at most `side`; no side below `MIN_SIDE`.
    A side already under `MIN_SIDE` is refused (`check_sides`), not stretched up to it."""
    check_sides((width, height), name)
    scale = side / max(width, height)
    if scale >= 1:
        return width, height
    return max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale))


def fit_side(im: Image.Image, side: int, name: str = "image") -> Image.Image:
    """Downscale (never upscale) so the longer side is at most `side` (Lanczos; see `fitted_size`)."""
    size = fitted_size(*im.size, side, name)
    return im if size == im.size else im.resize(size, Image.Resampling.LANCZOS)


# --------------------------------------------------------------------------------------------------------------
# RGB pictures for the converters and the face tools (PIL and uint8 arrays)


ImageLike = Union[Image.Image, np.ndarray, str, os.PathLike]


def read_rgb(path: PathLike, error: type[UserError] = ImageInputError) -> Image.Image:
    """Open an image file fully (so errors surface here, naming the file) as RGB (`to_rgb`), without EXIF rotation:
    maps keep the stored pixel grid of the photos they are paired with in a data set."""
    return to_rgb(open_image(path, transpose_exif=False, error=error))


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode as RGB: transparency composited onto white (the "paper" of drawings and sketches), 16-bit and
    32-bit integer images scaled from their maximum."""
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def as_rgb_array(image: ImageLike, error: type[UserError] = ImageInputError) -> np.ndarray:
    """PIL image, path, or array (H,W) / (H,W,1|3|4), uint8 or float in [0,1] -> uint8 (H,W,3)."""
    if isinstance(image, (str, os.PathLike)):
        return np.asarray(read_rgb(image, error))
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a PIL image, a path or a numpy array, got {type(image).__name__}")
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an image array of shape (H,W), (H,W,3) or (H,W,4), got {arr.shape}")
    arr = arr[:, :, :3]
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ValueError(f"image too small: {arr.shape[1]}x{arr.shape[0]}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 1):
            raise ValueError("float image arrays must be in [0, 1]")
        return np.ascontiguousarray(np.round(np.nan_to_num(arr) * 255).astype(np.uint8))
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        if arr.dtype == bool:
            return np.ascontiguousarray(arr.astype(np.uint8) * 255)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError("integer image arrays must be in [0, 255]")
        return np.ascontiguousarray(arr.astype(np.uint8))
    raise TypeError(f"unsupported image dtype {arr.dtype}")


def save_png(image: Image.Image, path: PathLike) -> Path:
    """Write a PNG atomically (`atomic_write`), making its folder first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            image.save(fh, format="PNG")

    return atomic_write(path, write)



# --------------------------------------------------------------------------------------------------------------
# Tensors <-> 8-bit pixels


def from_uint8(pixels: np.ndarray | Tensor, low: float = -1.0) -> Tensor:
    """uint8 (H, W) or (..., H, W, C), channels last -> float32 (..., C, H, W) in [low, 1] (255 -> 1)."""
    if isinstance(pixels, np.ndarray):
        pixels = np.ascontiguousarray(pixels)
        if not pixels.flags.writeable:  # torch warns about sharing read-only memory (e.g. np.asarray of a PIL image)
            pixels = pixels.copy()
    x = torch.as_tensor(pixels)
    x = x[None] if x.dim() == 2 else x.movedim(-1, -3)
    return x.float().div(255.0 / (1.0 - low)).add(low)


def to_uint8(t: Tensor, low: float = -1.0) -> np.ndarray:
    """(C, H, W) in [low, 1] -> uint8 (H, W) for one channel, else (H, W, C); values outside are clipped."""
    x = ((t.detach().float() - low) / (1 - low) * 255).round().clamp(0, 255).to(torch.uint8).cpu()
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def to_pil(t: Tensor, low: float = -1.0) -> Image.Image:
    """(C, H, W) in [low, 1] -> 8-bit PIL image ('L' for one channel, else 'RGB')."""
    return Image.fromarray(to_uint8(t, low), mode="L" if t.shape[0] == 1 else "RGB")


# --------------------------------------------------------------------------------------------------------------
# Atomic writes


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened, so best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        fh.flush()
        os.fsync(fh.fileno())


def _not_writable(path: Path, exc: OSError) -> PathError:
    """Re-word an OSError from creating a temp file so it names the target, not the temp name."""
    parent = path.parent
    if isinstance(exc, FileNotFoundError):
        return MissingPathError(f"{path}: cannot write, folder {parent} does not exist")
    if isinstance(exc, NotADirectoryError):
        return NotAFolderError(f"{path}: cannot write, {parent} is not a folder")
    if isinstance(exc, PermissionError):
        return NotWritableError(f"{path}: cannot write, folder {parent} is not writable")
    return PathError(f"{path}: cannot write ({exc.strerror or exc})")


# The names of atomic writes' temp files and folders: ".NAME.matebit-<pid>-<8 hex digits>.tmp" beside NAME (".old"
# for a folder being replaced). Only matebit makes such names, and the pid says whose they are, so `clean_temp_files`
# removes a killed writer's leftovers and nothing else: not a user's ".budget.xlsx.deadbeef.tmp", not the file another
# live run is writing.
TEMP_FILE_PATTERN = re.compile(r"^\.(?P<name>.+)\.matebit-(?P<pid>[0-9]+)-[0-9a-f]{8}\.(?:tmp|old)$")
_TEMP_NAME_CHARS = 150  # of NAME in a temp name: the whole name stays within the usual 255 bytes


def _new_temp(path: Path, suffix: str, folder: bool = False) -> Path:
    """A new hidden file or folder beside `path`. Created with mode 0o666 / 0o777 so the kernel applies the
    process umask, as for any new file (mkstemp's private 0o600 would carry over to the final file)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name[:_TEMP_NAME_CHARS]}.matebit-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
        try:
            if folder:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise _not_writable(path, exc) from None
    raise PathError(f"{path}: cannot write, no free temporary name in {path.parent}")


def write_error(path: PathLike, exc: BaseException) -> PathError | None:
    """A failed write as a PathError naming the file the user asked for, not a temp name: an OSError (a full disk,
    a read-only file system, a quota), or safetensors' own error for the same I/O failures; a PathError as it is.
    None for other errors."""
    if isinstance(exc, PathError):
        return exc
    if isinstance(exc, OSError):
        return PathError(f"{path}: cannot write ({exc.strerror or first_line(exc)})")
    if type(exc).__name__ == "SafetensorError":  # its I/O errors, e.g. "No space left on device", as text
        text = first_line(exc)
        found = re.search(r'message: "([^"]+)"', text)
        return PathError(f"{path}: cannot write ({found.group(1) if found else text})")
    return None


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode() -> int:
    """The mode any new file gets (0o666 less the umask). Given explicitly to what atomic writes produce because
    safetensors' save_file writes its files 0o600 whatever the umask, so a model folder or checkpoint would be
    unreadable by anyone else."""
    return 0o666 & ~_umask()


def atomic_write(path: PathLike, write_fn: Callable[[Path], Any]) -> Path:
    """Call `write_fn(tmp_path)` to write a temp file beside `path`, fsync it, then rename it over `path`.

    Readers see either the old file or the complete new one. On any failure the temp file is removed
    and an existing `path` is left untouched. The parent folder must exist. An existing file keeps its mode.
    """
    path = Path(path)
    tmp = _new_temp(path, ".tmp")
    try:
        write_fn(tmp)
        _fsync_file(tmp)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, _new_file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        error = write_error(path, exc)
        if error is not None and error is not exc:
            raise error from exc
        raise
    _fsync_dir(path.parent)
    return path


def clean_temp_files(folder: PathLike, name: str | None = None) -> list[Path]:
    """Remove the temp files and folders that matebit's atomic writes left directly in `folder` when their writer
    was killed: names matching `TEMP_FILE_PATTERN` whose pid no longer runs and that this user owns (with `name`, only
    those of that target file). Returns what was removed."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir()):
        found = TEMP_FILE_PATTERN.match(p.name)
        if found is None or (name is not None and found["name"] != name[:_TEMP_NAME_CHARS]):
            continue
        try:
            info = p.lstat()
        except OSError:
            continue
        if info.st_uid != os.getuid() or pid_running(int(found["pid"])):
            continue
        with contextlib.suppress(OSError):  # best effort: gone meanwhile, or a read-only folder
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(p)
            elif stat.S_ISREG(info.st_mode):
                p.unlink()
            else:
                continue
            removed.append(p)
    return removed


class FolderLock:
    """An exclusive lock on an output folder while a batch writes into it (flock on the folder itself, so it
    leaves no file behind and dies with its process). A second batch into the same folder is refused at once, in
    one line naming the folder and `flag`, instead of deleting the first one's files in flight.

        with FolderLock(out, "--out"):
            ...  # clean the folder's stale temp files, write the outputs
    """

    def __init__(self, folder: PathLike, flag: str = "--out"):
        self.folder, self.flag = Path(folder), flag
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        try:
            fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise PathError(f"{self.folder}: cannot open the output folder ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(f"{self.folder}: another matebit run is writing into this folder; wait for it to "
                             f"finish or choose another {self.flag}") from None
        except OSError:
            pass  # a file system without flock: go on unlocked, as before locks existed
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it replaces `path` as a whole.

    The old folder (if any) is moved aside, the new one renamed into place, and only then is the old one
    deleted, so a crash leaves either the old or the new folder under `path` (plus a hidden leftover).
    On failure the temp folder is deleted and `path` is untouched.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotAFolderError(f"{path}: exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path, ".tmp", folder=True)
    try:
        yield tmp
        mode = _new_file_mode()  # once: the umask is read from /proc
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, mode)
                _fsync_file(f)
        old = None
        if path.exists():
            old = _new_temp(path, ".old", folder=True)
            os.replace(path, old)  # replaces the empty placeholder
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        error = write_error(path, exc)
        if error is not None and error is not exc:
            raise error from exc
        raise


# --------------------------------------------------------------------------------------------------------------
# Outputs never onto inputs


def real_path(path: PathLike) -> Path:
    """The path with every symlink and '..' resolved (the file a write would replace)."""
    return Path(os.path.realpath(path))


def check_outputs(outputs: Mapping[str, PathLike] | Sequence[tuple[str, PathLike]] = (),
                  inputs: Mapping[PathLike, str] | None = None, *,
                  out_folders: Mapping[str, PathLike] | None = None, in_folders: Mapping[PathLike, str] | None = None,
                  nested: bool = True, error: type[UserError] = InputError) -> None:
    """Refuse, before anything is written, outputs that would replace or write into what a command reads.

    The one check every writing command makes. `outputs`: flag -> file written (or (flag, file) pairs, for many
    files under one flag); `out_folders`: flag -> folder written; `inputs` / `in_folders`: file / folder read ->
    what it is ("--structure", "a structure map"); an input file a folder-writer would lose with the folder (it
    replaces the folder whole) goes in `in_folders` too. Paths compare as real paths (through symlinks and '..').
    Refused: an output file that is an input file; an output folder that is, or contains, an input folder; with
    `nested=False` also an output folder inside an input folder (a recursive reader, or a data set, would take the
    outputs as inputs); two outputs, or two output folders, on one path.
    """
    outputs = list(outputs.items()) if isinstance(outputs, Mapping) else list(outputs)
    inputs, out_folders, in_folders = dict(inputs or {}), dict(out_folders or {}), dict(in_folders or {})
    real_in_folders = {real_path(p): (p, what) for p, what in in_folders.items()}
    for flag, folder in out_folders.items():
        real = real_path(folder)
        for real_input, (given, what) in real_in_folders.items():
            if real_input == real or real_input.is_relative_to(real):
                relation = "is" if real_input == real else "contains"
            elif not nested and real.is_relative_to(real_input):
                relation = "lies inside"
            else:
                continue
            raise error(f"{folder}: {flag} {relation} the input {given} ({what}); write the outputs to a folder "
                        f"of their own")
    real_in = {real_path(p): (p, what) for p, what in inputs.items()}
    for flag, path in outputs:
        hit = real_in.get(real_path(path))
        if hit:
            raise error(f"{path}: {flag} would overwrite the input {hit[0]} ({hit[1]}); choose another {flag}")
    for kind in (outputs, list(out_folders.items())):
        seen: dict[Path, str] = {}
        for flag, path in kind:
            real = real_path(path)
            if real in seen:
                raise error(f"{path}: {flag} and {seen[real]} would be the same file; one would replace the other")
            seen[real] = flag


# --------------------------------------------------------------------------------------------------------------
# Result tables


def format_table(head: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False,
                 right: Sequence[bool] | None = None) -> str:
    """A table of already formatted cells: Markdown, or plain text with padded columns and a rule under the head.

    `right[k]` right-aligns column k (default: every column but the first).
    """
    right = list(right) if right is not None else [k > 0 for k in range(len(head))]
    if markdown:
        rule = "|" + "|".join("---:" if r else "---" for r in right) + "|"
        return "\n".join(["| " + " | ".join(head) + " |", rule] + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right))

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


# --------------------------------------------------------------------------------------------------------------
# Data files of other packages


def package_data_file(package: str, *parts: str) -> Path | None:
    """`parts` inside an installed top-level package, found without importing it (its __init__ may need
    TensorFlow or pkg_resources, which matebit does not); None when the package or the file is not there."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidate = Path(root).joinpath(*parts)
            if candidate.is_file():
                return candidate
    return None
