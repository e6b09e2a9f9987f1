"""The one colouring of attention heat maps and reliability maps, for the web page (`matebit.app`) and the demo
report (`matebit.demo.report`)."""

from __future__ import annotations

import numpy as np

_CMAP_ANCHORS = np.array([[0, 0, 0.5], [0, 0.3, 1], [0, 0.9, 1], [1, 1, 0], [1, 0.4, 0], [0.75, 0, 0]])
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as PIL's convert("L")


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> float RGB (..., 3) on a blue-cyan-yellow-red scale."""
    v = np.clip(values, 0, 1)
    xs = np.linspace(0, 1, len(_CMAP_ANCHORS))
    return np.stack([np.interp(v, xs, _CMAP_ANCHORS[:, c]) for c in range(3)], axis=-1)


def heat_overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """A heat map over an image, as uint8 RGB (H, W, 3): the image dimmed to grey, the heat (normalised to its max)
    in colour on top, with opacity sqrt(heat) so that the tail of the distribution stays visible.

    image: (H, W, 3) or (H, W), uint8. heat: (H, W), or a coarser grid (a token grid), enlarged by nearest neighbour
    so that its cells stay visibly blocky, as they are.
    """
    image = np.asarray(image, dtype=np.float64)
    grey = image @ _LUMA if image.ndim == 3 else image
    heat = np.asarray(heat, dtype=np.float64)
    height, width = grey.shape
    if heat.shape != (height, width):
        heat = heat[np.arange(height) * heat.shape[0] // height][:, np.arange(width) * heat.shape[1] // width]
    h = heat / heat.max() if heat.max() > 0 else heat
    base = grey[..., None] / 255.0 * 0.6
    alpha = np.sqrt(h)[..., None] * 0.85
    out = base * (1 - alpha) + colormap(h) * alpha
    return (out * 255).round().clip(0, 255).astype(np.uint8)
