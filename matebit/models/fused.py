"""Fused masked correspondence: softmax(alpha * ReLU(cos)) V with FlexAttention, never forming the N x M matrix.

Two FlexAttention calls, both returning the log-sum-exp (LSE) of their scores:

  1. score_mod alpha * relu(s)                    -> out = the reference's output, LSE_all
  2. "mass":    alpha * s where s > 0, else -BIG   -> LSE_reliable (its output is discarded; V is a tiny dummy)
     "quality": alpha * s + log(s) where s > EPS, else -BIG

and reliability r = exp(LSE_reliable - LSE_all). For "mass" that is the softmax mass on keys with positive cosine;
for "quality", sum_j exp(alpha s_j) s_j / sum_j exp(alpha relu(s_j)) = sum_j A_j relu(s_j), the attention-weighted
cosine. Both are the numbers the reference gets by summing over the matrix. (Keys with 0 < s <= EPS = 1e-6 are left
out of the "quality" sum, an error of at most 1e-6; it keeps 1/s, the gradient of log s, finite.)

Why -BIG and not -inf: a query with no positive key would have every score -inf, and the kernel's backward then
evaluates exp(-inf - (-inf)) = NaN, which a zero upstream gradient does not cancel (NaN * 0 = NaN). With a finite
-BIG that row's LSE is about -BIG, r = exp(-BIG - LSE_all) underflows to exactly 0 (as in the reference), and every
gradient stays finite. For rows that have a positive key, exp(-BIG - LSE) is exactly 0 in float32, so the masked
keys contribute nothing.

The tests check the same identity, forward and backward, in plain torch (torch.logsumexp), since FlexAttention
has no backward on CPU.

Where it runs: CUDA only (`applies`). On CPU FlexAttention has no backward and its forward is slower than the
matrix form (measured when this path was written), so the dispatcher keeps the chunked matrix form there.
This module returns plain tensors and imports nothing from the rest of matebit.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

# A score that no positive cosine can reach after the exp: exp(-1e4) is 0 in float32 and bfloat16.
_BIG = 1.0e4
_EPS = 1.0e-6

# `auto` picks the fused kernel only from this many query tokens up (`AttentionRuntime.fused_min_tokens`). Measured on
# an H200 (benchmarks/results/gpu-nvidia-h200.json; benchmarks/README.md, "On a GPU"): the matrix form was faster
# at every size run, and the fused kernel's gain is memory only, so `auto` keeps the matrix up to 1024x1024 inputs
# (16384 tokens) and switches where the N x M matrix itself becomes the problem (at 2048x2048, 65536^2 entries,
# 8 GiB per image per block in bf16). Set fused_min_tokens lower (MATEBITGenerator.set_attention) to trade speed for memory.
DEFAULT_MIN_TOKENS = 32768


@functools.lru_cache(maxsize=1)
def _flex_api():
    """(flex_attention, AuxRequest or None), or None when this torch has no FlexAttention."""
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        return None
    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:  # torch < 2.9: only the older return_lse=True
        AuxRequest = None
    return flex_attention, AuxRequest


def available() -> bool:
    return _flex_api() is not None


def applies(q: Tensor, min_tokens: int = DEFAULT_MIN_TOKENS) -> bool:
    """True where `auto` should use the fused kernel: a CUDA tensor, FlexAttention present, and enough tokens."""
    return q.is_cuda and available() and q.shape[-2] >= min_tokens


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    # Compiled once per process; dynamic=False because the token grid of a model rarely changes during a run,
    # and static shapes give the kernel its best block choice. A new shape recompiles (cached by dynamo).
    flex_attention, _ = _flex_api()
    return torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=None)
def _score_mods(alpha: float):
    """The two score modifiers for one alpha, cached so dynamo sees the same function objects every call
    (a fresh closure per call would be a new guard and a recompile)."""

    def all_keys(score, b, h, q_idx, kv_idx):
        return alpha * torch.relu(score)  # Eq. 2, then the alpha of Eq. 3

    def reliable_keys(score, b, h, q_idx, kv_idx):
        return torch.where(score > 0, alpha * score, torch.full_like(score, -_BIG))

    def match_quality(score, b, h, q_idx, kv_idx):
        safe = torch.clamp(score, min=_EPS)  # log of a non-positive score is never taken, not even masked away
        return torch.where(score > _EPS, alpha * score + torch.log(safe), torch.full_like(score, -_BIG))

    def unmasked(score, b, h, q_idx, kv_idx):
        return alpha * score  # the "w/o ReLU" ablation

    return all_keys, {"mass": reliable_keys, "quality": match_quality}, unmasked


def kernel_options(q_dim: int, v_dim: int, device: torch.device) -> dict | None:
    """Smaller tiles for wide heads on CUDA.

    MATEBIT's heads are wide (C = 512 for q and k, C + 3 = 515 for v, which the kernel rounds up to 1024), far
    above the <= 256 the default tiles are sized for, and the defaults run out of shared memory there.
    Unverified on a GPU in this repo: the first GPU run should confirm or retune these.
    """
    if device.type != "cuda" or max(q_dim, v_dim) <= 256:
        return None
    return {"fwd_BLOCK_M": 32, "fwd_BLOCK_N": 32, "fwd_num_stages": 1,
            "bwd_BLOCK_M1": 16, "bwd_BLOCK_N1": 16, "bwd_BLOCK_M2": 16, "bwd_BLOCK_N2": 16, "bwd_num_stages": 1}


def _flex_call(q: Tensor, k: Tensor, v: Tensor, score_mod, compiled: bool = True,
               lse: bool = True) -> tuple[Tensor, Tensor | None]:
    """One FlexAttention call on (B, 1, N, D) tensors; returns (out, lse or None) under either API generation."""
    flex_attention, aux_request = _flex_api()
    fn = _compiled_flex() if compiled else flex_attention
    kwargs = dict(score_mod=score_mod, scale=1.0, kernel_options=kernel_options(q.shape[-1], v.shape[-1], q.device))
    if not lse:
        return fn(q, k, v, **kwargs), None
    if aux_request is not None:
        out, aux = fn(q, k, v, **kwargs, return_aux=aux_request(lse=True))
        return out, aux.lse
    return fn(q, k, v, **kwargs, return_lse=True)


def masked_correspondence_fused(q: Tensor, k: Tensor, v: Tensor, alpha: float, mask: str = "relu",
                                compiled: bool = True, reliability: str = "quality") -> tuple[Tensor, Tensor]:
    """(out, reliability) as `masked_correspondence_reference` computes them (without the weights): q (B, N, C),
    k (B, M, C), v (B, M, Cv) with Cv free to differ from C (V carries the features plus the 3 exemplar channels).

    compiled=False runs FlexAttention's eager path, which materialises the scores: only for tests on CPU, where the
    compiled kernel is forward-only and returns no LSE (torch 2.14).
    """
    if not available():
        raise RuntimeError("FlexAttention is not available in this torch; use attention='reference'")
    if mask not in ("relu", "none"):
        raise ValueError(f"unknown mask kind {mask!r}")
    if reliability not in ("mass", "quality"):
        raise ValueError(f"unknown reliability kind {reliability!r}")
    all_keys, reliability_mods, unmasked = _score_mods(float(alpha))
    dtype = q.dtype
    # FlexAttention wants (B, H, N, D) with one dtype; one head, since the cosine spans all channels.
    q4, k4, v4 = q.unsqueeze(1), k.to(dtype).unsqueeze(1), v.to(dtype).unsqueeze(1)
    if mask == "none":
        out, _ = _flex_call(q4, k4, v4, unmasked, compiled, lse=False)
        return out.squeeze(1), torch.ones(q.shape[:-1], dtype=dtype, device=q.device)
    out, lse_all = _flex_call(q4, k4, v4, all_keys, compiled)
    # Only the LSE of the second call is used; a 16-wide zero V keeps its output cheap (16: smallest tile width).
    dummy = q4.new_zeros(*k4.shape[:-1], 16)
    _, lse_rel = _flex_call(q4, k4, dummy, reliability_mods[reliability], compiled)
    rel = torch.exp(lse_rel.float() - lse_all.float())
    return out.squeeze(1), rel.squeeze(1).to(dtype)
