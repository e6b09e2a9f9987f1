"""Correspondence accuracy: the one PCK every command uses, and turning attention rows into points.

The chain, shared by `matebit eval`, `matebit eval moved`, the face recipe and the synthetic benchmark
(`matebit bench quality`):

1. the model's attention rows of the queried structure tokens in one MAT block (default: the last), of the kind
   asked for: ``"used"`` (the rows the block aggregates with; the default), ``"masked"`` (softmax(alpha ReLU(cos)))
   or ``"full"`` (softmax(alpha cos)), from `MATEBITGenerator.probe_correspondence` (`probe_matches`);
2. the argmax token of each row, as the centre of that token cell in the exemplar's pixel coordinates
   (`attention_to_points`);
3. `pck`: the share of points within alpha * max(W, H) of the true exemplar point.

Two references are read on the same token grid, so that they are quantised like the model's argmax: the identity
guess (each structure point predicted at the same pixel of the exemplar, `token_centres` of the structure points)
and the grid ceiling (the true point moved to its own token centre: the best an argmax can do).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch

from matebit.config import TOKEN_STRIDE

from .evalset import EvalSet, load_landmarks
from .registry import MetricError, MetricOutput, register_metric

__all__ = ["PCK_ALPHAS", "ROW_KINDS", "pck", "attention_to_points", "query_rows", "predict_points", "token_centres",
           "soft_points", "ProbedMatches", "probe_matches", "predict_matches", "grid_of"]

RowKind = Literal["used", "masked", "full"]
ROW_KINDS: tuple[str, ...] = ("used", "masked", "full")
PCK_ALPHAS: tuple[float, ...] = (0.02, 0.05, 0.1)  # reported by every command; 0.05 is the headline


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
    return _cell_centres(a.argmax(axis=1), grid_hw, image_size)


def _cell_centres(idx: np.ndarray, grid_hw: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Row-major token indices -> (P, 2) centres (x, y) of those cells in pixels of an image of size (W, H)."""
    h, w = grid_hw
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


