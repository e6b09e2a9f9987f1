import numpy as np
import pytest
from PIL import Image

from matebit.convert import CONVERTERS, canny, canny_edges
from matebit.convert.canny import auto_thresholds


@pytest.mark.parametrize("name,lo", [("astronaut", 0.02), ("coffee", 0.02), ("chelsea", 0.005)])
def test_edge_density_on_real_photos(request, name, lo):
    img = request.getfixturevalue(name)
    out = canny(img)
    assert out.mode == "L" and out.size == (img.shape[1], img.shape[0])
    arr = np.asarray(out)
    assert set(np.unique(arr)) <= {0, 255}
    density = (arr > 0).mean()
    assert lo <= density <= 0.30, density


def test_flat_image_has_no_edges():
    assert not canny_edges(np.full((64, 64, 3), 128, np.uint8)).any()


def test_step_edge_is_found_where_it_is():
    img = np.zeros((64, 64), np.uint8)
    img[:, 32:] = 200
    edges = canny_edges(img, blur=0)
    cols = np.flatnonzero(edges.any(axis=0))
    assert edges.sum() >= 60  # one line down the whole height
    assert cols.min() >= 30 and cols.max() <= 33


def test_thresholds_follow_median_and_explicit_override(astronaut):
    lo, hi = auto_thresholds(np.full((8, 8), 100, np.uint8), sigma=0.33)
    assert lo == pytest.approx(67.0) and hi == pytest.approx(133.0)
    n_auto = canny_edges(astronaut).sum()
    n_strict = canny_edges(astronaut, low=200, high=400).sum()
    assert n_strict < n_auto
    with pytest.raises(ValueError, match="above"):
        canny_edges(astronaut, low=100, high=50)


def test_blur_reduces_texture_edges(coffee):
    assert canny_edges(coffee, blur=3).sum() < canny_edges(coffee, blur=0).sum()


def test_registry_and_pil_input(astronaut):
    assert CONVERTERS["canny"] is canny
    a = np.asarray(canny(Image.fromarray(astronaut)))
    b = np.asarray(canny(astronaut))
    assert np.array_equal(a, b)
