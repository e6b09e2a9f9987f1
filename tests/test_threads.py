"""matebit.speed's thread choice: the free cores at start, re-chosen while a long job runs (issue 17)."""

import pytest
import torch

from matebit import speed


@pytest.fixture(autouse=True)
def _restore(monkeypatch):
    before = torch.get_num_threads()
    for name in ("MATEBIT_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(speed, "_fixed", None)
    monkeypatch.setattr(speed, "_last_choice", None)
    monkeypatch.setattr(speed, "_mark", speed._mark)  # choose_threads moves it
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("others, cores, threads", [
    (0.0, 2, 2), (0.3, 2, 2), (0.45, 2, 2),  # idle, or light background work: every core
    (0.67, 2, 1),  # one CPU-bound process while we run 2 threads (3 threads share 2 cores)
    (1.0, 2, 1), (2.0, 2, 1), (5.0, 2, 1),  # never below 1
    (0.55, 2, 1), (1.0, 8, 7), (0.1, 8, 8), (3.2, 16, 13)])
def test_threads_for(others, cores, threads):
    assert speed.threads_for(others, cores) == threads


def test_a_fixed_count_wins(monkeypatch):
    assert speed.choose_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert speed.choose_threads() == 2
    monkeypatch.setenv("MATEBIT_THREADS", "1")
    assert speed.choose_threads() == 1
    monkeypatch.setenv("MATEBIT_THREADS", "auto")
    assert speed.thread_governor("cpu") is None  # OMP_NUM_THREADS fixes it
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert speed.configure_cpu_threads(1) == 1 and speed.choose_threads() == 1  # --threads 1
    assert speed.thread_governor("cpu") is None


def _fake_load(monkeypatch, **load) -> dict:
    """CpuSample replaced: samples taken at load["wall"] that report load["others"] cores used by others."""

    class Sample:
        def __init__(self):
            self.wall = load["wall"]

        @classmethod
        def now(cls):
            return cls()

        def others_since(self, earlier):
            return load["others"]

    monkeypatch.setattr(speed, "CpuSample", Sample)
    return load


def test_choose_threads_measures_the_others(monkeypatch):
    busy = _fake_load(monkeypatch, others=1.0, wall=0.0)
    assert speed.choose_threads(cores=2) == 1
    busy["others"] = 0.0
    assert speed.choose_threads(cores=2) == 1  # a choice under 10 s old is reused
    monkeypatch.setattr(speed, "_last_choice", None)
    assert speed.choose_threads(cores=2) == 2


def test_the_governor_follows_the_load(monkeypatch):
    load = _fake_load(monkeypatch, others=0.0, wall=0.0)
    monkeypatch.setattr(speed.time, "monotonic", lambda: load["wall"])
    torch.set_num_threads(2)
    governor = speed.ThreadGovernor(cores=2, every_s=5.0)
    load.update(others=1.0, wall=2.0)
    assert governor.tick() is None  # looks only every 5 s
    load["wall"] = 6.0
    assert governor.tick() == 1 and torch.get_num_threads() == 1  # a busy process appeared
    load["wall"] = 12.0
    assert governor.tick() is None  # still there
    load.update(others=0.05, wall=18.0)
    assert governor.tick() == 2 and torch.get_num_threads() == 2  # and gone
    assert governor.changes == [(6.0, 1), (18.0, 2)]


def test_the_governor_only_where_matebit_chooses(monkeypatch):
    assert speed.thread_governor("cpu") is None  # a library call: the count stays as the caller set it
    monkeypatch.setenv("MATEBIT_THREADS", "auto")  # what the `matebit` command sets
    assert isinstance(speed.thread_governor("cpu"), speed.ThreadGovernor)
    assert speed.thread_governor("cuda") is None


def test_a_real_sample_counts_a_busy_core():
    """/proc/stat minus this process's CPU time: our own work is not "others"."""
    import time

    a = speed.CpuSample.now()
    t = time.process_time() + 0.3
    while time.process_time() < t:  # one busy thread of this process
        pass
    b = speed.CpuSample.now()
    assert b.others_since(a) < b.own - a.own + 1.5  # sane whatever else runs on the machine
    assert b.own - a.own >= 0.3



def test_constructing_a_translator_leaves_the_thread_count_alone(tiny_model):
    # A library call with a process-wide side effect surprises its caller; the commands choose threads instead.
    from matebit.config import model_preset
    from matebit.inference import Translator
    from matebit.models import MATEBITGenerator

    set_to = speed.available_cores() + 1  # more than any choice of matebit's, which never exceeds the cores
    torch.set_num_threads(set_to)
    Translator.from_pretrained(tiny_model, device="cpu")
    Translator(MATEBITGenerator(model_preset("tiny")), model_preset("tiny"), device="cpu", dtype="fp32")
    assert torch.get_num_threads() == set_to
