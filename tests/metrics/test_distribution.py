import numpy as np
import pytest
import torch

from matebit.metrics import (EvalSet, FID_WEIGHTS_NAME, FIDInceptionV3, MissingWeightsError, compute_metric,
                             feature_stats, frechet_distance, kid_mmd2, kid_subsets)


def test_frechet_diagonal_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expect = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    # means: 1 + 4 + 0.25; covariances: (1 + 9 - 2*3) + (4 + 1 - 2*2) + 0  ->  10.25
    assert expect == pytest.approx(10.25)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(10.25, abs=1e-10)


def test_frechet_rotated_commuting_covariances():
    # s1 = R D1 R^T and s2 = R D2 R^T commute, so the diagonal closed form still holds.
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    d1, d2 = np.array([1.0, 2.0, 3.0, 0.5]), np.array([4.0, 0.5, 3.0, 2.0])
    s1, s2 = q @ np.diag(d1) @ q.T, q @ np.diag(d2) @ q.T
    expect = np.sum(d1 + d2 - 2 * np.sqrt(d1 * d2))
    assert frechet_distance(np.zeros(4), s1, np.zeros(4), s2) == pytest.approx(expect, abs=1e-9)


def test_frechet_general_matches_scipy_sqrtm_and_identity_is_zero():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy_linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_kid_matches_direct_double_loop():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((6, 3)) + 0.5
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(6)) / (7 * 6)
    assert kid_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    # subsets as large as the smaller set, one subset, from equal sets: a permutation of the full computation
    mean, std = kid_subsets(x[:6], y, num_subsets=1, subset_size=100)
    assert mean == pytest.approx(kid_mmd2(x[:6], y), rel=1e-12) and std == 0.0


def _mean_colour(x):
    return x.mean(dim=(2, 3))


def _set(n, seed, shift=0):
    rng = np.random.default_rng(seed)
    return [np.clip(rng.integers(0, 200, (8, 8, 3)) + shift, 0, 255).astype(np.uint8) for _ in range(n)]


def test_fid_metric_injected_extractor_named_and_zero_for_identical_sets():
    ims = _set(6, 0)
    r = compute_metric("fid", EvalSet(outputs=ims, targets=ims), feature_extractor=_mean_colour,
                       feature_network="meancolour")
    assert r.name == "fid[meancolour]" and r.feature_network == "meancolour"
    assert r.value == pytest.approx(0.0, abs=1e-9)
    # by hand: the same statistics the metric uses
    far = _set(6, 1, shift=50)
    r2 = compute_metric("fid", EvalSet(outputs=far, targets=ims), feature_extractor=_mean_colour)
    f = lambda s: np.stack([im.reshape(-1, 3).mean(0) / 127.5 - 1 for im in s])  # noqa: E731
    expect = frechet_distance(*feature_stats(f(far)), *feature_stats(f(ims)))
    assert r2.name == "fid[custom]" and r2.value == pytest.approx(expect, rel=1e-6) and r2.value > 0.1


def test_kid_metric_runs_and_fid_falls_back_to_exemplars():
    ims = _set(5, 0)
    r = compute_metric("kid", EvalSet(outputs=ims, exemplars=_set(5, 2)), feature_extractor=_mean_colour,
                       num_subsets=3)
    assert r.name == "kid[custom]" and set(r.values) == {"kid[custom]", "kid_std"}
    assert any("exemplars" in n for n in r.notes)


def test_missing_fid_weights_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    ims = _set(3, 0)
    with pytest.raises(MissingWeightsError, match=FID_WEIGHTS_NAME) as e:
        compute_metric("fid", EvalSet(outputs=ims, targets=ims))
    assert str(tmp_path / "checkpoints") in str(e.value)
    assert isinstance(e.value, FileNotFoundError)


def test_fid_inception_matches_pytorch_fid_structure(monkeypatch):
    """Same state-dict keys (strict load) and same pool3 output as pytorch-fid's network, random weights."""
    inc = pytest.importorskip("pytorch_fid.inception")
    torch.manual_seed(0)
    ours = FIDInceptionV3().eval()
    for m in ours.modules():  # non-trivial BN statistics so pooling/padding differences would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    monkeypatch.setattr(inc, "load_state_dict_from_url", lambda *a, **k: ours.net.state_dict())
    theirs = inc.InceptionV3([inc.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], use_fid_inception=True).eval()
    x = torch.rand(1, 3, 64, 80) * 2 - 1
    with torch.no_grad():
        a = ours(x)
        b = theirs((x + 1) / 2)[0].flatten(1)
    assert a.shape == (1, 2048)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
