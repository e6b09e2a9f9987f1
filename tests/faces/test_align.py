"""Face alignment (matebit.align): the template's geometry, warps that keep points and pixels together, dlib
detection on framings users have (small, large, rolled, off-centre faces), and paste-back."""

import math

import numpy as np
import pytest
from PIL import Image

from matebit.align import AlignedFace, FaceTemplate, apply, find_face, find_faces, invert, similarity_to_template, \
    warp_image
from matebit.errors import InputError

pytest.importorskip("dlib")


def _landmarks(eyes=((100.0, 120.0), (160.0, 120.0)), mouth_y=185.0) -> np.ndarray:
    """68 points whose eyes and mouth corners sit where asked (the rest is irrelevant to the template)."""
    p = np.zeros((68, 2))
    p[36:42] = eyes[0]
    p[42:48] = eyes[1]
    cx = (eyes[0][0] + eyes[1][0]) / 2
    p[48] = (cx - 25, mouth_y)
    p[54] = (cx + 25, mouth_y)
    return p


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


def test_template_puts_the_eyes_where_it_says():
    t = FaceTemplate()
    m = similarity_to_template(_landmarks(), t, 200)
    left, right = apply(m, [[100.0, 120.0], [160.0, 120.0]])
    centre = (left + right) / 2
    assert np.allclose(centre, [t.eye_centre[0] * 200 - 0.5, t.eye_centre[1] * 200 - 0.5], atol=1e-6)
    assert abs(left[1] - right[1]) < 1e-6  # level
    # The scale reference is the eye distance here (the mouth is 65 px below: 65 / 1.1 < 60).
    assert np.linalg.norm(right - left) == pytest.approx(t.eye_distance * 200, rel=1e-6)


def test_template_undoes_a_roll_and_a_zoom():
    lm = _landmarks()
    c = lm.mean(0)
    rot = np.array([[math.cos(0.4), -math.sin(0.4)], [math.sin(0.4), math.cos(0.4)]]) * 1.7
    moved = (lm - c) @ rot.T + c + [30, -12]
    a = apply(similarity_to_template(lm, FaceTemplate(), 128), lm)
    b = apply(similarity_to_template(moved, FaceTemplate(), 128), moved)
    assert np.abs(a - b).max() < 1e-6


def test_template_round_trips_and_refuses_nonsense():
    t = FaceTemplate(eye_distance=0.25, eye_centre=(0.5, 0.4))
    assert FaceTemplate.from_dict(t.to_dict()) == t
    with pytest.raises(InputError, match="eye_distance"):
        FaceTemplate(eye_distance=2.0)
    with pytest.raises(InputError, match="unknown key"):
        FaceTemplate.from_dict({"eye_distance": 0.2, "nose": 1})


def test_warp_keeps_points_and_pixels_together():
    # A white dot on black; wherever the matrix takes its centre, the crop's brightest pixel is there.
    img = np.zeros((300, 400, 3), np.uint8)
    img[148:153, 248:253] = 255
    m = similarity_to_template(_landmarks(), FaceTemplate(), 96)
    crop = warp_image(img, m, 96)
    y, x = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
    px, py = apply(m, [[250.0, 150.0]])[0]
    assert abs(x - px) <= 1 and abs(y - py) <= 1
    back = apply(invert(m), [[px, py]])[0]
    assert np.allclose(back, [250.0, 150.0], atol=1e-6)


def test_warp_pads_past_the_photo_without_a_black_frame():
    img = np.full((100, 100, 3), (40, 120, 200), np.uint8)  # a blue photo, much smaller than the crop needs
    lm = _landmarks(eyes=((40.0, 45.0), (60.0, 45.0)), mouth_y=68.0)
    crop = warp_image(img, similarity_to_template(lm, FaceTemplate(eye_distance=0.1), 128), 128)
    assert crop.min(axis=(0, 1)).tolist() == [40, 120, 200] == crop.max(axis=(0, 1)).tolist()


def test_finds_the_astronaut_and_not_her_mission_patch(astronaut):
    faces = find_faces(astronaut)
    assert len(faces) == 1
    left, right = faces[0].landmarks[36:42].mean(0), faces[0].landmarks[42:48].mean(0)
    assert 190 < left[0] < 215 and 235 < right[0] < 260 and 90 < left[1] < 115


