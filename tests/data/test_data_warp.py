import pytest
import torch

from matebit.data.warp import WarpConfig, random_warp, random_warp_batch


def _img(h=20, w=28):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(7)) * 2 - 1


def test_zero_strength_is_identity():
    img = _img()
    out = random_warp(img, torch.Generator().manual_seed(0), WarpConfig.none())
    assert out.shape == img.shape
    assert torch.allclose(out, img, atol=1e-5)


def test_flip_only_is_exact_mirror():
    cfg = WarpConfig.none()
    cfg.flip = 1.0
    img = _img()
    assert torch.allclose(random_warp(img, torch.Generator().manual_seed(0), cfg), img.flip(-1), atol=1e-5)


def test_deterministic_given_generator_and_seed_sensitive():
    img, cfg = _img(), WarpConfig()
    a = random_warp(img, torch.Generator().manual_seed(3), cfg)
    b = random_warp(img, torch.Generator().manual_seed(3), cfg)
    c = random_warp(img, torch.Generator().manual_seed(4), cfg)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)


@pytest.mark.parametrize("component", ["rotation", "scale", "shear", "translation", "elastic", "crop"])
def test_each_component_changes_image_and_stays_in_range(component):
    cfg = WarpConfig.none()
    setattr(cfg, component, {"rotation": 20.0, "scale": 0.3, "shear": 15.0, "translation": 0.2,
                             "elastic": 0.08, "crop": 0.4}[component])
    img = _img()
    out = random_warp(img, torch.Generator().manual_seed(1), cfg)
    assert (out - img).abs().mean() > 0.05
    assert out.min() >= img.min() - 1e-6 and out.max() <= img.max() + 1e-6


def test_batch_warps_each_image_differently_and_returns_grid():
    img = _img(16, 16)
    batch = img.expand(3, -1, -1, -1).contiguous()
    out, grid = random_warp_batch(batch, torch.Generator().manual_seed(0), WarpConfig(), return_grid=True)
    assert out.shape == batch.shape and grid.shape == (3, 16, 16, 2)
    assert not torch.allclose(out[0], out[1], atol=1e-3)
    # The grid is the correspondence: sampling the source with it reproduces the output.
    again = torch.nn.functional.grid_sample(batch, grid, mode="bilinear", padding_mode="reflection",
                                            align_corners=False)
    assert torch.allclose(again, out)


def test_bad_config_and_shapes_rejected():
    with pytest.raises(ValueError, match="rotation"):
        WarpConfig(rotation=-1.0)
    with pytest.raises(ValueError, match="crop"):
        WarpConfig(crop=1.0)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        random_warp(torch.zeros(1, 3, 8, 8), torch.Generator(), WarpConfig())
