"""The inference speed switches change speed, not results: baked spectral norm and Winograd give the plain
module's image, and Winograd runs only where it was measured to win (fp32, CPU, no autograd, 1 thread)."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from matebit import speed
from matebit.config import model_preset
from matebit.models.generator import MATEBITGenerator


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _count_nnpack(monkeypatch):
    calls = []
    real = torch._nnpack_spatial_convolution

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", counted)
    return calls


def _big_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, padding=1)  # 64*64*9 * 64*64 pixels = 1.5e8 MACs per image; batch 2 clears the floor
    x = torch.randn(2, 64, 64, 64)
    assert conv.weight.numel() * 2 * 64 * 64 >= speed.WINOGRAD_MIN_MACS
    return conv, x


@pytest.mark.skipif(not speed.nnpack_works(), reason="no NNPACK on this CPU")
def test_winograd_runs_at_one_thread_and_matches_onednn(monkeypatch, one_thread):
    conv, x = _big_conv()
    with torch.no_grad():
        ref = conv(x)
        assert speed.use_winograd(conv) == 1
        calls = _count_nnpack(monkeypatch)
        out = conv(x)
    assert len(calls) == 1
    assert (out - ref).abs().max() < 1e-3 * ref.abs().max()


@pytest.mark.skipif(not speed.nnpack_works(), reason="no NNPACK on this CPU")
def test_winograd_steps_aside_above_one_thread_under_autograd_and_for_small_layers(monkeypatch, one_thread):
    conv, x = _big_conv()
    speed.use_winograd(conv)
    calls = _count_nnpack(monkeypatch)
    torch.set_num_threads(2)
    with torch.no_grad():
        assert torch.equal(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))  # oneDNN, bit for bit
    torch.set_num_threads(1)
    conv(x).sum().backward()  # autograd: NNPACK's op has no backward here
    with torch.no_grad():
        conv(x[:1, :, :8, :8])  # far below WINOGRAD_MIN_MACS
    assert calls == []


@pytest.mark.skipif(not speed.nnpack_works(), reason="no NNPACK on this CPU")
def test_prepared_fp32_paper_model_gives_the_plain_modules_image(monkeypatch, one_thread):
    """The paper preset (spectral norm on every layer) at 128x128: bake + Winograd, the fp32 CPU defaults."""
    cfg = model_preset("paper")
    torch.manual_seed(0)
    plain = MATEBITGenerator(cfg).eval()
    fast = MATEBITGenerator(cfg)
    fast.load_state_dict(plain.state_dict())
    fast, ctx = speed.prepare_for_inference(fast, "cpu", "fp32")
    calls = _count_nnpack(monkeypatch)
    s, e = torch.rand(1, cfg.structure_channels, 128, 128), torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.inference_mode(), ctx:
        ref, out = plain(s, e).image, fast(s, e).image
    assert len(calls) > 10  # baked layers went through Winograd
    assert (out - ref).abs().max() < 1e-3


def test_bake_removes_spectral_norm_and_keeps_the_output():
    torch.manual_seed(0)
    conv = nn.utils.parametrizations.spectral_norm(nn.Conv2d(4, 8, 3, padding=1))
    x = torch.randn(1, 4, 16, 16)
    conv(x)  # one training-mode power iteration, as after training
    conv.eval()
    with torch.no_grad():
        ref = conv(x)
        speed.bake_weights(conv)
        out = conv(x)
    assert not nn.utils.parametrize.is_parametrized(conv)
    assert torch.allclose(out, ref, atol=1e-6)


def test_defaults_leave_channels_last_off_on_cpu():
    d = speed.inference_defaults("cpu", torch.float32)
    assert d["channels_last"] is False and d["bake"] is True


def test_compiled_defaults_switch_layout_and_winograd():
    # Under torch.compile on CPU, NHWC won and Inductor packs its own convolutions (benchmarks/README.md).
    eager = speed.inference_defaults("cpu", torch.float32)
    compiled = speed.inference_defaults("cpu", torch.float32, compiled=True)
    assert compiled["channels_last"] is True and compiled["winograd"] is False
    assert {k: v for k, v in compiled.items() if k not in ("channels_last", "winograd")} == \
        {k: v for k, v in eager.items() if k not in ("channels_last", "winograd")}


_POOL_PROBE = """
import os, torch, torch.nn.functional as F
from matebit import speed
torch.set_num_threads(2)
F.conv2d(torch.randn(1, 64, 32, 32), torch.randn(64, 64, 3, 3), padding=1)  # OpenMP's workers exist from here on
before = len(os.listdir("/proc/self/task"))
assert speed.nnpack_works()  # NNPACK's first convolution, made while torch runs 2 threads
torch.set_num_threads(1)
torch._nnpack_spatial_convolution(torch.randn(1, 64, 32, 32), torch.randn(64, 64, 3, 3), None, [1, 1], [1, 1])
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.skipif(not speed.nnpack_works() or not os.path.isdir("/proc/self/task"),
                    reason="needs NNPACK and Linux's /proc")
def test_nnpack_pool_starts_no_thread_of_its_own():
    """Winograd runs at 1 thread; NNPACK's pool, sized once at its first convolution, must not keep a second
    thread busy then (a fresh process: this one's NNPACK is initialised already)."""
    out = subprocess.run([sys.executable, "-c", _POOL_PROBE], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_an_unknown_compile_mode_is_refused_before_compiling():
    module = nn.Conv2d(3, 3, 1)
    assert speed.maybe_compile(module, None) is module
    with pytest.raises(ValueError, match="compile must be None or one of default, reduce-overhead, max-autotune"):
        speed.maybe_compile(module, "lite")  # a mode torch.compile has, and matebit does not offer
