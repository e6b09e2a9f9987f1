from matebit.cli import run
from matebit.commands.info import model_stats


def test_info_prints_versions_and_presets(capsys):
    assert run(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "paper" in out and "official" in out


def test_info_counts_parameters_and_flops():
    n, gflops = model_stats("tiny", 32)
    assert 100_000 < n < 2_000_000 and gflops > 0
