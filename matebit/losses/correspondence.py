"""Correspondence losses (paper Sec. 3.4): semantic alignment (Eq. 8) and correspondence (Eq. 9); and the
self-warp matching term (`match`, not in the paper)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from matebit.models.correspondence import downsample_to  # the ↓ of Eq. 9, one definition

from ._util import as_list, l1_per_sample, weighted_sample_mean


def align_loss(feat_a: Tensor | Sequence[Tensor], feat_b: Tensor | Sequence[Tensor]) -> Tensor:
    """Eq. 8: L1 between E_A(x_A) and E_B(x_B) features (already L2-normalised per position).

    Accepts one level or a list of levels; the levels are averaged. Departure: the released code sums
    its 4 levels (weight 1 each), i.e. 4x this value when all 4 are passed.
    """
    a, b = as_list(feat_a, "align_loss"), as_list(feat_b, "align_loss")
    if len(a) != len(b):
        raise ValueError(f"align_loss: {len(a)} levels for E_A but {len(b)} for E_B")
    return sum((fa - fb).abs().mean() for fa, fb in zip(a, b)) / len(a)


def corr_loss(warped: Tensor | Sequence[Tensor], target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
    """Eq. 9: each block's warped exemplar (B, 3, h, w) vs the target x_B area-downsampled to (h, w).

    L1, averaged over blocks. ``sample_weight`` (B,) restricts it to some samples (the released code
    uses self-reference pairs only); see ``weighted_sample_mean``. Departure: the released code sums
    the blocks instead of averaging them.
    """
    blocks = as_list(warped, "corr_loss")
    total = 0
    for w in blocks:
        total = total + weighted_sample_mean(l1_per_sample(w, downsample_to(target, w.shape[-2:])), sample_weight)
    return total / len(blocks)


def warp_match_targets(grid: Tensor, token_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Where each structure token should look in a self-warped exemplar, from the warp's sampling grid.

    grid: (B, H, W, 2) in grid_sample's normalised (x, y), align_corners=False: exemplar pixel (i, j) was read
    from x_B at grid[b, i, j]. Each exemplar token's source is the mean of its pixels' sources; a structure token
    (a cell of x_B) belongs to the exemplar token whose source lies nearest its centre.
    Returns (target key index (B, N), valid (B, N)): a query is valid when that source lies within 3/4 of a token
    width of its centre (farther, its content has left the exemplar's view; inside the view the nearest source
    is at most half a source cell's diagonal away, 0.71 token without zoom, so a strong zoom-out drops a few
    queries inside it) and the sample is not mirrored (a mirrored exemplar's eyes swap sides, which appearance
    cannot tell apart).
    """
    h, w = token_hw
    b = grid.shape[0]
    src = F.adaptive_avg_pool2d(grid.permute(0, 3, 1, 2).float(), (h, w)).flatten(2).transpose(1, 2)  # (B, M, 2)
    # The identity grid at token resolution: each token's centre, in the token rows' order.
    identity = torch.eye(2, 3, device=grid.device).unsqueeze(0)
    centres = F.affine_grid(identity, [1, 1, h, w], align_corners=False).reshape(1, h * w, 2)
    dist = torch.cdist(centres.expand(b, -1, -1), src)  # (B, N, M), NaN for a NaN grid
    nearest = torch.nan_to_num(dist, nan=float("inf")).min(-1)
    token = max(2.0 / w, 2.0 / h)
    # Mirrored: x_B's x coordinate decreases along the exemplar's rows.
    mirrored = (grid[:, :, -1, 0] - grid[:, :, 0, 0]).mean(1) < 0
    valid = (nearest.values < 0.75 * token) & ~mirrored[:, None]
    return nearest.indices, valid


def match_loss(rows: Tensor | Sequence[Tensor], grid: Tensor, token_hw: tuple[int, int],
               sample_weight: Tensor | None = None) -> Tensor:
    """Not in the paper: cross-entropy of each block's unmasked attention rows (B, N, M) against the token the
    self-warp moved each structure token to (`warp_match_targets`), averaged over valid queries and blocks.

    The exemplar's warp is drawn by the training pipeline itself, so this is self-supervised: no labels, any data.
    Eq. 9 only asks the warped colours to match, which flat regions satisfy with any token of the region.
    """
    blocks = as_list(rows, "match_loss")
    target, valid = warp_match_targets(grid, token_hw)
    if sample_weight is not None:
        valid = valid & sample_weight.reshape(-1, 1).bool()
    weight = valid.float()
    total = 0
    for r in blocks:
        p = r.float().gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, N)
        nll = -torch.log(p.clamp_min(1e-6))
        total = total + (nll * weight).sum() / weight.sum().clamp_min(1.0)
    return total / len(blocks)
