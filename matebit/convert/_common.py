"""Shared plumbing for the structure-map converters: image input, atomic PNG output, sizes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from matebit.errors import ConvertError, MissingDependencyError
from matebit.io import atomic_write, open_image

ImageLike = Union[Image.Image, np.ndarray, str, os.PathLike]


def require(module: str, what: str, extra: str):
    """Import an optional dependency or fail with the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} need {module}: pip install 'matebit[{extra}]'"
        ) from exc


def read_image(path: Union[str, os.PathLike]) -> Image.Image:
    """Open an image file fully (so errors surface here, naming the file) as RGB."""
    # No EXIF rotation: maps keep the stored pixel grid of the photos they are paired with in a data set.
    return _to_rgb(open_image(path, transpose_exif=False, error=ConvertError))


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Composite onto white: transparent regions of drawings/sketches are usually "paper".
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """PIL image, path, or array (H,W) / (H,W,1|3|4), uint8 or float in [0,1] -> uint8 (H,W,3)."""
    if isinstance(image, (str, os.PathLike)):
        return np.asarray(read_image(image))
    if isinstance(image, Image.Image):
        return np.asarray(_to_rgb(image))
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


def save_png_atomic(image: Image.Image, path: Union[str, os.PathLike]) -> Path:
    """Write a PNG atomically (`matebit.io.atomic_write`), making its folder first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            image.save(fh, format="PNG")

    return atomic_write(path, write)


def parse_size(size) -> tuple[int, int]:
    """(W, H) from an int, a (W, H) pair or a 'WxH' / 'N' string."""
    if isinstance(size, str):
        parts = size.lower().replace(",", "x").split("x")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"bad size {size!r}: use WxH, e.g. 176x256") from None
        size = vals[0] if len(vals) == 1 else tuple(vals)
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"bad size {size!r}: use (W, H)") from None
    if w < 1 or h < 1:
        raise ValueError(f"bad size {size!r}: both sides must be positive")
    return w, h
