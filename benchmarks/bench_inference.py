"""Generator inference: latency (batch 1) and throughput (larger batches), memory, FLOPs and MFU.

    python benchmarks/bench_inference.py --quick                 # CPU: 256 and 512, batch 1, a few minutes
    python benchmarks/bench_inference.py --device cuda           # GPU: the full grid (see benchmarks/README.md)

Random weights and inputs (speed does not depend on them). Every configuration goes through
`matebit.speed.prepare_for_inference`, i.e. exactly what the inference code runs. Writes
benchmarks/results/inference-<device>.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _common import header, measure, notes, print_table, write_json  # noqa: E402

from matebit import speed  # noqa: E402
from matebit.config import model_preset  # noqa: E402
from matebit.models.generator import MATEBITGenerator  # noqa: E402


COLUMNS = ["size", "batch", "precision", "compile", "attention", "ms_per_image", "min_ms_per_image", "images_per_s",
           "peak_mib", "achieved_tflops"]


def inputs(cfg, batch: int, size: int, device: torch.device, channels_last: bool | None):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, cfg.structure_channels, size, size, generator=g)
    y = torch.rand(batch, cfg.image_channels, size, size, generator=g) * 2 - 1
    return (speed.channels_last_input(x.to(device), channels_last),
            speed.channels_last_input(y.to(device), channels_last))


def switch(value: int | None) -> bool | None:
    """A 0/1 command-line switch; None leaves speed.prepare_for_inference's default."""
    return None if value is None else bool(value)


def flops_per_image(cfg, size: int, device: torch.device) -> float:
    """FLOPs of one forward at batch 1 (matmuls and convolutions, as FlopCounterMode counts them), counted on the
    benchmark's device (a 1024x1024 fp32 forward on a GPU host's CPU would take longer than the benchmark)."""
    model = MATEBITGenerator(cfg).to(device).eval()
    x, y = inputs(cfg, 1, size, device, False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, y)
    return float(counter.get_total_flops())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--compile", nargs="+", default=["none", "default"],
                   choices=["none", "default", "reduce-overhead", "max-autotune"])
    p.add_argument("--attention", nargs="+", default=["reference", "fused"], choices=["reference", "fused", "auto"])
    p.add_argument("--channels-last", type=int, default=None,
                   help="1: NHWC weights and inputs (default: speed.inference_defaults, on CUDA only)")
    p.add_argument("--bake", type=int, default=None, help="1: bake spectral norm into the weights (default 1)")
    p.add_argument("--cast-weights", type=int, default=None, help="1: bf16 weights when precision is bf16 (default)")
    p.add_argument("--winograd", type=int, default=None, help="1: NNPACK Winograd for fp32 on CPU (default)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all usable cores)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--peak-flops", type=float, default=790e12,
                   help="device peak for MFU (default 790e12: H100/H200 bf16 dense, as measured in shared/bench)")
    p.add_argument("--quick", action="store_true",
                   help="CPU-sized run: 256 and 512, batch 1, eager, reference attention, 1 warm-up, 3 runs")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--name", default="inference")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cpu":
        speed.configure_cpu_threads(args.threads)
    if args.quick:
        args.sizes, args.batches = [256, 512], [1]
        args.compile, args.attention = ["none"], ["reference"]
    gpu = device.type == "cuda"
    warmup = args.warmup if args.warmup is not None else (10 if gpu else 1)
    runs = args.runs if args.runs is not None else (50 if gpu else 3)

    rows, flops_cache = [], {}
    for size, precision, mode, attn in itertools.product(args.sizes, args.precisions, args.compile, args.attention):
        cfg = model_preset(args.preset)
        base = dict(size=size, precision=precision, compile=mode, attention=attn)
        if attn == "fused" and not gpu:
            rows.append({**base, "note": "skipped: fused attention is CUDA only"})
            continue
        try:
            speed.resolve_precision(device, precision)
        except RuntimeError as exc:
            rows.append({**base, "note": f"skipped: {exc}"})
            continue
        if size not in flops_cache:
            flops_cache[size] = flops_per_image(cfg, size, device)
        generator = MATEBITGenerator(cfg)
        generator.set_attention(attn)
        model, ctx = speed.prepare_for_inference(
            generator, device, precision, channels_last=switch(args.channels_last), bake=switch(args.bake),
            compile_mode=None if mode == "none" else mode, cast_weights=switch(args.cast_weights),
            winograd=switch(args.winograd))
        for batch in args.batches:
            row = {**base, "batch": batch}
            x, y = inputs(cfg, batch, size, device, switch(args.channels_last))

            def step():
                with torch.inference_mode(), ctx:
                    model(x, y)

            m = measure(step, device, warmup, runs)
            if m is None:
                rows.append({**row, "note": "out of memory"})
                continue
            t, flops = m.pop("median_s"), flops_cache[size]
            row.update(ms_per_batch=t * 1e3, ms_per_image=t * 1e3 / batch,
                       min_ms_per_image=m.pop("min_s") * 1e3 / batch,
                       images_per_s=batch / t, gflops_per_image=flops / 1e9, achieved_tflops=flops * batch / t / 1e12,
                       **m)
            if "cpu_s" in row:
                row["cpu_s_per_image"] = row.pop("cpu_s") / batch
            if gpu:
                row["mfu"] = flops * batch / t / args.peak_flops
            rows.append(row)
            print_table([row], COLUMNS + (["mfu"] if gpu else ["cpu_s_per_image", "load_average"]))
        del model

    print()
    print_table(rows, COLUMNS + (["mfu"] if gpu else ["cpu_s_per_image"]) + ["note"])
    record = header(device, preset=args.preset, channels_last=switch(args.channels_last), bake=switch(args.bake),
                    cast_weights=switch(args.cast_weights), winograd=switch(args.winograd),
                    switches_note="null: speed.inference_defaults for the device and precision",
                    peak_flops=args.peak_flops if gpu else None,
                    **notes(device),
                    results=rows)
    print("wrote", write_json(args.name, device, record, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
