"""Backdrop-and-clothes recolouring of training exemplars (not in the paper; `train.recolour_background`).

Why: every London-faces portrait has the same light-grey backdrop and a white T-shirt, so a face model trained on
them only ever matched faces against grey and white. Given an exemplar with a blue flag behind a dark uniform (the
demo's Grace Hopper) the model drew a dark face: the skin tokens matched the uniform and cap. Recolouring the plain
region around the person in the self-exemplar (after its warp; the target keeps its own) with a random smooth colour
field makes the correspondence find the face against backdrops and clothes of any colour. With
`train.recolour_target` the target is recoloured instead, before the warp, so that the output must take the new
colours too (tried, not the preset: docs/faces.md).

The region is found without labels: the pixels connected to the image border through small colour steps (a
flood fill in CIE Lab from seeds along the border), which on plain-backdrop portraits is the backdrop plus the
clothes that touch the border. It is meant for such photos; on cluttered ones it recolours little.
All randomness comes from the `torch.Generator` passed in, drawn in a fixed order.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["border_region", "recolour_background"]

# Largest Lab step (OpenCV's 8-bit L, a, b) between neighbouring pixels inside one region: a smooth backdrop and a
# white shirt's shading stay below it, the step to hair or skin does not (checked on the London-faces portraits).
_TOLERANCE = (4, 3, 3)
_SEEDS_PER_SIDE = 16


def border_region(image: np.ndarray, tolerance: tuple[int, int, int] = _TOLERANCE) -> np.ndarray:
    """(H, W) bool: the pixels of an (H, W, 3) uint8 RGB image connected to its border by steps under `tolerance`."""
    h, w = image.shape[:2]
    lab = cv2.cvtColor(cv2.GaussianBlur(image, (3, 3), 0), cv2.COLOR_RGB2LAB)
    mask = np.zeros((h + 2, w + 2), np.uint8)  # OpenCV's flood-fill mask has a one-pixel frame
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    xs = np.linspace(0, w - 1, _SEEDS_PER_SIDE).round().astype(int)
    ys = np.linspace(0, h - 1, _SEEDS_PER_SIDE).round().astype(int)
    seeds = ([(int(x), 0) for x in xs] + [(int(x), h - 1) for x in xs]
             + [(0, int(y)) for y in ys] + [(w - 1, int(y)) for y in ys])
    for x, y in seeds:
        if not mask[y + 1, x + 1]:
            cv2.floodFill(lab, mask, (x, y), 0, tolerance, tolerance, flags)
    return mask[1:-1, 1:-1].astype(bool)


def recolour_background(image: torch.Tensor, generator: torch.Generator, max_cells: int = 4) -> torch.Tensor:
    """`image` (3, H, W) in [-1, 1] with its border region (`border_region`) replaced by a random smooth colour
    field: a k x k grid of uniform random colours (k in 1..max_cells) interpolated bilinearly, so it adds no edge
    that the structure map lacks. The region's rim is feathered over a pixel so no grey halo stays around the person.
    """
    g = generator
    k = 1 + int(torch.randint(0, max_cells, (1,), generator=g))
    colours = torch.rand(1, 3, k, k, generator=g) * 2 - 1
    h, w = image.shape[-2:]
    field = F.interpolate(colours, size=(h, w), mode="bilinear", align_corners=True)[0] if k > 1 \
        else colours[0].expand(3, h, w)
    u8 = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    region = torch.from_numpy(border_region(np.ascontiguousarray(u8))).float()[None, None]
    soft = F.avg_pool2d(F.pad(region, (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0]  # (1, H, W)
    return (soft * field + (1 - soft) * image).to(image.dtype)
