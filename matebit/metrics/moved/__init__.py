"""The moved-exemplar protocol: correspondence measured where the identity guess fails.

One home for its three sources, all scored with the one PCK and token grid of `matebit.metrics.correspondence`:
prepared face folders (`matebit eval moved --data`, below), photos as a user gives them (`matebit eval moved
--photos`: `evaluate_moved_photos`, `run_photo_draws`) and synthetic faces re-rendered under the move, whose truth
is exact (`matebit bench quality`, the demo's report: `matebit.metrics.moved.synthetic`).

On prepared data:

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

from matebit.metrics.correspondence import PCK_ALPHAS, ROW_KINDS, pck, probe_matches, token_centres

__all__ = ["MovedSettings", "MovedPair", "MovedReport", "similarity_matrix", "move_image", "move_points",
           "draw_moved_pairs", "evaluate_moved", "format_moved", "PhotoMovedSettings", "LandmarkedPhoto",
           "landmarked_photos", "cheek_colour", "evaluate_moved_photos", "summarise_photo_draws", "format_photo_draws"]

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

    from matebit.metrics.samples import _LandmarkSource

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
        row = pck(np.concatenate(preds[kind]), true, (side, side), PCK_ALPHAS)
        mean = np.concatenate(soft_mean[kind])
        row["soft_error"] = float(np.mean(np.linalg.norm(mean - true, axis=1)) / side)
        row["soft_spread"] = float(np.mean(np.concatenate(soft_spread[kind])) / side)
        rows[f"MATEBIT ({kind} rows)"] = row
    rows["identity guess"] = pck(np.concatenate(idents), true, (side, side), PCK_ALPHAS)
    rows["identity guess, exemplar not moved"] = pck(np.concatenate(idents_still), np.concatenate(trues_still),
                                                     (side, side), PCK_ALPHAS)
    rows["grid ceiling"] = pck(np.concatenate(ceils), true, (side, side), PCK_ALPHAS)

    image_scores: dict[str, float] = {}
    if image_metrics:
        from matebit.metrics.evalset import EvalSet
        from matebit.metrics.registry import compute_metric

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

    from matebit.io import save_png

    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    parts = []
    for r in rows:
        parts += [r, gap]
    save_png(Image.fromarray(np.concatenate(parts[:-1], axis=0)), path)


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


# --------------------------------------------------------------------------------------------------------------
# The same protocol on photos as a user gives them: a face model's whole pipeline, alignment included


@dataclass(frozen=True)
class PhotoMovedSettings:
    """Moved pairs of photos. The move is applied to the exemplar photo in its own frame, so the pipeline's
    alignment must find the face again; the strength is that of a careless user's framing."""

    pairs: int = 40
    seed: int = 0
    max_rotation: float = 20.0  # degrees
    zoom: tuple[float, float] = (0.8, 1.2)
    max_shift: float = 0.12  # share of the side, each axis
    max_side: int = 512  # photos are read at most this long on their longer side, as `translate --max-size` does


@dataclass
class LandmarkedPhoto:
    """A photo with its landmarks (the truth) in its own pixels, and the identity of the person in it."""

    path: Path
    landmarks: np.ndarray  # (P, 2)
    identity: str
    template: str = ""


def landmarked_photos(folder: str | Path, identities: Sequence[str] | None = None) -> list[LandmarkedPhoto]:
    """The photos of a folder that have a landmark file beside them (`NAME.json` in the London-faces format, or a
    webmorph `NAME.tem`); sub-folders too. The identity of a photo is its stem with a trailing `_NN` view number
    removed (`001_03` -> `001`). `identities`: keep only these."""
    from PIL import Image

    from matebit.io import IMAGE_EXTENSIONS

    from matebit.metrics.evalset import load_landmarks

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder (expected photos with landmark files: NAME.jpg + NAME.json/.tem)")
    keep = set(identities) if identities is not None else None
    out = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith(".") or not p.is_file():
            continue
        lm_file = next((p.with_suffix(s) for s in (".json", ".tem") if p.with_suffix(s).is_file()), None)
        if lm_file is None:
            continue
        ident = p.stem.rsplit("_", 1)[0] if "_" in p.stem and p.stem.rsplit("_", 1)[1].isdigit() else p.stem
        if keep is not None and ident not in keep:
            continue
        with Image.open(p) as im:
            size = im.size
        lm = load_landmarks(lm_file, size)
        pts = lm.points
        if tuple(lm.size) != tuple(size):  # a landmark file for a resized copy of the photo
            from matebit.metrics.evalset import scale_points

            pts = scale_points(pts, lm.size, size)
        out.append(LandmarkedPhoto(p, pts, ident, lm.template))
    if not out:
        raise InputError(f"{root}: no photos with landmark files (NAME.jpg + NAME.json or NAME.tem)")
    counts = {len(x.landmarks) for x in out}
    if len(counts) > 1:
        raise InputError(f"{root}: landmark files of different templates ({sorted(counts)} points); the protocol "
                         f"compares the same points across people")
    return out


