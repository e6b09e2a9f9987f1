"""The released code's Gram-matrix style loss (not in the paper)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

# Released code: d = (1, 1/2, 1/4, 1/8, 1/16) over relu1_2..relu5_2.
GRAM_WEIGHTS: dict[str, float] = {"relu1_2": 1.0, "relu2_2": 1 / 2, "relu3_2": 1 / 4, "relu4_2": 1 / 8, "relu5_2": 1 / 16}


def gram_matrix(feat: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, C), F F^T / (C H W)."""
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def gram_style_loss(
    feats_x: Mapping[str, Tensor], feats_y: Mapping[str, Tensor], weights: Mapping[str, float] | None = None
) -> Tensor:
    """sum_l d_l * L1(Gram(phi_l(x)), Gram(phi_l(y))); x is the output, y the exemplar."""
    weights = GRAM_WEIGHTS if weights is None else weights
    total = 0
    for layer, d in weights.items():
        if layer not in feats_x or layer not in feats_y:
            raise KeyError(f"gram_style_loss: feature {layer!r} missing (have {sorted(feats_x)})")
        total = total + d * (gram_matrix(feats_x[layer]) - gram_matrix(feats_y[layer])).abs().mean()
    return total
