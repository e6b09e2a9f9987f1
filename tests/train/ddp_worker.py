"""Run by torchrun from test_train.py: train a tiny model on 2 CPU ranks (gloo), dump each rank's state."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from matebit.config import apply_overrides, experiment_preset
from matebit.train import train

data, out = sys.argv[1], Path(sys.argv[2])
torch.set_num_threads(1)
cfg = apply_overrides(experiment_preset("tiny"), [
    "train.image_size=32", "train.batch_size=2", "train.steps=4", "train.checkpoint_every=4", "train.log_every=2",
    "train.image_every=100", "loss.early_steps=3"])
trainer = train(cfg, data, out / "run", progress=False, num_workers=0)
rank = dist.get_rank()
torch.save({k: v for k, v in trainer.queue.state_dict().items()}, out / f"queue-{rank}.pt")
torch.save({k: v.detach() for k, v in trainer.generator.named_parameters()}, out / f"g-{rank}.pt")
dist.destroy_process_group()
