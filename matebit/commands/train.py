"""`matebit train`: a preset or config file, `--set` overrides, then `matebit.train.train`.

    matebit train --preset paper --data DATA --out runs/celeba
    matebit train --out runs/celeba --data DATA --resume [--set train.steps=200000]
    torchrun --nproc_per_node 4 -m matebit train --preset paper --data DATA --out runs/celeba

`--resume` continues the run in `--out` with its own saved config (`<out>/config.json`): `--set` values that differ
from it are refused naming the field (equal values are fine), except `train.steps`, which may be raised to continue
a finished run longer (see `matebit.checkpoint.RESUME_MAY_CHANGE`). A folder without a checkpoint has nothing to resume.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from matebit.errors import InputError, Terminated


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help="model and loss preset (default paper; see `matebit info`)")
    p.add_argument("--data", required=True, help="data folder: images/, structure/, optional pairs.txt")
    p.add_argument("--out", required=True, help="run folder for checkpoints, logs and the final model")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=8 --set model.n_mat_blocks=2")
    p.add_argument("--config", help="a config.json to start from instead of a preset")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint, with its saved config")
    p.add_argument("--perceptual", choices=["vgg19", "hed-vgg16"],
                   help="perceptual network; hed-vgg16 is a named offline substitute for VGG19")
    p.add_argument("--vgg19-weights", metavar="FILE",
                   help="torchvision's vgg19-dcbb9e9d.pth, if it is not in the torch hub cache (as in `matebit eval`)")
    p.add_argument("--vgg19-path", dest="vgg19_weights", help=argparse.SUPPRESS)  # the earlier name
    p.add_argument("--lpips-weights", metavar="FILE",
                   help="the LPIPS backbone of the structure loss, torchvision's vgg16-397923af.pth, if it is not in "
                        "the torch hub cache")
    p.add_argument("--workers", type=int, help="data loader worker processes")
    p.add_argument("--skip-bad-files", action="store_true",
                   help="leave out data files that cannot be used (listed on stderr and in log.jsonl) instead of "
                        "stopping before step 1")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads (default: the cores other processes leave free, re-chosen every few seconds "
                        "while training; a fixed N keeps a run's arithmetic repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (on a terminal a bar; in a log a line "
                                                         "every few seconds)")


def _read_config(path: Path):
    from matebit.config import ExperimentConfig, from_json
    from matebit.io import read_text

    return from_json(ExperimentConfig, read_text(path), where=str(path))


def _resumed_config(args: argparse.Namespace, overrides: list[str]):
    """The run's saved config with the --set values applied, refusing any that change it."""
    from matebit.config import apply_overrides
    from matebit.checkpoint import check_resumable, checkpoint_config, latest_checkpoint

    out = Path(args.out)
    if not out.is_dir():
        raise InputError(f"{out}: no such run folder; --resume continues a run in an existing folder")
    newest = latest_checkpoint(out)
    if newest is None:
        raise InputError(f"{out}: no checkpoint to resume from; run without --resume to start a new run there")
    saved_config, step = checkpoint_config(newest)
    if (out / "config.json").is_file():
        saved_config = _read_config(out / "config.json")
    if args.preset is not None and args.preset != saved_config.preset:
        raise InputError(f"--preset {args.preset}: the run in {out} uses preset {saved_config.preset!r}; --resume "
                         f"restores the run's config, so drop --preset")
    base = _read_config(Path(args.config)) if args.config else saved_config
    check_resumable(saved_config, step, apply_overrides(base, overrides), f"--resume {out}")
    return apply_overrides(saved_config, overrides)


def _refuse_ignored_network(args: argparse.Namespace, cfg) -> None:
    """--perceptual / --vgg19-weights name a network that only the perceptual, contextual, structure and VGG terms
    use."""
    w = cfg.loss
    if (args.perceptual or args.vgg19_weights) and not (w.perceptual or w.contextual or w.structure
                                                        or w.vgg_feature_matching or w.gram_style):
        flag = "--perceptual" if args.perceptual else "--vgg19-weights"
        raise InputError(f"{flag}: the {w.recipe!r} loss recipe of preset {cfg.preset!r} has no perceptual, "
                         f"contextual or structure term, so no perceptual network would be used; enable one with "
                         f"--set loss.perceptual=1 (or drop {flag})")


def main(args: argparse.Namespace) -> int:
    from matebit.runlock import RunLock

    if os.environ.get("RANK", "0") == "0":  # rank 0 holds the lock; say a busy folder before the heavy imports
        RunLock(Path(args.out)).check()
    import torch.distributed as dist

    from matebit.config import apply_overrides, experiment_preset
    from matebit.io import check_outputs
    from matebit.train import is_main, train

    # Image grids, checkpoints and the model go under --out: inside the data set they would become its files.
    check_outputs(out_folders={"--out": args.out}, in_folders={args.data: "--data"}, nested=False)

    overrides = list(args.overrides)
    if args.perceptual:
        overrides.append(f"loss.perceptual_network={args.perceptual}")
    if args.vgg19_weights:
        overrides.append(f"loss.vgg19_path={args.vgg19_weights}")
    if args.lpips_weights:
        overrides.append(f"loss.lpips_backbone_path={args.lpips_weights}")
    if args.resume:
        cfg = _resumed_config(args, overrides)
    else:
        base = _read_config(Path(args.config)) if args.config else experiment_preset(args.preset or "paper")
        cfg = apply_overrides(base, overrides)
    _refuse_ignored_network(args, cfg)
    from matebit import speed

    speed.configure_cpu_threads(args.threads)  # then re-chosen while training (matebit.speed.ThreadGovernor)
    main_rank = True
    # SIGTERM (kill, a scheduler's stop) ends the run like Ctrl-C (exit 130): the run lock is released on the way out.
    in_main_thread = threading.current_thread() is threading.main_thread()
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        train(cfg, args.data, Path(args.out), resume_run=args.resume, num_workers=args.workers,
              progress=not args.quiet, skip_bad_files=args.skip_bad_files)
        main_rank = is_main()  # asked before the process group is gone
    except RuntimeError as exc:
        # SIGTERM to the process group reaches the data loader's workers too, and a worker that dies of it first
        # makes the loader raise this instead of our Terminated: the same stop, said the same way.
        if "killed by signal: Terminated" in str(exc):
            raise Terminated from None
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if dist.is_initialized():
            dist.destroy_process_group()
    if main_rank:
        print(f"done: model in {Path(args.out) / 'model'}, logs in {args.out}")
    return 0


_MAIN_PID = -1  # the process that installed _interrupt


def _interrupt(signum, frame):
    if os.getpid() != _MAIN_PID:
        # A data loader worker, forked with this handler: it dies of the signal as a worker does, and the loader's
        # "killed by signal: Terminated" is then an interruption of the run (main, above).
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated  # not KeyboardInterrupt: see matebit.errors.Terminated
