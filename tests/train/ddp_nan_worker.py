"""Run by torchrun from test_train.py: 2 CPU ranks (gloo) where only rank 1 sees a non-finite loss at step 1."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from matebit.config import apply_overrides, experiment_preset
from matebit.errors import TrainingError
from matebit.losses.objective import Objective
from matebit.train import train

data, out, policy = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
cfg = apply_overrides(experiment_preset("tiny"), [
    "train.image_size=32", "train.batch_size=2", "train.steps=3", "train.checkpoint_every=3", "train.log_every=1",
    "train.image_every=100", f"train.nan_policy={policy}"])

real_loss = Objective.generator_loss
calls = {"n": 0}


def poisoned(self, *args, **kwargs):
    losses, total = real_loss(self, *args, **kwargs)
    calls["n"] += 1
    if dist.get_rank() == 1 and calls["n"] == 2:  # the second step, on one rank only
        total = total * float("nan")
    return losses, total


Objective.generator_loss = poisoned
try:
    trainer = train(cfg, data, out / "run", progress=False, num_workers=0)
except TrainingError as exc:
    print(f"rank {dist.get_rank()}: stopped: {exc}", flush=True)
    dist.destroy_process_group()
    sys.exit(3)
rank = dist.get_rank()
torch.save({k: v.detach() for k, v in trainer.generator.named_parameters()}, out / f"g-{rank}.pt")
dist.destroy_process_group()