def _canvas(face: np.ndarray, width: int, face_share: float, where=(0.3, 0.6), colour=(30, 160, 90)) -> np.ndarray:
    """The astronaut's head scaled so that it spans `face_share` of a `width`-wide coloured photo, off-centre."""
    head = Image.fromarray(face[40:260, 120:340])  # about 90 px of face in 220 px
    s = face_share * width / 90.0
    head = np.asarray(head.resize((max(8, round(220 * s)), max(8, round(220 * s))), Image.LANCZOS))
    h = int(width * 0.75)
    canvas = np.empty((h, width, 3), np.uint8)
    canvas[:] = colour
    x0 = int(where[0] * width - head.shape[1] / 2)
    y0 = int(where[1] * h - head.shape[0] / 2)
    xs, ys = max(0, x0), max(0, y0)
    xe, ye = min(width, x0 + head.shape[1]), min(h, y0 + head.shape[0])
    canvas[ys:ye, xs:xe] = head[ys - y0:ye - y0, xs - x0:xe - x0]
    return canvas


@pytest.mark.parametrize("share", [0.1, 0.3, 0.6])
def test_faces_from_a_tenth_to_most_of_the_width_are_found(astronaut, share):
    photo = _canvas(astronaut, 1200 if share == 0.1 else 600, share, where=(0.35, 0.55) if share < 0.5 else (0.5, 0.5))
    face = find_face(photo, "canvas")
    eye_dist = np.linalg.norm(face.landmarks[42:48].mean(0) - face.landmarks[36:42].mean(0))
    # The astronaut's eyes are about half her face's width apart.
    assert eye_dist == pytest.approx(0.48 * share * photo.shape[1], rel=0.3)


def test_a_rolled_face_is_found_by_turning_the_photo(astronaut):
    import cv2

    m = cv2.getRotationMatrix2D((255.5, 255.5), 38, 1.0)
    rolled = cv2.warpAffine(astronaut, m, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    face = find_face(rolled, "rolled")
    expected = apply(m, find_face(astronaut).landmarks)
    assert np.median(np.linalg.norm(face.landmarks - expected, axis=1)) < 6


def test_no_face_is_an_error_naming_the_photo():
    rng = np.random.default_rng(0)
    noise = (rng.random((200, 300, 3)) * 255).astype(np.uint8)
    with pytest.raises(InputError, match="noise.png: no face found"):
        find_face(noise, "noise.png")


def test_paste_back_keeps_the_photo_outside_the_face(astronaut):
    face = find_face(astronaut)
    aligned = face.align(FaceTemplate(), 128, astronaut)
    red = Image.new("RGB", (128, 128), (255, 0, 0))
    out = np.asarray(aligned.paste_back(Image.fromarray(astronaut), red))
    assert out.shape == astronaut.shape
    # The crop's corners map into the photo; far outside them the photo is untouched, inside the face it is red.
    corners = aligned.to_photo([[0, 0], [127, 0], [127, 127], [0, 127]])
    x0, y0 = corners.min(0)
    x1, y1 = corners.max(0)
    outside = np.ones(astronaut.shape[:2], bool)
    outside[max(0, int(y0) - 2):int(y1) + 3, max(0, int(x0) - 2):int(x1) + 3] = False
    assert np.array_equal(out[outside], astronaut[outside])
    cx, cy = aligned.to_photo([[64, 64]])[0]
    assert out[int(cy), int(cx)].tolist() == [255, 0, 0]


def test_resized_alignment_is_the_same_frame():
    a = AlignedFace(similarity_to_template(_landmarks(), FaceTemplate(), 256), 256, (400, 300))
    b = a.resized(128)
    p = np.array([[130.0, 150.0]])
    assert np.allclose((a.to_crop(p) + 0.5) / 2 - 0.5, b.to_crop(p))


def test_a_false_face_as_large_as_the_real_one_is_not_chosen(astronaut):
    import cv2

    # Turned and zoomed, the astronaut's mission patch passes the HOG detector with a box as large as her face's;
    # the CNN detector settles it.
    m = cv2.getRotationMatrix2D((255.5, 255.5), -19.74, 1.14)
    m[:, 2] += (0.0689 * 512, -0.0534 * 512)
    moved = cv2.warpAffine(astronaut, m, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    face = find_face(moved, "moved", warn=lambda msg: pytest.fail(msg))
    expected = apply(m, find_face(astronaut).landmarks)
    assert np.median(np.linalg.norm(face.landmarks - expected, axis=1)) < 6