# Cheeks on dlib's 68 landmarks: the middle of the jaw point at the nose's base, the nose wing and the lower eyelid
# on each side; radius a tenth of the face's width.
_CHEEKS = ((2, 31, 41), (14, 35, 46))


def cheek_colour(image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """Mean CIELAB colour of both cheeks of a uint8 RGB image with its 68 landmarks (in its pixels)."""
    import cv2

    lm = np.asarray(landmarks68, np.float64)
    radius = 0.1 * float(np.linalg.norm(lm[16] - lm[0]))
    mask = np.zeros(image.shape[:2], np.uint8)
    for ids in _CHEEKS:
        c = lm[list(ids)].mean(0)
        cv2.circle(mask, (int(round(c[0])), int(round(c[1]))), max(1, int(round(radius))), 1, -1)
    if not mask.any():
        return np.full(3, np.nan)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float64)
    # OpenCV's 8-bit Lab: L * 255/100, a and b offset by 128.
    mean = lab[mask > 0].mean(0)
    return np.array([mean[0] * 100.0 / 255.0, mean[1] - 128.0, mean[2] - 128.0])


def evaluate_moved_photos(model: Any, photos: Sequence[LandmarkedPhoto],
                          settings: PhotoMovedSettings = PhotoMovedSettings(), from_photo: str = "hed",
                          align: bool | None = None, device: str = "cpu", progress: bool = True,
                          figure: str | Path | None = None, figure_pairs: int = 4, dtype: str = "fp32") -> dict:
    """Score a face model's whole photo pipeline on moved pairs of `photos` (different identities).

    Per pair: the structure photo of person a as given, and the photo of person b moved by a seeded random similarity
    transform in its own frame (borders continued: a user's photo has no mirrored copies of a face), both read at
    most `settings.max_side` long. The translator converts, aligns and translates as `matebit translate --from-photo`
    does; the structure's landmarks are queried in its own pixels and matched in the moved exemplar's own pixels.

    Rows: the model (masked and full rows' argmax); the identity guess (the same relative position in the exemplar
    photo); the alignment guess (the point carried through both photos' alignments with no model: what the face
    template alone gives); the grid ceiling (the truth at its token centre in the aligned exemplar). PCK pools every
    landmark that lies inside the aligned structure crop and inside the moved exemplar photo; the others are counted.
    Skin colour: CIELAB distance of both cheeks' mean colour, output (in the aligned frame) against the moved
    exemplar, beside the structure photo's own distance to it; per pair and pooled.
    """
    import cv2
    from PIL import Image

    from matebit.inference import Translator
    from matebit.io import fit_side, open_image
    from matebit.progress import progress as progress_bar

    translator = model if isinstance(model, Translator) else Translator.from_pretrained(model, device=device,
                                                                                       dtype=dtype)
    if translator.config.n_mat_blocks == 0:
        raise MetricError("this model has no MAT blocks, so it has no correspondence to score")
    idents = {str(i): p.identity for i, p in enumerate(photos)}
    pairs = draw_moved_pairs(list(idents), idents, MovedSettings(
        pairs=settings.pairs, seed=settings.seed, max_rotation=settings.max_rotation, zoom=settings.zoom,
        max_shift=settings.max_shift))
    alphas = PCK_ALPHAS
    rows: dict[str, list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]] = {
        k: [] for k in ("MATEBIT (masked rows)", "MATEBIT (full rows)", "identity guess", "alignment guess",
                        "grid ceiling")}
    per_pair, figure_rows = [], []
    dropped = kept = 0
    bar = progress_bar(len(pairs), "eval moved photos", "pairs", quiet=not progress)
    side = translator.trained_size or 128
    for pair in pairs:
        a, b = photos[int(pair.structure)], photos[int(pair.exemplar)]
        with open_image(a.path) as im:
            a_size = im.size
            s_img = fit_side(im.convert("RGB"), settings.max_side)
        with open_image(b.path) as im:
            b_size = im.size
            e_img = fit_side(im.convert("RGB"), settings.max_side)
        pa = (a.landmarks + 0.5) * (s_img.size[0] / a_size[0]) - 0.5
        pb = (b.landmarks + 0.5) * (e_img.size[0] / b_size[0]) - 0.5
        m = similarity_matrix(pair.angle, pair.scale, pair.shift, e_img.size)
        moved = cv2.warpAffine(np.asarray(e_img), m, e_img.size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        truth, inside = move_points(pb, m, e_img.size)
        size = moved.shape[1], moved.shape[0]
        try:
            result = translator(s_img, Image.fromarray(moved), from_photo=from_photo, align=align)
        except InputError as exc:  # no face found: the pipeline failed on this pair, all its points are misses
            result, failure = None, str(exc).splitlines()[0]
        else:
            failure = None
        ph = result.photos[0] if result is not None else None
        s_al = ph.structure_align if ph is not None else None
        e_al = ph.exemplar_align if ph is not None else None
        if s_al is not None:
            crop_pts = s_al.to_crop(pa)
            inside &= ((crop_pts >= 0) & (crop_pts <= s_al.side - 1)).all(1)
        dropped += int((~inside).sum())
        kept += int(inside.sum())
        q, t = pa[inside], truth[inside]
        miss = np.full_like(t, np.inf)
        preds = {"identity guess": (q + 0.5) * np.array([size[0] / s_img.size[0], size[1] / s_img.size[1]]) - 0.5}
        if result is None:
            preds.update({"MATEBIT (masked rows)": miss, "MATEBIT (full rows)": miss})
            if translator.processor.is_face_model and align is not False:
                preds.update({"alignment guess": miss, "grid ceiling": miss})
        else:
            preds["MATEBIT (masked rows)"] = result.match(q, rows="masked")
            preds["MATEBIT (full rows)"] = result.match(q, rows="full")
        if s_al is not None and e_al is not None:
            preds["alignment guess"] = e_al.to_photo(s_al.to_crop(q))
            grid = translator.generator.token_grid(side, side)
            tc = e_al.to_crop(t)
            cell = np.stack([np.clip(np.floor(tc[:, 0] * grid[1] / side), 0, grid[1] - 1),
                             np.clip(np.floor(tc[:, 1] * grid[0] / side), 0, grid[0] - 1)], 1)
            centres = (cell + 0.5) * np.array([side / grid[1], side / grid[0]]) - 0.5
            preds["grid ceiling"] = e_al.to_photo(centres)
        for k, v in preds.items():
            rows[k].append((v, t, size))
        # Skin colour: the output is in the aligned structure frame (or the structure's own without alignment).
        colour = {}
        if s_al is not None and e_al is not None:
            out = np.asarray(result.image.convert("RGB"))
            ex_c = cheek_colour(moved, e_al.face.landmarks)
            out_lm = s_al.resized(out.shape[0]).to_crop(s_al.face.landmarks)
            colour = {"output": float(np.linalg.norm(cheek_colour(out, out_lm) - ex_c)),
                      "structure photo": float(np.linalg.norm(cheek_colour(np.asarray(s_img), s_al.face.landmarks)
                                                              - ex_c))}
        pck_pair = {k: pck(v, t, size, alphas) for k, v in preds.items()}
        per_pair.append({"structure": str(a.path.name), "exemplar": str(b.path.name), "angle": pair.angle,
                         "scale": pair.scale, "shift": list(pair.shift), "points_kept": int(inside.sum()),
                         "pck": pck_pair, "skin_colour_error": colour, "failure": failure})
        if figure is not None and result is not None and len(figure_rows) < figure_pairs:
            figure_rows.append(_photo_figure_row(ph, result, side))
        bar.update(1)
    bar.close()

    table = {}
    for k, items in rows.items():
        if not items:
            continue
        # Pooled over pairs whose photos differ in size: every point in units of its own exemplar's longer side.
        pred = np.concatenate([v / max(s) for v, t, s in items])
        true = np.concatenate([t / max(s) for v, t, s in items])
        table[k] = pck(pred, true, (1, 1), alphas)
    colours = [p["skin_colour_error"] for p in per_pair if p["skin_colour_error"]]
    skin = {}
    if colours:
        o = np.array([c["output"] for c in colours])
        s = np.array([c["structure photo"] for c in colours])
        skin = {"output_mean": float(o.mean()), "output_sd": float(o.std(ddof=1)) if len(o) > 1 else 0.0,
                "structure_photo_mean": float(s.mean()),
                "structure_photo_sd": float(s.std(ddof=1)) if len(s) > 1 else 0.0,
                "pairs_output_closer": int((o < s).sum()), "pairs": int(len(o))}
    if figure is not None and figure_rows:
        _write_figure(figure_rows, Path(figure))
    return {"protocol": evaluate_moved_photos.__doc__.split("\n\n", 1)[1].strip(),
            "settings": asdict(settings), "model": translator.source, "from_photo": from_photo,
            "aligned": translator.processor.is_face_model and align is not False, "n_pairs": len(pairs),
            "failed_pairs": sum(p["failure"] is not None for p in per_pair),
            "points_kept": kept, "points_dropped": dropped, "rows": table, "skin_colour_error": skin,
            "pairs": per_pair}


def _photo_figure_row(ph: Any, result: Any, side: int) -> np.ndarray:
    """structure map | aligned exemplar | warped exemplar | output, at the model's size."""
    from PIL import Image

    def arr(im):
        return np.asarray(im.convert("RGB").resize((side, side), Image.BICUBIC))

    cells = [arr(ph.structure_map), arr(ph.exemplar)]
    if result.warped[0] is not None:
        cells.append(arr(result.warped[0]))
    cells.append(arr(result.image))
    return np.concatenate(cells, axis=1)


def summarise_photo_draws(draws: Sequence[dict]) -> dict:
    """Mean and sample sd over pair draws of every row's PCK and of the skin colour errors, and the pairs where the
    output's skin is nearer the exemplar's than the structure photo's is, over all draws."""
    def stat(values: list[float]) -> dict[str, float]:
        v = np.asarray(values, np.float64)
        return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}

    rows: dict[str, dict[str, dict[str, float]]] = {}
    for name in draws[0]["rows"]:
        rows[name] = {k: stat([d["rows"][name][k] for d in draws]) for k in draws[0]["rows"][name]}
    skin = {}
    if all(d["skin_colour_error"] for d in draws):
        skin = {"output": stat([d["skin_colour_error"]["output_mean"] for d in draws]),
                "structure photo": stat([d["skin_colour_error"]["structure_photo_mean"] for d in draws]),
                "pairs_output_closer": int(sum(d["skin_colour_error"]["pairs_output_closer"] for d in draws)),
                "pairs": int(sum(d["skin_colour_error"]["pairs"] for d in draws))}
    return {"draws": len(draws), "pairs_per_draw": draws[0]["n_pairs"], "rows": rows, "skin_colour_error": skin,
            "failed_pairs": int(sum(d.get("failed_pairs", 0) for d in draws))}


