"""`matebit bench quality --synthetic`: the synthetic quality benchmark from the command line.

    matebit bench quality --synthetic --model matebit-demo/run/model
    matebit bench quality --synthetic --presets demo,demo-no-relu,demo-full-corr --seeds 0,1,2 --out bench-runs

With --model, trained models are scored as they are. With --presets, each preset is first trained with the
demo's data and budget (same steps, batch, size and rates), once per seed (the seed draws both the training faces
and the initialisation), so the rows differ only in the model; each row is the mean ± sample standard deviation
over the seeds. Prints a table (text, or Markdown with --markdown) and writes JSON (--json, default
<out>/quality.json) with every seed's scores.
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
    q.add_argument("--seeds", default="0", help="comma-separated training seeds for --presets; each preset is "
                                                 "trained once per seed (default %(default)s)")
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

    from matebit.metrics.moved.synthetic import (
        BENCH_SEED,
        QualityReport,
        aggregate,
        evaluate_generator,
        format_table,
        write_json,
    )
    from matebit.demo.report import DemoSettings, choose_threads, make_data, train_model

    if not args.synthetic:
        raise InputError("only the synthetic benchmark exists so far; pass --synthetic")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    if not presets and not args.model:
        raise InputError("nothing to score: pass --model DIR and/or --presets a,b,c")
    from matebit.commands import parse_seeds
    from matebit.io import check_outputs

    # The JSON (default <out>/quality.json) may not replace a file of a model it scores.
    check_outputs({"--json": args.json or Path(args.out) / "quality.json"},
                  {Path(m) / name: "--model" for m in args.model for name in ("model.safetensors", "config.json",
                                                                               "README.md")})
    seeds = parse_seeds(args.seeds)
    out = Path(args.out)
    base = DemoSettings(seed=seeds[0], n_pairs=args.pairs)
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
        for name in presets:
            per_seed, runs = [], []
            for seed in seeds:
                settings = replace(base, preset=name, seed=seed)
                data = make_data(out / f"data-{settings.size}px-seed{seed}", settings)
                print(f"training {name} (seed {seed}): {settings.steps} steps x batch {settings.batch_size} at "
                      f"{settings.size} px", file=sys.stderr)
                run_dir = out / (f"{name}-seed{seed}" if len(seeds) > 1 else name)
                trainer, seconds = train_model(settings, data, run_dir, progress=not args.no_progress)
                report, _ = evaluate_generator(trainer.generator, settings.size, args.pairs, name=name)
                per_seed.append(report.rows[name])
                runs.append({"seed": seed, "train_seconds": round(seconds, 1), "run": str(run_dir)})
                baselines = {k: v for k, v in report.rows.items() if k != name}
                sizes.add(settings.size)
                del trainer
            rows[name] = aggregate(per_seed)
            info[name] = {"preset": name, "runs": runs, "settings": asdict(replace(base, preset=name))}
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
