"""The moved-exemplar protocol: correspondence measured where the identity guess fails (`matebit eval moved`).

On aligned studio portraits the identity guess (each structure landmark matched to the same pixel of the exemplar)
already scores PCK@0.05 = 0.86 on the London faces: unmoved pairs measure nothing. Here every pair is

  structure of person a  x  exemplar of person b != a, moved by a known random similarity transform

with a and b from the validation split (different identities, from the data folder's meta.json; without one, every
stem is its own identity) and both having landmarks. The transform, drawn per pair from one seeded generator, is a
rotation in [-15, 15] degrees and a zoom in [0.85, 1.15] about the image centre, then a shift of up to 8% of the side
on each axis; the exemplar is resampled with reflected borders (OpenCV BORDER_REFLECT_101) and its landmarks are
moved by the same matrix, so the truth is exact. Points moved out of the image are dropped (from both sides).

Scores, pooled over every kept landmark of every pair:
  PCK@0.02/0.05/0.10 of the last MAT block's correspondence for the rows "used" (what the block aggregates with),
    "masked" and "full" (`matebit.metrics.correspondence`: argmax token centre, the one PCK of every command);
  the same for the identity guess (structure landmark at the same pixel, on the token grid like the model), for the
    identity guess had the exemplar not been moved (what unmoved pairs would report), and the grid ceiling (the
    true point at its token centre: the best an argmax can do);
  a soft measure of each kind of rows: the distance of the rows' expected position from the truth and the rows'
    spread (root mean squared distance of the mass from its mean), both as a share of the image side; masked and
    full rows of one model share their argmax by construction (the ReLU keeps the best key), not these;
  colour, texture (output vs the moved exemplar) and semantic (output vs the structure's own photo) scores on a
    feature network, by default the HED-VGG16 substitute, named as such (`color[hed-vgg16]`, ...).

The model runs in fp32 at its trained size (the data's size for a model saved without one).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from matebit.errors import InputError, MetricError

from .correspondence import PCK_ALPHAS, ROW_KINDS, probe_matches, token_centres

__all__ = ["MovedSettings", "MovedPair", "MovedReport", "similarity_matrix", "move_image", "move_points",
           "draw_moved_pairs", "evaluate_moved", "format_moved"]

IMAGE_METRICS = ("color", "texture", "semantic")


@dataclass(frozen=True)
class MovedSettings:
    pairs: int | None = 64  # None: every ordered pair of different identities
    seed: int = 0
    max_rotation: float = 15.0  # degrees
    zoom: tuple[float, float] = (0.85, 1.15)
    max_shift: float = 0.08  # share of the side, each axis
    split: str = "val"


@dataclass(frozen=True)
class MovedPair:
    structure: str  # stem of person a
    exemplar: str  # stem of person b
    angle: float  # degrees, counter-clockwise (OpenCV)
    scale: float
    shift: tuple[float, float]  # share of the side (x, y)


# --------------------------------------------------------------------------------------------------------------
# The transform


def similarity_matrix(angle: float, scale: float, shift: tuple[float, float], size: tuple[int, int]) -> np.ndarray:
    """2x3 matrix of the move, in pixel-centre coordinates of an image of size (W, H) (OpenCV's and the landmark
    files' convention): rotate by `angle` degrees and zoom by `scale` about the centre, then shift by `shift` x side."""
    import cv2

    W, H = size
    m = cv2.getRotationMatrix2D(((W - 1) / 2.0, (H - 1) / 2.0), float(angle), float(scale))
    m[0, 2] += shift[0] * W
    m[1, 2] += shift[1] * H
    return m


def move_image(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) image resampled by the 2x3 matrix (bilinear, reflected borders)."""
    import cv2

    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def move_points(points: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(moved (P, 2) points, (P,) bool: still inside the image of size (W, H))."""
    p = np.asarray(points, np.float64)
    moved = p @ matrix[:, :2].T + matrix[:, 2]
    W, H = size
    inside = (moved[:, 0] >= 0) & (moved[:, 0] <= W - 1) & (moved[:, 1] >= 0) & (moved[:, 1] <= H - 1)
    return moved, inside


def draw_moved_pairs(stems: Sequence[str], identities: dict[str, str], settings: MovedSettings) -> list[MovedPair]:
    """The pairs and their transforms, a pure function of (stems, identities, settings)."""
    ident = {s: identities.get(s, s) for s in stems}
    candidates = [(a, b) for a in stems for b in stems if ident[a] != ident[b]]
    if not candidates:
        raise InputError("the moved-exemplar protocol needs landmarked images of at least two identities in the "
                         f"{settings.split} split")
    rng = np.random.default_rng([settings.seed, 2023])
    order = rng.permutation(len(candidates))
    n = len(candidates) if settings.pairs is None else min(settings.pairs, len(candidates))
    out = []
    for k in order[:n]:
        a, b = candidates[k]
        angle = float(rng.uniform(-settings.max_rotation, settings.max_rotation))
        scale = float(rng.uniform(*settings.zoom))
        shift = (float(rng.uniform(-settings.max_shift, settings.max_shift)),
                 float(rng.uniform(-settings.max_shift, settings.max_shift)))
        out.append(MovedPair(a, b, angle, scale, shift))
    return out


# --------------------------------------------------------------------------------------------------------------
# The evaluation


@dataclass
class MovedReport:
    size: int
    n_pairs: int
    n_points: int
    dropped_points: int
    settings: dict
    rows: dict[str, dict[str, float]]  # row name -> scores
    image_scores: dict[str, float]
    feature_network: str | None
    pairs: list[dict] = field(default_factory=list)
    model: str = ""
    data: str = ""

    def to_json(self) -> str:
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        data = clean(asdict(self))
        data["protocol"] = __doc__.split("\n\n", 1)[1].strip()
        return json.dumps(data, indent=1)


def _pck(pred: np.ndarray, true: np.ndarray, side: float) -> dict[str, float]:
    d = np.linalg.norm(pred - true, axis=1)
    return {f"pck@{a:g}": float(np.mean(d <= a * side)) for a in PCK_ALPHAS}


def _to_uint8_hwc(t: torch.Tensor) -> np.ndarray:
    from matebit.io import to_uint8

    return to_uint8(t, -1.0)


def _model_size(config: Any, data_size: tuple[int, int]) -> int:
    size = getattr(getattr(config, "train", None), "image_size", None)
    return int(size) if size else int(data_size[0])


def evaluate_moved(model: Any, data: str | Path, settings: MovedSettings = MovedSettings(), size: int | None = None,
                   feature_network: str | None = "hed-vgg16", image_metrics: Sequence[str] = IMAGE_METRICS,
                   device: str = "cpu", batch_size: int = 8, progress: bool = True,
                   figure: str | Path | None = None, figure_pairs: int = 4) -> MovedReport:
    """Score a model on the moved-exemplar protocol over the `settings.split` identities of a paired-folder data set
    with landmarks (module docstring). `model`: a model folder, a shipped model's name, or a generator.
    `figure`: also write a PNG of the first `figure_pairs` pairs (structure | moved exemplar | warped | reliability |
    output)."""
    from matebit.checkpoint import load_config, load_pretrained
    from matebit.config import SIZE_STRIDE
    from matebit.data.faces import read_identities
    from matebit.data.folder import DataConfig, PairedFolderDataset
    from matebit.io import from_uint8

    from .samples import _LandmarkSource

    data = Path(data)
    model_name = ""
    if isinstance(model, torch.nn.Module):
        generator, full_config = model, None
    else:
        from matebit.weights import resolve_model

        folder = resolve_model(model)
        generator, _ = load_pretrained(folder, device=device)
        full_config, model_name = load_config(folder), str(folder)
    generator = generator.float().eval()
    cfg = generator.config
    if not cfg.n_mat_blocks:
        raise MetricError("this model has no MAT blocks, so it has no correspondence to score")

    probe_ds = PairedFolderDataset(DataConfig(root=str(data), size=64), settings.split)
    from matebit.io import image_size

    data_size = image_size(probe_ds.images[probe_ds.stems[0]])
    side = size or _model_size(full_config, data_size)
    if side % SIZE_STRIDE:
        raise InputError(f"size {side} is not a multiple of {SIZE_STRIDE}")
    ds = PairedFolderDataset(DataConfig(root=str(data), size=side, structure_channels=cfg.structure_channels),
                             settings.split)
    landmarks = _LandmarkSource(data, ds.images)
    stems = [s for s in ds.stems if landmarks._file(s) is not None]
    pairs = draw_moved_pairs(stems, read_identities(data), settings)
    wh = (side, side)
    grid = generator.token_grid(side, side)

    preds: dict[str, list[np.ndarray]] = {k: [] for k in ROW_KINDS}
    soft_mean: dict[str, list[np.ndarray]] = {k: [] for k in ROW_KINDS}
    soft_spread: dict[str, list[np.ndarray]] = {k: [] for k in ROW_KINDS}
    trues, idents, idents_still, trues_still, ceils = [], [], [], [], []
    outputs, exemplars, targets, pair_info, figure_rows = [], [], [], [], []
    dropped = 0
    from matebit.progress import progress as progress_bar

    bar = progress_bar(len(pairs), "eval moved", "pairs", quiet=not progress)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        st, ex, queries, truths, keeps, stills = [], [], [], [], [], []
        for p in chunk:
            structure, image = ds.load_pair(p.structure)
            pa, pb = landmarks.pair(p.structure, p.exemplar, wh)
            m = similarity_matrix(p.angle, p.scale, p.shift, wh)
            moved = move_image(_to_uint8_hwc(ds.load_exemplar(p.exemplar)), m)
            pb_moved, inside = move_points(pb, m, wh)
            st.append(structure)
            ex.append(from_uint8(moved))
            queries.append(np.clip(pa, 0, side - 1e-3))
            truths.append(pb_moved)
            keeps.append(inside)
            stills.append(pb)
            targets.append(_to_uint8_hwc(image))
            exemplars.append(moved)
        n_pts = {len(q) for q in queries}
        if len(n_pts) != 1:
            raise MetricError("the landmark files of one batch have different point counts; use --batch-size 1")
        result = probe_matches(generator, torch.stack(st), torch.stack(ex), np.stack(queries))
        out = result.output
        for kind in ROW_KINDS:
            pts = result.points(kind)
            mean, spread = result.soft(kind)
            for b, keep in enumerate(keeps):
                preds[kind].append(pts[b][keep])
                soft_mean[kind].append(mean[b][keep])
                soft_spread[kind].append(spread[b][keep])
        for b, (p, keep) in enumerate(zip(chunk, keeps)):
            trues.append(truths[b][keep])
            idents.append(token_centres(queries[b], grid, wh)[keep])
            idents_still.append(token_centres(queries[b], grid, wh))
            trues_still.append(stills[b])
            ceils.append(token_centres(truths[b][keep], grid, wh))
            dropped += int((~keep).sum())
            output = _to_uint8_hwc(out.image[b].float().cpu())
            outputs.append(output)
            pair_info.append({**asdict(p), "points_kept": int(keep.sum()), "points_dropped": int((~keep).sum())})
            if figure is not None and len(figure_rows) < figure_pairs:
                figure_rows.append(_figure_row(st[b], exemplars[start + b], out, b, output))
        bar.update(len(chunk))
    bar.close()

    true = np.concatenate(trues)
    rows: dict[str, dict[str, float]] = {}
    for kind in ROW_KINDS:
        row = _pck(np.concatenate(preds[kind]), true, side)
        mean = np.concatenate(soft_mean[kind])
        row["soft_error"] = float(np.mean(np.linalg.norm(mean - true, axis=1)) / side)
        row["soft_spread"] = float(np.mean(np.concatenate(soft_spread[kind])) / side)
        rows[f"MATEBIT ({kind} rows)"] = row
    rows["identity guess"] = _pck(np.concatenate(idents), true, side)
    rows["identity guess, exemplar not moved"] = _pck(np.concatenate(idents_still), np.concatenate(trues_still), side)
    rows["grid ceiling"] = _pck(np.concatenate(ceils), true, side)

    image_scores: dict[str, float] = {}
    if image_metrics:
        from .evalset import EvalSet
        from .registry import compute_metric

        items = EvalSet(outputs=outputs, exemplars=exemplars, targets=targets)
        for name in image_metrics:
            full = f"{name}[{feature_network}]" if feature_network else name
            r = compute_metric(full, items, device=device, batch_size=batch_size)
            image_scores[r.name] = r.value
    if figure is not None and figure_rows:
        _write_figure(figure_rows, Path(figure))
    return MovedReport(size=side, n_pairs=len(pairs), n_points=len(true), dropped_points=dropped,
                       settings={**asdict(settings), "border": "reflect (OpenCV BORDER_REFLECT_101)"},
                       rows=rows, image_scores=image_scores, feature_network=feature_network, pairs=pair_info,
                       model=model_name, data=str(data))


def _figure_row(structure: torch.Tensor, exemplar: np.ndarray, out: Any, b: int, output: np.ndarray) -> np.ndarray:
    """structure | moved exemplar | warped exemplar | reliability (X_uncor weight, white = no reliable match) |
    output, one uint8 row at the model's size."""
    import torch.nn.functional as F

    from matebit.io import to_uint8

    h, w = output.shape[:2]

    def up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t[None].float().cpu(), size=(h, w), mode="nearest")[0]

    s = to_uint8(structure.expand(3, -1, -1) if structure.shape[0] == 1 else structure[:3], 0.0)
    warped = to_uint8(up(out.warped[-1][b]), -1.0)
    rel = to_uint8(up(out.uncor_weight[-1][b]).expand(3, -1, -1), 0.0)
    return np.concatenate([s, exemplar, warped, rel, output], axis=1)


