"""Issue 14, `matebit train`: the cases a hostile user broke, each as a test.

Items (issue 14's numbering): 3 two runs in one folder (the run lock), 4 --resume restores the run's config and
refuses conflicting --set values or a missing run, 5 impossible step counts, 8 train.image_size=16, 10 absurd
widths, 11 corrupt data found before step 1 (--skip-bad-files), 12 configs without a model section, symlink loops
and BOMs in the data set, 15 --quiet; and issue 18's --perceptual with a recipe that has no perceptual term.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hostile_helpers import TRAIN_SETTINGS as SETTINGS
from hostile_helpers import read_only_under, sets
from matebit.cli import parse, run


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("MATEBIT_DEBUG", raising=False)


def train(capsys, data: Path, out: Path, *args: str, settings: list[str] = SETTINGS) -> tuple[int, str, str]:
    code = run(["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--workers", "0",
                *sets(*settings), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    """The one error line (a progress bar may stand above it, on stderr too)."""
    assert "Traceback" not in err
    lines = [x for x in err.strip().splitlines() if x.startswith("matebit train:")]
    assert len(lines) == 1 and lines[0].startswith("matebit train: error:"), err
    return lines[0]


@pytest.fixture
def data(synthetic_data, tmp_path) -> Path:
    """A copy of the synthetic set that a test may break."""
    return Path(shutil.copytree(synthetic_data, tmp_path / "data"))


def _steps_logged(out: Path) -> list[int]:
    log = out / "log.jsonl"
    if not log.exists():
        return []
    return [r["step"] for r in map(json.loads, log.read_text().splitlines()) if "event" not in r]


def _corrupt(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:60])  # the PNG header survives, the pixels do not
    return path


# -- 3: a run folder is locked -----------------------------------------------------------------------------------


def _lock(out: Path, pid: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    return out / ".lock"


def test_item03_a_live_lock_refuses_a_second_run_at_once(data, tmp_path, capsys):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = _lock(tmp_path / "run", holder.pid)
        before = lock.read_bytes()
        start = time.monotonic()
        code, _, err = train(capsys, data, tmp_path / "run")
        took = time.monotonic() - start
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    line = error_line(err)
    assert ".lock" in line and str(holder.pid) in line, line
    assert took < 5, took
    assert lock.read_bytes() == before
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "config.json").exists()


def test_item03_a_stale_lock_of_a_dead_process_is_reported_and_taken_over(data, tmp_path, capsys):
    dead = subprocess.Popen(["true"])
    dead.wait()
    _lock(tmp_path / "run", dead.pid)
    code, _, err = train(capsys, data, tmp_path / "run")
    assert code == 0, err
    notes = [x for x in err.splitlines() if "stale" in x]
    assert len(notes) == 1 and str(dead.pid) in notes[0], err
    assert not (tmp_path / "run" / ".lock").exists()  # released at the end
    assert _steps_logged(tmp_path / "run") == [1, 2]


def _long_run(data: Path, out: Path) -> subprocess.Popen:
    """A `matebit train` process that holds `out` until it is stopped (returned once its lock exists)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "matebit", "train", "--preset", "tiny", "--data", str(data),
                             "--out", str(out), "--workers", "0", "--quiet",
                             *sets(*SETTINGS, "train.steps=100000", "train.checkpoint_every=100000")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / ".lock").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail("the first run did not start")
        time.sleep(0.05)
    return proc


@pytest.mark.slow
def test_item03_two_concurrent_trainings_the_second_exits_2_at_once(data, tmp_path, capsys):
    out = tmp_path / "run"
    first = _long_run(data, out)
    try:
        start = time.monotonic()
        code, _, err = train(capsys, data, out)
        took = time.monotonic() - start
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()
    assert code == 2
    assert str(first.pid) in error_line(err)
    assert took < 5, took


@pytest.mark.slow
def test_item03_sigterm_ends_a_run_and_releases_its_lock(data, tmp_path):
    import signal

    run_ = _long_run(data, tmp_path / "run")
    time.sleep(1)
    run_.send_signal(signal.SIGTERM)
    assert run_.wait(timeout=60) == 130
    assert not (tmp_path / "run" / ".lock").exists()


def test_item03_sigterm_raises_terminated_not_keyboardinterrupt_and_the_cli_exits_130(monkeypatch, capsys):
    # A KeyboardInterrupt raised by the handler inside a lazily imported dataclass's exec made CPython end the
    # process by SIGINT (-2) after the CLI had returned 130 (matebit.errors.Terminated); the handler must raise
    # the other class, and the CLI must map it to 130 like Ctrl-C.
    import signal

    import matebit.commands.train as train_command
    from matebit.errors import Terminated

    with pytest.raises(Terminated) as raised:
        train_command._interrupt(signal.SIGTERM, None)
    assert not isinstance(raised.value, KeyboardInterrupt)

    def stopped(args):
        raise Terminated

    monkeypatch.setattr(train_command, "main", stopped)
    assert run(["train", "--data", "d", "--out", "o"]) == 130
    assert capsys.readouterr().err.strip() == "matebit train: interrupted"


