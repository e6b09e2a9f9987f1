"""The synthetic benchmark: fixed held-out cross pairs with exact ground truth (`matebit bench quality`).

A pair (i, j) puts the structure map of face i with an exemplar of face j *moved*: rendered with its pose changed
by a random shift (up to 10% of the side), zoom (0.8-1.2) and in-plane rotation (up to 20 degrees), as a real
exemplar differs from the structure in position, scale and pose. `SyntheticFaces.cross(i, j)` (face i's geometry
and pose in face j's style) is the exact answer, and the keypoints of face i and of the moved face j give the true
correspondence. Copying the exemplar or matching each point to the same place (the identity map) therefore fails,
where on unmoved pairs of these roughly aligned faces it scores PCK@0.10 = 0.82. Faces come from a seed the demo
never trains on, so every pair is held out. Scores:

  pck@0.05, pck@0.1  share of face i's keypoints whose attention argmax in the LAST MAT block lands within
                     0.05 / 0.10 x the image side of the same keypoint of face j (pooled over all points)
  colour_error       per-part mean colour error: for each part in the truth's label map, the distance
                     (RGB, 0-255) between the mean colour of the output and of the truth over that part's
                     pixels; mean over the parts of a pair, then over pairs (lower is better)
  psnr               dB of the uint8 output against the truth, mean over pairs (identical images are capped
                     at PSNR_CAP so means stay finite)
  uncor>0.5          share of the last block's tokens whose X_uncor weight (1 - reliability) exceeds 0.5, with
                     the weight's mean and a 10-bin histogram in the JSON

Two trivial answers are scored the same way: the exemplar itself (its PCK is that of the identity map, each
point matched to the centre of the token cell it lies in) and the structure map shown as an RGB image (no
correspondence). An argmax can only name a token centre (8 px apart), so the "grid ceiling" row gives the PCK
of a perfect argmax: at 64 px, 0.05 x 64 = 3.2 px is less than the farthest a point can be from its centre.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from matebit.data.synthetic import KEYPOINT_NAMES, Sample, SyntheticFaces
from matebit.config import TOKEN_STRIDE
from matebit.io import format_table as _format_table, from_uint8, to_uint8
from matebit.metrics import attention_to_points, pck, psnr
from matebit.metrics.correspondence import token_centres

__all__ = ["BENCH_SEED", "PSNR_CAP", "QualityPair", "PairResult", "QualityReport", "held_out_pairs", "aggregate",
           "reliability_stats",
           "part_colour_error", "capped_psnr", "structure_rgb", "pair_tensors", "run_generator",
           "evaluate_generator", "evaluate_baselines", "table_cells", "format_table", "write_json"]

BENCH_SEED = 20230601  # not any training seed: the faces of the benchmark are never trained on
PSNR_CAP = 100.0
ALPHAS = (0.05, 0.1)


@dataclass(frozen=True)
class QualityPair:
    structure_index: int  # i: geometry (x_A) comes from this face
    exemplar_index: int  # j: style (y_B) comes from this face
    move_seed: int | None = None  # the exemplar's pose change is drawn from this seed; None: not moved


def held_out_pairs(n_pairs: int, seed: int = BENCH_SEED, moved: bool = True) -> list[QualityPair]:
    """Pairs (2k, 2k+1) of a SyntheticFaces(2 * n_pairs, size, seed): disjoint faces, fixed for a seed; with
    `moved`, each exemplar's pose change comes from its own seeded stream."""
    if n_pairs < 1:
        raise ValueError(f"the benchmark needs at least one pair, got {n_pairs}")
    return [QualityPair(2 * k, 2 * k + 1, seed * 1000 + k if moved else None) for k in range(n_pairs)]


# ---------------------------------------------------------------------------------------------------------------
# Per-image scores


