"""Train MATEBIT: one process, or many with DDP.

    matebit train --preset paper --data DATA --out runs/celeba      (matebit/commands/train.py)
    torchrun --nproc_per_node 4 -m matebit train --preset paper --data DATA --out runs/celeba

Every iteration: one generator step with every loss of the chosen recipe (Sec. 3.4, Eq. 14), then one
discriminator step (hinge, Eq. 13). Adam with beta = (0, 0.999), TTUR (G 1e-4, D 4e-4) for the whole run,
then a linear decay to zero (Sec. 4). Checkpoints are safetensors + JSON, written atomically; a resumed run
continues exactly where the checkpoint left off (same data order, same queue, same optimiser state).

Here: the loop, the `Trainer` state, checkpoint files, run logs, image grids, the run folder's lock and the data
check before step 1. The losses are `matebit.losses.objective.Objective`, the data order
`matebit.data.sampler.StreamSampler`.

A run folder is locked while a run uses it (`<out>/.lock`, the PID and host of the run): a second run into it stops
at once naming the PID; a lock left by a run that was killed (its PID no longer runs on this host) is reported and
taken over. Every data file of the train and validation splits is read before step 1; a bad one stops the run
naming it, or is left out with `skip_bad_files`. A resumed run must keep its config: only `RESUME_MAY_CHANGE` may
differ from the checkpoint's (`train.steps` to continue a finished run longer, never below the checkpoint's step).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from matebit.config import ExperimentConfig, from_json, to_dict, to_json
from matebit.data.sampler import SeededItems, StreamSampler
from matebit.errors import DataError, PathError, TrainingError, UserError, first_line
from matebit.losses import LossNetworks, Objective, StyleQueue
from matebit.io import atomic_write_bytes, write_error
from matebit.runlock import RunLock
from matebit.models import MATEBITGenerator, MultiscaleDiscriminator


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _all_ranks(ok: bool, device: torch.device) -> bool:
    """`ok` and-ed over every rank (a no-op in one process)."""
    if not dist.is_initialized():
        return ok
    flag = torch.tensor([int(ok)], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


class GeneratorSide(nn.Module):
    """Everything the generator step computes with G's weights, in one forward, so DDP sees one call.

    Returns the generator output, E_B(x_B) for the alignment loss and z(x̂_B) for the contrastive loss.
    """

    def __init__(self, generator: MATEBITGenerator, need_align: bool, need_style: bool, need_rows: bool = False):
        super().__init__()
        self.generator = generator
        self.need_align, self.need_style, self.need_rows = need_align, need_style, need_rows

    def forward(self, structure: Tensor, exemplar: Tensor, target: Tensor):
        out = self.generator(structure, exemplar, with_rows=self.need_rows)
        feats_b = self.generator.encode_exemplar(target)[0] if self.need_align else None
        z_fake = self.generator.encode_style(out.image) if self.need_style else None
        return out, feats_b, z_fake


# ---------------------------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """G, D, their optimisers and schedules, the contrastive queue and the step: one training iteration at a time."""

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str = "cpu",
                 nets: LossNetworks | None = None):
        self.cfg, self.device = cfg, torch.device(device)
        w = cfg.loss
        # Pretrained loss networks first: a missing weight file should stop the run before anything else.
        self.nets = nets if nets is not None else LossNetworks.from_config(cfg, self.device)
        self.generator = MATEBITGenerator(cfg.model).to(self.device)
        self.discriminator = MultiscaleDiscriminator(cfg.model).to(self.device)
        self.queue = StyleQueue(cfg.model.style_dim, w.queue_size).to(self.device)
        self.use_style = bool(w.style) and cfg.model.global_style
        self.g_side = GeneratorSide(self.generator, bool(w.align), self.use_style,
                                    need_rows=bool(w.match) and cfg.model.n_mat_blocks > 0)
        self.d_side = self.discriminator
        if dist.is_initialized():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_side = nn.parallel.DistributedDataParallel(self.g_side, device_ids=ids)
            self.d_side = nn.parallel.DistributedDataParallel(self.discriminator, device_ids=ids)
        t = cfg.train
        if t.compile:
            # The G side (G, E_B on the target, the style encoder) and D as compiled graphs; the loss networks and
            # the optimisers stay eager. Weights are shared with self.generator / self.discriminator, which is what
            # checkpoints save.
            self.g_side = torch.compile(self.g_side)
            self.d_side = torch.compile(self.d_side)
        # One fused kernel per optimizer step: on CUDA, and on CPU too, where the default per-tensor loop took 8.3 ms
        # of the demo's ~190 ms step against 1.6 ms fused (G's 240 tensors and D's, 2 cores, scratch A/B run).
        fused = self.device.type in ("cuda", "cpu")
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2), fused=fused)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2),
                                      fused=fused)
        # TTUR holds for the whole run (the released code resets both rates to 2e-4 after the first epoch);
        # both rates decay linearly to 0 between decay_start and steps.
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, self.lr_factor)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, self.lr_factor)
        self.step = 0
        if t.precision == "bf16" or (t.precision == "auto" and self.device.type == "cuda"):
            self.autocast = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        else:
            self.autocast = nullcontext
        self.objective = Objective(w, self.nets, self.discriminator, self.queue, self.use_style, self.device,
                                   self.autocast, critic=self.d_side, networks_autocast=t.loss_networks_autocast)

    def lr_factor(self, step: int) -> float:
        t = self.cfg.train
        if step < t.decay_start or t.steps <= t.decay_start:
            return 1.0
        return max(0.0, 1.0 - (step - t.decay_start) / (t.steps - t.decay_start))

    # -- one iteration ----------------------------------------------------------------------------------------

    def generator_losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, object]:
        """G's forward on `batch`, then the objective's terms and total; also (output, z of the fake)."""
        with self.autocast():
            out, feats_b, z_fake = self.g_side(batch["structure"], batch["exemplar"], batch["image"])
        losses, total = self.objective.generator_loss(batch, (out, feats_b, z_fake))
        return losses, total, (out, z_fake)

    def _check_finite(self, losses: dict[str, Tensor], total: Tensor) -> bool:
        """Whether every rank's loss is finite. Decided together: under DDP a rank that skipped a backward (or
        stopped) while the others ran it would leave them waiting in the gradient all-reduce forever."""
        local = bool(torch.isfinite(total))
        if _all_ranks(local, self.device):
            return True
        if local:
            bad = "on another rank"
        else:
            bad = ", ".join(k for k, v in losses.items() if not torch.isfinite(v)) or "total"
        if self.cfg.train.nan_policy == "stop":
            raise TrainingError(f"step {self.step}: non-finite loss ({bad}); stopping before any weight "
                                f"is updated (set train.nan_policy=skip to skip such steps)")
        return False

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        batch = {k: (v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v)
                 for k, v in batch.items()}
        self.generator.train()
        self.discriminator.train()
        log: dict[str, float] = {}
        # Generator step
        losses, total, (out, z_fake) = self.generator_losses(batch)
        g_ok = self._check_finite(losses, total)
        self.opt_g.zero_grad(set_to_none=True)
        if g_ok:
            total.backward()
            if self._grads_finite(self.generator):
                self.opt_g.step()
            else:
                g_ok = self._check_finite({"gradient": torch.tensor(float("nan"))}, torch.tensor(float("nan")))
        if self.use_style and g_ok:  # a skipped step's codes may be the non-finite ones: keep them out of the queue
            self.queue.policy_enqueue(self.cfg.loss.negatives, self.step, self.cfg.loss.early_steps,
                                      z_generated=z_fake.detach().float(), z_exemplar=out.z.detach().float())
        # Discriminator step
        d_loss = None
        if self.cfg.loss.adversarial or self.cfg.loss.gan_feature_matching:
            d_loss = self.objective.discriminator_loss(batch, out.image)
            self.opt_d.zero_grad(set_to_none=True)
            if self._check_finite({"discriminator": d_loss}, d_loss):
                d_loss.backward()
                if self._grads_finite(self.discriminator):
                    self.opt_d.step()
        self.sched_g.step()
        if d_loss is not None:
            self.sched_d.step()
        self.step += 1
        log.update({f"loss/{k}": float(v.detach()) for k, v in losses.items()})
        log["loss/g_total"] = float(total.detach())
        if d_loss is not None:
            log["loss/d_hinge"] = float(d_loss.detach())
        log["lr/g"] = self.opt_g.param_groups[0]["lr"]
        log["skipped"] = float(not g_ok)
        self.last_output = out
        return log

    def _grads_finite(self, net: nn.Module) -> bool:
        # One fused pass per device and dtype: the check GradScaler runs before an optimiser step, with a scale of
        # 1 (x * 1.0 is x, so the gradients are unchanged). On the demo's 240 gradient tensors it takes 0.3 ms
        # against 6.5 ms for an isfinite per tensor (2 CPU cores, 2026-12-02), about 3 % of the demo's step.
        groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for p in net.parameters():
            if p.grad is not None:
                groups.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        for (device, _), grads in groups.items():
            found = torch.zeros(1, device=device)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones(1, device=device))
            if found.item():
                return False
        return True

    # -- state ------------------------------------------------------------------------------------------------

    def state_tensors(self) -> tuple[dict[str, Tensor], dict]:
        """Everything needed to continue exactly: weights, optimiser moments, queue, RNG, step."""
        tensors: dict[str, Tensor] = {}
        for prefix, module in (("G", self.generator), ("D", self.discriminator), ("queue", self.queue)):
            for k, v in module.state_dict().items():
                tensors[f"{prefix}.{k}"] = v.detach().contiguous().cpu()
        meta = {"step": self.step, "config": to_dict(self.cfg), "optimizers": {}}
        for name, opt, sched in (("opt_g", self.opt_g, self.sched_g), ("opt_d", self.opt_d, self.sched_d)):
            sd = opt.state_dict()
            for pid, st in sd["state"].items():
                for k, v in st.items():
                    tensors[f"{name}.{pid}.{k}"] = torch.as_tensor(v).detach().contiguous().cpu()
            meta["optimizers"][name] = {"param_groups": sd["param_groups"], "scheduler": sched.state_dict()}
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        return tensors, meta

    def load_state_tensors(self, tensors: dict[str, Tensor], meta: dict, source: str = "checkpoint") -> None:
        for prefix, module in (("G", self.generator), ("D", self.discriminator), ("queue", self.queue)):
            part = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            try:
                module.load_state_dict(part, strict=True)
            except RuntimeError as exc:
                raise TrainingError(f"{source}: {prefix} weights do not fit this config "
                                    f"({first_line(exc)})") from None
        for name, opt, sched in (("opt_g", self.opt_g, self.sched_g), ("opt_d", self.opt_d, self.sched_d)):
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
        self.step = int(meta["step"])


def build_training(cfg: ExperimentConfig, device: torch.device | str = "cpu",
                   nets: LossNetworks | None = None) -> Trainer:
    """The trainer on its own (benchmarks and tests drive `train_step` with their own batches)."""
    return Trainer(cfg, device, nets)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_dir(out: Path) -> Path:
    return out / "checkpoints"


def save_checkpoint(trainer: Trainer, out: Path) -> Path:
    from safetensors import SafetensorError

    from matebit.checkpoint import save_pretrained, save_tensors

    tensors, meta = trainer.state_tensors()
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

    from matebit.errors import CheckpointError

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


def resume(trainer: Trainer, out: Path) -> bool:
    from matebit.checkpoint import load_tensors

    path = latest_checkpoint(out)
    if path is None:
        return False
    tensors, meta = load_tensors(path)
    saved = from_json(ExperimentConfig, json.dumps(meta["config"]), where=str(path))
    check_resumable(saved, int(meta["step"]), trainer.cfg, str(path))
    trainer.load_state_tensors(tensors, meta, str(path))
    return True


# ---------------------------------------------------------------------------------------------------------------
# Logging


def append_log(path: Path, records: list[dict]) -> None:
    """Append JSON lines to a run's log; a failed write (a full disk) is a PathError naming the file."""
    try:
        with open(path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
    except OSError as exc:
        raise write_error(path, exc) from None


class RunLog:
    """JSONL + TensorBoard scalars + image grids, on rank 0 only."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.out = out
        self.tb = None
        if enabled:
            (out / "images").mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:  # tensorboard is a dependency, but logging must never stop training
                self.tb = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        append_log(self.out / "log.jsonl", [{"step": step, **values}])
        if self.tb:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def images(self, step: int, batch: dict[str, Tensor], out) -> None:
        if not self.enabled:
            return
        grid = image_grid(batch, out)
        import torchvision

        path = self.out / "images" / f"step-{step:08d}.png"
        try:
            torchvision.utils.save_image(grid, path)
        except OSError as exc:  # a full disk: name the file, as the checkpoint writes do
            raise write_error(path, exc) from None
        if self.tb:
            self.tb.add_image("samples", grid, step)

    def close(self) -> None:
        if self.tb:
            self.tb.close()


GRID_ROWS = ("structure", "exemplar", "warped (last MAT)", "X_uncor weight (white = no match)", "output", "target")


def image_grid(batch: dict[str, Tensor], out, max_items: int = 4) -> Tensor:
    """Rows: structure, exemplar, warped exemplar, X_uncor weight, output, target (all in [0, 1]), each named in a
    strip on the left; the two MAT rows only when the model has MAT blocks."""
    import torch.nn.functional as F

    n = min(max_items, batch["image"].shape[0])
    size = batch["image"].shape[-2:]

    def rgb(x):
        x = x[:n].detach().float().cpu()
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]

    def up(x):
        return F.interpolate(x, size=size, mode="nearest")

    rows = [rgb(batch["structure"]), rgb(batch["exemplar"] * 0.5 + 0.5)]
    names = list(GRID_ROWS[:2])
    if out.warped:
        rows += [up(rgb(out.warped[-1] * 0.5 + 0.5)), up(rgb(out.uncor_weight[-1]))]
        names += GRID_ROWS[2:4]
    rows += [rgb(out.image * 0.5 + 0.5), rgb(batch["image"] * 0.5 + 0.5)]
    names += GRID_ROWS[4:]
    import torchvision

    padding = 2
    grid = torchvision.utils.make_grid(torch.cat(rows).clamp(0, 1), nrow=n, padding=padding)
    strip = _label_strip(names, grid.shape[1], int(size[0]), padding)
    return torch.cat([strip, grid], dim=2)


def _label_strip(names: list[str], height: int, row_height: int, padding: int) -> Tensor:
    """A (3, height, width) strip, white on black, with each name beside its row of a make_grid grid (wrapped to
    the strip's width; a row too low for every line shows the first ones)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    font_px = max(8, min(12, row_height // 4))
    font = ImageFont.load_default(size=font_px)
    width = max(64, 7 * font_px + 24)
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    line_px = font_px + 2
    for r, name in enumerate(names):
        lines: list[str] = []
        for word in name.split():
            if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width - 8:
                lines[-1] += f" {word}"
            else:
                lines.append(word)
        top = padding + r * (row_height + padding)
        fit = max(1, row_height // line_px)
        lines = lines[:fit]
        y = top + max(0, (row_height - len(lines) * line_px) // 2)
        for line in lines:
            draw.text((4, y), line, fill=255, font=font)
            y += line_px
    strip = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
    return strip.expand(3, -1, -1).clone()


# ---------------------------------------------------------------------------------------------------------------
# The loop


VERIFY_PROGRESS_FROM = 200  # data sets with at least this many pairs show a progress bar while verified


def open_datasets(cfg: ExperimentConfig, data_root: str):
    """(train split, validation split or None when it is empty) of the paired-folder data set."""
    from matebit.data import DataConfig, PairedFolderDataset
    from matebit.data.warp import WarpConfig

    t = cfg.train
    warp = WarpConfig(rotation=t.warp_rotation, scale=t.warp_zoom, translation=t.warp_shift)
    data_cfg = DataConfig(root=data_root, size=t.image_size, structure_channels=cfg.model.structure_channels,
                          exemplar_rate=t.exemplar_rate, flip=t.flip, seed=t.seed, warp=warp,
                          recolour_background=t.recolour_background,
                          recolour_target=t.recolour_target)
    val = PairedFolderDataset(data_cfg, "val", allow_empty=True)
    return PairedFolderDataset(data_cfg, "train"), (val if len(val) else None)


def verify_data(datasets, skip_bad: bool = False, quiet: bool = False) -> list[tuple[Path, str]]:
    """Read every file of the given splits before step 1 (see PairedFolderDataset.verify); the bad files."""
    from matebit.progress import progress

    bad: dict[Path, str] = {}
    for ds in datasets:
        bar = progress(len(ds), f"verify {ds.split}", "pairs", quiet=quiet or len(ds) < VERIFY_PROGRESS_FROM)
        try:
            bad.update(ds.verify(skip_bad=skip_bad, progress=bar))
        finally:
            bar.close()
        if not len(ds):
            raise DataError(f"{ds.cfg.root}: no usable pairs left in the {ds.split} split after skipping bad files")
    return list(bad.items())


def make_loader(cfg: ExperimentConfig, data_root: str, start_step: int, num_workers: int | None = None,
                dataset=None):
    """The training DataLoader from `start_step` on; `dataset` is the (verified) train split, else opened here."""
    t = cfg.train
    dataset = dataset if dataset is not None else open_datasets(cfg, data_root)[0]
    sampler = StreamSampler(len(dataset), t.batch_size, t.seed, start_step, *world())
    workers = t.num_workers if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(SeededItems(dataset), batch_size=t.batch_size, sampler=sampler,
                                         num_workers=workers, pin_memory=torch.cuda.is_available(),
                                         persistent_workers=workers > 0, drop_last=True)
    return loader


def _from_worker(exc: UserError) -> UserError:
    """A DataLoader worker's error comes back as 'Caught DataError in DataLoader worker process 0. Original
    Traceback ...'; give back the original one-line message instead."""
    text = str(exc).strip()
    if not text.startswith("Caught "):
        return exc
    last = text.splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
    return type(exc)(last[len(prefix):] if last.startswith(prefix) else last)


def setup_distributed() -> torch.device:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def train(cfg: ExperimentConfig, data_root: str, out: Path, resume_run: bool = False,
          device: torch.device | None = None, max_steps: int | None = None, progress: bool = True,
          num_workers: int | None = None, skip_bad_files: bool = False) -> Trainer:
    """Run (or continue) training until cfg.train.steps, or `max_steps` more steps for tests.

    The run folder is locked for the run; every data file is read before step 1 (`skip_bad_files`: bad ones are
    left out and listed); `progress=False` prints no progress bars.
    """
    device = device or setup_distributed()
    out = Path(out)
    lock = RunLock(out) if is_main() else None
    if lock is not None:
        lock.acquire()
    try:
        return _train(cfg, data_root, out, resume_run, device, max_steps, progress, num_workers, skip_bad_files)
    finally:
        if lock is not None:
            lock.release()


def _build_trainer(cfg: ExperimentConfig, device: torch.device) -> Trainer:
    try:
        return Trainer(cfg, device)
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "alloc" not in str(exc).lower() and "memory" not in str(exc).lower():
            raise
        raise TrainingError(f"not enough memory to build this model ({first_line(exc)}); make it smaller "
                            f"(model.base_channels, model.feature_channels, ...)") from None


def _train(cfg: ExperimentConfig, data_root: str, out: Path, resume_run: bool, device: torch.device,
           max_steps: int | None, progress: bool, num_workers: int | None, skip_bad_files: bool) -> Trainer:
    rank, world_size = world()
    if resume_run and latest_checkpoint(out) is None:
        raise TrainingError(f"{out}: no checkpoint to resume from; run without --resume to start a new run there")
    if not resume_run and latest_checkpoint(out) is not None:
        raise TrainingError(f"{out}: holds checkpoints of an earlier run; pass --resume to continue it, "
                            f"or choose another --out")
    datasets = open_datasets(cfg, data_root)
    skipped = verify_data([d for d in datasets if d is not None], skip_bad_files, quiet=not (progress and is_main()))
    if skipped and is_main():
        for path, message in skipped:
            print(f"matebit train: skipped bad file: {message}", file=sys.stderr)
        print(f"matebit train: skipped {len(skipped)} bad file(s) (--skip-bad-files); training on "
              f"{len(datasets[0])} pairs", file=sys.stderr)
    torch.manual_seed(cfg.train.seed + rank)
    random.seed(cfg.train.seed + rank)
    log = RunLog(out, is_main())
    trainer = _build_trainer(cfg, device)
    if resume_run and resume(trainer, out):
        if is_main():
            print(f"resumed from step {trainer.step}")
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "config.json", to_json(cfg).encode())
        described = trainer.nets.describe()
        records = [{"event": "start", "step": trainer.step, "world_size": world_size, "device": str(device),
                    "loss_networks": described}]
        if skipped:
            records.append({"event": "skipped_bad_files", "step": trainer.step, "files": [str(p) for p, _ in skipped],
                            "reasons": [m for _, m in skipped]})
        append_log(out / "log.jsonl", records)
        if any("substitute" in v for v in described.values()):
            print("note: using substitute loss networks: " + ", ".join(f"{k}={v}" for k, v in described.items()))
    end = cfg.train.steps if max_steps is None else min(cfg.train.steps, trainer.step + max_steps)
    loader = make_loader(cfg, data_root, trainer.step, num_workers, dataset=datasets[0])
    from matebit.progress import progress as progress_bar
    from matebit.speed import thread_governor

    # A terminal gets a tqdm bar; a log gets a compact line every few seconds (matebit.progress).
    bar = progress_bar(end, "train", "steps", quiet=not (progress and is_main()), initial=trainer.step)
    governor = thread_governor(device)  # re-chooses CPU threads as other processes come and go (CLI runs)
    t_last, n_last = time.perf_counter(), trainer.step
    batches = iter(loader)
    saved_step = trainer.step
    try:
        while trainer.step < end:
            try:
                batch = next(batches)
            except UserError as exc:  # a file that went bad after it was verified
                error = _from_worker(exc)
                if trainer.step > saved_step and is_main() and not dist.is_initialized():
                    save_checkpoint(trainer, out)
                    raise type(error)(f"{error}; stopped at step {trainer.step} (checkpoint saved); fix the file "
                                      f"and rerun with --resume") from None
                raise error from None
            values = trainer.train_step(batch)
            step = trainer.step
            bar.update(1)
            if governor is not None:
                governor.tick()
            if step % cfg.train.log_every == 0 or step == end:
                now = time.perf_counter()
                images = (step - n_last) * cfg.train.batch_size * world_size
                values["images_per_s"] = images / max(now - t_last, 1e-9)
                t_last, n_last = now, step
                if governor is not None:
                    values["threads"] = float(torch.get_num_threads())
                log.scalars(step, values)
                shown = {k.split("/")[-1]: f"{v:.3g}" for k, v in values.items() if k.startswith("loss/")}
                shown["img/s"] = f"{values['images_per_s']:.1f}"
                bar.set_postfix(shown, refresh=False)
            if step % cfg.train.image_every == 0 or step == end:
                log.images(step, batch, trainer.last_output)
            if step % cfg.train.checkpoint_every == 0 or step == end:
                if is_main():
                    save_checkpoint(trainer, out)
                saved_step = step
                if dist.is_initialized():
                    dist.barrier()
    finally:  # an error message must start on its own line, not after the progress bar
        bar.close()
        log.close()
    return trainer
