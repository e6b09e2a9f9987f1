"""Issue 35, "Hangs and unbounded resources": FIFOs, devices and oversized files are refused, never waited on or read
without end (one regular-file reader, matebit.io.open_regular); every numeric option and config field has a range,
checked before any work (one table, matebit/bounds.py)."""

from __future__ import annotations

import argparse
import math
import shutil
import time
import typing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hostile_helpers import edges, gradient, image_folder
from round2_helpers import cli, fifo, refused


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("MATEBIT_DEBUG", raising=False)


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    Image.fromarray(edges(48, 40)).save(tmp_path / "s.png")
    Image.fromarray(gradient(48, 40)).save(tmp_path / "e.png")
    return tmp_path / "s.png", tmp_path / "e.png"


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.json"
    path.write_text(text)
    return path


# -- FIFOs: never waited on -------------------------------------------------------------------------------------


def test_a_fifo_pairs_list_is_not_a_regular_file(tiny_model, tmp_path, capsys):
    with fifo(tmp_path / "fifo.txt") as released:
        line = refused(capsys, "translate", "--model", tiny_model, "--pairs", tmp_path / "fifo.txt", "--out",
                       tmp_path / "out", "--device", "cpu")
    assert not released, "waited on the FIFO"
    assert "fifo.txt: not a regular file (a FIFO)" in line, line


def test_a_fifo_structure_npy_is_not_a_regular_file(tiny_model, pair, tmp_path, capsys):
    with fifo(tmp_path / "fifo.npy") as released:
        line = refused(capsys, "translate", "--model", tiny_model, "--structure", tmp_path / "fifo.npy",
                       "--exemplar", pair[1], "--out", tmp_path / "o.png", "--device", "cpu")
    assert not released, "waited on the FIFO"
    assert "fifo.npy" in line and "not a regular file (a FIFO)" in line, line


def test_a_model_folder_whose_config_json_is_a_fifo(tiny_model, pair, tmp_path, capsys):
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    (model / "config.json").unlink()
    with fifo(model / "config.json") as released:
        line = refused(capsys, "translate", "--model", model, "--structure", pair[0], "--exemplar", pair[1],
                       "--out", tmp_path / "o.png", "--device", "cpu")
    assert not released, "waited on the FIFO"
    assert "config.json: not a regular file (a FIFO)" in line, line


def test_a_model_folder_whose_readme_is_a_fifo(tiny_model, tmp_path, capsys):
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    (model / "README.md").unlink()
    with fifo(model / "README.md") as released:
        line = refused(capsys, "export", model, "mine", "--root", tmp_path / "shipped")
    assert not released, "waited on the FIFO"
    assert "README.md: not a regular file (a FIFO)" in line, line
    assert not (tmp_path / "shipped").exists()


def test_train_config_that_is_a_fifo(synthetic_data, tmp_path, capsys):
    with fifo(tmp_path / "fifo.json") as released:
        line = refused(capsys, "train", "--config", tmp_path / "fifo.json", "--data", synthetic_data, "--out",
                       tmp_path / "run")
    assert not released, "waited on the FIFO"
    assert "fifo.json: not a regular file (a FIFO)" in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_config_json_linked_to_a_device_is_not_read(tiny_model, pair, tmp_path, capsys, device):
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    (model / "config.json").unlink()
    (model / "config.json").symlink_to(device)
    line = refused(capsys, "translate", "--model", model, "--structure", pair[0], "--exemplar", pair[1], "--out",
                   tmp_path / "o.png", "--device", "cpu")
    assert "config.json: not a regular file (a character device)" in line, line


def test_a_folder_where_a_file_goes_is_said_to_be_a_folder(tiny_model, pair, tmp_path, capsys):
    (tmp_path / "list.txt").mkdir()
    line = refused(capsys, "translate", "--model", tiny_model, "--pairs", tmp_path / "list.txt", "--out",
                   tmp_path / "out", "--device", "cpu")
    assert "list.txt" in line and "is a folder" in line, line


def test_a_config_file_is_read_with_a_size_cap(synthetic_data, tmp_path, capsys):
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:  # sparse: 200 MB that take no disk
        fh.truncate(200 * 2**20)
    start = time.monotonic()
    line = refused(capsys, "train", "--config", big, "--data", synthetic_data, "--out", tmp_path / "run")
    assert "big.json" in line and "more than" in line, line
    assert time.monotonic() - start < 5


# -- JSON the parser itself cannot bound ------------------------------------------------------------------------


def test_a_100000_deep_json_config_is_one_line(synthetic_data, tmp_path, capsys):
    line = refused(capsys, "train", "--config", _config(tmp_path, "[" * 100_000 + "]" * 100_000), "--data",
                   synthetic_data, "--out", tmp_path / "run")
    assert "run.json" in line and "nested too deeply" in line, line


def test_a_5000_digit_integer_in_a_config_is_one_line(synthetic_data, tmp_path, capsys):
    line = refused(capsys, "train", "--config", _config(tmp_path, '{"model": {}, "train": {"steps": ' + "9" * 5000
                                                         + "}}"), "--data", synthetic_data, "--out", tmp_path / "run")
    assert "run.json" in line and "5,000 digits" in line, line


def test_a_huge_integer_in_a_set_value_is_one_line(synthetic_data, tmp_path, capsys):
    line = refused(capsys, "train", "--preset", "tiny", "--data", synthetic_data, "--out", tmp_path / "run",
                   "--set", "train.steps=" + "9" * 5000)
    assert "train.steps" in line and "digits" in line, line


