import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    from skimage import data

    return data.chelsea()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    from skimage import data

    return data.coffee()


def save(arr: np.ndarray, path, quality=None):
    im = Image.fromarray(arr)
    if quality is None:
        im.save(path)
    else:
        im.save(path, quality=quality)
    return path
