"""OpenPose keypoints -> the coloured COCO-18 limb skeleton used as DeepFashion-style input.

Rendering follows the DeepFashion data loader of the released code: joints as filled
dots, then each of the first 17 COCO-18 limbs as a filled ellipse blended 60 % over the canvas, in the
usual 18 OpenPose colours. Input is OpenPose's JSON (`pose_keypoints_2d`, BODY_25 or COCO-18) instead
of the Drive candidate/subset txt files, which users cannot produce themselves.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
from PIL import Image

from matebit.errors import ConvertError

from ._common import parse_size

COCO18_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)  # fmt: skip

# BODY_25 index of each COCO-18 joint: BODY_25 inserts MidHip at 8 and appends feet at 19-24.
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)

# The 17 limbs drawn (0-based COCO-18 joint pairs), in OpenPose's order; limb i gets colour i.
COCO18_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

# The released code draws the OpenPose palette on a BGR canvas and converts BGR->RGB, so the
# RGB map carries each triplet channel-reversed; we store them already in RGB to match its output.
COCO18_COLORS_RGB = tuple(
    (b, g, r)
    for (r, g, b) in (
        (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
        (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
        (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
    )
)  # fmt: skip

PoseInput = Union[str, os.PathLike, dict, np.ndarray, list]


def _people_from_json(obj: Any, name: str) -> list[np.ndarray]:
    if not isinstance(obj, dict) or not isinstance(obj.get("people"), list):
        raise ConvertError(f"{name}: not an OpenPose JSON (expected {{\"people\": [...]}})")
    people = []
    for i, person in enumerate(obj["people"]):
        flat = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        if flat is None:
            raise ConvertError(f"{name}: person {i} has no pose_keypoints_2d")
        try:
            arr = np.asarray(flat, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConvertError(f"{name}: person {i} pose_keypoints_2d is not a list of numbers") from None
        if arr.ndim != 1 or arr.size % 3:
            raise ConvertError(f"{name}: person {i} pose_keypoints_2d length {arr.size} is not a multiple of 3")
        people.append(arr.reshape(-1, 3))
    return people


def to_coco18(keypoints: np.ndarray, name: str = "keypoints") -> np.ndarray:
    """(N, 3) x, y, confidence with N = 18 (COCO-18) or 25 (BODY_25) -> (18, 3) COCO-18 order."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[1] != 3:
        raise ConvertError(f"{name}: keypoints must be (N, 3) x, y, confidence; got shape {kp.shape}")
    if kp.shape[0] == 18:
        return kp.copy()
    if kp.shape[0] == 25:
        return kp[list(BODY25_TO_COCO18)].copy()
    raise ConvertError(f"{name}: {kp.shape[0]} keypoints per person; expected 18 (COCO) or 25 (BODY_25)")


def load_people(pose: PoseInput, name: str | None = None) -> list[np.ndarray]:
    """Every person as a (18, 3) COCO-18 array, from a JSON path, a parsed dict or an array.

    Arrays: (N, 3) for one person or (P, N, 3) for several; N is 18 or 25.
    """
    if isinstance(pose, (str, os.PathLike)):
        name = name or str(pose)
        from matebit.io import read_json

        people = _people_from_json(read_json(pose, name, error=ConvertError), name)
    elif isinstance(pose, dict):
        people = _people_from_json(pose, name or "pose dict")
    else:
        arr = np.asarray(pose, dtype=np.float64)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ConvertError(f"{name or 'keypoints'}: expected (N, 3) or (P, N, 3), got shape {arr.shape}")
        people = list(arr)
    return [to_coco18(p, name or "keypoints") for p in people]


def _limb_polygon(p: np.ndarray, q: np.ndarray, half_width: int) -> np.ndarray:
    """Ellipse around segment p-q (x, y), as a convex polygon for cv2.fillConvexPoly."""
    centre = (int(round((p[0] + q[0]) / 2)), int(round((p[1] + q[1]) / 2)))
    length = math.hypot(q[0] - p[0], q[1] - p[1])
    angle = math.degrees(math.atan2(q[1] - p[1], q[0] - p[0]))
    return cv2.ellipse2Poly(centre, (int(round(length / 2)), half_width), int(round(angle)), 0, 360, 1)


