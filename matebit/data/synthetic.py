"""Procedural stylised faces with exact ground truth, for CPU demos and correspondence tests.

A face is GEOMETRY (where each part is: outline, eyes, brows, nose, mouth, hair, ears, neck, clothes, pose)
plus STYLE (how parts look: colours, textures, shading, outline strokes). The two are sampled from separate
random streams, so any geometry can be rendered in any style: `SyntheticFaces.cross(i, j)` is the exact
ground truth for "structure of i, exemplar j", which real data sets never have.

Outputs (numpy, uint8):
  image      (H, W, 3) RGB, the photo-like target x_B;
  structure  (H, W)    part boundaries as lines, the edge-map-like input x_A (depends on geometry only);
  labels     (H, W)    part index into PART_NAMES, background = 0 (geometry only);
  keypoints  name -> (x, y) float pixel coords, pixel centres at integer coordinates (OpenCV convention);
             each lies on the part KEYPOINT_PARTS[name] in `labels`. "left"/"right" are the viewer's.

Only numpy and OpenCV; a 128x128 sample renders in a few milliseconds.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "PART_NAMES", "PART_INDEX", "KEYPOINT_PARTS", "KEYPOINT_NAMES",
    "FaceGeometry", "FaceStyle", "Texture", "Sample", "Move",
    "sample_geometry", "sample_style", "sample_move", "moved", "render", "SyntheticFaces", "write_synthetic_dataset",
]

# Label map values; paint order (back to front) is fixed in `_layout`.
PART_NAMES: list[str] = [
    "background",   # 0
    "hair",         # 1
    "face",         # 2
    "ears",         # 3
    "neck",         # 4
    "clothes",      # 5
    "left_brow",    # 6
    "right_brow",   # 7
    "left_eye",     # 8  (eye white)
    "right_eye",    # 9
    "left_iris",    # 10
    "right_iris",   # 11
    "nose",         # 12
    "lips",         # 13
    "mouth_inner",  # 14 (only for open / smiling mouths)
]
PART_INDEX: dict[str, int] = {n: i for i, n in enumerate(PART_NAMES)}

# Every keypoint and the part it must land on.
KEYPOINT_PARTS: dict[str, str] = {
    "left_eye_center": "left_iris", "left_eye_outer": "left_eye", "left_eye_inner": "left_eye",
    "right_eye_center": "right_iris", "right_eye_inner": "right_eye", "right_eye_outer": "right_eye",
    "left_brow_outer": "left_brow", "left_brow_inner": "left_brow",
    "right_brow_inner": "right_brow", "right_brow_outer": "right_brow",
    "nose_tip": "nose",
    "mouth_left": "lips", "mouth_right": "lips", "upper_lip": "lips", "lower_lip": "lips",
    "chin": "face", "face_left": "face", "face_right": "face",
    "left_ear": "ears", "right_ear": "ears",
    "hair_top": "hair", "neck": "neck",
}
KEYPOINT_NAMES: list[str] = list(KEYPOINT_PARTS)

EXPRESSIONS = ("closed", "open", "smile")

_SS = 2  # supersampling factor for the image (antialiased edges); labels are rasterised at output size


# ----------------------------------------------------------------------------------------------------------
# Geometry


@dataclass
class FaceGeometry:
    """Shape and pose. Local units: face half-height = 1, origin at the face centre, y pointing down."""

    # pose, in canvas fractions / degrees
    cx: float = 0.5
    cy: float = 0.47
    scale: float = 0.25          # face half-height as a fraction of the canvas side
    angle: float = 0.0           # in-plane head rotation, degrees
    # outline
    face_w: float = 0.78         # half-width / half-height of the face ellipse
    jitter: tuple[float, ...] = (0.0,) * 6   # (amplitude, phase) for radial harmonics 2, 3, 4
    chin_taper: float = 0.15     # narrows the lower face
    # eyes
    eye_y: float = -0.1
    eye_dx: float = 0.34
    eye_w: float = 0.16
    eye_h: float = 0.1
    eye_tilt: float = 0.0        # degrees, mirrored between the eyes
    iris_r: float = 0.08
    gaze_x: float = 0.0          # iris offset as a fraction of eye_w / eye_h
    gaze_y: float = 0.0
    # brows
    brow_gap: float = 0.08
    brow_len: float = 0.26
    brow_thick: float = 0.05
    brow_arch: float = 0.04
    brow_tilt: float = 0.0       # degrees, positive raises the outer end
    # nose
    nose_y: float = 0.28         # tip
    nose_w: float = 0.1
    nose_top: float = 0.05       # where the bridge starts, below eye_y
    # mouth
    expression: str = "closed"
    mouth_y: float = 0.58
    mouth_w: float = 0.26
    mouth_open: float = 0.0
    mouth_curve: float = 0.0     # > 0 raises the corners
    lip_upper: float = 0.07
    lip_lower: float = 0.08
    # hair
    hair_volume: float = 0.15
    hair_top: float = 1.25       # how far above the face centre the crown reaches
    hair_length: float = 0.3     # lower end of the back hair, local y
    fringe: float = 0.5          # lower edge of the fringe, local y from the top (0 = no fringe)
    fringe_slope: float = 0.0
    hair_wave: tuple[float, float, float] = (0.0, 6.0, 0.0)  # amplitude, frequency, phase
    # ears, neck, clothes
    ear_size: float = 1.0
    ear_y: float = 0.05
    neck_w: float = 0.32
    neckline: float = 0.3


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _face_halfwidth(g: FaceGeometry, y: float) -> float:
    """Half-width of the (jitter-free) face outline at local height y."""
    y = max(-0.999, min(0.999, y))
    w = g.face_w * math.sqrt(1.0 - y * y)
    return w * (1.0 - g.chin_taper * max(y, 0.0) ** 2)


def sample_geometry(rng: np.random.Generator) -> FaceGeometry:
    """Random face shape and pose; ranges keep parts from colliding so every keypoint stays visible."""
    g = FaceGeometry()
    g.cx = _u(rng, 0.45, 0.55)
    g.cy = _u(rng, 0.44, 0.5)
    g.scale = _u(rng, 0.22, 0.27)
    g.angle = _u(rng, -12, 12)
    g.face_w = _u(rng, 0.68, 0.86)
    g.jitter = tuple(float(v) for k in range(3) for v in (rng.uniform(-0.025, 0.025), rng.uniform(0, 2 * math.pi)))
    g.chin_taper = _u(rng, 0.0, 0.3)

    g.eye_y = _u(rng, -0.2, -0.02)
    g.eye_w = _u(rng, 0.13, 0.19)
    g.eye_h = g.eye_w * _u(rng, 0.5, 0.8)
    half = _face_halfwidth(g, g.eye_y)
    g.eye_dx = _u(rng, max(g.eye_w + 0.07, 0.26), max(g.eye_w + 0.08, min(0.44, half - g.eye_w - 0.1)))
    g.eye_tilt = _u(rng, -10, 10)
    # Iris stays well inside the eye so the corner keypoints (at 0.72 eye_w) remain on the eye white.
    g.iris_r = min(g.eye_h * _u(rng, 0.75, 1.1), 0.4 * g.eye_w)
    g.gaze_x = _u(rng, -0.15, 0.15)
    g.gaze_y = _u(rng, -0.2, 0.2)

    g.brow_gap = _u(rng, 0.05, 0.12)
    g.brow_len = g.eye_w * 2 * _u(rng, 0.8, 1.1)
    g.brow_thick = _u(rng, 0.045, 0.08)
    g.brow_arch = _u(rng, -0.01, 0.06)
    g.brow_tilt = _u(rng, -12, 12)

    g.nose_top = _u(rng, 0.0, 0.1)
    g.nose_y = _u(rng, max(0.2, g.eye_y + 0.3), 0.36)
    g.nose_w = _u(rng, 0.07, 0.13)

    g.expression = EXPRESSIONS[int(rng.integers(len(EXPRESSIONS)))]
    if g.expression == "closed":
        g.mouth_open, g.mouth_curve = 0.0, _u(rng, -0.04, 0.04)
    elif g.expression == "smile":
        g.mouth_open, g.mouth_curve = _u(rng, 0.04, 0.08), _u(rng, 0.08, 0.14)
    else:
        g.mouth_open, g.mouth_curve = _u(rng, 0.1, 0.18), _u(rng, -0.03, 0.04)
    g.lip_upper = _u(rng, 0.065, 0.1)
    g.lip_lower = _u(rng, 0.065, 0.11)
    g.mouth_w = _u(rng, 0.2, 0.32)
    lo = g.nose_y + 0.1 + g.lip_upper + g.mouth_open / 2 + max(g.mouth_curve, 0)
    hi = 0.84 - g.lip_lower - g.mouth_open / 2
    g.mouth_y = _u(rng, lo, max(lo, hi))

    g.hair_volume = _u(rng, 0.05, 0.3)
    g.hair_top = 1.15 + g.hair_volume + _u(rng, 0.0, 0.1)  # clears the jittered face top (<= 1.075)
    g.hair_length = _u(rng, -0.3, 1.6)
    brow_top = g.eye_y - g.eye_h - g.brow_gap - g.brow_thick - abs(g.brow_arch) - 0.1
    # Fringe depth is measured down from the face top (-1); 0 means a bare forehead.
    g.fringe = 0.0 if rng.random() < 0.25 else _u(rng, 0.15, max(0.16, brow_top + 1.0 - 0.1))
    g.fringe_slope = _u(rng, -0.15, 0.15)
    g.hair_wave = (_u(rng, 0.0, 0.04), float(rng.integers(4, 12)), _u(rng, 0, 2 * math.pi))

    g.ear_size = _u(rng, 0.8, 1.2)
    g.ear_y = _u(rng, -0.05, 0.15)
    g.neck_w = _u(rng, 0.26, 0.38)
    g.neckline = _u(rng, 0.1, 0.5)
    return g


# ----------------------------------------------------------------------------------------------------------
# Style


@dataclass
class Texture:
    """A pattern that modulates a region's colour: none | stripes | dots | noise."""

    kind: str = "none"
    amplitude: float = 0.0    # relative brightness change
    frequency: float = 8.0    # periods per canvas side
    angle: float = 0.0        # radians (stripes, dots lattice)
    phase: float = 0.0
    seed: int = 0             # noise field


