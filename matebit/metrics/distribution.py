"""Distribution metrics on pooled features: FID (Fréchet distance) and KID (unbiased polynomial-kernel MMD²)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .evalset import EvalSet
from .features import FID_WEIGHTS_NAME, SUBSTITUTES, extract_features, load_fid_inception, load_substitute
from .registry import MetricError, MetricOutput, register_metric

__all__ = ["frechet_distance", "feature_stats", "kid_mmd2", "kid_subsets", "reference_images", "set_features"]


def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """|mu1 - mu2|² + tr(s1 + s2 - 2 (s1 s2)^½), in float64.

    tr((s1 s2)^½) = tr((√s1 s2 √s1)^½); the right side is a symmetric PSD matrix, so its square root comes
    from an eigendecomposition with no complex parts and no singular-matrix fallback (small sample sets)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes differ ({mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape})")
    r1 = _sym_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (ddof=1, as pytorch-fid) of (N, D) features."""
    f = np.asarray(feats, np.float64)
    if f.shape[0] < 2:
        raise MetricError("FID needs at least 2 images per set")
    return f.mean(0), np.cov(f, rowvar=False)


def kid_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² between two feature sets with the kernel k(a, b) = (a·b / d + 1)³.

    Within-set sums skip the diagonal (i = j); the cross term averages all pairs."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise MetricError("KID needs at least 2 images per set")
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid_subsets(x: np.ndarray, y: np.ndarray, num_subsets: int = 100, subset_size: int = 1000,
                seed: int = 0) -> tuple[float, float]:
    """Mean and std of kid_mmd2 over random equal-size subsets drawn without replacement (seeded)."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(x), len(y))
    vals = [kid_mmd2(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
            for _ in range(num_subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def reference_images(items: EvalSet, reference: str | None) -> tuple[str, list]:
    """The real-image set: `reference` ("targets" / "exemplars") or targets when present, else exemplars."""
    if reference is None:
        reference = "targets" if items.targets else "exemplars"
    if reference not in ("targets", "exemplars"):
        raise MetricError(f"reference must be 'targets' or 'exemplars', not {reference!r}")
    if not getattr(items, reference):
        raise MetricError(f"the evaluation set has no {reference} to compare the outputs with")
    return reference, items.images(reference)


def _extractor(feature_network: str | None, feature_extractor: Callable | None, fid_weights: Any,
               device: str) -> tuple[Callable, str, str]:
    """(extractor, network description, result-name suffix). Only the real FID Inception has no suffix."""
    if feature_extractor is not None:
        name = feature_network or "custom"
        return feature_extractor, name, f"[{name}]"
    if feature_network in (None, "inception", "inception-v3"):
        net = load_fid_inception(fid_weights, device=device)
        return net, f"inception-v3 pool3 ({FID_WEIGHTS_NAME})", ""
    if feature_network in SUBSTITUTES:
        return load_substitute(feature_network, device=device), f"{feature_network} (substitute)", \
            f"[{feature_network}]"
    raise MetricError(f"unknown feature network {feature_network!r}; use 'inception' or one of {SUBSTITUTES}")


def set_features(items: EvalSet, feature_network: str | None = None, feature_extractor: Callable | None = None,
                 fid_weights: Any = None, reference: str | None = None, batch_size: int = 32,
                 device: str = "cpu") -> tuple[np.ndarray, np.ndarray, str, str, str]:
    """(output features, reference features, network description, name suffix, reference set name)."""
    ext, net, suffix = _extractor(feature_network, feature_extractor, fid_weights, device)
    ref_name, ref = reference_images(items, reference)
    fo = extract_features(ext, items.images("outputs"), batch_size, device)
    fr = extract_features(ext, ref, batch_size, device)
    return fo, fr, net, suffix, ref_name


@register_metric(
    "fid",
    protocol="FID: Fréchet distance between InceptionV3 pool3 (pytorch-fid weights) Gaussians of all outputs "
             "and all real images (targets, else exemplars), images as saved, resized to 299 bilinear.",
    needs=("outputs",),
)
def fid_metric(items: EvalSet, **opts: Any) -> MetricOutput:
    """Fréchet Inception Distance (lower is better). Options: feature_network, feature_extractor, fid_weights,
    reference, batch_size, device."""
    fo, fr, net, suffix, ref = set_features(items, **opts)
    mu1, s1 = feature_stats(fo)
    mu2, s2 = feature_stats(fr)
    return MetricOutput({"fid" + suffix: frechet_distance(mu1, s1, mu2, s2)}, feature_network=net,
                        name="fid" + suffix, notes=[f"reference set: {ref} (n={len(fr)})"], num_samples=len(fo))


@register_metric(
    "kid",
    protocol="KID: unbiased MMD² with kernel (x·y/d+1)³ on InceptionV3 pool3 features, mean over 100 random "
             "subsets of min(1000, n) outputs vs real images (seeded).",
    needs=("outputs",),
)
def kid_metric(items: EvalSet, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
               **opts: Any) -> MetricOutput:
    """Kernel Inception Distance (lower is better); values kid (mean) and kid_std over subsets."""
    fo, fr, net, suffix, ref = set_features(items, **opts)
    mean, std = kid_subsets(fo, fr, num_subsets, subset_size, seed)
    return MetricOutput({"kid" + suffix: mean, "kid_std": std}, feature_network=net, name="kid" + suffix,
                        notes=[f"reference set: {ref} (n={len(fr)})"], num_samples=len(fo))
