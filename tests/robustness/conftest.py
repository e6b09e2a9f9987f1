"""Fixtures of the robustness tests: tiny model folders and a synthetic data set (builders in hostile_helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile_helpers import save_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A bare-ModelConfig tiny model: no trained size, so it runs at the input's own size."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A tiny model folder as training writes it: ExperimentConfig with train.image_size=32."""
    return save_tiny_model(tmp_path_factory.mktemp("trained") / "model", trained_size=32)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """8 training and 2 validation faces at 32x32 (read-only: copy it before breaking it)."""
    from matebit.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("syn")
    write_synthetic_dataset(root, 8, 2, size=32, seed=0)
    return root

