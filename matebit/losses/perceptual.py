"""VGG-feature losses: perceptual (Eq. 10), contextual (Eq. 11, Mechrez et al. 2018) and the released
code's VGG feature matching. All take dicts of named activations as returned by
``matebit.third_party.VGGFeatures``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from matebit.models.layers import channel_norm

from ._util import l1_per_sample, weighted_sample_mean

# Released code's contextual weights: 8 CX(relu5_2) + 4 CX(relu4_2) + 2 CX(avgpool2(relu3_2)).
CX_WEIGHTS: dict[str, float] = {"relu5_2": 8.0, "relu4_2": 4.0, "relu3_2": 2.0}
CX_POOL: dict[str, int] = {"relu3_2": 2}
# Released code's VGG feature matching weights over relu1_2..relu5_2.
FM_WEIGHTS: dict[str, float] = {"relu1_2": 1 / 32, "relu2_2": 1 / 16, "relu3_2": 1 / 8, "relu4_2": 1 / 4, "relu5_2": 1.0}


def _get(feats: Mapping[str, Tensor], layer: str, who: str) -> Tensor:
    if layer not in feats:
        raise KeyError(f"{who}: feature {layer!r} missing (have {sorted(feats)})")
    return feats[layer]


def perceptual_loss(
    feats_fake: Mapping[str, Tensor],
    feats_real: Mapping[str, Tensor],
    layer: str = "relu4_2",
    kind: Literal["l1", "mse"] = "l1",
) -> Tensor:
    """Eq. 10: L1 between phi_l(x_hat_B) and phi_l(x_B) at relu4_2. The released code uses MSE (kind="mse")."""
    a, b = _get(feats_fake, layer, "perceptual_loss"), _get(feats_real, layer, "perceptual_loss")
    if kind == "l1":
        return F.l1_loss(a, b)
    if kind == "mse":
        return F.mse_loss(a, b)
    raise ValueError(f"perceptual_loss: kind must be 'l1' or 'mse', got {kind!r}")


def vgg_feature_matching_loss(
    feats_fake: Mapping[str, Tensor],
    feats_real: Mapping[str, Tensor],
    weights: Mapping[str, float] | None = None,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """Released code's ``fm`` term: sum_l c_l * L1(phi_l(x_hat), phi_l(x_B)), c = (1/32, ..., 1/4, 1).

    ``sample_weight`` (B,) restricts it to self-reference pairs as the released code does.
    """
    weights = FM_WEIGHTS if weights is None else weights
    total = 0
    for layer, c in weights.items():
        a = _get(feats_fake, layer, "vgg_feature_matching_loss")
        b = _get(feats_real, layer, "vgg_feature_matching_loss")
        total = total + c * weighted_sample_mean(l1_per_sample(a, b), sample_weight)
    return total


def contextual_similarity(
    x: Tensor,
    y: Tensor,
    h: float = 0.1,
    eps: float = 1e-3,
    center: Literal["y_mean", "y_position", "none"] = "y_mean",
) -> Tensor:
    """CX(x, y) per sample, (B,), in (0, 1]; x is the output's features, y the exemplar's.

    Steps (Mechrez et al. 2018): centre both by y's mean; cosine distance d_ij between x_i and y_j;
    relative distance d_ij / (min_k d_ik + eps); affinity exp((1 - d~)/h) normalised over j (a softmax,
    which is the same and cannot overflow); CX = mean_i max_j.
    Choices: ``center="y_mean"`` uses each sample's spatial channel mean of y (Mechrez averages over
    the batch too; per sample keeps samples independent); "y_position" is the released code's --PONO
    variant (y's per-position channel mean). ``eps=1e-3`` and the mean_i max_j reduction follow the
    released (CoCosNet) code; Mechrez's paper uses eps=1e-5 and mean_j max_i.
    The result is invariant to permuting positions (CX compares feature sets, not layouts).
    """
    if x.shape[:2] != y.shape[:2]:
        raise ValueError(f"contextual_similarity: shapes {tuple(x.shape)} and {tuple(y.shape)} differ in B or C")
    b, c = x.shape[:2]
    xf, yf = x.reshape(b, c, -1).float(), y.reshape(b, c, -1).float()
    if center == "y_mean":
        mu = yf.mean(dim=2, keepdim=True)
        xf, yf = xf - mu, yf - mu
    elif center == "y_position":
        if x.shape != y.shape:
            raise ValueError("contextual_similarity: center='y_position' needs equal shapes")
        mu = yf.mean(dim=1, keepdim=True)
        xf, yf = xf - mu, yf - mu
    elif center != "none":
        raise ValueError(f"contextual_similarity: unknown center {center!r}")
    # F.normalize's strided norm over channels is slow on CPU (models/layers.py: channel_norm); same value
    xf = xf / channel_norm(xf).clamp_min(1e-10)
    yf = yf / channel_norm(yf).clamp_min(1e-10)
    d = 1 - xf.transpose(1, 2) @ yf  # (B, N_x, N_y)
    d_rel = d / (d.min(dim=2, keepdim=True).values + eps)
    a = torch.softmax((1 - d_rel) / h, dim=2)
    return a.max(dim=2).values.mean(dim=1)


def contextual_loss(x_feats: Tensor, y_feats: Tensor, h: float = 0.1, **kwargs) -> Tensor:
    """-log CX(x, y), averaged over the batch (one feature layer)."""
    cx = contextual_similarity(x_feats, y_feats, h=h, **kwargs)
    return -torch.log(cx.clamp_min(1e-12)).mean()


def contextual_loss_multi(
    feats_x: Mapping[str, Tensor],
    feats_y: Mapping[str, Tensor],
    weights: Mapping[str, float] | None = None,
    form: Literal["paper", "official"] = "paper",
    pool: Mapping[str, int] | None = None,
    h: float = 0.1,
    **kwargs,
) -> Tensor:
    """Eq. 11 over several layers.

    form="paper": -log(sum_l w_l CX_l) with the weights normalised to sum 1, so the loss is >= 0 and 0
    only when every CX_l = 1 (the paper gives no values; we reuse the released code's 8:4:2, i.e.
    4/7, 2/7, 1/7). form="official": sum_l w_l (-log CX_l) with the raw weights (8, 4, 2), as released.
    ``pool`` average-pools a layer before comparing (released: relu3_2 by 2).
    """
    weights = CX_WEIGHTS if weights is None else weights
    pool = CX_POOL if pool is None else pool
    cxs: dict[str, Tensor] = {}
    for layer in weights:
        a = _get(feats_x, layer, "contextual_loss_multi")
        b = _get(feats_y, layer, "contextual_loss_multi")
        k = pool.get(layer, 1)
        if k > 1:
            a, b = F.avg_pool2d(a, k), F.avg_pool2d(b, k)
        cxs[layer] = contextual_similarity(a, b, h=h, **kwargs)
    if form == "paper":
        total_w = sum(weights.values())
        mix = sum((w / total_w) * cxs[layer] for layer, w in weights.items())
        return -torch.log(mix.clamp_min(1e-12)).mean()
    if form == "official":
        return sum(w * -torch.log(cxs[layer].clamp_min(1e-12)) for layer, w in weights.items()).mean()
    raise ValueError(f"contextual_loss_multi: form must be 'paper' or 'official', got {form!r}")
