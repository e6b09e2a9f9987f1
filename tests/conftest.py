import os

# Threads that spin while waiting make a loaded 2-core machine crawl; let them sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

# The CI machine has 2 cores; keep each test process from oversubscribing them.
torch.set_num_threads(int(os.environ.get("MATEBIT_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
