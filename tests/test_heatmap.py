"""One colouring of heat maps for the web page and the demo report (matebit.heatmap)."""

import numpy as np
from PIL import Image

from matebit.heatmap import colormap, heat_overlay


def test_a_token_grid_is_enlarged_in_blocks_and_its_peak_is_red():
    image = np.full((64, 48, 3), 128, np.uint8)
    heat = np.zeros((8, 6))
    heat[2, 3] = 1.0
    out = heat_overlay(image, heat).astype(int)
    assert out.shape == (64, 48, 3)
    block = out[16:24, 24:32]
    assert (block == block[0, 0]).all()  # one token, one colour
    assert block[0, 0, 0] > 150 and block[0, 0, 2] < 60  # the peak is red
    assert abs(out[0, 0, 0] - out[0, 0, 2]) < 3  # elsewhere the image, greyed
    np.testing.assert_array_equal(heat_overlay(image[..., 0], heat), heat_overlay(image, heat))  # grey input


def test_no_heat_leaves_the_dimmed_image_and_the_scale_runs_blue_to_red():
    out = heat_overlay(np.full((4, 4, 3), 200, np.uint8), np.zeros((4, 4)))
    assert (out == round(200 * 0.6)).all()
    low, high = colormap(np.array([0.0, 1.0]))
    assert low[2] > low[0] and high[0] > high[2]


def test_the_page_and_the_report_colour_alike():
    from matebit import app
    from matebit.demo import report

    assert report.heat_overlay is heat_overlay
    exemplar = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    heat = np.random.default_rng(1).random((20, 30))
    np.testing.assert_array_equal(np.asarray(app.heat_overlay(exemplar, heat)), heat_overlay(np.asarray(exemplar), heat))