def part_colour_error(output: np.ndarray, truth: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the parts in `labels` of |mean RGB of output - mean RGB of truth| over that part (0-255)."""
    out = np.asarray(output, np.float64).reshape(-1, 3)
    tru = np.asarray(truth, np.float64).reshape(-1, 3)
    lab = np.asarray(labels).reshape(-1)
    if out.shape != tru.shape or lab.shape[0] != out.shape[0]:
        raise ValueError(f"output {np.shape(output)}, truth {np.shape(truth)} and labels {np.shape(labels)} "
                         f"must cover the same pixels")
    errors = []
    for part in np.unique(lab):
        m = lab == part
        errors.append(float(np.linalg.norm(out[m].mean(0) - tru[m].mean(0))))
    return float(np.mean(errors))


def capped_psnr(output: np.ndarray, truth: np.ndarray) -> float:
    return min(psnr(output, truth), PSNR_CAP)


def structure_rgb(structure: np.ndarray) -> np.ndarray:
    """The (H, W) uint8 edge map as the (H, W, 3) RGB image the network is given (white lines on black)."""
    return np.repeat(np.asarray(structure, np.uint8)[..., None], 3, axis=2)


# ---------------------------------------------------------------------------------------------------------------
# Running a generator on the pairs


@dataclass
class PairResult:
    """Everything the report shows for one pair (images uint8, maps float on the token grid)."""

    pair: QualityPair
    structure: np.ndarray  # (H, W) uint8
    exemplar: np.ndarray  # (H, W, 3)
    truth: np.ndarray
    labels: np.ndarray
    output: np.ndarray
    warped: np.ndarray | None  # (h, w, 3) uint8: exemplar warped by the last block
    uncor: np.ndarray | None  # (h, w) weight of X_uncor in the last block (1 = no reliable match)
    query_points: np.ndarray  # (P, 2) keypoints of face i (x, y)
    true_points: np.ndarray  # (P, 2) the same keypoints in face j
    pred_points: np.ndarray | None  # (P, 2) attention argmax of the last block
    rows_masked: np.ndarray | None  # (P, h*w)
    rows_full: np.ndarray | None
    scores: dict[str, float] = field(default_factory=dict)


class _Renders:
    """Each face, exemplar and cross pair rendered once (a render is the costly part of scoring on the CPU)."""

    def __init__(self, faces: SyntheticFaces):
        self.faces = faces
        self._cache: dict[tuple, Sample] = {}

    def __call__(self, i: int, j: int | None = None) -> Sample:
        key = (i, i if j is None else j)
        if key not in self._cache:
            self._cache[key] = self.faces.cross(*key)
        return self._cache[key]

    def exemplar(self, pair: QualityPair) -> Sample:
        """Face j as the pair shows it: moved by its seeded pose change, or as rendered."""
        if pair.move_seed is None:
            return self(pair.exemplar_index)
        key = ("moved", pair.exemplar_index, pair.move_seed)
        if key not in self._cache:
            rng = np.random.default_rng(pair.move_seed)
            self._cache[key] = self.faces.moved_exemplar(pair.exemplar_index, rng)
        return self._cache[key]


def pair_tensors(faces: SyntheticFaces, pairs: Sequence[QualityPair], structure_channels: int = 3,
                 renders: _Renders | None = None):
    """Network inputs for pairs: structure (B, C, H, W) in [0, 1], exemplar (B, 3, H, W) in [-1, 1]."""
    renders = renders or _Renders(faces)
    st, ex = [], []
    for p in pairs:
        st.append(from_uint8(renders(p.structure_index).structure, low=0.0).expand(structure_channels, -1, -1))
        ex.append(from_uint8(renders.exemplar(p).image))
    return torch.stack(st), torch.stack(ex)


def _points(sample) -> np.ndarray:
    return np.array([sample.keypoints[k] for k in KEYPOINT_NAMES], np.float64)


@torch.no_grad()
def run_generator(generator, faces: SyntheticFaces, pairs: Sequence[QualityPair], batch_size: int = 16,
                  device: str | torch.device = "cpu") -> list[PairResult]:
    """Translate every pair, asking the last MAT block where each of face i's keypoints looks."""
    cfg = generator.config
    was_training = generator.training
    generator.eval()
    size = faces.size
    renders = _Renders(faces)
    results: list[PairResult] = []
    for start in range(0, len(pairs), batch_size):
        chunk = list(pairs[start:start + batch_size])
        structure, exemplar = pair_tensors(faces, chunk, cfg.structure_channels, renders)
        # Every face has every keypoint (KEYPOINT_NAMES order), so one (B, P) index tensor serves the batch.
        query = torch.stack([torch.from_numpy(_points(renders(p.structure_index))).float() for p in chunk])
        structure, exemplar = structure.to(device), exemplar.to(device)
        if cfg.n_mat_blocks:
            # PCK scores the rows the last block aggregates with ("used"); the report shows masked and full.
            probe = generator.probe_correspondence(
                structure, exemplar, query_index=generator.point_to_token(query, size, size).to(device))
            out = probe.output
            rows, masked, full = (probe.rows(kind) for kind in ("used", "masked", "full"))
        else:
            out, rows, masked, full = generator(structure, exemplar), None, None, None
        grid = generator.token_grid(size, size)
        for b, p in enumerate(chunk):
            si, sj = renders(p.structure_index), renders.exemplar(p)
            truth = renders(p.structure_index, p.exemplar_index)
            results.append(PairResult(
                pair=p, structure=si.structure, exemplar=sj.image, truth=truth.image, labels=truth.labels,
                output=to_uint8(out.image[b]),
                warped=to_uint8(out.warped[-1][b]) if out.warped else None,
                uncor=out.uncor_weight[-1][b, 0].float().cpu().numpy() if out.uncor_weight else None,
                query_points=_points(si), true_points=_points(sj),
                pred_points=attention_to_points(rows[b], grid, (size, size)) if rows is not None else None,
                rows_masked=masked[b].float().cpu().numpy() if masked is not None else None,
                rows_full=full[b].float().cpu().numpy() if full is not None else None))
    generator.train(was_training)
    for r in results:
        r.scores = _image_scores(r.output, r)
    return results


def _image_scores(image: np.ndarray, r: PairResult) -> dict[str, float]:
    return {"colour_error": part_colour_error(image, r.truth, r.labels), "psnr": capped_psnr(image, r.truth)}


def _pooled_pck(pred: Iterable[np.ndarray], true: Iterable[np.ndarray], size: int) -> dict[str, float]:
    return pck(np.concatenate(list(pred)), np.concatenate(list(true)), (size, size), ALPHAS)


def summarise(results: Sequence[PairResult], size: int, image_key: str = "output") -> dict[str, float]:
    """Mean scores over pairs for the model's outputs (PCK pooled over every keypoint of every pair)."""
    row: dict[str, float] = {}
    if results and results[0].pred_points is not None:
        row.update(_pooled_pck((r.pred_points for r in results), (r.true_points for r in results), size))
    else:
        row.update({f"pck@{a:g}": float("nan") for a in ALPHAS})
    row["colour_error"] = float(np.mean([r.scores["colour_error"] for r in results]))
    row["psnr"] = float(np.mean([r.scores["psnr"] for r in results]))
    if results and results[0].uncor is not None:
        row.update(reliability_stats(np.concatenate([r.uncor.ravel() for r in results])))
    return row


def reliability_stats(uncor: np.ndarray) -> dict:
    """How the X_uncor weight (1 - reliability) is spread over tokens: the share above 0.5, the mean, and a 10-bin
    histogram on [0, 1] (a weight stuck at 0 or 1 everywhere carries no information)."""
    u = np.asarray(uncor, np.float64).ravel()
    return {"uncor>0.5": float((u > 0.5).mean()), "uncor_mean": float(u.mean()),
            "uncor_hist": np.histogram(u, bins=10, range=(0.0, 1.0))[0].tolist()}


def _token_centres(points: np.ndarray, size: int) -> np.ndarray:
    """Each point moved to the centre of its token cell on a square image: where an argmax can land."""
    grid = size // TOKEN_STRIDE
    return token_centres(points, (grid, grid), (size, size))


def evaluate_baselines(results: Sequence[PairResult], size: int) -> dict[str, dict[str, float]]:
    """Scores of the two trivial answers on the same pairs, and the best PCK an argmax on the grid can reach."""
    ex = [_image_scores(r.exemplar, r) for r in results]
    st = [_image_scores(structure_rgb(r.structure), r) for r in results]
    true = [r.true_points for r in results]
    # Copying the exemplar matches each point to the same place: the identity correspondence, read on the token
    # grid like the model's argmax so that both are equally quantised.
    ident = _pooled_pck((_token_centres(r.query_points, size) for r in results), true, size)
    nan = {f"pck@{a:g}": float("nan") for a in ALPHAS}
    return {
        "exemplar (copy)": {**ident, "colour_error": float(np.mean([s["colour_error"] for s in ex])),
                            "psnr": float(np.mean([s["psnr"] for s in ex]))},
        "structure map": {**nan, "colour_error": float(np.mean([s["colour_error"] for s in st])),
                          "psnr": float(np.mean([s["psnr"] for s in st]))},
        # A perfect argmax still reports a token centre, so PCK@0.05 cannot reach 1 on coarse grids.
        "grid ceiling (PCK only)": {**_pooled_pck((_token_centres(t, size) for t in true), true, size),
                                    "colour_error": float("nan"), "psnr": float("nan")},
    }


# ---------------------------------------------------------------------------------------------------------------
# Reports


@dataclass
class QualityReport:
    """One benchmark run: rows name -> scores, plus how it was made."""

    size: int
    n_pairs: int
    seed: int
    rows: dict[str, dict[str, float]]
    info: dict = field(default_factory=dict)  # per-row notes: preset, steps, training seconds, ...

    def to_json(self) -> str:
        def clean(v):  # JSON has no NaN: a missing score is null
            return None if isinstance(v, float) and not math.isfinite(v) else v
        data = asdict(self)
        data["rows"] = {k: {m: clean(v) for m, v in row.items()} for k, row in self.rows.items()}
        data["protocol"] = __doc__.split("\n\n", 1)[1].strip()
        return json.dumps(data, indent=2)


def evaluate_generator(generator, size: int, n_pairs: int = 32, seed: int = BENCH_SEED, batch_size: int = 16,
                       device: str | torch.device = "cpu", name: str = "model"
                       ) -> tuple[QualityReport, list[PairResult]]:
    """Score a generator and the two trivial answers on the benchmark's pairs."""
    faces = SyntheticFaces(2 * n_pairs, size, seed)
    pairs = held_out_pairs(n_pairs, seed)
    results = run_generator(generator, faces, pairs, batch_size, device)
    rows = {name: summarise(results, size), **evaluate_baselines(results, size)}
    report = QualityReport(size=size, n_pairs=n_pairs, seed=seed, rows=rows,
                           info={"keypoints": len(KEYPOINT_NAMES)})
    return report, results


COLUMNS = (("pck@0.05", "PCK@0.05 ↑", "{:.3f}"), ("pck@0.1", "PCK@0.10 ↑", "{:.3f}"),
           ("colour_error", "colour err ↓", "{:.1f}"), ("psnr", "PSNR dB ↑", "{:.2f}"),
           ("uncor>0.5", "X_uncor>0.5", "{:.2f}"))


def aggregate(runs: Sequence[dict]) -> dict:
    """The rows of one model trained with several seeds -> mean of each score, its sample standard deviation
    (key + "_std") and the number of seeds; histograms are summed, per-seed values kept under "per_seed"."""
    if not runs:
        raise ValueError("aggregate needs at least one run")
    out: dict = {"seeds": len(runs)}
    for key, first in runs[0].items():
        values = [r[key] for r in runs]
        if isinstance(first, list):
            out[key] = np.sum(values, axis=0).tolist()
            continue
        v = np.array(values, np.float64)
        out[key] = float(v.mean())
        out[key + "_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    out["per_seed"] = [dict(r) for r in runs]
    return out


def _cell(row: dict, key: str, fmt: str) -> str:
    v = row.get(key, float("nan"))
    if v is None or not math.isfinite(v):
        return "—"
    if row.get("seeds", 1) > 1 and key + "_std" in row:
        return f"{fmt.format(v)} ± {fmt.format(row[key + '_std'])}"
    return fmt.format(v)


def table_cells(rows: dict[str, dict[str, float]]) -> tuple[list[str], list[list[str]]]:
    """(column heads, one list of formatted cells per row), the rows in the order given; a missing score is "—";
    a row aggregated over seeds shows mean ± sample standard deviation."""
    head = ["", *(c[1] for c in COLUMNS)]
    body = [[name, *(_cell(row, key, fmt) for key, _, fmt in COLUMNS)] for name, row in rows.items()]
    return head, body


def format_table(rows: dict[str, dict[str, float]], markdown: bool = False) -> str:
    """A plain-text (or Markdown) table of the rows, in the order given."""
    return _format_table(*table_cells(rows), markdown=markdown)


def write_json(report: QualityReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.to_json() + "\n")
    return path
