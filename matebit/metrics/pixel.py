"""Paired metrics against the ground truth: PSNR, SSIM and LPIPS."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .evalset import EvalSet, to_tensor
from .features import MissingWeightsError
from .registry import MetricError, MetricOutput, register_metric

__all__ = ["psnr", "ssim", "load_lpips"]



def _pairs(items: EvalSet) -> tuple[list[np.ndarray], list[np.ndarray]]:
    outs, tgts = items.images("outputs"), items.images("targets")
    for i, (a, b) in enumerate(zip(outs, tgts)):
        if a.shape != b.shape:
            name = items.stems[i] if items.stems else str(i)
            raise MetricError(f"sample {name}: output {a.shape} and target {b.shape} differ in size")
    return outs, tgts


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """10 log10(range² / MSE) over all pixels and channels; inf for identical images."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of uint8 RGB images with Wang et al.'s settings: 11×11 Gaussian window (σ = 1.5), K1 = 0.01,
    K2 = 0.03, population covariances, data range 255, mean over channels (skimage.metrics)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


@register_metric("psnr", protocol="PSNR (dB): per-pair 10·log10(255²/MSE) of uint8 RGB output vs ground truth at "
                                  "the saved size, mean over pairs.", needs=("outputs", "targets"),
                 higher_is_better=True)
def psnr_metric(items: EvalSet, device: Any = None, batch_size: Any = None) -> MetricOutput:
    """Peak signal-to-noise ratio against the ground truth (higher is better)."""
    outs, tgts = _pairs(items)
    return MetricOutput({"psnr": float(np.mean([psnr(a, b) for a, b in zip(outs, tgts)]))},
                        feature_network="none (pixels)")


@register_metric("ssim", protocol="SSIM: per-pair structural similarity (Gaussian 11×11, σ=1.5, K=0.01/0.03, "
                                  "range 255, channel mean; skimage) of output vs ground truth, mean over pairs.",
                 needs=("outputs", "targets"), higher_is_better=True)
def ssim_metric(items: EvalSet, device: Any = None, batch_size: Any = None) -> MetricOutput:
    """Structural similarity against the ground truth (higher is better)."""
    outs, tgts = _pairs(items)
    return MetricOutput({"ssim": float(np.mean([ssim(a, b) for a, b in zip(outs, tgts)]))},
                        feature_network="none (pixels)")


def load_lpips(net: str = "alex", device: str = "cpu") -> tuple[Callable, str]:
    """(distance fn, network name) from matebit.third_party.load_lpips. net: "alex" (the standard metric),
    "vgg", or "hed-vgg16" (LPIPS-vgg heads on HED's VGG16, a labelled substitute)."""
    try:
        from matebit.third_party import load_lpips as _load  # lazy: another module, heavy weights
    except ImportError as e:
        raise MissingWeightsError(f"the lpips metric needs matebit.third_party.load_lpips ({e})") from None
    if net == "hed-vgg16":
        model = _load(net="vgg", allow_substitute=True)
    elif net in ("alex", "vgg"):
        model = _load(net=net)
    else:
        raise MetricError(f"unknown LPIPS network {net!r}; use 'alex', 'vgg' or 'hed-vgg16'")
    model = model.to(device)
    return model, str(getattr(model, "name", f"lpips-{net}"))


@register_metric("lpips", protocol="LPIPS (AlexNet, v0.1 linear heads): perceptual distance of output vs ground "
                                   "truth at the saved size, inputs in [-1,1], mean over pairs.",
                 needs=("outputs", "targets"))
def lpips_metric(items: EvalSet, net: str = "alex", lpips_fn: Callable | None = None, batch_size: int = 16,
                 device: str = "cpu", feature_network: str | None = None) -> MetricOutput:
    """Learned perceptual distance to the ground truth (lower is better). Only LPIPS-alex is named plain
    "lpips"; other networks give e.g. "lpips[vgg]". `lpips_fn(a, b) -> (B,)` may be injected
    ("lpips[custom]"). `feature_network` is a synonym of `net` (for names like "lpips[hed-vgg16]")."""
    net = feature_network or net
    if lpips_fn is None:
        lpips_fn, netdesc = load_lpips(net, device)
        # named after what was actually loaded, so a substitute never passes as the real network
        name = "lpips" if netdesc == "lpips-alex" else "lpips[hed-vgg16]" if "substitute" in netdesc else "lpips[vgg]"
    else:
        name, netdesc = "lpips[custom]", "custom"
    outs, tgts = _pairs(items)
    vals = []
    with torch.no_grad():
        for s in range(0, len(outs), batch_size):
            chunk = range(s, min(s + batch_size, len(outs)))
            groups = [list(chunk)] if len({outs[i].shape for i in chunk}) == 1 else [[i] for i in chunk]
            for g in groups:  # mixed sizes cannot share a batch
                a = to_tensor([outs[i] for i in g]).to(device)
                b = to_tensor([tgts[i] for i in g]).to(device)
                vals.append(lpips_fn(a, b).reshape(-1).double().cpu())
    return MetricOutput({name: float(torch.cat(vals).mean())}, feature_network=netdesc, name=name)

