"""Interrupted training: SIGKILL at random moments, full disks, failed writes and non-finite losses.

The kill test runs real `python -m matebit train` processes and kills them with SIGKILL (seeded random
moments: during start-up, between steps, and while a checkpoint is being written); after every kill the
newest checkpoint must load, at most one checkpoint interval may be lost, and after the last resume the
weights must equal an uninterrupted run's. The other tests run in-process with a patched writer or loss.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from matebit.checkpoint import load_pretrained, load_tensors
from matebit.cli import run
from matebit.config import apply_overrides, experiment_preset
from matebit.data import write_synthetic_dataset
from matebit.train import Trainer, TrainingError, latest_checkpoint, train

KILLS = 20  # the figure docs/robustness.md states
STEPS = 48
INTERVAL = 2
SETTINGS = [f"train.steps={STEPS}", f"train.checkpoint_every={INTERVAL}", "train.keep_checkpoints=2",
            "train.image_size=32", "train.batch_size=2", "train.log_every=1", "train.image_every=100000",
            f"train.decay_start={STEPS // 2}", "loss.early_steps=10", "train.num_workers=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    write_synthetic_dataset(root, 8, 2, size=32, seed=0)
    return root


def _cfg(*extra: str):
    return apply_overrides(experiment_preset("tiny"), SETTINGS + list(extra))


# -- SIGKILL at random moments ---------------------------------------------------------------------------------


_LIVE: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_orphans():
    """A failing assertion must not leave a training process running."""
    yield
    while _LIVE:
        proc = _LIVE.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _spawn(data: Path, out: Path) -> subprocess.Popen:
    """The run into `out`: resumed when a checkpoint exists (--resume needs one), else started afresh. A kill
    leaves the run folder's lock behind; the next process reports it as stale and takes it over."""
    sets = [x for s in SETTINGS for x in ("--set", s)]
    resume = ["--resume"] if latest_checkpoint(out) is not None else []
    # Same thread count as this process, so the reference run (in-process) sums in the same order.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONUNBUFFERED": "1"}
    env.pop("MATEBIT_DEBUG", None)
    # stderr (the progress bar, any error) to a file: an unread pipe could fill up and stall the child.
    with open(out.parent / f"{out.name}.stderr", "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "matebit", "train", "--preset", "tiny", "--data", str(data),
                                 "--out", str(out), *resume, "--workers", "0", *sets],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
    _LIVE.append(proc)
    return proc


def _steps_logged(log: Path, skip_bytes: int) -> int:
    """The last step this process logged (log lines after byte `skip_bytes`); 0 if none yet."""
    if not log.exists():
        return 0
    step = 0
    with open(log, "rb") as fh:
        fh.seek(skip_bytes)
        for line in fh.read().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill, or two glued together
            if "event" not in rec:
                step = max(step, rec["step"])
    return step


def _temp_entries(out: Path) -> set[Path]:
    """Hidden temp files/folders of the atomic writes (checkpoint file and model folder)."""
    found = set(out.glob(".model.*")) if out.exists() else set()
    if (out / "checkpoints").exists():
        found |= set((out / "checkpoints").glob(".step-*"))
    return found


def _newest_step(out: Path) -> int:
    """Load the newest checkpoint (it must load) and return its step; 0 when there is none yet."""
    path = latest_checkpoint(out)
    if path is None:
        return 0
    tensors, meta = load_tensors(path)
    assert meta["step"] == int(path.stem.split("-")[1])
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    if (out / "model").exists():
        load_pretrained(out / "model")  # the exported model folder is always whole too
    return meta["step"]


