"""The GPU run's summary (benchmarks/bench_gpu.py) read against the committed H200 record: the target table must
pick the best row for each target and compute the ratio to the released generator measured in the same run."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "benchmarks" / "results" / "gpu-nvidia-h200.json"


@pytest.fixture(scope="module")
def bench_gpu():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_gpu as module
    finally:
        sys.path.pop(0)
    return module


def _target_row(md: str, name: str) -> list[str]:
    rows = [line for line in md.splitlines() if line.startswith(f"| {name}")]
    assert rows, f"no row {name!r} in the summary"
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_summary_of_the_h200_record(bench_gpu):
    md = bench_gpu.summary(json.loads(RECORD.read_text()))
    # batch 64: the fastest of eager / compiled / CUDA-graph rows (1204 img/s) against the released 351 img/s
    row = _target_row(md, "256 throughput, batch 64")
    assert row[3].startswith("1204 img/s (reduce-overhead") and row[4] == "3.43x" and row[5] == "no"
    row = _target_row(md, "256 latency, batch 1")
    assert row[3].startswith("2.60 ms") and row[4] == "7.09x" and row[5] == "yes"
    assert _target_row(md, "G forward+backward, batch 8")[4] == "0.76x"
    assert _target_row(md, "512 training, batch 8")[5] == "yes"


def test_summary_says_why_a_target_was_not_measured(bench_gpu):
    record = json.loads(RECORD.read_text())
    record["steps"] = [s for s in record["steps"] if s["name"] != "train-256"]
    row = _target_row(bench_gpu.summary(record), "full training iteration, batch 16")
    assert "not measured: train-256: not in this run" in row[3]


def test_a_step_over_budget_is_recorded_not_run(bench_gpu, tmp_path):
    rec = bench_gpu.run_step(bench_gpu.step("x", [sys.executable, "-c", "print(1)"], 60), tmp_path, remaining=5)
    assert rec["status"] == "not run" and "budget" in rec["why"]
    rec = bench_gpu.run_step(bench_gpu.step("y", [sys.executable, "-c", "import time; time.sleep(30)"], 60),
                             tmp_path, remaining=16)
    assert rec["status"] == "timed out"