def _visible(kp: np.ndarray, threshold: float) -> np.ndarray:
    # OpenPose writes (0, 0, 0) for undetected joints; treat non-finite as missing too.
    return np.isfinite(kp).all(axis=1) & (kp[:, 2] > threshold)


_MAX_COORDINATE = 2.0**20  # px; far beyond any map, and within the integers OpenCV draws with


def _scaled(people: list[np.ndarray], scale: float, threshold: float, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(keypoints with coordinates times `scale`, visible joints) per person; a visible joint far off any map (e.g.
    1e308) is an error naming the file, not an OpenCV failure."""
    out = []
    for i, kp in enumerate(people):
        kp = kp.copy()
        kp[:, :2] *= scale
        vis = _visible(kp, threshold)
        far = vis & (np.abs(kp[:, :2]) > _MAX_COORDINATE).any(axis=1)
        if far.any():
            j = int(np.flatnonzero(far)[0])
            raise ConvertError(f"{name}: person {i} keypoint {j} at ({kp[j, 0]:.4g}, {kp[j, 1]:.4g}) is far outside "
                               f"any map; expected pixel coordinates")
        out.append((kp, vis))
    return out


def _select(people: list[np.ndarray], person: int | None, name: str) -> list[np.ndarray]:
    if person is None:
        return people
    if not 0 <= person < len(people):
        raise ConvertError(f"{name}: person {person} requested but the file has {len(people)}")
    return [people[person]]


def pose(
    keypoints: PoseInput,
    *,
    size,
    threshold: float = 0.1,
    stick_width: int = 4,
    joint_radius: int = 4,
    person: int | None = None,
    scale: float = 1.0,
) -> Image.Image:
    """OpenPose keypoints -> coloured skeleton, PIL 'RGB' of `size` (W, H), black background.

    threshold: joints with confidence <= threshold are missing; limbs touching them are not drawn.
    stick_width: half-thickness of limb ellipses (released code: 4 at DeepFashion's 176x256).
    person: draw only this person index (default: everyone in the file).
    scale: multiply keypoint coordinates first (e.g. keypoints from a differently sized image).
    A file with no people gives an all-black map (OpenPose writes that when it finds no-one).
    """
    name = str(keypoints) if isinstance(keypoints, (str, os.PathLike)) else "keypoints"
    w, h = parse_size(size)
    people = _select(load_people(keypoints, name), person, name)
    canvas = np.zeros((h, w, 3), np.float64)
    for kp, vis in _scaled(people, scale, threshold, name):
        for j in np.flatnonzero(vis):
            x, y = int(round(kp[j, 0])), int(round(kp[j, 1]))
            cv2.circle(canvas, (x, y), joint_radius, COCO18_COLORS_RGB[j], thickness=-1)
        for i, (a, b) in enumerate(COCO18_LIMBS):
            if not (vis[a] and vis[b]):
                continue
            mask = np.zeros((h, w), np.uint8)
            cv2.fillConvexPoly(mask, _limb_polygon(kp[a, :2], kp[b, :2], stick_width), 1)
            sel = mask.astype(bool)
            canvas[sel] = 0.4 * canvas[sel] + 0.6 * np.asarray(COCO18_COLORS_RGB[i], np.float64)
    return Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8))


def pose_limb_masks(
    keypoints: PoseInput,
    *,
    size,
    threshold: float = 0.1,
    stick_width: int = 4,
    person: int | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """Per-limb filled-ellipse masks, bool (17, H, W): the released loader turns these into the 17
    distance-transform channels of its 20-channel DeepFashion label. Missing limbs are all False."""
    name = str(keypoints) if isinstance(keypoints, (str, os.PathLike)) else "keypoints"
    w, h = parse_size(size)
    people = _select(load_people(keypoints, name), person, name)
    out = np.zeros((len(COCO18_LIMBS), h, w), np.uint8)
    for kp, vis in _scaled(people, scale, threshold, name):
        for i, (a, b) in enumerate(COCO18_LIMBS):
            if vis[a] and vis[b]:
                cv2.fillConvexPoly(out[i], _limb_polygon(kp[a, :2], kp[b, :2], stick_width), 1)
    return out.astype(bool)


def output_stem(path: Union[str, os.PathLike]) -> str:
    """OpenPose names its files <image stem>_keypoints.json; the map takes the image's stem."""
    stem = Path(path).stem
    return stem[: -len("_keypoints")] if stem.endswith("_keypoints") and len(stem) > 10 else stem
