import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from matebit.data import DataConfig, DataError, PairedFolderDataset, WarpConfig, write_synthetic_dataset


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=6, n_val=2, size=32, seed=0)


def _copy(src, dst, drop=()):
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


def _tiny(root, n=3, size=16, channels=3):
    """A minimal hand-made data set: random images and PNG maps, no split or pairs files."""
    (root / "images").mkdir(parents=True)
    (root / "structure").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"s{i}.png")
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / "structure" / f"s{i}.png")
    return root


@pytest.mark.parametrize("channels", [1, 3])
def test_train_items_have_right_shapes_and_ranges(syn, channels):
    ds = PairedFolderDataset(DataConfig(root=str(syn), size=(24, 32), structure_channels=channels), "train")
    assert len(ds) == 6
    for i in range(len(ds)):
        it = ds.get(i, torch.Generator().manual_seed(i))
        assert it["structure"].shape == (channels, 24, 32)
        assert it["image"].shape == it["exemplar"].shape == (3, 24, 32)
        assert 0 <= it["structure"].min() and it["structure"].max() <= 1 and it["structure"].max() > 0.5
        for k in ("image", "exemplar"):
            assert -1 <= it[k].min() and it[k].max() <= 1 and it[k].min() < 0 < it[k].max()
        assert it["self_ref"].dtype == torch.bool
        assert it["self_ref"].item() == (it["exemplar_stem"] == it["stem"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 24, 32) and batch["self_ref"].shape == (3,)


def test_exemplar_rate_chooses_between_pairs_and_self_warp(syn):
    pairs = {l.split()[0]: l.split()[1:] for l in (syn / "pairs.txt").read_text().splitlines()}
    always_pairs = PairedFolderDataset(DataConfig(root=str(syn), size=32, exemplar_rate=1.0), "train")
    never_pairs = PairedFolderDataset(DataConfig(root=str(syn), size=32, exemplar_rate=0.0, flip=False), "train")
    for i in range(6):
        a = always_pairs.get(i, torch.Generator().manual_seed(i))
        assert not a["self_ref"] and a["exemplar_stem"] in pairs[a["stem"]]
        b = never_pairs.get(i, torch.Generator().manual_seed(i))
        assert b["self_ref"] and b["exemplar_stem"] == b["stem"]
        assert not torch.allclose(b["exemplar"], b["image"], atol=1e-2)  # warped, not a copy
    ident = PairedFolderDataset(DataConfig(root=str(syn), size=32, exemplar_rate=0.0, flip=False,
                                           warp=WarpConfig.none()), "train")
    it = ident.get(0, torch.Generator().manual_seed(0))
    assert torch.allclose(it["exemplar"], it["image"], atol=1e-5)


def test_same_generator_same_item(syn):
    ds = PairedFolderDataset(DataConfig(root=str(syn), size=32), "train")
    a, b = ds.get(2, torch.Generator().manual_seed(9)), ds.get(2, torch.Generator().manual_seed(9))
    assert all(torch.equal(a[k], b[k]) for k in ("structure", "image", "exemplar", "self_ref"))


def test_val_is_deterministic_and_uses_first_pair(syn):
    ds = PairedFolderDataset(DataConfig(root=str(syn), size=32), "val")
    assert ds.stems == (syn / "val.txt").read_text().split()
    first = {l.split()[0]: l.split()[1] for l in (syn / "pairs.txt").read_text().splitlines()}
    for i in range(len(ds)):
        torch.manual_seed(i)
        a = ds[i]
        torch.manual_seed(i + 100)
        b = ds[i]
        assert a["exemplar_stem"] == first[a["stem"]] and not a["self_ref"]
        assert torch.equal(a["exemplar"], b["exemplar"]) and torch.equal(a["image"], b["image"])


def test_val_without_pairs_uses_fixed_warp(tmp_path, syn):
    root = _copy(syn, tmp_path / "d", drop=["pairs.txt"])
    ds = PairedFolderDataset(DataConfig(root=str(root), size=32, seed=3), "val")
    a, b = ds[0], ds[0]
    assert a["self_ref"] and torch.equal(a["exemplar"], b["exemplar"])
    assert not torch.allclose(a["exemplar"], a["image"], atol=1e-2)


def test_hashed_split_is_deterministic_disjoint_and_complete(tmp_path, syn):
    root = _copy(syn, tmp_path / "d", drop=["train.txt", "val.txt"])
    cfg = DataConfig(root=str(root), size=32, val_fraction=0.5)
    tr, va = PairedFolderDataset(cfg, "train").stems, PairedFolderDataset(cfg, "val").stems
    assert set(tr).isdisjoint(va) and sorted(tr + va) == [f"{i:06d}" for i in range(8)]
    assert tr and va
    assert PairedFolderDataset(DataConfig(root=str(root), size=32, val_fraction=0.5, seed=7), "val").stems == va
    # With only val.txt present, train is every other stem.
    (root / "val.txt").write_text("000001\n")
    assert "000001" not in PairedFolderDataset(cfg, "train").stems
    assert len(PairedFolderDataset(cfg, "train")) == 7


@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_npy_structure_maps(tmp_path, layout):
    root = _tiny(tmp_path / "d", n=2, size=16)
    for i in range(2):
        (root / "structure" / f"s{i}.png").unlink()
        arr = np.random.default_rng(i).random((5, 16, 16) if layout == "chw" else (16, 16, 5)).astype(np.float32)
        np.save(root / "structure" / f"s{i}.npy", arr)
    ds = PairedFolderDataset(DataConfig(root=str(root), size=8, structure_channels=5, val_fraction=0.0))
    it = ds.get(0, torch.Generator().manual_seed(0))
    assert it["structure"].shape == (5, 8, 8)
    raw = np.load(root / "structure" / f"{it['stem']}.npy")
    raw = raw if layout == "chw" else raw.transpose(2, 0, 1)
    flipped = torch.from_numpy(raw).flip(-1)
    small = torch.nn.functional.interpolate(torch.from_numpy(raw)[None], size=(8, 8), mode="bilinear",
                                            antialias=True)[0]
    small_f = torch.nn.functional.interpolate(flipped[None], size=(8, 8), mode="bilinear", antialias=True)[0]
    assert torch.allclose(it["structure"], small, atol=1e-5) or torch.allclose(it["structure"], small_f, atol=1e-5)


def _expect(cfg_root, match, **kw):
    cfg = DataConfig(root=str(cfg_root), size=16, val_fraction=0.0, **kw)
    with pytest.raises(DataError, match=match):
        ds = PairedFolderDataset(cfg, "train")
        ds.verify()


def test_error_missing_folder(tmp_path):
    root = _tiny(tmp_path / "d")
    shutil.rmtree(root / "structure")
    _expect(root, r"structure: folder not found")
    _expect(tmp_path / "nowhere", r"nowhere: folder not found")


def test_error_stem_without_structure(tmp_path):
    root = _tiny(tmp_path / "d")
    (root / "structure" / "s1.png").unlink()
    _expect(root, r"s1\.png: no structure map")


def test_error_pairs_entry_missing(tmp_path):
    root = _tiny(tmp_path / "d")
    (root / "pairs.txt").write_text("s0 s1\ns1 ghost\n")
    _expect(root, r"pairs\.txt:2: 'ghost' has no file")


def test_error_split_file_names_missing_stem(tmp_path):
    root = _tiny(tmp_path / "d")
    (root / "train.txt").write_text("s0\nnope\n")
    _expect(root, r"train\.txt: stem 'nope' has no file")


def test_error_size_mismatch(tmp_path):
    root = _tiny(tmp_path / "d")
    Image.fromarray(np.zeros((12, 20), np.uint8)).save(root / "structure" / "s2.png")
    _expect(root, r"s2\.png: size 20x12 does not match image 16x16")


def test_error_corrupt_files(tmp_path):
    root = _tiny(tmp_path / "d")
    (root / "images" / "s0.png").write_bytes(b"not a png at all")
    _expect(root, r"images/s0\.png: not an image file matebit reads")
    root2 = _tiny(tmp_path / "e")
    (root2 / "structure" / "s1.png").unlink()
    (root2 / "structure" / "s1.npy").write_bytes(b"garbage")
    _expect(root2, r"s1\.npy: cannot read \.npy file")


@pytest.mark.parametrize("bad,match", [(np.nan, "contains NaN or inf"), (np.inf, "contains NaN or inf"),
                                       (2.0, r"values must lie in \[0, 1\]")])
def test_error_bad_npy_values(tmp_path, bad, match):
    root = _tiny(tmp_path / "d")
    (root / "structure" / "s0.png").unlink()
    arr = np.zeros((16, 16, 3), np.float32)
    arr[3, 4, 1] = bad
    np.save(root / "structure" / "s0.npy", arr)
    _expect(root, r"s0\.npy: " + match)


def test_error_wrong_channel_count(tmp_path):
    root = _tiny(tmp_path / "d")
    _expect(root, r"s0\.png: a PNG map gives 1 or 3 channels", structure_channels=4)


def test_config_validation():
    with pytest.raises(ValueError, match="exemplar_rate"):
        DataConfig(exemplar_rate=1.5)
    assert DataConfig(size=[24, 32]).hw == (24, 32)


def test_a_self_exemplar_carries_the_grid_it_was_warped_with_and_a_pairs_exemplar_a_nan_grid(syn):
    import torch.nn.functional as F

    warped = PairedFolderDataset(DataConfig(root=str(syn), size=32, exemplar_rate=0.0), "train")
    for i in range(3):
        it = warped.get(i, torch.Generator().manual_seed(i))
        assert it["warp_grid"].shape == (32, 32, 2)
        again = F.grid_sample(it["image"][None], it["warp_grid"][None], mode="bilinear", padding_mode="reflection",
                              align_corners=False)[0]
        assert torch.allclose(again, it["exemplar"], atol=1e-5)  # loss.match learns from exactly this map
    other = PairedFolderDataset(DataConfig(root=str(syn), size=32, exemplar_rate=1.0), "train")
    assert torch.isnan(other.get(0, torch.Generator().manual_seed(0))["warp_grid"]).all()
