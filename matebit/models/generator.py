"""The MATEBIT translation network G (Fig. 2): encoders, MAT stack, U-Net decoder with global style.

Data path: x_A -> E_A ┐
                      ├-> positional code -> 3 MAT blocks -> decoder (skips from E_A, AdaIN from z) -> x̂_B
           y_B -> E_B ┘-> z = MLP(GAP(Y_B))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from matebit.config import InputSizeError, ModelConfig
from matebit.models.correspondence import AttentionRuntime, RowKind, RowRequest, downsample_to
from matebit.models.layers import (
    AdaINResBlock,
    ResidualBlock,
    SelfAttention,
    SPADEResBlock,
    apply_spectral_norm,
    conv3x3,
    l2_normalize,
    official_sn,
)
from matebit.models.mat import BlockContext, FullCorrespondenceBlock, MaskedMATBlock
from matebit.models.official import OfficialMATBlock

# One class per block kind, chosen by `ModelConfig.correspondence` (DiT's model-registry habit).
BLOCKS: dict[str, type[nn.Module]] = {
    "masked": MaskedMATBlock,  # the paper (and "w/o ReLU" with mask="none")
    "full": FullCorrespondenceBlock,  # Table 2's "Full Corr."
    "official": OfficialMATBlock,  # the released code
}


@dataclass
class GeneratorOutput:
    image: Tensor  # (B, 3, H, W) in [-1, 1]
    warped: list[Tensor] = field(default_factory=list)  # per MAT block, (B, 3, H/8, W/8): Eq. 9's warp
    uncor_weight: list[Tensor] = field(default_factory=list)  # per block, (B, 1, H/8, W/8) in [0, 1]
    z: Tensor | None = None  # (B, style_dim) global style code of the exemplar
    structure_features: list[Tensor] = field(default_factory=list)  # E_A(x_A), unit-normalised, fine to coarse
    # Per block, the unmasked attention rows ("full": softmax over every key's score) of every query token,
    # (B, N, M); filled only by `forward(..., with_rows=True)` (training's `loss.match`), empty otherwise.
    rows: list[Tensor] = field(default_factory=list)


@dataclass
class CorrespondenceProbe:
    """Where queried structure tokens look in the exemplar, per MAT block (the paper's Fig. 1), beside the output.

    Each row is a distribution over the exemplar's M tokens. "masked": softmax(alpha * ReLU(cos)), MAT's
    correspondence; "full": softmax(alpha * cos), CoCosNet's; "used": the one the block aggregates with (masked
    for the paper's block, full for "w/o ReLU" and "Full Corr.", the kept-key weights for the released block).
    """

    output: GeneratorOutput
    blocks: list[dict[str, Tensor]] = field(default_factory=list)  # per block: kind -> (B, P, M)

    def rows(self, kind: RowKind = "used", block: int = -1) -> Tensor:
        if not self.blocks:
            raise ValueError("this model has no MAT blocks, so it has no correspondence")
        if kind not in self.blocks[block]:
            raise ValueError(f"row kind must be one of {', '.join(map(repr, self.blocks[block]))}, got {kind!r}")
        return self.blocks[block][kind]


class Encoder(nn.Module):
    """E_A or E_B: four conv stages (strides 1, 2, 2, 2) each followed by IN and a residual block."""

    def __init__(self, in_channels: int, base: int, out_channels: int):
        super().__init__()
        widths = [base, base * 2, base * 4, out_channels]
        stages, cin = [], in_channels
        for i, cout in enumerate(widths):
            stages.append(nn.Sequential(official_sn(conv3x3(cin, cout, stride=1 if i == 0 else 2)),
                                        nn.InstanceNorm2d(cout), ResidualBlock(cout)))
            cin = cout
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(l2_normalize(x))  # the shared space compares directions, not magnitudes
        return feats  # [1, 1/2, 1/4, 1/8]


class UpBlock(nn.Module):
    """(LeakyReLU) -> conv3x3 without bias -> IN -> residual block: the released decoder's step."""

    def __init__(self, cin: int, cout: int, stride: int = 1, pre_act: bool = False):
        super().__init__()
        self.pre_act = pre_act
        self.conv = official_sn(conv3x3(cin, cout, stride=stride, bias=False))
        self.res = ResidualBlock(cout)

    def forward(self, x: Tensor) -> Tensor:
        if self.pre_act:
            x = F.leaky_relu(x, 0.2)
        return self.res(F.instance_norm(self.conv(x)))


def _up(x: Tensor, align_corners: bool = False) -> Tensor:
    # align_corners=False keeps pixel centres where they are at every size; the released decoder uses True.
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=align_corners)


