"""Model files: safetensors weights + JSON config, written atomically (`matebit.io`) and loaded strictly.

A saved model is a folder::

    model.safetensors   the generator's state_dict (parameters and buffers), nothing pickled
    config.json         the ExperimentConfig or ModelConfig, with a "_class" key saying which
    README.md           a model card: preset, parameter count, training notes, licence slot

Nothing in this module unpickles: there is no torch.load here, and a pickle or zip file offered as
weights is refused by its first bytes before any reader sees it. Loading is strict: a missing key,
an unexpected key or a wrong shape is a `CheckpointError` naming the file and what differs.

Training checkpoints (`save_checkpoint`, `resume`) hold a run's whole state (weights, optimizer moments, queue,
RNG, step) as safetensors with a JSON-valued `__metadata__` header (`save_tensors` / `load_tensors`); the newest
`train.keep_checkpoints` are kept, and a resumed run may change only `RESUME_MAY_CHANGE`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor

from matebit.bounds import parse_json
from matebit.config import ConfigError, ExperimentConfig, ModelConfig, from_dict, from_json, to_dict
from matebit.errors import CheckpointError, PathError, TrainingError, first_line
from matebit.io import atomic_directory, atomic_write, missing_reason, open_regular, present, read_text

PathLike = Union[str, os.PathLike]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
_CONFIG_CLASSES = {"ExperimentConfig": ExperimentConfig, "ModelConfig": ModelConfig}

# --------------------------------------------------------------------------------------------------------------
# Safetensors with checks


def _sniff(path: Path) -> None:
    """Refuse pickles/zips and anything that is not a safetensors header, from the first bytes only."""
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise CheckpointError(f"{path}: a PyTorch pickle file ({path.suffix}); matebit never unpickles "
                              f"weights, it reads safetensors only (save with matebit.checkpoint.save_pretrained)")
    with open_regular(path, error=CheckpointError) as fh:  # a FIFO or a device is refused, never waited on
        head = fh.read(9)
        size = os.fstat(fh.fileno()).st_size
    # A safetensors header is JSON from byte 8 on; only without that can the first bytes be a zip ("PK") or a pickle
    # (0x80): an 8-byte header length whose low byte is 0x80 (or whose low bytes read "PK") is legitimate.
    if head[8:9] != b"{" and (head[:2] == b"PK" or head[:1] == b"\x80"):
        raise CheckpointError(f"{path}: is a pickle/zip file (torch.save format), not safetensors; "
                              f"matebit never unpickles weights")
    if len(head) < 9:
        raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > size - 8 or head[8:9] != b"{":
        raise CheckpointError(f"{path}: not a safetensors file (bad header)")


def _prepare(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors; a tensor sharing storage with an earlier one is cloned
    (safetensors refuses aliases, e.g. tied weights or views saved under two names)."""
    out, seen = {}, set()
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"tensor {name!r}: expected a torch.Tensor, got {type(t).__name__}")
        t = t.detach().to("cpu")
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[name] = t.contiguous()
    return out


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    _sniff(path)
    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except Exception as exc:  # safetensors raises its own error types for truncation and bad headers
        msg = first_line(exc)
        raise CheckpointError(f"{path}: cannot read safetensors file ({msg})") from None
    return tensors, meta


def save_tensors(path: PathLike, tensors: dict[str, Tensor],
                 metadata: dict[str, Any] | None = None) -> Path:
    """Write `tensors` to a safetensors file atomically; each metadata value is stored JSON-encoded."""
    from safetensors.torch import save_file

    meta = {}
    for key, value in (metadata or {}).items():
        try:
            meta[str(key)] = json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metadata {key!r}: not JSON-serialisable ({exc})") from None
    prepared = _prepare(tensors)
    return atomic_write(path, lambda tmp: save_file(prepared, str(tmp), metadata=meta))


