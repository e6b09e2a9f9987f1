"""Shipped models: export to bf16/fp16 (<= 25 MB), found by name offline, listed by `matebit models`.

Nothing is written under matebit/weights/: the weights root is pointed at a temporary folder."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import matebit.weights as W
from matebit.checkpoint import load_pretrained
from matebit.cli import run
from matebit.config import experiment_preset
from matebit.errors import CheckpointError, InputError
from matebit.inference import Translator
from matebit.models import MATEBITGenerator

CARD = """---
description: a tiny test model
licence: CC BY 4.0 (test)
structure: hed
---
# tiny

Trained on nothing; for tests.
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trained_model):
    folder = tmp_path_factory.mktemp("run") / "model"
    shutil.copytree(trained_model, folder)
    (folder / "README.md").write_text(CARD)
    return folder, load_pretrained(folder)[0]


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g) * 2 - 1


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_export_then_load_by_name_in_fp32(shipped_root, trained, dtype):
    folder, generator = trained
    target = W.export_model(folder, "tiny-test", dtype=dtype)
    assert target == shipped_root / "tiny-test" and W.shipped_names() == ["tiny-test"]
    from safetensors import safe_open

    with safe_open(str(target / "model.safetensors"), "pt") as f:
        floats = {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()}
    assert floats == {torch.bfloat16 if dtype == "bf16" else torch.float16}
    translator = Translator.from_pretrained("tiny-test", device="cpu", dtype="fp32")
    assert next(translator.generator.parameters()).dtype == torch.float32
    s, e = _inputs()
    with torch.no_grad():
        want = generator.eval()(s, e).image
        got = translator.generator(s, e).image
    diff = (got - want).abs()
    # Rounded, not another model (a random tiny model is touchy: alpha = 100 magnifies weight rounding).
    assert 0 < diff.mean() < (0.1 if dtype == "bf16" else 0.01)
    meta = W.read_card_meta(target)
    assert meta["name"] == "tiny-test" and meta["dtype"] == dtype and int(meta["params"]) > 0
    assert meta["storage_check"].startswith(f"{dtype} weights vs fp32") and "32x32" in meta["storage_check"]
    assert "Trained on nothing" in (target / "README.md").read_text()


def test_refusals(shipped_root, trained, tmp_path):
    folder, _ = trained
    with pytest.raises(InputError, match="25 MB|over the"):
        W.export_model(folder, "big", max_mb=0.01)
    assert not (shipped_root / "big").exists() and not list(shipped_root.iterdir())  # nothing half-written
    with pytest.raises(InputError, match="a model name"):
        W.export_model(folder, "Bad Name")
    with pytest.raises(InputError, match="front matter"):
        W.export_model(folder, "x", card="# a card without front matter\n")
    with pytest.raises(InputError, match="'licence'"):
        W.export_model(folder, "x", card="---\ndescription: d\nstructure: hed\n---\nbody\n")
    W.export_model(folder, "x")
    with pytest.raises(InputError, match="exists"):
        W.export_model(folder, "x")
    W.export_model(folder, "x", overwrite=True)


def test_resolve_model_paths_names_and_errors(shipped_root, trained, tmp_path, monkeypatch):
    folder, _ = trained
    assert W.resolve_model(folder) == folder  # an existing path wins
    with pytest.raises(CheckpointError, match="no such model folder.*ships no model yet"):
        W.resolve_model("tiny-test")
    W.export_model(folder, "tiny-test")
    assert W.resolve_model("tiny-test") == shipped_root / "tiny-test"
    # A run folder of the same name in the working directory (no config.json) does not hide the shipped model;
    # a real model folder of that name still wins, as any existing path does.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-test" / "run").mkdir(parents=True)
    assert W.resolve_model("tiny-test") == shipped_root / "tiny-test"
    (tmp_path / "tiny-test" / "config.json").write_text("{}")
    assert W.resolve_model("tiny-test") == Path("tiny-test")
    with pytest.raises(CheckpointError, match=r"shipped: tiny-test") as err:
        Translator.from_pretrained("nope", device="cpu")
    assert "\n" not in str(err.value)


def test_models_command_lists_what_ships(shipped_root, trained, capsys):
    folder, _ = trained
    assert run(["models"]) == 0
    assert "no model ships" in capsys.readouterr().out
    W.export_model(folder, "tiny-test")
    assert run(["models"]) == 0
    out = capsys.readouterr().out
    for text in ("tiny-test", "32x32", "hed", "CC BY 4.0 (test)", "a tiny test model", str(shipped_root / "tiny-test")):
        assert text in out
    assert run(["models", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    n = sum(p.numel() for p in MATEBITGenerator(experiment_preset("tiny").model).parameters())
    assert entry["params"] == n and entry["trained_size"] == 32 and entry["dtype"] == "F16"


def test_export_and_translate_commands(shipped_root, trained, tmp_path, capsys):
    from PIL import Image

    folder, _ = trained
    assert run(["export", str(folder), "tiny-test", "--dtype", "bf16"]) == 0
    assert "tiny-test" in capsys.readouterr().out
    assert run(["export", str(folder), "tiny-test"]) == 2  # exists
    card = tmp_path / "card.md"
    card.write_text(CARD.replace("a tiny test model", "hand-written card"))
    assert run(["export", str(folder), "other", "--card", str(card), "--root", str(tmp_path / "elsewhere")]) == 0
    assert W.read_card_meta(tmp_path / "elsewhere" / "other")["description"] == "hand-written card"
    s, e = (Image.fromarray((np.random.default_rng(i).random((32, 32, 3)) * 255).astype(np.uint8)) for i in (0, 1))
    s.save(tmp_path / "s.png")
    e.save(tmp_path / "e.png")
    assert run(["translate", "--model", "tiny-test", "--structure", str(tmp_path / "s.png"), "--exemplar",
                str(tmp_path / "e.png"), "--out", str(tmp_path / "o.png"), "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "o.png").size == (32, 32)
    assert run(["translate", "--model", "not-shipped", "--structure", str(tmp_path / "s.png"), "--exemplar",
                str(tmp_path / "e.png"), "--out", str(tmp_path / "o2.png"), "--device", "cpu"]) == 2
    assert "shipped: tiny-test" in capsys.readouterr().err


def test_package_data_rule_covers_the_model_files():
    """pyproject ships matebit/weights/<name>/{model.safetensors, config.json, README.md} as package data."""
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    rules = data["tool"]["setuptools"]["package-data"]["matebit.weights"]
    assert {"*/model.safetensors", "*/config.json", "*/README.md"} <= set(rules)