def test_item09_a_run_folder_on_a_read_only_file_system_is_one_line(data, tmp_path, capsys, monkeypatch):
    import errno

    read_only_under(monkeypatch, "ro")
    code, _, err = train(capsys, data, tmp_path / "ro" / "run")
    assert code == 2
    line = error_line(err)
    assert str(tmp_path / "ro" / "run") in line and os.strerror(errno.EROFS) in line, line


# -- 4: --resume restores the run's config ----------------------------------------------------------------------


def test_item04_resume_restores_the_saved_config_without_the_original_set_values(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(capsys, data, out)[0] == 0
    saved = json.loads((out / "config.json").read_text())
    # Only what changes: the preset's own defaults would be image_size 64 and batch_size 8.
    code, _, err = train(capsys, data, out, "--resume", settings=["train.steps=4"])
    assert code == 0, err
    now = json.loads((out / "config.json").read_text())
    assert now["train"]["image_size"] == saved["train"]["image_size"] == 32
    assert now["train"]["batch_size"] == 2 and now["train"]["steps"] == 4
    assert {k: v for k, v in now["train"].items() if k != "steps"} == \
        {k: v for k, v in saved["train"].items() if k != "steps"}
    assert _steps_logged(out) == [1, 2, 3, 4]


@pytest.mark.parametrize("setting, field", [("train.image_size=64", "train.image_size"),
                                            ("train.batch_size=4", "train.batch_size"),
                                            ("model.n_mat_blocks=1", "model.n_mat_blocks")])
def test_item04_resume_refuses_set_values_that_conflict_with_the_run(data, tmp_path, capsys, setting, field):
    out = tmp_path / "run"
    assert train(capsys, data, out)[0] == 0
    config = (out / "config.json").read_bytes()
    code, _, err = train(capsys, data, out, "--resume", settings=[setting])
    assert code == 2
    assert field in error_line(err)
    assert (out / "config.json").read_bytes() == config
    assert _steps_logged(out) == [1, 2]


def test_item04_resume_with_equal_set_values_is_fine(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(capsys, data, out)[0] == 0
    code, _, err = train(capsys, data, out, "--resume", settings=SETTINGS + ["train.steps=3"])
    assert code == 0, err
    assert _steps_logged(out) == [1, 2, 3]


@pytest.mark.parametrize("folder", ["empty", "missing", "config_only"])
def test_item04_resume_without_a_run_is_an_error(data, tmp_path, capsys, folder):
    out = tmp_path / folder
    if folder != "missing":
        out.mkdir()
    if folder == "config_only":  # started, killed before its first checkpoint
        from matebit.config import experiment_preset, to_json

        (out / "config.json").write_text(to_json(experiment_preset("tiny")))
    code, _, err = train(capsys, data, out, "--resume")
    assert code == 2
    line = error_line(err)
    assert str(out) in line and "--resume" in line, line
    assert not (out / "checkpoints").exists()


# -- 5, 8, 10: impossible values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("setting, words", [("train.steps=-5", "train.steps"), ("train.steps=0", "train.steps"),
                                            ("train.batch_size=0", "train.batch_size"),
                                            ("train.image_size=16", "at least 32"),
                                            ("train.image_size=40", "multiple of 16"),
                                            ("model.base_channels=200000", "base_channels"),
                                            ("loss.pixel=-1", "loss.pixel")])
def test_item05_08_10_impossible_values_are_refused_before_anything_runs(data, tmp_path, capsys, setting, words):
    start = time.monotonic()
    code, out, err = train(capsys, data, tmp_path / "run", settings=SETTINGS + [setting])
    assert code == 2
    assert words in error_line(err)
    assert "done" not in out
    assert not (tmp_path / "run").exists()
    assert time.monotonic() - start < 5


# -- 11: every data file is verified before step 1 ----------------------------------------------------------------


def test_item11_a_corrupt_training_image_is_named_before_step_1(data, tmp_path, capsys):
    bad = _corrupt(data / "images" / "000001.png")
    code, _, err = train(capsys, data, tmp_path / "run")
    assert code == 2
    line = error_line(err)
    assert str(bad) in line and "--skip-bad-files" in line, line
    assert "Caught" not in err
    assert _steps_logged(tmp_path / "run") == []
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_item11_skip_bad_files_trains_without_them_and_lists_them(data, tmp_path, capsys):
    bad = [_corrupt(data / "images" / "000001.png"), _corrupt(data / "structure" / "000004.png")]
    code, _, err = train(capsys, data, tmp_path / "run", "--skip-bad-files")
    assert code == 0, err
    for path in bad:
        assert any(str(path) in x for x in err.splitlines()), err
    assert "skipped 2" in err
    events = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    skipped = [e for e in events if e.get("event") == "skipped_bad_files"]
    assert len(skipped) == 1 and sorted(skipped[0]["files"]) == sorted(map(str, bad))
    assert _steps_logged(tmp_path / "run") == [1, 2]


def test_item11_a_corrupt_validation_image_is_found_too(data, tmp_path, capsys):
    stem = (data / "val.txt").read_text().split()[0]
    bad = _corrupt(data / "images" / f"{stem}.png")
    code, _, err = train(capsys, data, tmp_path / "run")
    assert code == 2
    assert str(bad) in error_line(err)


