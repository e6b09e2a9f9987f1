"""Faces in photos: detection, 68 landmarks, and the similarity alignment a face model was trained on.

    from matebit.align import FaceTemplate, find_face
    face = find_face("portrait.jpg")                 # the largest face: 68 dlib landmarks, in photo pixels
    aligned = face.align(FaceTemplate(), 128)        # AlignedFace: the crop, and the photo <-> crop transforms
    crop = aligned.crop                              # PIL 'RGB', 128x128, eyes and mouth where the template puts them
    photo = aligned.paste_back(output_128)           # a face image of the crop's frame blended into the photo

The rule follows the alignment of FFHQ and CelebA-HQ: the crop's orientation is the mean of the eye line and the
perpendicular of the eyes-to-mouth line, its scale the larger of the eye distance and the eyes-to-mouth distance
(so a turned head, whose eyes come close, is not blown up), and it is placed so that the eyes' midpoint lands at
`FaceTemplate.eye_centre`. The template is recorded with every face model (its `preprocessor_config.json`), so the
photos a user gives are framed as the training portraits were.

Landmarks come from dlib's 68-point predictor (`pip install -e '.[landmarks]'`: dlib-bin and face-recognition-models,
whose package ships the predictor's file; nothing is downloaded). dlib's frontal detector finds faces up to about
30 degrees of roll; a photo where it finds none is tried again rotated (`_ROLLS`).
"""

from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
from PIL import Image

from matebit.errors import InputError, MissingDependencyError

__all__ = ["FaceTemplate", "Face", "AlignedFace", "find_face", "find_faces", "similarity_to_template",
           "warp_image", "invert", "apply", "LANDMARKS_EXTRA"]

LANDMARKS_EXTRA = "landmarks"
_INSTALL = f"pip install -e '.[{LANDMARKS_EXTRA}]'"
_PREDICTOR = "shape_predictor_68_face_landmarks.dat"
_CNN_DETECTOR = "mmod_human_face_detector.dat"
# The detector runs on a copy whose longer side is at most this (speed); landmarks are fitted at full resolution.
_DETECT_SIDE = 640
# Rolls (degrees) tried, in this order, when the upright photo shows no face.
_ROLLS = (20.0, -20.0, 40.0, -40.0)

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]


# --------------------------------------------------------------------------------------------------------------
# The template


