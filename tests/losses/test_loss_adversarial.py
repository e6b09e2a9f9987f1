import pytest
import torch

from matebit.losses import d_hinge_loss, feature_matching_loss, g_hinge_loss


def test_hinge_losses_hand_computed():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - r) = 0, 0.5, 2 -> mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + f) = 0, 1, 2 -> mean 1
    assert d_hinge_loss(real, fake).item() == pytest.approx(5 / 6 + 1)
    assert g_hinge_loss(fake).item() == pytest.approx(1 / 3)


def test_multiscale_lists_use_last_item_and_average_scales():
    feat = torch.full((1, 2), 123.0)  # intermediate map: must be ignored by the hinge losses
    real = [[feat, torch.tensor([2.0])], [feat, torch.tensor([0.0])]]  # 0 and 1
    fake = [[feat, torch.tensor([-1.0])], [feat, torch.tensor([1.0])]]  # 0 and 2
    assert d_hinge_loss(real, fake).item() == pytest.approx(((0 + 0) + (1 + 2)) / 2)
    assert g_hinge_loss(fake).item() == pytest.approx((1.0 - 1.0) / 2)
    # Plain list of per-scale logits works too.
    assert g_hinge_loss([torch.tensor([1.0]), torch.tensor([3.0])]).item() == pytest.approx(-2.0)


def test_feature_matching_hand_computed_and_detached_real():
    f1 = torch.zeros(1, 2, requires_grad=True)
    r1 = torch.ones(1, 2, requires_grad=True)
    fake = [[f1, torch.zeros(1, 3), torch.tensor([5.0])], [torch.zeros(1, 1), torch.tensor([0.0])]]
    real = [[r1, torch.full((1, 3), 2.0), torch.tensor([-5.0])], [torch.full((1, 1), 4.0), torch.tensor([9.0])]]
    loss = feature_matching_loss(fake, real)
    assert loss.item() == pytest.approx((1 + 2 + 4) / 2)  # logits excluded, / num_D
    loss.backward()
    assert f1.grad is not None and r1.grad is None
