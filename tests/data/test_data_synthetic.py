import numpy as np
import pytest

from matebit.data.synthetic import (KEYPOINT_NAMES, KEYPOINT_PARTS, PART_INDEX, PART_NAMES, SyntheticFaces,
                                    render)


@pytest.fixture(scope="module")
def faces():
    return SyntheticFaces(12, size=96, seed=5)


def _same(a, b):
    return (np.array_equal(a.image, b.image) and np.array_equal(a.structure, b.structure)
            and np.array_equal(a.labels, b.labels) and a.keypoints == b.keypoints)


def test_deterministic_and_seed_sensitive(faces):
    again = SyntheticFaces(12, size=96, seed=5)
    for i in (0, 7):
        assert _same(faces[i], again[i])
    other = SyntheticFaces(12, size=96, seed=6)[0]
    assert not np.array_equal(faces[0].image, other.image)
    assert not np.array_equal(faces[0].labels, other.labels)
    assert not np.array_equal(faces[0].labels, faces[1].labels)


def test_outputs_have_documented_types(faces):
    s = faces[3]
    assert s.image.shape == (96, 96, 3) and s.image.dtype == np.uint8
    assert s.structure.shape == (96, 96) and s.structure.dtype == np.uint8
    assert s.labels.shape == (96, 96) and s.labels.max() < len(PART_NAMES)
    assert 15 <= len(s.keypoints) <= 25 and list(s.keypoints) == KEYPOINT_NAMES
    assert s.structure.max() == 255 and (s.structure > 0).mean() < 0.3  # thin lines, not filled areas


def test_cross_with_itself_is_the_sample(faces):
    for i in (2, 9):
        assert _same(faces.cross(i, i), faces[i])


def test_keypoints_land_on_their_parts():
    faces = SyntheticFaces(25, size=128, seed=1)
    for i in range(len(faces)):
        s = faces[i]
        raw = render(s.geometry, s.style, 128, snap_keypoints=False)
        for name, (x, y) in s.keypoints.items():
            assert s.labels[int(round(y)), int(round(x))] == PART_INDEX[KEYPOINT_PARTS[name]], (i, name)
            # Snapping only fixes rasterisation at the sub-pixel level; the geometry itself is right.
            assert np.hypot(x - raw.keypoints[name][0], y - raw.keypoints[name][1]) <= 1.5, (i, name)


def test_every_part_boundary_is_drawn_in_structure(faces):
    for i in (0, 4, 8):
        s = faces[i]
        lab, st = s.labels, s.structure > 0
        dx = lab[:, 1:] != lab[:, :-1]
        assert (st[:, 1:] | st[:, :-1])[dx].all()
        dy = lab[1:] != lab[:-1]
        assert (st[1:] | st[:-1])[dy].all()


def _median(s, part):
    m = s.labels == PART_INDEX[part]
    return np.median(s.image[m].astype(float), axis=0)


def test_geometry_from_i_and_colours_from_j(faces):
    checked = 0
    for i, j in ((0, 1), (2, 3), (4, 5), (6, 7)):
        x, si, sj = faces.cross(i, j), faces[i], faces[j]
        assert np.array_equal(x.labels, si.labels)
        assert np.array_equal(x.structure, si.structure)
        assert x.keypoints == si.keypoints
        for part in ("background", "face", "clothes"):
            ci, cj, cx = _median(si, part), _median(sj, part), _median(x, part)
            if np.linalg.norm(ci - cj) < 60:
                continue  # the two styles happen to agree here; nothing to tell apart
            assert np.linalg.norm(cx - cj) < np.linalg.norm(cx - ci) / 2, (i, j, part)
            checked += 1
    assert checked >= 6


def test_correspondence_pairs_keypoints(faces):
    names, pi, pj = faces.correspondence(1, 4)
    assert names == KEYPOINT_NAMES
    assert pi.shape == pj.shape == (len(names), 2)
    assert np.allclose(pi, [faces[1].keypoints[n] for n in names])
    assert np.allclose(pj, [faces[4].keypoints[n] for n in names])
    assert not np.allclose(pi, pj)


def test_index_out_of_range():
    with pytest.raises(IndexError):
        SyntheticFaces(3, size=32)[3]