@dataclass(frozen=True)
class FaceTemplate:
    """Where an aligned face sits in its square crop, as shares of the side.

    eye_distance: the crop's scale reference (the larger of the eye distance and eyes-to-mouth distance / 1.1, see
    the module docstring) as a share of the side. eye_centre: (x, y) of the eyes' midpoint. The defaults frame a
    head and shoulders with some backdrop: the face is about 45% of the width.
    """

    eye_distance: float = 0.2
    eye_centre: tuple[float, float] = (0.5, 0.44)
    landmarks: str = "dlib-68"
    rule: str = "eyes-mouth"

    def __post_init__(self) -> None:
        if not 0.02 <= self.eye_distance <= 0.6:
            raise InputError(f"face template: eye_distance must lie in [0.02, 0.6], got {self.eye_distance}")
        if len(self.eye_centre) != 2 or not all(0.0 <= v <= 1.0 for v in self.eye_centre):
            raise InputError(f"face template: eye_centre must be two shares in [0, 1], got {self.eye_centre}")
        if self.landmarks != "dlib-68" or self.rule != "eyes-mouth":
            raise InputError(f"face template: unknown landmarks/rule {self.landmarks!r}/{self.rule!r} "
                             f"(this matebit knows dlib-68/eyes-mouth)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eye_centre"] = list(self.eye_centre)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FaceTemplate":
        if not isinstance(data, dict):
            raise InputError(f"face template: expected an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"eye_distance", "eye_centre", "landmarks", "rule"})
        if unknown:
            raise InputError(f"face template: unknown key(s) {', '.join(unknown)}")
        kw = dict(data)
        if "eye_centre" in kw:
            kw["eye_centre"] = tuple(float(v) for v in kw["eye_centre"])
        return cls(**kw)


def _eyes_and_mouth(points68: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image-left eye centre, image-right eye centre, mouth centre) of iBUG-68 landmarks."""
    p = np.asarray(points68, np.float64)
    return p[36:42].mean(0), p[42:48].mean(0), (p[48] + p[54]) / 2.0


def similarity_to_template(points68: np.ndarray, template: FaceTemplate, side: int) -> np.ndarray:
    """2x3 matrix taking photo pixels to the pixels of a side x side crop aligned to `template` (pixel-centre
    coordinates, OpenCV's convention)."""
    left, right, mouth = _eyes_and_mouth(points68)
    eyes = (left + right) / 2.0
    eye_to_eye, eye_to_mouth = right - left, mouth - eyes
    # The crop's x axis: the eye line averaged with the eyes-to-mouth line turned by -90 degrees (both point right on
    # an upright face), which is steadier than either alone.
    x_axis = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    norm = float(np.hypot(*x_axis))
    if not math.isfinite(norm) or norm < 1e-6:
        raise InputError("face landmarks are degenerate (eyes and mouth coincide)")
    angle = math.atan2(x_axis[1], x_axis[0])
    # FFHQ's rule weighs the eye distance 2.0 against the eyes-to-mouth distance 1.8.
    reference = max(float(np.hypot(*eye_to_eye)), float(np.hypot(*eye_to_mouth)) / 1.1)
    scale = template.eye_distance * side / reference
    c, s = math.cos(-angle) * scale, math.sin(-angle) * scale
    rot = np.array([[c, -s], [s, c]])
    target = np.array([template.eye_centre[0] * side - 0.5, template.eye_centre[1] * side - 0.5])
    offset = target - rot @ eyes
    return np.hstack([rot, offset[:, None]])


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def apply(matrix: np.ndarray, points: Any) -> np.ndarray:
    """(P, 2) points (x, y) moved by a 2x3 matrix."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return p @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


# --------------------------------------------------------------------------------------------------------------
# Warping


def warp_image(rgb: np.ndarray, matrix: np.ndarray, side: int, pad_blur: float = 0.08) -> np.ndarray:
    """uint8 (side, side, 3) crop of an (H, W, 3) uint8 image through the photo -> crop matrix.

    Shrinking is antialiased (the photo is first reduced with area averaging so the warp itself never shrinks by more
    than 2x). Where the crop reaches past the photo, the photo is mirrored at its border and faded into a blur (sigma
    `pad_blur` of the side) away from it, as FFHQ pads: a plausible backdrop rather than a hard black frame, which
    would read as an edge.
    """
    m = np.asarray(matrix, np.float64).copy()
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    src = rgb
    if scale < 0.5:
        f = 2.0 * scale  # reduce the photo by this, leaving a warp that shrinks by 2x at most
        h, w = rgb.shape[:2]
        nw, nh = max(1, round(w * f)), max(1, round(h * f))
        src = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        # Pixel centres: x_small = (x + 0.5) * nw / w - 0.5; compose the crop matrix with its inverse.
        sx, sy = nw / w, nh / h
        to_small = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])
        m = _compose(m, invert(to_small))
    out = cv2.warpAffine(src, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    inside = cv2.warpAffine(np.ones(src.shape[:2], np.float32), m, (side, side), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    if inside.min() < 1.0:
        sigma = max(1.0, pad_blur * side)
        blurred = cv2.GaussianBlur(out, (0, 0), sigma)
        # Fade from the replicated edge into the blur over about a tenth of the side.
        dist = cv2.distanceTransform((inside < 0.5).astype(np.uint8), cv2.DIST_L2, 3)
        weight = np.clip(dist / max(1.0, 0.1 * side), 0.0, 1.0)[..., None] * (inside < 0.999)[..., None]
        out = (out * (1 - weight) + blurred * weight).round().clip(0, 255).astype(np.uint8)
    return out


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 matrix of `outer` after `inner`... i.e. x -> outer(inner(x))."""
    a = np.vstack([outer, [0, 0, 1]])
    b = np.vstack([inner, [0, 0, 1]])
    return (a @ b)[:2]


# --------------------------------------------------------------------------------------------------------------
# Faces


@dataclass
class Face:
    """One face found in a photo: its 68 landmarks and box in photo pixels, and the photo's size (W, H)."""

    landmarks: np.ndarray  # (68, 2) x, y
    box: tuple[float, float, float, float]  # left, top, right, bottom
    photo_size: tuple[int, int]
    source: str = "photo"

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    def align(self, template: FaceTemplate, side: int, photo: np.ndarray | None = None) -> "AlignedFace":
        """The crop of `photo` (uint8 RGB, the photo this face was found in) aligned to `template`."""
        matrix = similarity_to_template(self.landmarks, template, side)
        crop = Image.fromarray(warp_image(photo, matrix, side)) if photo is not None else None
        return AlignedFace(matrix=matrix, side=side, photo_size=self.photo_size, crop=crop, face=self)


@dataclass
class AlignedFace:
    """A face crop and the transforms between the photo's pixels and the crop's (side x side) pixels."""

    matrix: np.ndarray  # photo -> crop
    side: int
    photo_size: tuple[int, int]  # (W, H)
    crop: Image.Image | None = None
    face: Face | None = None

    def to_crop(self, points: Any) -> np.ndarray:
        return apply(self.matrix, points)

    def to_photo(self, points: Any) -> np.ndarray:
        return apply(invert(self.matrix), points)

    def resized(self, side: int) -> "AlignedFace":
        """The same alignment for a crop of another side (the crop image is not carried over)."""
        f = side / self.side
        m = self.matrix * f
        m[:, 2] += 0.5 * f - 0.5  # pixel centres
        return AlignedFace(matrix=m, side=side, photo_size=self.photo_size, crop=None, face=self.face)

    def crop_of(self, photo: np.ndarray, side: int | None = None) -> Image.Image:
        """This alignment applied to another image of the photo's size (e.g. a structure map made from it)."""
        a = self if side is None or side == self.side else self.resized(side)
        return Image.fromarray(warp_image(photo, a.matrix, a.side))

    def paste_back(self, photo: Image.Image | np.ndarray, face_image: Image.Image, feather: float = 0.06) -> Image.Image:
        """`face_image` (any side: it is taken as this crop's frame) warped into the photo's frame and blended over
        `photo` inside the crop's square, with its rim feathered over `feather` of the side, as face-restoration tools
        paste faces back."""
        base = np.asarray(photo.convert("RGB") if isinstance(photo, Image.Image) else photo, np.float32)
        H, W = base.shape[:2]
        if (W, H) != tuple(self.photo_size):
            raise InputError(f"paste_back: the photo is {W}x{H}, the face was found in a "
                             f"{self.photo_size[0]}x{self.photo_size[1]} photo")
        face = np.asarray(face_image.convert("RGB"), np.float32)
        a = self.resized(face.shape[0]) if face.shape[0] != self.side else self
        back = invert(a.matrix)
        warped = cv2.warpAffine(face, back, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        n = face.shape[0]
        rim = max(1, int(round(feather * n)))
        mask = np.zeros((n, n), np.float32)
        mask[rim:n - rim, rim:n - rim] = 1.0
        mask = cv2.GaussianBlur(mask, (0, 0), rim / 2.0)
        alpha = cv2.warpAffine(mask, back, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[..., None]
        out = warped * alpha + base * (1.0 - alpha)
        return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def _model_file(name: str) -> Path:
    from matebit.io import package_data_file

    path = package_data_file("face_recognition_models", "models", name)
    if path is None and Path("/usr/share/dlib", name).is_file():  # Debian's libdlib-data ships them too
        path = Path("/usr/share/dlib", name)
    if path is None:
        raise MissingDependencyError(f"face alignment needs dlib's model file {name}: {_INSTALL}")
    return path


@functools.lru_cache(maxsize=1)
def _dlib_models():
    try:
        import dlib
    except ImportError:
        raise MissingDependencyError(f"face alignment needs dlib: {_INSTALL}") from None
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(_model_file(_PREDICTOR)))


@functools.lru_cache(maxsize=1)
def _cnn_detector():
    import dlib

    return dlib.cnn_face_detection_model_v1(str(_model_file(_CNN_DETECTOR)))


def _confirmed(view: np.ndarray, rect) -> bool:
    """Whether dlib's CNN face detector also sees a face in this HOG box: a crop of 1.6x the box around it, resized so
    the box is about 100 px (the CNN is accurate but slow on a whole photo, so it only settles ties)."""
    h, w = view.shape[:2]
    cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    half = 0.8 * max(rect.width(), rect.height())
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
    x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
    crop = view[y0:y1, x0:x1]
    if min(crop.shape[:2]) < 8:
        return False
    f = 160.0 / max(crop.shape[:2])
    crop = cv2.resize(crop, (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))),
                      interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    return len(_cnn_detector()(crop, 0)) > 0


def _as_rgb(image: ImageSource, name: str) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"{name}: expected a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}")
        return image
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    from matebit.io import open_image

    with open_image(image, name=name) as im:
        return np.asarray(im.convert("RGB"))


def _detect(detector, small: np.ndarray) -> list[tuple[Any, float]]:
    # Upsampling once finds faces down to about 40 px; it is what makes a face of a tenth of the width detectable.
    rects, scores, _ = detector.run(small, 1, 0.0)
    if not len(rects):
        return []
    # The upsampled HOG detector also fires on face-like textures (the astronaut's mission patch). A candidate under a
    # quarter of the best score is not a second face; when several remain, dlib's CNN detector settles which are.
    best = max(scores)
    hits = [(r, s) for r, s in zip(rects, scores) if s >= 0.25 * best]
    if len(hits) > 1:
        confirmed = [(r, s) for r, s in hits if _confirmed(small, r)]
        hits = confirmed or [max(hits, key=lambda hit: hit[1])]
    return hits


def find_faces(image: ImageSource, name: str | None = None) -> list[Face]:
    """Every face dlib finds, largest first, each with its 68 landmarks in the photo's pixels."""
    label = name or (str(image) if isinstance(image, (str, os.PathLike)) else "photo")
    rgb = _as_rgb(image, label)
    detector, predictor = _dlib_models()
    import dlib

    H, W = rgb.shape[:2]
    f = min(1.0, _DETECT_SIDE / max(H, W))
    small = cv2.resize(rgb, (max(1, round(W * f)), max(1, round(H * f))), interpolation=cv2.INTER_AREA) \
        if f < 1 else rgb
    found: list[Face] = []
    for roll in (0.0, *_ROLLS):
        if roll:
            h, w = small.shape[:2]
            rot = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), roll, 1.0)
            view = cv2.warpAffine(small, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            back = invert(rot)
        else:
            view, back = small, None
        hits = _detect(detector, view)
        if not hits:
            continue
        for rect, _score in hits:
            corners = np.array([[rect.left(), rect.top()], [rect.right(), rect.top()],
                                [rect.right(), rect.bottom()], [rect.left(), rect.bottom()]], np.float64)
            if back is not None:
                corners = apply(back, corners)
            corners = (corners + 0.5) / f - 0.5  # small -> full-resolution pixels
            if roll:
                # Fit the landmarks on the full-resolution photo turned the same way, then turn them back.
                full_rot = cv2.getRotationMatrix2D(((W - 1) / 2, (H - 1) / 2), roll, 1.0)
                full = cv2.warpAffine(rgb, full_rot, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                box_rot = apply(full_rot, corners)
                pts = _fit(predictor, dlib, full, box_rot)
                pts = apply(invert(full_rot), pts)
            else:
                pts = _fit(predictor, dlib, rgb, corners)
            x0, y0 = corners.min(0)
            x1, y1 = corners.max(0)
            found.append(Face(pts, (float(x0), float(y0), float(x1), float(y1)), (W, H), label))
        break
    found.sort(key=lambda face: -face.width)
    return found


def _fit(predictor, dlib, rgb: np.ndarray, corners: np.ndarray) -> np.ndarray:
    x0, y0 = corners.min(0)
    x1, y1 = corners.max(0)
    rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
    shape = predictor(rgb, rect)
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float64)


def find_face(image: ImageSource, name: str | None = None, warn=None) -> Face:
    """The largest face of a photo. No face: an InputError naming the photo. Several: the largest, said through
    `warn` (default: one line on stderr)."""
    label = name or (str(image) if isinstance(image, (str, os.PathLike)) else "photo")
    faces = find_faces(image, label)
    if not faces:
        raise InputError(f"{label}: no face found (face models need a photo with a visible, roughly frontal face; "
                         f"pass --no-align / align=False to use the image as it is)")
    if len(faces) > 1:
        say = warn or (lambda msg: print(msg, file=sys.stderr))
        say(f"{label}: {len(faces)} faces found; using the largest")
    return faces[0]
