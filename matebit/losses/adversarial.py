"""Hinge adversarial losses (Eq. 13) and the released code's discriminator feature matching.

Discriminator outputs may be one logits tensor, a list of tensors (one per scale), or a list of
lists (one per scale, intermediate feature maps first, logits last), as a multi-scale PatchGAN
returns them. Scales are averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

DOutput = Tensor | Sequence[Tensor] | Sequence[Sequence[Tensor]]


def _scales(pred: DOutput) -> list[list[Tensor]]:
    if isinstance(pred, Tensor):
        return [[pred]]
    out = [[p] if isinstance(p, Tensor) else list(p) for p in pred]
    if not out or any(not s for s in out):
        raise ValueError("discriminator output: got an empty list")
    return out


def _logits(pred: DOutput) -> list[Tensor]:
    return [s[-1] for s in _scales(pred)]


def d_hinge_loss(real_logits: DOutput, fake_logits: DOutput) -> Tensor:
    """mean relu(1 - D(real)) + mean relu(1 + D(fake)), averaged over scales.

    Eq. 13 writes -E[h(D(y_B))] - E[h(-D(x_hat))] with h(t) = min(0, t - 1), which is the same thing.
    (Departure, the trainer's choice: the paper calls y_B real; the released code uses x_B.)
    """
    real, fake = _logits(real_logits), _logits(fake_logits)
    if len(real) != len(fake):
        raise ValueError(f"d_hinge_loss: {len(real)} real scales but {len(fake)} fake scales")
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)


def g_hinge_loss(fake_logits: DOutput) -> Tensor:
    """-mean D(fake), averaged over scales."""
    fake = _logits(fake_logits)
    return sum(-f.mean() for f in fake) / len(fake)


def feature_matching_loss(fake_feats: DOutput, real_feats: DOutput) -> Tensor:
    """Released code's GAN_Feat: sum over scales and intermediate D maps (logits excluded) of
    L1(D_f(fake), D_f(real).detach()), divided by the number of scales."""
    fake, real = _scales(fake_feats), _scales(real_feats)
    if len(fake) != len(real):
        raise ValueError(f"feature_matching_loss: {len(fake)} fake scales but {len(real)} real scales")
    total = fake[0][-1].new_zeros(())
    for f_scale, r_scale in zip(fake, real):
        if len(f_scale) != len(r_scale):
            raise ValueError("feature_matching_loss: fake and real scales have different numbers of maps")
        for f, r in zip(f_scale[:-1], r_scale[:-1]):
            total = total + F.l1_loss(f, r.detach())
    return total / len(fake)
