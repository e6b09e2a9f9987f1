"""VGG19 style relevance (texture, color) and semantic consistency, as in MATEBIT's evaluation scripts.

For a layer, features of both images (resized to 256², [-1, 1]) are upsampled (nearest) to 256²; for every
region k, u_k and v_k are the mean feature vectors over k's pixels in each image, and the score is
Σ_k cos(u_k, v_k) · w_k, averaged over the set.
- style relevance (output vs exemplar): regions = labels k > 0 present in both label maps (the output uses the
  structure's map), w_k = |k in output| / Σ|k' in output|. Color = relu1_2, Texture = relu2_2.
- semantic consistency (output vs ground truth): regions = all labels of the structure map (incl. 0), used for
  both images, w_k = pixel fraction. Semantic = mean of relu3_2, relu4_2, relu5_2.
Without label maps the whole image is one region (global mean feature vector), and the protocol says so.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .evalset import EvalSet, load_label_map, to_tensor
from .features import load_vgg_layers
from .registry import MetricError, MetricOutput, get_metric, register_metric

__all__ = ["region_cosine", "vgg_pair_scores"]

SIZE = 256
_NOLABEL = " No label maps given: the whole image is one region (global mean feature vector)."


def _nearest_source(n_in: int, n_out: int) -> torch.Tensor:
    # F.interpolate(mode="nearest") reads source index floor(dst * n_in / n_out)
    return torch.clamp((torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)).floor().long(), max=n_in - 1)


def region_cosine(fa: torch.Tensor, fb: torch.Tensor, la: np.ndarray, lb: np.ndarray, style: bool) -> float | None:
    """Score of one pair of (C, h, w) features with (H, W) label maps, features upsampled (nearest) to (H, W);
    None when no region is usable.

    Means over the upsampled grid are computed as count-weighted means over source cells, which is exact and
    avoids materialising 512 x 256 x 256 maps."""
    ks = np.unique(la)
    if style:
        ks = np.intersect1d(ks, np.unique(lb))
        ks = ks[ks > 0]
    if len(ks) == 0:
        return None
    hh, ww = la.shape

    def means(f: torch.Tensor, lab: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        c, h, w = f.shape
        src = (_nearest_source(h, hh)[:, None] * w + _nearest_source(w, ww)[None, :]).reshape(-1)
        lab_t = torch.from_numpy(lab.reshape(-1))
        counts = torch.stack([torch.bincount(src[lab_t == int(k)], minlength=h * w) for k in ks]).double()
        sizes = counts.sum(1)
        return (counts @ f.reshape(c, -1).double().T) / sizes.clamp(min=1)[:, None], sizes

    u, na = means(fa, la)
    v, _ = means(fb, lb)
    cos = F.cosine_similarity(u, v, dim=1, eps=1e-12)
    return float((cos * na).sum() / na.sum())


def _labels(item: Any) -> np.ndarray:
    lab = load_label_map(item)
    if lab.shape != (SIZE, SIZE):
        t = torch.from_numpy(lab)[None, None].double()
        lab = F.interpolate(t, size=(SIZE, SIZE), mode="nearest")[0, 0].long().numpy()
    return lab


def vgg_pair_scores(
    extractor: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    a_images: Sequence[np.ndarray],
    b_images: Sequence[np.ndarray],
    layers: Sequence[str],
    a_labels: Sequence[Any] | None,
    b_labels: Sequence[Any] | None,
    style: bool,
    batch_size: int = 8,
    device: str = "cpu",
) -> tuple[dict[str, float], int]:
    """Mean per-layer region-cosine scores over pairs (a_i, b_i), and the number of pairs skipped."""
    sums = {l: 0.0 for l in layers}
    counts = {l: 0 for l in layers}
    skipped = 0
    zero = np.zeros((SIZE, SIZE), np.int64)
    for s in range(0, len(a_images), batch_size):
        xa = to_tensor(list(a_images[s:s + batch_size]), SIZE).to(device)
        xb = to_tensor(list(b_images[s:s + batch_size]), SIZE).to(device)
        with torch.no_grad():
            oa, ob = extractor(xa), extractor(xb)
        for i in range(xa.shape[0]):
            j = s + i
            if not style:  # semantic: the ground truth shares the structure's map; all labels count
                la = _labels(a_labels[j]) if a_labels else zero
                lb = la
            elif a_labels:
                la, lb = _labels(a_labels[j]), _labels(b_labels[j])
            else:  # one region labelled 1 so the "k > 0" rule keeps it
                la = lb = zero + 1
            pair_done = False
            for l in layers:
                v = region_cosine(oa[l][i].cpu(), ob[l][i].cpu(), la, lb, style)
                if v is not None:
                    sums[l] += v
                    counts[l] += 1
                    pair_done = True
            skipped += not pair_done
    if not any(counts.values()):
        raise MetricError("no image pair shares a labelled region (k > 0) with its exemplar")
    return {l: sums[l] / counts[l] for l in layers}, skipped


def _resolve(feature_extractor: Callable | None, feature_network: str | None, device: str,
             vgg19_weights: Any) -> tuple[Callable, str, str]:
    if feature_extractor is not None:
        name = feature_network or "custom"
        return feature_extractor, name, f"[{name}]"
    if feature_network in (None, "vgg19"):
        return load_vgg_layers("vgg19", device, vgg19_weights), "vgg19 (ImageNet)", ""
    if feature_network == "hed-vgg16":
        return load_vgg_layers("hed-vgg16", device), "hed-vgg16 (substitute)", "[hed-vgg16]"
    raise MetricError(f"the VGG scores take feature_network 'vgg19' or 'hed-vgg16' or an explicit "
                      f"feature_extractor, not {feature_network!r}")


def _style(name: str, layer: str, items: EvalSet, feature_extractor: Callable | None = None,
           feature_network: str | None = None, vgg19_weights: Any = None, batch_size: int = 8,
           device: str = "cpu") -> MetricOutput:
    ext, net, suffix = _resolve(feature_extractor, feature_network, device, vgg19_weights)
    labelled = bool(items.labels) and bool(items.exemplar_labels)
    vals, skipped = vgg_pair_scores(ext, items.images("outputs"), items.images("exemplars"), [layer],
                                    items.labels if labelled else None,
                                    items.exemplar_labels if labelled else None, style=True,
                                    batch_size=batch_size, device=device)
    proto = get_metric(name).protocol + ("" if labelled else _NOLABEL)
    notes = [f"{skipped} pairs had no common label k > 0 and were skipped"] if skipped else []
    return MetricOutput({name + suffix: vals[layer]}, feature_network=net, name=name + suffix, protocol=proto,
                        num_samples=len(items) - skipped, notes=notes)


def _style_protocol(label: str, layer: str) -> str:
    return (f"{label}: VGG19 {layer} style relevance, label-region mean-feature cosine between output and exemplar "
            "(labels k>0 in both, weighted by output pixel share), 256², mean over pairs.")


@register_metric("texture", protocol=_style_protocol("Texture", "relu2_2"), needs=("outputs", "exemplars"),
                 higher_is_better=True)
def texture_metric(items: EvalSet, **opts: Any) -> MetricOutput:
    """Texture relevance to the exemplar (higher is better). Options: feature_extractor, feature_network
    ("vgg19" or the "hed-vgg16" substitute), vgg19_weights, batch_size, device."""
    return _style("texture", "relu2_2", items, **opts)


@register_metric("color", protocol=_style_protocol("Color", "relu1_2"), needs=("outputs", "exemplars"),
                 higher_is_better=True)
def color_metric(items: EvalSet, **opts: Any) -> MetricOutput:
    """Color relevance to the exemplar (higher is better). Options as for texture."""
    return _style("color", "relu1_2", items, **opts)


@register_metric(
    "semantic",
    protocol="Semantic: mean over VGG19 relu3_2/4_2/5_2 of the label-region mean-feature cosine between output "
             "and ground truth (all labels of the structure map, pixel-share weights), 256², mean over pairs.",
    needs=("outputs", "targets"),
    higher_is_better=True,
)
def semantic_metric(items: EvalSet, feature_extractor: Callable | None = None, feature_network: str | None = None,
                    vgg19_weights: Any = None, batch_size: int = 8, device: str = "cpu") -> MetricOutput:
    """Semantic consistency with the ground truth (higher is better); values per layer and their mean."""
    ext, net, suffix = _resolve(feature_extractor, feature_network, device, vgg19_weights)
    layers = ["relu3_2", "relu4_2", "relu5_2"]
    labelled = bool(items.labels)
    vals, _ = vgg_pair_scores(ext, items.images("outputs"), items.images("targets"), layers,
                              items.labels if labelled else None, None, style=False,
                              batch_size=batch_size, device=device)
    proto = get_metric("semantic").protocol + ("" if labelled else _NOLABEL)
    out = {"semantic" + suffix: float(np.mean([vals[l] for l in layers]))}
    out.update(vals)
    return MetricOutput(out, feature_network=net, name="semantic" + suffix, protocol=proto)
