"""Wall-clock timing of a callable (for benchmarks; never called in unit tests)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .registry import MetricOutput, register_metric

__all__ = ["TimingResult", "time_callable"]


@dataclass
class TimingResult:
    seconds_per_batch: float  # median over runs
    seconds_per_image: float
    images_per_second: float
    device: str
    batch_size: int
    precision: str
    runs: int
    warmup: int


def _sync(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize(torch.device(device))


def _describe(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def time_callable(fn: Callable[[], Any], batch_size: int = 1, device: str = "cpu", precision: str = "fp32",
                  warmup: int = 3, runs: int = 10) -> TimingResult:
    """Median wall time of `fn()` (one batch of `batch_size` images) after `warmup` untimed calls; CUDA work is
    synchronised before each clock read so queued kernels are counted."""
    if runs < 1 or batch_size < 1:
        raise ValueError("time_callable needs runs >= 1 and batch_size >= 1")
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return TimingResult(med, med / batch_size, batch_size / med, _describe(device), batch_size, precision, runs,
                        warmup)


@register_metric("timing", protocol="Time: median wall seconds per generated image over timed runs after warm-up "
                                    "(CUDA-synchronised), with device, batch size and precision stated.")
def timing_metric(items: Any, fn: Callable[[], Any] | None = None, batch_size: int = 1, device: str = "cpu",
                  precision: str = "fp32", warmup: int = 3, runs: int = 10) -> MetricOutput:
    """Seconds per image of `fn` (lower is better); `fn()` must translate one batch of `batch_size` images."""
    if fn is None:
        raise ValueError("the timing metric needs fn=<callable translating one batch>")
    r = time_callable(fn, batch_size, device, precision, warmup, runs)
    return MetricOutput({"timing": r.seconds_per_image, "images_per_second": r.images_per_second,
                         "seconds_per_batch": r.seconds_per_batch}, feature_network=None,
                        num_samples=runs * batch_size,
                        notes=[f"device={r.device}", f"batch_size={batch_size}", f"precision={precision}"])
