"""Every GPU check of issue 15 in one run: the fused-path tests on CUDA, matebit's speed and memory beside the
released generator, and the fused/matrix crossover. Made for a scarce GPU lease: each step runs in its own
process under its own time limit, a failed or timed-out step is recorded and the run goes on, and the combined
JSON and a Markdown summary are rewritten after every step (what finished survives a kill).

    python benchmarks/bench_gpu.py --out DIR                 # on a CUDA GPU, about 7 minutes
    python benchmarks/bench_gpu.py --out DIR --tiny          # CPU rehearsal: every step at toy sizes

The released generator comes from `.anchor/` (a copy of `../shared/anchor/`, see benchmarks/README.md); without it
those steps are recorded as not run. Writes DIR/gpu-<device>.json, DIR/gpu-<device>.md (the target table) and
leaves each step's own JSON in DIR/steps/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
ANCHOR = ROOT / ".anchor"

# The reference figures (shared/bench: the released trainer on an H100, fp16 AMP).
RELEASED_TRAIN_IMG_S_H100 = 41.7
PEAK_BF16 = 790e12  # measured dense bf16 matmul rate of an H100/H200 (shared/bench, KINDS.md)


# ---------------------------------------------------------------------------------------------------------------
# The plan: (name, argv, time limit in s). The released generator's steps run in .anchor/ (its imports are relative).


def plan(tiny: bool) -> list[dict]:
    py = sys.executable
    if tiny:  # toy sizes on CPU: proves every step's command line and the summary, not the numbers
        inf = ["--device", "cpu", "--sizes", "64", "--batches", "1", "--precisions", "fp32", "--warmup", "0",
               "--runs", "1", "--attention", "reference"]
        return [
            step("fused-tests", [py, "-m", "pytest", "-q", "-rs", "tests/models/test_fused.py"], 300),
            step("inference-256-eager", [py, "benchmarks/bench_inference.py", *inf, "--compile", "none",
                                         "--name", "inference-256-eager"], 300),
            step("released-inference", [py, "time_released.py", "--device", "cpu", "--batches", "1",
                                        "--runs", "1", "--warmup", "0"], 300, needs_anchor=True, json_flag=True),
            step("released-backward", [py, "time_released.py", "--device", "cpu", "--batches", "1",
                                       "--runs", "1", "--warmup", "0", "--backward"], 300, needs_anchor=True,
                 json_flag=True),
            step("generator-backward", [py, "benchmarks/bench_gpu.py", "--section", "generator-backward", "--tiny"],
                 300, section=True),
            step("nccl", [py, "benchmarks/bench_gpu.py", "--section", "nccl", "--tiny"], 120, section=True),
            step("train-256", [py, "benchmarks/bench_train.py", "--device", "cpu", "--sizes", "64", "--batches", "2",
                               "--warmup", "0", "--runs", "1"], 300),
            step("inference-large", [py, "benchmarks/bench_inference.py", *inf[:2], "--sizes", "128", "--batches",
                                     "1", "--precisions", "fp32", "--warmup", "0", "--runs", "1", "--compile",
                                     "none", "--attention", "reference", "--name", "inference-large"], 300),
            step("correspondence", [py, "benchmarks/bench_correspondence.py", "--device", "cpu", "--tokens", "256",
                                    "--batch", "1", "--precisions", "fp32", "--warmup", "0", "--runs", "1"], 300),
            step("inference-256-compiled", [py, "benchmarks/bench_inference.py", *inf, "--compile", "default",
                                            "--name", "inference-256-compiled"], 300),
        ]
    return [
        # 1. correctness of the fused kernel first: forward and backward, fp32 and bf16, the wide heads.
        # (-v and a per-test limit: the first GPU run timed out inside the CUDA tests without saying which)
        step("fused-tests", [py, "-m", "pytest", "-v", "-rs", "--durations=0", "-p", "no:cacheprovider",
                             "--timeout", "60", "tests/models/test_fused.py", "-k", "cuda"], 150),
        # 2. inference at 256, eager bf16 and fp32 (fp32 is the released code's default precision).
        step("inference-256-eager", [py, "benchmarks/bench_inference.py", "--device", "cuda", "--sizes", "256",
                                     "--batches", "1", "64", "--precisions", "bf16", "fp32", "--compile", "none",
                                     "--attention", "reference", "--warmup", "10", "--runs", "30",
                                     "--name", "inference-256-eager"], 75),
        # 4. the released generator in the same run (its README's AMP, and fp32).
        step("released-inference", [py, "time_released.py", "--device", "cuda", "--batches", "1", "8", "64",
                                    "--amp"], 60, needs_anchor=True, json_flag=True),
        step("released-backward", [py, "time_released.py", "--device", "cuda", "--batches", "8", "--amp",
                                   "--backward"], 45, needs_anchor=True, json_flag=True),
        step("generator-backward", [py, "benchmarks/bench_gpu.py", "--section", "generator-backward"], 45,
             section=True),
        # 3. one full training iteration: every loss of the paper recipe (random stand-ins), then D.
        step("train-256", [py, "benchmarks/bench_train.py", "--device", "cuda", "--sizes", "256", "--batches", "16",
                           "--warmup", "3", "--runs", "8"], 75),
        step("train-512", [py, "benchmarks/bench_train.py", "--device", "cuda", "--sizes", "512", "--batches", "8",
                           "--warmup", "2", "--runs", "4"], 90),
        # 2b. large inputs: 512 and 1024 at batch 1, bf16, matrix vs fused correspondence, peak memory.
        step("inference-large", [py, "benchmarks/bench_inference.py", "--device", "cuda", "--sizes", "512", "1024",
                                 "--batches", "1", "--precisions", "bf16", "--compile", "none", "--attention",
                                 "reference", "fused", "--warmup", "3", "--runs", "10", "--name", "inference-large"],
             90),
        step("nccl", [py, "benchmarks/bench_gpu.py", "--section", "nccl"], 40, section=True),
        # 5. the crossover that sets fused.MIN_TOKENS.
        step("correspondence", [py, "benchmarks/bench_correspondence.py", "--device", "cuda", "--tokens", "1024",
                                "4096", "16384", "--batch", "4", "--precisions", "bf16", "--backward",
                                "--warmup", "3", "--runs", "10"], 100),
        # 2c. compiled last: the slowest to start and the most likely to fail.
        step("inference-256-compiled", [py, "benchmarks/bench_inference.py", "--device", "cuda", "--sizes", "256",
                                        "--batches", "1", "64", "--precisions", "bf16", "--compile", "default",
                                        "--attention", "reference", "--warmup", "10", "--runs", "30",
                                        "--name", "inference-256-compiled"], 150),
        step("inference-256-cudagraphs", [py, "benchmarks/bench_inference.py", "--device", "cuda", "--sizes", "256",
                                          "--batches", "1", "64", "--precisions", "bf16", "--compile",
                                          "reduce-overhead", "--attention", "reference", "--warmup", "10", "--runs",
                                          "30", "--name", "inference-256-cudagraphs"], 150),
    ]


def step(name, argv, limit, *, needs_anchor=False, json_flag=False, section=False):
    return dict(name=name, argv=argv, limit=limit, needs_anchor=needs_anchor, json_flag=json_flag, section=section)


# ---------------------------------------------------------------------------------------------------------------
# Sections run in their own process (`--section NAME`): what the other scripts do not measure.


def section_generator_backward(tiny: bool, out: Path) -> int:
    """matebit's paper generator, forward + backward of the mean output, batch 8 at 256 under bf16 autocast: the
    counterpart of the released `time_released.py --backward --batches 8 --amp` (fp16 autocast)."""
    import torch

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(BENCH))
    from _common import header, measure, notes, print_table

    from matebit import speed
    from matebit.config import model_preset
    from matebit.models.generator import MATEBITGenerator

    device = torch.device("cpu" if tiny else "cuda")
    size, batch = (64, 1) if tiny else (256, 8)
    cfg = model_preset("paper")
    g = MATEBITGenerator(cfg).to(device).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, cfg.structure_channels, size, size, generator=gen).to(device)
    y = (torch.rand(batch, cfg.image_channels, size, size, generator=gen) * 2 - 1).to(device)
    precision = "fp32" if tiny else "bf16"
    ctx = speed.autocast_context(device, precision)

    def run():
        with ctx:
            out = g(x, y)
        img = out.image if hasattr(out, "image") else out
        img.float().mean().backward()

    m = measure(run, device, 0 if tiny else 3, 1 if tiny else 15)
    rows = [dict(size=size, batch=batch, precision=precision, note="out of memory")] if m is None else [
        dict(size=size, batch=batch, precision=precision, ms_per_iter=m["median_s"] * 1e3,
             images_per_s=batch / m["median_s"], peak_mib=m["peak_mib"], times_s=m["times_s"])]
    print_table(rows, ["size", "batch", "precision", "ms_per_iter", "images_per_s", "peak_mib", "note"])
    record = header(device, preset="paper", what="generator forward + backward (mean output)", **notes(device),
                    results=rows)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


def section_nccl(tiny: bool, out: Path) -> int:
    """One NCCL rank: DDP around the demo generator, one step, and the all-ranks finite flag of matebit.distributed."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    sys.path.insert(0, str(ROOT))
    from matebit.config import model_preset
    from matebit.models.generator import MATEBITGenerator
    from matebit.distributed import all_ranks

    backend = "gloo" if tiny else "nccl"
    device = torch.device("cpu" if tiny else "cuda")
    dist.init_process_group(backend, init_method="tcp://127.0.0.1:29533", rank=0, world_size=1)
    try:
        g = DDP(MATEBITGenerator(model_preset("demo")).to(device), device_ids=None if tiny else [0])
        x = torch.rand(2, 3, 64, 64, device=device)
        y = torch.rand(2, 3, 64, 64, device=device) * 2 - 1
        res = g(x, y)
        (res.image if hasattr(res, "image") else res).mean().backward()
        flags = [all_ranks(True, device), all_ranks(False, device)]
        result = dict(backend=backend, step="ok", all_ranks_true=flags[0], all_ranks_false=flags[1],
                      ok=flags == [True, False])
    finally:
        dist.destroy_process_group()
    print(result)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


