"""Train MATEBIT: one process, or many with DDP.

    matebit train --preset paper --data DATA --out runs/celeba      (matebit/commands/train.py)
    torchrun --nproc_per_node 4 -m matebit train --preset paper --data DATA --out runs/celeba

Every iteration: one generator step with every loss of the chosen recipe (Sec. 3.4, Eq. 14), then one
discriminator step (hinge, Eq. 13). Adam with beta = (0, 0.999), TTUR (G 1e-4, D 4e-4) for the whole run,
then a linear decay to zero (Sec. 4). A resumed run continues exactly where its checkpoint left off (same data
order, same queue, same optimiser state).

Here: the `Trainer` (G, D, optimisers, one step) and the loop. Around it: the losses in
`matebit.losses.objective.Objective`; the data splits, their check before step 1 and the loader in
`matebit.data.loader` (order: `matebit.data.sampler.StreamSampler`); checkpoints, their rotation and what a resumed
run may change in `matebit.checkpoint`; log.jsonl, TensorBoard and image grids in `matebit.runlog`; ranks in
`matebit.distributed`; the run folder's lock in `matebit.runlock` (a second run into a locked folder stops at once
naming the PID; a lock left by a killed run is reported and taken over).
"""

from __future__ import annotations

import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from matebit.checkpoint import latest_checkpoint, resume, save_checkpoint
from matebit.config import ExperimentConfig, to_json
from matebit.data.loader import from_worker, make_loader, open_datasets, verify_data
from matebit.distributed import all_ranks, is_main, setup_distributed, world
from matebit.errors import TrainingError, UserError, first_line
from matebit.io import atomic_write_bytes
from matebit.losses import LossNetworks, Objective, StyleQueue
from matebit.models import MATEBITGenerator, MultiscaleDiscriminator
from matebit.runlock import RunLock
from matebit.runlog import RunLog

VERIFY_PROGRESS_FROM = 200  # data sets with at least this many pairs show a progress bar while verified


# ---------------------------------------------------------------------------------------------------------------
# The trainer


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
        # One fused kernel per optimizer step: on CUDA, and on CPU too, where it is faster than the default
        # per-tensor loop (benchmarks/README.md, "Training steps on a CPU").
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
        if all_ranks(local, self.device):
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
        # 1 (x * 1.0 is x, so the gradients are unchanged): much cheaper than an isfinite per tensor
        # (benchmarks/README.md, "Training steps on a CPU").
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


def build_training(cfg: ExperimentConfig, device: torch.device | str = "cpu",
                   nets: LossNetworks | None = None) -> Trainer:
    """The trainer on its own (benchmarks and tests drive `train_step` with their own batches)."""
    return Trainer(cfg, device, nets)


# ---------------------------------------------------------------------------------------------------------------
# The loop


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
    skipped = verify_data([d for d in datasets if d is not None], skip_bad_files, quiet=not (progress and is_main()),
                          progress_from=VERIFY_PROGRESS_FROM)
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
        log.event("start", trainer.step, world_size=world_size, device=str(device), loss_networks=described)
        if skipped:
            log.event("skipped_bad_files", trainer.step, files=[str(p) for p, _ in skipped],
                      reasons=[m for _, m in skipped])
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
                error = from_worker(exc)
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
