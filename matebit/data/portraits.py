"""Aligned, varied training portraits from studio photos (the face recipe's data; not in the paper).

A face model trained on one studio's photos learns that studio: one framing, one light, one grey backdrop, white
T-shirts. Given a user's portrait it then paints the studio back in. The variants made here keep each photo's
person and vary what the world varies, before the structure map is computed, so that map and image always agree:

* backdrop: kept, a smooth colour field, or a blurred photo (scikit-image's sample images, plus any folder given);
* clothes: kept, or re-dyed (a random colour times the garment's own shading, so folds stay);
* light: white balance, exposure, contrast, gamma and saturation of the whole photo, and apart from it the person's
  own saturation, hue and brightness (the studio set's skin is paler and greyer than most photos');
* framing: the face aligned to the model's template (`matebit.align`), then moved by a random similarity (zoom,
  small roll, shift), sometimes from a tight crop whose missing borders the alignment pads, as a selfie's are;
* quality: sometimes a JPEG round trip or a slight blur.

Backdrop and clothes come from `portrait_layers`: GrabCut (OpenCV) seeded by the landmarks (face and neck are the
person for sure, the flood-filled border region probably backdrop), then a second GrabCut that separates clothes
from backdrop, seeded on both shoulders. A flood fill alone leaked into light necks and faces, so that recolouring
the target painted skin with backdrop colours.

Every random choice comes from one numpy Generator, so a variant is a pure function of (photo, seed).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from matebit.align import FaceTemplate, apply, similarity_to_template, warp_image

from .augment import border_region

__all__ = ["PortraitLayers", "VariantSettings", "portrait_layers", "backdrop_pool", "make_variant"]


@dataclass
class PortraitLayers:
    """Boolean (H, W) masks of a portrait: its backdrop and its clothes (the rest is the person)."""

    backdrop: np.ndarray
    clothes: np.ndarray


def _face_geometry(lm: np.ndarray) -> tuple[float, np.ndarray]:
    return float(np.linalg.norm(lm[16] - lm[0])), lm[8]


def portrait_layers(rgb: np.ndarray, landmarks68: np.ndarray) -> PortraitLayers:
    """Backdrop and clothes of an (H, W, 3) uint8 head-and-shoulders photo with its 68 landmarks (module docstring)."""
    h, w = rgb.shape[:2]
    lm = np.asarray(landmarks68, np.float64)
    fw, chin = _face_geometry(lm)
    yy, xx = np.mgrid[0:h, 0:w]

    # The person for sure: the face up to above the brows, and the neck below the jaw.
    person = np.zeros((h, w), np.uint8)
    brows = lm[17:27].copy()
    brows[:, 1] -= 0.25 * fw
    cv2.fillConvexPoly(person, cv2.convexHull(np.vstack([lm[0:17], brows]).round().astype(np.int32)), 1)
    neck = np.vstack([lm[4:13], lm[12:3:-1] + [0.0, 0.5 * fw]])
    neck[9:, 0] = chin[0] + (neck[9:, 0] - chin[0]) * 0.85
    cv2.fillPoly(person, [neck.round().astype(np.int32)], 1)
    person = person.astype(bool)

    # Backdrop for sure: the border region along the top, and along the sides above the chin.
    fill = border_region(rgb)
    band = (yy < max(2, h // 25)) | (((xx < max(2, w // 25)) | (xx >= w - max(2, w // 25))) & (yy < chin[1]))
    torso = np.zeros((h, w), np.uint8)
    base = chin[1] + 0.45 * fw
    cv2.fillPoly(torso, [np.array([[chin[0] - 0.45 * fw, base], [chin[0] + 0.45 * fw, base],
                                   [chin[0] + 1.4 * fw, h], [chin[0] - 1.4 * fw, h]]).round().astype(np.int32)], 1)
    gc = np.full((h, w), cv2.GC_PR_FGD, np.uint8)
    gc[fill & (torso == 0)] = cv2.GC_PR_BGD
    gc[band & fill] = cv2.GC_BGD
    gc[person] = cv2.GC_FGD
    backdrop = _grabcut(rgb, gc, foreground=False)

    # Clothes against everything else, seeded on both shoulders (not the middle, where a V-neck shows skin).
    g2 = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    g2[yy > chin[1] + 0.3 * fw] = cv2.GC_PR_FGD
    g2[band & backdrop] = cv2.GC_BGD
    g2[person] = cv2.GC_BGD
    shoulders = (yy > min(h - 3, chin[1] + 0.9 * fw)) & (np.abs(np.abs(xx - chin[0]) - 0.65 * fw) < 0.15 * fw)
    g2[shoulders] = cv2.GC_FGD
    clothes = _grabcut(rgb, g2, foreground=True) if shoulders.sum() > 20 else np.zeros((h, w), bool)
    return PortraitLayers(backdrop & ~clothes, clothes)


def _grabcut(rgb: np.ndarray, mask: np.ndarray, foreground: bool) -> np.ndarray:
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(rgb, mask, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)
    fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return fg if foreground else ~fg


# --------------------------------------------------------------------------------------------------------------
# Variants


@dataclass(frozen=True)
class VariantSettings:
    """How strongly variants differ from their photo (each a probability or a range)."""

    keep_backdrop: float = 0.2
    texture_backdrop: float = 0.45  # the rest: a smooth colour field
    dye_clothes: float = 0.6
    skin: float = 0.6  # the person's own colour: saturation, hue and brightness, apart from the scene's
    light: float = 0.85
    zoom: tuple[float, float] = (0.8, 1.25)
    max_roll: float = 10.0  # degrees
    max_shift: float = 0.06  # share of the side, each axis
    tight_crop: float = 0.25
    degrade: float = 0.2


_SKIMAGE_BACKDROPS = ("coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "chelsea",
                      "brick", "grass", "gravel", "page")


def backdrop_pool(folder: str | Path | None = None, side: int = 512) -> list[np.ndarray]:
    """uint8 RGB images to cut backdrops from: scikit-image's sample images (public domain or CC0, in its wheel),
    and the images of `folder` when given; each resized so its shorter side is `side`."""
    from skimage import data as skdata

    from matebit.io import list_images, open_image

    raw = []
    for name in _SKIMAGE_BACKDROPS:
        im = getattr(skdata, name)()
        raw.append(np.repeat(im[..., None], 3, 2) if im.ndim == 2 else im[..., :3])
    if folder is not None:
        for p in list_images(Path(folder)):
            with open_image(p) as im:
                raw.append(np.asarray(im.convert("RGB")))
    pool = []
    for im in raw:
        f = side / min(im.shape[:2])
        pool.append(cv2.resize(im, (max(side, round(im.shape[1] * f)), max(side, round(im.shape[0] * f))),
                               interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC))
    return pool


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour in [0, 1], drawn in HSV so that greys, pastels and strong colours all occur."""
    # Saturation skewed low (greys and pastels are the commonest backdrops and clothes), value away from black.
    hsv = np.array([[[rng.uniform(0, 180), 255 * rng.uniform(0, 1) ** 1.5, rng.uniform(40, 250)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _colour_field(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    k = int(rng.integers(1, 4))
    grid = np.stack([[_colour(rng) for _ in range(k)] for _ in range(k)])  # (k, k, 3)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR) if k > 1 else np.broadcast_to(grid[0, 0], (h, w, 3))


def _texture(h: int, w: int, pool: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    src = pool[int(rng.integers(len(pool)))]
    zoom = rng.uniform(0.6, 1.0)
    ch, cw = int(min(src.shape[0], src.shape[1]) * zoom), int(min(src.shape[0], src.shape[1]) * zoom)
    y, x = int(rng.integers(0, src.shape[0] - ch + 1)), int(rng.integers(0, src.shape[1] - cw + 1))
    tex = cv2.resize(src[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    if rng.random() < 0.5:
        tex = tex[:, ::-1]
    blur = rng.choice([0.0, 0.005, 0.015, 0.03]) * max(h, w)  # sharp to out of focus
    if blur > 0:
        tex = cv2.GaussianBlur(tex, (0, 0), blur)
    return _light(tex, rng, strength=1.5)


def _light(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """White balance, exposure, contrast, gamma and saturation of a float RGB image in [0, 1]."""
    gains = np.exp(rng.normal(0.0, 0.08 * strength, 3)).astype(np.float32)
    out = img * gains * math.exp(rng.normal(0.0, 0.15 * strength))
    mean = out.mean()
    out = (out - mean) * math.exp(rng.normal(0.0, 0.12 * strength)) + mean
    out = np.clip(out, 0.0, 1.0) ** math.exp(rng.normal(0.0, 0.12 * strength))
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * math.exp(rng.normal(0.0, 0.3 * strength))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _skin(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The person's colour changed apart from the scene's: saturation (biased up: the studio light is flat), hue and
    brightness of a float RGB image in [0, 1] (the caller blends it in through the person's mask)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # float32 input: H in degrees, S and V in [0, 1]
    hsv[..., 0] = (hsv[..., 0] + rng.normal(0.0, 5.0)) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * math.exp(rng.normal(0.15, 0.3)), 0.0, 1.0)
    hsv[..., 2] = np.clip(hsv[..., 2] * math.exp(rng.normal(0.0, 0.12)), 0.0, 1.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)[..., None]


def make_variant(photo: np.ndarray, landmarks68: np.ndarray, layers: PortraitLayers | None, template: FaceTemplate,
                 side: int, rng: np.random.Generator | None, pool: Sequence[np.ndarray] = (),
                 settings: VariantSettings = VariantSettings(), points: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """One aligned variant of a photo: (uint8 (side, side, 3) crop, `points` moved into the crop or None).

    rng None: the plain aligned photo (no change but the alignment). Otherwise the module docstring's variations,
    drawn from `rng` in a fixed order. `points`: any (P, 2) points of the photo (e.g. evaluation landmarks)."""
    lm = np.asarray(landmarks68, np.float64)
    matrix = similarity_to_template(lm, template, side)
    if rng is None:
        crop = warp_image(photo, matrix, side)
        return crop, (apply(matrix, points) if points is not None else None)
    s = settings
    h, w = photo.shape[:2]
    img = photo.astype(np.float32) / 255.0
    fw, _ = _face_geometry(lm)
    edge = max(1.0, 0.004 * max(h, w))

    r_backdrop, r_clothes, r_light, r_crop, r_degrade, r_skin = rng.random(6)
    if layers is not None and r_skin < s.skin:
        a = _soft(~(layers.backdrop | layers.clothes), edge)
        img = img * (1 - a) + _skin(img, rng) * a
    if layers is not None and r_backdrop >= s.keep_backdrop:
        new = _texture(h, w, pool, rng) if pool and r_backdrop < s.keep_backdrop + s.texture_backdrop \
            else _colour_field(h, w, rng)
        a = _soft(layers.backdrop, edge)
        img = img * (1 - a) + new * a
    if layers is not None and r_clothes < s.dye_clothes and layers.clothes.any():
        lum = img.mean(axis=2, keepdims=True)
        shade = lum / max(1e-3, float(np.median(lum[layers.clothes])))
        dyed = np.clip(_colour(rng) * shade, 0.0, 1.0)
        a = _soft(layers.clothes, edge)
        img = img * (1 - a) + dyed * a
    if r_light < s.light:
        img = _light(img, rng)
    out = (img * 255.0).round().clip(0, 255).astype(np.uint8)

    # Framing: a random similarity about the template's eye centre, after the alignment.
    zoom = math.exp(rng.uniform(math.log(s.zoom[0]), math.log(s.zoom[1])))
    roll = float(np.clip(rng.normal(0.0, s.max_roll / 2), -s.max_roll, s.max_roll))
    shift = rng.uniform(-s.max_shift, s.max_shift, 2) * side
    ex, ey = template.eye_centre[0] * side - 0.5, template.eye_centre[1] * side - 0.5
    jitter = cv2.getRotationMatrix2D((ex, ey), roll, zoom)
    jitter[:, 2] += shift
    if r_crop < s.tight_crop:
        # A tight crop around the face (a selfie's framing): the face spans 50-75% of the crop's width.
        cw = min(fw / rng.uniform(0.5, 0.75), w, h)
        cx = float(np.clip(lm[:, 0].mean() + rng.uniform(-0.1, 0.1) * cw, cw / 2, w - cw / 2))
        cy = float(np.clip(lm[:, 1].mean() + rng.uniform(-0.1, 0.1) * cw, cw / 2, h - cw / 2))
        x0, y0 = int(round(cx - cw / 2)), int(round(cy - cw / 2))
        out = out[y0:y0 + int(cw), x0:x0 + int(cw)]
        lm = lm - [x0, y0]
        points = points - [x0, y0] if points is not None else None
        matrix = similarity_to_template(lm, template, side)
    full = np.vstack([jitter, [0, 0, 1]]) @ np.vstack([matrix, [0, 0, 1]])
    crop = warp_image(out, full[:2], side)
    if r_degrade < s.degrade:
        if rng.random() < 0.5:
            buf = io.BytesIO()
            Image.fromarray(crop).save(buf, "JPEG", quality=int(rng.integers(30, 75)))
            crop = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        else:
            crop = cv2.GaussianBlur(crop, (0, 0), rng.uniform(0.5, 1.2) * side / 256)
    return crop, (apply(full[:2], points) if points is not None else None)
