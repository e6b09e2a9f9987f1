"""A training step of an earlier commit and of this checkout, measured in alternating processes on this machine.

    python benchmarks/bench_train_before_after.py --baseline e7b8427 --preset demo --size 64
    python benchmarks/bench_train_before_after.py --baseline e7b8427 --preset faces --size 128 --runs 5 \\
        --config fp32= --config "bf16=train.precision=bf16 train.loss_networks_autocast=true"
    python benchmarks/bench_train_before_after.py --baseline 05c2ec4 --preset faces --size 128 --check-steps 3 \\
        --rounds 0

The baseline commit is checked out (`git worktree`) into the ignored folder `<repo>/.baseline/<commit>/`. Each
measurement runs in its own process: baseline, then this checkout, per configuration, `--rounds` times. Alternating
processes put a slow minute of a shared VM on both sides alike; the table gives every round's median step time and
the ratio of the medians over rounds (baseline time / this checkout's time: > 1 is faster now). `--config
NAME=OVERRIDES` adds configurations (`--set` overrides of bench_train.py; `fp32=` is the recipe's own settings); each
is run on both trees unless named with a `now:` prefix (this checkout only, e.g. a switch that the baseline lacks),
compared with the baseline's first configuration.

By default each tree's own bench_train.py times it (as the results written before --check-steps existed were taken).
`--same-harness` times both with this checkout's bench_train.py (`--code TREE`), so only the library differs.
`--check-steps N` first runs both trees once with this checkout's bench_train.py, same seed: the FLOPs of one step
(FlopCounterMode) and every loss of N steps, compared digit for digit; it exits 1 when they differ.

Writes benchmarks/results/train-before-after-<preset>[-<baseline>]-<device>.json with every round (the baseline in
the name from --check-steps on), and the check to train-check-<preset>-<baseline>-<device>.json.
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


def one_run(tree: Path, args: argparse.Namespace, overrides: str, extra: list[str] | None = None,
            harness: Path | None = None) -> dict:
    """bench_train.py in a fresh process, measuring `tree`: its own script, or `harness`'s with --code tree; the one
    result row."""
    with tempfile.TemporaryDirectory() as out:
        script = (harness or tree) / "benchmarks" / "bench_train.py"
        cmd = [sys.executable, str(script), "--preset", args.preset, "--device", args.device, "--sizes",
               str(args.size), "--batches", str(args.batch), "--warmup", str(args.warmup), "--runs", str(args.runs),
               "--out", out]
        if harness is not None:
            cmd += ["--code", str(tree)]
        cmd += extra or []
        if overrides:
            cmd += ["--set", *shlex.split(overrides)]
        done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{tree}: bench_train.py failed:\n{done.stderr[-2000:]}")
        (result,) = Path(out).glob("train-*.json")
        return json.loads(result.read_text())["results"][0]


def check(args: argparse.Namespace, trees: list[tuple[str, Path]], overrides: str) -> tuple[dict, bool]:
    """FLOPs of one step and the losses of --check-steps steps, per tree (this checkout's harness, same seed)."""
    from safetensors.torch import load_file

    extra = ["--runs", "0", "--flops", "--losses", str(args.check_steps), "--seed", str(args.seed)]
    with tempfile.TemporaryDirectory() as tmp:
        rows = {side: one_run(tree, args, overrides, extra + ["--save-grads", f"{tmp}/{side}.safetensors"],
                              harness=REPO) for side, tree in trees}
        grads = {side: load_file(f"{tmp}/{side}.safetensors") for side in rows}
    before, now = rows["baseline"], rows["now"]
    same = before["losses"] == now["losses"]
    for step, (a, b) in enumerate(zip(before["losses"], now["losses"]), 1):
        for key in sorted(set(a) | set(b)):
            mark = "" if a.get(key) == b.get(key) else "   <- differs"
            print(f"step {step} {key:24s} baseline {a.get(key)!s:24s} now {b.get(key)!s:24s}{mark}")
    # How far apart G's gradients of step 1 are: |g_now - g_baseline| / |g_baseline| (L2), over all of G and per
    # parameter tensor (the largest three, with the tensor's share of G's gradient norm beside them).
    a, b = grads["baseline"], grads["now"]
    total = sum(float(t.double().pow(2).sum()) for t in a.values()) ** 0.5
    diff = sum(float((b[n].double() - a[n].double()).pow(2).sum()) for n in a) ** 0.5
    per = sorted(((float((b[n] - a[n]).double().norm() / a[n].double().norm().clamp_min(1e-300)),
                   float(a[n].double().norm()) / total, n) for n in a), reverse=True)
    identical = sum(bool(torch.equal(a[n], b[n])) for n in a)
    print(f"G's gradients of step 1: {identical} of {len(a)} tensors identical; relative L2 difference over all of "
          f"G {diff / total:.2e}; largest per tensor: " + ", ".join(f"{n} {r:.1e} (share {s:.0e})"
                                                                  for r, s, n in per[:3]))
    flops = {side: row["flops_per_step"] for side, row in rows.items()}
    print(f"GFLOPs per step: baseline {flops['baseline'] / 1e9:.3f}, now {flops['now'] / 1e9:.3f} "
          f"({flops['now'] / flops['baseline']:.4f} of the baseline)")
    print("losses identical to the last digit" if same else "LOSSES DIFFER")
    return dict(flops_per_step=flops, flops_now_over_baseline=flops["now"] / flops["baseline"],
                losses_identical=same, first_step_losses_identical=before["losses"][0] == now["losses"][0],
                grad_tensors=len(a), grad_tensors_identical=identical, grad_relative_l2_difference=diff / total,
                grad_largest_relative_l2_differences=[dict(tensor=n, relative=r, share_of_norm=s)
                                                      for r, s, n in per[:5]], losses={side: row["losses"] for side, row in rows.items()}), same


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="the earlier commit (any git revision)")
    p.add_argument("--preset", default="demo")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--config", action="append", default=None, metavar="NAME=OVERRIDES",
                   help="a configuration (default: 'fp32=', the recipe's own settings); repeatable")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (0: no timing)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--same-harness", action="store_true",
                   help="time both trees with this checkout's bench_train.py (--code TREE)")
    p.add_argument("--check-steps", type=int, default=0, metavar="N",
                   help="first compare FLOPs per step and the losses of N steps (same seed) of both trees")
    p.add_argument("--seed", type=int, default=0, help="the seed of --check-steps")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    configs = [c.split("=", 1) for c in (args.config or ["fp32="])]
    if any(len(c) != 2 for c in configs):
        raise SystemExit("--config takes NAME=OVERRIDES (OVERRIDES may be empty: fp32=)")
    before = baseline_tree(args.baseline)
    trees = [("baseline", before), ("now", REPO)]
    device = torch.device(args.device)
    base = dict(baseline=args.baseline, baseline_tree=str(before), preset=args.preset, size=args.size,
                batch=args.batch)
    stem = f"{args.preset}-{args.baseline}" if args.check_steps or args.same_harness else args.preset
    ok = True
    if args.check_steps:
        found, ok = check(args, trees, configs[0][1])
        record = header(device, **base, config=configs[0][0], seed=args.seed, steps=args.check_steps,
                        step="bench_train.py: one G + D iteration on a random batch, random stand-in loss networks",
                        flops_counter="torch.utils.flop_counter.FlopCounterMode, one step (forward and backward)",
                        **found)
        print("wrote", write_json(f"train-check-{stem}", device, record, args.out))
    if not args.rounds:
        return 0 if ok else 1
    harness = REPO if args.same_harness else None
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for name, overrides in configs:
            only_now = name.startswith("now:")
            for side, tree in trees:
                if only_now and side == "baseline":
                    continue
                row = one_run(tree, args, overrides, harness=harness)
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
    record = header(device, **base, rounds=args.rounds, warmup=args.warmup, runs=args.runs,
                    harness="this checkout's bench_train.py" if harness else "each tree's own bench_train.py",
                    step="bench_train.py: one G + D iteration on a random batch, random stand-in loss networks",
                    results=rows)
    print("wrote", write_json(f"train-before-after-{stem}", device, record, args.out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
