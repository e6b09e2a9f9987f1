"""The MAT block of the paper (Sec. 3.1, Fig. 3b/3d) and the 'Full Corr.' ablation's block.

  MaskedMATBlock           centred cosine, ReLU mask, softmax(alpha *), X_uncor, PONO, AdaConv (Eqs. 1-6)
  FullCorrespondenceBlock  CoCosNet's full correspondence: no mask, no X_uncor, no AdaConv (Table 2)

The released code's block is in `official.py`; `generator.BLOCKS` maps `ModelConfig.correspondence` to the class.
Every block kind has the same interface: `forward(x, y, ctx, rows=None)`, which hands back, when `rows` asks, the
attention rows of its own pass (`BlockAux.rows`: where chosen queries look, for probing and `loss.match`), and its
positional code (`position_gain`, `position_code`), which the generator computes once per forward for all blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from matebit.config import ModelConfig
from matebit.models.correspondence import (
    AttentionRuntime,
    RowRequest,
    centred_unit,
    grid,
    masked_correspondence,
    tokens,
)
from matebit.models.layers import AdaConv, FeedForward, SpatialModulation, pono, sine_position_code


@dataclass
class BlockContext:
    """What every block of one forward shares."""

    structure: Tensor  # x_A at full size (B, C_A, H, W): the source of gamma and beta in Eq. 4
    pos: Tensor  # positional code on the token grid, (1, C, h, w)
    exemplar_small: Tensor  # y_B area-averaged to the token grid (B, 3, h, w), warped alongside V (Eq. 9)
    attention: AttentionRuntime = AttentionRuntime()  # which implementation computes the correspondence


@dataclass
class BlockAux:
    """What one block reports besides its output features (all on the token grid h x w)."""

    warped: Tensor  # (B, 3, h, w) the exemplar warped by the block's correspondence (for Eq. 9)
    uncor_weight: Tensor  # (B, 1, h, w) weight of X_uncor: 1 - reliability, in [0, 1]
    rows: dict[str, Tensor] | None = None  # the attention rows a RowRequest asked for, kind -> (B, P, M)


class _CosineAttention(nn.Module):
    """Q from X_A, K and V from Y_B by 1x1 convs, the positional code added to both sides (Fig. 3d), and the
    centred cosine of Eq. 1 over their tokens. Shared by the masked block and the full-correspondence block."""

    mask: str  # "relu" (Eq. 2) or "none"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.feature_channels
        self.alpha = cfg.alpha
        self.reliability = cfg.reliability
        self.to_q = nn.Conv2d(c, c, 1)
        self.to_k = nn.Conv2d(c, c, 1)
        self.to_v = nn.Conv2d(c, c, 1)

    @staticmethod
    def position_gain(cfg: ModelConfig) -> nn.Parameter | None:
        # A learned gain on the fixed sine code lets training decide how much position matters.
        return nn.Parameter(torch.ones(()))

    @staticmethod
    def position_code(cfg: ModelConfig, h: int, w: int, like: Tensor, gain: Tensor | None) -> Tensor:
        """The code added to Q's and K's inputs (Fig. 3d): the sine code over all feature channels, times the gain."""
        return gain * sine_position_code(h, w, cfg.feature_channels, like.device, like.dtype)

    def _project(self, x: Tensor, y: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.to_q(x + pos), self.to_k(y + pos), self.to_v(y)

    def _correspond(self, q: Tensor, k: Tensor, v: Tensor, ctx: BlockContext, rows: RowRequest | None):
        """Eqs. 1-3: (X_cor, warped exemplar, X_uncor weight), each on the (h, w) grid, and the rows asked for."""
        b, _, h, w = q.shape
        qt, kt = centred_unit(tokens(q)), centred_unit(tokens(k))  # Eq. 1 operands
        # The exemplar rides along as three extra value channels: one pass gives X_cor and the Eq. 9 warp.
        values = torch.cat([tokens(v), tokens(ctx.exemplar_small.to(v.dtype))], dim=-1)
        corr = masked_correspondence(qt, kt, values, self.alpha, self.mask, ctx.attention.impl,
                                     min_tokens=ctx.attention.fused_min_tokens, reliability=self.reliability,
                                     rows=rows)
        x_cor = grid(corr.out[..., :-3], h, w)  # Eq. 3
        warped = grid(corr.out[..., -3:], h, w)
        uncor = (1 - corr.reliability).clamp(0, 1).reshape(b, 1, h, w)
        return x_cor, BlockAux(warped=warped, uncor_weight=uncor, rows=corr.rows)


class MaskedMATBlock(_CosineAttention):
    """The paper's MAT block: masked correspondence, reliability-adaptive aggregation, AdaConv (Eqs. 1-6).

    `ModelConfig.mask="none"` is Table 2's "w/o ReLU": softmax over the unmasked cosine.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.mask = cfg.mask
        c = cfg.feature_channels
        # Eq. 4: gamma and beta come from x_A.
        self.modulate = SpatialModulation(c, cfg.structure_channels, cfg.spade_hidden)
        if cfg.feed_forward == "adaconv":
            self.feed_forward = AdaConv(c, cfg.adaconv_kernel, cfg.adaconv_expansion, "paper")
        else:
            self.feed_forward = FeedForward(c, cfg.adaconv_expansion)

    def forward(self, x: Tensor, y: Tensor, ctx: BlockContext,
                rows: RowRequest | None = None) -> tuple[Tensor, BlockAux]:
        """x: query stream X (B, C, h, w); y: exemplar features Y_B; rows: attention rows to hand back."""
        q, k, v = self._project(x, y, ctx.pos)
        x_cor, aux = self._correspond(q, k, v, ctx, rows)
        uncor = aux.uncor_weight
        # Eq. 4: normalise Q per channel over positions, then modulate it by gamma(x_A), beta(x_A).
        q_norm = self.modulate(F.instance_norm(q), ctx.structure)
        # Eq. 5 with a bounded weight: as printed, 1 - sum_j ReLU(A)(u, j) sums raw cosines over up to h*w
        # keys and leaves [0, 1]. `uncor` is 1 - reliability (ModelConfig.reliability, models/correspondence.py):
        # near 1 where the query has no good match in the exemplar, so the structure's own features fill in.
        x_uncor = uncor * q_norm
        x_agg = pono(x_cor + x_uncor + q)  # Eq. 6
        out = self.feed_forward(x_agg) + x_agg  # X_MAT = AdaConv(X_agg) + X_agg
        return out, aux


class FullCorrespondenceBlock(_CosineAttention):
    """Table 2's 'Full Corr.': CoCosNet-style, the warped features replace MAT's aggregation and every match is
    trusted, so there is no X_uncor and no AdaConv."""

    mask = "none"

    def forward(self, x: Tensor, y: Tensor, ctx: BlockContext,
                rows: RowRequest | None = None) -> tuple[Tensor, BlockAux]:
        q, k, v = self._project(x, y, ctx.pos)
        x_cor, aux = self._correspond(q, k, v, ctx, rows)
        return pono(x_cor + q), aux