class Decoder(nn.Module):
    """D_B: a U-Net decoder from the MAT output (1/8) down to 1/16 and back up to full size.

    Skips come from E_A at 1/4 and 1/2 (the released code's choice; the paper only says 'multi-level');
    every up step is modulated by z through AdaIN when global style is on.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, b = cfg.feature_channels, cfg.base_channels
        self.cfg = cfg
        skip = cfg.skip_connections
        self.down = UpBlock(c, c, stride=2, pre_act=True)  # 1/16
        self.bottleneck = UpBlock(c, c, pre_act=True)
        self.merge = UpBlock(2 * c, c)
        self.up1 = UpBlock(2 * c, 4 * b)  # with the MAT output at 1/8
        self.up2 = UpBlock(4 * b + (4 * b if skip else 0), 2 * b)  # with E_A at 1/4
        self.up3 = UpBlock(2 * b + (2 * b if skip else 0), b)  # with E_A at 1/2
        widths = [c, 4 * b, 2 * b, b]
        if cfg.global_style:
            self.styles = nn.ModuleList(AdaINResBlock(w, cfg.style_dim) for w in widths)
        else:
            # 'w/o global style z': the same residual blocks with plain instance normalisation.
            self.styles = nn.ModuleList(ResidualBlock(w) for w in widths)
        self.attention = SelfAttention(2 * b) if cfg.decoder_attention else None
        self.final_res = ResidualBlock(b)
        self.to_rgb = conv3x3(b, cfg.image_channels)

    def _style(self, i: int, x: Tensor, z: Tensor | None) -> Tensor:
        return self.styles[i](x, z) if self.cfg.global_style else self.styles[i](x)

    def forward(self, x: Tensor, skips: list[Tensor], z: Tensor | None) -> Tensor:
        x16 = self.down(x)
        h = self.merge(torch.cat([self.bottleneck(x16), x16], 1))
        h = self._style(0, h, z)
        h = self._style(1, self.up1(torch.cat([_up(h, self.cfg.upsample_align_corners), x], 1)), z)
        parts = [_up(h, self.cfg.upsample_align_corners)] + ([skips[2]] if self.cfg.skip_connections else [])
        h = self._style(2, self.up2(torch.cat(parts, 1)), z)
        if self.attention is not None:
            h = self.attention(h)
        parts = [_up(h, self.cfg.upsample_align_corners)] + ([skips[1]] if self.cfg.skip_connections else [])
        h = self._style(3, self.up3(torch.cat(parts, 1)), z)
        h = self.final_res(F.leaky_relu(_up(h, self.cfg.upsample_align_corners), 0.2))
        return torch.tanh(self.to_rgb(h))


class MappingNetwork(nn.Module):
    """z = MLP(GAP(Y_B)) (Sec. 3.2); sizes of the released code (C -> 256 -> 256 -> style_dim)."""

    def __init__(self, channels: int, style_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, style_dim))

    def forward(self, y: Tensor) -> Tensor:
        return self.net(y.mean(dim=(2, 3)))


class MATEBITGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        c = cfg.feature_channels
        self.encoder_a = Encoder(cfg.structure_channels, cfg.base_channels, c)
        self.encoder_b = Encoder(cfg.image_channels, cfg.base_channels, c)
        # Lift each 1/8 feature map into the matching space, modulated by its own image (released code's
        # embed_q4 / embed_kv4).
        self.embed_a = SPADEResBlock(c, cfg.structure_channels, cfg.spade_hidden)
        self.embed_b = SPADEResBlock(c, cfg.image_channels, cfg.spade_hidden)
        self.block_kind = BLOCKS[cfg.correspondence]
        self.blocks = nn.ModuleList(self.block_kind(cfg) for _ in range(cfg.n_mat_blocks))
        # The kind owns its positional code; a gain it learns is shared by all blocks, saved as `pos_gain`.
        self.pos_gain = self.block_kind.position_gain(cfg) if cfg.n_mat_blocks else None
        # A runtime switch, not part of the model: `set_attention`.
        self.attention = AttentionRuntime()
        self.mapping = MappingNetwork(c, cfg.style_dim) if cfg.global_style else None
        self.decoder = Decoder(cfg)
        apply_spectral_norm(self, cfg.spectral_norm)

    # -- pieces the losses and tools call -----------------------------------------------------------------------

    def check_size(self, h: int, w: int) -> None:
        s = self.config.stride
        if h % s or w % s or h < s or w < s:
            raise InputSizeError(f"input size {w}x{h} (WxH) is not a positive multiple of {s}; "
                                 f"resize or pad to e.g. {max(s, round(w / s) * s)}x{max(s, round(h / s) * s)}")

    def encode_exemplar(self, image: Tensor) -> tuple[list[Tensor], Tensor]:
        """E_B features (unit-normalised, fine to coarse) and the embedded exemplar Y_B."""
        feats = self.encoder_b(image)
        return feats, self.embed_b(feats[-1], image)

    def encode_style(self, image: Tensor) -> Tensor:
        """The global style code z of any image (the contrastive loss re-encodes generated images with it)."""
        if self.mapping is None:
            raise RuntimeError("this model has no global style code (global_style=False)")
        return self.mapping(self.encode_exemplar(image)[1])

    def set_attention(self, impl: str = "auto", fused_min_tokens: int | None = None) -> None:
        """Which implementation computes the masked correspondence from now on (`AttentionRuntime`); not saved."""
        self.attention = AttentionRuntime(impl, fused_min_tokens or AttentionRuntime.fused_min_tokens)

    def token_grid(self, h: int, w: int) -> tuple[int, int]:
        return h // self.config.token_stride, w // self.config.token_stride

    def point_to_token(self, xy: Tensor, h: int, w: int) -> Tensor:
        """Pixel coordinates (..., 2) as (x, y) in an HxW input -> token indices on the 1/8 grid."""
        gh, gw = self.token_grid(h, w)
        col = (xy[..., 0] * gw / w).long().clamp(0, gw - 1)
        row = (xy[..., 1] * gh / h).long().clamp(0, gh - 1)
        return row * gw + col

    # -- forward ----------------------------------------------------------------------------------------------

    def forward(self, structure: Tensor, exemplar: Tensor, with_rows: bool = False) -> GeneratorOutput:
        """structure: x_A (B, C_A, H, W) in [0, 1]; exemplar: y_B (B, 3, H, W) in [-1, 1]. `with_rows` also returns
        every block's unmasked attention rows for all query tokens (`GeneratorOutput.rows`, differentiable), taken
        from the blocks' own pass."""
        # The unmasked rows: below 0 the ReLU mask passes no gradient, and a demo seed whose cosines all fell
        # below 0 early stayed at the uniform row's loss for its whole run when the term used the masked rows.
        # Every block kind has them (the cosine's softmax, or the released block's dot-product softmax), so the
        # term is the same for the masked model and its ablations; masked and full rows share their argmax.
        out, rows = self._run(structure, exemplar, RowRequest(kinds=("full",)) if with_rows else None)
        out.rows = [r["full"] for r in rows]
        return out

    def probe_correspondence(self, structure: Tensor, exemplar: Tensor,
                             query_index: Tensor | None = None) -> CorrespondenceProbe:
        """The forward pass, plus the attention rows of the queried tokens in every MAT block, from the same pass.

        query_index: token indices (P,) shared by the batch or (B, P) per item (see `point_to_token`); None asks
        for every token, i.e. the whole (B, N, M) matrix per block, which costs O(N * M) memory.
        """
        out, rows = self._run(structure, exemplar, RowRequest(index=query_index))
        return CorrespondenceProbe(output=out, blocks=rows)

    def _run(self, structure: Tensor, exemplar: Tensor,
             rows: RowRequest | None = None) -> tuple[GeneratorOutput, list[dict[str, Tensor]]]:
        """The data path of Fig. 2, and per block the attention rows `rows` asks for (none when it is None)."""
        self.check_size(*structure.shape[-2:])
        if exemplar.shape[-2:] != structure.shape[-2:]:
            raise InputSizeError(f"structure is {tuple(structure.shape[-2:])} but exemplar is "
                                 f"{tuple(exemplar.shape[-2:])}; they must have the same size")
        feats_a = self.encoder_a(structure)
        x = self.embed_a(feats_a[-1], structure)  # X_A
        _, y = self.encode_exemplar(exemplar)  # Y_B
        z = self.mapping(y) if self.mapping is not None else None

        out, block_rows = GeneratorOutput(image=exemplar, z=z, structure_features=feats_a), []
        if self.blocks:
            h, w = x.shape[-2:]
            pos = self.block_kind.position_code(self.config, h, w, x, self.pos_gain)
            ctx = BlockContext(structure=structure, pos=pos, exemplar_small=downsample_to(exemplar, (h, w)),
                               attention=self.attention)
            for block in self.blocks:  # K and V come from the same Y_B in every block; X is refined
                x, aux = block(x, y, ctx, rows)
                out.warped.append(aux.warped)
                out.uncor_weight.append(aux.uncor_weight)
                if rows is not None:
                    block_rows.append(aux.rows)
        out.image = self.decoder(x, feats_a, z)
        return out, block_rows
