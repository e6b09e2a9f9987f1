"""The fused correspondence agrees with the matrix reference (Eqs. 1-3 and the reliability of Eq. 5).

On CPU: FlexAttention's eager path checks the score modifiers and the LSE plumbing (forward only: FlexAttention
has no backward on CPU), and `_lse_form` below checks that reliability = exp(LSE_reliable - LSE_all) holds for
gradients too. On CUDA: the compiled kernel against the reference, forward and backward.
"""

from __future__ import annotations

import os

import pytest
import torch

from matebit.models import correspondence as corr_mod
from matebit.models import fused
from matebit.models.correspondence import (
    Correspondence,
    centred_unit,
    masked_correspondence,
    masked_correspondence_reference,
)

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

needs_flex = pytest.mark.skipif(not fused.available(), reason="this torch has no FlexAttention")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _fused(*args, **kwargs) -> Correspondence:
    return Correspondence(*fused.masked_correspondence_fused(*args, **kwargs))


def _lse_form(q, k, v, alpha, mask="relu", reliability="quality") -> Correspondence:
    """The fused path's arithmetic with the matrix written out: differentiable on CPU, the oracle for the LSE
    identity (forward and backward) that the kernel relies on."""
    cos = q @ k.transpose(-1, -2)
    cos = cos.to(torch.promote_types(cos.dtype, torch.float32))  # float64 stays float64 for exact checks
    if mask == "none":
        out = torch.softmax(alpha * cos, -1).to(v.dtype) @ v
        return Correspondence(out, torch.ones(q.shape[:-1], dtype=q.dtype, device=q.device))
    scores = alpha * torch.relu(cos)
    lse_all = torch.logsumexp(scores, -1)
    if reliability == "mass":
        rel_scores = torch.where(cos > 0, alpha * cos, torch.full_like(cos, -fused._BIG))
    else:
        rel_scores = torch.where(cos > fused._EPS, alpha * cos + torch.log(cos.clamp_min(fused._EPS)),
                                 torch.full_like(cos, -fused._BIG))
    lse_rel = torch.logsumexp(rel_scores, -1)
    out = torch.exp(scores - lse_all.unsqueeze(-1)).to(v.dtype) @ v
    return Correspondence(out, torch.exp(lse_rel - lse_all).to(q.dtype))


def _inputs(b, n, m, c, cv, dead_rows=(), device="cpu", dtype=torch.float32):
    """Centred unit q, k and free v; queries listed in dead_rows have a negative cosine with every key."""
    g = torch.Generator().manual_seed(n * 31 + m)
    direction = torch.randn(c, generator=g)
    k = direction + 0.3 * torch.randn(b, m, c, generator=g)  # every key leans along `direction`
    q = torch.randn(b, n, c, generator=g)
    for row in dead_rows:
        q[:, row] = -direction + 0.05 * torch.randn(b, c, generator=g)
    v = torch.randn(b, m, cv, generator=g)
    q, k = centred_unit(q), centred_unit(k)
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)


def test_dead_rows_really_have_no_reliable_key():
    q, k, _ = _inputs(2, 12, 10, 16, 3, dead_rows=(0, 5))
    cos = q @ k.transpose(-1, -2)
    assert (cos[:, [0, 5]] <= 0).all()
    assert (cos[:, 1] > 0).any()


def test_applies_is_false_on_cpu():
    q = torch.zeros(1, fused.DEFAULT_MIN_TOKENS, 4)
    assert not fused.applies(q)


