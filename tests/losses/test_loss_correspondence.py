import pytest
import torch
import torch.nn.functional as F

from matebit.losses import align_loss, corr_loss, downsample_to


def test_align_loss_hand_computed_and_level_average():
    a = torch.zeros(1, 2, 1, 2)
    b = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.5]]]])  # |diff| sum 1.5 over 4 entries
    assert align_loss(a, b).item() == pytest.approx(1.5 / 4)
    # Two levels: mean of 0.375 and 0 -> 0.1875.
    assert align_loss([a, a], [b, a]).item() == pytest.approx(0.1875)
    with pytest.raises(ValueError, match="levels"):
        align_loss([a, a], [b])


def test_corr_loss_zero_for_identity_correspondence():
    x_b = torch.rand(2, 3, 16, 16) * 2 - 1
    y_b = x_b.clone()  # exemplar == target; identity warp = area-downsampled exemplar
    warped = [F.avg_pool2d(y_b, 4), F.avg_pool2d(y_b, 2)]
    assert corr_loss(warped, x_b).item() == pytest.approx(0.0, abs=1e-7)


def test_corr_loss_hand_computed_with_area_downsampling():
    target = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]]).expand(1, 3, 2, 2)  # area mean = 4
    warped = torch.full((1, 3, 1, 1), 1.0)
    assert downsample_to(target, (1, 1)).flatten().tolist() == [4.0, 4.0, 4.0]
    assert corr_loss([warped], target).item() == pytest.approx(3.0)
    # Averaged over blocks: (3 + 0) / 2.
    assert corr_loss([warped, torch.full((1, 3, 1, 1), 4.0)], target).item() == pytest.approx(1.5)


def test_corr_loss_sample_weight_selects_self_pairs():
    target = torch.zeros(2, 3, 2, 2)
    warped = torch.stack([torch.full((3, 2, 2), 2.0), torch.full((3, 2, 2), 10.0)])
    assert corr_loss([warped], target, sample_weight=torch.tensor([1.0, 0.0])).item() == pytest.approx(2.0)
    none = corr_loss([warped], target, sample_weight=torch.tensor([0.0, 0.0]))
    assert torch.isfinite(none) and none.item() == 0.0


# -- the self-warp matching term (loss.match, not in the paper) ---------------------------------------------------

from matebit.data.warp import WarpConfig, warp_grid  # noqa: E402
from matebit.losses.correspondence import match_loss, warp_match_targets  # noqa: E402


def _shift_grid(b, size, dx_pixels):
    """A grid whose exemplar pixel (i, j) reads x_B at (i, j - dx): the exemplar shows x_B moved dx to the right."""
    g = warp_grid(b, size, size, torch.Generator().manual_seed(0), WarpConfig.none())
    return g - torch.tensor([2.0 * dx_pixels / size, 0.0])


def test_match_targets_of_the_identity_warp_are_the_same_tokens():
    target, valid = warp_match_targets(_shift_grid(2, 32, 0), (4, 4))
    assert valid.all()
    assert torch.equal(target, torch.arange(16).expand(2, -1))


def test_match_targets_follow_a_shift_by_one_token_and_drop_what_left_the_view():
    # The exemplar shows x_B moved 8 px (one token of a 32 px image on a 4x4 grid) to the right: structure token
    # (r, c) is found at (r, c + 1); the last column's content has left the exemplar.
    target, valid = warp_match_targets(_shift_grid(1, 32, 8), (4, 4))
    rows, cols = torch.arange(16) // 4, torch.arange(16) % 4
    assert torch.equal(valid[0], cols < 3)
    assert torch.equal(target[0][cols < 3], (rows * 4 + cols + 1)[cols < 3])


def test_match_targets_skip_mirrored_and_unknown_exemplars():
    mirrored = _shift_grid(1, 32, 0).flip(2)  # a horizontal flip: x_B's x decreases along the rows
    assert not warp_match_targets(mirrored, (4, 4))[1].any()
    unknown = torch.full((1, 32, 32, 2), float("nan"))  # a pairs-file exemplar carries a NaN grid
    assert not warp_match_targets(unknown, (4, 4))[1].any()


def test_match_loss_is_small_on_the_true_token_large_elsewhere_and_ignores_other_exemplars():
    grid = _shift_grid(2, 32, 8)
    target, valid = warp_match_targets(grid, (4, 4))
    right = F.one_hot(target, 16).float() * 0.97 + 0.03 / 16
    wrong = F.one_hot((target + 5) % 16, 16).float() * 0.97 + 0.03 / 16
    assert match_loss(right, grid, (4, 4)).item() < 0.05
    assert match_loss(wrong, grid, (4, 4)).item() > 5.0
    assert match_loss([right, wrong], grid, (4, 4)).item() == pytest.approx(
        (match_loss(right, grid, (4, 4)) + match_loss(wrong, grid, (4, 4))).item() / 2)
    # Sample 1 (weight 0) holds the wrong rows: it must not count.
    mixed = torch.stack([right[0], wrong[1]])
    assert match_loss(mixed, grid, (4, 4), sample_weight=torch.tensor([1.0, 0.0])).item() < 0.05