SECTIONS = {"generator-backward": section_generator_backward, "nccl": section_nccl}


# ---------------------------------------------------------------------------------------------------------------
# Running the plan.


def run_step(s: dict, steps_dir: Path, remaining: float) -> dict:
    rec = dict(name=s["name"], limit_s=s["limit"])
    if s["needs_anchor"] and not (ANCHOR / "time_released.py").exists():
        return {**rec, "status": "not run", "why": f"{ANCHOR} missing (copy ../shared/anchor there)"}
    limit = min(s["limit"], remaining)
    if limit < 15:
        return {**rec, "status": "not run", "why": f"budget spent ({remaining:.0f} s left)"}
    argv = list(s["argv"])
    out_json = steps_dir / f"{s['name']}.json"
    if s["json_flag"]:
        argv += ["--json", str(out_json)]
    elif s["section"]:
        argv += ["--section-out", str(out_json)]
    elif "bench_" in " ".join(argv) and "--out" not in argv:
        argv += ["--out", str(steps_dir / s["name"])]
    rec["argv"] = argv
    print(f"\n=== {s['name']} (limit {limit:.0f} s): {' '.join(argv)}", flush=True)
    t0 = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cwd = ANCHOR if s["needs_anchor"] else ROOT
    try:
        p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=limit,
                           start_new_session=True)
        rc, text = p.returncode, p.stdout + p.stderr
        status = "ok" if rc == 0 else "failed"
    except subprocess.TimeoutExpired as exc:
        rc, status = None, "timed out"
        text = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or ""))
        text += ((exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or ""))
    rec.update(status=status, rc=rc, seconds=round(time.time() - t0, 1), output_tail=text[-3000:])
    print(text[-4000:], flush=True)
    print(f"=== {s['name']}: {status} in {rec['seconds']} s", flush=True)
    rec["results"] = collect_json(steps_dir, s["name"], out_json)
    return rec