def test_auto_dispatch_on_cpu_uses_the_matrix_form(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("fused path taken on CPU")

    monkeypatch.setattr(fused, "masked_correspondence_fused", boom)
    q, k, v = _inputs(1, 20, 20, 8, 11)
    got = masked_correspondence(q, k, v, 100.0, "relu", impl="auto")
    ref = masked_correspondence_reference(q, k, v, 100.0, "relu")
    torch.testing.assert_close(got.out, ref.out)


def test_chunked_matches_reference_across_chunks():
    q, k, v = _inputs(2, 37, 29, 8, 11, dead_rows=(3,))
    ref = masked_correspondence_reference(q, k, v, 100.0)
    got = corr_mod.masked_correspondence_chunked(q, k, v, 100.0, chunk=8)
    torch.testing.assert_close(got.out, ref.out)
    torch.testing.assert_close(got.reliability, ref.reliability)


def test_kernel_options_shrink_tiles_only_for_wide_heads_on_cuda():
    assert fused.kernel_options(512, 515, torch.device("cpu")) is None
    assert fused.kernel_options(64, 67, torch.device("cuda")) is None
    opts = fused.kernel_options(512, 515, torch.device("cuda"))
    assert opts["fwd_BLOCK_M"] <= 32 and opts["bwd_BLOCK_M1"] <= 16


@needs_flex
@pytest.mark.parametrize("shape", [(2, 16, 16, 8, 11), (1, 40, 24, 16, 19), (2, 64, 64, 32, 35)])
@pytest.mark.parametrize("mask", ["relu", "none"])
@pytest.mark.parametrize("kind", ["quality", "mass"])
def test_flex_forward_matches_reference_on_cpu(shape, mask, kind):
    b, n, m, c, cv = shape
    q, k, v = _inputs(b, n, m, c, cv, dead_rows=(0, n - 1))
    ref = masked_correspondence_reference(q, k, v, 100.0, mask, reliability=kind)
    got = _fused(q, k, v, 100.0, mask, compiled=False, reliability=kind)
    assert got.out.shape == (b, n, cv) and got.reliability.shape == (b, n)
    torch.testing.assert_close(got.out, ref.out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got.reliability, ref.reliability, atol=1e-5, rtol=1e-4)
    if mask == "relu":
        assert (got.reliability[:, [0, n - 1]] == 0).all()  # the rows built with no reliable key
        assert (got.reliability > 0.2).any()


@needs_flex
@pytest.mark.skipif(os.environ.get("MATEBIT_SLOW_TESTS") != "1",
                    reason="compiled FlexAttention on CPU: 42 s to compile at B=2, N=64 on 2 cores "
                           "(set MATEBIT_SLOW_TESTS=1 to run); compiled CPU flex returns no LSE, so mask='none' only")
def test_compiled_flex_forward_on_cpu_unmasked():
    q, k, v = _inputs(2, 64, 64, 32, 35)
    got = _fused(q, k, v, 100.0, "none")
    ref = masked_correspondence_reference(q, k, v, 100.0, "none")
    torch.testing.assert_close(got.out, ref.out, atol=1e-5, rtol=1e-4)


def _grads(fn, q, k, v, w_out, w_rel):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    res = fn(q, k, v)
    loss = (res.out * w_out).sum() + (res.reliability * w_rel).sum()
    loss.backward()
    return res, (q.grad, k.grad, v.grad)


def _softmax_form(q, k, v, alpha, reliability="quality"):
    """The reference's formula kept in the input's precision (the reference itself runs its softmax in float32),
    so that the LSE identity can be checked to float64 accuracy."""
    cos = q @ k.transpose(-1, -2)
    w = torch.softmax(alpha * torch.relu(cos), -1)
    kept = (cos > 0).to(w.dtype) if reliability == "mass" else torch.relu(cos)
    return corr_mod.Correspondence(w @ v, (w * kept).sum(-1))


@pytest.mark.parametrize("shape", [(2, 9, 7, 6, 9), (1, 30, 21, 16, 19)])
@pytest.mark.parametrize("alpha", [5.0, 100.0])
@pytest.mark.parametrize("kind", ["quality", "mass"])
def test_lse_identity_forward_and_backward_float64(shape, alpha, kind):
    b, n, m, c, cv = shape
    q, k, v = _inputs(b, n, m, c, cv, dead_rows=(2,), dtype=torch.float64)
    w_out, w_rel = torch.randn(b, n, cv, dtype=torch.float64), torch.randn(b, n, dtype=torch.float64)
    ref, ref_g = _grads(lambda *t: _softmax_form(*t, alpha, kind), q, k, v, w_out, w_rel)
    got, got_g = _grads(lambda *t: _lse_form(*t, alpha, reliability=kind), q, k, v, w_out, w_rel)
    torch.testing.assert_close(got.out, ref.out, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(got.reliability, ref.reliability, atol=1e-12, rtol=1e-9)
    for g_got, g_ref in zip(got_g, ref_g):
        torch.testing.assert_close(g_got, g_ref, atol=1e-9, rtol=1e-8)


@pytest.mark.parametrize("alpha", [5.0, 100.0])
@pytest.mark.parametrize("kind", ["quality", "mass"])
def test_lse_form_matches_project_reference_in_float32(alpha, kind):
    q, k, v = _inputs(2, 30, 21, 16, 19, dead_rows=(2,))
    w_out, w_rel = torch.randn(2, 30, 19), torch.randn(2, 30)
    ref, ref_g = _grads(lambda *t: masked_correspondence_reference(*t, alpha, reliability=kind), q, k, v, w_out,
                        w_rel)
    got, got_g = _grads(lambda *t: _lse_form(*t, alpha, reliability=kind), q, k, v, w_out, w_rel)
    torch.testing.assert_close(got.out, ref.out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got.reliability, ref.reliability, atol=1e-6, rtol=1e-4)
    # exp(score - LSE) with scores near alpha loses ~alpha * 6e-8 relative in float32 (the softmax form
    # subtracts the max first), and the kernel computes the same way: scale the tolerance with alpha.
    for g_got, g_ref in zip(got_g, ref_g):
        assert torch.isfinite(g_got).all()
        torch.testing.assert_close(g_got, g_ref, atol=alpha * 2e-5, rtol=alpha * 1e-5)


@pytest.mark.parametrize("kind", ["quality", "mass"])
def test_lse_form_rows_without_reliable_key_give_zero_and_finite_gradients(kind):
    q, k, v = _inputs(1, 4, 6, 8, 3, dead_rows=(0, 1, 2, 3))  # no query has a reliable key
    q.requires_grad_()
    res = _lse_form(q, k, v, 100.0, reliability=kind)
    assert (res.reliability == 0).all()
    res.reliability.sum().backward()
    assert torch.isfinite(q.grad).all() and (q.grad == 0).all()


# ---------------------------------------------------------------------------------------------------------------
# GPU: the compiled kernel itself (runs only where a GPU is lent).


@needs_cuda
@needs_flex
def test_applies_on_cuda_from_min_tokens():
    assert fused.applies(torch.zeros(1, 4096, 8, device="cuda"), min_tokens=4096)
    assert not fused.applies(torch.zeros(1, 4095, 8, device="cuda"), min_tokens=4096)


@needs_cuda
@needs_flex
@pytest.mark.parametrize("shape", [(2, 256, 256, 64, 67), (2, 1024, 1024, 512, 515)])
@pytest.mark.parametrize("mask", ["relu", "none"])
@pytest.mark.parametrize("kind", ["quality", "mass"])
def test_fused_matches_reference_on_cuda_forward_and_backward(shape, mask, kind):
    b, n, m, c, cv = shape
    q, k, v = _inputs(b, n, m, c, cv, dead_rows=(0, 7), device="cuda")
    w_out = torch.randn(b, n, cv, device="cuda")
    w_rel = torch.randn(b, n, device="cuda")
    ref, ref_g = _grads(lambda *t: masked_correspondence_reference(*t, 100.0, mask, reliability=kind), q, k, v,
                        w_out, w_rel)
    got, got_g = _grads(lambda *t: _fused(*t, 100.0, mask, reliability=kind), q, k, v, w_out, w_rel)
    torch.testing.assert_close(got.out, ref.out, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(got.reliability, ref.reliability, atol=1e-4, rtol=1e-3)
    for g_got, g_ref in zip(got_g, ref_g):
        assert torch.isfinite(g_got).all()
        torch.testing.assert_close(g_got, g_ref, atol=1e-3, rtol=1e-2)


@needs_cuda
@needs_flex
def test_fused_bf16_forward_close_to_fp32_reference():
    q, k, v = _inputs(2, 1024, 1024, 512, 515, dead_rows=(3,), device="cuda")
    ref = masked_correspondence_reference(q, k, v, 100.0)
    got = _fused(q.bfloat16(), k.bfloat16(), v.bfloat16(), 100.0)
    assert torch.isfinite(got.out).all()
    # bf16 cosines are off by ~4e-3; times alpha = 100 that moves the weights, so compare loosely.
    assert (got.out.float() - ref.out).abs().mean() < 0.05
    assert (got.reliability.float() - ref.reliability).abs().max() < 0.05
