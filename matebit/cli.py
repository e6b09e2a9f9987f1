"""The `matebit` command. Each subcommand lives in its own module and is imported only when used.

A subcommand module provides `add_arguments(parser)` and `main(args) -> int`. Errors that describe bad input
(ValueError, FileNotFoundError, PermissionError, matebit's own error types) print one line and exit 2; anything
else is a bug: one line, exit 1, and the traceback only with MATEBIT_DEBUG=1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from matebit.errors import first_line

# name -> (module, one-line help). Modules are imported only to add their arguments (cheap) and to run.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("matebit.cli", "print versions, the device found and the presets"),
    "demo": ("matebit.demo", "generate synthetic data, train a small model, benchmark it, write an HTML report"),
    "train": ("matebit.train", "train a model on a paired folder data set"),
    "translate": ("matebit.translate_cli", "translate structure maps with exemplars using a trained model"),
    "prepare": ("matebit.convert.cli", "convert photos or keypoints into structure maps; build pairs files"),
    "eval": ("matebit.metrics.cli", "compute metrics and write JSON lines and Markdown tables"),
    "bench": ("matebit.bench_cli", "benchmarks: synthetic quality"),
    "serve": ("matebit.app", "start the web demo"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:  # for `matebit info`
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


def main(args: argparse.Namespace) -> int:  # `matebit info`
    import platform

    import numpy
    import torch

    from matebit import __version__
    from matebit.config import MODEL_PRESETS, PRESET_HELP

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
    for name in MODEL_PRESETS:
        print(f"  {name:15s} {PRESET_HELP.get(name, '')}")
    if args.preset:
        n, gflops = model_stats(args.preset, args.size)
        print(f"{args.preset}: {n / 1e6:.2f} M parameters, {gflops:.1f} GFLOPs per {args.size}x{args.size} image")
    return 0


def _available_commands() -> dict[str, object]:
    found = {}
    for name, (module, _) in COMMANDS.items():
        try:
            found[name] = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
                continue  # that command is not part of this build
            raise
    return found


def build_parser(modules: dict[str, object]) -> argparse.ArgumentParser:
    from matebit import __version__

    parser = argparse.ArgumentParser(
        prog="matebit", description="Exemplar-based image translation with MATEBIT (CVPR 2023).")
    parser.add_argument("--version", action="version", version=f"matebit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in modules.items():
        p = sub.add_parser(name, help=COMMANDS[name][1], description=COMMANDS[name][1])
        module.add_arguments(p)
    return parser


def _is_input_error(exc: BaseException) -> bool:
    from matebit.errors import MatebitError

    return isinstance(exc, (MatebitError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
                            NotADirectoryError))


def run(argv: list[str] | None = None) -> int:
    modules = _available_commands()
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return int(modules[args.command].main(args) or 0)
    except KeyboardInterrupt:
        print(f"matebit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, never a bare traceback
        if os.environ.get("MATEBIT_DEBUG"):
            raise
        msg = first_line(exc)
        if _is_input_error(exc):
            print(f"matebit {args.command}: error: {msg}", file=sys.stderr)
            return 2
        print(f"matebit {args.command}: internal error ({type(exc).__name__}): {msg} "
              f"(set MATEBIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def entry() -> None:
    sys.exit(run())


if __name__ == "__main__":
    entry()
