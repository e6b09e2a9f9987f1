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
