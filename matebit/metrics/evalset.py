"""The evaluation set: aligned lists of structure inputs, exemplars, outputs, and optional ground truth,
label maps and landmarks. Entries are file paths or in-memory arrays; images load as uint8 (H, W, 3) RGB."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from matebit.errors import InputError, MissingPathError
from matebit.io import DATASET_EXTENSIONS, JPEG_EXTENSIONS, from_uint8, open_image, read_json, read_npy

__all__ = ["EvalSet", "Landmarks", "load_image", "load_label_map", "load_landmarks", "scale_points", "to_tensor"]

ImageLike = Union[str, Path, np.ndarray]


@dataclass
class Landmarks:
    """Landmark points in pixel coordinates of an image of `size` = (width, height)."""

    points: np.ndarray  # (P, 2) float64, (x, y)
    size: tuple[int, int]
    template: str = ""


def scale_points(points: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """(P, 2) landmark points of an image of size src = (W, H) -> the same points in the image resized to dst.
    Landmark files use integer pixel centres (OpenCV/dlib convention), so the scaling is about the pixel centre."""
    s = np.array([dst[0] / src[0], dst[1] / src[1]])
    return (np.asarray(points, np.float64) + 0.5) * s - 0.5


def load_image(item: ImageLike) -> np.ndarray:
    """uint8 (H, W, 3) RGB from a path or an array (grey arrays are repeated to three channels)."""
    if isinstance(item, (str, Path)):
        # No EXIF rotation: outputs, targets and label maps are compared pixel by pixel as stored.
        return np.asarray(open_image(item, transpose_exif=False).convert("RGB"))
    arr = np.asarray(item)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"image array has shape {arr.shape}; expected (H, W, 3) or (H, W)")
    if arr.dtype != np.uint8:
        raise InputError(f"image array has dtype {arr.dtype}; expected uint8")
    return arr


def load_label_map(item: ImageLike) -> np.ndarray:
    """int64 (H, W) label map; files are read as single-channel images (each grey value is one class)."""
    if isinstance(item, (str, Path)):
        im = open_image(item, transpose_exif=False)
        arr = np.asarray(im.convert("L") if im.mode not in ("L", "P", "I", "I;16") else im)
    else:
        arr = np.asarray(item)
    if arr.ndim == 3 and arr.shape[2] in (1, 3):
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise InputError(f"label map has shape {arr.shape}; expected (H, W)")
    return arr.astype(np.int64)


def load_landmarks(item: Union[str, Path, np.ndarray, Landmarks], size: tuple[int, int] | None = None) -> Landmarks:
    """Landmarks from a London-faces JSON file ({"template", "size": [w, h], "points": [[x, y], ...]}), a webmorph
    `.tem` file (its point count, then one "x y" line per point; `size` from the caller, as .tem files do not record
    it), a .npy (P, 2) array, or an array plus `size`."""
    if isinstance(item, Landmarks):
        return item
    if isinstance(item, (str, Path)):
        p = Path(item)
        if p.suffix == ".tem":
            return _read_tem(p, size)
        if p.suffix == ".npy":
            pts = read_npy(p, error=InputError)
        else:
            d = read_json(p)
            try:
                pts = np.asarray(d["points"], dtype=np.float64)
                size = (int(d["size"][0]), int(d["size"][1]))
                template = str(d.get("template", ""))
            except (ValueError, KeyError, IndexError, TypeError, OverflowError) as e:
                raise InputError(f"{p}: not a landmark file with 'size' and 'points' ({e})") from None
            if pts.ndim != 2 or pts.shape[1] != 2:
                raise InputError(f"{p}: 'points' must be a list of [x, y] pairs")
            return Landmarks(pts, size, template)
    else:
        pts = np.asarray(item, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"landmarks have shape {pts.shape}; expected (P, 2)")
    if size is None:
        raise InputError("landmarks given as an array need the image size (width, height)")
    return Landmarks(pts.astype(np.float64), (int(size[0]), int(size[1])))


def _read_tem(path: Path, size: tuple[int, int] | None) -> Landmarks:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
        n = int(lines[0].strip())
        pts = np.array([[float(v) for v in lines[1 + i].split()[:2]] for i in range(n)], np.float64)
    except (OSError, ValueError, IndexError) as e:
        raise InputError(f"{path}: not a webmorph .tem landmark file ({e})") from None
    if size is None:
        raise InputError(f"{path}: a .tem file records no image size; give the image's size")
    template = f"webmorph-FRL-{n}" if n == 189 else f"webmorph-{n}"
    return Landmarks(pts, (int(size[0]), int(size[1])), template)


def to_tensor(images: Sequence[np.ndarray], size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Stack uint8 (H, W, 3) arrays into a float (B, 3, H, W) tensor in [-1, 1], resized (bilinear) if asked."""
    x = from_uint8(np.stack(images))
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(x.shape[-2:]) != hw:
            x = torch.nn.functional.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return x


