"""Geometric warps that turn a target x_B into a self-exemplar y_B (paper Sec. 3.4).

The paper builds training triplets {x_A, y_B, x_B} where y_B is "a geometrically warped version of x_B".
The released code only crops (<= 30 px) and flips. Departure: we implement the paper's wording with a random
affine (rotation, scale, shear, translation), a smooth non-rigid displacement field, an optional flip and a
random crop-resize, all folded into ONE sampling grid so the image is resampled once.

All randomness comes from the `torch.Generator` passed in, drawn in a fixed order, so a seeded generator gives
identical warps on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Declared beside the run's settings (a run's strength is TrainConfig.warp); re-exported here, where it is used.
from matebit.config import WarpConfig

__all__ = ["WarpConfig", "random_warp", "random_warp_batch", "warp_grid"]


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def warp_grid(batch: int, height: int, width: int, generator: torch.Generator, cfg: WarpConfig) -> torch.Tensor:
    """Random sampling grids (B, H, W, 2) in grid_sample's normalised (x, y) coords, align_corners=False.

    grid[b, i, j] is where output pixel (i, j) reads from in the source, so it is also the exact
    correspondence from the warped image back to the original.
    """
    g = generator
    B, H, W = batch, height, width
    # Draw every parameter up front, in a fixed order, so determinism does not depend on which are zero.
    rot = _uniform(B, -1, 1, g) * math.radians(cfg.rotation)
    scl = 1.0 + _uniform(B, -1, 1, g) * cfg.scale
    shx = torch.tan(_uniform(B, -1, 1, g) * math.radians(cfg.shear))
    tx = _uniform(B, -1, 1, g) * cfg.translation * 2.0  # normalised coords span 2 per side
    ty = _uniform(B, -1, 1, g) * cfg.translation * 2.0
    k = cfg.elastic_grid
    coarse = (torch.rand(B, 2, k, k, generator=g, dtype=torch.float64) * 2 - 1) * cfg.elastic * 2.0
    flip = torch.rand(B, generator=g, dtype=torch.float64) < cfg.flip
    keep = 1.0 - torch.rand(B, generator=g, dtype=torch.float64) * cfg.crop  # kept side fraction
    offx = _uniform(B, -1, 1, g) * (1.0 - keep)
    offy = _uniform(B, -1, 1, g) * (1.0 - keep)

    ys = (torch.arange(H, dtype=torch.float64) * 2 + 1) / H - 1
    xs = (torch.arange(W, dtype=torch.float64) * 2 + 1) / W - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    x = gx.expand(B, H, W)
    y = gy.expand(B, H, W)

    # Smooth non-rigid field: bicubic upsampling of a coarse random lattice, zero at zero strength.
    if cfg.elastic > 0:
        disp = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=True)
        x = x + disp[:, 0]
        y = y + disp[:, 1]

    # Affine about the centre, in a square metric frame (pixels / half the longer side) so rotations stay
    # rigid on non-square images.
    ax, ay = W / max(H, W), H / max(H, W)
    px, py = x * ax, y * ay
    c, s = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
    sh = shx[:, None, None]
    sc = scl[:, None, None]
    qx = (c * (px + sh * py) - s * py) / sc
    qy = (s * (px + sh * py) + c * py) / sc
    x = qx / ax + tx[:, None, None]
    y = qy / ay + ty[:, None, None]

    # Flip then crop-resize: output covers only a `keep` fraction of the (flipped, transformed) source.
    x = torch.where(flip[:, None, None], -x, x)
    kp = keep[:, None, None]
    x = x * kp + offx[:, None, None]
    y = y * kp + offy[:, None, None]
    return torch.stack([x, y], dim=-1)


def random_warp_batch(imgs: torch.Tensor, generator: torch.Generator, strength: WarpConfig,
                      return_grid: bool = False):
    """Warp each image of (B, C, H, W) with its own random parameters; values stay within the input range.

    Bilinear sampling is a convex combination of input pixels, and reflection/border padding never invents
    values, so outputs stay in the input's range (with padding_mode='zeros', 0 can appear).
    """
    if imgs.ndim != 4:
        raise ValueError(f"random_warp_batch expects (B, C, H, W), got shape {tuple(imgs.shape)}")
    B, _, H, W = imgs.shape
    grid = warp_grid(B, H, W, generator, strength).to(device=imgs.device, dtype=imgs.dtype)
    out = F.grid_sample(imgs, grid, mode="bilinear", padding_mode=strength.padding_mode, align_corners=False)
    return (out, grid) if return_grid else out


def random_warp(img: torch.Tensor, generator: torch.Generator, strength: WarpConfig,
                return_grid: bool = False):
    """Warp one (C, H, W) image; see `random_warp_batch`."""
    if img.ndim != 3:
        raise ValueError(f"random_warp expects (C, H, W), got shape {tuple(img.shape)}")
    out = random_warp_batch(img[None], generator, strength, return_grid=return_grid)
    if return_grid:
        return out[0][0], out[1][0]
    return out[0]
