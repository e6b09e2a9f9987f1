"""`matebit demo`: synthetic data -> a small trained model -> the synthetic benchmark -> an HTML report.

    matebit demo                 # ~6 minutes on 2 CPU cores; prints where report.html is
    matebit demo --out my-demo --steps 100
    matebit demo --faces [--exemplar PORTRAIT.jpg]   # the shipped face model on scikit-image's astronaut, seconds

The work is `matebit.demo.report.run_demo`; this module turns the command line into its `DemoSettings`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from matebit.config import SIZE_STRIDE
from matebit.demo.report import DemoSettings, run_demo
from matebit.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DemoSettings()
    p.add_argument("--out", default="matebit-demo", help="folder for data, run, report.html (default %(default)s)")
    p.add_argument("--preset", default=d.preset, help="model preset (default %(default)s)")
    p.add_argument("--steps", type=int, default=d.steps, help="training steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--size", type=int, default=d.size,
                   help=f"image side, a multiple of {SIZE_STRIDE} (default %(default)s)")
    p.add_argument("--train-faces", type=int, default=d.n_train, help="synthetic training faces")
    p.add_argument("--pairs", type=int, default=d.n_pairs, help="held-out benchmark pairs")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.n_mat_blocks=2")
    p.add_argument("--threads", type=int, help="CPU threads (default: the cores other processes leave free, "
                                                "re-chosen every few seconds while training)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    f = p.add_argument_group("face demo (matebit.recipes.faces.faces_demo)")
    f.add_argument("--faces", action="store_true",
                   help="instead: translate scikit-image's astronaut (HED edges) into the style of --exemplar with "
                        "the shipped face model; writes PNGs and index.html to --out")
    f.add_argument("--exemplar", metavar="IMAGE",
                   help="exemplar portrait for --faces (default: the package's public-domain grace_hopper.jpg)")
    f.add_argument("--model", metavar="NAME|DIR", help="face model for --faces (default: the shipped faces-hed-128)")


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    return replace(DemoSettings(), preset=args.preset, steps=args.steps, batch_size=args.batch_size,
                   size=args.size, n_train=args.train_faces, n_pairs=args.pairs, seed=args.seed,
                   extra=list(args.overrides))


def _faces(args: argparse.Namespace) -> int:
    from matebit import speed
    from matebit.recipes.faces import FACE_MODEL, faces_demo

    speed.configure_cpu_threads(args.threads)  # the command's choice; a Translator leaves threads to its caller
    out = Path(args.out if args.out != "matebit-demo" else "matebit-demo-faces")
    if args.exemplar:  # the demo writes its PNGs (exemplar.png among them) and index.html into --out
        from matebit.io import check_outputs

        check_outputs(out_folders={"--out": out}, in_folders={args.exemplar: "--exemplar"})
    paths = faces_demo(out, exemplar=args.exemplar, model=args.model or FACE_MODEL)
    print(f"page: {paths['html'].resolve()}")
    print(f"images: {', '.join(p.name for k, p in paths.items() if k != 'html')} in {out.resolve()}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    if args.faces:
        return _faces(args)
    if args.exemplar or args.model:
        raise InputError("--exemplar and --model go with --faces")
    settings = settings_from_args(args)
    settings.config()  # a bad preset or --set fails here, before any data is written
    result = run_demo(Path(args.out), settings, progress=not args.no_progress, threads=args.threads)
    t = result["timings"]
    print(f"done in {t['total']:.0f} s (training {t['training']:.0f} s)")
    print(f"report: {result['report'].resolve()}")
    print(f"metrics: {result['json'].resolve()}  model: {result['model'].resolve()}")
    return 0
