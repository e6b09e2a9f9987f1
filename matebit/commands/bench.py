"""`matebit bench quality --synthetic`: the synthetic quality benchmark from the command line.

    matebit bench quality --synthetic --model matebit-demo/run/model
    matebit bench quality --synthetic --presets demo,demo-no-relu,demo-full-corr --out bench-runs

With --model, trained models are scored as they are. With --presets, each preset is first trained with the
demo's data and budget (same steps, batch, size, seed and rates), so the rows differ only in the model.
Prints a table (text, or Markdown with --markdown) and writes JSON (--json, default <out>/quality.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from matebit.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    q = sub.add_parser("quality", help="PCK, per-part colour error and PSNR on held-out synthetic cross pairs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--synthetic", action="store_true",
                   help="use the synthetic faces with exact ground truth (the only data set with it)")
    q.add_argument("--model", action="append", default=[], metavar="DIR",
                   help="a saved model folder (repeatable)")
    q.add_argument("--presets", default="", help="comma-separated presets to train with the demo budget, e.g. "
                                                  "demo,demo-no-relu,demo-full-corr")
    q.add_argument("--steps", type=int, help="training steps per preset (default: the demo's)")
    q.add_argument("--size", type=int, help="image side for --presets (default: the demo's); --model uses "
                                            "each model's training size")
    q.add_argument("--pairs", type=int, default=32, help="held-out pairs (default %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="training seed for --presets (default %(default)s)")
    q.add_argument("--out", default="bench-quality", help="folder for training runs and the JSON")
    q.add_argument("--json", help="where to write the JSON (default <out>/quality.json)")
    q.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    q.add_argument("--no-progress", action="store_true")


def _model_size(directory: Path, default: int) -> int:
    cfg_path = directory / "config.json"
    try:
        data = json.loads(cfg_path.read_text())
        return int(data.get("train", {}).get("image_size", default))
    except (OSError, ValueError, TypeError):
        return default


def main(args: argparse.Namespace) -> int:
    import torch

    from matebit.demo.benchmark import BENCH_SEED, QualityReport, evaluate_generator, format_table, write_json
    from matebit.demo.report import DemoSettings, choose_threads, make_data, train_model

    if not args.synthetic:
        raise InputError("only the synthetic benchmark exists so far; pass --synthetic")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    if not presets and not args.model:
        raise InputError("nothing to score: pass --model DIR and/or --presets a,b,c")
    if args.pairs < 1:
        raise InputError(f"--pairs must be >= 1, got {args.pairs}")
    out = Path(args.out)
    base = DemoSettings(seed=args.seed, n_pairs=args.pairs)
    if args.steps is not None:
        base = replace(base, steps=args.steps)
    if args.size is not None:
        base = replace(base, size=args.size)
    for name in presets:  # every preset and override is checked before hours of training start
        replace(base, preset=name).config()

    rows: dict[str, dict[str, float]] = {}
    info: dict[str, dict] = {}
    baselines: dict[str, dict[str, float]] = {}
    sizes = set()
    for directory in map(Path, args.model):
        from matebit.checkpoint import load_pretrained

        generator, _ = load_pretrained(directory)
        size = _model_size(directory, base.size)
        sizes.add(size)
        report, _ = evaluate_generator(generator, size, args.pairs, name=str(directory))
        rows[str(directory)] = report.rows[str(directory)]
        info[str(directory)] = {"model": str(directory), "size": size}
        baselines = {k: v for k, v in report.rows.items() if k != str(directory)}
    if presets:
        torch.set_num_threads(choose_threads())
        data = make_data(out / f"data-{base.size}px-seed{base.seed}", base)
        for name in presets:
            settings = replace(base, preset=name)
            print(f"training {name}: {settings.steps} steps x batch {settings.batch_size} at {settings.size} px",
                  file=sys.stderr)
            trainer, seconds = train_model(settings, data, out / name, progress=not args.no_progress)
            report, _ = evaluate_generator(trainer.generator, settings.size, args.pairs, name=name)
            rows[name] = report.rows[name]
            info[name] = {"preset": name, "train_seconds": round(seconds, 1), "run": str(out / name),
                          "params": sum(p.numel() for p in trainer.generator.parameters()),
                          "settings": asdict(settings)}
            baselines = {k: v for k, v in report.rows.items() if k != name}
            sizes.add(settings.size)
            del trainer
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
    if len(sizes) > 1:
        print(f"note: rows were scored at different sizes {sorted(sizes)}; the trivial answers are at "
              f"{max(sizes)} px", file=sys.stderr)
    rows.update(baselines)
    report = QualityReport(size=max(sizes), n_pairs=args.pairs, seed=BENCH_SEED,
                           rows=rows, info=info)
    path = write_json(report, args.json or out / "quality.json")
    print(format_table(rows, markdown=args.markdown))
    print(f"json: {path}")
    return 0