def test_item11_a_nan_npy_structure_map_is_found_before_step_1(data, tmp_path, capsys):
    arr = np.zeros((32, 32, 3), np.float32)
    arr[3, 4, 1] = np.nan
    (data / "structure" / "000002.png").unlink()
    np.save(data / "structure" / "000002.npy", arr)
    code, _, err = train(capsys, data, tmp_path / "run", "--workers", "1")  # not "Caught ... in a worker"
    assert code == 2
    line = error_line(err)
    assert "000002.npy" in line and "NaN" in line and "Caught" not in err, line
    assert _steps_logged(tmp_path / "run") == []


def test_item11_large_sets_show_verification_progress(data, tmp_path, capsys, monkeypatch):
    import matebit.train

    monkeypatch.setattr(matebit.train, "VERIFY_PROGRESS_FROM", 1)
    code, _, err = train(capsys, data, tmp_path / "run", settings=SETTINGS + ["train.steps=1"])
    assert code == 0, err
    assert "verify" in err and "8/8" in err, err


def test_item11_a_file_broken_after_verification_is_named_not_caught_in_a_worker(data, tmp_path, capsys,
                                                                                  monkeypatch):
    from matebit.data import PairedFolderDataset

    original = PairedFolderDataset.verify

    def verify_then_break(self, *args, **kwargs):  # the file goes bad after it was checked
        result = original(self, *args, **kwargs)
        _corrupt(data / "images" / "000003.png")
        return result

    monkeypatch.setattr(PairedFolderDataset, "verify", verify_then_break)
    code = run(["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--workers", "1",
                *sets(*SETTINGS[:-1], "train.steps=50", "train.checkpoint_every=100")])
    err = capsys.readouterr().err
    assert code == 2
    line = error_line(err)
    assert "000003.png" in line and "Caught" not in line and "worker" not in line, line
    # The steps done are not lost to the checkpoint interval (100 here): a checkpoint of the step it stopped at.
    step = int(line.split("stopped at step ")[1].split()[0])
    assert step > 0 and (tmp_path / "run" / "checkpoints" / f"step-{step:08d}.safetensors").is_file(), line


# -- 12: configs, symlink loops, BOMs -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["{}", '{"train": {"steps": 5}}'])
def test_item12_a_config_without_a_model_section_is_refused(data, tmp_path, capsys, text):
    (tmp_path / "run.json").write_text(text)
    code = run(["train", "--config", str(tmp_path / "run.json"), "--data", str(data), "--out", str(tmp_path / "o")])
    line = error_line(capsys.readouterr().err)
    assert code == 2
    assert "run.json" in line and "'model'" in line, line


def test_item12_a_symlink_loop_in_the_data_set_is_reported_as_such(data, tmp_path, capsys):
    loop = data / "images" / "000005.png"
    loop.unlink()
    loop.symlink_to(loop)
    code, _, err = train(capsys, data, tmp_path / "run")
    assert code == 2
    line = error_line(err)
    assert "000005.png" in line and "symlink loop" in line, line


def test_item12_pairs_and_split_files_with_a_bom_are_read(data, tmp_path, capsys):
    for name in ("pairs.txt", "train.txt"):
        (data / name).write_bytes(b"\xef\xbb\xbf" + (data / name).read_bytes())
    code, _, err = train(capsys, data, tmp_path / "run", settings=SETTINGS + ["train.exemplar_rate=1.0"])
    assert code == 0, err


# -- 15: names --------------------------------------------------------------------------------------------------


def test_item15_train_quiet_prints_no_progress(data, tmp_path, capsys):
    code, _, err = train(capsys, data, tmp_path / "a")
    assert code == 0 and "train" in err  # the progress bar
    code, _, err = train(capsys, data, tmp_path / "b", "--quiet")
    assert code == 0 and err == "", err


@pytest.mark.parametrize("argv, dest", [(["demo", "--quiet"], "no_progress"),
                                        (["bench", "quality", "--quiet"], "no_progress"),
                                        (["prepare", "canny", "a", "b", "--quiet"], "quiet"),
                                        (["translate", "--model", "m", "--out", "o", "--quiet"], "quiet"),
                                        (["train", "--data", "d", "--out", "o", "--quiet"], "quiet")])
def test_item15_quiet_is_accepted_by_every_command_with_a_progress_bar(argv, dest):
    assert getattr(parse(argv), dest) is True


# -- issue 18: --perceptual with a recipe that has no perceptual term ----------------------------------------------


@pytest.mark.parametrize("preset", ["demo", "tiny"])
def test_perceptual_network_with_a_recipe_without_perceptual_terms_is_refused(data, tmp_path, capsys, preset):
    code = run(["train", "--preset", preset, "--perceptual", "hed-vgg16", "--data", str(data),
                "--out", str(tmp_path / "run")])
    assert code == 2
    line = error_line(capsys.readouterr().err)
    assert "--perceptual" in line and "loss.perceptual=1" in line, line
    assert not (tmp_path / "run").exists()