def run_photo_draws(translator: Any, photos: Sequence[LandmarkedPhoto], seeds: Sequence[int], pairs: int,
                    out: str | Path, info: dict | None = None, progress: bool = True, **options: Any) -> dict:
    """`evaluate_moved_photos` over several pair draws (one per seed): writes `moved-photos.json` (every draw, the
    summary, `info` and where it ran), `moved-photos.md` and the first draw's `pairs.png` into `out`; returns the
    JSON's content. `options` go to `evaluate_moved_photos` (from_photo, align)."""
    from matebit.io import atomic_write_bytes
    from matebit.metrics.registry import run_environment

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    draws = [evaluate_moved_photos(translator, photos, PhotoMovedSettings(pairs=pairs, seed=seed), progress=progress,
                                   figure=out / "pairs.png" if i == 0 else None, **options)
             for i, seed in enumerate(seeds)]
    summary = summarise_photo_draws(draws)
    data = {**(info or {}), "seeds": list(seeds), "n_photos": len(photos), "environment": run_environment(),
            "summary": summary, "draws": draws}
    atomic_write_bytes(out / "moved-photos.json", (json.dumps(data, indent=1) + "\n").encode())
    table = format_photo_draws(summary, markdown=True)
    atomic_write_bytes(out / "moved-photos.md", ("# Moved-exemplar evaluation on photos\n\n" + table + "\n").encode())
    return data


