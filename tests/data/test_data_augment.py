"""Backdrop-and-clothes recolouring (matebit/data/augment.py, train.recolour_background)."""

import numpy as np
import pytest
import torch
from PIL import Image

from matebit.config import ConfigError, TrainConfig, experiment_preset
from matebit.data import DataConfig, DataError, PairedFolderDataset, WarpConfig
from matebit.data.augment import border_region, recolour_background

SIZE = 64


def _portrait(size=SIZE, backdrop=(190, 194, 193)):
    """A plain-backdrop 'portrait': a skin-coloured head (disk), a white shirt touching the bottom edge, a dark
    mouth inside the head, on a backdrop with a faint vertical shading (as a studio's is)."""
    yy, xx = np.mgrid[:size, :size]
    img = np.empty((size, size, 3), np.float64)
    img[:] = backdrop
    img += (yy / size * 6.0)[..., None]  # 6 levels of shading top to bottom: below the flood fill's step
    head = (xx - size / 2) ** 2 + (yy - size * 0.4) ** 2 < (size * 0.22) ** 2
    shirt = (yy > size * 0.8) & (np.abs(xx - size / 2) < size * 0.35)
    mouth = head & (np.abs(xx - size / 2) < 4) & (np.abs(yy - size * 0.5) < 2)
    img[head] = (200, 150, 120)
    img[mouth] = (90, 30, 30)
    img[shirt] = (245, 245, 245)
    return img.round().astype(np.uint8), head, shirt


def _tensor(u8):
    return torch.from_numpy(u8).permute(2, 0, 1).float() / 127.5 - 1


def test_border_region_is_backdrop_and_border_clothes_not_the_head():
    img, head, shirt = _portrait()
    region = border_region(img)
    backdrop = ~head & ~shirt
    # the 3x3 blur and the 4-neighbour fill may give or take the one-pixel rim of a shape: compare the insides
    from scipy.ndimage import binary_erosion

    assert region[binary_erosion(backdrop, iterations=2)].all()
    assert not region[binary_erosion(head, iterations=2)].any()
    # the shirt differs from the backdrop by more than one step but touches the bottom border: it is seeded too
    assert region[binary_erosion(shirt, iterations=2)].all()


def test_border_region_stops_at_a_real_step_and_leaves_an_enclosed_region():
    img, head, _ = _portrait()
    img[head] = (188, 192, 191)  # a "head" of backdrop colour but enclosed by a dark ring: not reachable
    yy, xx = np.mgrid[:SIZE, :SIZE]
    ring = np.abs(np.hypot(xx - SIZE / 2, yy - SIZE * 0.4) - SIZE * 0.22) < 1.5
    img[ring] = (20, 20, 20)
    from scipy.ndimage import binary_erosion

    region = border_region(img)
    assert not region[binary_erosion(head & ~ring, iterations=3)].any()


def test_recolour_changes_only_the_region_and_keeps_the_head_exactly():
    img, head, shirt = _portrait()
    x = _tensor(img)
    out = recolour_background(x, torch.Generator().manual_seed(3))
    from scipy.ndimage import binary_dilation, binary_erosion

    region = border_region(img)
    far_from_region = ~binary_dilation(region, iterations=2)
    assert far_from_region[binary_erosion(head, iterations=3)].all()  # the protocol reaches the head's inside
    assert torch.equal(out[:, torch.from_numpy(far_from_region)], x[:, torch.from_numpy(far_from_region)])
    inside = torch.from_numpy(binary_erosion(region, iterations=2))
    assert (out - x).abs()[:, inside].mean() > 0.1  # the backdrop and the shirt took new colours


@pytest.mark.parametrize("seed", range(6))
def test_recolour_field_is_smooth_so_it_adds_no_edge(seed):
    img, _, _ = _portrait()
    out = recolour_background(_tensor(img), torch.Generator().manual_seed(seed), max_cells=4)
    from scipy.ndimage import binary_erosion

    inside = binary_erosion(border_region(img), iterations=2)
    both_x = torch.from_numpy(inside[:, 1:] & inside[:, :-1])
    both_y = torch.from_numpy(inside[1:] & inside[:-1])
    step_x = (out[:, :, 1:] - out[:, :, :-1]).abs().amax(0)[both_x]
    step_y = (out[:, 1:] - out[:, :-1]).abs().amax(0)[both_y]
    # colours in [-1, 1] interpolated between at most 4 cells across 64 px: at most 2 * 3 / 63 per pixel
    bound = 2 * 3 / (SIZE - 1) + 1e-4
    assert step_x.max() <= bound and step_y.max() <= bound


