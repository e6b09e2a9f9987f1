"""Models shipped inside the package, and writing one: `matebit/weights/<name>/`.

A shipped model is a model folder (`model.safetensors` stored in fp16 or bf16, `config.json`, `README.md`), installed
as package data, so it works offline and is found with `importlib.resources`; nothing is ever downloaded.

    from matebit.inference import Translator
    Translator.from_pretrained("faces-hed-128")        # a shipped name, or any model folder
    matebit models                                      # what ships: name, size, structure, licence, folder
    matebit export runs/faces-hed-128/model faces-hed-128                 # write one (fp16, <= 25 MB)

The model card (`README.md`) starts with a front matter block of `key: value` lines between two `---` lines
(name, description, licence, structure, trained_size, ...; see `CARD_KEYS`), read by `matebit models`, `matebit demo
--faces` and `matebit translate`; the rest is the card a person reads: data, split, command, config, figures, limits,
attribution. Weights load into the fp32 model as they are (`load_state_dict` casts bf16/fp16 up).

Storage precision: fp16 by default. Both halve the file; fp16 keeps 3 more mantissa bits, and the weights of these
models lie far inside its range. Measured on the `tiny` preset at random init (32x32, a seeded random pair):
outputs in [-1, 1] move by mean 0.004 / max 0.034 with fp16 weights, 0.051 / 0.55 with bf16 (alpha = 100 in the
correspondence softmax magnifies weight rounding). `export_model` measures this for the model it writes and puts it
on the card (`storage_check`).

This module reaches only the model-folder code (`matebit.checkpoint`), so `Translator` can use it.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from matebit.errors import CheckpointError, InputError

__all__ = ["CARD_KEYS", "MAX_SHIPPED_MB", "ShippedModel", "weights_root", "shipped_names", "shipped_models",
           "shipped_model", "resolve_model", "read_card_meta", "card_front_matter", "export_model"]

# A model folder's record of how its inputs were made from photos (matebit.image_processor.ProcessorConfig).
PROCESSOR_FILE = "preprocessor_config.json"
MAX_SHIPPED_MB = 25.0  # a shipped model is at most 25 MB
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Front matter keys of a shipped card, in the order they are written.
CARD_KEYS = ("name", "description", "licence", "structure", "structure_settings", "trained_size", "preset", "params",
             "dtype", "data", "attribution")
_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def weights_root() -> Path:
    """The folder that holds the shipped models (this package's own folder; tests point it elsewhere)."""
    return Path(str(importlib.resources.files(__name__)))


def _is_model_folder(p: Path) -> bool:
    return p.is_dir() and not p.name.startswith((".", "_")) and (p / "model.safetensors").is_file() \
        and (p / "config.json").is_file()


def shipped_names() -> list[str]:
    """Names of the shipped models, sorted."""
    root = weights_root()
    return sorted(p.name for p in root.iterdir() if _is_model_folder(p)) if root.is_dir() else []


# --------------------------------------------------------------------------------------------------------------
# Model cards


def card_front_matter(meta: Mapping[str, Any]) -> str:
    """The `---` block of a card: known keys first (CARD_KEYS order), then the others; one line per key."""
    keys = [k for k in CARD_KEYS if k in meta] + sorted(k for k in meta if k not in CARD_KEYS)
    lines = ["---"]
    for k in keys:
        value = " ".join(str(meta[k]).split())  # one line, whatever was given
        lines.append(f"{k}: {value}")
    return "\n".join(lines + ["---", ""])


def _split_card(text: str) -> tuple[dict[str, str], str]:
    """(front matter, body) of a card; ({}, text) when it has none."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text
    meta = {}
    for i, line in enumerate(lines[1:], 1):
        if line.strip() == "---":
            return meta, "\n".join(lines[i + 1:]).lstrip("\n")
        key, sep, value = line.partition(":")
        if sep and key.strip():
            meta[key.strip()] = value.strip()
    return {}, text  # no closing line: not front matter


def _read_card(path: Path) -> str | None:
    """A card's text; None when there is no such file. A card that is there but cannot be read (a FIFO, a device,
    not UTF-8) is an error naming it."""
    from matebit.io import present, read_text

    if not present(path):
        return None
    return read_text(path, error=CheckpointError)


def read_card_meta(folder: str | Path) -> dict[str, str]:
    """The front matter of `folder/README.md` ({} when there is none or no card)."""
    text = _read_card(Path(folder) / "README.md")
    return _split_card(text)[0] if text is not None else {}


# --------------------------------------------------------------------------------------------------------------
# Listing


@dataclass
class ShippedModel:
    """One shipped model, as `matebit models` lists it (from its card, config and safetensors header)."""

    name: str
    folder: Path
    params: int
    dtype: str
    file_mb: float
    trained_size: int | None
    structure: str
    licence: str
    description: str
    meta: dict[str, str] = field(default_factory=dict)


def _header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes), read without loading the tensors."""
    import struct

    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            return json.loads(fh.read(n))
    except (OSError, ValueError, struct.error) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def _trained_size(folder: Path) -> int | None:
    from matebit.io import read_json

    data = read_json(folder / "config.json", error=CheckpointError)
    try:
        size = data.get("train", {}).get("image_size")
    except AttributeError:
        return None
    return size if isinstance(size, int) else None


