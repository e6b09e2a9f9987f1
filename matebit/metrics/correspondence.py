"""Correspondence accuracy: PCK of predicted landmark matches, and turning attention rows into points."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .evalset import EvalSet, load_landmarks
from .registry import MetricError, MetricOutput, register_metric

__all__ = ["pck", "attention_to_points", "query_rows", "predict_points"]


def pck(pred_points: np.ndarray, true_points: np.ndarray, size: tuple[int, int],
        alphas: Sequence[float] = (0.05, 0.1)) -> dict[str, float]:
    """Share of points with |pred - true| <= alpha · max(W, H); size = (W, H). Keys "pck@<alpha>"."""
    p, t = np.asarray(pred_points, np.float64), np.asarray(true_points, np.float64)
    if p.shape != t.shape or p.ndim != 2 or p.shape[1] != 2:
        raise MetricError(f"pck: predicted {p.shape} and true {t.shape} points must both be (P, 2)")
    d = np.linalg.norm(p - t, axis=1)
    return {f"pck@{a:g}": float(np.mean(d <= a * max(size))) for a in alphas}


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def attention_to_points(rows: Any, grid_hw: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """(P, h*w) attention rows (row-major tokens) -> (P, 2) (x, y): the argmax token's centre in pixel
    coordinates of an image of image_size = (W, H)."""
    a = _as_numpy(rows)
    h, w = grid_hw
    if a.ndim != 2 or a.shape[1] != h * w:
        raise MetricError(f"attention rows have shape {a.shape}; expected (P, {h * w}) for a {h}x{w} grid")
    idx = a.argmax(axis=1)
    W, H = image_size
    return np.stack([(idx % w + 0.5) * W / w, (idx // w + 0.5) * H / h], axis=1)


def query_rows(points: Any, grid_hw: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Row-major token index of the grid cell holding each (x, y) point of an image of size (W, H)."""
    p = np.asarray(points, np.float64)
    h, w = grid_hw
    W, H = image_size
    col = np.clip(np.floor(p[:, 0] * w / W), 0, w - 1).astype(np.int64)
    row = np.clip(np.floor(p[:, 1] * h / H), 0, h - 1).astype(np.int64)
    return row * w + col


def predict_points(correspondence: Any, structure_points: Any, grid_hw: tuple[int, int],
                   structure_size: tuple[int, int], exemplar_size: tuple[int, int],
                   exemplar_grid_hw: tuple[int, int] | None = None) -> np.ndarray:
    """For each structure landmark, the exemplar point its token attends to most, from a full
    (h*w, h'*w') correspondence / attention matrix (queries from the structure, keys from the exemplar)."""
    c = _as_numpy(correspondence)
    rows = c[query_rows(structure_points, grid_hw, structure_size)]
    return attention_to_points(rows, exemplar_grid_hw or grid_hw, exemplar_size)


@register_metric(
    "pck",
    protocol="PCK: share of structure landmarks whose predicted exemplar match lies within α·max(W,H) of the "
             "exemplar's true landmark, α = 0.05 (headline) and 0.10, pooled over all points of all pairs.",
    needs=("exemplar_landmarks", "predicted_points"),
    higher_is_better=True,
)
def pck_metric(items: EvalSet, alphas: Sequence[float] = (0.05, 0.1), device: Any = None,
               batch_size: Any = None) -> MetricOutput:
    """Percentage of correct keypoints of the predicted correspondence (higher is better)."""
    preds, trues, sizes = [], [], []
    for i, (gt, pr) in enumerate(zip(items.exemplar_landmarks, items.predicted_points)):
        true = load_landmarks(gt)
        pred = load_landmarks(pr, size=true.size)
        if pred.points.shape != true.points.shape:
            raise MetricError(f"sample {i}: {len(pred.points)} predicted points for {len(true.points)} landmarks")
        preds.append(pred.points)
        trues.append(true.points)
        sizes.append(np.full(len(true.points), max(true.size), np.float64))
    d = np.linalg.norm(np.concatenate(preds) - np.concatenate(trues), axis=1)
    s = np.concatenate(sizes)
    vals = {f"pck@{a:g}": float(np.mean(d <= a * s)) for a in alphas}
    vals["pck"] = vals[f"pck@{alphas[0]:g}"]
    return MetricOutput(vals, feature_network=None, num_samples=len(items.predicted_points),
                        notes=[f"{len(d)} landmark pairs"])
