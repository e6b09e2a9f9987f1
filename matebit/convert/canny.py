"""Canny edges with thresholds chosen from the image median (no per-image tuning).

Output follows the package's structure-map convention: lines are 255 (white) on 0 (black), PIL 'L'.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from matebit.errors import ConvertError
from matebit.io import ImageLike, as_rgb_array


def auto_thresholds(gray: np.ndarray, sigma: float = 0.33) -> tuple[float, float]:
    """Hysteresis thresholds (1 - sigma) * median and (1 + sigma) * median of the grey levels.

    A floor keeps flat/dark images (median near 0) from turning every noise ripple into an edge.
    """
    med = float(np.median(gray))
    low = max(0.0, (1.0 - sigma) * med)
    high = min(255.0, (1.0 + sigma) * med)
    high = max(high, 30.0)
    low = max(min(low, high - 1.0), high / 3.0)
    return low, high


def canny_edges(
    image: ImageLike,
    *,
    sigma: float = 0.33,
    blur: float = 1.0,
    low: float | None = None,
    high: float | None = None,
) -> np.ndarray:
    """Boolean (H, W) edge mask.

    blur: std of a Gaussian applied first (0 disables); suppresses texture and JPEG noise.
    low/high: explicit hysteresis thresholds (0-255 grey scale) overriding the automatic ones.
    """
    if sigma < 0:
        raise ValueError("sigma must be >= 0")
    if blur < 0:
        raise ValueError("blur must be >= 0")
    gray = cv2.cvtColor(as_rgb_array(image, ConvertError), cv2.COLOR_RGB2GRAY)
    if blur > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), sigmaX=blur)
    auto_low, auto_high = auto_thresholds(gray, sigma)
    low = auto_low if low is None else float(low)
    high = auto_high if high is None else float(high)
    if low > high:
        raise ValueError(f"low threshold {low} is above high threshold {high}")
    return cv2.Canny(gray, low, high, L2gradient=True) > 0


def canny(
    image: ImageLike,
    *,
    sigma: float = 0.33,
    blur: float = 1.0,
    low: float | None = None,
    high: float | None = None,
) -> Image.Image:
    """Photo -> Canny edge map, PIL 'L', white lines on black. See :func:`canny_edges`."""
    edges = canny_edges(image, sigma=sigma, blur=blur, low=low, high=high)
    return Image.fromarray(edges.astype(np.uint8) * 255)
