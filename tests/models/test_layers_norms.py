"""The per-position normalisations (l2_normalize, PONO) against float64 references written out here.

They were rewritten as products and sums over channels for CPU speed (models/layers.py: channel_norm); these
tests pin their values to the textbook definitions, including the released code's unbiased PONO.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matebit.models.layers import channel_norm, l2_normalize, official_pono, pono


def _features(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # A spread of scales per position, so that a normalisation over the wrong axis would show.
    return torch.randn(2, 7, 5, 3, generator=g) * torch.linspace(0.1, 10.0, 15).reshape(1, 1, 5, 3)


def test_channel_norm_is_the_euclidean_length_over_channels():
    x = _features()
    want = np.sqrt((x.double().numpy() ** 2).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(channel_norm(x).numpy(), want, rtol=1e-6)
    # Over another axis when asked.
    want_last = np.sqrt((x.double().numpy() ** 2).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(channel_norm(x, dim=-1).numpy(), want_last, rtol=1e-6)


def test_l2_normalize_gives_unit_vectors_in_the_same_direction():
    x = _features(1)
    y = l2_normalize(x).double().numpy()
    xd = x.double().numpy()
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(y, xd / np.linalg.norm(xd, axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    assert torch.equal(l2_normalize(torch.zeros(1, 3, 2, 2)), torch.zeros(1, 3, 2, 2))  # eps keeps zeros finite


@pytest.mark.parametrize("unbiased, eps, fn", [(False, 1e-5, pono), (True, 1e-8, official_pono)])
def test_pono_matches_mean_and_variance_over_channels(unbiased, eps, fn):
    x = _features(2) + 3.0  # an offset, so that forgetting to centre would show
    xd = x.double().numpy()
    mean = xd.mean(axis=1, keepdims=True)
    var = xd.var(axis=1, keepdims=True, ddof=1 if unbiased else 0)
    want = (xd - mean) / np.sqrt(var + eps)
    got = fn(x).double().numpy() if fn is official_pono else fn(x, eps=eps, unbiased=unbiased).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_normalisations_pass_gradients_like_the_library_forms():
    x = _features(3).requires_grad_()
    (l2_normalize(x) * torch.arange(15.0).reshape(1, 1, 5, 3)).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    ref = x / (x.norm(dim=1, keepdim=True) + 1e-10)
    (ref * torch.arange(15.0).reshape(1, 1, 5, 3)).sum().backward()
    torch.testing.assert_close(ours, x.grad, rtol=1e-4, atol=1e-6)


def test_zero_vectors_get_finite_gradients():
    # A blank structure map gives all-zero features after instance norm; their gradient must stay finite (0 for
    # the length itself, as torch's norm has it).
    x = torch.zeros(1, 4, 2, 2, requires_grad=True)
    (l2_normalize(x).sum() + channel_norm(x).sum()).backward()
    assert torch.isfinite(x.grad).all()
    ref = torch.zeros(1, 4, 2, 2, requires_grad=True)
    (ref / (ref.norm(dim=1, keepdim=True) + 1e-10)).sum().add(ref.norm(dim=1, keepdim=True).sum()).backward()
    torch.testing.assert_close(x.grad, ref.grad)
