"""Small helpers shared by the loss functions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def as_list(x: Tensor | Sequence[Tensor], who: str) -> list[Tensor]:
    """A tensor or a non-empty sequence of tensors -> list of tensors."""
    items = [x] if isinstance(x, Tensor) else list(x)
    if not items:
        raise ValueError(f"{who}: got an empty list")
    return items


def weighted_sample_mean(per_sample: Tensor, sample_weight: Tensor | None) -> Tensor:
    """Mean over the batch, or a weighted mean when ``sample_weight`` (B,) is given.

    Used for the released code's self-reference-only terms (weight 1 for self pairs, 0 otherwise).
    Departure: the released code divides by (sum of weights) and then again by B through a batch
    ``.mean()``; we take the plain weighted mean, so the scale does not depend on the batch size.
    No selected sample -> 0 (with a graph), not NaN.
    """
    if sample_weight is None:
        return per_sample.mean()
    w = sample_weight.to(per_sample.dtype).reshape(-1)
    if w.shape[0] != per_sample.shape[0]:
        raise ValueError(f"sample_weight has {w.shape[0]} entries for a batch of {per_sample.shape[0]}")
    return (per_sample * w).sum() / w.sum().clamp_min(torch.finfo(per_sample.dtype).eps)


def l1_per_sample(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute difference per sample, (B,)."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a - b).abs().flatten(1).mean(1)
