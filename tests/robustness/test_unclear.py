"""Issue 35, "Litter" and "Unclear": nothing half-made when a landmark file is bad; internal errors and misleading
messages that became one line naming the file or the flag (exit 2). The unclear cases about files and numbers (an
empty .npy, deep or huge JSON, config.json linked to /dev/zero, train.steps far too large, a float64 .npy of 1e300)
are in test_hangs_and_bounds.py and test_lost_and_wrong.py, beside the rest of their class."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from hostile_helpers import TRAIN_SETTINGS as SETTINGS
from hostile_helpers import edges, gradient, image_folder, sets
from round2_helpers import cli, error_line, refused
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("MATEBIT_DEBUG", raising=False)


def _train(capsys, data: Path, out: Path, *extra: str, steps: int = 2) -> tuple[int, str, str]:
    return cli(capsys, "train", "--preset", "tiny", "--data", data, "--out", out, "--workers", "0", "--quiet",
               *sets(*SETTINGS, f"train.steps={steps}"), *extra)


def _card(path: Path) -> Path:
    path.write_text("---\ndescription: a test model\nlicence: MIT\nstructure: edges\n---\n# Test model\n\nNotes.\n")
    return path


# -- litter: prepare faces checks every landmark file first -----------------------------------------------------


def _london(root: Path, bad: str) -> Path:
    """Three identities in the London-faces layout; the last one's landmark file is `bad`."""
    (root / "neutral").mkdir(parents=True)
    (root / "smiling").mkdir()
    for i, ident in enumerate(("001", "003", "005")):
        Image.fromarray(gradient(48, 48)).save(root / "neutral" / f"{ident}.jpg")
        Image.fromarray(gradient(48, 48)[:, :, ::-1].copy()).save(root / "smiling" / f"{ident}.jpg")
        points = [[10.0 + k, 20.0 + k] for k in range(5)]
        (root / "neutral" / f"{ident}.json").write_text(json.dumps({"size": [48, 48], "points": points}))
    (root / "neutral" / "005.json").write_text(bad)
    return root


@pytest.mark.parametrize("bad", ['{"size": [48, 48], "points": [[1, 2], [3', '{"size": [48, 48]}',
                                 '{"size": [48, 48], "points": [[NaN, 1], [2, 3]]}', '{"size": [48, 48], "points": [1, 2]}'])
def test_prepare_faces_with_a_bad_landmark_file_writes_nothing(tmp_path, capsys, bad):
    src = _london(tmp_path / "london", bad)
    line = refused(capsys, "prepare", "faces", src, tmp_path / "faces", "--structure", "canny", "--size", "32",
                   "--val-identities", "1", "--quiet")
    assert "005.json" in line, line
    assert not (tmp_path / "faces").exists()


# -- internal errors that are now one line ----------------------------------------------------------------------


def test_export_onto_a_full_disk_names_the_folder(tiny_model, tmp_path, capsys, monkeypatch):
    import safetensors
    import safetensors.torch

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 4096)
        raise safetensors.SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                          'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    line = refused(capsys, "export", tiny_model, "mine", "--root", tmp_path / "shipped", "--card",
                   _card(tmp_path / "card.md"))
    assert str(tmp_path / "shipped" / "mine") in line and "No space left on device" in line, line
    assert list((tmp_path / "shipped").iterdir()) == []


@pytest.fixture
def run2(synthetic_data, tmp_path, capsys) -> tuple[Path, Path]:
    """(data, run folder) with a finished 2-step run."""
    data = Path(shutil.copytree(synthetic_data, tmp_path / "data"))
    code, _, err = _train(capsys, data, tmp_path / "run")
    assert code == 0, err
    return data, tmp_path / "run"


def test_resume_onto_a_full_disk_names_the_file(run2, capsys, monkeypatch):
    data, out = run2
    real_open = io.open

    def full_open(file, mode="r", *args, **kwargs):  # writes into the run folder fail; the run lock still fits
        name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else ""
        if any(c in mode for c in "wax+") and name.startswith(str(out)) and ".lock" not in name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", full_open)
    monkeypatch.setattr(builtins, "open", full_open)
    code, _, err = _train(capsys, data, out, "--resume", steps=4)
    line = error_line(err, "train")
    assert code == 2
    assert str(out) in line and "No space left on device" in line, line


def test_pose_keypoints_of_1e308_are_a_file_error_that_skip_errors_skips(tmp_path, capsys):
    src = tmp_path / "poses"
    src.mkdir()
    person = [[60.0 + 5 * j, 40.0 + 10 * j, 0.9] for j in range(18)]
    (src / "good_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": sum(person, [])}]}))
    person[1][0] = 1e308
    (src / "bad_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": sum(person, [])}]}))
    line = refused(capsys, "prepare", "pose", src, tmp_path / "maps", "--size", "176x256", "--quiet")
    assert "bad_keypoints.json" in line and "far outside" in line, line
    code, _, err = cli(capsys, "prepare", "pose", src, tmp_path / "maps", "--size", "176x256", "--quiet",
                       "--skip-errors")
    assert code == 2 and "Traceback" not in err and "internal error" not in err, err
    assert [x for x in err.splitlines() if x.startswith("matebit prepare: error:")] == [line]
    assert (tmp_path / "maps" / "good.png").is_file() and not (tmp_path / "maps" / "bad.png").exists()


