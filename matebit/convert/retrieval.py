"""Exemplar retrieval: for each image, the k most similar other images, as the pairs file training reads.

File format, one line per query, sorted by stem:  ``<stem> <exemplar 1> ... <exemplar k>``  (best first).
Similarity is the cosine of globally average-pooled deep features, as in CoCosNet's VGG retrieval that
MATEBIT's lists come from. The default extractor is VGG19 (``matebit.third_party.load_vgg19``); when its
weights are absent we stop and say so: HED's VGG16 trunk (``features="hed-vgg16"``) is only ever used
when asked for by name, because it was fine-tuned for edges and is a substitute.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
from PIL import Image

from matebit.errors import ConvertError, MissingDependencyError
from matebit.io import IMAGE_EXTENSIONS, atomic_write_bytes, check_outputs, from_uint8, read_text

from matebit.io import read_rgb

# An extractor maps a batch of RGB PIL images to an (N, D) array-like of features.
Extractor = Callable[[Sequence[Image.Image]], "np.ndarray"]

FEATURES = ("vgg19", "hed-vgg16", "color-hist")


def color_histogram(images: Sequence[Image.Image], bins: int = 8) -> np.ndarray:
    """Joint RGB histogram, square-rooted so cosine similarity is the Bhattacharyya coefficient.

    Cheap and weight-free; captures palette, not content. Used by tests and as an explicit option.
    """
    out = np.empty((len(images), bins**3), np.float64)
    for i, im in enumerate(images):
        q = (np.asarray(im.convert("RGB"), np.uint16) * bins) // 256
        idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
        hist = np.bincount(idx.ravel(), minlength=bins**3).astype(np.float64)
        out[i] = np.sqrt(hist / max(hist.sum(), 1.0))
    return out


def _pool_output(out):
    """Global average pool of a feature network's deepest output (tensor, list/tuple or dict)."""
    import torch

    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        out = out[-1]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"feature network returned {type(out).__name__}, expected a tensor")
    if out.ndim == 4:
        out = out.mean(dim=(2, 3))
    return out.reshape(out.shape[0], -1)


class TorchFeatureExtractor:
    """Wrap a torch module taking images in [-1, 1] (B, 3, S, S) into an Extractor."""

    def __init__(self, module, *, image_size: int = 224, device: str = "cpu"):
        self.module = module.to(device).eval()
        self.image_size = int(image_size)
        self.device = device

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        s = self.image_size
        # Squash to a square like the training loader does (resize, no crop): the whole image counts.
        batch = np.stack([np.asarray(im.convert("RGB").resize((s, s), Image.BICUBIC)) for im in images])
        x = from_uint8(batch)
        with torch.inference_mode():
            feats = _pool_output(self.module(x.to(self.device)))
        return feats.float().cpu().numpy()


def make_extractor(
    features: str = "vgg19",
    *,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    image_size: int = 224,
) -> Extractor:
    """Named extractor: 'vgg19' (default), 'hed-vgg16' (substitute) or 'color-hist' (no network)."""
    if features == "color-hist":
        return color_histogram
    if features not in FEATURES:
        raise ValueError(f"unknown features {features!r}; choose from {', '.join(FEATURES)}")
    try:
        import matebit.third_party as third_party
    except ImportError as exc:
        raise MissingDependencyError(f"deep features need matebit.third_party ({exc})") from None
    if features == "vgg19":
        loader = getattr(third_party, "load_vgg19", None)
        if loader is None:
            raise MissingDependencyError("matebit.third_party has no load_vgg19")
        try:
            module = loader(weights) if weights else loader()
        except FileNotFoundError:
            if weights:
                where = f"at {weights}"
            elif hasattr(third_party, "hub_checkpoint_path"):
                where = f"(expected {third_party.hub_checkpoint_path('vgg19')})"
            else:
                where = "in the torch hub cache"
            raise ConvertError(
                f"VGG19 weights not found {where}; pass --weights FILE, or --features hed-vgg16 "
                "to use HED's VGG16 trunk as a named substitute"
            ) from None
    else:
        loader = getattr(third_party, "load_hed_vgg16_features", None)
        if loader is None:
            raise MissingDependencyError("matebit.third_party has no load_hed_vgg16_features")
        module = loader(weights) if weights else loader()
    return TorchFeatureExtractor(module, image_size=image_size, device=device)


