"""Speed switches: threads, precision, memory layout, baked weights, compilation. Each is opt-in with a stated default.

    from matebit import speed
    model, ctx = speed.prepare_for_inference(model, device)      # the recommended defaults, see below
    with torch.inference_mode(), ctx:
        out = model(structure, exemplar)

| switch                | default                                   | why                                                  |
|-----------------------|-------------------------------------------|------------------------------------------------------|
| configure_cpu_threads | all cores this process may use            | torch may count hyper-threads or the whole host      |
| precision             | "auto": bf16 on CUDA and on CPUs with     | "fp32" for exact reference numbers; bf16 moved the   |
|                       | native bf16 (AVX512-BF16 / AMX), else fp32| demo model's outputs by 0.4/255 on average           |
| channels_last         | on                                        | oneDNN and cuDNN convolutions run NHWC natively      |
| bake_weights          | on for inference                          | spectral norm re-divides every weight by sigma on    |
|                       |                                           | every call; inference can do it once                 |
| compile               | off (None)                                | minutes of compile time; "reduce-overhead" (CUDA     |
|                       |                                           | graphs) pays at batch 1 on a GPU                     |

The measured effect of each on CPU is in benchmarks/README.md.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Literal

import torch
import torch.nn as nn

Precision = Literal["auto", "fp32", "bf16"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]


def configure_cpu_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads to `num_threads` (default: the cores this process may run on) and return it.

    `os.sched_getaffinity` respects container and taskset limits, which `os.cpu_count` does not.
    """
    if num_threads is None:
        try:
            num_threads = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            num_threads = os.cpu_count() or 1
    torch.set_num_threads(max(1, num_threads))
    return torch.get_num_threads()


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
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


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
            # Native bf16 (AMX / AVX512-BF16): a 256x256 paper-preset forward takes 0.50 s instead of 1.24 s on
            # 2 idle cores (benchmarks/README.md), and the demo model's outputs move by 0.4/255 on average
            # (51 dB PSNR against fp32). Without native support bf16 is emulated and slower, so fp32 stays.
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


def channels_last_input(x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if enabled and x.dim() == 4 else x


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


def maybe_compile(module: nn.Module, mode: CompileMode | None = None) -> nn.Module:
    """torch.compile the module when `mode` is given (default None: eager).

    "default" fuses elementwise work; "reduce-overhead" adds CUDA graphs, which pays at batch 1 on a GPU where
    launch overhead dominates; "max-autotune" searches kernel configurations (long compile).
    """
    if mode is None:
        return module
    return torch.compile(module, mode=mode)


def prepare_for_inference(model: nn.Module, device: torch.device | str, precision: Precision = "auto",
                          channels_last: bool = True, bake: bool = True, compile_mode: CompileMode | None = None,
                          cast_weights: bool = True):
    """Move `model` to `device` in eval mode with the switches above; returns (model, autocast context).

    With bf16, `cast_weights=True` also stores the weights in bf16 (on CPU this halves weight reorders and
    beat autocast over fp32 weights in benchmarks/README.md); outputs are then bf16, so callers should `.float()`.
    """
    device = torch.device(device)
    dtype = resolve_precision(device, precision)
    model = model.to(device).eval()
    if bake:
        bake_weights(model)
    if dtype == torch.bfloat16 and cast_weights:
        model = model.to(dtype)
    model = to_channels_last(model, channels_last)
    model = maybe_compile(model, compile_mode)
    ctx = autocast_context(device, "bf16" if dtype == torch.bfloat16 else "fp32")
    return model, ctx