def collect_json(steps_dir: Path, name: str, out_json: Path):
    """The step's own JSON: the file it was told to write, or whatever JSON it left in its folder."""
    found = [out_json] if out_json.exists() else sorted((steps_dir / name).glob("*.json"))
    data = []
    for f in found:
        try:
            data.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            pass
    return data[0] if len(data) == 1 else (data or None)


def environment() -> dict:
    env = dict(python=sys.version.split()[0])
    try:
        import torch
        env.update(torch=torch.__version__, cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(0)
                   if torch.cuda.is_available() else None)
    except Exception as exc:  # noqa: BLE001 - the record says what broke instead of stopping
        env["torch_error"] = repr(exc)
    for cmd, key in ((["git", "rev-parse", "HEAD"], "commit"),
                     (["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                       "--format=csv,noheader"], "nvidia_smi")):
        try:
            env[key] = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env[key] = None
    return env


# ---------------------------------------------------------------------------------------------------------------
# The summary against the targets.


def _rows(steps: dict, name: str) -> list[dict]:
    res = steps.get(name, {}).get("results")
    if isinstance(res, list):
        rows = []
        for r in res:
            rows += r.get("results", []) if isinstance(r, dict) else []
        return rows
    if isinstance(res, dict):
        return res.get("results", res.get("rows", []))
    return []


def _released(steps: dict, name: str) -> list[dict]:
    res = steps.get(name, {}).get("results")
    if isinstance(res, dict):
        return res.get("rows", res.get("results", []))
    return res if isinstance(res, list) else []


def _why(steps: dict, *names: str) -> str:
    for n in names:
        s = steps.get(n)
        if s is None:
            return f"{n}: not in this run"
        if s.get("status") != "ok":
            return f"{n}: {s.get('status')} {s.get('why', '')}".strip()
    return "no matching row"


def summary(record: dict) -> str:
    steps = {s["name"]: s for s in record["steps"]}
    lines = [f"# GPU run: {record['environment'].get('gpu')}", "",
             f"torch {record['environment'].get('torch')}, CUDA {record['environment'].get('cuda')}, "
             f"commit {str(record['environment'].get('commit')).split()[0][:10]}, {record['date']}", "",
             "| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {s['name']} | {s['status']} {s.get('why', '')} | {s.get('seconds', '')} |" for s in record["steps"]]

    inf = [r for r in _rows(steps, "inference-256-eager") + _rows(steps, "inference-256-compiled")
           + _rows(steps, "inference-256-cudagraphs")
           if "images_per_s" in r]
    rel = {(r.get("batch"), bool(r.get("backward"))): r for r in
           _released(steps, "released-inference") + _released(steps, "released-backward")}

    def best(batch, precision="bf16"):
        rows = [r for r in inf if r["batch"] == batch and r["precision"] == precision]
        return max(rows, key=lambda r: r["images_per_s"]) if rows else None

    lines += ["", "| target | goal | released (same run) | matebit | ratio | met |", "|---|---|---|---|---:|---|"]

    def target(name, goal, ours, theirs, ratio, met, why):
        if ours is None or theirs is None:
            lines.append(f"| {name} | {goal} | {theirs or '-'} | {ours or 'not measured: ' + why} | | |")
        else:
            lines.append(f"| {name} | {goal} | {theirs} | {ours} | {ratio:.2f}x | {'yes' if met else 'no'} |")

    b64, r64 = best(64), rel.get((64, False))
    target("256 throughput, batch 64", ">= 4x released",
           b64 and f"{b64['images_per_s']:.0f} img/s ({b64['compile']}, MFU {b64.get('mfu', 0):.1%})",
           r64 and f"{r64['img_per_s']:.0f} img/s (fp16 AMP)",
           b64 and r64 and b64["images_per_s"] / r64["img_per_s"],
           b64 and r64 and b64["images_per_s"] >= 4 * r64["img_per_s"], _why(steps, "inference-256-eager",
                                                                              "released-inference"))
    b1 = [r for r in inf if r["batch"] == 1 and r["precision"] == "bf16"]
    b1 = min(b1, key=lambda r: r["ms_per_image"]) if b1 else None
    r1 = rel.get((1, False))
    target("256 latency, batch 1", ">= 5x lower",
           b1 and f"{b1['ms_per_image']:.2f} ms ({b1['compile']})",
           r1 and f"{r1['median_s'] * 1e3:.2f} ms (fp16 AMP)",
           b1 and r1 and r1["median_s"] * 1e3 / b1["ms_per_image"],
           b1 and r1 and r1["median_s"] * 1e3 >= 5 * b1["ms_per_image"], _why(steps, "inference-256-eager",
                                                                              "released-inference"))
    gb = [r for r in _rows(steps, "generator-backward") if "images_per_s" in r]
    rb = rel.get((8, True))
    gb = gb[0] if gb else None
    target("G forward+backward, batch 8", ">= 4x released",
           gb and f"{gb['images_per_s']:.0f} img/s (bf16)", rb and f"{rb['img_per_s']:.0f} img/s (fp16 AMP)",
           gb and rb and gb["images_per_s"] / rb["img_per_s"],
           gb and rb and gb["images_per_s"] >= 4 * rb["img_per_s"], _why(steps, "generator-backward",
                                                                         "released-backward"))
    tr = [r for r in _rows(steps, "train-256") if "images_per_s" in r]
    tr = tr[0] if tr else None
    target("full training iteration, batch 16", f">= 4x {RELEASED_TRAIN_IMG_S_H100} img/s (released trainer, H100)",
           tr and f"{tr['images_per_s']:.0f} img/s, {tr['peak_mib'] / 1024:.1f} GiB",
           f"{RELEASED_TRAIN_IMG_S_H100} img/s (H100, shared/bench)",
           tr and tr["images_per_s"] / RELEASED_TRAIN_IMG_S_H100,
           tr and tr["images_per_s"] >= 4 * RELEASED_TRAIN_IMG_S_H100, _why(steps, "train-256"))
    big = [r for r in _rows(steps, "inference-large") if r.get("size") == 1024 and "peak_mib" in r]
    for r in big:
        lines.append(f"| 1024 inference, batch 1, {r['attention']} | within 12 GiB | cannot run | "
                     f"{r['peak_mib'] / 1024:.2f} GiB, {r['ms_per_image']:.1f} ms | | "
                     f"{'yes' if r['peak_mib'] <= 12 * 1024 else 'no'} |")
    if not big:
        lines.append(f"| 1024 inference, batch 1 | within 12 GiB | cannot run | not measured: "
                     f"{_why(steps, 'inference-large')} | | |")
    t5 = [r for r in _rows(steps, "train-512") if r.get("size") == 512]
    for r in t5:
        fits = "images_per_s" in r
        lines.append(f"| 512 training, batch 8 | fits | cannot run at 512 | "
                     f"{(str(round(r['images_per_s'], 1)) + ' img/s, ' + format(r['peak_mib'] / 1024, '.1f') + ' GiB') if fits else r.get('note')} "
                     f"| | {'yes' if fits else 'no'} |")
    if not t5:
        lines.append(f"| 512 training, batch 8 | fits | cannot run at 512 | not measured: "
                     f"{_why(steps, 'train-512')} | | |")

    lines += ["", "All inference rows (MFU against 790 TFLOP/s bf16 dense):", "",
              "| size | batch | precision | compile | attention | ms/image | img/s | peak GiB | GFLOP/img | MFU |",
              "|---:|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for r in inf + _rows(steps, "inference-large"):
        if "images_per_s" in r:
            lines.append(f"| {r['size']} | {r['batch']} | {r['precision']} | {r['compile']} | {r['attention']} | "
                         f"{r['ms_per_image']:.3f} | {r['images_per_s']:.1f} | {r['peak_mib'] / 1024:.2f} | "
                         f"{r['gflops_per_image']:.0f} | {r.get('mfu', 0):.1%} |")
    corr = [r for r in _rows(steps, "correspondence") if isinstance(r, dict)]
    if corr:
        keys = [k for k in ("tokens", "precision", "impl", "pass_", "ms", "min_ms", "peak_mib", "note")
                if any(k in r for r in corr)]
        lines += ["", "Correspondence alone (sets fused.MIN_TOKENS):", "", "| " + " | ".join(keys) + " |",
                  "|" + "---|" * len(keys)]
        for r in corr:
            lines.append("| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for the JSON, the Markdown summary and each step's JSON")
    p.add_argument("--tiny", action="store_true", help="CPU rehearsal at toy sizes")
    p.add_argument("--budget", type=float, default=420, help="seconds for all steps together (default 420)")
    p.add_argument("--steps-dir", type=Path, help="where each step's own JSON goes (default OUT/steps)")
    p.add_argument("--only", nargs="+", help="run only these steps")
    p.add_argument("--section", choices=sorted(SECTIONS), help=argparse.SUPPRESS)
    p.add_argument("--section-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.section:
        return SECTIONS[args.section](args.tiny, args.section_out or Path(os.devnull))
    if args.out is None:
        p.error("--out is required")

    import datetime

    args.out.mkdir(parents=True, exist_ok=True)
    steps_dir = args.steps_dir or args.out / "steps"
    steps_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget
    record = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  command=" ".join([Path(sys.executable).name] + sys.argv), tiny=args.tiny, budget_s=args.budget,
                  environment=environment(), steps=[])
    slug = "cpu-tiny" if args.tiny else (record["environment"].get("gpu") or "cpu").lower().replace(" ", "-")
    json_path, md_path = args.out / f"gpu-{slug}.json", args.out / f"gpu-{slug}.md"
    steps = plan(args.tiny)
    if args.only:  # in the order given
        steps = [s for name in args.only for s in steps if s["name"] == name]
    for s in steps:
        record["steps"].append(run_step(s, steps_dir, deadline - time.time()))
        json_path.write_text(json.dumps(record, indent=2) + "\n")
        try:
            md_path.write_text(summary(record))
        except Exception as exc:  # noqa: BLE001 - a summary bug must not lose the measurements
            md_path.write_text(f"summary failed: {exc!r}\n")
    print("\n" + md_path.read_text())
    print("wrote", json_path, md_path)
    failed = [s["name"] for s in record["steps"] if s["status"] != "ok"]
    print("steps not ok:", ", ".join(failed) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
