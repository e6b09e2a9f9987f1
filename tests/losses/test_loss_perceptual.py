import math

import pytest
import torch

from matebit.losses import (
    contextual_loss,
    contextual_loss_multi,
    contextual_similarity,
    gram_matrix,
    gram_style_loss,
    perceptual_loss,
    vgg_feature_matching_loss,
)


def test_perceptual_loss_l1_and_mse():
    a = {"relu4_2": torch.zeros(1, 1, 1, 2), "relu1_2": torch.ones(1, 1, 1, 1)}
    b = {"relu4_2": torch.tensor([[[[1.0, -3.0]]]]), "relu1_2": torch.zeros(1, 1, 1, 1)}
    assert perceptual_loss(a, b).item() == pytest.approx(2.0)
    assert perceptual_loss(a, b, kind="mse").item() == pytest.approx(5.0)
    with pytest.raises(KeyError, match="relu5_2"):
        perceptual_loss(a, b, layer="relu5_2")


def _cx_by_hand(x_vecs, y_vecs, h, eps):
    """Literal Mechrez/CoCosNet formula on lists of 2-d vectors (no centring)."""
    def unit(v):
        n = math.hypot(*v)
        return [c / n for c in v]

    xs, ys = [unit(v) for v in x_vecs], [unit(v) for v in y_vecs]
    cx = 0.0
    for xi in xs:
        d = [1 - (xi[0] * yj[0] + xi[1] * yj[1]) for yj in ys]
        dmin = min(d)
        w = [math.exp((1 - dj / (dmin + eps)) / h) for dj in d]
        cx += max(wj / sum(w) for wj in w)
    return cx / len(xs)


def _to_map(vecs):  # list of N 2-d vectors -> (1, 2, 1, N)
    return torch.tensor(vecs, dtype=torch.float32).t().reshape(1, 2, 1, len(vecs))


def test_contextual_similarity_matches_hand_computation():
    # 3 output features vs 2 exemplar features: mean_i max_j differs from mean_j max_i here.
    x = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.2]]
    y = [[1.0, 0.0], [1.0, 1.0]]
    # A wide bandwidth keeps the second row away from saturation, so the value is informative.
    got = contextual_similarity(_to_map(x), _to_map(y), h=2.0, eps=1e-3, center="none").item()
    want = _cx_by_hand(x, y, 2.0, 1e-3)
    assert 0.6 < want < 0.95
    assert got == pytest.approx(want, rel=1e-5)


def test_contextual_identical_is_one_permuted_equal_random_lower():
    x = torch.randn(2, 8, 4, 4)
    assert contextual_loss(x, x).item() == pytest.approx(0.0, abs=1e-4)
    perm = torch.randperm(16)
    x_perm = x.flatten(2)[:, :, perm].reshape_as(x)
    # CX compares feature *sets*: a spatial permutation is still a perfect match.
    assert contextual_loss(x_perm, x).item() == pytest.approx(0.0, abs=1e-4)
    cx_rand = contextual_similarity(torch.randn(2, 8, 4, 4), x)
    assert (cx_rand < 0.9).all()
    assert contextual_loss(torch.randn(2, 8, 4, 4), x).item() > 0.1


def test_contextual_multi_paper_vs_official_forms():
    x = [[1.0, 0.0], [0.0, 1.0]]
    y = [[1.0, 0.0], [1.0, 1.0]]
    fx = {"a": _to_map(x), "b": _to_map(x)}
    fy = {"a": _to_map(y), "b": _to_map(x)}  # layer b identical -> CX_b = 1
    cx_a = _cx_by_hand(x, y, 0.5, 1e-3)
    cx_b = _cx_by_hand(x, x, 0.5, 1e-3)
    w = {"a": 3.0, "b": 1.0}
    kw = dict(weights=w, pool={}, h=0.5, eps=1e-3, center="none")
    paper = contextual_loss_multi(fx, fy, form="paper", **kw).item()
    official = contextual_loss_multi(fx, fy, form="official", **kw).item()
    assert paper == pytest.approx(-math.log(0.75 * cx_a + 0.25 * cx_b), rel=1e-5)
    assert official == pytest.approx(3 * -math.log(cx_a) + 1 * -math.log(cx_b), rel=1e-5)
    with pytest.raises(ValueError, match="form"):
        contextual_loss_multi(fx, fy, form="bogus", **kw)


def test_contextual_multi_default_layers_and_pooling():
    f = {k: torch.randn(1, 4, 4, 4) for k in ("relu3_2", "relu4_2", "relu5_2")}
    assert contextual_loss_multi(f, f).item() == pytest.approx(0.0, abs=1e-4)
    g = {k: torch.randn(1, 4, 4, 4) for k in f}
    assert contextual_loss_multi(g, f).item() > 0


def test_gram_matrix_and_style_loss():
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # C=2, HW=2
    # F F^T = [[5, 3], [3, 9]] / (2*1*2)
    assert torch.allclose(gram_matrix(f), torch.tensor([[[5.0, 3.0], [3.0, 9.0]]]) / 4)
    zero = torch.zeros_like(f)
    # mean |G| = (5+3+3+9)/4/4 = 1.25; weighted by 0.5.
    assert gram_style_loss({"l": f}, {"l": zero}, weights={"l": 0.5}).item() == pytest.approx(0.625)


def test_vgg_feature_matching_weights():
    names = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
    a = {k: torch.ones(1, 1, 2, 2) for k in names}
    b = {k: torch.zeros(1, 1, 2, 2) for k in names}
    assert vgg_feature_matching_loss(a, b).item() == pytest.approx(1 / 32 + 1 / 16 + 1 / 8 + 1 / 4 + 1)


def test_contextual_centres_by_exemplar_mean():
    y = [[2.0, 1.0], [1.0, 2.0]]  # mean (1.5, 1.5): centred y = (.5, -.5), (-.5, .5)
    x = [[3.0, 1.0], [1.0, 1.2], [2.0, 2.5]]
    centred = lambda vs: [[a - 1.5, b - 1.5] for a, b in vs]  # noqa: E731
    got = contextual_similarity(_to_map(x), _to_map(y), h=2.0, center="y_mean").item()
    assert got == pytest.approx(_cx_by_hand(centred(x), centred(y), 2.0, 1e-3), rel=1e-5)
    raw = contextual_similarity(_to_map(x), _to_map(y), h=2.0, center="none").item()
    assert raw == pytest.approx(_cx_by_hand(x, y, 2.0, 1e-3), rel=1e-5) and abs(raw - got) > 1e-3