@dataclass
class EvalSet:
    """Aligned per-sample inputs. Every non-empty list has the same length as `outputs`.

    outputs: generated images x̂_B. exemplars: y_B. structures: x_A (optional here). targets: ground truth x_B.
    labels: label map of the structure input (shared by output and target). exemplar_labels: label map of y_B.
    landmarks / exemplar_landmarks: points on x_A / y_B. predicted_points: for each structure landmark, the
    predicted matching point in the exemplar.
    """

    outputs: list[ImageLike] = field(default_factory=list)
    exemplars: list[ImageLike] = field(default_factory=list)
    structures: list[ImageLike] = field(default_factory=list)
    targets: list[ImageLike] = field(default_factory=list)
    labels: list[ImageLike] = field(default_factory=list)
    exemplar_labels: list[ImageLike] = field(default_factory=list)
    landmarks: list = field(default_factory=list)
    exemplar_landmarks: list = field(default_factory=list)
    predicted_points: list = field(default_factory=list)
    stems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = max((len(getattr(self, f)) for f in self._LISTS), default=0)
        for f in self._LISTS:
            k = len(getattr(self, f))
            if k not in (0, n):
                raise ValueError(f"EvalSet.{f} has {k} entries but another list has {n}")

    _LISTS = ("outputs", "exemplars", "structures", "targets", "labels", "exemplar_labels", "landmarks",
              "exemplar_landmarks", "predicted_points")

    def __len__(self) -> int:
        return max((len(getattr(self, f)) for f in self._LISTS), default=0)

    def images(self, which: str) -> list[np.ndarray]:
        return [load_image(x) for x in getattr(self, which)]

    def notes(self) -> list[str]:
        """Caveats that travel with every result (e.g. JPEG inputs, which shift FID)."""
        out = []
        for f in ("outputs", "exemplars", "structures", "targets"):
            if any(isinstance(x, (str, Path)) and Path(x).suffix.lower() in JPEG_EXTENSIONS for x in getattr(self, f)):
                out.append(f"{f} include JPEG files")
        return out

    @classmethod
    def from_folder(cls, root: str | Path, allow_jpeg_outputs: bool = False) -> "EvalSet":
        """Load `root/outputs/` (PNG) and whichever of `exemplars/`, `targets/`, `structures/`, `labels/`,
        `exemplar_labels/` (PNG or JPEG) and `landmarks/`, `exemplar_landmarks/`, `predicted_points/`
        (JSON or .npy) exist, matched by file stem. Every optional folder must cover every output stem."""
        root = Path(root)
        out_dir = root / "outputs"
        if not out_dir.is_dir():
            raise MissingPathError(f"{out_dir}: missing; expected generated images in outputs/")
        outs = {p.stem: p for p in sorted(out_dir.iterdir()) if p.suffix.lower() in DATASET_EXTENSIONS}
        if not outs:
            raise InputError(f"{out_dir}: no PNG images")
        jpeg = [p.name for p in outs.values() if p.suffix.lower() in JPEG_EXTENSIONS]
        if jpeg and not allow_jpeg_outputs:
            raise InputError(f"{out_dir / jpeg[0]}: generated samples must be PNG (JPEG compression shifts FID); "
                             "to evaluate them anyway, pass --allow-jpeg (Python: allow_jpeg_outputs=True)")
        stems = sorted(outs)
        kw: dict[str, list] = {"outputs": [outs[s] for s in stems]}
        images = DATASET_EXTENSIONS
        for name, exts in (("exemplars", images), ("targets", images), ("structures", images),
                           ("labels", images), ("exemplar_labels", images),
                           ("landmarks", {".json", ".npy"}), ("exemplar_landmarks", {".json", ".npy"}),
                           ("predicted_points", {".json", ".npy"})):
            d = root / name
            if not d.is_dir():
                continue
            files = {p.stem: p for p in sorted(d.iterdir()) if p.suffix.lower() in exts}
            lacking = [s for s in stems if s not in files]
            if lacking:
                raise InputError(f"{d}: no file for output stem {lacking[0]!r} ({len(lacking)} missing)")
            kw[name] = [files[s] for s in stems]
        return cls(stems=stems, **kw)