def format_photo_draws(summary: dict, markdown: bool = False) -> str:
    """The summary of `summarise_photo_draws` as a table: mean ± sd over the draws."""
    from matebit.io import format_table

    head = ["", *(f"PCK@{a:.2f}" for a in PCK_ALPHAS)]
    body = [[name, *(f"{r[f'pck@{a:g}']['mean']:.3f} ± {r[f'pck@{a:g}']['sd']:.3f}" for a in PCK_ALPHAS)]
            for name, r in summary["rows"].items()]
    failed = summary.get("failed_pairs", 0)
    parts = [f"{summary['draws']} draw(s) of {summary['pairs_per_draw']} moved pairs; mean ± sd over the draws"
             + (f"; in {failed} pair(s) no face was found, all their points count as misses" if failed else ""),
             "", format_table(head, body, markdown=markdown)]
    skin = summary.get("skin_colour_error")
    if skin:
        parts += ["", f"skin colour error (CIELAB distance of the cheeks to the exemplar's): output "
                      f"{skin['output']['mean']:.1f} ± {skin['output']['sd']:.1f}, structure photo "
                      f"{skin['structure photo']['mean']:.1f} ± {skin['structure photo']['sd']:.1f}; the output is "
                      f"nearer in {skin['pairs_output_closer']} of {skin['pairs']} pairs"]
    return "\n".join(parts)