def test_recolour_is_reproducible_from_the_generator():
    x = _tensor(_portrait()[0])
    a = recolour_background(x, torch.Generator().manual_seed(7))
    b = recolour_background(x, torch.Generator().manual_seed(7))
    c = recolour_background(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.fixture
def portraits(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "structure").mkdir()
    for i in range(3):
        img, head, _ = _portrait(backdrop=(180 + 5 * i, 190, 190))
        Image.fromarray(img).save(tmp_path / "images" / f"p{i}.png")
        Image.fromarray((head * 255).astype(np.uint8)).save(tmp_path / "structure" / f"p{i}.png")
    (tmp_path / "train.txt").write_text("p0\np1\np2\n")
    (tmp_path / "val.txt").write_text("")
    return tmp_path


def _datasets(root, **kw):
    no_warp = WarpConfig.none()
    plain = PairedFolderDataset(DataConfig(root=str(root), size=SIZE, flip=False, warp=no_warp, exemplar_rate=0.0),
                                "train", allow_empty=True)
    aug = PairedFolderDataset(DataConfig(root=str(root), size=SIZE, flip=False, warp=no_warp, exemplar_rate=0.0,
                                         recolour_background=1.0, **kw), "train", allow_empty=True)
    return plain, aug


def test_dataset_recolours_target_and_exemplar_together_and_keeps_the_structure(portraits):
    plain, aug = _datasets(portraits, recolour_target=True)
    for i in range(3):
        p = plain.get(i, torch.Generator().manual_seed(i))
        a = aug.get(i, torch.Generator().manual_seed(i))
        assert torch.equal(a["structure"], p["structure"])
        assert (a["image"][:, :4, :4] - p["image"][:, :4, :4]).abs().mean() > 0.05  # backdrop recoloured
        # the identity warp: the exemplar is the recoloured target itself, so the output must take its colours
        assert torch.allclose(a["exemplar"], a["image"], atol=1e-5)


def test_dataset_recolours_the_exemplar_alone_by_default(portraits):
    plain, aug = _datasets(portraits)
    img, head, _ = _portrait(backdrop=(180, 190, 190))
    from scipy.ndimage import binary_erosion

    inside_head = torch.from_numpy(binary_erosion(head, iterations=3))
    for i in range(3):
        p = plain.get(i, torch.Generator().manual_seed(i))
        a = aug.get(i, torch.Generator().manual_seed(i))
        assert torch.equal(a["image"], p["image"]) and torch.equal(a["structure"], p["structure"])
        assert (a["exemplar"][:, :4, :4] - a["image"][:, :4, :4]).abs().mean() > 0.05  # only its backdrop moved
        assert torch.allclose(a["exemplar"][:, inside_head], a["image"][:, inside_head], atol=1e-5)
        assert torch.equal(a["warp_grid"], p["warp_grid"])  # the identity warp's grid: still the exact truth


def test_recolouring_off_keeps_the_random_stream(portraits):
    """At rate 0 nothing extra is drawn: the exemplar is the warp drawn right after the item's four draws, as
    before the option existed (so earlier runs and their resumes are unchanged)."""
    from matebit.data.warp import random_warp

    cfg = DataConfig(root=str(portraits), size=SIZE, exemplar_rate=0.0, flip=False, recolour_background=0.0)
    ds = PairedFolderDataset(cfg, "train", allow_empty=True)
    for i in range(3):
        item = ds.get(i, torch.Generator().manual_seed(10 + i))
        g = torch.Generator().manual_seed(10 + i)
        torch.rand(4, generator=g)
        exemplar, grid = random_warp(item["image"], g, cfg.warp, return_grid=True)
        assert torch.equal(item["exemplar"], exemplar) and torch.equal(item["warp_grid"], grid)
    on = PairedFolderDataset(DataConfig(root=str(portraits), size=SIZE, exemplar_rate=0.0, flip=False,
                                        recolour_background=1e-9), "train", allow_empty=True)
    shifted = on.get(0, torch.Generator().manual_seed(10))["warp_grid"]
    assert not torch.equal(shifted, ds.get(0, torch.Generator().manual_seed(10))["warp_grid"])  # one draw shows


def test_option_is_validated_and_off_in_the_presets():
    with pytest.raises(ConfigError, match="recolour_background"):
        TrainConfig(recolour_background=1.5)
    with pytest.raises(DataError, match="recolour_background"):
        DataConfig(recolour_background=-0.1)
    # The face recipe varies backdrops in its prepared portraits instead (data/portraits.py, docs/faces.md).
    for name in ("faces", "faces-full-corr", "demo"):
        assert experiment_preset(name).train.recolour_background == 0.0