def _wait(pred, proc: subprocess.Popen, timeout: float = 120.0, poll: float = 0.002) -> bool:
    """Poll `pred` until true; False if the process exited first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise AssertionError("training made no progress within the timeout")


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_matches_a_straight_run(data, tmp_path):
    rng = random.Random(1234)
    out = tmp_path / "killed"
    log = out / "log.jsonl"
    kills, during_write, lost = 0, 0, []
    while kills < KILLS:
        start_step = _newest_step(out)
        skip = log.stat().st_size if log.exists() else 0
        old_temps = _temp_entries(out)
        proc = _spawn(data, out)
        mode = rng.choice(["startup", "step", "step", "write", "write"])
        if mode == "startup":  # anywhere in import, model build, resume
            time.sleep(rng.uniform(0.0, 3.0))
            alive = proc.poll() is None
        elif mode == "step":  # between or inside steps, a random time after a random number of new steps
            k = rng.randint(1, 4)
            alive = _wait(lambda: _steps_logged(log, skip) >= start_step + k, proc)
            time.sleep(rng.uniform(0.0, 0.3))
            alive = alive and proc.poll() is None
        else:  # inside a checkpoint write: a few ms after its temp file appears (mkstemp, data, fsync, rename,
            # then the model folder); first let one checkpoint through, or no run would ever get past one
            alive = _wait(lambda: _steps_logged(log, skip) >= start_step + INTERVAL + 1, proc)
            seen = _temp_entries(out)
            alive = alive and _wait(lambda: bool(_temp_entries(out) - seen), proc)
            # Half right after the temp file appears, half spread over the data write, fsync, rename and
            # the model folder (a kill that lands after the write is still a valid random kill).
            time.sleep(rng.uniform(0.0, 0.005) if rng.random() < 0.5 else rng.uniform(0.005, 0.15))
        if not alive:  # it finished (or failed) before the kill: only possible near the end
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if _temp_entries(out) - old_temps:
            during_write += 1  # the kill left a half-written temp file: it landed inside a checkpoint write
        reached = _steps_logged(log, skip)
        saved = _newest_step(out)  # loads, or the test fails
        assert saved >= start_step
        lost.append(max(0, reached - saved))
        assert reached - saved <= INTERVAL, (mode, reached, saved)

    # Resume until done.
    proc = _spawn(data, out)
    proc.wait(timeout=300)
    assert proc.returncode == 0, (tmp_path / "killed.stderr").read_text(errors="replace")[-2000:]
    assert kills >= KILLS, f"training finished after only {kills} kills"
    assert during_write >= 3, f"only {during_write} kills landed inside a checkpoint write"
    assert _newest_step(out) == STEPS

    straight = train(_cfg(), str(data), tmp_path / "straight", progress=False, num_workers=0)
    resumed, _ = load_tensors(latest_checkpoint(out))
    reference, _ = load_tensors(latest_checkpoint(tmp_path / "straight"))
    assert straight.step == STEPS
    assert set(resumed) == set(reference)
    for key in reference:
        if key.startswith(("G.", "D.", "queue.")):
            torch.testing.assert_close(resumed[key], reference[key], rtol=1e-5, atol=1e-6, msg=key)
    print(f"\n{kills} SIGKILLs survived ({during_write} inside checkpoint writes); steps lost per kill: {lost}")


# -- a full disk or failed write -------------------------------------------------------------------------------


def _failing_save_file(exc: BaseException):
    """safetensors' save_file that writes half a file and then fails, as a full disk would."""

    def save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\0" * 4096)
        raise exc

    return save_file


