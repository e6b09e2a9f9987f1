"""Run several metrics on one evaluation set and append their results to a JSONL file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .evalset import EvalSet
from .registry import MetricResult, append_jsonl, compute_metric

__all__ = ["evaluate"]


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

    The planned `matebit eval` CLI maps onto this: a folder laid out for `EvalSet.from_folder` (outputs/ PNG,
    exemplars/, targets/, labels/, exemplar_labels/, landmarks/ ...), `--metrics fid,swd,texture,color,semantic`,
    `--out results.jsonl`, `--run NAME`, `--device`, `--batch-size`, per-metric options such as
    `--fid-weights PATH` and `--feature-network hed-vgg16`; plus a `report` sub-command printing
    `report_markdown([jsonl, ...])`.
    """
    metric_opts = dict(metric_opts or {})
    unknown = set(metric_opts) - set(metrics)
    if unknown:
        raise ValueError(f"metric_opts names metrics that are not requested: {', '.join(sorted(unknown))}")
    results = []
    for name in metrics:
        opts = {"device": device, "batch_size": batch_size, **metric_opts.get(name, {})}
        r = compute_metric(name, items, run=run, **opts)
        if out_jsonl is not None:
            append_jsonl(r, out_jsonl)
        results.append(r)
    return results
