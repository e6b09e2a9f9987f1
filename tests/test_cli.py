"""The `matebit` dispatcher: help from the command table, one command module imported per run, errors by class."""

import subprocess
import sys

import pytest

from matebit.cli import COMMANDS, run


def test_help_lists_every_command(capsys):
    assert run([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    with pytest.raises(SystemExit) as exc:
        run(["--help"])
    assert exc.value.code == 0 and "translate" in capsys.readouterr().out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        run([name, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: matebit {name}")


def test_a_command_imports_no_other_command_module():
    code = ("import sys; from matebit.cli import run; run(['info']); "
            "print(sorted(m for m in sys.modules if m.startswith('matebit.commands.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['matebit.commands.info']"


def test_bad_config_value_is_one_line_exit_2(tmp_path, capsys):
    code = run(["train", "--preset", "tiny", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                "--set", "model.n_mat_blocks=three"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "n_mat_blocks" in err[0]


def test_errors_map_by_class(monkeypatch, capsys):
    from matebit.commands import info
    from matebit.errors import InputError

    monkeypatch.delenv("MATEBIT_DEBUG", raising=False)

    def bug(args):
        raise ValueError("an internal bug, not the user's input")

    monkeypatch.setattr(info, "main", bug)
    assert run(["info"]) == 1
    assert "internal error (ValueError)" in capsys.readouterr().err

    def bad_input(args):
        raise InputError("x.png: not an image")

    monkeypatch.setattr(info, "main", bad_input)
    assert run(["info"]) == 2
    assert capsys.readouterr().err.strip() == "matebit info: error: x.png: not an image"
