"""One full training iteration (G step with every loss of the preset's recipe, then D step), in images/s.

    python benchmarks/bench_train.py --device cuda --sizes 256 512 --batches 8 16
    python benchmarks/bench_train.py --quick                          # CPU: 256, batch 1, 2 runs

Drives `matebit.train.build_training(cfg, device, nets).train_step(batch)` with random batches. The VGG19, HED and
LPIPS networks are random stand-ins with the real architectures (no weights offline; speed does not depend on
the values), and the JSON says so. Writes results/train-<device>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import header, measure, notes, print_table, write_json  # noqa: E402

from matebit.config import apply_overrides, experiment_preset  # noqa: E402
from matebit.data.warp import WarpConfig, warp_grid  # noqa: E402


def stand_in_networks(cfg, device):
    """Random-weight VGG19 / HED / LPIPS with the real layer shapes, built only for the terms the recipe uses."""
    from matebit import third_party
    from matebit.train import LossNetworks

    nets, names = LossNetworks(), {}
    w = cfg.loss
    if w.perceptual or w.contextual or w.vgg_feature_matching or w.gram_style:
        if w.perceptual_network == "vgg19":
            nets.perceptual = third_party.VGGFeatures(third_party._BACKBONES["vgg19"](), third_party._ImageNetNormalize(),
                                                     name="vgg19 (random stand-in)")
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    p.add_argument("--set", dest="overrides", nargs="*", default=[],
                   help="config overrides, e.g. train.precision=fp32 model.attention_impl=reference")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="CPU-sized: 256, batch 1, 1 warm-up, 2 runs")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    try:
        from matebit.train import build_training
    except ImportError:
        build_training = None
    if build_training is None:
        print("training step not available yet (matebit.train.build_training is missing)")
        return 0

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.quick:
        args.sizes, args.batches = [256], [1]
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    runs = args.runs if args.runs is not None else (10 if gpu else 2)

    cfg = apply_overrides(experiment_preset(args.preset), args.overrides)
    nets, stand_ins = stand_in_networks(cfg, device)
    rows = []
    for size in args.sizes:
        trainer = build_training(cfg, device, nets)
        for batch in args.batches:
            row = dict(size=size, batch=batch, precision=cfg.train.precision,
                       attention=cfg.model.attention_impl)
            data = random_batch(cfg, batch, size, device)
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
            rows.append(row)
            print_table([row], ["size", "batch", "precision", "ms_per_iter", "min_ms_per_iter", "images_per_s",
                                "peak_mib"])
        del trainer
    print()
    print_table(rows, ["size", "batch", "precision", "attention", "ms_per_iter", "min_ms_per_iter", "images_per_s",
                       "peak_mib", "note"])
    record = header(device, preset=args.preset, overrides=args.overrides, loss_networks=stand_ins,
                    loss_networks_note="random stand-ins with the real architectures: no pretrained weights offline",
                    **notes(device),
                    results=rows)
    print("wrote", write_json("train", device, record, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
