"""The authors' released generator and matebit side by side: one process, the same inputs, interleaved timing.

    python benchmarks/bench_side_by_side.py                  # CPU: 256x256, batch 1, 7 rounds (a few minutes)
    python benchmarks/bench_side_by_side.py --quick          # smoke test: 1 round, under a minute
    python benchmarks/bench_side_by_side.py --device cuda --batches 1 8 64 --compile

The released generator (github AiArt-Gao/MATEBIT, MIT) is a measuring stick, never part of this repository: it is
copied from `--anchor` (default `<repo>/../shared/anchor`) into the ignored folder `<repo>/.anchor/` and imported
from there, built with the options of the anchor's `time_released.py` (random weights). matebit's generator is
the `paper` preset with random weights (speed does not depend on the values).

Every configuration is a row. After a warm-up, the rows are timed round-robin (released, then each matebit row,
then again), so a busy neighbour slows every row alike; the table gives the median and the fastest run of each
and its ratio to the released generator in fp32 (= 1.00x). Rows:

  released fp32, released under autocast (bf16 on CPU, fp16 on CUDA as the released trainer's AMP),
  matebit plain module in fp32 (no speed switch), matebit through `speed.prepare_for_inference` in fp32 and at
  the default precision, and for each speed switch a row with that switch alone flipped from its default, so
  that every switch's own effect is printed (`--compile` adds torch.compile rows and reports compile time).

On CPU the table also gives the process CPU seconds per image and their ratio to the released generator's. On a
shared machine 2 threads can be several times slower than 1 (an OpenMP thread waits at every op for a peer that
another process has descheduled): there, run with `--threads 1` and read the CPU columns, and quote wall times
only from an idle machine.

Writes benchmarks/results/side-by-side-<device>.json: machine, date, torch, threads, the command, every time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from _common import device_name, header, load_average, median, notes, print_table, time_it_cpu, write_json  # noqa: E402

from matebit import speed  # noqa: E402
from matebit.config import model_preset  # noqa: E402
from matebit.models.generator import MATEBITGenerator  # noqa: E402

ANCHOR_COPY = REPO / ".anchor"  # ignored (.gitignore): the released code never enters the repository


def ensure_anchor(source: Path) -> Path:
    """Copy the anchor folder into <repo>/.anchor/ unless it is there already; return the copy."""
    if not (ANCHOR_COPY / "released").is_dir():
        if not (source / "released").is_dir():
            raise SystemExit(f"no released code at {source}/released: pass --anchor <folder with released/>")
        shutil.copytree(source, ANCHOR_COPY, dirs_exist_ok=True)
    return ANCHOR_COPY


def build_released(anchor: Path, device: torch.device) -> torch.nn.Module:
    """The released DynaSTGenerator as the anchor's time_released.py builds it: 256x256 (its learned 32x32
    positional tensor), ngf 64, spectral instance norm, attention on, inference options."""
    here = anchor / "released"
    sys.path[:0] = [str(here / "stubs"), str(here)]
    from models.networks.generator import DynaSTGenerator

    opt = argparse.Namespace(semantic_nc=3, ngf=64, max_multi=8, pos_dim=16, crop_size=256, n_layers=3,
                             prune_dim=16, isTrain=False, norm_E="spectralinstance", norm_G="spectralinstance",
                             use_atten=True, weight_novgg_featpair=0, mcl=False)
    return DynaSTGenerator(opt).to(device).eval()


@dataclass
class Row:
    name: str
    step: Callable[[torch.Tensor, torch.Tensor], object]  # (structure, exemplar) -> anything
    switches: dict = field(default_factory=dict)  # what the row sets, for the JSON and the switch table
    times: list[float] = field(default_factory=list)  # seconds per image, one per round
    cpu: list[float] = field(default_factory=list)  # process CPU seconds per image
    first_call_s: float | None = None  # the first warm-up call (compile time for compiled rows)
    error: str | None = None


def released_rows(anchor: Path, device: torch.device, amp: bool) -> list[Row]:
    g = build_released(anchor, device)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def run(autocast: bool):
        def step(s, e):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
                return g(e, e, s, s)["fake_image"]  # (ref_img, real_img, seg_map, ref_seg_map) as time_released
        return step

    rows = [Row("released, fp32 eager", run(False), dict(precision="fp32"))]
    if amp:
        rows.append(Row(f"released, {str(amp_dtype).split('.')[-1]} autocast", run(True),
                        dict(precision=f"autocast {amp_dtype}")))
    return rows


def matebit_step(model, ctx, channels_last: bool):
    def step(s, e):
        with ctx:
            return model(speed.channels_last_input(s, channels_last), speed.channels_last_input(e, channels_last)).image
    return step


def matebit_rows(preset: str, device: torch.device, compile_modes: list[str], only: set[str] | None) -> list[Row]:
    """The plain module, then prepare_for_inference at fp32 and at the default precision with its default
    switches, then each switch flipped alone."""
    cfg = model_preset(preset)
    torch.manual_seed(0)
    state = MATEBITGenerator(cfg).state_dict()  # one set of random weights, loaded into every row

    def fresh():
        m = MATEBITGenerator(cfg)
        m.load_state_dict(state)
        return m

    plain = fresh().to(device).eval()  # no speed switch at all
    rows = [Row("matebit plain module, fp32 eager", matebit_step(plain, contextlib.nullcontext(), False),
                dict(precision="fp32", prepared=False))]
    default_dtype = speed.resolve_precision(device, "auto")
    precisions = ["fp32"] + (["bf16"] if default_dtype == torch.bfloat16 else [])
    for precision in precisions:
        dtype = speed.resolve_precision(device, precision)
        defaults = speed.inference_defaults(device, dtype)
        # (label, switches changed from the defaults, the switch whose effect the row shows, the row it is
        # compared with): each switch flipped alone against the defaults, compilation against eager, and
        # channels_last flipped under compilation against the compiled row (Inductor lays out its own graph).
        variants = [("defaults", {}, None, None)]
        for key, value in defaults.items():
            if (key == "cast_weights" and dtype == torch.float32) or (
                    key == "winograd" and (dtype != torch.float32 or device.type != "cpu"
                                           or torch.get_num_threads() > speed.WINOGRAD_MAX_THREADS)):
                continue  # no effect here (Winograd is NNPACK: fp32 on CPU, 1 thread, only for baked layers)
            variants.append((f"{key} {'off' if value else 'on'}", {key: not value}, key, "defaults"))
        # Compiled rows take prepare_for_inference's compiled defaults (Winograd off; channels_last on CPU too).
        compiled_defaults = speed.inference_defaults(device, dtype, compiled=True)
        changed = {k: v for k, v in compiled_defaults.items() if v != defaults[k]}
        for mode in compile_modes:
            compiled = f"compile {mode}" + "".join(f", {k} {'on' if v else 'off'}" for k, v in changed.items())
            cl = not compiled_defaults["channels_last"]
            variants += [(compiled, {"compile_mode": mode, **changed}, "compile_mode", "defaults"),
                         (f"compile {mode}, channels_last {'on' if cl else 'off'}",
                          {"compile_mode": mode, **changed, "channels_last": cl}, "channels_last", compiled)]
        for label, flip, switch, reference in variants:
            if only is not None and label.split()[0] not in only and label != "defaults":
                continue
            kw = {**defaults, "compile_mode": None, **flip}
            name = f"matebit prepared {precision}{' (default precision)' if dtype == default_dtype else ''}, {label}"
            try:
                model, ctx = speed.prepare_for_inference(fresh(), device, precision, **kw)
            except Exception as exc:  # noqa: BLE001 - a failing row is reported, the others still run
                rows.append(Row(name, None, dict(precision=precision, **kw), error=f"{type(exc).__name__}: {exc}"))
                continue
            rows.append(Row(name, matebit_step(model, ctx, kw["channels_last"]),
                            dict(precision=precision, prepared=True, flipped=list(flip), variant=label,
                                 effect_of=switch, compared_with=reference, **kw)))
    return rows


def inputs(batch: int, device: torch.device, size: int = 256):
    g = torch.Generator().manual_seed(batch)
    s = torch.rand(batch, 3, size, size, generator=g).to(device)  # structure x_A in [0, 1]
    e = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)  # exemplar y_B in [-1, 1]
    return s, e


def call(row: Row, s, e, device, reps: int) -> tuple[float, float]:
    """One timed sample: `reps` calls; (wall, process CPU) seconds per call."""
    def fn():
        for _ in range(reps):
            row.step(s, e)
    with torch.inference_mode():
        walls, cpus = time_it_cpu(fn, device, 0, 1)
    return walls[0] / reps, cpus[0] / reps


def run_batch(rows: list[Row], batch: int, device, warmup: int, rounds: int, reps: int) -> list[dict]:
    s, e = inputs(batch, device)
    live = [r for r in rows if r.error is None]
    for r in live:
        r.times, r.cpu, r.first_call_s = [], [], None
    # Warm-up rounds, then timed rounds, each interleaved: the first call builds oneDNN primitives or compiles.
    for k in range(warmup + rounds):
        timed = k >= warmup
        for r in live:
            if r.error is not None:
                continue
            try:
                wall, cpu = call(r, s, e, device, reps if timed else 1)
            except Exception as exc:  # noqa: BLE001 - a failing row is reported, the others still run
                r.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                continue
            if r.first_call_s is None:
                r.first_call_s = wall
            if timed:
                r.times.append(wall / batch)
                r.cpu.append(cpu / batch)
        if timed:
            print(f"  batch {batch}: round {k - warmup + 1}/{rounds} (load average {load_average():.1f})", flush=True)

    base = rows[0]
    ref = median(base.times) if base.times else float("nan")
    ref_cpu = median(base.cpu) if base.cpu else float("nan")
    out = []
    for r in rows:
        row = dict(configuration=r.name, batch=batch, **{k: v for k, v in r.switches.items() if k != "flipped"})
        if r.switches.get("flipped"):
            row["flipped"] = r.switches["flipped"]
        if r.error or not r.times:
            row["error"] = r.error or "no time"
        else:
            m = median(r.times)
            row.update(s_per_image=m, fastest_s=min(r.times), vs_released=ref / m, images_per_s=1 / m,
                       cpu_s_per_image=median(r.cpu), cpu_vs_released=ref_cpu / median(r.cpu),
                       first_call_s=r.first_call_s,
                       times_s=[round(t, 6) for t in r.times])
        out.append(row)
    return out


def switch_effects(results: list[dict]) -> list[dict]:
    """Each flipped row beside its default row: speed-up of the switch when on (>1: the switch wins)."""
    effects = []
    by_variant = {(r["batch"], r["precision"], r["variant"]): r for r in results if r.get("prepared")}
    for r in results:
        if not r.get("effect_of") or "s_per_image" not in r:
            continue
        d = by_variant.get((r["batch"], r["precision"], r["compared_with"]))
        if d is None or "s_per_image" not in d:
            continue
        key = r["effect_of"]
        default_on = bool(d.get(key))
        on, off = (d, r) if default_on else (r, d)
        speedup = off["s_per_image"] / on["s_per_image"]
        effects.append(dict(batch=r["batch"], precision=r["precision"],
                            switch=key if r["compared_with"] == "defaults" else f"{key} ({r['compared_with']})",
                            default="on" if default_on else "off", on_s=on["s_per_image"], off_s=off["s_per_image"],
                            speedup_when_on=speedup,
                            verdict=("ok" if (speedup >= 1) == default_on else
                                     "ON BY DEFAULT BUT SLOWER" if default_on else "off by default but faster")))
    return effects


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--anchor", type=Path, default=REPO.parent / "shared" / "anchor",
                   help="folder holding the released code (released/), copied into <repo>/.anchor/")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--preset", default="paper")
    p.add_argument("--batches", type=int, nargs="+", default=[1])
    p.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds; the median is reported")
    p.add_argument("--warmup", type=int, default=None, help="untimed interleaved rounds first (CPU 2, CUDA 5)")
    p.add_argument("--reps", type=int, default=None, help="calls per timed sample (CPU 1, CUDA 10)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all usable cores)")
    p.add_argument("--compile", nargs="*", default=None, metavar="MODE",
                   help="add torch.compile rows (modes, default: 'default'); reports compile time")
    p.add_argument("--no-amp", action="store_true", help="leave out the released generator under autocast")
    p.add_argument("--only", nargs="*", default=None,
                   help="only these switch rows (channels_last, bake, cast_weights, winograd, compile); default all")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: no warm-up, 1 round, batch 1 (first calls include one-off set-up)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--name", default="side-by-side")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if not gpu:
        speed.configure_cpu_threads(args.threads)
    if args.quick:
        args.batches, args.rounds = [1], 1
        args.warmup = 0 if args.warmup is None else args.warmup
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 2)
    reps = args.reps if args.reps is not None else (10 if gpu else 1)
    compile_modes = [] if args.compile is None else (args.compile or ["default"])

    anchor = ensure_anchor(args.anchor)
    t0 = time.perf_counter()
    rows = released_rows(anchor, device, amp=not args.no_amp)
    t1 = time.perf_counter()
    rows += matebit_rows(args.preset, device, compile_modes, set(args.only) if args.only is not None else None)
    print(f"built the released generator in {t1 - t0:.0f} s and {len(rows)} configurations in "
          f"{time.perf_counter() - t0:.0f} s; "
          f"{warmup} warm-up and {args.rounds} timed rounds, interleaved", flush=True)

    load0 = load_average()
    results = []
    for batch in args.batches:
        results += run_batch(rows, batch, device, warmup, args.rounds, reps)
    effects = switch_effects(results)

    print()
    table = [dict(configuration=r["configuration"], batch=r["batch"],
                  **({"s/image (median)": r["s_per_image"], "fastest": r["fastest_s"],
                      "vs released": f"{r['vs_released']:.2f}x", "CPU s/image": r["cpu_s_per_image"],
                      "CPU vs released": f"{r['cpu_vs_released']:.2f}x",
                      "first call s": r["first_call_s"]}
                     if "s_per_image" in r else
                     {"s/image (median)": "error: " + r["error"]}))
             for r in results]
    print_table(table, ["configuration", "batch", "s/image (median)", "fastest", "vs released"]
                + ([] if gpu else ["CPU s/image", "CPU vs released"]) + (["first call s"] if compile_modes else []))
    if effects:
        print("\neach switch alone (speed-up when on = time off / time on):")
        print_table(effects, ["batch", "precision", "switch", "default", "on_s", "off_s", "speedup_when_on",
                              "verdict"])
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")
           if k in os.environ}
    flags = speed._cpu_flags()
    how = {k: v for k, v in notes(device).items() if k != "memory"}  # no memory is taken here
    record = header(device, machine=dict(node=platform.node(), cpu=device_name(device), cpu_count=os.cpu_count(),
                                         avx512_bf16="avx512_bf16" in flags, amx_bf16="amx_bf16" in flags,
                                         nnpack=speed.nnpack_works(), load_average_before=load0,
                                         load_average_after=load_average(), environment=env),
                    anchor=dict(source=str(args.anchor), copy=str(ANCHOR_COPY),
                                code="github AiArt-Gao/MATEBIT 92f9c53, MIT (see its README)"),
                    preset=args.preset, batches=args.batches, rounds=args.rounds, warmup=warmup, reps=reps,
                    size=256, grad_mode="torch.inference_mode for every row", **how,
                    timing_order="interleaved: each round times every configuration once, in table order",
                    results=results, switch_effects=effects)
    print("wrote", write_json(args.name, device, record, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