def load_tensors(path: PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a file written by `save_tensors`: (tensors on CPU, metadata with JSON values decoded).
    Metadata values that are not JSON (files from other tools) are returned as plain strings."""
    tensors, raw = _read_safetensors(Path(path))
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return tensors, meta


# --------------------------------------------------------------------------------------------------------------
# Pretrained model folders


def _preset_of(cfg: ExperimentConfig | ModelConfig) -> str:
    from matebit.config import PRESETS, model_preset

    model = cfg.model if isinstance(cfg, ExperimentConfig) else cfg
    for name in PRESETS:
        if model_preset(name) == model:
            return name
    return f"custom (based on {cfg.preset!r})" if isinstance(cfg, ExperimentConfig) else "custom"


def _model_card(cfg: ExperimentConfig | ModelConfig, n_params: int, card: str | None) -> str:
    from matebit import __version__

    model = cfg.model if isinstance(cfg, ExperimentConfig) else cfg
    lines = [
        "# MATEBIT generator",
        "",
        "Exemplar-based image translation (Jiang et al., *Masked and Adaptive Transformer for Exemplar Based "
        "Image Translation*, CVPR 2023), saved by matebit " + __version__ + ".",
        "",
        f"- preset: {_preset_of(cfg)}",
        f"- parameters: {n_params:,}",
        f"- structure channels: {model.structure_channels}; correspondence: {model.correspondence}; "
        f"MAT blocks: {model.n_mat_blocks}",
        f"- files: `{WEIGHTS_NAME}` (safetensors), `{CONFIG_NAME}`",
        "",
        "```python",
        "from matebit.inference import Translator",
        "translator = Translator.from_pretrained('path/to/this/folder')",
        "image = translator('structure.png', 'exemplar.jpg').image",
        "```",
        "",
        "## Training",
        "",
        card.strip() if card else "No training information was recorded.",
        "",
        "## Licence and attribution",
        "",
        "State the licence of these weights and of the data they were trained on here. Weights inherit the "
        "terms of their training data (e.g. CelebA-HQ and MetFaces are for non-commercial research).",
        "",
    ]
    return "\n".join(lines)


def save_pretrained(directory: PathLike, generator: torch.nn.Module, config: ExperimentConfig | ModelConfig,
                    card: str | None = None) -> Path:
    """Write `directory/{model.safetensors, config.json, README.md}`, replacing the folder atomically.

    `config` is the run's ExperimentConfig or just the ModelConfig; its model part must be the generator's.
    `card` is free text (training data, steps, metrics) put under the model card's "Training" heading.
    """
    from matebit import __version__

    if not isinstance(config, (ExperimentConfig, ModelConfig)):
        raise TypeError(f"config: expected ExperimentConfig or ModelConfig, got {type(config).__name__}")
    model_cfg = config.model if isinstance(config, ExperimentConfig) else config
    gen_cfg = getattr(generator, "config", None)
    if gen_cfg is not None and gen_cfg != model_cfg:
        raise ValueError("save_pretrained: the config's model section differs from the generator's config")
    state = _prepare(generator.state_dict())
    n_params = sum(p.numel() for p in generator.parameters())
    payload = {"_class": type(config).__name__, "_matebit_version": __version__, **to_dict(config)}
    header = {"format": "pt", "matebit_version": __version__, "config_class": type(config).__name__}

    from safetensors.torch import save_file

    with atomic_directory(directory) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata=header)
        (tmp / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / CARD_NAME).write_text(_model_card(config, n_params, card), encoding="utf-8")
    return Path(directory)


def load_config(directory: PathLike) -> ExperimentConfig | ModelConfig:
    """Read `directory/config.json` (with or without the "_class" key)."""
    path = Path(directory) / CONFIG_NAME
    if not present(path):
        raise CheckpointError(f"{path}: missing (a model folder needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    data = parse_json(read_text(path, error=CheckpointError), str(path), CheckpointError)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    cls_name = data.pop("_class", None)
    data.pop("_matebit_version", None)
    if cls_name is None:  # a plain to_json() dump: an experiment has a "model" section
        cls_name = "ExperimentConfig" if isinstance(data.get("model"), dict) else "ModelConfig"
    if cls_name not in _CONFIG_CLASSES:
        raise CheckpointError(f"{path}: unknown _class {cls_name!r}; expected one of {', '.join(_CONFIG_CLASSES)}")
    try:
        return from_dict(_CONFIG_CLASSES[cls_name], data, where=str(path))
    except ConfigError as exc:
        raise CheckpointError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def _names(keys: list[str], most: int = 3) -> str:
    shown = ", ".join(keys[:most])
    return shown + (", ..." if len(keys) > most else "")


def check_state_dict(expected: dict[str, Tensor], found: dict[str, Tensor], where: str) -> None:
    """Strict comparison of key sets and shapes; raises CheckpointError with the first differences."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key{'s' * (len(missing) > 1)} ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key{'s' * (len(unexpected) > 1)} ({_names(unexpected)})")
    if problems:
        raise CheckpointError(f"{where}: {'; '.join(problems)}; was it saved from a different model config?")
    for key in expected:  # state_dict order: report the first mismatch in network order
        if tuple(found[key].shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{where}: shape of {key} is {tuple(found[key].shape)}, the config expects "
                                  f"{tuple(expected[key].shape)}")
        if found[key].is_floating_point() != expected[key].is_floating_point():
            raise CheckpointError(f"{where}: dtype of {key} is {found[key].dtype}, expected {expected[key].dtype}")


