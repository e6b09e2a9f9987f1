"""Evaluating a model: translate a data set's split, save PNG samples, and collect the evaluation sets.

Landmarks of a data set are read from keypoints/<stem>.json ({name: [x, y]}) or landmarks/<stem>.json (the
London-faces format); a pair gets PCK points only when both its structure and its exemplar have them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from matebit.config import SIZE_STRIDE
from matebit.data.folder import DataConfig, PairedFolderDataset
from matebit.errors import InputError
from matebit.io import image_size, read_json, to_uint8

from .correspondence import predict_matches
from .evalset import EvalSet, Landmarks, load_label_map, load_landmarks, scale_points

__all__ = ["SAMPLE_DIRS", "TranslatedSplit", "translate_split"]

# Folders of a samples/ tree, as EvalSet.from_folder reads them.
SAMPLE_DIRS = ("outputs", "exemplars", "structures", "targets", "labels", "exemplar_labels", "landmarks",
               "exemplar_landmarks", "predicted_points")


# --------------------------------------------------------------------------------------------------------------
# Landmarks of a data set


def _image_size(path: Path) -> tuple[int, int]:
    return image_size(path, error=InputError)


def _read_points(path: Path, image: Path) -> tuple[list[str] | None, np.ndarray, tuple[int, int]]:
    """(point names or None for an ordered list, (P, 2) pixel (x, y), (W, H) the points refer to)."""
    d = read_json(path)
    if isinstance(d, dict) and "points" in d:
        lm = load_landmarks(path)
        return None, lm.points, lm.size
    try:
        if isinstance(d, dict):
            names = list(d)
            pts = np.asarray([d[k] for k in names], np.float64).reshape(-1, 2)
            return names, pts, _image_size(image)
        return None, np.asarray(d, np.float64).reshape(-1, 2), _image_size(image)
    except (ValueError, TypeError) as e:
        raise InputError(f"{path}: expected {{name: [x, y]}}, [[x, y], ...] or {{'size', 'points'}} ({e})") from None


class _LandmarkSource:
    def __init__(self, root: Path, images: dict[str, Path]):
        self.dirs = [root / d for d in ("keypoints", "landmarks") if (root / d).is_dir()]
        self.images = images

    def __bool__(self) -> bool:
        return bool(self.dirs)

    def _file(self, stem: str) -> Path | None:
        for d in self.dirs:
            if (d / f"{stem}.json").is_file():
                return d / f"{stem}.json"
        return None

    def pair(self, stem: str, ex_stem: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        """Matched (structure points, exemplar points) at the translation size (W, H), or None."""
        fa, fb = self._file(stem), self._file(ex_stem)
        if fa is None or fb is None:
            return None
        na, pa, sa = _read_points(fa, self.images[stem])
        nb, pb, sb = _read_points(fb, self.images[ex_stem])
        if na is not None and nb is not None:  # named keypoints: match by name
            common = [n for n in na if n in set(nb)]
            pa = pa[[na.index(n) for n in common]]
            pb = pb[[nb.index(n) for n in common]]
        elif len(pa) != len(pb):
            raise InputError(f"{fa} has {len(pa)} points but {fb} has {len(pb)}")
        if len(pa) == 0:
            return None
        return scale_points(pa, sa, size), scale_points(pb, sb, size)


def _landmark_json(pts: np.ndarray, size: tuple[int, int], path: Path) -> None:
    path.write_text(json.dumps({"template": "matebit-eval", "size": list(size),
                                "points": [[float(x), float(y)] for x, y in pts]}), encoding="utf-8")


def _predict_points(generator: Any, structure: torch.Tensor, exemplar: torch.Tensor, points: np.ndarray,
                    rows: str) -> np.ndarray:
    """Where each structure point (x, y) of one pair looks in its exemplar: `predict_matches` on the pair as the
    data set gives it, on a canvas rounded to the network's stride (points scaled there and back)."""
    h, w = structure.shape[-2:]
    hn = max(SIZE_STRIDE, round(h / SIZE_STRIDE) * SIZE_STRIDE)
    wn = max(SIZE_STRIDE, round(w / SIZE_STRIDE) * SIZE_STRIDE)
    s, e = structure[None].float(), exemplar[None].float()
    if (hn, wn) != (h, w):
        s = F.interpolate(s, size=(hn, wn), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        e = F.interpolate(e, size=(hn, wn), mode="bilinear", align_corners=False, antialias=True).clamp(-1, 1)
    ratio = np.array([wn / w, hn / h])
    return predict_matches(generator, s, e, points * ratio, rows=rows)[0] / ratio


# --------------------------------------------------------------------------------------------------------------
# Model mode: translate, save PNG samples, collect the evaluation set


def _save_png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, format="PNG")


def _resized_labels(path: Path, size: tuple[int, int]) -> np.ndarray:
    lab = load_label_map(path)
    if lab.shape[::-1] != size:  # nearest keeps class ids intact
        lab = np.asarray(Image.fromarray(lab.astype(np.int32)).resize(size, Image.NEAREST))
    return lab.astype(np.uint8) if lab.max() < 256 else lab.astype(np.uint16)


def _clear_stale(samples: Path, stems: set[str]) -> None:
    """Remove sample files of an earlier run whose stems this run does not write (so the folder stays one set)."""
    for sub in SAMPLE_DIRS:
        d = samples / sub
        if d.is_dir():
            for p in d.iterdir():
                if p.is_file() and p.suffix in (".png", ".json") and p.stem not in stems:
                    p.unlink()