# -- bounds: every case of the issue, before any work -----------------------------------------------------------

# Inputs that do not exist: a command that checks its numbers first names the number, not the missing file.
_NOWHERE = "/nonexistent/matebit"


@pytest.mark.parametrize("argv, flag", [
    (["train", "--preset", "tiny", "--data", _NOWHERE, "--out", "{tmp}/run", "--set", "train.batch_size=100000000"],
     "train.batch_size"),
    (["train", "--preset", "tiny", "--data", _NOWHERE, "--out", "{tmp}/run", "--workers", "1000"], "--workers"),
    (["train", "--preset", "tiny", "--data", _NOWHERE, "--out", "{tmp}/run", "--set", "train.image_size=1048576"],
     "train.image_size"),
    (["train", "--preset", "tiny", "--data", _NOWHERE, "--out", "{tmp}/run",
      "--set", "train.steps=10000000000000000"], "train.steps"),
    (["translate", "--model", _NOWHERE, "--structure", "s.png", "--exemplar", "e.png", "--out", "{tmp}/o.png",
      "--threads", "1000000"], "--threads"),
    (["translate", "--model", _NOWHERE, "--structure", "s.png", "--exemplar", "e.png", "--out", "{tmp}/o.png",
      "--size", "65536"], "--size"),
    (["prepare", "hed", _NOWHERE, "{tmp}/maps", "--size", "30000"], "--size"),
    (["eval", "--model", _NOWHERE, "--data", _NOWHERE, "--out", "{tmp}/eval", "--size", "100000"], "--size"),
    (["serve", "--model", _NOWHERE, "--max-upload-mb", "nan"], "--max-upload-mb"),
    (["prepare", "pose", _NOWHERE, "{tmp}/maps", "--size", "176x256", "--scale", "inf"], "--scale"),
])
def test_numbers_out_of_range_are_refused_before_any_work(tmp_path, capsys, argv, flag):
    start = time.monotonic()
    line = refused(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert flag in line and "must be" in line, line
    assert time.monotonic() - start < 5
    assert list(tmp_path.iterdir()) == []


def _numeric_options() -> list[tuple[str, str, argparse.Action]]:
    """(scope, flag, action) of every option of every command whose value is a number."""
    from matebit.cli import COMMANDS, build_parser

    found = []

    def walk(parser: argparse.ArgumentParser, scope: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*scope, name])
            elif action.option_strings and action.type is not None and action.type is not str:
                found.append((" ".join(scope), max(action.option_strings, key=len), action))

    for name in COMMANDS:
        parser = build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        walk(sub.choices[name], [name])
    return found


def test_every_numeric_option_of_every_command_has_a_range():
    from matebit.bounds import option_bound

    options = _numeric_options()
    assert len(options) > 50
    missing = [f"{scope} {flag}" for scope, flag, _ in options if option_bound(scope, flag) is None]
    assert not missing, missing


def test_every_numeric_config_field_has_a_range():
    import dataclasses

    from matebit.bounds import CONFIG
    from matebit.config import LossConfig, ModelConfig, TrainConfig

    for section, cls in (("model", ModelConfig), ("loss", LossConfig), ("train", TrainConfig)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float):
                assert f"{section}.{f.name}" in CONFIG, f"{section}.{f.name}"


def test_every_range_holds_its_defaults_and_refuses_nan_and_its_neighbours():
    """Each option's and config field's default lies in its range; NaN, infinity and the values just outside do not."""
    from matebit.bounds import CONFIG, option_bound
    from matebit.config import ExperimentConfig

    cfg = ExperimentConfig()
    bounds = [(f"{s} {flag}", option_bound(s, flag), a.default) for s, flag, a in _numeric_options()]
    bounds += [(key, b, getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1])) for key, b in CONFIG.items()]
    for name, bound, default in bounds:
        if default is not None:
            for v in default if isinstance(default, tuple) else (default,):
                assert bound.holds(v), (name, v)
        for bad in (math.nan, math.inf, bound.low - 1, bound.high + 1):
            assert not bound.holds(bad), (name, bad)
        step = bound.multiple if bound.integer else 1e-9
        assert not bound.holds(bound.low - step) and not bound.holds(bound.high + step), name


def test_the_robustness_page_documents_every_range():
    from matebit.bounds import ranges_markdown

    page = (Path(__file__).resolve().parents[2] / "docs" / "robustness.md").read_text()
    assert ranges_markdown() in page


def test_an_empty_npy_is_one_line(tiny_model, pair, tmp_path, capsys):
    np.save(tmp_path / "empty.npy", np.zeros((0, 64, 3), np.float32))
    line = refused(capsys, "translate", "--model", tiny_model, "--structure", tmp_path / "empty.npy", "--exemplar",
                   pair[1], "--out", tmp_path / "o.png", "--device", "cpu")
    assert "empty.npy" in line and "empty array" in line, line


def test_a_data_folder_listing_names_a_fifo_named_like_a_map(tiny_model, pair, tmp_path, capsys):
    maps = image_folder(tmp_path / "maps", ["a.png"])
    with fifo(maps / "b.png") as released:
        code, _, err = cli(capsys, "translate", "--model", tiny_model, "--structure", maps, "--exemplar", pair[1],
                           "--out", tmp_path / "out", "--device", "cpu", "--quiet", "--skip-errors")
    assert not released, "waited on the FIFO"
    assert code == 2
    assert any("b.png: not a regular file (a FIFO)" in x for x in err.splitlines()), err
    assert (tmp_path / "out" / "a.png").is_file()
