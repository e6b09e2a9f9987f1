"""`matebit info`: versions, the device found, the presets, and optionally one preset's size and cost."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="also build this model preset and print its parameters and GFLOPs")
    parser.add_argument("--size", type=int, default=256, help="input size for the FLOP count (default 256)")


def model_stats(preset: str, size: int) -> tuple[int, float]:
    """Parameters and forward GFLOPs per image (matmul/conv, 2 FLOPs per multiply-add) of a preset."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from matebit.config import model_preset
    from matebit.models import MATEBITGenerator

    cfg = model_preset(preset)
    g = MATEBITGenerator(cfg).eval()
    s = torch.rand(1, cfg.structure_channels, size, size)
    e = torch.rand(1, cfg.image_channels, size, size) * 2 - 1
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        g(s, e)
    return sum(p.numel() for p in g.parameters()), counter.get_total_flops() / 1e9


def main(args: argparse.Namespace) -> int:
    import platform

    import numpy
    import torch

    from matebit import __version__
    from matebit.config import PRESETS

    print(f"matebit {__version__}")
    print(f"python {platform.python_version()}  torch {torch.__version__}  numpy {numpy.__version__}")
    try:
        import torchvision
        print(f"torchvision {torchvision.__version__}")
    except ImportError:
        print("torchvision not installed")
    if torch.cuda.is_available():
        print(f"device: cuda ({torch.cuda.get_device_name(0)}), bf16 {torch.cuda.is_bf16_supported()}")
    else:
        print(f"device: cpu ({torch.get_num_threads()} threads); no CUDA device found")
    print("presets:")
    for name, entry in PRESETS.items():
        print(f"  {name:15s} {entry.help}")
    if args.preset:
        n, gflops = model_stats(args.preset, args.size)
        print(f"{args.preset}: {n / 1e6:.2f} M parameters, {gflops:.1f} GFLOPs per {args.size}x{args.size} image")
    return 0
