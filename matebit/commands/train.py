"""`matebit train`: a preset or config file, `--set` overrides, then `matebit.train.train`.

    matebit train --preset paper --data DATA --out runs/celeba
    torchrun --nproc_per_node 4 -m matebit train --preset paper --data DATA --out runs/celeba
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matebit.errors import InputError, first_line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="paper", help="model and loss preset (see `matebit info`)")
    p.add_argument("--data", required=True, help="data folder: images/, structure/, optional pairs.txt")
    p.add_argument("--out", required=True, help="run folder for checkpoints, logs and the final model")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=8 --set model.n_mat_blocks=2")
    p.add_argument("--config", help="a config.json to start from instead of a preset")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--perceptual", choices=["vgg19", "hed-vgg16"],
                   help="perceptual network; hed-vgg16 is a named offline substitute for VGG19")
    p.add_argument("--vgg19-path", help="path to torchvision's vgg19-dcbb9e9d.pth if it is not in the hub cache")
    p.add_argument("--workers", type=int, help="data loader worker processes")


def main(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from matebit.config import ExperimentConfig, apply_overrides, experiment_preset, from_json
    from matebit.train import is_main, train

    if args.config:
        path = Path(args.config)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read the config ({first_line(exc)})") from None
        cfg = from_json(ExperimentConfig, text, where=str(path))
    else:
        cfg = experiment_preset(args.preset)
    overrides = list(args.overrides)
    if args.perceptual:
        overrides.append(f"loss.perceptual_network={args.perceptual}")
    if args.vgg19_path:
        overrides.append(f"loss.vgg19_path={args.vgg19_path}")
    cfg = apply_overrides(cfg, overrides)
    main_rank = True
    try:
        train(cfg, args.data, Path(args.out), resume_run=args.resume, num_workers=args.workers)
        main_rank = is_main()  # asked before the process group is gone
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if main_rank:
        print(f"done: model in {Path(args.out) / 'model'}, logs in {args.out}")
    return 0
