"""The paired-folder dataset: training triplets {x_A, y_B, x_B} from ready-made pairs {x_A, x_B} (Sec. 3.4).

Layout under `root`:
  images/<stem>.png|.jpg|.jpeg      targets x_B (RGB)
  structure/<stem>.png | <stem>.npy structure maps x_A; PNG read as 'L' (1 channel) or 'RGB' (3 channels),
                                    .npy as (H, W, C) or (C, H, W), float in [0, 1], uint8 (/255) or bool
  pairs.txt   (optional)            `<stem> <exemplar stem> [<exemplar stem> ...]` per line, '#' comments
  train.txt / val.txt (optional)    stems, one a line; with only one present the other split is the rest;
                                    with neither, a stem goes to val when hash(stem) < val_fraction

A training item takes, with probability `exemplar_rate`, a random exemplar from the stem's pairs line
(s = 0), else a geometrically warped copy of x_B itself (s = 1, see warp.py). Validation is deterministic:
the first listed exemplar, else a warp with a fixed seed per stem. With `recolour_background` > 0 a training
self-exemplar item has its exemplar's backdrop and clothes recoloured (augment.py), or with `recolour_target` its
target's before the warp, so that both share them. A self-exemplar's item carries the warp's
sampling grid (`warp_grid`, (H, W, 2): where each exemplar pixel came from in x_B), the exact correspondence
that `loss.match` learns from; other exemplars carry a NaN grid.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from matebit.errors import DataError, first_line
from matebit.io import DATASET_EXTENSIONS, from_uint8, missing_reason, open_image, present, read_npy, read_text

from .augment import recolour_background
from .warp import WarpConfig, random_warp

__all__ = ["DataConfig", "PairedFolderDataset", "load_image", "load_structure"]


@dataclass
class DataConfig:
    """Where the data is and how training triplets are made."""

    root: str = "data"
    size: int | tuple[int, int] = 256          # output (h, w); an int means square
    structure_channels: int = 3                # C of x_A; PNG maps need 1 or 3
    exemplar_rate: float = 0.7                 # P(pairs-file exemplar) when the stem has one (released code: 0.7)
    flip: bool = True                          # random horizontal flips at train time
    warp: WarpConfig = field(default_factory=WarpConfig)  # self-exemplar warp strength
    recolour_background: float = 0.0           # P(recolour a self-exemplar item's backdrop and clothes), augment.py
    recolour_target: bool = False              # recolour the target too (before the warp), else the exemplar alone
    val_fraction: float = 0.1                  # hashed split when no train.txt / val.txt exist
    seed: int = 0                              # fixes the validation warps

    def __post_init__(self) -> None:
        if isinstance(self.size, list):        # JSON round trips give lists
            self.size = tuple(self.size)
        hw = self.hw
        if len(hw) != 2 or min(hw) < 8:
            raise DataError(f"DataConfig.size must be an int or (h, w) of at least 8, got {self.size!r}")
        if self.structure_channels < 1:
            raise DataError(f"DataConfig.structure_channels must be >= 1, got {self.structure_channels}")
        if not 0.0 <= self.exemplar_rate <= 1.0:
            raise DataError(f"DataConfig.exemplar_rate is a probability, got {self.exemplar_rate}")
        if not 0.0 <= self.recolour_background <= 1.0:
            raise DataError(f"DataConfig.recolour_background is a probability, got {self.recolour_background}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise DataError(f"DataConfig.val_fraction must be in [0, 1), got {self.val_fraction}")

    @property
    def hw(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else tuple(int(v) for v in self.size)


def _hash_unit(stem: str) -> float:
    """Stable value in [0, 1) from a stem (independent of seed and of the other files)."""
    return int.from_bytes(hashlib.sha1(stem.encode()).digest()[:8], "big") / 2.0**64


def _scan(folder: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in exts and p.is_symlink() and not p.exists():
            raise DataError(f"{p}: {missing_reason(p)}")  # a loop or a dangling link, not a missing file
        # Not only regular files: a FIFO or a link to /dev/zero is then named as a bad file when it is read, as a
        # corrupt image is, instead of being left out unsaid.
        if p.suffix.lower() in exts and not p.is_dir():
            if p.stem in found:
                raise DataError(f"{p}: stem {p.stem!r} also used by {found[p.stem].name}; keep one file per stem")
            found[p.stem] = p
    return found


def _read_text(path: Path) -> str:
    return read_text(path, error=DataError)  # a byte-order mark is not part of the first stem


def _read_list(path: Path) -> list[str]:
    out = []
    for line in _read_text(path).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line.split()[0])
    return out


def load_image(path: Path) -> torch.Tensor:
    """RGB file -> (3, H, W) float in [-1, 1]."""
    return from_uint8(np.asarray(_open(path).convert("RGB"), dtype=np.uint8))


def _open(path: Path) -> Image.Image:
    # No EXIF rotation: a structure map is pixel-aligned with its image as stored.
    return open_image(path, transpose_exif=False, error=DataError)


def load_structure(path: Path, channels: int, hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Structure map file -> (C, H, W) float in [0, 1]; checks channels, finiteness, range and size `hw`."""
    if path.suffix.lower() == ".npy":
        arr = read_npy(path, error=DataError)
        if arr.dtype == np.bool_:
            arr = arr.astype(np.float32)
        elif arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        elif not np.issubdtype(arr.dtype, np.floating):
            raise DataError(f"{path}: dtype {arr.dtype} not supported (use float in [0, 1], uint8 or bool)")
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise DataError(f"{path}: expected (H, W), (H, W, C) or (C, H, W), got shape {arr.shape}")
        # Decide the layout from the channel count, using the image size to break ties (e.g. 3x3x3).
        chw_ok, hwc_ok = arr.shape[0] == channels, arr.shape[2] == channels
        if chw_ok and hwc_ok and hw is not None:
            chw_ok = tuple(arr.shape[1:]) == tuple(hw)
        if chw_ok:
            pass
        elif hwc_ok:
            arr = arr.transpose(2, 0, 1)
        else:
            raise DataError(f"{path}: shape {arr.shape} has no axis of {channels} channels "
                            f"(structure_channels={channels})")
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: contains NaN or inf")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{path}: values must lie in [0, 1], got min {lo:.4g} max {hi:.4g}")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    else:
        if channels not in (1, 3):
            raise DataError(f"{path}: a PNG map gives 1 or 3 channels, structure_channels={channels} needs .npy")
        arr = np.asarray(_open(path).convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
        t = from_uint8(arr, low=0.0).contiguous()
    if hw is not None and tuple(t.shape[1:]) != tuple(hw):
        raise DataError(f"{path}: size {t.shape[2]}x{t.shape[1]} does not match image {hw[1]}x{hw[0]}")
    return t


def _resize(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(t.shape[-2:]) == tuple(hw):
        return t
    # Aspect ratio is not preserved, as in the released code (which resizes to a square load size).
    return F.interpolate(t[None], size=hw, mode="bilinear", align_corners=False, antialias=True)[0]


class PairedFolderDataset(torch.utils.data.Dataset):
    """Items: structure (C,H,W) [0,1], image x_B (3,H,W) [-1,1], exemplar y_B (3,H,W) [-1,1], self_ref (bool
    tensor), stem, exemplar_stem."""

    def __init__(self, cfg: DataConfig, split: str = "train", allow_empty: bool = False):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.cfg, self.split = cfg, split
        root = Path(cfg.root)
        img_dir, st_dir = root / "images", root / "structure"
        for d in (root, img_dir, st_dir):
            if not d.is_dir():
                raise DataError(f"{d}: folder not found")
        self.images = _scan(img_dir, DATASET_EXTENSIONS)
        self.structures = _scan(st_dir, (".png", ".npy"))
        if not self.images:
            raise DataError(f"{img_dir}: no .png/.jpg images")

        self.stems = self._split_stems(root)
        for s in self.stems:
            if s not in self.structures:
                raise DataError(f"{st_dir / s}.png: no structure map (.png or .npy) for {self.images[s]}")
        if not self.stems and not allow_empty:
            raise DataError(f"{root}: the {split} split is empty")
        self.pairs = self._read_pairs(root / "pairs.txt")

    # ------------------------------------------------------------------------------------------------------
    def _split_stems(self, root: Path) -> list[str]:
        lists = {}
        for name in ("train", "val"):
            p = root / f"{name}.txt"
            if present(p):
                stems = _read_list(p)
                for s in stems:
                    if s not in self.images:
                        raise DataError(f"{p}: stem {s!r} has no file in {root / 'images'}")
                lists[name] = stems
        if self.split in lists:
            return lists[self.split]
        other = "val" if self.split == "train" else "train"
        if other in lists:
            excluded = set(lists[other])
            return [s for s in self.images if s not in excluded]
        want_val = self.split == "val"
        return [s for s in self.images if (_hash_unit(s) < self.cfg.val_fraction) == want_val]

    def _read_pairs(self, path: Path) -> dict[str, list[str]]:
        if not present(path):
            return {}
        pairs: dict[str, list[str]] = {}
        for n, line in enumerate(_read_text(path).splitlines(), 1):
            toks = line.split("#", 1)[0].split()
            if not toks:
                continue
            if len(toks) < 2:
                raise DataError(f"{path}:{n}: {toks[0]!r} lists no exemplar")
            for t in toks:
                if t not in self.images:
                    raise DataError(f"{path}:{n}: {t!r} has no file in {path.parent / 'images'}")
            pairs[toks[0]] = toks[1:]
        return pairs

    # ------------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.stems)

    def load_pair(self, stem: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(structure (C,H,W) in [0,1], image (3,H,W) in [-1,1]) at the configured size, unaugmented."""
        img = load_image(self.images[stem])
        st = load_structure(self.structures[stem], self.cfg.structure_channels, tuple(img.shape[1:]))
        hw = self.cfg.hw
        return _resize(st, hw).clamp_(0, 1), _resize(img, hw).clamp_(-1, 1)

    def load_exemplar(self, stem: str) -> torch.Tensor:
        return _resize(load_image(self.images[stem]), self.cfg.hw).clamp_(-1, 1)

    def __getitem__(self, index: int) -> dict:
        if self.split == "train":
            # Seeded from torch's global RNG so DataLoader worker seeding and torch.manual_seed control it.
            g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        else:
            g = None
        return self.get(index, g)

    def get(self, index: int, generator: torch.Generator | None = None) -> dict:
        """One item; train-split randomness comes only from `generator` (val ignores it: deterministic)."""
        stem = self.stems[index]
        structure, image = self.load_pair(stem)
        cfg = self.cfg
        refs = self.pairs.get(stem, [])
        if self.split == "val":
            if refs:
                ex_stem, exemplar, self_ref = refs[0], self.load_exemplar(refs[0]), False
            else:
                g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + zlib.crc32(stem.encode()))
                ex_stem, (exemplar, grid), self_ref = stem, random_warp(image, g, cfg.warp, return_grid=True), True
        else:
            g = generator if generator is not None else torch.Generator().manual_seed(index)
            r = torch.rand(4, generator=g)  # fixed draw order: flip pair, use pairs, which ref, flip ref
            if cfg.flip and r[0] < 0.5:
                structure, image = structure.flip(-1), image.flip(-1)
            if refs and r[1] < cfg.exemplar_rate:
                ex_stem = refs[min(int(r[2] * len(refs)), len(refs) - 1)]
                exemplar, self_ref = self.load_exemplar(ex_stem), False
                if cfg.flip and r[3] < 0.5:
                    exemplar = exemplar.flip(-1)
            else:
                # Drawn only when the option is on, so that runs without it keep their random stream.
                recolour = bool(cfg.recolour_background) and float(torch.rand(1, generator=g)) < cfg.recolour_background
                if recolour and cfg.recolour_target:
                    image = recolour_background(image, g)  # before the warp: target and exemplar share the colours
                ex_stem, (exemplar, grid), self_ref = stem, random_warp(image, g, cfg.warp, return_grid=True), True
                if recolour and not cfg.recolour_target:
                    # After the warp, on the exemplar alone: the target keeps its backdrop, so the model learns to
                    # match faces against any backdrop without taking the backdrop's colour. The grid stays exact.
                    exemplar = recolour_background(exemplar, g)
        if not self_ref:  # another image: no known correspondence (NaN, so that no loss can use it by mistake)
            grid = torch.full((*image.shape[-2:], 2), float("nan"))
        return {"structure": structure, "image": image, "exemplar": exemplar, "warp_grid": grid,
                "self_ref": torch.tensor(self_ref), "stem": stem, "exemplar_stem": ex_stem}

    def verify(self, skip_bad: bool = False, progress=None) -> list[tuple[Path, str]]:
        """Read every file of the split and its pairs-file exemplars once: decodable, sizes and channels that fit,
        finite values in range. Returns the bad files as (path, message).

        Without `skip_bad` a bad file raises a DataError naming it (and how many more there are); with it, the
        stems whose image or map is bad leave the split and bad exemplars leave the pairs lists. `progress` (an
        object with `update()`) advances once per stem.
        """
        bad: dict[Path, str] = {}
        good_refs: set[str] = set()
        for stem in list(self.stems):
            for ref in self.pairs.get(stem, []):
                if ref not in good_refs and self.images[ref] not in bad:
                    try:
                        load_image(self.images[ref])
                        good_refs.add(ref)
                    except DataError as exc:
                        bad[self.images[ref]] = first_line(exc)
            path = self.images[stem]
            try:
                image = load_image(path)
                path = self.structures[stem]
                load_structure(path, self.cfg.structure_channels, tuple(image.shape[1:]))
            except DataError as exc:
                bad[path] = first_line(exc)
            if progress is not None:
                progress.update(1)
        if bad and not skip_bad:
            first = next(iter(bad.values()))
            more = f"{len(bad) - 1} more bad file(s); " if len(bad) > 1 else ""
            raise DataError(f"{first}; {more}pass --skip-bad-files to train without them")
        bad_stems = {s for s in self.images if self.images[s] in bad}
        bad_stems |= {s for s in self.stems if self.structures[s] in bad}
        self.stems = [s for s in self.stems if s not in bad_stems]
        self.pairs = {s: kept for s, refs in self.pairs.items() if (kept := [r for r in refs if r not in bad_stems])}
        return list(bad.items())
