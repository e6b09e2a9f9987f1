"""One MAT block (Sec. 3.1, Fig. 3b/3d): masked correspondence, reliability-adaptive aggregation, AdaConv.

Three kinds share this file so they can be compared line by line:
  masked   - the paper: centred cosine, ReLU mask, softmax(alpha *), X_uncor, PONO, AdaConv (Eqs. 1-6)
  full     - the 'Full Corr.' ablation: CoCosNet's full correspondence, no mask, no X_uncor, no AdaConv
  official - the released code: DynaST's learned sign mask over a scaled dot product, concatenated positional
             code, ConvNeXt-ordered AdaConv with layer scale
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from matebit.config import ModelConfig
from matebit.models.correspondence import (
    attention_rows,
    centred_unit,
    masked_correspondence,
    official_correspondence,
)
from matebit.models.layers import AdaConv, FeedForward, SpatialModulation, l2_normalize, pono


@dataclass
class BlockAux:
    """What one block reports besides its output features (all on the token grid h x w)."""

    warped: Tensor  # (B, 3, h, w) the exemplar warped by the block's correspondence (for Eq. 9)
    uncor_weight: Tensor  # (B, 1, h, w) weight of X_uncor: 1 - reliability, in [0, 1]
    weights: Tensor | None = None  # (B, N, M) full attention matrix, on request
    rows_masked: Tensor | None = None  # (B, P, M) correspondence of queried points, masked
    rows_full: Tensor | None = None  # (B, P, M) and unmasked (Fig. 1)


def _tokens(x: Tensor) -> Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, hw, C)


def _grid(t: Tensor, h: int, w: int) -> Tensor:
    return t.transpose(1, 2).reshape(t.shape[0], -1, h, w)


class MATBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.correspondence
        self.mask = cfg.mask
        self.alpha = cfg.alpha
        self.impl = cfg.attention_impl
        c = cfg.feature_channels
        if self.kind == "official":
            cq = c + cfg.official_pos_channels
            self.to_q = nn.Conv2d(cq, cq, 1)
            self.to_k = nn.Conv2d(cq, cq, 1)
            self.to_v = nn.Conv2d(c, c, 1)
            self.prune_q = nn.Conv2d(cq, cfg.official_prune_channels, 1)
            self.prune_k = nn.Conv2d(cq, cfg.official_prune_channels, 1)
        else:
            self.to_q = nn.Conv2d(c, c, 1)
            self.to_k = nn.Conv2d(c, c, 1)
            self.to_v = nn.Conv2d(c, c, 1)
        if self.kind != "full":
            # Eq. 4: gamma and beta come from x_A.
            self.modulate = SpatialModulation(c, cfg.structure_channels, cfg.spade_hidden)
            if cfg.feed_forward == "adaconv":
                order = "convnext" if self.kind == "official" else "paper"
                self.feed_forward = AdaConv(c, cfg.adaconv_kernel, cfg.adaconv_expansion, order)
            else:
                self.feed_forward = FeedForward(c, cfg.adaconv_expansion)

    def forward(self, x: Tensor, y: Tensor, structure: Tensor, pos: Tensor, exemplar_small: Tensor,
                return_weights: bool = False, query_index: Tensor | None = None) -> tuple[Tensor, BlockAux]:
        """x: query stream X (B, C, h, w); y: exemplar features Y_B; structure: x_A at full size;
        pos: positional code; exemplar_small: y_B downsampled to (h, w), warped alongside V."""
        b, _, h, w = x.shape
        if self.kind == "official":
            return self._forward_official(x, y, structure, pos, exemplar_small, return_weights, query_index)

        # Q from X_A, K and V from Y_B by 1x1 convs; the positional code is added to both sides (Fig. 3d).
        q = self.to_q(x + pos)
        k = self.to_k(y + pos)
        v = self.to_v(y)
        qt, kt = centred_unit(_tokens(q)), centred_unit(_tokens(k))  # Eq. 1 operands
        # The exemplar rides along as three extra value channels: one pass gives X_cor and the Eq. 9 warp.
        values = torch.cat([_tokens(v), _tokens(exemplar_small.to(v.dtype))], dim=-1)
        mask = "none" if self.kind == "full" else self.mask
        corr = masked_correspondence(qt, kt, values, self.alpha, mask, self.impl, return_weights)
        x_cor = _grid(corr.out[..., :-3], h, w)  # Eq. 3
        warped = _grid(corr.out[..., -3:], h, w)
        uncor = (1 - corr.reliability).clamp(0, 1).reshape(b, 1, h, w)

        if self.kind == "full":
            # CoCosNet-style: the warped features replace MAT's aggregation; every match is trusted.
            out = pono(x_cor + q)
        else:
            # Eq. 4: normalise Q per channel over positions, then modulate it by gamma(x_A), beta(x_A).
            q_norm = self.modulate(F.instance_norm(q), structure)
            # Eq. 5 with a bounded weight. As printed, 1 - sum_j ReLU(A)(u, j) sums raw cosines over up to
            # h*w keys and leaves [0, 1] (it goes negative as soon as the cosines add up to more than 1).
            # We use 1 - (share of the softmax mass on keys the ReLU kept): 1 where no key is reliable,
            # 0 where the whole match is reliable. This is the released code's bounded form with the
            # paper's ReLU mask in place of its learned one.
            x_uncor = uncor * q_norm
            x_agg = pono(x_cor + x_uncor + q)  # Eq. 6
            out = self.feed_forward(x_agg) + x_agg  # X_MAT = AdaConv(X_agg) + X_agg

        aux = BlockAux(warped=warped, uncor_weight=uncor, weights=corr.weights)
        if query_index is not None:
            aux.rows_masked, aux.rows_full = attention_rows(qt, kt, self.alpha, query_index)
        return out, aux

    def _forward_official(self, x, y, structure, pos, exemplar_small, return_weights, query_index):
        b, _, h, w = x.shape
        pos = pos.expand(b, -1, -1, -1)
        q_in = torch.cat([l2_normalize(x), pos], dim=1)  # concatenated, not added (released code)
        k_in = torch.cat([l2_normalize(y), pos], dim=1)
        q, k, v = _tokens(self.to_q(q_in)), _tokens(self.to_k(k_in)), _tokens(self.to_v(y))
        pq, pk = _tokens(self.prune_q(q_in)), _tokens(self.prune_k(k_in))
        corr, warp_weights = official_correspondence(q, k, v, pq, pk, return_weights)
        x_cor = _grid(corr.out, h, w)
        warped = _grid(warp_weights @ _tokens(exemplar_small.to(v.dtype)), h, w)
        uncor = (1 - corr.reliability).clamp(0, 1).reshape(b, 1, h, w)
        x_uncor = uncor * self.modulate(pono(x), structure)  # released: PONO of the block input, not of Q
        x_agg = pono(x_cor + x_uncor + x)  # released: adds X, not Q
        out = self.feed_forward(x_agg) + x_agg
        aux = BlockAux(warped=warped, uncor_weight=uncor, weights=corr.weights)
        if query_index is not None:
            # The official block has no cosine; show its scaled-dot-product attention for both panels.
            qi = query_index.to(q.device).long()
            qi = qi.unsqueeze(0).expand(b, -1) if qi.dim() == 1 else qi
            rows = torch.gather(q, 1, qi.unsqueeze(-1).expand(-1, -1, q.shape[-1]))
            attn = torch.softmax((rows @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5, -1)
            aux.rows_masked = aux.rows_full = attn
        return out, aux