@dataclass
class TranslatedSplit:
    """What `translate_split` made: the evaluation sets and a timing callable."""

    items: EvalSet  # every translated pair, as saved under samples/
    pck_items: EvalSet | None  # the pairs with landmarks on both sides (None: no such pair)
    timed: Callable[[], None]  # translates the first batch again (for the timing metric)
    timing_batch_size: int
    size: tuple[int, int]  # (W, H) of the translations


def translate_split(translator: Any, data: str | Path, samples: Path, split: str = "val",
                    size: int | tuple[int, int] | None = None, limit: int | None = None, batch_size: int = 8,
                    want_pck: bool = False, pck_rows: str = "used") -> TranslatedSplit:
    """Translate a paired-folder data set's split with `translator`, save PNG samples under `samples/` in the
    layout `EvalSet.from_folder` reads, and collect the evaluation sets. `size` defaults to the size of the
    split's first image; `want_pck` also asks the model where each landmark looks (a model with MAT blocks),
    through `matebit.metrics.correspondence.predict_matches` with rows `pck_rows` ("used", "masked" or "full")."""
    data = Path(data)
    if size is None:
        probe = PairedFolderDataset(DataConfig(root=str(data), size=64), split)
        w, h = _image_size(probe.images[probe.stems[0]])
        size = (h, w)
    ds = PairedFolderDataset(DataConfig(root=str(data), size=size,
                                        structure_channels=translator.config.structure_channels), split)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n < 1:
        raise InputError("the limit must be at least 1")
    h, w = ds.cfg.hw
    wh = (w, h)
    lm_source = _LandmarkSource(data, ds.images) if want_pck else None
    label_dir = data / "labels"
    label_files = ({p.stem: p for p in label_dir.iterdir() if p.suffix.lower() == ".png"}
                   if label_dir.is_dir() else {})

    stems = [ds.stems[i] for i in range(n)]
    _clear_stale(samples, set(stems))
    for sub in ("outputs", "exemplars", "structures", "targets"):
        (samples / sub).mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {k: [] for k in ("outputs", "exemplars", "structures", "targets")}
    labels, ex_labels, matched = [], [], []  # matched: (index, structure pts, exemplar pts, predicted)
    timing_batch = None
    bs = batch_size
    with torch.inference_mode():
        for start in range(0, n, bs):
            items = [ds.get(i) for i in range(start, min(start + bs, n))]
            structs = [it["structure"] for it in items]
            exs = [it["exemplar"] for it in items]
            if timing_batch is None:
                timing_batch = (structs, exs)
            res = translator(structs, exs, batch_size=bs)
            for j, it in enumerate(items):
                stem, ex_stem, self_ref = it["stem"], it["exemplar_stem"], bool(it["self_ref"])
                paths = {k: samples / k / f"{stem}.png" for k in rows}
                res.images[j].convert("RGB").save(paths["outputs"], format="PNG")
                _save_png(to_uint8(it["exemplar"], -1.0), paths["exemplars"])
                _save_png(to_uint8(it["image"], -1.0), paths["targets"])
                if it["structure"].shape[0] in (1, 3):  # other channel counts have no PNG form
                    _save_png(to_uint8(it["structure"], 0.0), paths["structures"])
                else:
                    paths.pop("structures")
                for k in rows:
                    rows[k].append(paths.get(k))
                labels.append(_resized_labels(label_files[stem], wh) if stem in label_files else None)
                # A self-reference exemplar is a warped copy: its labels and landmarks are not the file's.
                ex_labels.append(_resized_labels(label_files[ex_stem], wh)
                                 if ex_stem in label_files and not self_ref else None)
                pair = lm_source.pair(stem, ex_stem, wh) if lm_source and not self_ref else None
                if pair is not None:
                    q = np.clip(pair[0], 0, np.array([w, h]) - 1e-3)  # points inside the image
                    pred = _predict_points(translator.generator, it["structure"], it["exemplar"], q, pck_rows)
                    matched.append((start + j, pair[0], pair[1], pred))

    kw: dict[str, list] = {k: v for k, v in rows.items() if all(x is not None for x in v)}
    # Label maps travel only when every pair has them (EvalSet lists are all-or-nothing); also written to disk.
    for name, maps in (("labels", labels), ("exemplar_labels", ex_labels)):
        if all(m is not None for m in maps):
            (samples / name).mkdir(exist_ok=True)
            kw[name] = []
            for stem, m in zip(stems, maps):
                _save_png(m, samples / name / f"{stem}.png")
                kw[name].append(samples / name / f"{stem}.png")
    full = EvalSet(stems=stems, **kw)

    pck_set = None
    if matched:
        idx = [r[0] for r in matched]
        pck_set = EvalSet(stems=[stems[i] for i in idx], outputs=[kw["outputs"][i] for i in idx],
                          landmarks=[Landmarks(r[1], wh) for r in matched],
                          exemplar_landmarks=[Landmarks(r[2], wh) for r in matched],
                          predicted_points=[Landmarks(r[3], wh) for r in matched])
        if len(matched) == n:  # full coverage: write them so `--items samples/` can recompute PCK
            for sub, k in (("landmarks", 1), ("exemplar_landmarks", 2), ("predicted_points", 3)):
                (samples / sub).mkdir(exist_ok=True)
                for r in matched:
                    _landmark_json(r[k], wh, samples / sub / f"{stems[r[0]]}.json")

    structs, exs = timing_batch

    def timed() -> None:
        translator(structs, exs, batch_size=len(structs))

    return TranslatedSplit(full, pck_set, timed, len(structs), (w, h))
