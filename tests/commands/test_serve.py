"""`matebit serve`'s launch settings (the page itself is tested in tests/app/)."""

import argparse

import pytest

from matebit.commands.serve import add_arguments, resolve_model_dir
from matebit.errors import InputError


def test_defaults_bind_localhost(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="matebit demo"):
        resolve_model_dir(None)
