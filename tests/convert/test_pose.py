import json

import numpy as np
import pytest

from matebit.convert import ConvertError, convert_folder, pose, pose_limb_masks
from matebit.convert.pose import BODY25_TO_COCO18, COCO18_COLORS_RGB, COCO18_LIMBS, output_stem

SIZE = (176, 256)
# A standing person in COCO-18 order (x, y), drawn at DeepFashion's 176x256.
COORDS = {
    0: (88, 40), 1: (88, 70), 2: (65, 72), 3: (55, 110), 4: (50, 145), 5: (111, 72), 6: (121, 110),
    7: (126, 145), 8: (75, 140), 9: (73, 190), 10: (72, 240), 11: (101, 140), 12: (103, 190),
    13: (104, 240), 14: (82, 34), 15: (94, 34), 16: (75, 38), 17: (101, 38),
}  # fmt: skip


def person(missing=(), conf=0.9):
    kp = np.zeros((18, 3))
    for j, (x, y) in COORDS.items():
        kp[j] = (x, y, 0.0 if j in missing else conf)
    return kp


def as_json(*people):
    return {"version": 1.3, "people": [{"pose_keypoints_2d": p.ravel().tolist()} for p in people]}


def lit(img, x, y):
    return np.asarray(img)[int(round(y)), int(round(x))].max() > 0


def test_limbs_drawn_between_confident_keypoints_only():
    missing = {7, 13}  # left wrist, left ankle
    img = pose(as_json(person(missing)), size=SIZE)
    assert img.mode == "RGB" and img.size == SIZE
    arr = np.asarray(img)
    for i, (a, b) in enumerate(COCO18_LIMBS):
        pa, pb = np.array(COORDS[a], float), np.array(COORDS[b], float)
        pts = [pa + t * (pb - pa) for t in (0.25, 0.5, 0.75)]
        if a in missing or b in missing:
            # Away from the visible end's dot, nothing of this limb is drawn.
            assert not any(lit(img, *p) for p in pts[1:]), f"limb {i} drawn to a missing joint"
        else:
            assert all(lit(img, *p) for p in pts), f"limb {i} missing"
            # Mid-limb colour of a long limb is its own colour blended 60 % over black; short face
            # limbs are covered by the joint dots and the two shoulders cross the neck, so skip them.
            if np.hypot(*(pb - pa)) > 20 and i not in (0, 1):
                mid = arr[int(round(pts[1][1])), int(round(pts[1][0]))].astype(int)
                expected = 0.6 * np.array(COCO18_COLORS_RGB[i])
                assert np.abs(mid - expected).max() <= 2, (i, mid, expected)
    for j in missing:
        x, y = COORDS[j]
        assert arr[y - 3 : y + 4, x - 3 : x + 4].max() == 0, f"dot drawn at missing joint {j}"
    # Everything far from the skeleton stays black.
    assert arr[:20].max() == 0 and arr[:, :30].max() == 0


def test_confidence_threshold():
    kp = person()
    kp[4, 2] = 0.05  # right wrist barely detected
    low = np.asarray(pose(as_json(kp), size=SIZE, threshold=0.01))
    high = np.asarray(pose(as_json(kp), size=SIZE, threshold=0.1))
    x, y = COORDS[4]
    assert low[y, x].max() > 0 and high[y, x].max() == 0


def test_body25_maps_to_coco18():
    coco = person()
    body25 = np.zeros((25, 3))
    body25[list(BODY25_TO_COCO18)] = coco
    body25[8] = (88, 140, 0.9)  # MidHip and feet have no COCO-18 counterpart and are ignored
    body25[19:] = (5, 5, 0.9)
    a = np.asarray(pose(as_json(body25), size=SIZE))
    b = np.asarray(pose(as_json(coco), size=SIZE))
    assert np.array_equal(a, b)


def test_json_file_and_errors(tmp_path):
    good = tmp_path / "img001_keypoints.json"
    good.write_text(json.dumps(as_json(person())))
    assert np.asarray(pose(good, size=SIZE)).max() > 0
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConvertError, match="bad.json: not valid JSON"):
        pose(bad, size=SIZE)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"people": [{"pose_keypoints_2d": [1, 2, 3] * 20}]}))
    with pytest.raises(ConvertError, match="odd.json: 20 keypoints"):
        pose(odd, size=SIZE)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([1, 2]))
    with pytest.raises(ConvertError, match="wrong.json: not an OpenPose JSON"):
        pose(wrong, size=SIZE)


def test_nobody_gives_black_map_and_person_selection():
    assert np.asarray(pose({"people": []}, size=SIZE)).max() == 0
    left = person()
    right = person()
    right[:, 0] += 1000  # off-canvas second person
    two = as_json(left, right)
    assert np.array_equal(np.asarray(pose(two, size=SIZE)), np.asarray(pose(two, size=SIZE, person=0)))
    assert np.asarray(pose(two, size=SIZE, person=1)).max() == 0
    with pytest.raises(ConvertError, match="person 2"):
        pose(two, size=SIZE, person=2)


def test_scale_moves_the_skeleton():
    kp = person()
    kp[:, :2] /= 2
    a = np.asarray(pose(as_json(kp), size=SIZE, scale=2.0))
    b = np.asarray(pose(as_json(person()), size=SIZE))
    assert (np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 0).mean() < 0.01


def test_limb_masks():
    masks = pose_limb_masks(as_json(person(missing={10})), size=SIZE)
    assert masks.shape == (17, SIZE[1], SIZE[0]) and masks.dtype == bool
    for i, (a, b) in enumerate(COCO18_LIMBS):
        assert masks[i].any() == (10 not in (a, b)), i
        if masks[i].any():
            (xa, ya), (xb, yb) = COORDS[a], COORDS[b]
            assert masks[i][(ya + yb) // 2, (xa + xb) // 2]


def test_output_stem():
    assert output_stem("a/b/img001_keypoints.json") == "img001"
    assert output_stem("img001.json") == "img001"


def test_pose_folder(tmp_path):
    src, dst = tmp_path / "json", tmp_path / "maps"
    src.mkdir()
    (src / "p1_keypoints.json").write_text(json.dumps(as_json(person())))
    (src / "p2.json").write_text(json.dumps(as_json(person(missing={0}))))
    (src / "notes.txt").write_text("ignored")
    report = convert_folder("pose", src, dst, size="176x256", progress=False)
    assert sorted(p.name for p in dst.iterdir()) == ["p1.png", "p2.png"]
    assert len(report.written) == 2 and not report.failed
