"""Run several metrics on one evaluation set and append their results to a JSONL file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from matebit.errors import InputError

from .evalset import EvalSet
from .registry import MetricResult, append_jsonl, compute_metric

__all__ = ["PAPER_METRICS", "NETWORK_METRICS", "evaluate", "available", "select_metrics"]

PAPER_METRICS = ("fid", "swd", "texture", "color", "semantic")  # the columns of the paper's Tables 1 and 2
NETWORK_METRICS = {"fid", "kid", "texture", "color", "semantic"}  # those a substitute feature network applies to


def available(name: str, has: Mapping[str, bool]) -> bool:
    """Whether the inputs metric `name` needs are there. `has`: targets, exemplars, pck (landmarks on both sides
    and predicted points, or a model with MAT blocks that can predict them), timing (a model to time)."""
    base = name.split("[", 1)[0]
    if base in ("fid", "kid", "swd"):
        return has["targets"] or has["exemplars"]
    if base in ("texture", "color"):
        return has["exemplars"]
    if base in ("semantic", "psnr", "ssim", "lpips"):
        return has["targets"]
    if base == "pck":
        return has["pck"]
    if base == "timing":
        return has["timing"]
    return True


def select_metrics(requested: Sequence[str] | None, has: Mapping[str, bool],
                   feature_network: str | None = None) -> tuple[list[str], list[str]]:
    """(metric names, with `[feature_network]` where it applies; defaults left out for lack of inputs).

    `requested` None: the paper's metrics plus psnr, ssim, pck and timing, each where its inputs exist. A requested
    metric whose inputs are missing is an error, raised before any work.
    """
    if requested:
        names = list(requested)
        for n in names:
            if not available(n, has):
                why = {"pck": "landmarks for structure and exemplar (and a model with MAT blocks)",
                       "timing": "--model"}.get(n.split("[", 1)[0], "inputs the evaluation set lacks")
                raise InputError(f"metric {n!r} needs {why}")
        skipped: list[str] = []
    else:
        wanted = list(PAPER_METRICS) + ["psnr", "ssim", "pck", "timing"]
        names = [n for n in wanted if available(n, has)]
        skipped = [n for n in wanted if n not in names and n != "timing"]
    if feature_network:
        names = [f"{n}[{feature_network}]" if n in NETWORK_METRICS else n for n in names]
    return names, skipped


def evaluate(
    items: EvalSet,
    metrics: Sequence[str],
    out_jsonl: str | Path | None,
    run: str = "",
    device: str = "cpu",
    batch_size: int = 16,
    metric_opts: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[MetricResult]:
    """Compute `metrics` (registered names, optionally with a network suffix such as "fid[hed-vgg16]") on
    `items`, append one JSON line per result to `out_jsonl` (if given) and return the results.

    `device` and `batch_size` go to every metric; `metric_opts[name]` adds options for one metric (e.g.
    {"fid": {"fid_weights": "..."}, "swd": {"seed": 1}}). Each result is appended as soon as it is done, so
    a failure in a later metric keeps the earlier lines.

    `matebit eval` (matebit/commands/eval.py) calls this once per metric.
    """
    metric_opts = dict(metric_opts or {})
    unknown = set(metric_opts) - set(metrics)
    if unknown:
        raise InputError(f"metric_opts names metrics that are not requested: {', '.join(sorted(unknown))}")
    results = []
    for name in metrics:
        opts = {"device": device, "batch_size": batch_size, **metric_opts.get(name, {})}
        r = compute_metric(name, items, run=run, **opts)
        if out_jsonl is not None:
            append_jsonl(r, out_jsonl)
        results.append(r)
    return results