@pytest.mark.parametrize("failure", ["ENOSPC", "safetensors I/O error"])
def test_full_disk_keeps_the_previous_checkpoint_and_stops_clearly(failure, data, tmp_path, monkeypatch, capsys):
    import safetensors
    import safetensors.torch

    cfg = _cfg("train.steps=4")
    out = tmp_path / "run"
    train(cfg, str(data), out, max_steps=2, progress=False, num_workers=0)
    ckpt = out / "checkpoints" / "step-00000002.safetensors"
    before = ckpt.read_bytes()
    model_before = (out / "model" / "model.safetensors").read_bytes()
    exc = (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if failure == "ENOSPC" else
           safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    monkeypatch.setattr(safetensors.torch, "save_file", _failing_save_file(exc))
    monkeypatch.delenv("MATEBIT_DEBUG", raising=False)
    sets = [x for s in SETTINGS + ["train.steps=4"] for x in ("--set", s)]
    code = run(["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--resume", *sets])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # above it: only the progress bar
    assert last.startswith("matebit train: error: step 4: cannot write checkpoint"), last
    assert "No space left on device" in last and "step-00000002.safetensors" in last, last
    # The previous checkpoint and model folder are byte for byte what they were, and nothing else is left.
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [ckpt.name]
    assert (out / "model" / "model.safetensors").read_bytes() == model_before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    tensors, meta = load_tensors(ckpt)
    assert meta["step"] == 2
    # ...and resuming from it once the disk has room finishes the run.
    assert train(cfg, str(data), out, resume_run=True, progress=False, num_workers=0).step == 4


# -- non-finite losses -----------------------------------------------------------------------------------------


def _poison_losses(monkeypatch, at_steps: set[int], value: float) -> None:
    """Make the generator's total loss `value` (NaN or inf) at the given steps (0-based, as in the message)."""
    original = Trainer.generator_losses

    def generator_losses(self, batch):
        losses, total, extra = original(self, batch)
        if self.step in at_steps:
            losses["pixel"] = losses["pixel"] * value
            total = total + losses["pixel"]
        return losses, total, extra

    monkeypatch.setattr(Trainer, "generator_losses", generator_losses)


def _all_finite(path: Path) -> bool:
    tensors, _ = load_tensors(path)
    return all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_with_the_step_and_writes_no_bad_weights(value, data, tmp_path, monkeypatch, capsys):
    _poison_losses(monkeypatch, {3}, value)
    out = tmp_path / "run"
    monkeypatch.delenv("MATEBIT_DEBUG", raising=False)
    sets = [x for s in SETTINGS + ["train.steps=6", "train.nan_policy=stop"] for x in ("--set", s)]
    code = run(["train", "--preset", "tiny", "--data", str(data), "--out", str(out), *sets])
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("matebit train: error: step 3: non-finite loss (pixel)"), last
    assert "Traceback" not in err
    files = sorted((out / "checkpoints").glob("step-*.safetensors"))
    assert [p.name for p in files] == ["step-00000002.safetensors"]  # nothing after the bad step
    assert all(_all_finite(p) for p in files)
    generator, _ = load_pretrained(out / "model")
    assert all(bool(torch.isfinite(t).all()) for t in generator.state_dict().values() if t.is_floating_point())


def test_non_finite_loss_with_skip_policy_skips_the_step_and_keeps_weights_finite(data, tmp_path, monkeypatch):
    _poison_losses(monkeypatch, {1, 3}, float("nan"))
    cfg = _cfg("train.steps=6", "train.nan_policy=skip")
    seen = []
    original_step = Trainer.train_step

    def train_step(self, batch):
        # Parameters only: spectral-norm buffers move in every forward pass, skipped or not.
        before = {k: v.detach().clone() for k, v in self.generator.named_parameters()}
        step = self.step
        log = original_step(self, batch)
        changed = any(not torch.equal(before[k], v) for k, v in self.generator.named_parameters())
        seen.append((step, log["skipped"], changed))
        return log

    monkeypatch.setattr(Trainer, "train_step", train_step)
    trainer = train(cfg, str(data), tmp_path / "run", progress=False, num_workers=0)
    assert trainer.step == 6
    # Skipped steps leave G's parameters alone; the others update them.
    assert [(s, bool(flag)) for s, flag, _ in seen] == [(s, s in (1, 3)) for s in range(6)], seen
    assert all(changed != bool(flag) for _, flag, changed in seen), seen
    for p in trainer.generator.parameters():
        assert torch.isfinite(p).all()
    for path in sorted((tmp_path / "run" / "checkpoints").glob("step-*.safetensors")):
        assert _all_finite(path)