def _write_figure(rows: list[np.ndarray], path: Path) -> None:
    from PIL import Image

    from matebit.convert._common import save_png_atomic

    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    parts = []
    for r in rows:
        parts += [r, gap]
    save_png_atomic(Image.fromarray(np.concatenate(parts[:-1], axis=0)), path)


# --------------------------------------------------------------------------------------------------------------
# Tables


def format_moved(report: MovedReport, markdown: bool = False) -> str:
    """The PCK / soft-measure table, then the image scores."""
    from matebit.io import format_table

    head = ["", *(f"PCK@{a:.2f}" for a in PCK_ALPHAS), "exp. pos. error", "spread"]
    body = []
    for name, row in report.rows.items():
        cells = [name, *(f"{row[f'pck@{a:g}']:.3f}" for a in PCK_ALPHAS)]
        cells += [f"{row['soft_error']:.3f}" if "soft_error" in row else "—",
                  f"{row['soft_spread']:.3f}" if "soft_spread" in row else "—"]
        body.append(cells)
    text = format_table(head, body, markdown=markdown)
    caption = (f"{report.n_pairs} moved pairs at {report.size}x{report.size}, {report.n_points} landmarks "
               f"({report.dropped_points} moved out of the image and dropped); errors and spreads are shares of the "
               f"side")
    parts = [caption, "", text]
    if report.image_scores:
        parts += ["", format_table(["image score ↑", "value"],
                                   [[k, f"{v:.4f}"] for k, v in report.image_scores.items()], markdown=markdown)]
    return "\n".join(parts)
