import math

import numpy as np
import pytest
import torch

from matebit.metrics import (EvalSet, MetricError, MissingWeightsError, attention_to_points, compute_metric, pck,
                             predict_points, psnr, query_rows, ssim)


def test_psnr_constant_offset_closed_form():
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a + np.uint8(5)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 25))
    assert psnr(a, a) == math.inf
    r = compute_metric("psnr", EvalSet(outputs=[a, a], targets=[b, b]))
    assert r.value == pytest.approx(10 * math.log10(255 ** 2 / 25))


def test_ssim_constant_images_closed_form_and_identity():
    # constant images: contrast-structure term is C2/C2 = 1, luminance term (2ab + C1) / (a² + b² + C1)
    a, b = np.full((16, 16, 3), 100, np.uint8), np.full((16, 16, 3), 150, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 150 + c1) / (100 ** 2 + 150 ** 2 + c1), rel=1e-6)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    assert ssim(x, x) == pytest.approx(1.0)
    noisy = np.clip(x + rng.normal(0, 30, x.shape), 0, 255).astype(np.uint8)
    assert compute_metric("ssim", EvalSet(outputs=[noisy], targets=[x])).value < 0.97


def test_paired_metrics_reject_size_mismatch():
    with pytest.raises(MetricError, match="differ in size"):
        compute_metric("psnr", EvalSet(outputs=[np.zeros((8, 8, 3), np.uint8)], targets=[np.zeros((8, 9, 3), np.uint8)]))


def test_lpips_needs_backbone_weights_or_injected_fn(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        compute_metric("lpips", EvalSet(outputs=[a], targets=[a]))
    l1 = lambda x, y: (x - y).abs().mean(dim=(1, 2, 3))  # noqa: E731
    r = compute_metric("lpips", EvalSet(outputs=[a, a], targets=[a, a + 51]), lpips_fn=l1)
    assert r.name == "lpips[custom]" and r.value == pytest.approx(0.2, abs=1e-6)  # (0 + 51/127.5) / 2


def test_pck_identity_and_hand_counted():
    true = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 20.0], [0.0, 0.0]])
    assert pck(true, true, (100, 80)) == {"pck@0.05": 1.0, "pck@0.1": 1.0}
    # thresholds 5 and 10 px (max(W, H) = 100). Errors: 3 (both), 5 (both, boundary counts), 8 (0.1 only), 20.
    pred = true + np.array([[3.0, 0.0], [3.0, 4.0], [0.0, 8.0], [12.0, 16.0]])
    assert pck(pred, true, (100, 80)) == {"pck@0.05": 0.5, "pck@0.1": 0.75}


def test_attention_rows_to_points_and_query_rows():
    rows = np.zeros((2, 4 * 4))
    rows[0, 0] = 1.0  # top-left cell
    rows[1, 2 * 4 + 3] = 1.0  # row 2, col 3
    pts = attention_to_points(torch.from_numpy(rows), (4, 4), (64, 32))  # W = 64, H = 32: cells 16 x 8 px
    np.testing.assert_allclose(pts, [[8.0, 4.0], [56.0, 20.0]])
    np.testing.assert_array_equal(query_rows(pts, (4, 4), (64, 32)), [0, 11])
    np.testing.assert_array_equal(query_rows([[63.9, 31.9], [-1, 100]], (4, 4), (64, 32)), [15, 12])


def test_identity_correspondence_gives_full_pck_via_metric(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 256, (20, 2))
    ident = np.eye(32 * 32)
    pred = predict_points(ident, pts, (32, 32), (256, 256), (256, 256))
    assert np.abs(pred - pts).max() <= 4.0 + 1e-9  # half a cell of 8 px, per axis
    (tmp_path / "ex.json").write_text('{"template": "t", "size": [256, 256], "points": %s}' % pts.tolist())
    r = compute_metric("pck", EvalSet(exemplar_landmarks=[tmp_path / "ex.json"], predicted_points=[pred]))
    assert r.values["pck@0.05"] == 1.0 and r.values["pck"] == 1.0 and r.num_samples == 1