def load_pretrained(directory: PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelConfig]:
    """Load a folder written by `save_pretrained`: (generator in eval mode on `device`, its ModelConfig)."""
    from matebit.models.generator import MATEBITGenerator

    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"{directory}: no such model folder")
    if not directory.is_dir():
        if directory.suffix.lower() in _PICKLE_SUFFIXES:
            _sniff(directory)  # raises the pickle refusal
        raise CheckpointError(f"{directory}: expected a model folder (with {CONFIG_NAME} and {WEIGHTS_NAME}), "
                              f"got a file")
    weights = directory / WEIGHTS_NAME
    if not present(weights):
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(f"{weights}: missing; found {_names(pickles)}, pickle file(s) matebit will not "
                                  f"load (it never unpickles weights)")
        raise CheckpointError(f"{weights}: missing (a model folder needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    if not weights.is_file():  # a FIFO, a device, a broken or looping link
        raise CheckpointError(f"{weights}: {missing_reason(weights)}")
    config = load_config(directory)
    model_cfg = config.model if isinstance(config, ExperimentConfig) else config
    state, _ = _read_safetensors(weights)
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # such weights only ever give black or NaN images
        raise CheckpointError(f"{directory}: the weights hold non-finite values (NaN or inf) in {len(bad)} "
                              f"tensor(s) ({_names(bad)}); the model is broken, use an earlier checkpoint")
    generator = MATEBITGenerator(model_cfg)
    check_state_dict(generator.state_dict(), state, str(weights))
    generator.load_state_dict(state, strict=True)
    return generator.to(device).eval(), model_cfg


# --------------------------------------------------------------------------------------------------------------
# Training checkpoints: the whole state of a run, their rotation, and what a resumed run may change.
# `trainer` is a matebit.train.Trainer (this module is read by inference too, so it does not import training code).


def training_state(trainer) -> tuple[dict[str, Tensor], dict]:
    """Everything needed to continue a run exactly: weights, optimiser moments, queue, RNG, step."""
    tensors: dict[str, Tensor] = {}
    for prefix, module in (("G", trainer.generator), ("D", trainer.discriminator), ("queue", trainer.queue)):
        for k, v in module.state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().contiguous().cpu()
    meta = {"step": trainer.step, "config": to_dict(trainer.cfg), "optimizers": {}}
    for name, opt, sched in (("opt_g", trainer.opt_g, trainer.sched_g), ("opt_d", trainer.opt_d, trainer.sched_d)):
        sd = opt.state_dict()
        for pid, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"{name}.{pid}.{k}"] = torch.as_tensor(v).detach().contiguous().cpu()
        meta["optimizers"][name] = {"param_groups": sd["param_groups"], "scheduler": sched.state_dict()}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    return tensors, meta


