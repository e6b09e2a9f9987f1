"""`matebit eval` end to end on CPU: a tiny random model, a 32 px synthetic set, weight-free metrics."""

import json
import shutil

import pytest

from matebit.cli import run
from matebit.data.synthetic import write_synthetic_dataset
from matebit.metrics import read_jsonl

FAST = ["--device", "cpu", "--timing-runs", "2", "--timing-warmup", "1", "--batch-size", "2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("eval")
    shutil.copytree(tiny_model, root / "model")
    write_synthetic_dataset(root / "data", n_train=2, n_val=3, size=32, seed=0)
    return root


@pytest.fixture(scope="module")
def model_run(setup):
    out = setup / "run_a"
    rc = run(["eval", "--model", str(setup / "model"), "--data", str(setup / "data"), "--out", str(out),
              "--metrics", "swd,psnr,ssim,pck,timing", "--run", "tiny-a", *FAST])
    return rc, out


def test_model_run_writes_jsonl_report_and_png_samples(model_run):
    rc, out = model_run
    assert rc == 0
    results = read_jsonl(out / "metrics.jsonl")
    assert [r.name for r in results] == ["swd", "psnr", "ssim", "pck", "timing"]
    assert all(r.run == "tiny-a" for r in results)
    timing = results[-1]
    assert timing.values["timing"] > 0 and timing.values["images_per_second"] > 0
    assert {"device=cpu", "batch_size=2", "precision=fp32"} <= set(timing.notes)
    pck = results[3]
    assert 0.0 <= pck.value <= 1.0 and pck.num_samples == 3  # every val pair has a listed exemplar
    report = (out / "report.md").read_text()
    for col in ("SWD", "PSNR", "SSIM", "PCK@0.05", "Time (s)", "tiny-a"):
        assert col in report
    samples = out / "samples"
    for sub in ("outputs", "exemplars", "structures", "targets", "labels", "exemplar_labels"):
        assert len(list((samples / sub).glob("*.png"))) == 3, sub
    pts = json.loads(next((samples / "predicted_points").glob("*.json")).read_text())
    assert pts["size"] == [32, 32]


def test_items_mode_reevaluates_saved_samples(model_run, tmp_path):
    _, out = model_run
    rc = run(["eval", "--items", str(out / "samples"), "--out", str(tmp_path), "--metrics", "psnr,pck",
              "--run", "tiny-b", "--device", "cpu"])
    assert rc == 0
    again = {r.name: r.value for r in read_jsonl(tmp_path / "metrics.jsonl")}
    first = {r.name: r.value for r in read_jsonl(out / "metrics.jsonl")}
    assert again["psnr"] == pytest.approx(first["psnr"]) and again["pck"] == pytest.approx(first["pck"])


def test_missing_fid_weights_is_a_named_one_line_error(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    rc = run(["eval", "--model", str(setup / "model"), "--data", str(setup / "data"), "--out",
              str(tmp_path / "o"), "--metrics", "fid,swd", *FAST])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert "pt_inception-2015-12-05-6726825d.pth" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "metrics.jsonl").exists()  # checked before any translation or metric


def test_bad_requests_are_input_errors(setup, tmp_path, capsys):
    assert run(["eval", "--out", str(tmp_path)]) == 2
    assert run(["eval", "--items", str(tmp_path), "--out", str(tmp_path / "o"), "--metrics", "nope"]) == 2
    assert "unknown metric" in capsys.readouterr().err


def test_report_renders_two_runs(model_run, tmp_path, capsys):
    _, out = model_run
    run(["eval", "--items", str(out / "samples"), "--out", str(tmp_path / "b"), "--metrics", "swd,psnr",
         "--run", "tiny-b", "--device", "cpu"])
    table = tmp_path / "table.md"
    assert run(["eval", "report", str(out / "metrics.jsonl"), str(tmp_path / "b" / "metrics.jsonl"),
                "--out", str(table)]) == 0
    text = table.read_text()
    main_table = text.split("\n\n", 1)[0]  # the PCK detail table follows the footnotes
    lines = [line for line in main_table.splitlines() if line.startswith("| tiny-")]
    assert [line.split("|")[1].strip() for line in lines] == ["tiny-a", "tiny-b"]
    assert text.splitlines()[0].startswith("| run | SWD")  # paper column order: SWD before PSNR
    assert lines[1].count("–") == 3  # tiny-b has no SSIM, PCK or timing
    assert "| identity guess |" in text and "PCK@0.02" in text  # the PCK detail of the one run with PCK
    capsys.readouterr()
    assert run(["eval", "report", str(out / "metrics.jsonl")]) == 0
    assert "tiny-a" in capsys.readouterr().out


def test_run_label_without_run(tmp_path):
    from matebit.commands.eval import run_label

    folder = tmp_path / "runs" / "faces" / "model"
    folder.mkdir(parents=True)
    assert run_label(str(folder), folder) == "faces"  # what `matebit train` writes: <run>/model
    other = tmp_path / "tiny-v2"
    other.mkdir()
    assert run_label(str(other), other) == "tiny-v2"
    assert run_label("faces-hed-128", tmp_path / "weights" / "faces-hed-128") == "faces-hed-128"  # a shipped name


def test_model_named_model_is_labelled_by_its_parent(setup, tmp_path):
    rc = run(["eval", "--model", str(setup / "model"), "--data", str(setup / "data"), "--out", str(tmp_path),
              "--metrics", "psnr", *FAST])
    assert rc == 0
    assert [r.run for r in read_jsonl(tmp_path / "metrics.jsonl")] == [setup.name]
