"""A training step of an earlier commit and of this checkout, measured in alternating processes on this machine.

    python benchmarks/bench_train_before_after.py --baseline e7b8427 --preset demo --size 64
    python benchmarks/bench_train_before_after.py --baseline e7b8427 --preset faces --size 128 --runs 5 \\
        --config fp32= --config "bf16=train.precision=bf16 train.loss_networks_autocast=true"

The baseline commit is checked out (`git worktree`) into the ignored folder `<repo>/.baseline/<commit>/`, and
`bench_train.py` runs from each tree in its own process: baseline, then this checkout, per configuration, `--rounds`
times. Alternating processes put a slow minute of a shared VM on both sides alike; the table gives every round's
median step time and the ratio of the medians over rounds (baseline time / this checkout's time: > 1 is faster
now). `--config NAME=OVERRIDES` adds configurations (`--set` overrides of bench_train.py; `fp32=` is the recipe's
own settings); each is run on both trees unless named with a `now:` prefix (this checkout only, e.g. a switch that
the baseline lacks), compared with the baseline's first configuration.

Writes benchmarks/results/train-before-after-<preset>-<device>.json with every round.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import header, median, print_table, write_json  # noqa: E402


def baseline_tree(commit: str) -> Path:
    """`<repo>/.baseline/<commit>`: a detached worktree of `commit`, made once."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", commit], check=True, capture_output=True,
                         text=True).stdout.strip()
    tree = REPO / ".baseline" / sha
    if not (tree / "benchmarks" / "bench_train.py").is_file():
        tree.parent.mkdir(exist_ok=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--force", "--detach", str(tree), sha], check=True,
                       capture_output=True)
    return tree


def one_run(tree: Path, args: argparse.Namespace, overrides: str) -> dict:
    """bench_train.py of `tree` in a fresh process; its one result row."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, str(tree / "benchmarks" / "bench_train.py"), "--preset", args.preset, "--device",
               args.device, "--sizes", str(args.size), "--batches", str(args.batch), "--warmup", str(args.warmup),
               "--runs", str(args.runs), "--out", out]
        if overrides:
            cmd += ["--set", *shlex.split(overrides)]
        done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{tree}: bench_train.py failed:\n{done.stderr[-2000:]}")
        (result,) = Path(out).glob("train-*.json")
        return json.loads(result.read_text())["results"][0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="the earlier commit (any git revision)")
    p.add_argument("--preset", default="demo")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--config", action="append", default=None, metavar="NAME=OVERRIDES",
                   help="a configuration (default: 'fp32=', the recipe's own settings); repeatable")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    configs = [c.split("=", 1) for c in (args.config or ["fp32="])]
    if any(len(c) != 2 for c in configs):
        raise SystemExit("--config takes NAME=OVERRIDES (OVERRIDES may be empty: fp32=)")
    before = baseline_tree(args.baseline)
    trees = [("baseline", before), ("now", REPO)]
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for name, overrides in configs:
            only_now = name.startswith("now:")
            for side, tree in trees:
                if only_now and side == "baseline":
                    continue
                row = one_run(tree, args, overrides)
                times.setdefault((side, name), []).append(row["ms_per_iter"])
                print(f"round {r + 1}/{args.rounds}  {side:8s} {name:10s} {row['ms_per_iter']:8.1f} ms/step "
                      f"(fastest {row['min_ms_per_iter']:.1f})", flush=True)

    reference = median(times[("baseline", configs[0][0])])
    rows = []
    for (side, name), ms in times.items():
        rows.append(dict(tree=side, config=name, overrides=dict(configs)[name], ms_per_step=median(ms),
                         images_per_s=args.batch * 1e3 / median(ms), rounds_ms=[round(m, 1) for m in ms],
                         vs_baseline_same_config=(median(times[("baseline", name)]) / median(ms)
                                                  if ("baseline", name) in times else None),
                         vs_baseline_first_config=reference / median(ms)))
    print()
    print_table(rows, ["tree", "config", "ms_per_step", "images_per_s", "vs_baseline_same_config",
                       "vs_baseline_first_config", "rounds_ms"])
    record = header(torch.device(args.device), baseline=args.baseline, baseline_tree=str(before), preset=args.preset,
                    size=args.size, batch=args.batch, rounds=args.rounds, warmup=args.warmup, runs=args.runs,
                    step="bench_train.py: one G + D iteration on a random batch, random stand-in loss networks",
                    results=rows)
    print("wrote", write_json(f"train-before-after-{args.preset}", torch.device(args.device), record, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
