"""The positional code is a function of the relative position only (README: the same weights run at any size)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from matebit.models.layers import POSITION_FREQUENCIES, sine_position_code

C = 64


def test_same_relative_place_same_code_across_sizes_exactly():
    # Token centres of a 32-grid, (i + 0.5) / 32, are the centres 3i + 1 of a 96-grid: the code must agree there.
    coarse = sine_position_code(32, 32, C)
    fine = sine_position_code(96, 96, C)
    torch.testing.assert_close(fine[..., 1::3, 1::3], coarse, atol=1e-5, rtol=0)


def test_pooled_fine_code_matches_coarse_code_within_interpolation_error():
    # 2x2 average pooling of the 64-grid code samples each sinusoid at two points 1/64 apart around the 32-grid
    # centre: the mean of sin(f(u -+ d)) is cos(f d) sin(f u), so the error is at most 1 - cos(f_max / 128).
    coarse = sine_position_code(32, 32, C)
    pooled = F.avg_pool2d(sine_position_code(64, 64, C), 2)
    bound = 1 - torch.cos(torch.tensor(POSITION_FREQUENCIES[1] / 128)).item()
    assert bound < 0.08
    assert (pooled - coarse).abs().max() <= bound + 1e-5


def test_each_axis_code_depends_on_that_axis_relative_position_only():
    # A 256x384 input (32x48 grid) beside a 256x256 one: the y channels are those of the square grid, and the
    # x channels do not change with the height; across widths the x code agrees at shared relative places.
    half = C // 2  # channels [0, C/2) depend on y only, [C/2, C) on x only
    square, wide = sine_position_code(32, 32, C), sine_position_code(32, 48, C)
    torch.testing.assert_close(wide[:, :half], square[:, :half, :, :1].expand(-1, -1, -1, 48))
    torch.testing.assert_close(wide[:, half:], sine_position_code(16, 48, C)[:, half:, :1].expand(-1, -1, 32, -1))
    torch.testing.assert_close(sine_position_code(32, 144, C)[..., 1::3], wide, atol=1e-5, rtol=0)


def test_code_is_not_constant_and_distinguishes_places():
    code = sine_position_code(32, 32, C)[0].flatten(1).T  # (1024, C)
    dist = torch.cdist(code, code)
    dist.fill_diagonal_(float("inf"))
    assert dist.min() > 0.05  # no two token centres share a code