def _describe(folder: Path) -> ShippedModel:
    meta = read_card_meta(folder)
    header = _header(folder / "model.safetensors")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    params = 0  # without a count on the card: every tensor of the file (buffers too)
    for v in tensors.values():
        n = 1
        for d in v.get("shape", []):
            n *= d
        params += n
    if meta.get("params", "").isdigit():
        params = int(meta["params"])
    dtypes = sorted({v.get("dtype", "?") for v in tensors.values() if v.get("dtype", "").startswith(("F", "BF"))})
    size = meta.get("trained_size")
    return ShippedModel(
        name=folder.name, folder=folder, params=params, dtype="/".join(dtypes),
        file_mb=(folder / "model.safetensors").stat().st_size / 1e6,  # MB of 10^6 bytes, as the cards say
        trained_size=int(size) if size and size.isdigit() else _trained_size(folder),
        structure=meta.get("structure", "?"), licence=meta.get("licence", "not stated"),
        description=meta.get("description", ""), meta=meta)


def shipped_models() -> list[ShippedModel]:
    """Every shipped model, sorted by name."""
    return [_describe(weights_root() / n) for n in shipped_names()]


def _names_text() -> str:
    names = shipped_names()
    return f"shipped: {', '.join(names)}" if names else "this installation ships no model yet"


def shipped_model(name: str) -> ShippedModel:
    if name not in shipped_names():
        raise CheckpointError(f"{name}: not a shipped model ({_names_text()})")
    return _describe(weights_root() / name)


def resolve_model(name_or_path: str | Path) -> Path:
    """The model folder meant: an existing path is that path; else a shipped model's name is its package folder;
    else a CheckpointError that lists the shipped names. Never downloads.

    A shipped model's bare name also wins over a local folder of that name that is not a model folder (no
    config.json): `matebit recipe faces --out runs/faces-hed-128` leaves such a run folder, and
    `--model faces-hed-128` from `runs/` then meant the shipped model but failed on the run folder."""
    path = Path(name_or_path).expanduser()
    name = str(name_or_path)
    if not name.strip():  # Path("") is the current folder, which is not what an empty name asked for
        raise CheckpointError("an empty model name; give a model folder or a shipped model's name (`matebit models`)")
    shipped = _NAME.match(name) is not None and name in shipped_names()
    run_folder_of_that_name = shipped and path.is_dir() and not (path / "config.json").is_file()
    if path.exists() and not run_folder_of_that_name:
        return path
    if shipped:
        return weights_root() / name
    raise CheckpointError(f"{name_or_path}: no such model folder, and no shipped model of that name "
                          f"({_names_text()}; `matebit models` lists them)")


# --------------------------------------------------------------------------------------------------------------
# Export


def _storage_check(generator: Any, state: dict[str, Any], size: int) -> tuple[float, float]:
    """(mean, max) |output difference| between the fp32 generator and one loaded from `state`, on a seeded random
    pair at size x size."""
    import copy

    import torch

    g = torch.Generator().manual_seed(0)
    c = generator.config
    structure = torch.rand(1, c.structure_channels, size, size, generator=g)
    exemplar = torch.rand(1, c.image_channels, size, size, generator=g) * 2 - 1
    stored = copy.deepcopy(generator)
    stored.load_state_dict(state)
    with torch.no_grad():
        diff = (generator.eval()(structure, exemplar).image - stored.eval()(structure, exemplar).image).abs()
    return float(diff.mean()), float(diff.max())


