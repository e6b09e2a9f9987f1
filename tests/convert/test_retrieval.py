import importlib

import numpy as np
import pytest
from PIL import Image

from matebit.convert import ConvertError, color_histogram, read_pairs, retrieve, write_pairs
from matebit.convert.retrieval import TorchFeatureExtractor, make_extractor, rank_exemplars


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, astronaut, chelsea, coffee):
    """Three real photos, each with a near-duplicate (noise + small shift + crop), plus a grey image."""
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, img in (("astronaut", astronaut), ("chelsea", chelsea), ("coffee", coffee)):
        small = np.asarray(Image.fromarray(img).resize((96, 96), Image.BILINEAR))
        Image.fromarray(small).save(d / f"{name}.png")
        dup = small[3:, 2:].astype(int) + rng.integers(-6, 7, small[3:, 2:].shape) + 4
        Image.fromarray(np.clip(dup, 0, 255).astype(np.uint8)).save(d / f"{name}_dup.jpg", quality=90)
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(d / "grey.png")
    (d / "readme.txt").write_text("not an image")
    return d


def test_near_duplicates_are_top1(photo_dir):
    pairs = retrieve(photo_dir, k=3, extractor=color_histogram, progress=False)
    assert sorted(pairs) == sorted(
        ["astronaut", "astronaut_dup", "chelsea", "chelsea_dup", "coffee", "coffee_dup", "grey"]
    )
    for name in ("astronaut", "chelsea", "coffee"):
        assert pairs[name][0] == f"{name}_dup"
        assert pairs[f"{name}_dup"][0] == name
    for stem, ex in pairs.items():
        assert stem not in ex and len(ex) == 3 and len(set(ex)) == 3


def test_pairs_file_roundtrip_and_format(photo_dir, tmp_path):
    pairs = retrieve(photo_dir, k=2, extractor=color_histogram, progress=False)
    out = write_pairs(pairs, tmp_path / "lists" / "pairs.txt")
    lines = out.read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == sorted(pairs)
    assert all(len(ln.split()) == 3 for ln in lines)
    assert read_pairs(out) == pairs
    assert [p.name for p in out.parent.iterdir()] == ["pairs.txt"]  # no temp file left


def test_tie_break_by_stem_is_order_independent():
    feats = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    stems = ["d", "b", "c", "a"]
    res = rank_exemplars(feats, stems, feats, stems, k=2)
    assert res["d"] == ["b", "c"] and res["b"] == ["c", "d"] and res["c"] == ["b", "d"]
    assert res["a"] == ["b", "c"]  # all three tie at similarity 0: alphabetical
    perm = [2, 0, 3, 1]
    res2 = rank_exemplars(feats[perm], [stems[i] for i in perm], feats[perm], [stems[i] for i in perm], k=2)
    assert res2 == res


def test_k_larger_than_pool_is_clamped_with_warning():
    feats = np.eye(3)
    with pytest.warns(UserWarning, match="only 2 candidates"):
        res = rank_exemplars(feats, ["a", "b", "c"], feats, ["a", "b", "c"], k=5)
    assert all(len(v) == 2 for v in res.values())
    with pytest.raises(ConvertError, match="at least two"):
        rank_exemplars(np.eye(1), ["a"], np.eye(1), ["a"], k=1)


def test_ref_dir_draws_from_other_folder(photo_dir, tmp_path, astronaut):
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.open(photo_dir / "chelsea.png").save(refs / "astronaut.png")  # same stem, different picture
    Image.open(photo_dir / "astronaut_dup.jpg").save(refs / "painting.png")
    pairs = retrieve(photo_dir, k=1, extractor=color_histogram, ref_dir=refs, progress=False)
    # Not the same files, so a shared stem is not "self" and may be chosen.
    assert pairs["astronaut"] == ["painting"] and pairs["chelsea"] == ["astronaut"]


def test_errors_name_the_file(tmp_path):
    (tmp_path / "a.png").write_bytes(b"garbage")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    with pytest.raises(ConvertError, match="a.png: not an image file matebit reads"):
        retrieve(tmp_path, k=1, extractor=color_histogram, progress=False)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    with pytest.raises(ConvertError, match="same stem"):
        retrieve(tmp_path, k=1, extractor=color_histogram, progress=False)
    with pytest.raises(ConvertError, match="not a folder"):
        retrieve(tmp_path / "nope", k=1, extractor=color_histogram, progress=False)


def test_bad_extractor_output_is_reported(photo_dir):
    with pytest.raises(ValueError, match="expected \\(N, D\\)"):
        retrieve(photo_dir, k=1, extractor=lambda ims: np.zeros(len(ims)), progress=False)


def test_torch_extractor_pools_deepest_output(photo_dir):
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 5, 3)
            self.seen = None

        def forward(self, x):
            self.seen = (x.min().item(), x.max().item(), tuple(x.shape))
            return {"shallow": x, "deep": self.conv(x)}

    net = Tiny()
    ext = TorchFeatureExtractor(net, image_size=32)
    ims = [Image.open(photo_dir / "astronaut.png"), Image.open(photo_dir / "grey.png")]
    f = ext(ims)
    assert f.shape == (2, 5)
    lo, hi, shape = net.seen
    assert shape == (2, 3, 32, 32) and -1.0 <= lo < 0 < hi <= 1.0


def test_vgg19_missing_weights_points_to_substitute(monkeypatch, tmp_path):
    try:
        third_party = importlib.import_module("matebit.third_party")
    except ImportError:
        pytest.skip("matebit.third_party not available")
    if not hasattr(third_party, "load_vgg19"):
        pytest.skip("no load_vgg19")
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    with pytest.raises(ConvertError, match="hed-vgg16"):
        make_extractor("vgg19")
    with pytest.raises(ValueError, match="unknown features"):
        make_extractor("resnet")


def _hed_available():
    try:
        from matebit.third_party import find_hed_weights

        find_hed_weights()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _hed_available(), reason="HED weights not installed")
def test_hed_vgg16_features_find_near_duplicates(photo_dir):
    pairs = retrieve(photo_dir, k=1, features="hed-vgg16", image_size=64, progress=False)
    hits = sum(pairs[n] == [f"{n}_dup"] for n in ("astronaut", "chelsea", "coffee"))
    assert hits >= 2, pairs
