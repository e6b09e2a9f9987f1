"""Metric registry, result records and the JSONL / Markdown reporting (stylegan3's metric_main pattern).

A metric is a function `fn(items: EvalSet, **opts) -> MetricOutput` registered with `@register_metric`.
`compute_metric` checks the inputs it needs, runs it, and wraps the output in a `MetricResult` that records
the protocol, the feature network and the library versions, so a number in a JSONL file can be traced back.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from matebit.errors import MetricError
from matebit.io import format_table

__all__ = [
    "MetricSpec",
    "MetricOutput",
    "MetricResult",
    "MetricError",
    "register_metric",
    "list_metrics",
    "get_metric",
    "compute_metric",
    "append_jsonl",
    "read_jsonl",
    "report_markdown",
    "pck_table",
    "library_versions",
    "run_environment",
]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable[..., "MetricOutput"]
    protocol: str
    needs: tuple[str, ...]
    higher_is_better: bool
    doc: str


@dataclass
class MetricOutput:
    """What a metric function returns; `compute_metric` adds the bookkeeping."""

    values: dict[str, float]
    feature_network: str | None = None
    name: str | None = None  # e.g. "fid[hed-vgg16]" when a substitute network was used
    protocol: str | None = None  # overrides the registered one (e.g. the no-label-map fallback)
    num_samples: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class MetricResult:
    name: str
    values: dict[str, float]
    protocol: str
    feature_network: str | None
    num_samples: int
    versions: dict[str, str]
    time: str  # ISO-8601 UTC timestamp of completion
    elapsed_s: float
    run: str = ""  # row label in the report (model / run name)
    notes: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """The registered metric name, without a substitute-network suffix."""
        return self.name.split("[", 1)[0]

    @property
    def value(self) -> float:
        """The headline number: the value keyed by the metric name."""
        return self.values.get(self.name, self.values.get(self.metric, float("nan")))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetricResult":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


_REGISTRY: dict[str, MetricSpec] = {}


def register_metric(
    name: str,
    protocol: str,
    needs: Sequence[str] = (),
    higher_is_better: bool = False,
) -> Callable[[Callable[..., MetricOutput]], Callable[..., MetricOutput]]:
    """Register `fn` under `name`; `protocol` is the one-line description that goes into results and README."""
    if "\n" in protocol:
        raise ValueError(f"metric {name!r}: the protocol must be one line")

    def deco(fn: Callable[..., MetricOutput]) -> Callable[..., MetricOutput]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"metric {name!r} is already registered")
        if not (fn.__doc__ or "").strip():
            raise ValueError(f"metric {name!r} must have a docstring")
        _REGISTRY[name] = MetricSpec(name, fn, protocol, tuple(needs), higher_is_better, fn.__doc__.strip())
        return fn

    return deco


def list_metrics() -> list[str]:
    return sorted(_REGISTRY)


def get_metric(name: str) -> MetricSpec:
    base = name.split("[", 1)[0]
    if base not in _REGISTRY:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(list_metrics())}")
    return _REGISTRY[base]


def library_versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    import matebit

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "matebit": getattr(matebit, "__version__", "unknown"),
    }


def run_environment() -> dict[str, Any]:
    """What a results file records of where it was measured: library versions, CPU model, torch's thread count."""
    import platform

    import torch

    from matebit.speed import cpu_model

    return {**library_versions(), "python": platform.python_version(), "cpu": cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def compute_metric(name: str, items: Any, run: str = "", **opts: Any) -> MetricResult:
    """Run one registered metric on `items` (an EvalSet). `name` may carry a network suffix, e.g.
    "fid[hed-vgg16]", which is the same as passing feature_network="hed-vgg16"."""
    spec = get_metric(name)
    if "[" in name:
        opts.setdefault("feature_network", name.split("[", 1)[1].rstrip("]"))
    missing = [n for n in spec.needs if not _has(items, n)]
    if missing:
        raise MetricError(f"metric {spec.name!r} needs {', '.join(missing)} in the evaluation set, which has none")
    t0 = time.perf_counter()
    out = spec.fn(items, **opts)
    elapsed = time.perf_counter() - t0
    notes = list(out.notes) + list(getattr(items, "notes", lambda: [])())
    return MetricResult(
        name=out.name or spec.name,
        values={k: float(v) for k, v in out.values.items()},
        protocol=out.protocol or spec.protocol,
        feature_network=out.feature_network,
        num_samples=int(out.num_samples if out.num_samples is not None else len(items)),
        versions=library_versions(),
        time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        elapsed_s=round(elapsed, 4),
        run=run,
        notes=sorted(set(notes)),
    )


def _has(items: Any, what: str) -> bool:
    v = getattr(items, what, None)
    return v is not None and len(v) > 0


def append_jsonl(result: MetricResult, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(result.to_dict(), sort_keys=True) + "\n")


def read_jsonl(path: str | Path) -> list[MetricResult]:
    out = []
    from matebit.bounds import parse_json
    from matebit.io import read_text

    for i, line in enumerate(read_text(path, error=MetricError).splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(MetricResult.from_dict(parse_json(line, f"{path}:{i}", MetricError)))
        except (TypeError, AttributeError) as e:
            raise MetricError(f"{path}:{i}: not a metric result line ({e})") from None
    return out


# Column order of the paper's Tables 1 and 2; other metrics follow alphabetically.
_PAPER_COLUMNS = ["fid", "swd", "texture", "color", "semantic"]
_DISPLAY = {"fid": "FID", "kid": "KID", "swd": "SWD", "texture": "Texture", "color": "Color",
            "semantic": "Semantic", "lpips": "LPIPS", "psnr": "PSNR", "ssim": "SSIM", "pck": "PCK@0.05",
            "timing": "Time (s)"}


def report_markdown(jsonl_paths: Sequence[str | Path] | str | Path, digits: int = 3) -> str:
    """Lay results out like the paper's Table 1/2: one row per run, one column per metric.

    The latest result wins when a (run, metric) pair repeats. A run with no name is labelled with its file's
    stem. Footnotes name the feature network, sample count and protocol of every column.
    """
    if isinstance(jsonl_paths, (str, Path)):
        jsonl_paths = [jsonl_paths]
    table: dict[str, dict[str, MetricResult]] = {}
    for p in jsonl_paths:
        for r in read_jsonl(p):
            table.setdefault(r.run or Path(p).stem, {})[r.name] = r
    if not table:
        return "(no results)\n"
    names = {n for row in table.values() for n in row}

    def order(n: str) -> tuple[int, str]:
        base = n.split("[", 1)[0]
        return (_PAPER_COLUMNS.index(base) if base in _PAPER_COLUMNS else len(_PAPER_COLUMNS), n)

    cols = sorted(names, key=order)
    notes: list[str] = []
    headers = []
    for c in cols:
        results = [row[c] for row in table.values() if c in row]
        spec = _REGISTRY.get(c.split("[", 1)[0])
        arrow = "" if spec is None else (" ↑" if spec.higher_is_better else " ↓")
        base = c.split("[", 1)[0]
        label = _DISPLAY.get(base, base) + (f"[{c.split('[', 1)[1]}" if "[" in c else "")
        nets = sorted({r.feature_network or "none" for r in results})
        counts = sorted({r.num_samples for r in results})
        # Per-run notes (timing's device/batch size/precision, reference sets, JPEG inputs) belong with the number.
        run_notes = [f"{run}: {', '.join(row[c].notes)}" for run, row in table.items() if c in row and row[c].notes]
        notes.append(f"{label}: feature network {', '.join(nets)}; n = {', '.join(map(str, counts))}; "
                     f"{results[0].protocol}" + (f" Notes: {'; '.join(run_notes)}." if run_notes else ""))
        headers.append(f"{label}{arrow} [{len(notes)}]")
    body = [[run, *(_fmt(row[c].value, digits) if c in row else "–" for c in cols)] for run, row in table.items()]
    lines = [format_table(["run", *headers], body, markdown=True, right=[False] * (len(cols) + 1)), ""]
    lines += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    pck_runs = {run: row["pck"].values for run, row in table.items() if "pck" in row}
    if pck_runs:
        lines += ["", "PCK at each threshold, beside the identity guess (each structure landmark predicted at the same "
                  "pixel of the exemplar) and the grid ceiling (the true point at its token centre), on the same pairs:",
                  "", pck_table(pck_runs, markdown=True, digits=digits)]
    return "\n".join(lines) + "\n"


def pck_table(runs: dict[str, dict[str, float]], markdown: bool = False, digits: int = 3) -> str:
    """PCK values (pck@a, identity@a, ceiling@a, as the pck metric writes them) of one or more runs as a table:
    a row for each run's model, identity guess and grid ceiling; a column for each threshold a."""
    alphas = sorted({float(k.split("@", 1)[1]) for v in runs.values() for k in v if k.startswith("pck@")})
    head = ["", *(f"PCK@{a:.2f}" for a in alphas)]
    body = []
    for run, values in runs.items():
        prefix = f"{run}: " if len(runs) > 1 else ""
        for key, label in (("pck", run), ("identity", f"{prefix}identity guess"), ("ceiling", f"{prefix}grid ceiling")):
            if f"{key}@{alphas[0]:g}" in values:
                body.append([label, *(_fmt(values.get(f"{key}@{a:g}", float("nan")), digits) for a in alphas)])
    return format_table(head, body, markdown=markdown)


def _fmt(v: float, digits: int) -> str:
    if v != v:
        return "nan"
    if abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(1, digits - 2)}f}"