def grid_of(image_size: tuple[int, int], token_stride: int | None = None) -> tuple[int, int]:
    """(h, w) of the token grid of an image of image_size = (W, H) (default stride: the models' TOKEN_STRIDE)."""
    stride = token_stride or TOKEN_STRIDE
    W, H = image_size
    return max(1, H // stride), max(1, W // stride)


def token_centres(points: Any, grid_hw: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Each (x, y) point of an image of image_size = (W, H) moved to the centre of its token cell: where an argmax
    on the grid can land. The identity guess is `token_centres(structure points)`, the grid ceiling
    `token_centres(true exemplar points)`."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return _cell_centres(query_rows(p, grid_hw, image_size), grid_hw, image_size)


def soft_points(rows: Any, grid_hw: tuple[int, int], image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(P, M) attention rows -> (expected position (P, 2), spread (P,)), in pixels of an image of size (W, H).

    The expected position is the rows' mean of the token centres; the spread is the root mean squared distance of
    the mass from it. Unlike the argmax these move when mass shifts between keys, so two kinds of rows with the same
    argmax (masked and full rows of one model) can still differ here."""
    a = _as_numpy(rows).astype(np.float64)
    h, w = grid_hw
    if a.ndim != 2 or a.shape[1] != h * w:
        raise MetricError(f"attention rows have shape {a.shape}; expected (P, {h * w}) for a {h}x{w} grid")
    a = a / np.clip(a.sum(axis=1, keepdims=True), 1e-30, None)
    centres = _cell_centres(np.arange(h * w), grid_hw, image_size)  # (M, 2), row-major like the rows
    mean = a @ centres
    var = a @ (centres ** 2).sum(1) - (mean ** 2).sum(1)
    return mean, np.sqrt(np.clip(var, 0.0, None))


@dataclass
class ProbedMatches:
    """Where queried structure points look in the exemplar, in every MAT block, for a batch (`probe_matches`)."""

    probe: Any  # matebit.models.generator.CorrespondenceProbe: rows per block and kind, and the forward output
    grid_hw: tuple[int, int]  # the exemplar's token grid
    image_size: tuple[int, int]  # (W, H) of the canvas the points refer to

    @property
    def output(self) -> Any:
        """The generator's forward output of the probed pass (image, warped exemplars, X_uncor weights)."""
        return self.probe.output

    def rows(self, rows: RowKind = "used", block: int = -1) -> torch.Tensor:
        """(B, P, M) attention rows of that kind in that block, float32 on the CPU."""
        if rows not in ROW_KINDS:
            raise MetricError(f"rows must be one of {', '.join(ROW_KINDS)}, got {rows!r}")
        return self.probe.rows(rows, block).float().cpu()

    def points(self, rows: RowKind = "used", block: int = -1) -> np.ndarray:
        """(B, P, 2) predicted exemplar points: the argmax token's centre (`attention_to_points`) of each row."""
        r = self.rows(rows, block)
        return np.stack([attention_to_points(r[b], self.grid_hw, self.image_size) for b in range(r.shape[0])])

    def soft(self, rows: RowKind = "used", block: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(expected positions (B, P, 2), spreads (B, P)) of each row (`soft_points`)."""
        r = self.rows(rows, block)
        pairs = [soft_points(r[b], self.grid_hw, self.image_size) for b in range(r.shape[0])]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def probe_matches(generator: Any, structure: torch.Tensor, exemplar: torch.Tensor, points: Any) -> ProbedMatches:
    """Run the generator once on a batch and ask every MAT block where the given structure points look.

    structure (B, C, H, W) in [0, 1] and exemplar (B, 3, H, W) in [-1, 1] at a size the network takes (multiples of
    16); points (B, P, 2) or (P, 2) pixel (x, y) of the structure, mapped to tokens by `generator.point_to_token`.
    A generator whose weights are bf16 runs under bf16 autocast (as `Translator` runs it); otherwise in its dtype.
    """
    if not getattr(generator.config, "n_mat_blocks", 0):
        raise MetricError("this model has no MAT blocks, so it has no correspondence to score")
    h, w = structure.shape[-2:]
    pts = torch.as_tensor(np.asarray(points, np.float64))
    if pts.dim() == 2:
        pts = pts[None].expand(structure.shape[0], -1, -1)
    if pts.dim() != 3 or pts.shape[-1] != 2 or pts.shape[0] != structure.shape[0]:
        raise MetricError(f"points must be (P, 2) or (B, P, 2) with B = {structure.shape[0]}, got {tuple(pts.shape)}")
    param = next(generator.parameters())
    device = param.device
    ctx = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if param.dtype == torch.bfloat16
           else contextlib.nullcontext())
    index = generator.point_to_token(pts, h, w).to(device)
    with torch.no_grad(), ctx:
        probe = generator.probe_correspondence(structure.to(device), exemplar.to(device), query_index=index)
    return ProbedMatches(probe, tuple(generator.token_grid(h, w)), (int(w), int(h)))


def predict_matches(generator: Any, structure: torch.Tensor, exemplar: torch.Tensor, points: Any,
                    rows: RowKind = "used", block: int = -1) -> np.ndarray:
    """(B, P, 2) predicted exemplar points of the structure points: `probe_matches(...).points(rows, block)`."""
    return probe_matches(generator, structure, exemplar, points).points(rows, block)


@register_metric(
    "pck",
    protocol="PCK: share of structure landmarks whose predicted exemplar match (argmax token centre of the last MAT "
             "block's rows) lies within α·max(W,H) of the exemplar's true landmark, α = 0.02, 0.05 (headline) and "
             "0.10, pooled over all points of all pairs; beside it the identity guess and the grid ceiling, read on "
             "the same token grid.",
    needs=("exemplar_landmarks", "predicted_points"),
    higher_is_better=True,
)
def pck_metric(items: EvalSet, alphas: Sequence[float] = PCK_ALPHAS, rows: str | None = None,
               token_stride: int | None = None, device: Any = None, batch_size: Any = None) -> MetricOutput:
    """Percentage of correct keypoints of the predicted correspondence (higher is better).

    Values: pck@<alpha> for every alpha and "pck" (= pck@0.05, else the first alpha); with structure landmarks in
    the set, identity@<alpha> (each structure landmark predicted at the same pixel of the exemplar, moved to its
    token centre like an argmax); always ceiling@<alpha> (the true point moved to its token centre). `rows` (the kind
    of rows the points came from) is recorded in the notes.
    """
    preds, trues, idents, ceils, sizes = [], [], [], [], []
    structure_lms = items.landmarks if items.landmarks else None
    for i, (gt, pr) in enumerate(zip(items.exemplar_landmarks, items.predicted_points)):
        true = load_landmarks(gt)
        pred = load_landmarks(pr, size=true.size)
        if pred.points.shape != true.points.shape:
            raise MetricError(f"sample {i}: {len(pred.points)} predicted points for {len(true.points)} landmarks")
        grid = grid_of(true.size, token_stride)
        preds.append(pred.points)
        trues.append(true.points)
        ceils.append(token_centres(true.points, grid, true.size))
        if structure_lms is not None:
            src = load_landmarks(structure_lms[i], size=true.size)
            if src.points.shape != true.points.shape:
                raise MetricError(f"sample {i}: {len(src.points)} structure landmarks for {len(true.points)} "
                                  f"exemplar landmarks")
            scaled = src.points * np.array([true.size[0] / src.size[0], true.size[1] / src.size[1]])
            idents.append(token_centres(scaled, grid, true.size))
        sizes.append(np.full(len(true.points), max(true.size), np.float64))
    t, s = np.concatenate(trues), np.concatenate(sizes)

    def within(p: list[np.ndarray], prefix: str) -> dict[str, float]:
        d = np.linalg.norm(np.concatenate(p) - t, axis=1)
        return {f"{prefix}@{a:g}": float(np.mean(d <= a * s)) for a in alphas}

    vals = within(preds, "pck")
    vals["pck"] = vals.get("pck@0.05", vals[f"pck@{alphas[0]:g}"])
    if idents:
        vals.update(within(idents, "identity"))
    vals.update(within(ceils, "ceiling"))
    notes = [f"{len(t)} landmark pairs"]
    if rows:
        notes.append(f"rows={rows}")
    return MetricOutput(vals, feature_network=None, num_samples=len(items.predicted_points), notes=notes)
