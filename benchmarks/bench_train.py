"""One full training iteration (G step with every loss of the preset's recipe, then D step), in images/s.

    python benchmarks/bench_train.py --device cuda --sizes 256 512 --batches 8 16
    python benchmarks/bench_train.py --quick                          # CPU: 256, batch 1, 2 runs
    python benchmarks/bench_train.py --preset faces --sizes 128 --batches 8 --runs 0 --flops --losses 3

Drives `matebit.train.build_training(cfg, device, nets).train_step(batch)` with random batches. The VGG19, HED and
LPIPS networks are random stand-ins with the real architectures (no weights offline; speed does not depend on
the values), and the JSON says so. Everything random is drawn after `torch.manual_seed(--seed)`, so two runs of the
same code give the same numbers.

`--flops` counts one step's FLOPs (torch.utils.flop_counter.FlopCounterMode: matmuls and convolutions, forward and
backward); `--losses N` records every loss of N consecutive steps from a fresh trainer as `repr` strings (all
digits); `--save-grads FILE` writes G's gradients of the first of them. Both run before the timing, on their own trainer. `--code DIR` imports matebit from another checkout (an
earlier commit, see bench_train_before_after.py) and measures it with this script. Writes results/train-<device>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import header, measure, notes, print_table, write_json  # noqa: E402


def stand_in_networks(cfg, device):
    """Random-weight VGG19 / HED / LPIPS with the real layer shapes, built only for the terms the recipe uses."""
    from matebit.losses import LossNetworks

    try:
        from matebit import third_party
    except ImportError:  # a checkout from before the module's rename (--code)
        from matebit import pretrained as third_party

    nets, names = LossNetworks(), {}
    w = cfg.loss
    if w.perceptual or w.contextual or w.vgg_feature_matching or w.gram_style:
        if w.perceptual_network == "vgg19":
            nets.perceptual = third_party.VGGFeatures(third_party._BACKBONES["vgg19"](),
                                                      third_party._ImageNetNormalize(), name="vgg19 (random stand-in)")
        else:
            nets.perceptual = third_party.VGGFeatures([m for m in third_party.HED().trunk.values()],
                                                      third_party._CaffeBGR(), name="hed-vgg16 (random stand-in)")
        names["perceptual"] = nets.perceptual.name
    if w.structure:
        nets.hed = third_party._freeze(third_party.HED())
        names["hed"] = "HED (random stand-in)"
        nets.lpips = third_party.load_lpips(random_backbone=True)
        names["lpips"] = f"{nets.lpips.name} (random stand-in)"
    for key in ("perceptual", "hed", "lpips"):
        if getattr(nets, key) is not None:
            setattr(nets, key, getattr(nets, key).to(device).eval())
    return nets, names


def random_batch(cfg, batch: int, size: int, device):
    from matebit.data.warp import WarpConfig, warp_grid

    g = torch.Generator().manual_seed(batch * 7 + size)
    m = cfg.model
    return {
        "structure": torch.rand(batch, m.structure_channels, size, size, generator=g).to(device),
        "exemplar": (torch.rand(batch, m.image_channels, size, size, generator=g) * 2 - 1).to(device),
        "image": (torch.rand(batch, m.image_channels, size, size, generator=g) * 2 - 1).to(device),
        "self_ref": (torch.rand(batch, generator=g) < 0.5).to(device),
        # The demo recipe's loss.match reads the self-exemplar warp's grid (random here like everything else).
        "warp_grid": warp_grid(batch, size, size, g, WarpConfig()).float().to(device),
    }


def seeded_trainer(cfg, device, seed: int, attention: str):
    """Stand-in loss networks and a trainer, both drawn from `seed`."""
    from matebit.train import build_training

    torch.manual_seed(seed)
    nets, stand_ins = stand_in_networks(cfg, device)
    trainer = build_training(cfg, device, nets)
    if attention != "auto":
        trainer.generator.set_attention(attention)
    return trainer, stand_ins


def flops_and_losses(cfg, device, seed: int, attention: str, data, steps: int, flops: bool,
                     grads: Path | None = None) -> dict:
    """FLOPs of the first step and the losses of `steps` steps (at least one when only FLOPs are asked for); G's
    gradients of the first step into the safetensors file `grads`."""
    from torch.utils.flop_counter import FlopCounterMode

    trainer, stand_ins = seeded_trainer(cfg, device, seed, attention)
    found: dict = {"losses": []}
    for i in range(max(steps, 1)):
        if i == 0 and flops:
            with FlopCounterMode(display=False) as counter:
                log = trainer.train_step(data)
            found["flops_per_step"] = counter.get_total_flops()
        else:
            log = trainer.train_step(data)
        if i == 0 and grads is not None:  # G's gradients of the first step are still there (the next clears them)
            from safetensors.torch import save_file

            save_file({n: p.grad.detach().contiguous() for n, p in trainer.generator.named_parameters()
                       if p.grad is not None}, str(grads))
        found["losses"].append({k: repr(v) for k, v in sorted(log.items()) if k.startswith("loss/")})
    if not steps:
        del found["losses"]
    return found, stand_ins


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    p.add_argument("--set", dest="overrides", nargs="*", default=[],
                   help="config overrides, e.g. train.precision=fp32")
    p.add_argument("--attention", default="auto", choices=("auto", "reference", "fused"),
                   help="which implementation computes the correspondence (a runtime setting, not in the config)")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed before the networks are built")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--runs", type=int, default=None, help="timed steps (0: no timing)")
    p.add_argument("--flops", action="store_true", help="count one step's FLOPs (FlopCounterMode)")
    p.add_argument("--losses", type=int, default=0, metavar="N", help="record every loss of N steps")
    p.add_argument("--save-grads", type=Path, default=None, metavar="FILE",
                   help="with --losses: G's gradients of the first step, as safetensors")
    p.add_argument("--code", type=Path, default=REPO, help="the checkout whose matebit is measured (default this one)")
    p.add_argument("--quick", action="store_true", help="CPU-sized: 256, batch 1, 1 warm-up, 2 runs")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    sys.path.insert(0, str(args.code.resolve()))
    from matebit.config import apply_overrides, experiment_preset

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.quick:
        args.sizes, args.batches = [256], [1]
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    runs = args.runs if args.runs is not None else (10 if gpu else 2)

    cfg = apply_overrides(experiment_preset(args.preset), args.overrides)
    rows, stand_ins = [], {}
    for size in args.sizes:
        for batch in args.batches:
            row = dict(size=size, batch=batch, precision=cfg.train.precision, attention=args.attention)
            data = random_batch(cfg, batch, size, device)
            if args.flops or args.losses:
                found, stand_ins = flops_and_losses(cfg, device, args.seed, args.attention, data, args.losses,
                                                    args.flops, args.save_grads)
                row.update(found)
            if runs:
                trainer, stand_ins = seeded_trainer(cfg, device, args.seed, args.attention)
                losses = {}

                def step():
                    losses.update(trainer.train_step(data))

                m = measure(step, device, warmup, runs)
                if m is None:
                    rows.append({**row, "note": "out of memory"})
                    continue
                t = m.pop("median_s")
                row.update(ms_per_iter=t * 1e3, min_ms_per_iter=m.pop("min_s") * 1e3, images_per_s=batch / t,
                           loss_terms=sorted(losses), **m)
                del trainer
            rows.append(row)
            print_table([row], ["size", "batch", "precision", "ms_per_iter", "min_ms_per_iter", "images_per_s",
                                "peak_mib", "flops_per_step"])
    print()
    print_table(rows, ["size", "batch", "precision", "attention", "ms_per_iter", "min_ms_per_iter", "images_per_s",
                       "peak_mib", "flops_per_step", "note"])
    record = header(device, preset=args.preset, overrides=args.overrides, seed=args.seed, code=str(args.code),
                    loss_networks=stand_ins,
                    loss_networks_note="random stand-ins with the real architectures: no pretrained weights offline",
                    **notes(device),
                    results=rows)
    print("wrote", write_json("train", device, record, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