@dataclass
class FaceStyle:
    """Appearance. Colours are RGB floats in [0, 1]."""

    colors: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    textures: dict[str, Texture] = field(default_factory=dict)  # keys: background, hair, skin, clothes
    light_angle: float = 0.0      # direction of the linear shading gradient, radians
    shading: float = 0.15         # strength of the gradient
    rim: float = 0.15             # darkening of the face towards its outline
    stroke_width: int = 1         # outline width in output pixels (0 = none)
    pupil: float = 0.5            # pupil radius / iris radius
    highlight: bool = True        # catch-light in the eyes


STYLE_COLORS = ("background", "hair", "skin", "ears", "neck", "nose", "clothes", "brows", "eye_white",
                "iris", "pupil", "lips", "mouth_inner", "stroke")
TEXTURE_REGIONS = {"background": ("background",), "hair": ("hair",), "skin": ("face", "ears", "neck", "nose"),
                   "clothes": ("clothes",)}


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """h in degrees, s and v in [0, 1] -> RGB in [0, 1]."""
    c = v * s
    hp = (h % 360) / 60.0
    x = c * (1 - abs(hp % 2 - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(hp) % 6]
    return np.array(rgb) + (v - c)


def _distinct(rng: np.random.Generator, draw, others: list[np.ndarray], min_dist: float) -> np.ndarray:
    """Rejection-sample a colour at least `min_dist` (RGB Euclidean) from `others`; deterministic in rng."""
    best, best_d = None, -1.0
    for _ in range(30):
        c = draw()
        d = min((float(np.linalg.norm(c - o)) for o in others), default=1.0)
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _texture(rng: np.random.Generator, allow_none: float) -> Texture:
    if rng.random() < allow_none:
        return Texture()
    kind = ("stripes", "dots", "noise")[int(rng.integers(3))]
    return Texture(kind=kind, amplitude=_u(rng, 0.08, 0.25), frequency=_u(rng, 5, 16),
                   angle=_u(rng, 0, math.pi), phase=_u(rng, 0, 2 * math.pi), seed=int(rng.integers(2**31)))


def sample_style(rng: np.random.Generator) -> FaceStyle:
    """Random palette, textures, shading and stroke; independent of any geometry."""
    if rng.random() < 0.6:   # natural-ish skin
        skin_draw = lambda: _hsv(_u(rng, 12, 38), _u(rng, 0.2, 0.6), _u(rng, 0.45, 0.97))  # noqa: E731
    else:                    # fantasy skin
        skin_draw = lambda: _hsv(_u(rng, 0, 360), _u(rng, 0.2, 0.6), _u(rng, 0.55, 0.95))  # noqa: E731
    any_col = lambda smin=0.2, smax=0.9, vmin=0.2, vmax=0.95: _hsv(  # noqa: E731
        _u(rng, 0, 360), _u(rng, smin, smax), _u(rng, vmin, vmax))

    skin = skin_draw()
    hair = _distinct(rng, lambda: any_col(0.1, 0.9, 0.1, 0.9), [skin], 0.35)
    bg = _distinct(rng, lambda: any_col(0.05, 0.7, 0.3, 1.0), [skin, hair], 0.35)
    clothes = _distinct(rng, lambda: any_col(0.2, 1.0, 0.2, 0.95), [skin, bg, hair], 0.3)
    shade = lambda f: np.clip(skin * f, 0, 1)  # noqa: E731
    brows = np.clip(hair * _u(rng, 0.5, 0.9), 0, 1) if rng.random() < 0.7 else \
        _distinct(rng, lambda: any_col(0.1, 0.9, 0.05, 0.5), [skin], 0.3)
    eye_white = _hsv(_u(rng, 0, 360), _u(rng, 0.0, 0.12), _u(rng, 0.88, 1.0))
    iris = _distinct(rng, lambda: any_col(0.4, 1.0, 0.25, 0.85), [eye_white], 0.4)
    lips = _distinct(rng, lambda: _hsv(_u(rng, -30, 20) if rng.random() < 0.7 else _u(rng, 0, 360),
                                       _u(rng, 0.35, 0.8), _u(rng, 0.4, 0.9)), [skin], 0.25)
    colors = {
        "background": bg, "hair": hair, "skin": skin, "ears": shade(_u(rng, 0.88, 0.97)),
        "neck": shade(_u(rng, 0.75, 0.9)), "nose": shade(_u(rng, 0.8, 0.92)), "clothes": clothes,
        "brows": brows, "eye_white": eye_white, "iris": iris,
        "pupil": _hsv(_u(rng, 0, 360), _u(rng, 0, 0.5), _u(rng, 0.0, 0.15)),
        "lips": lips, "mouth_inner": _hsv(_u(rng, -20, 20), _u(rng, 0.3, 0.8), _u(rng, 0.1, 0.35)),
        "stroke": _hsv(_u(rng, 0, 360), _u(rng, 0, 0.6), _u(rng, 0.0, 0.3)),
    }
    colors = {k: tuple(float(x) for x in np.clip(v, 0, 1)) for k, v in colors.items()}
    textures = {"background": _texture(rng, 0.3), "hair": _texture(rng, 0.4),
                "skin": _texture(rng, 0.7), "clothes": _texture(rng, 0.3)}
    return FaceStyle(colors=colors, textures=textures, light_angle=_u(rng, 0, 2 * math.pi),
                     shading=_u(rng, 0.0, 0.3), rim=_u(rng, 0.0, 0.3), stroke_width=int(rng.choice([0, 1, 1, 2])),
                     pupil=_u(rng, 0.35, 0.65), highlight=bool(rng.random() < 0.6))


# ----------------------------------------------------------------------------------------------------------
# Layout: geometry -> polygons and keypoints in local units


def _ellipse(cx, cy, ax, ay, rot_deg=0.0, n=40, t0=0.0, t1=2 * math.pi) -> np.ndarray:
    t = np.linspace(t0, t1, n, endpoint=False if t1 - t0 >= 2 * math.pi - 1e-9 else True)
    x, y = ax * np.cos(t), ay * np.sin(t)
    r = math.radians(rot_deg)
    return np.stack([cx + x * math.cos(r) - y * math.sin(r), cy + x * math.sin(r) + y * math.cos(r)], 1)


def _face_outline(g: FaceGeometry, n: int = 72) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    r = 1.0 + sum(g.jitter[2 * k] * np.cos((k + 2) * t + g.jitter[2 * k + 1]) for k in range(3))
    x, y = g.face_w * np.cos(t) * r, np.sin(t) * r
    x = x * (1.0 - g.chin_taper * np.clip(y, 0, None) ** 2)
    return np.stack([x, y], 1)


def _layout(g: FaceGeometry):
    """Polygons in paint order as (label, points, clip_label or None) plus local keypoints."""
    polys: list[tuple[int, np.ndarray, int | None]] = []
    P = PART_INDEX
    kp: dict[str, tuple[float, float]] = {}

    # Back hair: crown arc above the face, sides down to hair_length, with a wavy rim.
    ax = g.face_w * (1.08 + g.hair_volume)
    crown_c = -0.12
    ay = g.hair_top + crown_c
    arc = _ellipse(0, crown_c, ax, ay, 0, 48, math.pi, 2 * math.pi)
    bottom = max(g.hair_length, crown_c + 0.05)
    side = ax * (0.92 if g.hair_length > 0.5 else 1.0)
    tail = np.array([[side, bottom], [side * 0.6, bottom + 0.12], [-side * 0.6, bottom + 0.12], [-side, bottom]])
    hair = np.concatenate([arc, np.array([[ax, crown_c]]), tail, np.array([[-ax, crown_c]])])
    amp, freq, ph = g.hair_wave
    ang = np.arctan2(hair[:, 1] - crown_c, hair[:, 0])
    centre = np.array([0.0, crown_c])
    hair = centre + (hair - centre) * (1 + amp * np.sin(freq * ang + ph))[:, None]
    polys.append((P["hair"], hair, None))
    crown = ay * (1 + amp * math.sin(-freq * math.pi / 2 + ph))  # wavy radius straight above the centre
    kp["hair_top"] = (0.0, (crown_c - crown - 1.08) / 2)  # halfway between crown and face top

    # Clothes: shoulders below the neck, then the neck with a V neckline cut over them.
    sh_y = 1.45
    clothes = np.array([[-3.0, sh_y + 0.9], [-1.6, sh_y + 0.35], [-0.7, sh_y], [0.7, sh_y], [1.6, sh_y + 0.35],
                        [3.0, sh_y + 0.9], [3.0, 5.0], [-3.0, 5.0]])
    polys.append((P["clothes"], clothes, None))
    nw = g.neck_w
    neck = np.array([[-nw, 0.4], [nw, 0.4], [nw, sh_y + 0.05], [0.0, sh_y + g.neckline], [-nw, sh_y + 0.05]])
    polys.append((P["neck"], neck, None))
    kp["neck"] = (0.0, 1.2)

    # Ears: half hidden behind the face.
    eax, eay = 0.12 * g.ear_size, 0.19 * g.ear_size
    ex = _face_halfwidth(g, g.ear_y)
    for sgn, name in ((-1, "left_ear"), (1, "right_ear")):
        polys.append((P["ears"], _ellipse(sgn * ex, g.ear_y, eax, eay, 0, 28), None))
        kp[name] = (sgn * (ex + 0.6 * eax), g.ear_y)

    polys.append((P["face"], _face_outline(g), None))
    kp["chin"] = (0.0, 0.9)
    fy = g.nose_y
    for sgn, name in ((-1, "face_left"), (1, "face_right")):
        kp[name] = (sgn * (_face_halfwidth(g, fy) - 0.1), fy)

    # Fringe over the forehead, below the crown, with a sloped and zig-zag lower edge.
    if g.fringe > 0:
        low = -1.0 + g.fringe
        n = 12
        xs = np.linspace(ax * 1.0, -ax * 1.0, n)
        edge_y = low + g.fringe_slope * xs / ax + 0.04 * (np.arange(n) % 2)
        edge_y = np.minimum(edge_y, low + 0.02)  # never drop below the brow-safe line
        top = _ellipse(0, crown_c, ax * 0.98, ay * 0.95, 0, 24, math.pi, 2 * math.pi)
        fringe = np.concatenate([top, np.stack([xs, edge_y], 1)])
        polys.append((P["hair"], fringe, None))

    # Nose: a narrow bridge widening to a rounded tip.
    top_y = g.eye_y + g.nose_top
    tip_r = g.nose_w
    bulb = _ellipse(0, g.nose_y - 0.05, tip_r, 0.07, 0, 20, 0, math.pi)  # lower half of the tip
    nose = np.concatenate([np.array([[-0.025, top_y], [0.025, top_y], [tip_r * 0.8, g.nose_y - 0.1]]),
                           bulb, np.array([[-tip_r * 0.8, g.nose_y - 0.1]])])
    polys.append((P["nose"], nose, None))
    kp["nose_tip"] = (0.0, g.nose_y - 0.02)

    # Brows: tapered arcs above the eyes.
    for sgn, side in ((-1, "left"), (1, "right")):
        cx = sgn * g.eye_dx
        cy = g.eye_y - g.eye_h - g.brow_gap - g.brow_thick / 2
        tilt = math.tan(math.radians(g.brow_tilt))

        def centre_line(t, cx=cx, cy=cy, sgn=sgn, tilt=tilt):   # t = 0 inner end, 1 outer end
            return (cx + sgn * (t - 0.5) * g.brow_len,
                    cy - g.brow_arch * 4 * t * (1 - t) - (t - 0.5) * g.brow_len * tilt)

        t = np.linspace(0, 1, 12)
        bx, by = centre_line(t)
        th = g.brow_thick * (1.0 - 0.4 * t) / 2
        brow = np.concatenate([np.stack([bx, by - th], 1), np.stack([bx, by + th], 1)[::-1]])
        polys.append((P[f"{side}_brow"], brow, None))
        kp[f"{side}_brow_inner"] = tuple(float(v) for v in centre_line(0.15))
        kp[f"{side}_brow_outer"] = tuple(float(v) for v in centre_line(0.85))

    # Eyes: ellipses; irises are clipped to the eye white.
    irises = []
    for sgn, side in ((-1, "left"), (1, "right")):
        cx, tilt = sgn * g.eye_dx, -sgn * g.eye_tilt
        polys.append((P[f"{side}_eye"], _ellipse(cx, g.eye_y, g.eye_w, g.eye_h, tilt, 36), None))
        r = math.radians(tilt)
        ux, uy = math.cos(r), math.sin(r)
        ix = cx + g.gaze_x * g.eye_w * ux - g.gaze_y * g.eye_h * uy
        iy = g.eye_y + g.gaze_x * g.eye_w * uy + g.gaze_y * g.eye_h * ux
        polys.append((P[f"{side}_iris"], _ellipse(ix, iy, g.iris_r, g.iris_r, 0, 24), P[f"{side}_eye"]))
        irises.append((ix, iy, g.iris_r, P[f"{side}_iris"]))
        kp[f"{side}_eye_center"] = (ix, iy)
        # Outer corner points away from the nose: -x for the left eye, +x for the right.
        kp[f"{side}_eye_outer"] = (cx + sgn * 0.72 * g.eye_w * ux, g.eye_y + sgn * 0.72 * g.eye_w * uy)
        kp[f"{side}_eye_inner"] = (cx - sgn * 0.72 * g.eye_w * ux, g.eye_y - sgn * 0.72 * g.eye_w * uy)

    # Mouth: lips between outer curves; an opening between inner curves when open.
    xs = np.linspace(-1, 1, 25)
    s = np.sqrt(np.clip(1 - xs ** 2, 0, 1))
    base = g.mouth_y - g.mouth_curve * xs ** 2
    ui, li = base - g.mouth_open * s / 2, base + g.mouth_open * s / 2
    uo, lo = ui - g.lip_upper * s ** 0.5, li + g.lip_lower * s ** 0.5
    X = xs * g.mouth_w
    lips = np.concatenate([np.stack([X, uo], 1), np.stack([X, lo], 1)[::-1]])
    polys.append((P["lips"], lips, None))
    if g.mouth_open > 0:
        inner = np.concatenate([np.stack([X, ui], 1), np.stack([X, li], 1)[::-1]])
        polys.append((P["mouth_inner"], inner, None))

    def lip_mid(x: float, upper: bool) -> tuple[float, float]:
        ss = math.sqrt(max(0.0, 1 - x * x))
        b = g.mouth_y - g.mouth_curve * x * x
        if upper:
            return (x * g.mouth_w, b - g.mouth_open * ss / 2 - g.lip_upper * ss ** 0.5 / 2)
        return (x * g.mouth_w, b + g.mouth_open * ss / 2 + g.lip_lower * ss ** 0.5 / 2)

    # Corners: mid-lip of a closed mouth (both lips together are thick enough), else mid upper lip.
    if g.mouth_open > 0:
        kp["mouth_left"], kp["mouth_right"] = lip_mid(-0.75, True), lip_mid(0.75, True)
    else:
        for x, name in ((-0.75, "mouth_left"), (0.75, "mouth_right")):
            (ux, uy), (_, ly) = lip_mid(x, True), lip_mid(x, False)
            kp[name] = (ux, (uy + ly) / 2)
    kp["upper_lip"] = lip_mid(0.0, True)
    kp["lower_lip"] = lip_mid(0.0, False)
    return polys, {k: kp[k] for k in KEYPOINT_NAMES}, irises


# ----------------------------------------------------------------------------------------------------------
# Rendering


@dataclass
class Sample:
    image: np.ndarray       # (H, W, 3) uint8 RGB
    structure: np.ndarray   # (H, W) uint8, 255 on part boundaries
    labels: np.ndarray      # (H, W) uint8 indices into PART_NAMES
    keypoints: dict[str, tuple[float, float]]
    geometry: FaceGeometry
    style: FaceStyle


def _to_pixels(g: FaceGeometry, size: int, pts: np.ndarray) -> np.ndarray:
    """Local units -> pixel coords with pixel centres at integers (the canvas spans [-0.5, size-0.5])."""
    r = math.radians(g.angle)
    c, s = math.cos(r), math.sin(r)
    k = g.scale * size
    x = g.cx * size - 0.5 + k * (c * pts[:, 0] - s * pts[:, 1])
    y = g.cy * size - 0.5 + k * (s * pts[:, 0] + c * pts[:, 1])
    return np.stack([x, y], 1)


_SHIFT = 4  # fractional bits for cv2.fillPoly, for sub-pixel accurate polygons


def _rasterise(g: FaceGeometry, polys, size: int, ss: int = 1) -> np.ndarray:
    """Label map of the polygons at `ss` x the output resolution (pixel centres rescaled accordingly)."""
    n = size * ss
    lab = np.zeros((n, n), np.uint8)
    for label, pts, clip in polys:
        p = (_to_pixels(g, size, pts) + 0.5) * ss - 0.5
        p = np.round(p * (1 << _SHIFT)).astype(np.int32)
        if clip is None:
            cv2.fillPoly(lab, [p], int(label), lineType=cv2.LINE_8, shift=_SHIFT)
        else:
            tmp = np.zeros_like(lab)
            cv2.fillPoly(tmp, [p], 1, lineType=cv2.LINE_8, shift=_SHIFT)
            lab[(tmp > 0) & (lab == clip)] = label
    return lab


def _boundaries(lab: np.ndarray) -> np.ndarray:
    """True where a pixel's 4-neighbourhood holds another label (a 2-pixel-wide line per boundary)."""
    b = np.zeros(lab.shape, bool)
    dy = lab[1:] != lab[:-1]
    dx = lab[:, 1:] != lab[:, :-1]
    b[1:] |= dy
    b[:-1] |= dy
    b[:, 1:] |= dx
    b[:, :-1] |= dx
    return b


def _pattern(t: Texture, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A texture in about [-1, 1] at the points (x, y), given in units of the canvas side (size independent)."""
    if t.kind == "stripes":
        u = x * math.cos(t.angle) + y * math.sin(t.angle)
        return np.sin(2 * math.pi * t.frequency * u + t.phase).astype(np.float32)
    if t.kind == "dots":
        c, s = math.cos(t.angle), math.sin(t.angle)
        a = (x * c + y * s) * t.frequency + t.phase / (2 * math.pi)
        b = (-x * s + y * c) * t.frequency
        d = np.hypot(a - np.round(a), b - np.round(b))
        return np.where(d < 0.25, 1.0, -0.3).astype(np.float32)
    if t.kind == "noise":
        k = max(2, int(round(t.frequency)))
        coarse = np.random.default_rng(t.seed).uniform(-1, 1, (k, k)).astype(np.float32)
        field = cv2.resize(coarse, (_NOISE_RES, _NOISE_RES), interpolation=cv2.INTER_CUBIC)
        mx, my = (x * _NOISE_RES - 0.5).astype(np.float32), (y * _NOISE_RES - 0.5).astype(np.float32)
        return cv2.remap(field, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).clip(-1, 1)
    return np.zeros(np.shape(x), np.float32)


_NOISE_RES = 256  # resolution at which a noise texture is laid out before it is sampled
_REFERENCE_POSE = FaceGeometry()  # the face-anchored layout is drawn as if the face had the default pose


def _face_anchored(g: FaceGeometry, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel of an n x n canvas, where it lies on the face (its face-local position) expressed in canvas
    units of a face in the reference pose: textures and light drawn there move, zoom and turn with the face, as they
    would on a real one, so a moved exemplar carries its appearance along with its parts."""
    v = (np.arange(n, dtype=np.float32) + 0.5) / n
    cx, cy = v[None, :] - g.cx, v[:, None] - g.cy
    r = math.radians(g.angle)
    c, s = math.cos(r), math.sin(r)
    lx, ly = (c * cx + s * cy) / g.scale, (-s * cx + c * cy) / g.scale  # the inverse of _to_pixels
    ref = _REFERENCE_POSE
    return (ref.cx + ref.scale * lx).astype(np.float32), (ref.cy + ref.scale * ly).astype(np.float32)


def _snap(labels: np.ndarray, name: str, xy: tuple[float, float]) -> tuple[float, float]:
    """Move a keypoint to the nearest pixel of its part if rasterisation left it just outside (tiny sizes)."""
    part = PART_INDEX[KEYPOINT_PARTS[name]]
    h, w = labels.shape
    xi, yi = int(round(xy[0])), int(round(xy[1]))
    if 0 <= xi < w and 0 <= yi < h and labels[yi, xi] == part:
        return xy
    ys, xs = np.nonzero(labels == part)
    if len(xs) == 0:
        return xy
    i = int(np.argmin((xs - xy[0]) ** 2 + (ys - xy[1]) ** 2))
    return (float(xs[i]), float(ys[i]))


def render(geometry: FaceGeometry, style: FaceStyle, size: int = 128, snap_keypoints: bool = True) -> Sample:
    """Draw one face. `labels`, `structure` and `keypoints` depend on geometry only; colours on style only."""
    g, st = geometry, style
    polys, kp_local, irises = _layout(g)
    labels = _rasterise(g, polys, size)

    n = size * _SS
    lab_ss = _rasterise(g, polys, size, _SS)
    edges_ss = _boundaries(lab_ss)
    structure = cv2.resize(edges_ss.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    structure = np.clip(structure * 2.0 * 255.0, 0, 255).round().astype(np.uint8)

    # Flat colours per label.
    C = st.colors
    label_color = {"background": "background", "hair": "hair", "face": "skin", "ears": "ears", "neck": "neck",
                   "clothes": "clothes", "left_brow": "brows", "right_brow": "brows", "left_eye": "eye_white",
                   "right_eye": "eye_white", "left_iris": "iris", "right_iris": "iris", "nose": "nose",
                   "lips": "lips", "mouth_inner": "mouth_inner"}
    palette = np.array([C[label_color[p]] for p in PART_NAMES], np.float32)
    img = palette[lab_ss]

    # Textures multiply each region's colour: the background's in canvas coordinates, the face's, hair's and
    # clothes' anchored to the face (they move with its pose).
    canvas_xy = np.meshgrid((np.arange(n, dtype=np.float32) + 0.5) / n, (np.arange(n, dtype=np.float32) + 0.5) / n)
    face_xy = _face_anchored(g, n)
    gain = np.ones((n, n), np.float32)
    for region, parts in TEXTURE_REGIONS.items():
        t = st.textures.get(region)
        if t is None or t.kind == "none" or t.amplitude == 0:
            continue
        mask = np.isin(lab_ss, [PART_INDEX[p] for p in parts])
        xy = canvas_xy if region == "background" else face_xy
        gain = np.where(mask, gain * (1.0 + t.amplitude * _pattern(t, *xy)), gain)

    # Face rim shading (darker towards the outline) and a linear light gradient that turns with the face.
    if st.rim > 0:
        face = (lab_ss == PART_INDEX["face"]).astype(np.uint8)
        dist = cv2.distanceTransform(face, cv2.DIST_L2, 3)
        gain = np.where(face > 0, gain * (1.0 - st.rim * np.exp(-dist / (0.3 * g.scale * n))), gain)
    if st.shading > 0:
        fx, fy = face_xy
        u = (fx - 0.5) * math.cos(st.light_angle) + (fy - 0.5) * math.sin(st.light_angle)
        gain = gain * (1.0 + st.shading * 1.4 * u)
    img *= gain[..., None]

    # Pupils and catch-lights sit at the iris centres (geometry); their look comes from the style.
    for ix, iy, ir, lab_iris in irises:
        (px, py), = _to_pixels(g, size, np.array([[ix, iy]]))
        px, py = (px + 0.5) * _SS - 0.5, (py + 0.5) * _SS - 0.5
        rr = ir * g.scale * size * _SS
        x0, x1 = max(0, int(px - rr - 2)), min(n, int(px + rr + 3))
        y0, y1 = max(0, int(py - rr - 2)), min(n, int(py + rr + 3))
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        on = lab_ss[y0:y1, x0:x1] == lab_iris
        win = img[y0:y1, x0:x1]
        win[on & ((xx - px) ** 2 + (yy - py) ** 2 <= (st.pupil * rr) ** 2)] = C["pupil"]
        if st.highlight:
            hx, hy = px - 0.35 * rr, py - 0.35 * rr
            win[on & ((xx - hx) ** 2 + (yy - hy) ** 2 <= (0.25 * rr) ** 2)] = (1.0, 1.0, 1.0)

    if st.stroke_width > 0:
        e = edges_ss
        if st.stroke_width > 1:
            e = cv2.dilate(e.astype(np.uint8), np.ones((2 * st.stroke_width - 1,) * 2, np.uint8)) > 0
        img[e] = C["stroke"]

    img = cv2.resize(np.clip(img, 0, 1), (size, size), interpolation=cv2.INTER_AREA)
    image = (img * 255.0).round().astype(np.uint8)

    pix = _to_pixels(g, size, np.array(list(kp_local.values()), np.float64))
    kps = {k: (float(x), float(y)) for k, (x, y) in zip(kp_local, pix)}
    if snap_keypoints:
        kps = {k: _snap(labels, k, xy) for k, xy in kps.items()}
    return Sample(image=image, structure=structure, labels=labels, keypoints=kps, geometry=g, style=st)


# ----------------------------------------------------------------------------------------------------------
# Moved exemplars: the same face under another pose, so that copying it or matching each point to the same
# place (the identity map) fails, while the ground truth stays exact.


@dataclass(frozen=True)
class Move:
    """A similarity change of a face's pose: shift (canvas fractions), zoom factor, extra in-plane rotation."""

    dx: float = 0.0
    dy: float = 0.0
    zoom: float = 1.0
    angle: float = 0.0


def moved(g: FaceGeometry, move: Move) -> FaceGeometry:
    """The geometry with its pose changed by `move` (shape and expression unchanged)."""
    from dataclasses import replace

    return replace(g, cx=g.cx + move.dx, cy=g.cy + move.dy, scale=g.scale * move.zoom, angle=g.angle + move.angle)


def sample_move(rng: np.random.Generator, shift: float = 0.1, zoom: float = 0.2, angle: float = 20.0) -> Move:
    """Uniform in +-shift, [1 - zoom, 1 + zoom] (log-uniform) and +-angle degrees."""
    z = math.exp(rng.uniform(math.log(1 - zoom), math.log(1 + zoom)))
    return Move(dx=_u(rng, -shift, shift), dy=_u(rng, -shift, shift), zoom=z, angle=_u(rng, -angle, angle))


# ----------------------------------------------------------------------------------------------------------
# Collections


def _rng(seed: int, index: int, tag: str) -> np.random.Generator:
    # crc32 is stable across processes (unlike hash()), so streams are reproducible everywhere.
    return np.random.default_rng([int(seed), int(index), zlib.crc32(tag.encode())])


class SyntheticFaces:
    """n faces; sample i = geometry from stream (seed, i, "geom") in style from (seed, i, "style")."""

    def __init__(self, n: int, size: int = 128, seed: int = 0):
        if n < 1 or size < 16:
            raise ValueError(f"SyntheticFaces needs n >= 1 and size >= 16, got n={n}, size={size}")
        self.n, self.size, self.seed = int(n), int(size), int(seed)

    def __len__(self) -> int:
        return self.n

    def _check(self, i: int) -> int:
        if not -self.n <= i < self.n:
            raise IndexError(f"SyntheticFaces index {i} out of range for {self.n} samples")
        return i % self.n

    def geometry(self, i: int) -> FaceGeometry:
        return sample_geometry(_rng(self.seed, self._check(i), "geom"))

    def style(self, i: int) -> FaceStyle:
        return sample_style(_rng(self.seed, self._check(i), "style"))

    def __getitem__(self, i: int) -> Sample:
        return self.cross(i, i)

    def cross(self, i: int, j: int) -> Sample:
        """Geometry of i in the style of j: the exact target for structure i with exemplar j."""
        return render(self.geometry(i), self.style(j), self.size)

    def keypoints(self, i: int) -> dict[str, tuple[float, float]]:
        return self[i].keypoints

    def moved_exemplar(self, j: int, rng: np.random.Generator, max_tries: int = 50, **move_ranges) -> Sample:
        """Face j under a random pose change (`sample_move`), redrawn until every keypoint stays on the canvas
        with a margin of one 1/16 of the side, so each has an exact, visible counterpart."""
        margin = self.size / 16
        for _ in range(max_tries):
            move = sample_move(rng, **move_ranges)
            sample = render(moved(self.geometry(j), move), self.style(j), self.size)
            pts = np.array(list(sample.keypoints.values()))
            if (pts >= margin).all() and (pts <= self.size - 1 - margin).all():
                return sample
        raise RuntimeError(f"no pose change of face {j} within {max_tries} draws keeps every keypoint visible")

    def correspondence(self, i: int, j: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Matched keypoint names and their (K, 2) pixel (x, y) positions in sample i and in sample j."""
        ki, kj = self[i].keypoints, self[j].keypoints
        names = [k for k in KEYPOINT_NAMES if k in ki and k in kj]
        return (names, np.array([ki[k] for k in names], np.float64).reshape(-1, 2),
                np.array([kj[k] for k in names], np.float64).reshape(-1, 2))


def write_synthetic_dataset(root: str | Path, n_train: int, n_val: int, size: int = 128, seed: int = 0,
                            exemplars_per_image: int = 3) -> Path:
    """Write SyntheticFaces(n_train + n_val) in the paired-folder layout read by PairedFolderDataset.

    root/images/<stem>.png (x_B), structure/<stem>.png (x_A), labels/<stem>.png, keypoints/<stem>.json,
    train.txt, val.txt, pairs.txt (each stem followed by `exemplars_per_image` other stems of its split,
    chosen deterministically), meta.json (seed, size, PART_NAMES).
    """
    from PIL import Image

    n = n_train + n_val
    if n_train < 1 or n_val < 0:
        raise ValueError(f"write_synthetic_dataset needs n_train >= 1 and n_val >= 0, got {n_train}, {n_val}")
    root = Path(root)
    for sub in ("images", "structure", "labels", "keypoints"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    faces = SyntheticFaces(n, size, seed)
    stems = [f"{i:06d}" for i in range(n)]
    for i, stem in enumerate(stems):
        s = faces[i]
        Image.fromarray(s.image).save(root / "images" / f"{stem}.png")
        Image.fromarray(s.structure).save(root / "structure" / f"{stem}.png")
        Image.fromarray(s.labels).save(root / "labels" / f"{stem}.png")
        (root / "keypoints" / f"{stem}.json").write_text(json.dumps(s.keypoints, indent=0))
    splits = {"train": stems[:n_train], "val": stems[n_train:]}
    rng = _rng(seed, 0, "pairs")
    lines = []
    for members in splits.values():
        for k, stem in enumerate(members):
            others = [m for m in members if m != stem]
            if not others:
                continue
            pick = rng.choice(len(others), size=min(exemplars_per_image, len(others)), replace=False)
            lines.append(" ".join([stem] + [others[p] for p in pick]))
    (root / "train.txt").write_text("".join(s + "\n" for s in splits["train"]))
    (root / "val.txt").write_text("".join(s + "\n" for s in splits["val"]))
    (root / "pairs.txt").write_text("".join(line + "\n" for line in lines))
    (root / "meta.json").write_text(json.dumps({"generator": "matebit.data.synthetic", "seed": seed,
                                                "size": size, "n_train": n_train, "n_val": n_val,
                                                "part_names": PART_NAMES}, indent=1))
    return root
