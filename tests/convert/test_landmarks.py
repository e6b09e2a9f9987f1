import sys

import numpy as np
import pytest
from PIL import Image

from matebit.convert import ConvertError, MissingDependencyError, landmarks_to_sketch
from matebit.convert.landmarks import FACE_PARTS_68, face_hull_mask

ASTRO_FACE = (170, 75, 275, 180)  # x0, y0, x1, y1 around the face dlib finds in skimage's astronaut


def synthetic_face(cx=64.0, cy=64.0, r=40.0):
    """68 points on a plausible layout: jaw arc, brows, nose, eyes and lips."""
    pts = np.zeros((68, 2))
    t = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)
    pts[0:17] = np.c_[cx + r * np.cos(t), cy + 0.2 * r + r * np.sin(t) * 0.9]
    pts[17:22] = np.c_[np.linspace(cx - 0.8 * r, cx - 0.15 * r, 5), np.full(5, cy - 0.45 * r)]
    pts[22:27] = np.c_[np.linspace(cx + 0.15 * r, cx + 0.8 * r, 5), np.full(5, cy - 0.45 * r)]
    pts[27:31] = np.c_[np.full(4, cx), np.linspace(cy - 0.3 * r, cy + 0.15 * r, 4)]
    pts[31:36] = np.c_[np.linspace(cx - 0.2 * r, cx + 0.2 * r, 5), np.full(5, cy + 0.25 * r)]
    for start, ex in ((36, cx - 0.45 * r), (42, cx + 0.45 * r)):
        a = np.linspace(0, 2 * np.pi, 6, endpoint=False) + np.pi
        pts[start : start + 6] = np.c_[ex + 0.2 * r * np.cos(a), cy - 0.25 * r + 0.08 * r * np.sin(a)]
    a = np.linspace(0, 2 * np.pi, 12, endpoint=False) + np.pi
    pts[48:60] = np.c_[cx + 0.4 * r * np.cos(a), cy + 0.55 * r + 0.15 * r * np.sin(a)]
    a = np.linspace(0, 2 * np.pi, 8, endpoint=False) + np.pi
    pts[60:68] = np.c_[cx + 0.3 * r * np.cos(a), cy + 0.55 * r + 0.05 * r * np.sin(a)]
    return pts


def test_sketch_without_dlib_draws_every_point_and_segment():
    pts = synthetic_face()
    sk = landmarks_to_sketch(pts, (128, 128), line_width=1)
    assert sk.mode == "L" and sk.size == (128, 128)
    arr = np.asarray(sk) > 0
    near = lambda x, y: arr[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2].any()
    assert all(near(x, y) for x, y in pts)
    for first, last, closed in FACE_PARTS_68.values():
        for i in range(first, last):
            assert near(*(pts[i] + pts[i + 1]) / 2), (first, i)
        mid_close = (pts[first] + pts[last]) / 2
        if closed:
            assert near(*mid_close), ("closing segment missing", first)
    # The jaw is open: nothing drawn between its two ends (the middle of the face there is empty).
    jaw_gap = (pts[0] + pts[16]) / 2
    assert not arr[int(jaw_gap[1]) - 1 : int(jaw_gap[1]) + 2, int(jaw_gap[0]) - 12 : int(jaw_gap[0]) - 6].any()
    assert 0.01 < arr.mean() < 0.2


def test_sketch_size_and_errors():
    pts = synthetic_face()
    assert landmarks_to_sketch(pts, (200, 100)).size == (200, 100)
    # Auto line width grows with the canvas.
    thin = (np.asarray(landmarks_to_sketch(pts * 2, 256)) > 0).sum()
    thick = (np.asarray(landmarks_to_sketch(pts * 8, 1024)) > 0).sum()
    assert thick > 4 * thin * 1.5
    with pytest.raises(ValueError, match="68"):
        landmarks_to_sketch(pts[:60], 128)
    with pytest.raises(ValueError, match="NaN"):
        landmarks_to_sketch(np.full((68, 2), np.nan), 128)


def test_hull_mask_margin():
    pts = synthetic_face()
    m0 = face_hull_mask(pts, 128)
    m4 = face_hull_mask(pts, 128, margin=4)
    assert m0[64, 64] and not m0[2, 2] and m4.sum() > m0.sum() and (m4 | m0).sum() == m4.sum()


def test_missing_dlib_message(monkeypatch):
    import importlib

    from matebit.convert import landmarks as lm_module_fn

    # The package exports the function under the module's name; fetch the module itself.
    lm = importlib.import_module("matebit.convert.landmarks")
    lm._load_dlib.cache_clear()
    monkeypatch.setitem(sys.modules, "dlib", None)
    try:
        with pytest.raises(MissingDependencyError, match=r"pip install 'matebit\[landmarks\]'"):
            lm_module_fn(np.zeros((32, 32, 3), np.uint8))
    finally:
        lm._load_dlib.cache_clear()


needs_dlib = pytest.mark.skipif(
    __import__("importlib").util.find_spec("dlib") is None, reason="dlib not installed (matebit[landmarks])"
)


@needs_dlib
def test_detect_landmarks_on_astronaut(astronaut):
    from matebit.convert import detect_landmarks

    pts = detect_landmarks(astronaut)
    assert pts.shape == (68, 2)
    x0, y0, x1, y1 = ASTRO_FACE
    assert (pts[:, 0] > x0).all() and (pts[:, 0] < x1).all() and (pts[:, 1] > y0).all() and (pts[:, 1] < y1).all()
    # Anatomy sanity: eyes above the mouth, right eye (36-41) left of the left eye in the image.
    assert pts[36:48, 1].mean() < pts[48:68, 1].mean()
    assert pts[36:42, 0].mean() < pts[42:48, 0].mean()


@needs_dlib
def test_landmark_map_combines_sketch_and_background(astronaut):
    from matebit.convert import detect_landmarks, landmarks

    out = landmarks(astronaut)
    assert out.mode == "L" and out.size == (512, 512)
    arr = np.asarray(out) > 0
    pts = detect_landmarks(astronaut)
    sketch = np.asarray(landmarks_to_sketch(pts, 512)) > 0
    hull = face_hull_mask(pts, 512)
    # Inside the face exactly the landmark sketch; outside it Canny adds the background edges.
    assert np.array_equal(arr[hull], sketch[hull])
    assert (arr & ~sketch).sum() > 0.02 * (~hull).sum()
    assert (arr & sketch).sum() == sketch.sum()
    x0, y0, x1, y1 = ASTRO_FACE
    assert arr[y0:y1, x0:x1].mean() > 0.03
    face_only = np.asarray(landmarks(astronaut, background=False)) > 0
    assert np.array_equal(face_only, sketch)


@needs_dlib
def test_no_face_error_names_file(tmp_path, coffee):
    path = tmp_path / "cup.png"
    Image.fromarray(coffee).save(path)
    from matebit.convert import landmarks

    with pytest.raises(ConvertError, match="cup.png: no face found"):
        landmarks(path)
