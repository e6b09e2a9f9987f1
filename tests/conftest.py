import os

import pytest
import torch

# The CI machine has 2 cores; keep each test process from oversubscribing them.
torch.set_num_threads(int(os.environ.get("MATEBIT_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
