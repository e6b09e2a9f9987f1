"""Files in and out: reading images for the generator, `.npy` maps, sizes, tensor <-> uint8, atomic writes, tables.

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
  or undecodable files, folders, images with a side under `MIN_SIDE` px, more than `MAX_PIXELS` pixels (checked
  from the header, before decoding: decompression bombs), NaN/inf, values outside the documented range.

The data set (`matebit.data`), the evaluation set (`matebit.metrics.evalset`) and the converters read files with
`open_image` too, without EXIF rotation: their images are pixel-aligned with structure or label maps that were made
from the stored pixels.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from matebit.config import SIZE_STRIDE
from matebit.errors import (ImageInputError, MissingPathError, NotAFolderError, NotWritableError, PathError,
                            UserError, first_line)

PathLike = Union[str, os.PathLike]
Role = Literal["structure", "exemplar"]
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, Tensor]

MAX_PIXELS = 64_000_000  # ~8000 x 8000; bigger images are refused before decoding
MIN_SIDE = SIZE_STRIDE  # one token of the 1/16 bottleneck

# File types matebit reads as images. The data set and evaluation folders take only PNG and JPEG: lossless outputs
# for metrics, and the two formats image data sets ship in.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
JPEG_EXTENSIONS = (".jpg", ".jpeg")
DATASET_EXTENSIONS = (".png", *JPEG_EXTENSIONS)


def list_images(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """The image files directly in `folder` (by extension, hidden files skipped), sorted by name."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith("."))


# --------------------------------------------------------------------------------------------------------------
# Reading one image


def check_pixels(size: tuple[int, int], name: str, max_pixels: int = MAX_PIXELS,
                 error: type[UserError] = ImageInputError) -> None:
    """Refuse a (width, height) of more than `max_pixels` pixels (a possible decompression bomb)."""
    w, h = size
    if w * h > max_pixels:
        raise error(f"{name}: {w}x{h} is more than {max_pixels:,} pixels; refused as a possible "
                    f"decompression bomb (downscale it first)")


def missing_reason(path: PathLike) -> str:
    """Why `path` cannot be opened although it was named: "symlink loop", "broken symlink to X", "no such file"."""
    path = Path(path)
    try:
        os.stat(path)
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


def _existing_file(path: PathLike, name: str | None, what: str, error: type[UserError]) -> tuple[Path, str]:
    path = Path(path)
    name = name or str(path)
    if path.is_dir():
        raise error(f"{name}: is a folder, expected {what}")
    if not path.exists():
        raise error(f"{name}: {missing_reason(path)}")
    return path, name


def open_image(path: PathLike, name: str | None = None, max_pixels: int = MAX_PIXELS, *,
               transpose_exif: bool = True, error: type[UserError] = ImageInputError) -> Image.Image:
    """Open and fully decode an image file (first frame), with errors of class `error` naming `name`.

    The size is checked from the header before any pixel is decoded. `transpose_exif` applies the EXIF
    orientation (inference); readers of pixel-aligned pairs turn it off.
    """
    path, name = _existing_file(path, name, "an image file", error)
    if path.stat().st_size == 0:
        raise error(f"{name}: empty file")
    with warnings.catch_warnings():
        # PIL only warns between its own limit and twice that; treat the warning as the error it is for us.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                check_pixels(im.size, name, max_pixels, error)
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)
                im.load()
                return ImageOps.exif_transpose(im) if transpose_exif else im.copy()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise error(f"{name}: refused as a possible decompression bomb ({exc})") from None
        except UnidentifiedImageError:
            raise error(f"{name}: not an image file PIL can read") from None
        except PermissionError:
            raise error(f"{name}: permission denied") from None
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:  # noqa: BLE001  PIL's plugins raise anything on corrupt files (a TIFF frame
            if isinstance(exc, error):  # without a size: TypeError; bad tags: KeyError, IndexError, struct.error)
                raise
            raise error(f"{name}: cannot decode image, truncated or corrupt ({first_line(exc)})") from None


def read_npy(path: PathLike, name: str | None = None, error: type[UserError] = ImageInputError) -> np.ndarray:
    """A .npy file as an in-memory array of any shape; never unpickles (an object array is refused from its header)."""
    path, name = _existing_file(path, name, "a .npy file", error)
    try:
        with open(path, "rb") as fh:  # the header alone: dtype and shape, checked before any data is read
            major, _ = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(fh)
        if dtype.hasobject:
            raise error(f"{name}: a .npy of Python objects (a pickle); refused, matebit never unpickles")
        return np.array(np.load(path, allow_pickle=False, mmap_mode="r"))
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
        arr = arr.astype(np.float32)
        _check_unit_range(arr, name, "a float array")
        return np.clip(arr, 0.0, 1.0)
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

    h, w = unit.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ImageInputError(f"{name}: {w}x{h} is too small; both sides must be at least {MIN_SIDE} px")
    unit = _fit_channels(unit, channels, role, name).contiguous()
    return unit if role == "structure" else unit * 2 - 1


def fitted_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) scaled down (never up) so the longer side is at most `side`; no side below `MIN_SIDE`."""
    scale = side / max(width, height)
    if scale >= 1:
        return width, height
    return max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale))


def fit_side(im: Image.Image, side: int) -> Image.Image:
    """Downscale (never upscale) so the longer side is at most `side` (Lanczos; see `fitted_size`)."""
    size = fitted_size(*im.size, side)
    return im if size == im.size else im.resize(size, Image.Resampling.LANCZOS)


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


# The names of atomic writes' temp files: ".NAME.<8 hex digits>.tmp" beside NAME (see `_new_temp`).
TEMP_FILE_PATTERN = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


def _new_temp(path: Path, suffix: str, folder: bool = False) -> Path:
    """A new hidden file or folder beside `path`. Created with mode 0o666 / 0o777 so the kernel applies the
    process umask, as for any new file (mkstemp's private 0o600 would carry over to the final file)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
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
        if isinstance(exc, OSError) and not isinstance(exc, PathError):
            # A full disk, a read-only file system, a quota: name the file the user asked for, not the temp.
            raise PathError(f"{path}: cannot write ({exc.strerror or first_line(exc)})") from exc
        raise
    _fsync_dir(path.parent)
    return path


def clean_temp_files(folder: PathLike, name: str | None = None) -> list[Path]:
    """Remove the temp files that atomic writes of a killed process left directly in `folder` (names matching
    `TEMP_FILE_PATTERN`; with `name`, only those of that target file; plain files only); returns what was removed."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir()):
        if name is not None and not p.name.startswith(f".{name}."):
            continue
        if TEMP_FILE_PATTERN.match(p.name) and p.is_file() and not p.is_symlink():
            with contextlib.suppress(OSError):  # best effort: gone meanwhile, or a read-only folder
                p.unlink()
                removed.append(p)
    return removed


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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
