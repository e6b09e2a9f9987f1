"""Correspondence losses (paper Sec. 3.4): semantic alignment (Eq. 8) and correspondence (Eq. 9)."""

from __future__ import annotations

from collections.abc import Sequence

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
