"""Speed switches: threads, precision, memory layout, baked weights, Winograd, compilation. Each has a stated default.

    from matebit import speed
    model, ctx = speed.prepare_for_inference(model, device)      # the recommended defaults, see below
    with torch.inference_mode(), ctx:
        out = model(structure, exemplar)

| switch                | default                                   | why                                                  |
|-----------------------|-------------------------------------------|------------------------------------------------------|
| configure_cpu_threads | the free cores (`choose_threads`): those  | OpenMP threads whose peer another process has        |
|                       | this process may use minus what other     | descheduled wait at every op, so spinning threads    |
|                       | processes use of them; re-chosen while    | beside a busy process slow a step by far more than   |
|                       | training (`ThreadGovernor`)               | one thread does (bench_contention.py)                |
| precision             | "auto": bf16 on CUDA and on CPUs with     | "fp32" for reference numbers; bf16 is faster where   |
|                       | native bf16 (AVX512-BF16 / AMX), else fp32| native and moves outputs little                      |
| cast_weights          | on with bf16: bf16 weights, no autocast   | autocast re-casts around every op on its fp32 list   |
|                       | (inputs are cast by hooks)                | (reflection padding: 2 casts per convolution)        |
| channels_last         | on CUDA; on CPU only when compiled        | cuDNN runs NHWC natively; on CPU every eager instance|
|                       |                                           | norm turns NHWC back into NCHW, two copies per conv; |
|                       |                                           | compiled, NHWC wins                                  |
| bake_weights          | on for inference                          | spectral norm re-divides every weight by sigma on    |
|                       |                                           | every call; inference can do it once                 |
| winograd              | on for fp32 on CPU (NNPACK), used while   | large 3x3 stride-1 convolutions in Winograd F(6x6,   |
|                       | torch runs 1 thread                       | 3x3): faster at 1 thread, no gain at 2 (NNPACK does  |
|                       |                                           | not scale); outputs move by ~2e-4                    |
| compile               | off (None); `Translator(compile=...)`,    | compiling takes tens of seconds per input shape on a |
|                       | `matebit translate/serve --compile`       | CPU before calls get faster; "reduce-overhead" (CUDA |
|                       |                                           | graphs) pays at batch 1 on a GPU. Pays for long runs |

`benchmarks/bench_side_by_side.py` prints each switch's own effect beside the authors' released generator; the
measured effects are in benchmarks/README.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from matebit.config import COMPILE_MODES, CompileMode  # the one list of modes (re-exported)
from matebit.errors import InputError

Precision = Literal["auto", "fp32", "bf16"]


# ---------------------------------------------------------------------------------------------------------------
# Threads: chosen from the load at start, re-chosen while a long job runs
#
# The OpenMP wait policy is left as torch has it (waiting threads spin). OMP_WAIT_POLICY=PASSIVE (set before torch
# loads) rescues 2 threads beside a busy process but slows the demo's step on idle cores (its many small ops each
# wake a sleeping thread), and once the count is down to 1 thread there is nothing to wait for; GOMP_SPINCOUNT's
# idle cost was not measured. The thread count is what wins (measured: benchmarks/README.md, "Beside a busy
# process").


def available_cores() -> int:
    """The cores this process may run on: `os.sched_getaffinity` respects container and taskset limits, which
    `os.cpu_count` does not."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """Busy CPU seconds (every process) of this process's cores since boot, from /proc/stat; None off Linux."""
    try:
        cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        with open("/proc/stat") as f:
            lines = [line.split() for line in f if line.startswith("cpu")]
    except (AttributeError, OSError):
        return None
    busy = 0
    for fields in lines:
        if fields[0] in cpus:  # user nice system idle iowait irq softirq steal ...
            values = [int(v) for v in fields[1:9]] + [0] * 8
            busy += sum(values[:3]) + sum(values[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class CpuSample:
    """A point to measure other processes' CPU use from: wall clock, busy seconds of our cores, our CPU seconds."""

    wall: float
    busy: float | None  # None: no /proc/stat (not Linux); the load average is used instead
    own: float

    @classmethod
    def now(cls) -> "CpuSample":
        return cls(time.monotonic(), _busy_seconds(), time.process_time())

    def others_since(self, earlier: "CpuSample") -> float:
        """Cores' worth of CPU that other processes used between `earlier` and this sample: the busy time of this
        process's cores minus this process's own CPU time (its threads; DataLoader workers count as others)."""
        wall = max(self.wall - earlier.wall, 1e-6)
        own = (self.own - earlier.own) / wall
        if self.busy is None or earlier.busy is None:
            try:  # the 1-minute load average lags and counts this process's running threads too
                return max(0.0, os.getloadavg()[0] - own)
            except OSError:
                return 0.0
        return max(0.0, (self.busy - earlier.busy) / wall - own)


_IMPORTED = CpuSample.now()  # the first window: from here to the first choose_threads()
MIN_WINDOW_S = 0.25  # 25 ticks of a 100 Hz clock on 1 core: enough to tell a busy core from an idle one
THREADS_ENV = "MATEBIT_THREADS"  # "auto" (the command line's default) or a number of threads


def threads_for(others: float, cores: int) -> int:
    """Threads that fit beside `others` cores' worth of other processes' work: the free cores, rounded.

    With one CPU-bound process beside it on 2 cores: while matebit runs 2 threads the other gets about 2/3 of a core
    (3 threads share 2 cores), and 2 - 0.67 rounds to 1; once matebit runs 1 thread the other gets a whole core,
    and 1 thread stays. When the other stops, 2 - 0 is 2 again. Light background work (under half a core: an
    editor, a browser at rest) keeps every core.
    """
    return max(1, min(cores, int(cores - others + 0.5)))


_fixed: int | None = None  # a count given to configure_cpu_threads: kept for the rest of the process


def requested_threads(requested: int | None = None) -> int | None:
    """A thread count the user fixed: `requested` (a --threads flag), else one given to `configure_cpu_threads`
    earlier in this process, else MATEBIT_THREADS=N, else OMP_NUM_THREADS; None when the count is matebit's to
    choose."""
    if requested:
        return max(1, int(requested))
    if _fixed is not None:
        return _fixed
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


_last_choice: tuple[float, int] | None = None  # (when, threads) of the last load-aware choice
_mark = _IMPORTED


def choose_threads(requested: int | None = None, cores: int | None = None) -> int:
    """Intra-op CPU threads for this process: the one load-aware choice of the package.

    A count the user fixed wins (`requested`, MATEBIT_THREADS=N, OMP_NUM_THREADS). Otherwise: the cores this
    process may use minus what other processes used of them since the previous choice (or since `matebit.speed`
    was imported; at least MIN_WINDOW_S, waited for if need be), by `threads_for`. With one CPU-bound process
    beside it on 2 cores that is 1 thread: two OpenMP threads whose peer another process has descheduled wait at
    every op, and the demo's 2-thread training step ran 50 times slower (benchmarks/bench_contention.py). A choice
    less than 10 s old is reused, so building several Translators samples once.
    """
    global _last_choice, _mark
    fixed = requested_threads(requested)
    if fixed is not None:
        return fixed
    cores = cores or available_cores()
    if _last_choice is not None and time.monotonic() - _last_choice[0] < 10.0:
        return min(cores, _last_choice[1])
    wait = MIN_WINDOW_S - (time.monotonic() - _mark.wall)
    if wait > 0:
        time.sleep(wait)
    now = CpuSample.now()
    threads = threads_for(now.others_since(_mark), cores)
    _mark, _last_choice = now, (time.monotonic(), threads)
    return threads


def configure_cpu_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads to `choose_threads(num_threads)` and return the count set. A count given here
    (a --threads flag) is the user's: later choices in this process keep it and nothing re-chooses it."""
    global _fixed
    if num_threads:
        _fixed = max(1, int(num_threads))
    torch.set_num_threads(choose_threads(num_threads))
    return torch.get_num_threads()


class ThreadGovernor:
    """Re-chooses torch's intra-op threads while a long job runs: `tick()` after every step (cheap; it looks every
    `every_s` seconds) compares what other processes used of this process's cores since the last look with the
    cores (`threads_for`) and calls `torch.set_num_threads` when the answer changes. Load that appears after the
    start (a browser, a second training) takes the count down within `every_s`; when it goes, the count goes back.

    `changes` lists (seconds since the start, threads) of every change, for logs and benchmarks.
    """

    def __init__(self, cores: int | None = None, every_s: float = 3.0):
        self.cores = cores or available_cores()
        self.every_s = every_s
        self._t0 = time.monotonic()
        self._mark = CpuSample.now()
        self.changes: list[tuple[float, int]] = []

    def tick(self) -> int | None:
        """The new thread count when it changed, else None."""
        if time.monotonic() - self._mark.wall < self.every_s:
            return None
        now = CpuSample.now()
        want = threads_for(now.others_since(self._mark), self.cores)
        self._mark = now
        if want == torch.get_num_threads():
            return None
        torch.set_num_threads(want)
        self.changes.append((round(now.wall - self._t0, 1), want))
        return want


def thread_governor(device: torch.device | str = "cpu") -> ThreadGovernor | None:
    """A ThreadGovernor when this process's thread count is matebit's to re-choose: a CPU device, MATEBIT_THREADS
    =auto (the `matebit` command sets it unless the user set it) and no count fixed by the user (--threads N,
    OMP_NUM_THREADS). None for library calls (a run's arithmetic stays repeatable bit for bit at a fixed count) and
    on GPUs."""
    if torch.device(device).type != "cpu" or os.environ.get(THREADS_ENV, "").strip().lower() != "auto":
        return None
    if requested_threads() is not None:
        return None
    return ThreadGovernor()


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is not None:
        try:
            if not probe():
                return False
        except RuntimeError:
            return False
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is no such file)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def _cpu_flags() -> frozenset[str]:
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name, for results files (e.g. "AMD EPYC"); the platform's word for it where Linux's
    /proc/cpuinfo is missing."""
    import platform

    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def resolve_precision(device: torch.device | str, precision: Precision = "auto") -> torch.dtype:
    """The compute dtype for a device: "auto" is bf16 on CUDA and on CPUs with native bf16, else fp32.

    Asking for bf16 where the hardware lacks it is an error rather than a silent slow emulation.
    """
    device = torch.device(device)
    if precision == "fp32":
        return torch.float32
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and cpu_supports_bf16():
            # Native bf16 (AMX / AVX512-BF16): faster than fp32 for outputs that differ little (measured:
            # benchmarks/README.md). Without native support bf16 is emulated and slower, so fp32 stays.
            return torch.bfloat16
        return torch.float32
    if precision != "bf16":
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError("this GPU has no bf16; use precision='fp32'")
    if device.type == "cpu" and not cpu_supports_bf16():
        raise RuntimeError("this CPU has no native bf16 (no AVX512-BF16 or AMX); use precision='fp32'")
    return torch.bfloat16


def autocast_context(device: torch.device | str, precision: Precision = "auto"):
    """torch.autocast for bf16, a no-op context for fp32."""
    device = torch.device(device)
    if resolve_precision(device, precision) == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def to_channels_last(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Store 4-D weights NHWC (in place). Inputs follow: a channels-last weight makes convolutions return
    channels-last outputs, so only the network's inputs need converting (`channels_last_input`)."""
    return module.to(memory_format=torch.channels_last) if enabled else module


def channels_last_input(x: torch.Tensor, enabled: bool | None = None) -> torch.Tensor:
    """NHWC copy of a 4-D input; `enabled=None` follows `prepare_for_inference`'s eager default for x's device."""
    if enabled is None:
        enabled = default_channels_last(x.device)
    return x.contiguous(memory_format=torch.channels_last) if enabled and x.dim() == 4 else x


def default_channels_last(device: torch.device | str, compiled: bool = False) -> bool:
    """NHWC on CUDA, and on CPU under torch.compile. Not in eager CPU runs: the model's instance norms
    (F.instance_norm) return NCHW, so an NHWC network pays a copy into NCHW after every convolution and one back
    before the next, which made it slower. A compiled graph lays out those norms itself, and there NHWC won
    (benchmarks/bench_side_by_side.py prints each switch's effect; results in benchmarks/README.md)."""
    return torch.device(device).type == "cuda" or compiled


def bake_weights(module: nn.Module) -> nn.Module:
    """Replace parametrised weights (spectral norm) by their current value, in place: inference only.

    In eval mode spectral norm no longer updates its estimate but still divides the weight by sigma on every
    forward; baking does that once. The model can no longer be trained or saved as a training checkpoint.
    """
    from torch.nn.utils import parametrize

    for sub in module.modules():
        if parametrize.is_parametrized(sub):
            for name in list(sub.parametrizations.keys()):
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    return module


def cast_inputs(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast floating-point positional inputs of every leaf layer that holds weights (convolutions, linear
    layers, PReLU, norms) to `dtype`, by forward pre-hooks.

    With bf16 weights this replaces autocast: fp32 inputs (images) are cast where they first meet a weight,
    and the ops autocast keeps in fp32 (reflection padding) run on bf16 instead of casting there and back.
    Images stay fp32 until then, so ops without bf16 kernels (antialiased resizing) still get fp32. A layer
    with a parametrised weight (unbaked spectral norm) counts as a leaf.
    """

    def hook(_module, args):
        return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dtype != dtype
                     else a for a in args)

    from torch.nn.utils import parametrize

    for sub in module.modules():
        leaf = next(sub.children(), None) is None
        if parametrize.is_parametrized(sub) or (leaf and any(p.is_floating_point() for p in sub.parameters(False))):
            sub.register_forward_pre_hook(hook)
    return module


@functools.lru_cache(maxsize=1)
def nnpack_works() -> bool:
    """NNPACK (in PyTorch's x86 and ARM builds) is present and runs on this CPU. Asking initialises it:
    `torch._nnpack_spatial_convolution` fails until something has called `torch._nnpack_available()`."""
    try:
        if not torch.backends.nnpack.is_available():
            return False
        x, w = torch.ones(1, 1, 8, 8), torch.ones(1, 1, 3, 3)
        # NNPACK sizes its own thread pool once, at its first convolution, from torch's thread count then, and
        # never resizes it. Winograd runs only at 1 thread (WINOGRAD_MAX_THREADS), so the pool gets 1 thread: one
        # sized at 2 made every convolution use both cores at "1 thread", no faster, taking back the core the
        # thread governor had given up to another process (benchmarks/README.md).
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            out = torch._nnpack_spatial_convolution(x, w, None, [1, 1], [1, 1])
        finally:
            torch.set_num_threads(before)
        return bool(torch.allclose(out, F.conv2d(x, w, padding=1)))
    except (RuntimeError, AttributeError):
        return False


# Below this many multiply-adds a convolution stays on oneDNN: NNPACK's per-call set-up and thread hand-offs
# made small ones slower (8 to 32 channels at 8 to 64 pixels). Every 3x3 layer of the paper generator at 256x256
# except the 3-channel ones is above it (0.6e9 to 2.4e9).
WINOGRAD_MIN_MACS = 2**28
# Above this many intra-op threads the layers take oneDNN. NNPACK's threadpool did not scale here: at 2 threads
# its layers were no faster than at 1, so the whole fp32 forward gained nothing over oneDNN at 2 threads, while at
# 1 thread it was faster (measured: benchmarks/README.md, "On a CPU").
# Checked at every call: the thread governor changes the count while a job runs.
WINOGRAD_MAX_THREADS = 1


class WinogradConv2d(nn.Conv2d):
    """A 3x3 stride-1 Conv2d that runs through NNPACK's Winograd F(6x6, 3x3) for fp32 CPU inference.

    For the paper generator's shapes (64 to 512 channels, 16 to 256 pixels) it is faster than oneDNN's direct fp32
    convolution at 1 thread (bench_side_by_side.py --threads 1; results in benchmarks/README.md).
    Winograd rounds differently: one convolution moves by ~6e-5 (oneDNN ~1e-6), the paper generator's output
    image by up to ~2e-4 in [-1, 1]. Anything else (bf16, CUDA, autograd, small layers, more than
    WINOGRAD_MAX_THREADS threads) takes the ordinary path.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (input.device.type != "cpu" or input.dtype != torch.float32 or weight.dtype != torch.float32
                or input.dim() != 4 or torch.is_grad_enabled() or torch.get_num_threads() > WINOGRAD_MAX_THREADS
                or weight.numel() * input.shape[0] * input.shape[2] * input.shape[3] < WINOGRAD_MIN_MACS):
            return super()._conv_forward(input, weight, bias)
        if self.padding_mode != "zeros":
            input, padding = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), [0, 0]
        else:
            padding = list(self.padding)
        return torch._nnpack_spatial_convolution(input.contiguous(), weight.contiguous(), bias, padding, [1, 1])


def use_winograd(module: nn.Module) -> int:
    """Turn every plain 3x3, stride-1, ungrouped, undilated Conv2d into a `WinogradConv2d` (in place) and return
    how many. Parametrised layers (unbaked spectral norm) are left alone. Inference only."""
    from torch.nn.utils import parametrize

    if not nnpack_works():  # also initialises NNPACK, which its convolution op does not do by itself
        return 0
    count = 0
    for sub in module.modules():
        if (type(sub) is nn.Conv2d and sub.kernel_size == (3, 3) and sub.stride == (1, 1) and sub.dilation == (1, 1)
                and sub.groups == 1 and isinstance(sub.padding, tuple) and not parametrize.is_parametrized(sub)):
            sub.__class__ = WinogradConv2d
            count += 1
    return count


def maybe_compile(module: nn.Module, mode: CompileMode | None = None, freeze: bool = False) -> nn.Module:
    """torch.compile the module when `mode` is given (default None: eager).

    "default" fuses elementwise work; "reduce-overhead" adds CUDA graphs, which pays at batch 1 on a GPU where
    launch overhead dominates; "max-autotune" searches kernel configurations (long compile). `freeze` (with
    "default" only) lets Inductor treat the weights as constants: on CPU it pre-packs them for oneDNN and fuses
    the elementwise work around the convolutions (inference only).
    """
    if mode is None:
        return module
    if mode not in COMPILE_MODES:  # the one check of a mode (Translator's compile= comes through here)
        raise InputError(f"compile must be None or one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if freeze and mode == "default":
        return torch.compile(module, options={"freezing": True})
    return torch.compile(module, mode=mode)


def inference_defaults(device: torch.device | str, dtype: torch.dtype, compiled: bool = False) -> dict[str, bool]:
    """The switches `prepare_for_inference` uses by default for this device and compute dtype, eager or compiled.
    Compiled graphs get Inductor's own convolutions (pre-packed oneDNN), so Winograd is off there."""
    device = torch.device(device)
    return dict(channels_last=default_channels_last(device, compiled), bake=True, cast_weights=True,
                winograd=device.type == "cpu" and dtype == torch.float32 and not compiled and nnpack_works())


def prepare_for_inference(model: nn.Module, device: torch.device | str, precision: Precision = "auto",
                          channels_last: bool | None = None, bake: bool | None = None,
                          compile_mode: CompileMode | None = None, cast_weights: bool | None = None,
                          winograd: bool | None = None):
    """Move `model` to `device` in eval mode with the switches above; returns (model, context to run it in).

    A switch left at None takes `inference_defaults(device, dtype, compiled=compile_mode is not None)`. With bf16
    and `cast_weights` the weights are stored in bf16 and the context is a no-op: hooks cast fp32 inputs where they
    meet a weight, and no op is re-cast to fp32 and back (autocast does that around reflection padding). Outputs
    are then bf16, so callers should `.float()`. Without `cast_weights` the context is bf16 autocast over fp32
    weights. With `compile_mode` on CPU the weights are frozen into the compiled graph, Winograd defaults off and
    channels_last on (inputs: `channels_last_input(x, default_channels_last(device, compiled=True))`).
    """
    device = torch.device(device)
    dtype = resolve_precision(device, precision)
    defaults = inference_defaults(device, dtype, compiled=compile_mode is not None)
    channels_last = defaults["channels_last"] if channels_last is None else channels_last
    bake = defaults["bake"] if bake is None else bake
    cast_weights = defaults["cast_weights"] if cast_weights is None else cast_weights
    winograd = defaults["winograd"] if winograd is None else winograd
    model = model.to(device).eval()
    if bake:
        bake_weights(model)
    if winograd and dtype == torch.float32:
        use_winograd(model)
    pure_bf16 = dtype == torch.bfloat16 and cast_weights
    if pure_bf16:
        model = cast_inputs(model.to(dtype), dtype)
    model = to_channels_last(model, channels_last)
    model = maybe_compile(model, compile_mode, freeze=device.type == "cpu")
    ctx = autocast_context(device, "bf16" if dtype == torch.bfloat16 and not pure_bf16 else "fp32")
    return model, ctx
