"""Fixtures of the robustness tests: a synthetic data set (the tiny model folders are tests/conftest.py's)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """8 training and 2 validation faces at 32x32 (read-only: copy it before breaking it)."""
    from matebit.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("syn")
    write_synthetic_dataset(root, 8, 2, size=32, seed=0)
    return root

