"""Shared pieces of the benchmark scripts: timing, memory, device description, the JSON record."""

from __future__ import annotations

import datetime
import json
import platform
import re
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from matebit.speed import cpu_model

    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def device_slug(device: torch.device) -> str:
    """A file-name-safe short name: 'cpu' or e.g. 'nvidia-h100-80gb-hbm3'."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn, device: torch.device, warmup: int, runs: int) -> list[float]:
    """Seconds per call: CUDA events on a GPU (GPU time between the events), perf_counter on CPU.

    The loop is time_it_cpu's, which reads both clocks: its first list is the event times on a GPU and the
    perf_counter times on a CPU; the process CPU seconds beside them are not wanted here.
    """
    walls, _process_cpu_seconds = time_it_cpu(fn, device, warmup, runs)
    return walls


def time_it_cpu(fn, device: torch.device, warmup: int, runs: int) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) per call. On a shared CPU, CPU seconds / threads and the fastest wall
    time are the better guides to an uncontended machine; both are reported beside the median."""
    for _ in range(warmup):
        fn()
    sync(device)
    walls, cpus = [], []
    for _ in range(runs):
        c0 = time.process_time()
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            walls.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus


def load_average() -> float:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return float("nan")


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def max_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak on a GPU; on CPU the growth of the process's peak RSS, which
    only shows memory beyond what an earlier block already touched (label it so)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.value_mib = float("nan")
        self.label = "cuda max_memory_allocated" if device.type == "cuda" else "growth of process peak RSS"

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = 0.0
        else:
            self._base = max_rss_mib()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.value_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.value_mib = max_rss_mib() - self._base
        return False


def measure(step, device: torch.device, warmup: int, runs: int) -> dict | None:
    """Time `step` and take its peak memory; None when it runs out of GPU memory.

    Keys: median_s, min_s, peak_mib, memory_kind, runs, warmup, and on CPU cpu_s (process CPU seconds, all
    threads) and load_average (before, after), since the CPU may be shared."""
    try:
        load0 = load_average()
        with PeakMemory(device) as mem:
            walls, cpus = time_it_cpu(step, device, warmup, runs)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None
    res = dict(median_s=median(walls), min_s=min(walls), peak_mib=mem.value_mib, memory_kind=mem.label, runs=runs,
               warmup=warmup, times_s=[round(v, 6) for v in walls])
    if device.type != "cuda":
        res.update(cpu_s=median(cpus), load_average=[load0, load_average()])
    return res


def notes(device: torch.device) -> dict:
    """How time and memory were taken, for the JSON header."""
    if device.type == "cuda":
        return dict(timing="CUDA events, median", memory="torch.cuda.max_memory_allocated")
    return dict(timing="time.perf_counter, median (min and process CPU seconds beside it: shared CPU)",
                memory="growth of this process's peak RSS (resource.getrusage), lower bound")


def header(device: torch.device, **extra) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        **extra,
    }


def write_json(name: str, device: torch.device, record: dict, out_dir: Path | None = None) -> Path:
    out_dir = out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{device_slug(device)}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
