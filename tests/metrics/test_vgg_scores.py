import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from matebit.metrics import EvalSet, compute_metric, region_cosine


def tiny_vgg(x):
    """Stand-in for the VGG19 layers: non-negative colour features pooled at VGG-like strides."""
    f = torch.cat([F.relu(x), F.relu(-x), F.relu(x[:, :1] - x[:, 1:2])], 1)
    return {"relu1_2": f, "relu2_2": F.avg_pool2d(f, 2), "relu3_2": F.avg_pool2d(f, 4),
            "relu4_2": F.avg_pool2d(f, 8), "relu5_2": F.avg_pool2d(f, 16)}


def _t(rows):  # (H, W, C) nested lists -> (C, H, W)
    return torch.tensor(rows, dtype=torch.float64).permute(2, 0, 1)


FA = _t([[[1, 0], [1, 0]], [[0, 1], [5, 5]]])
FB = _t([[[0, 2], [1, 1]], [[3, 3], [1, -1]]])
LA = np.array([[1, 1], [2, 0]])
LB = np.array([[2, 1], [1, 1]])


def test_region_cosine_style_by_hand():
    # label 1: u = (1, 0), v = mean of (1,1), (3,3), (1,-1) = (5/3, 1) -> cos 5/sqrt(34); label 2: cos 1.
    # weights: pixels of each label in the output map: 2 and 1. Label 0 is ignored.
    expect = (2 * 5 / math.sqrt(34) + 1) / 3
    assert region_cosine(FA, FB, LA, LB, style=True) == pytest.approx(expect, rel=1e-12)


def test_region_cosine_semantic_by_hand():
    # both images use LA, all labels: k=0 cos((5,5),(1,-1)) = 0; k=1 cos((1,0),(0.5,1.5)) = 1/sqrt(10);
    # k=2 cos((0,1),(3,3)) = 1/sqrt(2); weights 1, 2, 1 of 4 pixels.
    expect = (0 + 2 / math.sqrt(10) + 1 / math.sqrt(2)) / 4
    assert region_cosine(FA, FB, LA, LA, style=False) == pytest.approx(expect, rel=1e-12)


def test_region_means_equal_explicit_nearest_upsampling():
    g = torch.Generator().manual_seed(0)
    fa, fb = torch.rand(4, 3, 5, generator=g), torch.rand(4, 6, 4, generator=g)
    rng = np.random.default_rng(0)
    la, lb = rng.integers(0, 3, (16, 16)), rng.integers(0, 3, (16, 16))
    ua = F.interpolate(fa[None], size=(16, 16), mode="nearest")[0].double()
    ub = F.interpolate(fb[None], size=(16, 16), mode="nearest")[0].double()
    num = 0.0
    for k in (1, 2):
        ma, mb = torch.from_numpy(la == k), torch.from_numpy(lb == k)
        num += F.cosine_similarity(ua[:, ma].mean(1), ub[:, mb].mean(1), dim=0).item() * ma.sum().item()
    expect = num / ((la == 1).sum() + (la == 2).sum())
    assert region_cosine(fa, fb, la, lb, style=True) == pytest.approx(expect, rel=1e-10)


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 32, 3)).astype(np.uint8) for _ in range(n)]


@pytest.mark.parametrize("name", ["texture", "color"])
def test_style_scores_one_for_identical_lower_for_different(name):
    ims = _images(3, 0)
    base = np.full((32, 32, 3), (200, 30, 30), np.uint8)
    other = [np.full((32, 32, 3), (10, 200, 240), np.uint8)] * 3
    same = compute_metric(name, EvalSet(outputs=ims, exemplars=ims), feature_extractor=tiny_vgg,
                          feature_network="tiny")
    diff = compute_metric(name, EvalSet(outputs=[base] * 3, exemplars=other), feature_extractor=tiny_vgg)
    assert same.name == f"{name}[tiny]" and diff.name == f"{name}[custom]"
    assert same.value == pytest.approx(1.0, abs=1e-9)
    assert diff.value < 0.9
    assert "No label maps" in same.protocol


def test_style_with_label_maps_uses_regions():
    # left half label 1, right half label 2; the exemplar has the same colours with the halves swapped
    red, blue = np.array([220, 20, 20], np.uint8), np.array([20, 20, 220], np.uint8)
    out = np.zeros((32, 32, 3), np.uint8)
    out[:, :16], out[:, 16:] = red, blue
    ex = out[:, ::-1].copy()
    lab = np.zeros((32, 32), np.int64)
    lab[:, :16], lab[:, 16:] = 1, 2
    matched = compute_metric("color", EvalSet(outputs=[out], exemplars=[ex], labels=[lab],
                                              exemplar_labels=[lab[:, ::-1].copy()]), feature_extractor=tiny_vgg)
    crossed = compute_metric("color", EvalSet(outputs=[out], exemplars=[ex], labels=[lab], exemplar_labels=[lab]),
                             feature_extractor=tiny_vgg)
    assert matched.value == pytest.approx(1.0, abs=1e-6)
    assert crossed.value < 0.5
    assert "No label maps" not in matched.protocol


def test_semantic_identical_one_and_shuffled_lower():
    ims = _images(3, 1)
    smooth = [np.full((32, 32, 3), c, np.uint8) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    same = compute_metric("semantic", EvalSet(outputs=smooth, targets=smooth), feature_extractor=tiny_vgg)
    shuffled = compute_metric("semantic", EvalSet(outputs=smooth, targets=smooth[1:] + smooth[:1]),
                              feature_extractor=tiny_vgg)
    assert same.value == pytest.approx(1.0, abs=1e-9)
    assert shuffled.value < 0.9
    assert set(shuffled.values) == {"semantic[custom]", "relu3_2", "relu4_2", "relu5_2"}
    assert shuffled.value == pytest.approx(np.mean([shuffled.values[k] for k in ("relu3_2", "relu4_2", "relu5_2")]))
    assert compute_metric("semantic", EvalSet(outputs=ims, targets=ims), feature_extractor=tiny_vgg).value == \
        pytest.approx(1.0, abs=1e-9)


def test_vgg_scores_without_weights_raise_missing_weights(tmp_path, monkeypatch):
    from matebit.metrics import MissingWeightsError

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    a = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(MissingWeightsError, match="vgg19"):
        compute_metric("texture", EvalSet(outputs=[a], exemplars=[a]))
