"""Training image grids name their rows in a strip on the left."""

import numpy as np
import torch

from matebit.config import ExperimentConfig, apply_overrides, experiment_preset
from matebit.models import MATEBITGenerator
from matebit.runlog import GRID_ROWS, image_grid


def _grid(n_mat_blocks: int, size: int = 32):
    cfg: ExperimentConfig = apply_overrides(experiment_preset("tiny"), [f"model.n_mat_blocks={n_mat_blocks}"])
    g = MATEBITGenerator(cfg.model).eval()
    torch.manual_seed(0)
    batch = {"structure": torch.rand(2, cfg.model.structure_channels, size, size),
             "exemplar": torch.rand(2, 3, size, size) * 2 - 1, "image": torch.rand(2, 3, size, size) * 2 - 1}
    with torch.no_grad():
        out = g(batch["structure"], batch["exemplar"])
    return image_grid(batch, out), size


def test_rows_are_labelled_on_the_left():
    grid, size = _grid(1)
    rows = len(GRID_ROWS)
    images_width = 2 * (size + 2) + 2  # make_grid: 2 items a row, padding 2
    assert grid.shape[0] == 3 and grid.shape[1] == rows * (size + 2) + 2
    assert grid.shape[2] > images_width + 40  # a strip of text before the images
    strip = grid[:, :, : grid.shape[2] - images_width].numpy()
    for r in range(rows):  # every row's name is written: white pixels in the strip beside the row
        band = strip[:, 2 + r * (size + 2): 2 + r * (size + 2) + size]
        assert (band > 0.5).mean() > 0.01, r


def test_without_mat_blocks_the_two_mat_rows_are_left_out():
    grid, size = _grid(0)
    assert grid.shape[1] == 4 * (size + 2) + 2
    assert np.isfinite(grid.numpy()).all()