# -- misleading messages ------------------------------------------------------------------------------------------


def test_a_full_disk_before_the_first_checkpoint_does_not_send_the_user_to_resume(synthetic_data, tmp_path, capsys,
                                                                                   monkeypatch):
    import safetensors.torch

    def full(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    data = Path(shutil.copytree(synthetic_data, tmp_path / "data"))
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    code, _, err = _train(capsys, data, tmp_path / "run")
    line = error_line(err, "train")
    assert code == 2
    assert "--resume" not in line and "rerun the same command" in line, line
    monkeypatch.undo()
    code, _, err = _train(capsys, data, tmp_path / "run")  # the advice works
    assert code == 0, err


def test_a_failed_model_folder_write_is_not_called_a_checkpoint_failure(synthetic_data, tmp_path, capsys,
                                                                         monkeypatch):
    import matebit.checkpoint

    def full(*args, **kwargs):
        raise ENOSPC

    data = Path(shutil.copytree(synthetic_data, tmp_path / "data"))
    monkeypatch.setattr(matebit.checkpoint, "save_pretrained", full)
    code, _, err = _train(capsys, data, tmp_path / "run")
    line = error_line(err, "train")
    assert code == 2
    assert "cannot write the model folder" in line and str(tmp_path / "run" / "model") in line, line
    assert "cannot write checkpoint" not in line and "--resume" in line, line
    assert (tmp_path / "run" / "checkpoints" / "step-00000002.safetensors").is_file()


def test_two_pairs_writing_one_output_are_both_named(tiny_model, tmp_path, capsys):
    image_folder(tmp_path / "a", ["x.png"])
    image_folder(tmp_path / "b", ["x.png"])
    Image.fromarray(gradient(48, 40)).save(tmp_path / "e.png")
    (tmp_path / "list.txt").write_text("a/x.png e.png\nb/x.png e.png\n")
    line = refused(capsys, "translate", "--model", tiny_model, "--pairs", tmp_path / "list.txt", "--out",
                   tmp_path / "out", "--device", "cpu")
    assert str(tmp_path / "a" / "x.png") in line and str(tmp_path / "b" / "x.png") in line, line
    assert "x__e.png" in line, line


def test_export_root_prints_a_load_call_that_works_from_here(tiny_model, tmp_path, capsys):
    code, out, err = cli(capsys, "export", tiny_model, "mine", "--root", tmp_path / "shipped", "--card",
                         _card(tmp_path / "card.md"))
    assert code == 0, err
    where = re.search(r"from_pretrained\('([^']+)'\)", out)
    assert where and (Path(where[1]) / "config.json").is_file(), out


def test_an_empty_model_name_names_the_flag(tmp_path, capsys):
    Image.fromarray(edges(48, 40)).save(tmp_path / "s.png")
    line = refused(capsys, "translate", "--model", "", "--structure", tmp_path / "s.png", "--exemplar",
                   tmp_path / "s.png", "--out", tmp_path / "o.png", "--device", "cpu")
    assert "--model" in line and "model.safetensors" not in line, line


def test_jpeg_outputs_name_the_flag_that_allows_them(tmp_path, capsys):
    (tmp_path / "items" / "outputs").mkdir(parents=True)
    Image.fromarray(gradient(48, 40)).save(tmp_path / "items" / "outputs" / "a.jpg")
    line = refused(capsys, "eval", "--items", tmp_path / "items", "--out", tmp_path / "eval", "--metrics", "psnr")
    assert "a.jpg" in line and "--allow-jpeg" in line, line



@pytest.mark.slow
def test_sigterm_reaching_the_data_loader_workers_ends_the_run_as_an_interruption(synthetic_data, tmp_path):
    """SIGTERM sent to the process group reaches the loader's workers too; when one dies of it before the main
    process handles its own, the run still ends as interrupted (exit 130), not with the loader's RuntimeError. A
    worker terminated on its own shows it every time."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "matebit", "train", "--preset", "tiny", "--data",
                             str(synthetic_data), "--out", str(out), "--workers", "1", "--quiet",
                             *sets(*SETTINGS, "train.num_workers=1", "train.steps=1000000000",
                                   "train.checkpoint_every=1000000")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not ((out / "log.jsonl").is_file() and '"step": 1,' in (out / "log.jsonl").read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.2)
        workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert workers, "no data loader worker"
        os.kill(int(workers[0]), signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "internal error" not in err and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "matebit train: interrupted", err
    assert not (out / ".lock").exists()
