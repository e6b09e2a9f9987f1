"""Face photo -> CelebA-HQ-style edge input: connected 68 landmarks inside the face, Canny outside.

The paper (Sec. 4): "we connect the face landmarks for face region, and use Canny edge detector to
detect edges in the background". The released code instead draws CelebAMask-HQ parsing boundaries
(from the data set's parsing masks); we follow the paper, since parsing masks are not available for new
photos. Landmarks come from dlib's 68-point predictor (iBUG 300-W indexing).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from matebit.errors import ConvertError, MissingDependencyError
from matebit.io import package_data_file

from matebit.io import ImageLike, as_rgb_array

from ._common import parse_size, require
from .canny import canny_edges

# iBUG 68-point groups, 0-based: (first, last inclusive, closed polygon?)
FACE_PARTS_68 = {
    "jaw": (0, 16, False),
    "right_brow": (17, 21, False),
    "left_brow": (22, 26, False),
    "nose_bridge": (27, 30, False),
    "nose_base": (31, 35, False),
    "right_eye": (36, 41, True),
    "left_eye": (42, 47, True),
    "outer_lips": (48, 59, True),
    "inner_lips": (60, 67, True),
}

_DLIB_HINT = "face landmarks need dlib: pip install 'matebit[landmarks]'"
_MODEL_NAME = "shape_predictor_68_face_landmarks.dat"


def _auto_width(w: int, h: int) -> int:
    # 1 px at 256 px, thicker for big photos, so lines survive the loader's downscale to 256.
    return max(1, int(round(min(w, h) / 256)))


def landmarks_to_sketch(points68, size, *, line_width: int | None = None) -> Image.Image:
    """Draw 68 landmarks (array-like (68, 2) of x, y pixels) as a face sketch; PIL 'L', white on black.

    size: (W, H) of the canvas (or an int for a square). Needs no dlib.
    """
    w, h = parse_size(size)
    pts = np.asarray(points68, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"expected 68 (x, y) landmarks, got an array of shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("landmarks contain NaN or inf")
    lw = _auto_width(w, h) if line_width is None else int(line_width)
    if lw < 1:
        raise ValueError("line_width must be >= 1")
    canvas = np.zeros((h, w), np.uint8)
    # Sub-pixel precision: cv2 draws with fixed-point coordinates when shift > 0.
    shift = 4
    ipts = np.round(pts * (1 << shift)).astype(np.int32)
    for first, last, closed in FACE_PARTS_68.values():
        poly = ipts[first : last + 1].reshape(-1, 1, 2)
        cv2.polylines(canvas, [poly], closed, 255, thickness=lw, lineType=cv2.LINE_8, shift=shift)
    return Image.fromarray(canvas)


def face_hull_mask(points68, size, *, margin: int = 0) -> np.ndarray:
    """Boolean (H, W) mask of the convex hull of the landmarks, grown by `margin` pixels."""
    w, h = parse_size(size)
    pts = np.round(np.asarray(points68, dtype=np.float64)).astype(np.int32)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(pts), 1)
    if margin > 0:
        k = 2 * margin + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return mask.astype(bool)


def predictor_model_path() -> Path:
    """Location of shape_predictor_68_face_landmarks.dat from the face-recognition-models package.

    Found via the import machinery without importing the package: its __init__ needs
    pkg_resources, which recent setuptools no longer ships.
    """
    found = package_data_file("face_recognition_models", "models", _MODEL_NAME)
    if found is not None:
        return found
    # Debian's libdlib-data ships the same file.
    debian = Path("/usr/share/dlib") / _MODEL_NAME
    if debian.is_file():
        return debian
    raise ImportError(f"{_MODEL_NAME} not found; {_DLIB_HINT}")


@functools.lru_cache(maxsize=4)
def _load_dlib(predictor_path: str | None):
    dlib = require("dlib", "face landmarks", "landmarks")
    try:
        path = str(predictor_path) if predictor_path else str(predictor_model_path())
    except ImportError as exc:
        raise MissingDependencyError(str(exc)) from None
    if not os.path.isfile(path):
        raise ConvertError(f"{path}: landmark model file not found")
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(path)


def detect_landmarks(
    image: ImageLike,
    *,
    upsample: int | None = None,
    predictor_path: str | os.PathLike | None = None,
    name: str | None = None,
) -> np.ndarray:
    """68 (x, y) landmarks (float64 array (68, 2)) of the most confident frontal face.

    upsample: dlib detector upsampling passes; None picks 1 for small images (< 400 px) else 0.
    name: used in the "no face" error (defaults to the path when one is given).
    Raises ConvertError when no face is found.
    """
    if name is None and isinstance(image, (str, os.PathLike)):
        name = str(image)
    rgb = as_rgb_array(image, ConvertError)
    detector, predictor = _load_dlib(str(predictor_path) if predictor_path else None)
    h, w = rgb.shape[:2]
    if upsample is None:
        upsample = 1 if min(h, w) < 400 else 0
    rects, scores, _ = detector.run(rgb, int(upsample), 0.0)
    if len(rects) == 0 and upsample == 0:
        rects, scores, _ = detector.run(rgb, 1, 0.0)
    if len(rects) == 0:
        raise ConvertError(f"{name or 'image'}: no face found")
    # Highest score, not largest box: upsampling can produce confident-looking false boxes of similar size.
    best = rects[int(np.argmax(scores))]
    shape = predictor(rgb, best)
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)


def landmarks(
    image: ImageLike,
    *,
    line_width: int | None = None,
    background: bool = True,
    canny_sigma: float = 0.33,
    canny_blur: float = 1.0,
    margin: int | None = None,
    upsample: int | None = None,
    predictor_path: str | os.PathLike | None = None,
) -> Image.Image:
    """Face photo -> landmark sketch inside the face + Canny edges outside it; PIL 'L', white on black.

    background: add Canny edges outside the (slightly grown) landmark hull, as in the paper.
    margin: pixels the hull is grown by before masking Canny (default 2 * line width), so the
      jaw outline is not doubled by a parallel Canny edge.
    """
    name = str(image) if isinstance(image, (str, os.PathLike)) else None
    rgb = as_rgb_array(image, ConvertError)
    h, w = rgb.shape[:2]
    pts = detect_landmarks(rgb, upsample=upsample, predictor_path=predictor_path, name=name)
    lw = _auto_width(w, h) if line_width is None else int(line_width)
    sketch = np.asarray(landmarks_to_sketch(pts, (w, h), line_width=lw)).copy()
    if background:
        edges = canny_edges(rgb, sigma=canny_sigma, blur=canny_blur)
        hull = face_hull_mask(pts, (w, h), margin=2 * lw if margin is None else int(margin))
        sketch[edges & ~hull] = 255
    return Image.fromarray(sketch)
