"""Issue 35, "Data lost or wrong, exit 0": outputs onto inputs, temp files of others, sizes, NaN, a device among the
training images. Each case of the issue, and other members of its class, through the `matebit` command line."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hostile_helpers import TRAIN_SETTINGS as SETTINGS
from hostile_helpers import edges, gradient, image_folder, sets, snapshot
from round2_helpers import cli, dead_pid, error_line, refused


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("MATEBIT_DEBUG", raising=False)


@pytest.fixture
def data(synthetic_data, tmp_path) -> Path:
    return Path(shutil.copytree(synthetic_data, tmp_path / "data"))


def _card(path: Path) -> Path:
    path.write_text("---\ndescription: a test model\nlicence: MIT\nstructure: edges\n---\n# Test model\n\nNotes.\n")
    return path


# -- an output that is an input ---------------------------------------------------------------------------------


def test_retrieval_onto_one_of_its_images_is_refused_and_the_image_kept(tmp_path, capsys):
    src = image_folder(tmp_path / "ret" / "m", ["000001.png", "000002.png", "000003.png"], kind="gradient")
    before = snapshot(src)
    line = refused(capsys, "prepare", "retrieval", src, src / "000001.png", "--features", "color-hist", "--quiet")
    assert "000001.png" in line and "SRC" in line, line
    assert snapshot(src) == before


def test_a_library_warning_is_one_line_without_its_source(tmp_path, capsys):
    src = image_folder(tmp_path / "m", ["a.png", "b.png", "c.png"], kind="gradient")
    code, _, err = cli(capsys, "prepare", "retrieval", src, tmp_path / "pairs.txt", "--features", "color-hist",
                       "--k", "5", "--quiet")
    assert code == 0, err
    assert err.strip().splitlines() == ["matebit prepare: warning: only 2 candidates per query; writing 2 exemplars "
                                        "instead of 5"], err


def _results(path: Path) -> Path:
    from matebit.metrics.registry import MetricResult, append_jsonl

    append_jsonl(MetricResult("psnr", {"psnr": 20.0}, "paired", None, 4, {}, "2026-01-01T00:00:00", 1.0, "good"),
                 path)
    return path


def test_eval_report_onto_its_own_results_file_is_refused(tmp_path, capsys):
    good = _results(tmp_path / "rep" / "good.jsonl")
    before = good.read_bytes()
    line = refused(capsys, "eval", "report", good, "--out", good)
    assert "good.jsonl" in line and "--out" in line, line
    assert good.read_bytes() == before


def _items(root: Path) -> Path:
    image_folder(root / "outputs", ["a.png", "b.png"], kind="gradient")
    image_folder(root / "targets", ["a.png", "b.png"], kind="gradient")
    return root


def test_eval_out_into_the_items_folder_is_refused(tmp_path, capsys):
    items = _items(tmp_path / "items")
    before = snapshot(items)
    line = refused(capsys, "eval", "--items", items, "--out", items, "--metrics", "psnr")
    assert "--out" in line and "--items" in line, line
    assert snapshot(items) == before


def test_export_onto_its_own_model_folder_is_refused_even_with_force(tiny_model, tmp_path, capsys):
    model = Path(shutil.copytree(tiny_model, tmp_path / "models" / "mine"))
    before = snapshot(model)
    line = refused(capsys, "export", model, "mine", "--root", model.parent, "--card", _card(tmp_path / "card.md"),
                   "--force")
    assert "MODEL_DIR" in line and str(model) in line, line
    assert snapshot(model) == before


def test_export_never_replaces_the_folder_that_holds_its_card(tiny_model, tmp_path, capsys):
    target = tmp_path / "shipped" / "mine"
    target.mkdir(parents=True)
    card = _card(target / "notes.md")
    line = refused(capsys, "export", tiny_model, "mine", "--root", target.parent, "--card", card, "--force")
    assert "--card" in line, line
    assert card.is_file()


def test_prepare_recursive_into_its_own_source_is_refused(tmp_path, capsys):
    src = image_folder(tmp_path / "photos", ["a.png", "b.png"], kind="gradient")
    line = refused(capsys, "prepare", "canny", src, src / "edges", "--recursive", "--quiet")
    assert "lies inside" in line and str(src) in line, line
    assert not (src / "edges").exists()


def test_bench_json_onto_a_scored_models_config_is_refused(tiny_model, tmp_path, capsys):
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    before = snapshot(model)
    line = refused(capsys, "bench", "quality", "--synthetic", "--model", model, "--pairs", "2", "--json",
                   model / "config.json", "--out", tmp_path / "bench", "--no-progress")
    assert "--json" in line and "config.json" in line, line
    assert snapshot(model) == before


def test_the_face_demo_never_writes_over_its_exemplar(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    Image.fromarray(gradient(64, 64)).save(out / "exemplar.png")
    before = (out / "exemplar.png").read_bytes()
    line = refused(capsys, "demo", "--faces", "--exemplar", out / "exemplar.png", "--out", out)
    assert "--exemplar" in line and "--out" in line, line
    assert (out / "exemplar.png").read_bytes() == before


def test_the_face_recipe_never_writes_into_its_source(tmp_path, capsys):
    src = tmp_path / "london"
    (src / "neutral").mkdir(parents=True)
    line = refused(capsys, "recipe", "faces", "--src", src, "--out", src / "runs", "--data", tmp_path / "data")
    assert "--out" in line and "--src" in line, line
    assert sorted(p.name for p in src.iterdir()) == ["neutral"]


@pytest.mark.parametrize("where", ["same", "inside"])
def test_train_out_equal_to_or_inside_the_data_is_refused_before_anything_is_written(data, capsys, where):
    before = snapshot(data)
    out = data if where == "same" else data / "run"
    line = refused(capsys, "train", "--preset", "tiny", "--data", data, "--out", out, "--workers", "0",
                   *sets(*SETTINGS))
    assert "--out" in line and "--data" in line, line
    assert snapshot(data) == before


# -- temp files: only matebit's own, and one batch per folder -------------------------------------------------------


@pytest.fixture
def pairs(tmp_path) -> Path:
    image_folder(tmp_path / "D" / "structure", ["a.png", "b.png"])
    image_folder(tmp_path / "D" / "images", ["a.png", "b.png"], kind="gradient")
    return tmp_path / "D"


def test_a_batch_keeps_a_users_temp_like_files(tiny_model, pairs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    mine = [out / ".budget.xlsx.deadbeef.tmp", out / ".a.png.0123abcd.tmp", out / ".b.png.matebit-x-00000000.tmp"]
    for p in mine:
        p.write_bytes(b"the user's")
    code, _, err = cli(capsys, "translate", "--model", tiny_model, "--structure", pairs / "structure", "--exemplar",
                       pairs / "images", "--out", out, "--device", "cpu", "--quiet")
    assert code == 0, err
    assert all(p.read_bytes() == b"the user's" for p in mine)


def test_a_second_batch_into_a_folder_in_use_is_refused_and_takes_nothing(tiny_model, pairs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    in_flight = out / f".a.png.matebit-{dead_pid()}-0123abcd.tmp"  # as if the running batch's own, dead or not
    in_flight.write_bytes(b"half")
    fd = os.open(out, os.O_RDONLY)  # what a running batch holds on its output folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        line = refused(capsys, "translate", "--model", tiny_model, "--structure", pairs / "structure",
                       "--exemplar", pairs / "images", "--out", out, "--device", "cpu", "--quiet")
    finally:
        os.close(fd)
    assert str(out) in line and "--out" in line, line
    assert in_flight.read_bytes() == b"half"
    assert sorted(p.name for p in out.iterdir()) == [in_flight.name]


# -- sizes ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, role", [((1, 2000), "structure"), ((2000, 1), "exemplar"),
                                        ((1, 100000), "structure"), ((100000, 1), "exemplar")])
def test_a_side_under_16_px_is_refused_whatever_the_other_side(tiny_model, tmp_path, capsys, size, role):
    w, h = size
    bad = tmp_path / f"{role}.png"
    Image.fromarray(edges(w, h) if role == "structure" else gradient(w, h)).save(bad)
    good = tmp_path / "good.png"
    Image.fromarray(edges(48, 40) if role == "exemplar" else gradient(48, 40)).save(good)
    files = {"structure": bad, "exemplar": good} if role == "structure" else {"structure": good, "exemplar": bad}
    line = refused(capsys, "translate", "--model", tiny_model, "--structure", files["structure"], "--exemplar",
                   files["exemplar"], "--out", tmp_path / "out.png", "--device", "cpu")
    assert bad.name in line and f"{w}x{h} is too small" in line, line
    assert not (tmp_path / "out.png").exists()


def test_the_web_demo_refuses_a_1x2000_upload_too(tiny_model, tmp_path):
    from matebit.app import Limits, ServeApp, UploadRefused
    from matebit.inference import Translator

    Image.fromarray(gradient(1, 2000)).save(tmp_path / "thin.png")
    Image.fromarray(edges(48, 40)).save(tmp_path / "s.png")
    app = ServeApp(Translator.from_pretrained(tiny_model, device="cpu"), Limits(), upload_root=tmp_path)
    with pytest.raises(UploadRefused, match="1x2000 is too small"):
        app.translate(app.open(tmp_path / "s.png", "Structure map"), tmp_path / "thin.png")


# -- NaN and unbounded numbers --------------------------------------------------------------------------------------


def test_canny_sigma_nan_is_refused(tmp_path, capsys):
    src = image_folder(tmp_path / "photos", ["a.png"], kind="gradient")
    line = refused(capsys, "prepare", "canny", src, tmp_path / "maps", "--sigma", "nan", "--quiet")
    assert "--sigma" in line and "nan" in line, line
    assert not (tmp_path / "maps").exists()


def test_export_max_mb_nan_is_refused_not_taken_as_no_limit(tiny_model, tmp_path, capsys):
    line = refused(capsys, "export", tiny_model, "mine", "--root", tmp_path / "shipped", "--card",
                   _card(tmp_path / "card.md"), "--max-mb", "nan")
    assert "--max-mb" in line, line
    assert not (tmp_path / "shipped").exists()


# -- a device among the training images -----------------------------------------------------------------------------


@pytest.fixture
def data_with_a_device(data) -> Path:
    """The data set without split lists (the hashed split), one image replaced by a link to /dev/zero."""
    for name in ("train.txt", "val.txt", "pairs.txt"):
        (data / name).unlink()
    victim = sorted((data / "images").iterdir())[0]
    victim.unlink()
    victim.symlink_to("/dev/zero")
    return data


def test_a_link_to_dev_zero_among_the_training_images_is_named_before_step_1(data_with_a_device, tmp_path, capsys):
    code, out, err = cli(capsys, "train", "--preset", "tiny", "--data", data_with_a_device, "--out",
                         tmp_path / "run", "--workers", "0", "--quiet", *sets(*SETTINGS))
    line = error_line(err, "train")
    assert code == 2
    assert "not a regular file" in line and "--skip-bad-files" in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_with_skip_bad_files_the_device_is_listed_as_a_bad_file(data_with_a_device, tmp_path, capsys):
    code, out, err = cli(capsys, "train", "--preset", "tiny", "--data", data_with_a_device, "--out",
                         tmp_path / "run", "--workers", "0", "--quiet", "--skip-bad-files", *sets(*SETTINGS))
    assert code == 0, err
    skipped = [x for x in err.splitlines() if "skipped bad file" in x]
    assert len(skipped) == 1 and "not a regular file (a character device)" in skipped[0], err
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "skipped_bad_files" for r in log)


def test_float64_npy_far_beyond_float32_gives_its_error_and_no_numpy_warning(tiny_model, tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.full((32, 32), 1e300))
    Image.fromarray(gradient(32, 32)).save(tmp_path / "e.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = refused(capsys, "translate", "--model", tiny_model, "--structure", tmp_path / "s.npy", "--exemplar",
                       tmp_path / "e.png", "--out", tmp_path / "o.png", "--device", "cpu")
    assert "s.npy" in line and "must lie in [0, 1]" in line, line
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
