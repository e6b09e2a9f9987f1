"""The released code's MAT block and correspondence, for the `official` preset (never the default).

The authors' code keeps DynaST's learned pruning mask where the paper has a ReLU: two extra 1x1 projections give a
binary keep/drop decision per (query, key) pair, trained through a sigmoid straight-through gradient, applied to
a scaled dot-product attention over l2-normalised features with the positional code concatenated. Its feed-forward
is AdaConv in ConvNeXt order with a layer scale. Everything here follows that code's behaviour, not its text; the
departures from the paper are tabled in docs/departures.md.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from matebit.config import ModelConfig
from matebit.models.correspondence import Correspondence, RowRequest, gather_rows, grid, tokens
from matebit.models.layers import (
    AdaConv,
    FeedForward,
    SpatialModulation,
    l2_normalize,
    official_pono,
    sine_position_code,
)
from matebit.models.mat import BlockAux, BlockContext


class _SignStraightThrough(torch.autograd.Function):
    """Hard 0/1 mask forward; the gradient of sigmoid backward (the released code's SignWithSigmoidGrad)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        ctx.save_for_backward(t)
        return (t > 0).to(t.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (t,) = ctx.saved_tensors
        s = torch.sigmoid(t)
        return grad * s * (1 - s)


def official_correspondence(q: Tensor, k: Tensor, v: Tensor, pq: Tensor, pk: Tensor,
                            return_weights: bool = False, rows: RowRequest | None = None
                            ) -> tuple[Correspondence, Tensor]:
    """Scaled dot-product attention multiplied by a learned binary mask, not renormalised.

    Returns the correspondence (reliability = mass kept by the mask, as in the released code) and the masked
    weights renormalised over the kept keys, used for the exemplar warp of Eq. 9. The released code builds that
    warp from the *complement* of the mask (inherited from DynaST); we use the kept keys, which is what Eq. 9
    describes.

    `rows`: also the attention rows of those queries from this pass (`Correspondence.rows`). This block has no
    cosine: "full" is its scaled-dot-product softmax, "masked" and "used" the same weights restricted to the keys
    its learned mask keeps, renormalised (what X_cor and the warp use).
    """
    scale = q.shape[-1] ** -0.5
    probs = torch.softmax((q @ k.transpose(-1, -2)).float() * scale, dim=-1)
    attn = probs.to(v.dtype)
    keep = _SignStraightThrough.apply((pq @ pk.transpose(-1, -2)) / pq.shape[-1])
    masked = attn * keep
    reliability = masked.sum(-1)
    warp_weights = masked / reliability.unsqueeze(-1).clamp_min(1e-6)
    corr = Correspondence(masked @ v, reliability, masked if return_weights else None)
    if rows is not None:
        def pick(t: Tensor) -> Tensor:
            return t if rows.index is None else gather_rows(t, rows.index)

        kept = pick(warp_weights).float()
        corr.rows = {kind: pick(probs) if kind == "full" else kept for kind in rows.kinds}
    return corr, warp_weights


class OfficialMATBlock(nn.Module):
    """The released block: learned sign mask over a scaled dot product, concatenated positional code,
    X_uncor from PONO of the block input, ConvNeXt-ordered AdaConv with layer scale."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.feature_channels
        cq = c + cfg.official_pos_channels
        self.to_q = nn.Conv2d(cq, cq, 1)
        self.to_k = nn.Conv2d(cq, cq, 1)
        self.to_v = nn.Conv2d(c, c, 1)
        self.prune_q = nn.Conv2d(cq, cfg.official_prune_channels, 1)
        self.prune_k = nn.Conv2d(cq, cfg.official_prune_channels, 1)
        self.modulate = SpatialModulation(c, cfg.structure_channels, cfg.spade_hidden)
        if cfg.feed_forward == "adaconv":
            self.feed_forward = AdaConv(c, cfg.adaconv_kernel, cfg.adaconv_expansion, "convnext")
        else:
            self.feed_forward = FeedForward(c, cfg.adaconv_expansion)

    @staticmethod
    def position_gain(cfg: ModelConfig) -> nn.Parameter | None:
        return None  # the released code's code has no gain

    @staticmethod
    def position_code(cfg: ModelConfig, h: int, w: int, like: Tensor, gain: Tensor | None) -> Tensor:
        """The code concatenated to Q's and K's inputs (released code): its own `official_pos_channels`."""
        return sine_position_code(h, w, cfg.official_pos_channels, like.device, like.dtype)

    def _project(self, x: Tensor, y: Tensor, pos: Tensor) -> tuple[Tensor, ...]:
        pos = pos.expand(x.shape[0], -1, -1, -1)
        q_in = torch.cat([l2_normalize(x), pos], dim=1)  # concatenated, not added (released code)
        k_in = torch.cat([l2_normalize(y), pos], dim=1)
        q, k, v = tokens(self.to_q(q_in)), tokens(self.to_k(k_in)), tokens(self.to_v(y))
        return q, k, v, tokens(self.prune_q(q_in)), tokens(self.prune_k(k_in))

    def forward(self, x: Tensor, y: Tensor, ctx: BlockContext,
                rows: RowRequest | None = None) -> tuple[Tensor, BlockAux]:
        b, _, h, w = x.shape
        q, k, v, pq, pk = self._project(x, y, ctx.pos)
        corr, warp_weights = official_correspondence(q, k, v, pq, pk, rows=rows)
        x_cor = grid(corr.out, h, w)
        warped = grid(warp_weights @ tokens(ctx.exemplar_small.to(v.dtype)), h, w)
        uncor = (1 - corr.reliability).clamp(0, 1).reshape(b, 1, h, w)
        x_uncor = uncor * self.modulate(official_pono(x), ctx.structure)  # released: PONO of the input, not of Q
        x_agg = official_pono(x_cor + x_uncor + x)  # released: adds X, not Q
        out = self.feed_forward(x_agg) + x_agg
        return out, BlockAux(warped=warped, uncor_weight=uncor, rows=corr.rows)

