import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from matebit.checkpoint import (
    CheckpointError,
    load_pretrained,
    load_tensors,
    save_pretrained,
    save_tensors,
)
from matebit.config import ExperimentConfig, model_preset
from matebit.errors import InputError
from matebit.models.generator import MATEBITGenerator


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cfg = model_preset("tiny")
    gen = MATEBITGenerator(cfg).eval()
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    save_pretrained(folder, gen, ExperimentConfig(model=cfg, preset="tiny"), card="trained 0 steps on nothing")
    return folder, gen, cfg


def _copy(folder, tmp_path):
    dst = tmp_path / "copy"
    dst.mkdir()
    for f in folder.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


# -- tensor files ----------------------------------------------------------------------------------------------


def test_save_load_tensors_with_metadata_and_aliases(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    tensors = {"w": base, "tied": base, "view": base[:, 1], "t": base.t(), "step": torch.tensor(7)}
    meta = {"step": 7, "lr": 1e-4, "names": ["a", "b"], "opt": {"betas": [0.0, 0.999]}, "note": "hi"}
    save_tensors(tmp_path / "s.safetensors", tensors, meta)
    got, got_meta = load_tensors(tmp_path / "s.safetensors")
    assert got_meta == meta
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(got[k], v)


def test_load_tensors_refuses_pickle(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="pickle"):
        load_tensors(tmp_path / "x.safetensors")


# -- model folders ---------------------------------------------------------------------------------------------


def test_round_trip_gives_identical_outputs(saved):
    folder, gen, cfg = saved
    loaded, loaded_cfg = load_pretrained(folder)
    assert loaded_cfg == cfg
    assert not loaded.training
    s, e = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        assert torch.equal(gen(s, e).image, loaded(s, e).image)
    data = json.loads((folder / "config.json").read_text())
    assert data["_class"] == "ExperimentConfig" and data["preset"] == "tiny"
    card = (folder / "README.md").read_text()
    assert "preset: tiny" in card and "trained 0 steps on nothing" in card
    assert f"{sum(p.numel() for p in gen.parameters()):,}" in card


def test_model_config_only_and_plain_json(tmp_path):
    cfg = model_preset("tiny", n_mat_blocks=1)
    save_pretrained(tmp_path / "m", MATEBITGenerator(cfg), cfg)
    assert load_pretrained(tmp_path / "m")[1] == cfg
    # A config.json without "_class" (a plain to_json dump) is recognised too.
    data = json.loads((tmp_path / "m" / "config.json").read_text())
    del data["_class"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(data))
    assert load_pretrained(tmp_path / "m")[1] == cfg


def test_save_refuses_config_of_another_model(tmp_path):
    with pytest.raises(ValueError, match="differs"):
        save_pretrained(tmp_path / "m", MATEBITGenerator(model_preset("tiny")), model_preset("tiny", n_mat_blocks=1))
    assert not (tmp_path / "m").exists()


def test_missing_and_unexpected_keys(saved, tmp_path):
    folder = _copy(saved[0], tmp_path)
    weights = folder / "model.safetensors"
    state = load_file(weights)
    removed = sorted(state)[:2]
    for k in removed:
        del state[k]
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=rf"model.safetensors: missing 2 keys \({removed[0]}, {removed[1]}\)"):
        load_pretrained(folder)
    state = load_file(saved[0] / "model.safetensors")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=r"1 unexpected key \(extra.weight\)"):
        load_pretrained(folder)


def test_shape_mismatch_names_key_and_shapes(saved, tmp_path):
    folder = _copy(saved[0], tmp_path)
    data = json.loads((folder / "config.json").read_text())
    data["model"]["feature_channels"] = 64  # tiny has 32
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"shape of \S+ is \(.*32.*\), the config expects \(.*64.*\)"):
        load_pretrained(folder)


def test_pickles_are_refused_and_never_unpickled(saved, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("something tried to unpickle")

    folder = _copy(saved[0], tmp_path)
    torch.save(saved[1].state_dict(), folder / "model.safetensors")  # a zip pickle under the right name
    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    with pytest.raises(CheckpointError, match="pickle/zip file"):
        load_pretrained(folder)
    (folder / "model.safetensors").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError, match="pickle"):
        load_pretrained(folder)
    (folder / "model.safetensors").unlink()
    (folder / "model.pt").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointError, match="model.pt.*pickle"):
        load_pretrained(folder)
    with pytest.raises(CheckpointError, match="model.pt: a PyTorch pickle file"):
        load_pretrained(folder / "model.pt")


def test_source_never_unpickles():
    import ast

    import matebit.checkpoint as ck

    tree = ast.parse(open(ck.__file__).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "load":
            assert not (isinstance(node.value, ast.Name) and node.value.id in ("torch", "pickle")), "calls *.load"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any("pickle" in n for n in names)


@pytest.mark.parametrize("case, pattern", [
    ("no-dir", "no such model folder"),
    ("no-config", "config.json: missing"),
    ("no-weights", "model.safetensors: missing"),
    ("bad-json", "config.json: not valid JSON"),
    ("unknown-key", "config.json.*unknown key"),
    ("truncated", "model.safetensors: cannot read"),
    ("garbage", "model.safetensors: not a safetensors file"),
])
def test_folder_errors_name_the_file(saved, tmp_path, case, pattern):
    folder = _copy(saved[0], tmp_path)
    if case == "no-dir":
        folder = tmp_path / "nowhere"
    elif case == "no-config":
        (folder / "config.json").unlink()
    elif case == "no-weights":
        (folder / "model.safetensors").unlink()
    elif case == "bad-json":
        (folder / "config.json").write_text("{not json")
    elif case == "unknown-key":
        data = json.loads((folder / "config.json").read_text())
        data["model"]["colour"] = "blue"
        (folder / "config.json").write_text(json.dumps(data))
    elif case == "truncated":
        blob = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    elif case == "garbage":
        (folder / "model.safetensors").write_bytes(b"hello, this is not a tensor file")
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_pretrained(folder)
    assert isinstance(info.value, InputError) and "\n" not in str(info.value)


@pytest.mark.parametrize("low_bytes", [b"\x80", b"PK"])
def test_a_header_length_that_starts_like_a_pickle_or_zip_is_still_safetensors(tmp_path, low_bytes):
    # The first 8 bytes of a safetensors file are its header length: one whose low byte is 0x80, or whose low two
    # bytes read "PK", is legitimate (it happened to a training checkpoint) and must load.
    from safetensors.torch import save_file

    from matebit.checkpoint import load_tensors

    target = int.from_bytes(low_bytes.ljust(2, b"\x00")[: len(low_bytes)], "little")
    modulus = 256 ** len(low_bytes)
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(2)}, str(path), metadata={"pad": ""})
    start = (target - int.from_bytes(path.read_bytes()[:8], "little")) % modulus  # one pad char = one header byte
    for pad in range(max(start - 8, 0), start + 16):  # (the header is padded to a multiple of 8)
        save_file({"w": torch.ones(2)}, str(path), metadata={"pad": "x" * pad})
        head = path.read_bytes()[:8]
        if head[: len(low_bytes)] == low_bytes:
            break
    else:
        pytest.fail("no padding gave the wanted header length")
    tensors, _ = load_tensors(path)
    assert torch.equal(tensors["w"], torch.ones(2))
