"""The frozen pretrained networks the losses need (VGG19 or its HED substitute, HED, LPIPS)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from matebit.config import ExperimentConfig


@dataclass
class LossNetworks:
    """Frozen pretrained networks the losses need; each is None when its terms are off."""

    perceptual: nn.Module | None = None
    hed: nn.Module | None = None
    lpips: nn.Module | None = None

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, device: torch.device) -> "LossNetworks":
        from matebit import third_party

        w = cfg.loss
        nets = cls()
        if w.perceptual or w.contextual or w.vgg_feature_matching or w.gram_style:
            nets.perceptual = third_party.load_perceptual(w.perceptual_network, w.vgg19_path or None)
        if w.structure:
            nets.hed = third_party.load_hed()
            substitute = w.perceptual_network == "hed-vgg16"
            nets.lpips = third_party.load_lpips(w.lpips_backbone_path or None, allow_substitute=substitute)
        for name in ("perceptual", "hed", "lpips"):
            net = getattr(nets, name)
            if net is not None:
                setattr(nets, name, net.to(device).eval())
        return nets

    def describe(self) -> dict[str, str]:
        return {k: getattr(getattr(self, k), "name", type(getattr(self, k)).__name__)
                for k in ("perceptual", "hed", "lpips") if getattr(self, k) is not None}
