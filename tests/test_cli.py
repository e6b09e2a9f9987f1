from matebit.cli import model_stats, run


def test_help_and_info(capsys):
    assert run([]) == 0
    assert "translate" in capsys.readouterr().out
    assert run(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "paper" in out and "official" in out


def test_info_counts_parameters_and_flops():
    n, gflops = model_stats("tiny", 32)
    assert 100_000 < n < 2_000_000 and gflops > 0


def test_bad_config_value_is_one_line_exit_2(tmp_path, capsys):
    code = run(["train", "--preset", "tiny", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                "--set", "model.n_mat_blocks=three"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "n_mat_blocks" in err[0]
