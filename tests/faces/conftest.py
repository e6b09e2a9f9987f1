"""Fixtures of the face tests (helpers in faces_helpers.py)."""

import pytest
from faces_helpers import LONDON, write_astronaut_london, write_fake_london


@pytest.fixture(scope="session")
def fake_london(tmp_path_factory):
    return write_fake_london(tmp_path_factory.mktemp("london") / "london-faces")


@pytest.fixture(scope="session")
def astronaut_london(tmp_path_factory):
    pytest.importorskip("dlib")
    return write_astronaut_london(tmp_path_factory.mktemp("astronauts") / "london-faces")


@pytest.fixture(scope="session")
def london():
    if not (LONDON / "neutral").is_dir():
        pytest.skip("../shared/data/london-faces is not on this machine")
    return LONDON


@pytest.fixture()
def shipped_root(tmp_path, monkeypatch):
    """The shipped-models folder pointed at an empty temporary one (nothing is written under matebit/weights/)."""
    import matebit.weights as W

    root = tmp_path / "weights"
    root.mkdir()
    monkeypatch.setattr(W, "weights_root", lambda: root)
    return root


@pytest.fixture(scope="session")
def face_model():
    """The shipped face model's folder: a face model, its template in preprocessor_config.json."""
    from matebit.image_processor import PROCESSOR_FILE
    from matebit.weights import resolve_model

    folder = resolve_model("faces-hed-128")
    assert (folder / PROCESSOR_FILE).is_file()
    return folder