def export_model(model_dir: str | Path, name: str, dtype: str = "fp16", card: str | None = None,
                 meta: Mapping[str, Any] | None = None, root: str | Path | None = None,
                 max_mb: float = MAX_SHIPPED_MB, overwrite: bool = False) -> Path:
    """Write `root/name/` (default root: `weights_root()`) from a trained model folder: the weights cast to bf16 or
    fp16, its config.json, and the model card.

    card: the card's text; default: `model_dir/README.md`, which must carry front matter (the face recipe writes
    one; the placeholder card of a plain training run is refused: a shipped model states its data and licence).
    The front matter gets `name`, `dtype` and `params` filled in, and `meta` (if given) added. Refuses a file over
    `max_mb` MB, an invalid name, and an existing folder unless `overwrite`.
    """
    import torch
    from safetensors.torch import save_file

    from matebit import __version__
    from matebit.checkpoint import load_pretrained
    from matebit.io import atomic_directory, check_outputs

    if not _NAME.match(name):
        raise InputError(f"{name!r}: a model name is lower-case letters, digits, '.', '_' and '-' (at most 64)")
    if dtype not in _DTYPES:
        raise InputError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    model_dir = Path(model_dir)
    generator, _ = load_pretrained(model_dir)  # checks the folder as any user's load would
    if card is None:
        card = _read_card(model_dir / "README.md") or ""
    front, body = _split_card(card)
    if not front or not body.strip():
        raise InputError(f"{model_dir / 'README.md'}: not a model card with front matter (data, licence, "
                         f"attribution); pass card=... (`--card FILE`), e.g. the card `matebit recipe faces` writes")
    target_dtype = getattr(torch, _DTYPES[dtype])
    state = {k: (v.to(target_dtype) if v.is_floating_point() else v).detach().contiguous().cpu()
             for k, v in generator.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise InputError(f"{name}: {bad[0]} does not fit {dtype} (values beyond its range); try the other dtype")
    params = sum(p.numel() for p in generator.parameters())
    size = _trained_size(model_dir) or 64
    size = max(16, size // 16 * 16)
    mean, most = _storage_check(generator, state, size)
    front = {**front, **{k: str(v) for k, v in (meta or {}).items()}, "name": name, "dtype": dtype,
             "params": str(params),
             "storage_check": f"{dtype} weights vs fp32 move outputs (range [-1, 1]) by mean {mean:.4f}, max "
                              f"{most:.4f} on a seeded random pair at {size}x{size}"}
    for key in ("licence", "description", "structure"):
        if not front.get(key):
            raise InputError(f"the model card's front matter needs a {key!r} line")
    root = Path(root) if root is not None else weights_root()
    target = root / name
    check_outputs(out_folders={"NAME": target}, in_folders={model_dir: "MODEL_DIR"})  # it replaces target whole
    if target.exists() and not overwrite:
        raise InputError(f"{target}: exists; pass overwrite=True (`--force`) to replace it")
    from matebit.io import read_text

    config_text = read_text(model_dir / "config.json", error=CheckpointError)
    processor = model_dir / PROCESSOR_FILE
    processor_text = read_text(processor, error=CheckpointError) if processor.is_file() else None
    with atomic_directory(target) as tmp:
        save_file(state, str(tmp / "model.safetensors"),
                  metadata={"format": "pt", "matebit_version": __version__, "dtype": dtype, "name": name})
        mb = (tmp / "model.safetensors").stat().st_size / 1e6
        if mb > max_mb:
            raise InputError(f"{name}: the weights take {mb:.1f} MB in {dtype}, over the {max_mb:g} MB a shipped "
                             f"model may take; ship a smaller model")
        front["file_mb"] = f"{mb:.2f} (MB, 10^6 bytes)"
        front["sha256"] = file_sha256(tmp / "model.safetensors")
        (tmp / "config.json").write_text(config_text, encoding="utf-8")
        if processor_text is not None:
            (tmp / PROCESSOR_FILE).write_text(processor_text, encoding="utf-8")
        (tmp / "README.md").write_text(card_front_matter(front) + "\n" + body.rstrip() + "\n", encoding="utf-8")
    return target


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
