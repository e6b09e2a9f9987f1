"""Multi-scale PatchGAN discriminator conditioned on x_A (pix2pixHD / SPADE family, as the released code)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from matebit.config import ModelConfig
from matebit.models.layers import apply_spectral_norm, official_sn


class PatchDiscriminator(nn.Module):
    """4x4 convs: stride 2 until the last two layers, IN + LeakyReLU between, one logit per patch."""

    def __init__(self, in_channels: int, channels: int, n_layers: int, padding: int = 2):
        super().__init__()
        # padding 2 (pix2pixHD's ceil(3 / 2)) or the released code's 1 (`model.d_padding`).
        layers = [nn.Sequential(nn.Conv2d(in_channels, channels, 4, 2, padding), nn.LeakyReLU(0.2))]
        cin = channels
        for i in range(1, n_layers):
            cout = min(cin * 2, 512)
            stride = 1 if i == n_layers - 1 else 2
            layers.append(nn.Sequential(official_sn(nn.Conv2d(cin, cout, 4, stride, padding)), nn.InstanceNorm2d(cout),
                                        nn.LeakyReLU(0.2)))
            cin = cout
        layers.append(nn.Sequential(nn.Conv2d(cin, 1, 4, 1, padding)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats  # intermediate maps, the last one is the logits


class MultiscaleDiscriminator(nn.Module):
    """D(x_A, image): the same PatchGAN at `d_scales` scales, each half the size of the previous.

    Returns, per scale, the list of intermediate feature maps (the last is the logits), which feature-matching
    losses use. Spectral norm on every layer for the paper; the released code leaves the first and last out.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cin = cfg.structure_channels + cfg.image_channels
        self.scales = nn.ModuleList(PatchDiscriminator(cin, cfg.d_channels, cfg.d_layers, cfg.d_padding)
                                    for _ in range(cfg.d_scales))
        apply_spectral_norm(self, cfg.spectral_norm)

    def forward(self, structure: Tensor, image: Tensor) -> list[list[Tensor]]:
        x = torch.cat([structure, image], dim=1)
        outs = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(d(x))
        return outs