def load_training_state(trainer, tensors: dict[str, Tensor], meta: dict, source: str = "checkpoint") -> None:
    """Put `training_state`'s tensors and metadata back into `trainer`, strictly (a TrainingError names what does
    not fit)."""
    for prefix, module in (("G", trainer.generator), ("D", trainer.discriminator), ("queue", trainer.queue)):
        part = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        try:
            module.load_state_dict(part, strict=True)
        except RuntimeError as exc:
            raise TrainingError(f"{source}: {prefix} weights do not fit this config "
                                f"({first_line(exc)})") from None
    for name, opt, sched in (("opt_g", trainer.opt_g, trainer.sched_g), ("opt_d", trainer.opt_d, trainer.sched_d)):
        info = meta["optimizers"][name]
        state: dict[int, dict[str, Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith(name + "."):
                _, pid, key = k.split(".", 2)
                state.setdefault(int(pid), {})[key] = v
        opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
        sched.load_state_dict(info["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    trainer.step = int(meta["step"])


def checkpoint_dir(out: Path) -> Path:
    return out / "checkpoints"


def save_checkpoint(trainer, out: Path) -> Path:
    """`training_state` as out/checkpoints/step-NNNNNNNN.safetensors and the model as out/model, atomically; only the
    newest `train.keep_checkpoints` checkpoints are kept."""
    from safetensors import SafetensorError

    tensors, meta = training_state(trainer)
    folder = checkpoint_dir(out)
    path = folder / f"step-{trainer.step:08d}.safetensors"

    def failed(what: str, exc: BaseException) -> TrainingError:
        # A full disk or failed write (safetensors reports I/O errors as SafetensorError): the atomic writes
        # removed their temp files, so the newest complete checkpoint is what a --resume will find; without one
        # there is nothing to resume, and the same command starts the run again.
        cause = exc.__cause__ if isinstance(exc, PathError) and exc.__cause__ is not None else exc
        msg = getattr(cause, "strerror", None) or first_line(cause)  # io's PathError names the file again
        newest = latest_checkpoint(out) if folder.is_dir() else None
        kept = (f"the newest complete checkpoint is {newest}; free space and rerun with --resume" if newest else
                "no checkpoint was written, so there is nothing to resume; free space and rerun the same command")
        return TrainingError(f"step {trainer.step}: cannot write {what} ({msg}); stopping, {kept}")

    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_tensors(path, tensors, meta)  # atomic: a kill mid-write leaves the previous checkpoints intact
    except (OSError, SafetensorError) as exc:
        raise failed(f"checkpoint {path}", exc) from None
    try:
        save_pretrained(out / "model", trainer.generator, trainer.cfg,
                        card=f"Trained with `matebit train`, preset {trainer.cfg.preset}, step {trainer.step}.")
    except (OSError, SafetensorError) as exc:
        raise failed(f"the model folder {out / 'model'}", exc) from None
    keep = trainer.cfg.train.keep_checkpoints
    for old in sorted(folder.glob("step-*.safetensors"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(checkpoint_dir(out).glob("step-*.safetensors"))
    return found[-1] if found else None


# Config fields a resumed run may change: the length of the run, and where pretrained weights or workers come from.
RESUME_MAY_CHANGE = ("train.steps", "train.num_workers", "loss.vgg19_path", "loss.lpips_backbone_path", "preset")


def config_differences(a: ExperimentConfig, b: ExperimentConfig) -> list[tuple[str, object, object]]:
    """(dotted field, value in a, value in b) for every field where the two configs differ, in config order."""
    found = []
    for section in dataclasses.fields(a):
        x, y = getattr(a, section.name), getattr(b, section.name)
        if dataclasses.is_dataclass(x):
            found += [(f"{section.name}.{f.name}", getattr(x, f.name), getattr(y, f.name))
                      for f in dataclasses.fields(x) if getattr(x, f.name) != getattr(y, f.name)]
        elif x != y:
            found.append((section.name, x, y))
    return found


def checkpoint_config(path: Path) -> tuple[ExperimentConfig, int]:
    """The config and step stored in a checkpoint's header (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
        config, step = json.loads(meta["config"]), int(json.loads(meta["step"]))
    except Exception as exc:  # a header that is not ours: say which file
        raise CheckpointError(f"{path}: not a readable training checkpoint ({first_line(exc)})") from None
    return from_json(ExperimentConfig, json.dumps(config), where=str(path)), step


def check_resumable(saved: ExperimentConfig, step: int, cfg: ExperimentConfig, where: str) -> None:
    """Refuse a config that differs from the run's `saved` one outside RESUME_MAY_CHANGE, naming the field."""
    for name, old, new in config_differences(saved, cfg):
        if name not in RESUME_MAY_CHANGE:
            raise TrainingError(f"{where}: the run has {name}={json.dumps(old)}, this request {name}="
                                f"{json.dumps(new)}; a resumed run keeps its config (drop the value, or start a "
                                f"new run in another --out)")
    if cfg.train.steps < step:
        raise TrainingError(f"{where}: train.steps={cfg.train.steps} is below the checkpoint's step {step}")


def resume(trainer, out: Path) -> bool:
    """Load the newest checkpoint of `out` into `trainer` if there is one and the config may continue it."""
    path = latest_checkpoint(out)
    if path is None:
        return False
    tensors, meta = load_tensors(path)
    saved = from_json(ExperimentConfig, json.dumps(meta["config"]), where=str(path))
    check_resumable(saved, int(meta["step"]), trainer.cfg, str(path))
    load_training_state(trainer, tensors, meta, str(path))
    return True
