import math

import torch

from matebit.models.correspondence import (
    attention_rows,
    centred_unit,
    masked_correspondence_chunked,
    masked_correspondence_reference,
)


def test_centred_unit_gives_centred_cosine():
    q = torch.randn(1, 5, 7)
    k = torch.randn(1, 6, 7)
    got = centred_unit(q) @ centred_unit(k).transpose(-1, -2)
    qc = q - q.mean(-1, keepdim=True)
    kc = k - k.mean(-1, keepdim=True)
    want = torch.nn.functional.cosine_similarity(qc[0, :, None, :], kc[0, None, :, :], dim=-1)
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-5)


def test_negative_cosine_key_gets_exactly_zero_score_before_softmax():
    # One query, two keys: cos = +0.6 and -0.8. After the ReLU mask the second score is exactly 0, so its
    # weight is exp(0) / (exp(100 * 0.6) + exp(0)).
    q = torch.tensor([[[1.0, 0.0]]])
    k = torch.tensor([[[0.6, 0.8], [-0.8, 0.6]]])
    v = torch.tensor([[[1.0], [0.0]]])
    res = masked_correspondence_reference(q, k, v, alpha=100.0, mask="relu", return_weights=True)
    w = res.weights[0, 0]
    z = math.exp(60.0) + 1.0
    torch.testing.assert_close(w, torch.tensor([math.exp(60.0) / z, 1.0 / z]))
    # Without the mask the negative key is pushed much further down.
    res_none = masked_correspondence_reference(q, k, v, alpha=100.0, mask="none", return_weights=True)
    assert res_none.weights[0, 0, 1] < w[1] * 1e-10
    # Reliability is the mass on the positive key.
    torch.testing.assert_close(res.reliability[0, 0], w[0])


def test_reliability_is_bounded_and_zero_without_reliable_keys():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    k = torch.tensor([[[-1.0, 0.0], [0.0, -1.0], [-0.6, -0.8]]])  # no key has positive cosine with query 0
    v = torch.randn(1, 3, 4)
    res = masked_correspondence_reference(q, k, v, 100.0, "relu")
    assert res.reliability[0, 0] == 0.0
    # All scores are 0 after the mask: the softmax is uniform, X_cor is the average value (paper, Sec. 3.1).
    torch.testing.assert_close(res.out[0, 0], v[0].mean(0))
    big = masked_correspondence_reference(centred_unit(torch.randn(2, 50, 8)), centred_unit(torch.randn(2, 40, 8)),
                                          torch.randn(2, 40, 3), 100.0, "relu")
    assert big.reliability.min() >= 0 and big.reliability.max() <= 1 + 1e-6


def test_alpha_sharpens_the_softmax():
    q = centred_unit(torch.randn(1, 10, 16))
    k = centred_unit(torch.randn(1, 20, 16))
    v = torch.randn(1, 20, 2)
    entropies = []
    for alpha in (1.0, 10.0, 100.0):
        w = masked_correspondence_reference(q, k, v, alpha, "relu", return_weights=True).weights
        entropies.append(-(w * w.clamp_min(1e-30).log()).sum(-1).mean().item())
    assert entropies[0] > entropies[1] > entropies[2]
    # At alpha = 100 the largest weight goes to the best-matching key.
    w = masked_correspondence_reference(q, k, v, 100.0, "relu", return_weights=True).weights
    assert torch.equal(w.argmax(-1), (q @ k.transpose(-1, -2)).argmax(-1))


def test_chunked_equals_reference():
    q = centred_unit(torch.randn(2, 37, 8))
    k = centred_unit(torch.randn(2, 29, 8))
    v = torch.randn(2, 29, 5)
    a = masked_correspondence_reference(q, k, v, 100.0, "relu")
    b = masked_correspondence_chunked(q, k, v, 100.0, "relu", chunk=8)
    torch.testing.assert_close(a.out, b.out)
    torch.testing.assert_close(a.reliability, b.reliability)


def test_attention_rows_match_the_full_matrix():
    q = centred_unit(torch.randn(2, 16, 8))
    k = centred_unit(torch.randn(2, 16, 8))
    v = torch.randn(2, 16, 1)
    full = masked_correspondence_reference(q, k, v, 100.0, "relu", return_weights=True).weights
    masked, unmasked = attention_rows(q, k, 100.0, torch.tensor([3, 9]))
    torch.testing.assert_close(masked, full[:, [3, 9]])
    nomask = masked_correspondence_reference(q, k, v, 100.0, "none", return_weights=True).weights
    torch.testing.assert_close(unmasked, nomask[:, [3, 9]])
