"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al., ProGAN, 2018), seeded.

Recipe (ProGAN's numpy code, which MATEBIT's evaluation uses): per image, a Laplacian pyramid with a 5×5
binomial filter and mirror borders from the full resolution down to 16 px; per level, 128 random 7×7×3
patches; per level and per set, descriptors normalised per colour channel with that set's own mean and std
and flattened to 147-d; then 4 repeats × 128 random unit directions, both sets projected, sorted, mean
|difference|. Reported ×1e3 per level and as the mean over levels.

Random draws, in this order, make results reproducible and independent of batching: patch centres come from
`default_rng([seed, 0])`, image by image (reference set first, then outputs), level by level, 128 x then
128 y; directions come from `default_rng([seed, 1])`, level by level, repeat by repeat, a (147, 128) normal.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .distribution import reference_images
from .evalset import EvalSet
from .registry import MetricError, MetricOutput, register_metric

__all__ = ["laplacian_pyramid", "patch_descriptors", "normalise_descriptors", "sliced_wasserstein", "swd"]

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
_KERNEL = torch.outer(_BINOMIAL, _BINOMIAL) / 256.0
NHOOD = 7
NHOODS_PER_IMAGE = 128


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    c = x.shape[1]
    k = (_KERNEL * gain).to(x).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)  # torch 'reflect' = scipy 'mirror'


def laplacian_pyramid(x: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Levels of (B, C, H, W) float64 images: band-pass details first, the low-pass residual last."""
    levels = [x.double()]
    for _ in range(1, num_levels):
        down = _blur(levels[-1])[:, :, ::2, ::2]
        up = torch.zeros_like(levels[-1])
        up[:, :, ::2, ::2] = down
        levels[-1] = levels[-1] - _blur(up, gain=4.0)  # zero-stuffed upsample needs 4x gain
        levels.append(down)
    return levels


def num_levels_for(size: int) -> int:
    n, res = 0, size
    while res >= 16:
        n, res = n + 1, res // 2
    return n


def patch_descriptors(level: np.ndarray, rng: np.random.Generator, count: int = NHOODS_PER_IMAGE) -> np.ndarray:
    """(count, C, 7, 7) random patches of one (C, H, W) level; centres x then y drawn from [3, size - 3)."""
    c, h, w = level.shape
    r = NHOOD // 2
    xs = rng.integers(r, w - r, size=count)
    ys = rng.integers(r, h - r, size=count)
    off = np.arange(-r, r + 1)
    rows = (ys[:, None] + off)[:, None, :, None]  # (count, 1, 7, 1)
    cols = (xs[:, None] + off)[:, None, None, :]  # (count, 1, 1, 7)
    return level[np.arange(c)[None, :, None, None], rows, cols]


def normalise_descriptors(desc: np.ndarray) -> np.ndarray:
    """(N, C, 7, 7) -> (N, C*49), each channel standardised over all patches and pixels of the set."""
    mean = desc.mean(axis=(0, 2, 3), keepdims=True)
    std = desc.std(axis=(0, 2, 3), keepdims=True)
    return ((desc - mean) / np.maximum(std, 1e-12)).reshape(len(desc), -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, repeats: int = 4,
                       dirs_per_repeat: int = 128) -> float:
    """Mean over repeats and directions of the mean |sorted(a·d) - sorted(b·d)| (equal set sizes)."""
    if a.shape != b.shape:
        raise MetricError(f"SWD needs equally many descriptors per set, got {a.shape[0]} and {b.shape[0]}")
    out = []
    for _ in range(repeats):
        dirs = rng.standard_normal((a.shape[1], dirs_per_repeat))
        dirs /= np.sqrt((dirs ** 2).sum(axis=0, keepdims=True))
        pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
        out.append(np.abs(pa - pb).mean())
    return float(np.mean(out))


def _set_descriptors(images: Sequence[np.ndarray], num_levels: int, rng: np.random.Generator,
                     device: str) -> list[np.ndarray]:
    per_level: list[list[np.ndarray]] = [[] for _ in range(num_levels)]
    for im in images:
        x = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).to(device)[None].double()
        for lod, lev in enumerate(laplacian_pyramid(x, num_levels)):
            per_level[lod].append(patch_descriptors(lev[0].cpu().numpy(), rng))
    return [normalise_descriptors(np.concatenate(d)) for d in per_level]


def swd(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray], seed: int = 0, repeats: int = 4,
        dirs_per_repeat: int = 128, device: str = "cpu") -> dict[str, float]:
    """SWD ×1e3 per pyramid level ("swd@<res>") and their mean ("swd") between two equal-size uint8 sets."""
    if len(outputs) != len(reference):
        raise MetricError(f"SWD needs as many outputs as real images ({len(outputs)} vs {len(reference)})")
    shapes = {im.shape for im in list(outputs) + list(reference)}
    if len(shapes) != 1:
        raise MetricError(f"SWD needs all images the same size, got {sorted(shapes)}")
    h, w, _ = shapes.pop()
    if h != w or h < 16:
        raise MetricError(f"SWD needs square images of at least 16 px, got {h}x{w}")
    n = num_levels_for(h)
    if h % (2 ** (n - 1)):
        raise MetricError(f"SWD needs a size divisible by {2 ** (n - 1)} for {n} pyramid levels, got {h}")
    patch_rng = np.random.default_rng([seed, 0])
    dir_rng = np.random.default_rng([seed, 1])
    ref = _set_descriptors(reference, n, patch_rng, device)
    out = _set_descriptors(outputs, n, patch_rng, device)
    vals = {f"swd@{h >> lod}": 1e3 * sliced_wasserstein(ref[lod], out[lod], dir_rng, repeats, dirs_per_repeat)
            for lod in range(n)}
    vals["swd"] = float(np.mean(list(vals.values())))
    return vals


@register_metric(
    "swd",
    protocol="SWD ×1e3: ProGAN sliced Wasserstein on Laplacian-pyramid 7×7 patches (128/image/level, levels down "
             "to 16 px, per-channel normalised, 4×128 directions), outputs vs equally many real images, seeded.",
    needs=("outputs",),
)
def swd_metric(items: EvalSet, seed: int = 0, reference: str | None = None, size: int | None = None,
               device: str = "cpu", batch_size: Any = None) -> MetricOutput:
    """Sliced Wasserstein distance (lower is better); values swd (mean) and swd@<res> per level.
    `size` resizes every image (bicubic, PIL) first; otherwise all images must share one square size."""
    ref_name, ref = reference_images(items, reference)
    outs = items.images("outputs")
    if size is not None:
        outs, ref = [_resize(im, size) for im in outs], [_resize(im, size) for im in ref]
    vals = swd(outs, ref, seed=seed, device=device)
    return MetricOutput(vals, feature_network="none (pixels)", num_samples=len(outs),
                        notes=[f"reference set: {ref_name} (n={len(ref)})"])


def _resize(im: np.ndarray, size: int) -> np.ndarray:
    if im.shape[:2] == (size, size):
        return im
    from PIL import Image

    return np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC))
