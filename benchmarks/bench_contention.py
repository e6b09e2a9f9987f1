"""The demo's training step alone and beside a busy process, for each thread policy: the slowdown factor (issue 17).

    python benchmarks/bench_contention.py                    # every policy, both busy kinds (~7 minutes on 2 cores)
    python benchmarks/bench_contention.py --quick            # smoke run: 2 policies, one busy kind, 3 s windows
    python benchmarks/bench_contention.py --busy python --policies spin-2 matebit

Each policy runs in a fresh worker process (OMP_WAIT_POLICY is read once, when torch is first imported), which
builds the `demo` preset's trainer at the demo's size and batch (`matebit.demo.report.DemoSettings`,
`matebit.train.build_training(...).train_step`) on one random batch, warms up alone, and then times `--seconds` of
steps twice: alone, and after a busy process was started beside it (mid-run, as a browser or a second training
appears on a laptop: the thread count chosen at start no longer fits). The busy processes:

- `python`: one process running a pure-Python loop (one CPU-bound thread, e.g. a script or a compiler);
- `torch`: one process doing 512x512 fp32 matmuls on 2 OpenMP threads with the default (spinning) wait policy,
  i.e. another training or inference run.

Policies: `spin-2`, `spin-1` (OMP_WAIT_POLICY unset: torch's default, threads spin while they wait), `passive-2`,
`passive-1` (OMP_WAIT_POLICY=PASSIVE), `spincount-2` (GOMP_SPINCOUNT=10000: a short spin, then sleep),
`passive-auto` (PASSIVE with the thread count chosen and re-chosen), `matebit`: what the command line does
(MATEBIT_THREADS=auto: `speed.choose_threads()` at start and `speed.ThreadGovernor` ticked after every step, as
`matebit.train.train` does; torch's own wait policy), and `matebit-from-2`: the same from 2 threads, as when the
load appears after the start (the governor alone must bring the count down).

Prints a table (steps/s alone, beside the busy process, slowdown = alone / beside) and writes
results/contention-<device>.json with the machine, date, command, load averages and what other processes used of
the cores in each window (this machine may be shared: the "alone" windows say how alone they were).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

POLICIES = {  # name -> (extra environment, threads at start (None: speed.choose_threads), re-chosen while running)
    "spin-2": ({}, 2, False),
    "spin-1": ({}, 1, False),
    "passive-2": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2, False),
    "passive-1": ({"OMP_WAIT_POLICY": "PASSIVE"}, 1, False),
    "spincount-2": ({"GOMP_SPINCOUNT": "10000"}, 2, False),
    "passive-auto": ({"OMP_WAIT_POLICY": "PASSIVE", "MATEBIT_THREADS": "auto"}, None, True),
    "matebit": ({"MATEBIT_THREADS": "auto"}, None, True),
    "matebit-from-2": ({"MATEBIT_THREADS": "auto"}, 2, True),
}
DESCRIBE = {
    "spin-2": "OMP_WAIT_POLICY unset (torch's default: threads spin while they wait), 2 threads: before issue 17",
    "spin-1": "OMP_WAIT_POLICY unset, 1 thread",
    "passive-2": "OMP_WAIT_POLICY=PASSIVE (waiting threads sleep), 2 threads",
    "passive-1": "OMP_WAIT_POLICY=PASSIVE, 1 thread",
    "spincount-2": "GOMP_SPINCOUNT=10000 (a short spin, then sleep), 2 threads",
    "passive-auto": "OMP_WAIT_POLICY=PASSIVE, threads chosen at start and re-chosen every 3 s while running",
    "matebit": "matebit's defaults: torch's wait policy, threads chosen at start (speed.choose_threads) and "
               "re-chosen every 3 s while running (speed.ThreadGovernor)",
    "matebit-from-2": "matebit's defaults, but starting at 2 threads, as when the load appears after the start: "
                      "only the governor brings the count down",
}
BUSY = {
    "python": "1 process, a pure-Python loop (1 CPU-bound thread)",
    "torch": "1 process, 512x512 fp32 matmuls on 2 threads, OMP_WAIT_POLICY unset (another torch run)",
}
_BUSY_CODE = {
    "python": "x = 0\nwhile True:\n    x += 1\n",
    "torch": ("import torch\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\n"
              "while True:\n    a = torch.tanh(a @ a) \n"),
}
_CLEAN_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MATEBIT_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# ---------------------------------------------------------------------------------------------------------------
# The worker: one policy, in its own process


def worker(policy: str, seconds: float, warmup: int) -> None:
    """Build the trainer, warm up, then for each 'go' line on stdin time `seconds` of steps and print JSON."""
    env, threads, governed = POLICIES[policy]
    import torch

    from bench_train import random_batch
    from matebit import speed
    from matebit.demo.report import DemoSettings
    from matebit.train import build_training

    if threads is None:
        speed.configure_cpu_threads()
    else:
        torch.set_num_threads(threads)
    governor = speed.thread_governor("cpu") if governed else None
    settings = DemoSettings()
    cfg = settings.config()
    torch.manual_seed(0)
    trainer = build_training(cfg, "cpu")
    batch = random_batch(cfg, settings.batch_size, settings.size, "cpu")
    for _ in range(warmup):
        trainer.train_step(batch)
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        if governor is not None:
            governor.changes.clear()
            if threads is not None:  # matebit-from-2: every window starts at the given count
                torch.set_num_threads(threads)
                governor._mark = speed.CpuSample.now()
        start_threads = torch.get_num_threads()
        mark = speed.CpuSample.now()
        times = []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            trainer.train_step(batch)
            times.append(time.perf_counter() - t0)
            if governor is not None:
                governor.tick()
        now = speed.CpuSample.now()
        print(json.dumps({"steps": len(times), "seconds": sum(times), "steps_per_s": len(times) / sum(times),
                          "median_step_s": sorted(times)[len(times) // 2], "max_step_s": max(times),
                          "threads_start": start_threads, "threads_end": torch.get_num_threads(),
                          "thread_changes": governor.changes if governor else [],
                          "others_cores": round(now.others_since(mark), 2),
                          "own_cores": round((now.own - mark.own) / (now.wall - mark.wall), 2),
                          "load_average": list(os.getloadavg())}), flush=True)


# ---------------------------------------------------------------------------------------------------------------
# The driver


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_busy(kind: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _BUSY_CODE[kind]], env=_env({}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_quiet(limit_s: float, threshold: float = 0.25) -> float:
    """Wait (at most `limit_s`) until other processes use under `threshold` cores over a second: on a shared
    machine the "alone" windows should be alone. Returns what they used in the last second."""
    from matebit.speed import CpuSample

    t_end = time.monotonic() + limit_s
    while True:
        a = CpuSample.now()
        time.sleep(1.0)
        others = CpuSample.now().others_since(a)
        if others < threshold or time.monotonic() >= t_end:
            return round(others, 2)


def run_policy(policy: str, busy_kinds: list[str], seconds: float, warmup: int, settle: float,
               quiet_wait: float = 0.0) -> dict:
    """Alone, then beside each busy kind (started after the worker's warm-up); one worker process."""
    env, _, _ = POLICIES[policy]
    proc = subprocess.Popen([sys.executable, __file__, "--worker", policy, "--seconds", str(seconds),
                             "--warmup", str(warmup)], env=_env(env), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    busy = None
    try:
        ready = json.loads(proc.stdout.readline())
        result = {"policy": policy, "describe": DESCRIBE[policy], "threads_after_warmup": ready["threads"]}

        def window() -> dict:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {policy} stopped")
            return json.loads(line)

        before = wait_quiet(quiet_wait) if quiet_wait else None
        result["alone"] = window()
        result["alone"]["others_before"] = before
        for kind in busy_kinds:
            if quiet_wait:
                wait_quiet(quiet_wait)
            busy = start_busy(kind)
            time.sleep(settle)  # the busy process is running before the window starts
            result[f"beside_{kind}"] = window()
            stop(busy)
            busy = None
            time.sleep(settle)
        return result
    finally:
        if busy is not None:
            stop(busy)
        if proc.stdin:
            proc.stdin.close()
        stop(proc)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    p.add_argument("--busy", nargs="*", choices=list(BUSY), default=list(BUSY),
                   help="busy kinds (none: the alone windows only)")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                   help="on a shared machine: before each window, wait up to S seconds for other processes to use "
                        "under a quarter of a core (default: do not wait)")
    p.add_argument("--seconds", type=float, default=15.0, help="timed seconds per window (default %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="steps before the first window")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: policies passive-2 and matebit, busy python, 3 s windows, 1 warm-up step")
    p.add_argument("--name", default="contention", help="JSON name: results/<name>-<device>.json")
    p.add_argument("--note", default="", help="free text for the JSON (e.g. what else ran on the machine)")
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON (default benchmarks/results)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.seconds, args.warmup)
        return 0
    if args.quick:
        args.policies, args.busy, args.seconds, args.warmup = ["passive-2", "matebit"], ["python"], 3.0, 1
    settle = 1.0 if not args.quick else 0.5

    from _common import print_table, write_json

    import torch

    from matebit.demo.report import DemoSettings

    settings = DemoSettings()
    load0 = list(os.getloadavg())
    results = []
    for policy in args.policies:
        r = run_policy(policy, args.busy, args.seconds, args.warmup, settle, args.quiet_wait)
        results.append(r)
        print(f"{policy}: alone {r['alone']['steps_per_s']:.2f} steps/s (others used "
              f"{r['alone']['others_cores']:.2f} cores)" + "".join(
                  f", beside {k} {r[f'beside_{k}']['steps_per_s']:.2f}" for k in args.busy), flush=True)
    rows = []
    for r in results:
        row = {"policy": r["policy"], "alone steps/s": r["alone"]["steps_per_s"],
               "others alone": r["alone"]["others_cores"]}
        for kind in args.busy:
            beside = r[f"beside_{kind}"]
            r[f"slowdown_{kind}"] = r["alone"]["steps_per_s"] / beside["steps_per_s"]
            row[f"beside {kind}"] = beside["steps_per_s"]
            row[f"slowdown {kind}"] = f"{r[f'slowdown_{kind}']:.2f}x"
            row[f"threads {kind}"] = f"{beside['threads_start']}->{beside['threads_end']}"
        rows.append(row)
    print()
    print_table(rows, list(rows[0]))
    from _common import header

    device = torch.device("cpu")
    record = header(device, cores=len(os.sched_getaffinity(0)), load_average_before=load0,
                    load_average_after=list(os.getloadavg()),
                    step=(f"matebit.train.build_training(DemoSettings().config()).train_step: preset "
                          f"{settings.preset}, {settings.size} px, batch {settings.batch_size}, one random batch"),
                    seconds_per_window=args.seconds, warmup_steps=args.warmup, quiet_wait_s=args.quiet_wait,
                    note=args.note,
                    busy={k: BUSY[k] for k in args.busy},
                    protocol=("one worker process per policy: warm-up alone, a window alone, then for each busy "
                              "kind the busy process is started (mid-run) and a window beside it; slowdown = "
                              "alone / beside; others_cores = what other processes used of this process's cores "
                              "during the window (/proc/stat minus the worker's CPU time)"),
                    results=results)
    record.pop("threads", None)  # each worker chose its own
    name = f"{args.name}-quick" if args.quick else args.name
    print("wrote", write_json(name, device, record, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
