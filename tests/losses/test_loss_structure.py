import pytest
import torch
from torch import nn

from matebit.losses import edges_to_image, structure_loss


class _TinyEdges(nn.Module):
    """Stand-in HED: sigmoid of a fixed gradient filter on the grey image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            k = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 3
            self.conv.weight.copy_(k.expand(1, 3, 3, 3))
        self.requires_grad_(False)

    def forward(self, x):
        return torch.sigmoid(4 * self.conv(x))


def _tiny_lpips(a, b):  # stand-in LPIPS: per-sample mean squared difference
    return ((a - b) ** 2).flatten(1).mean(1)


def test_edges_to_image_maps_to_three_channels_in_minus_one_one():
    e = torch.tensor([[[[0.0, 0.5, 1.0]]]])
    img = edges_to_image(e)
    assert img.shape == (1, 3, 1, 3)
    assert img[0, 2, 0].tolist() == [-1.0, 0.0, 1.0]


def test_structure_loss_zero_for_identical_positive_otherwise_and_grad_reaches_fake():
    hed = _TinyEdges()
    real = torch.rand(2, 3, 8, 8) * 2 - 1
    assert structure_loss(real.clone(), real, hed, _tiny_lpips).item() == pytest.approx(0.0)
    fake = (torch.rand(2, 3, 8, 8) * 2 - 1).requires_grad_(True)
    loss = structure_loss(fake, real, hed, _tiny_lpips)
    assert loss.item() > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
