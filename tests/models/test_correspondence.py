import math

import pytest
import torch

from matebit.models.correspondence import (
    RowRequest,
    centred_unit,
    masked_correspondence,
    masked_correspondence_chunked,
    masked_correspondence_reference,
    query_rows,
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
    # "quality" (the default): the attention-weighted ReLU cosine, w0 * 0.6 + w1 * 0; "mass": the weight on keys
    # with a positive cosine, w0.
    torch.testing.assert_close(res.reliability[0, 0], w[0] * 0.6)
    mass = masked_correspondence_reference(q, k, v, 100.0, "relu", reliability="mass")
    torch.testing.assert_close(mass.reliability[0, 0], w[0])


@pytest.mark.parametrize("kind", ["quality", "mass"])
def test_reliability_is_zero_without_reliable_keys_and_one_for_a_perfect_match(kind):
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    k = torch.tensor([[[-1.0, 0.0], [0.0, -1.0], [-0.6, -0.8]]])  # no key has positive cosine with query 0
    v = torch.randn(1, 3, 4)
    res = masked_correspondence_reference(q, k, v, 100.0, "relu", reliability=kind)
    assert res.reliability[0, 0] == 0.0
    # All scores are 0 after the mask: the softmax is uniform, X_cor is the average value (paper, Sec. 3.1).
    torch.testing.assert_close(res.out[0, 0], v[0].mean(0))
    # A query equal to one of 50 otherwise orthogonal keys: nearly all the mass on it, at cosine 1.
    eye = torch.eye(50)[None]
    perfect = masked_correspondence_reference(eye[:, :1], eye, torch.randn(1, 50, 2), 100.0, "relu",
                                              reliability=kind)
    assert perfect.reliability[0, 0] > 0.99


def test_quality_separates_good_from_poor_matches_where_mass_does_not():
    # 1024 random keys in 64 dimensions; one query matches a key at cosine ~0.9, the other only at chance level
    # (best cosine ~0.4). The softmax mass on positive keys is ~1 for both; the attended cosine is not.
    g = torch.Generator().manual_seed(0)
    k = centred_unit(torch.randn(1, 1024, 64, generator=g))
    good = centred_unit(k[:, :1] + 0.3 * centred_unit(torch.randn(1, 1, 64, generator=g)))
    poor = centred_unit(torch.randn(1, 1, 64, generator=g))
    q = torch.cat([good, poor], 1)
    v = torch.zeros(1, 1024, 1)
    quality = masked_correspondence_reference(q, k, v, 100.0, "relu", reliability="quality").reliability[0]
    mass = masked_correspondence_reference(q, k, v, 100.0, "relu", reliability="mass").reliability[0]
    assert mass.min() > 0.99
    assert quality[0] > 0.85 and quality[1] < 0.5


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


@pytest.mark.parametrize("kind", ["quality", "mass"])
def test_chunked_equals_reference(kind):
    q = centred_unit(torch.randn(2, 37, 8))
    k = centred_unit(torch.randn(2, 29, 8))
    v = torch.randn(2, 29, 5)
    a = masked_correspondence_reference(q, k, v, 100.0, "relu", reliability=kind)
    b = masked_correspondence_chunked(q, k, v, 100.0, "relu", chunk=8, reliability=kind)
    torch.testing.assert_close(a.out, b.out)
    torch.testing.assert_close(a.reliability, b.reliability)


@pytest.mark.parametrize("mask", ["relu", "none"])
def test_query_rows_come_from_the_pass_and_match_rows_computed_alone(mask):
    q = centred_unit(torch.randn(2, 16, 8))
    k = centred_unit(torch.randn(2, 16, 8))
    v = torch.randn(2, 16, 1)
    request = RowRequest(index=torch.tensor([3, 9]))
    got = masked_correspondence(q, k, v, 100.0, mask, rows=request)  # 16 queries: the matrix form
    masked = masked_correspondence_reference(q, k, v, 100.0, "relu", return_weights=True).weights
    full = masked_correspondence_reference(q, k, v, 100.0, "none", return_weights=True).weights
    torch.testing.assert_close(got.rows["masked"], masked[:, [3, 9]])
    torch.testing.assert_close(got.rows["full"], full[:, [3, 9]])
    assert got.rows["used"] is got.rows["masked" if mask == "relu" else "full"]
    assert got.weights is None and got.cos is None  # the matrix is not handed back unless asked for
    # Where the pass never holds the whole matrix (the chunked form, the fused kernel) the rows come from q and k.
    alone = query_rows(masked_correspondence_chunked(q, k, v, 100.0, mask, chunk=8), q, k, 100.0, mask, request)
    for kind in ("masked", "full", "used"):
        torch.testing.assert_close(alone[kind], got.rows[kind])
    only = masked_correspondence(q, k, v, 100.0, mask, rows=RowRequest(kinds=("full",))).rows
    assert set(only) == {"full"} and only["full"].shape == (2, 16, 16)  # only the kinds asked for
    with pytest.raises(ValueError, match="row kind"):
        RowRequest(kinds=("nope",))


@pytest.mark.parametrize("kind", ["quality", "mass"])
def test_reliability_is_in_the_unit_interval_before_any_clamp(kind):
    # The block clamps 1 - reliability only against rounding; the quantity itself must already be in [0, 1], also
    # for exact matches and for keys all alike (the cases where rounding could push a sum of weights past 1).
    g = torch.Generator().manual_seed(1)
    k = centred_unit(torch.randn(3, 200, 64, generator=g))
    q = torch.cat([centred_unit(torch.randn(3, 50, 64, generator=g)), k[:, :20], -k[:, 20:30]], 1)
    same = centred_unit(torch.randn(3, 1, 64, generator=g)).expand(-1, 200, -1)
    for keys in (k, same):
        rel = masked_correspondence_reference(q, keys, torch.zeros(3, 200, 1), 100.0, "relu",
                                              reliability=kind).reliability
        assert rel.min() >= 0 and rel.max() <= 1 + 1e-6
        if keys is k:
            assert rel[:, 50:70].min() > 0.9  # the exact matches
            if kind == "quality":
                assert rel[:, 70:80].max() < 0.6  # the opposites of a key match nothing well
            else:
                assert rel[:, 70:80].min() > 0.99  # ... yet "mass" trusts them fully: the degeneracy it has
