"""Settings of every test process, and the tiny model folders the tests share.

Tiers: tests marked `slow` (several processes, a browser, long fuzzing) run in `make test` and CI with the rest;
`pytest -m "not slow"` leaves them out for a quick loop while developing.
"""

import os

# Threads that spin while waiting make a loaded 2-core machine crawl; let them sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# The CI machine has 2 cores; keep each test process from oversubscribing them.
torch.set_num_threads(int(os.environ.get("MATEBIT_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class TinyModels:
    """Untrained model folders of the `tiny` preset (torch seed 0), each made once per session: a bare ModelConfig
    (`trained_size=None`: no trained size, so it runs at the input's own size) or an ExperimentConfig whose
    train.image_size is `trained_size` (what `matebit train` writes). Shared by many tests: read them, and copy one
    before changing it."""

    def __init__(self, root: Path):
        self.root, self.made = root, {}

    def __call__(self, trained_size: int | None = None) -> Path:
        if trained_size not in self.made:
            self.made[trained_size] = save_tiny_model(self.root / f"tiny-{trained_size or 'bare'}", trained_size)
        return self.made[trained_size]


def save_tiny_model(folder: Path, trained_size: int | None = None) -> Path:
    from matebit.checkpoint import save_pretrained
    from matebit.config import apply_overrides, experiment_preset, model_preset
    from matebit.models.generator import MATEBITGenerator

    state = torch.get_rng_state()
    torch.manual_seed(0)
    cfg = model_preset("tiny")
    generator = MATEBITGenerator(cfg)
    torch.set_rng_state(state)  # a session fixture must not move the random numbers of the test that asked first
    if trained_size is None:
        return save_pretrained(folder, generator, cfg)
    return save_pretrained(folder, generator,
                           apply_overrides(experiment_preset("tiny"), [f"train.image_size={trained_size}"]))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_model(tiny_models) -> Path:
    """The tiny model folder with a bare ModelConfig (read-only: see TinyModels)."""
    return tiny_models()


@pytest.fixture(scope="session")
def trained_model(tiny_models) -> Path:
    """The tiny model folder as a run at 32x32 writes it (read-only: see TinyModels)."""
    return tiny_models(32)