def list_images(folder: Union[str, os.PathLike]) -> dict[str, Path]:
    """stem -> path for the images directly in folder; two files sharing a stem is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConvertError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_dir() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            if p.stem in found:
                raise ConvertError(f"{p}: same stem as {found[p.stem]}; stems must be unique")
            if any(c.isspace() for c in p.stem):
                raise ConvertError(f"{p}: stems with spaces cannot be written to a pairs file")
            found[p.stem] = p
    return found


def extract_features(
    paths: Sequence[Path], extractor: Extractor, *, batch_size: int = 16, progress: bool = True, desc: str = "features"
) -> np.ndarray:
    from matebit.progress import progress as progress_bar

    chunks = []
    bar = progress_bar(len(paths), desc, "images", quiet=not progress)
    try:
        for start in range(0, len(paths), batch_size):
            group = paths[start : start + batch_size]
            images = [read_rgb(p, ConvertError) for p in group]
            feats = np.asarray(extractor(images), dtype=np.float64)
            if feats.ndim != 2 or feats.shape[0] != len(group):
                raise ValueError(f"extractor returned shape {feats.shape} for {len(group)} images; expected (N, D)")
            chunks.append(feats)
            bar.update(len(group))
    finally:
        bar.close()
    return np.concatenate(chunks, axis=0)


def rank_exemplars(
    query_feats: np.ndarray,
    query_stems: Sequence[str],
    cand_feats: np.ndarray,
    cand_stems: Sequence[str],
    k: int,
    *,
    exclude_self: bool = True,
) -> dict[str, list[str]]:
    """Top-k candidates per query by cosine similarity, best first.

    Ties are broken by candidate stem (ascending) so the output does not depend on file order;
    with exclude_self, a candidate with the query's own stem is never chosen.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    order = np.argsort(np.asarray(cand_stems, dtype=object), kind="stable")
    cstems = [cand_stems[i] for i in order]
    c = np.asarray(cand_feats, np.float64)[order]
    q = np.asarray(query_feats, np.float64)
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"feature sizes differ: {q.shape[1]} vs {c.shape[1]}")
    c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    pos = {s: i for i, s in enumerate(cstems)}
    n = len(cstems)
    kk = min(k, n - 1 if exclude_self and any(s in pos for s in query_stems) else n)
    if kk < 1:
        raise ConvertError("need at least two images for retrieval")
    if kk < k:
        warnings.warn(f"only {kk} candidates per query; writing {kk} exemplars instead of {k}", stacklevel=2)
    result: dict[str, list[str]] = {}
    rows = max(1, (1 << 22) // max(n, 1))  # bound the similarity block to about 32 MB
    for start in range(0, len(q), rows):
        sims = q[start : start + rows] @ c.T
        for r in range(sims.shape[0]):
            stem = query_stems[start + r]
            s = sims[r]
            if exclude_self and stem in pos:
                s[pos[stem]] = -np.inf
            # Keep every candidate tied with the kk-th best, then order by (-sim, stem index).
            cut = np.partition(s, n - kk)[n - kk]
            cand = np.flatnonzero(s >= cut)
            cand = cand[np.lexsort((cand, -s[cand]))][:kk]
            result[stem] = [cstems[i] for i in cand]
    return result


def retrieve(
    src_dir: Union[str, os.PathLike],
    *,
    k: int = 5,
    features: str = "vgg19",
    extractor: Extractor | None = None,
    ref_dir: Union[str, os.PathLike, None] = None,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    image_size: int = 224,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, list[str]]:
    """For every image in src_dir, its k most similar exemplars (stems), best first.

    ref_dir: draw exemplars from another folder (e.g. photos -> paintings); default src_dir itself.
    extractor: any Extractor; overrides `features`.
    """
    queries = list_images(src_dir)
    same = ref_dir is None or Path(ref_dir).resolve() == Path(src_dir).resolve()
    cands = queries if same else list_images(ref_dir)
    if not queries:
        raise ConvertError(f"{src_dir}: no images ({' '.join(IMAGE_EXTENSIONS)})")
    if not cands:
        raise ConvertError(f"{ref_dir}: no images ({' '.join(IMAGE_EXTENSIONS)})")
    if extractor is None:
        extractor = make_extractor(features, weights=weights, device=device, image_size=image_size)
    qstems = list(queries)
    qf = extract_features([queries[s] for s in qstems], extractor, batch_size=batch_size, progress=progress)
    if same:
        cstems, cf = qstems, qf
    else:
        cstems = list(cands)
        cf = extract_features([cands[s] for s in cstems], extractor, batch_size=batch_size,
                              progress=progress, desc="exemplar features")
    # Self-exclusion only makes sense when queries and candidates are the same files.
    return rank_exemplars(qf, qstems, cf, cstems, k, exclude_self=same)


def write_pairs(pairs: dict[str, Sequence[str]], path: Union[str, os.PathLike]) -> Path:
    """Write the pairs file atomically, one line per query, sorted by stem."""
    text = "".join(f"{stem} {' '.join(pairs[stem])}\n" for stem in sorted(pairs))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_pairs(path: Union[str, os.PathLike]) -> dict[str, list[str]]:
    """Parse a pairs file back into {stem: [exemplar stems]}."""
    out: dict[str, list[str]] = {}
    for n, line in enumerate(read_text(path, error=ConvertError).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise ConvertError(f"{path}:{n}: expected '<stem> <exemplar> ...', got {line.strip()!r}")
        out[parts[0]] = parts[1:]
    return out


def build_pairs_file(src_dir, out_path, **kwargs) -> dict[str, list[str]]:
    """retrieve(src_dir, **kwargs) and write the result to out_path, which may not be one of the images read."""
    inputs = {p: "SRC" for p in list_images(src_dir).values()}
    if kwargs.get("ref_dir") is not None:
        inputs.update({p: "--ref-dir" for p in list_images(kwargs["ref_dir"]).values()})
    check_outputs({"DST": out_path}, inputs, error=ConvertError)
    pairs = retrieve(src_dir, **kwargs)
    write_pairs(pairs, out_path)
    return pairs
