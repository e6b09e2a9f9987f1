"""The one pre- and post-processing path between a user's images and the generator.

    from matebit.image_processor import ImageProcessor, ProcessorConfig
    processor = ImageProcessor.from_pretrained("faces-hed-128")       # what the model's recipe did to its photos
    pair = processor.photos("me.jpg", "portrait.jpg", from_photo="hed")  # aligned crops, the map, the transforms

A model folder may carry `preprocessor_config.json` (`ProcessorConfig`): how its structure maps were made from photos
(`structure`, `hed_size`) and the face template its photos were aligned to (`align`, `matebit.align.FaceTemplate`).
Models written before that file existed keep those settings in their card's front matter (`structure`, `hed_size`),
which is read instead.

Sizes (`size_policy`): the network needs sides that are multiples of 16, and at least 32 (`MIN_NET_SIDE`).
Outputs always have the structure's size.

* "trained" (default): run at the size the model was trained at (`train.image_size` in the config.json of a
  model folder written by training): both inputs are resized to it and the output is resized back. A model without
  a trained size (a bare ModelConfig) runs as with "pad". Models are trained on squares resized without keeping
  the aspect ratio, so this is what they saw.
* "pad": run at the structure's own size: the exemplar is resized to the structure's size; both are padded on the
  right and bottom to the next multiple of 16 (at least 32; reflected, or repeated where the image is smaller than
  the padding) and the output is cropped back. Output pixels match the structure's.
* "resize": both are resized to `size` (an int or (height, width), multiples of 16 of at least 32) or, by
  default, to the structure's size rounded to the nearest multiple of 16; the output is resized back.
  Giving `size` with the default policy means "resize".

Photos (`ImageProcessor.photos`): with a face template and alignment on, each photo's largest face is found
(`matebit.align`) and the photo cut to the template's square; the structure photo is cut at the side its recipe ran
HED at and converted there, then resized to the trained size, as the recipe made its maps. Without a template the
structure photo is converted at its own size (HED at `hed_size` when the model records one). Either way the
transforms are kept, so results can be mapped back into each photo's own pixels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from matebit.config import MIN_NET_SIDE, SIZE_STRIDE
from matebit.errors import InputError

from matebit.weights import PROCESSOR_FILE

SizePolicy = Literal["trained", "pad", "resize"]

__all__ = ["SizePolicy", "PROCESSOR_FILE", "ProcessorConfig", "ImageProcessor", "PhotoPair", "Prepared",
           "resize", "check_size_arg", "prepare", "restore", "read_capped", "to_size"]


# --------------------------------------------------------------------------------------------------------------
# Sizes


@dataclass
class Prepared:
    """One pair at network size, and what is needed to map results back."""

    structure: Tensor  # (C, Hn, Wn) in [0, 1]
    exemplar: Tensor  # (3, Hn, Wn) in [-1, 1]
    size: tuple[int, int]  # structure's original (H, W): the output size
    exemplar_size: tuple[int, int]  # exemplar's original (H, W)
    policy: SizePolicy
    photos: "PhotoPair | None" = None  # set when the inputs were photos (alignment, paste-back)

    @property
    def net_size(self) -> tuple[int, int]:
        return tuple(self.structure.shape[-2:])


def resize(t: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resize (C, H, W) or (B, C, H, W); antialiased when shrinking."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    x = t if t.dim() == 4 else t[None]
    x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=mode in ("bilinear", "bicubic"))
    return x if t.dim() == 4 else x[0]


def _round_size(h: int, w: int) -> tuple[int, int]:
    s = SIZE_STRIDE
    return max(MIN_NET_SIDE, round(h / s) * s), max(MIN_NET_SIDE, round(w / s) * s)


def check_size_arg(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    s = SIZE_STRIDE
    if len(hw) != 2 or not all(isinstance(v, int) and v >= MIN_NET_SIDE and v % s == 0 for v in hw):
        raise InputError(f"size must be an int or (height, width) of multiples of {SIZE_STRIDE}, at least "
                         f"{MIN_NET_SIDE}, got {size!r}")
    return hw


def _pad(t: Tensor, pw: int, ph: int) -> Tensor:
    """(C, H, W) padded on the right and bottom: reflected, or repeated where the image is not bigger than the
    padding (reflection needs that), e.g. a 16 px side padded to 32."""
    if not (pw or ph):
        return t
    h, w = t.shape[-2:]
    mode = "reflect" if pw < w and ph < h else "replicate"
    return F.pad(t[None], (0, pw, 0, ph), mode=mode)[0]


def prepare(structure: Tensor, exemplar: Tensor, policy: SizePolicy, size: tuple[int, int] | None) -> Prepared:
    """A loaded pair at the network's size under `policy` ("pad" or "resize"; "trained" is resolved by the caller)."""
    h, w = structure.shape[-2:]
    ex_size = tuple(exemplar.shape[-2:])
    if policy == "pad":
        ex = resize(exemplar, (h, w), "bicubic").clamp(-1, 1)
        ph, pw = max(MIN_NET_SIDE, h + -h % SIZE_STRIDE) - h, max(MIN_NET_SIDE, w + -w % SIZE_STRIDE) - w
        # Reflect, not zeros: a black border would read as structure (an edge) or as a dark exemplar region.
        s, ex = _pad(structure, pw, ph), _pad(ex, pw, ph)
    else:
        target = size or _round_size(h, w)
        s = resize(structure, target).clamp(0, 1)
        ex = resize(exemplar, target, "bicubic").clamp(-1, 1)
    return Prepared(s, ex, (h, w), ex_size, policy)


def restore(t: Tensor, prep: Prepared, mode: str = "bilinear") -> Tensor:
    """A (B, C, h, w) map on the network's canvas (any resolution) -> (B, C, H, W) at the structure's size."""
    t = resize(t, prep.net_size, mode)
    if prep.policy == "pad":
        return t[..., : prep.size[0], : prep.size[1]]
    return resize(t, prep.size, mode)


def read_capped(path: str | os.PathLike, role: str, translator: Any, max_side: int | None) -> tuple[Tensor, tuple]:
    """One input file as the model's tensor (`translator.load`), read at most `max_side` px on its longer side (0 or
    None: as it is); and its own (width, height), the size its output is restored to (`to_size`)."""
    from matebit.io import fit_side, fitted_size, open_image

    path = Path(path)
    name = str(path)
    if path.suffix.lower() == ".npy":
        t = translator.load(path, role, name)
        size = (t.shape[-1], t.shape[-2])
        w, h = fitted_size(*size, max_side, name) if max_side else size
        return (resize(t, (h, w)) if (w, h) != size else t), size
    image = open_image(path, name=name)
    size = image.size
    if max_side:
        image = fit_side(image, max_side, name)
    return translator.load(image, role, name), size


def to_size(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """An output image at `size` = (W, H) (None: as it is): bicubic for pictures, bilinear for maps."""
    if size is None or image.size == tuple(size):
        return image
    return image.resize(tuple(size), Image.Resampling.BICUBIC if image.mode == "RGB" else Image.Resampling.BILINEAR)


# --------------------------------------------------------------------------------------------------------------
# What a model's recipe did to its photos


@dataclass
class ProcessorConfig:
    """How a model's inputs were made from photos; saved as `preprocessor_config.json` in its folder.

    structure: the converter its structure maps came from ("hed", "canny", "landmarks"), or None if unknown.
    hed_size: the side HED ran at before the map was resized to the trained size (the face recipe's maps).
    align: the face template its photos were aligned to (`matebit.align.FaceTemplate`), or None: not a face model.
    """

    structure: str | None = None
    hed_size: int | None = None
    align: Any = None  # FaceTemplate | None (imported lazily: matebit.align pulls OpenCV)

    def __post_init__(self) -> None:
        if self.structure is not None and self.structure not in ("hed", "canny", "landmarks", "pose"):
            raise InputError(f"{PROCESSOR_FILE}: unknown structure {self.structure!r}")
        if self.hed_size is not None and not (isinstance(self.hed_size, int) and 32 <= self.hed_size <= 4096):
            raise InputError(f"{PROCESSOR_FILE}: hed_size must be an int in [32, 4096], got {self.hed_size!r}")

    def to_json(self) -> str:
        data = {"structure": self.structure, "hed_size": self.hed_size,
                "align": self.align.to_dict() if self.align is not None else None}
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = PROCESSOR_FILE) -> "ProcessorConfig":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected an object")
        unknown = sorted(set(data) - {"structure", "hed_size", "align"})
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}")
        align = data.get("align")
        if align is not None:
            from matebit.align import FaceTemplate

            align = FaceTemplate.from_dict(align)
        return cls(structure=data.get("structure"), hed_size=data.get("hed_size"), align=align)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "ProcessorConfig":
        """The folder's `preprocessor_config.json`; without one, the settings its card's front matter records."""
        path = Path(folder) / PROCESSOR_FILE
        if path.exists() or path.is_symlink():
            from matebit.io import read_text

            return cls.from_json(read_text(path, error=InputError), str(path))
        from matebit.weights import read_card_meta

        meta = read_card_meta(folder)
        hed = meta.get("hed_size", "")
        structure = meta.get("structure") or None
        return cls(structure=structure if structure in ("hed", "canny", "landmarks", "pose") else None,
                   hed_size=int(hed) if hed.isdigit() else None)


# --------------------------------------------------------------------------------------------------------------
# Photos


@dataclass
class PhotoPair:
    """A structure photo and an exemplar photo made ready for a model, with the way back to their own pixels.

    structure_map: the structure map (PIL), at the trained size when aligned. exemplar: the exemplar (PIL RGB), its
    aligned crop when aligned. structure_align / exemplar_align: `matebit.align.AlignedFace` (photo <-> crop) or
    None. structure_photo: the structure photo as read (for paste-back); exemplar_photo_size: (W, H) as read;
    structure_size: the structure's (W, H) as given, before `max_side`.
    """

    structure_map: Image.Image
    exemplar: Image.Image
    structure_photo: Image.Image | None
    exemplar_photo_size: tuple[int, int]
    structure_align: Any = None
    exemplar_align: Any = None
    structure_size: tuple[int, int] | None = None  # (W, H) of the structure as given, before `max_side`


def _as_photo(source: Any, role: str) -> tuple[Image.Image, str]:
    """A photo input (a path, PIL image or uint8/float array) as PIL RGB, EXIF orientation applied; and its name."""
    from matebit.io import load_image, open_image, to_pil, to_rgb

    if isinstance(source, (str, os.PathLike)):
        with open_image(source, name=f"{role} ({source})") as im:
            return to_rgb(im), f"{role} ({source})"
    if isinstance(source, Image.Image):
        return to_rgb(source), role
    # Arrays and tensors: through the one reader of in-memory images, as an exemplar (RGB in [-1, 1]).
    return to_pil(load_image(source, role="exemplar", channels=3, name=role), -1.0), role


class ImageProcessor:
    """Photos -> model inputs and back, as the model's recipe made its training data (module docstring)."""

    def __init__(self, config: ProcessorConfig | None = None, trained_size: int | None = None):
        self.config = config or ProcessorConfig()
        self.trained_size = trained_size

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike, config: Any = None) -> "ImageProcessor":
        """The processor of a model folder or shipped name; `config`: its loaded config, if the caller has it. The
        trained size comes from the config (`train.image_size`), else from the card (`trained_size`)."""
        from matebit.checkpoint import load_config
        from matebit.weights import read_card_meta, resolve_model

        folder = resolve_model(model)
        cfg = config if config is not None else load_config(folder)
        size = getattr(getattr(cfg, "train", None), "image_size", None)
        if size is None:
            card = read_card_meta(folder).get("trained_size", "")
            size = int(card) if card.isdigit() else None
        return cls(ProcessorConfig.from_folder(folder), size)

    @property
    def is_face_model(self) -> bool:
        return self.config.align is not None

    def convert(self, photo: Image.Image, method: str, size: int | None = None) -> Image.Image:
        """A structure map of `photo` by `method`; HED runs at the model's `hed_size` and the map is resized to
        `size` when both are known, as the face recipe made its maps."""
        from matebit.convert import CONVERTERS, PHOTO_CONVERTERS

        if method == "pose":
            raise InputError("--from-photo pose: pose maps are drawn from OpenPose JSON keypoints, not from photos; "
                             "make them with `matebit prepare pose` and pass them as --structure")
        if method not in PHOTO_CONVERTERS:
            raise InputError(f"--from-photo: unknown method {method!r}; choose from {', '.join(PHOTO_CONVERTERS)}")
        if method == "hed" and self.config.hed_size and size:
            from matebit.convert.hed import hed

            return hed(photo, max_side=self.config.hed_size, size=(size, size))
        return CONVERTERS[method](photo)

    def _aligned(self, align: bool | None) -> bool:
        if align and not self.is_face_model:
            raise InputError("align=True: this model records no face template (it is not a face model); "
                             "pass align=False or use a face model")
        return self.is_face_model and align is not False

    def structure(self, photo: Image.Image, from_photo: str, align: bool | None = None, name: str = "structure",
                  warn=None) -> tuple[Image.Image, Any]:
        """(the structure map of a photo, its `AlignedFace` or None): aligned to the face template first when the
        model has one (and `align` is not False), converted as the model's recipe converted its photos."""
        size = self.trained_size
        if not self._aligned(align):
            return self.convert(photo, from_photo, size), None
        from matebit.align import find_face

        side = size or 256
        # The recipe ran HED on the crop at hed_size and resized the map; other converters run at the model's size.
        work = self.config.hed_size if from_photo == "hed" and self.config.hed_size else side
        aligned = find_face(np.asarray(photo), name, warn=warn).align(self.config.align, work, np.asarray(photo))
        return self.convert(aligned.crop, from_photo, side), aligned.resized(side)

    def exemplar(self, photo: Image.Image, align: bool | None = None, name: str = "exemplar",
                 warn=None) -> tuple[Image.Image, Any]:
        """(the exemplar as the model takes it, its `AlignedFace` or None): the aligned crop for a face model."""
        if not self._aligned(align):
            return photo, None
        from matebit.align import find_face

        side = self.trained_size or 256
        aligned = find_face(np.asarray(photo), name, warn=warn).align(self.config.align, side, np.asarray(photo))
        return aligned.crop, aligned

    def photos(self, structure: Any, exemplar: Any, from_photo: str | None = "hed", align: bool | None = None,
               max_side: int | None = None, warn=None) -> PhotoPair:
        """Read a structure photo and an exemplar photo, align both to the model's face template (when the model has
        one and `align` is not False), and convert the structure photo by `from_photo` (None: it is a map already,
        taken as framed like the training maps and used as it is). `max_side`: photos are read at most this long on
        their longer side first."""
        from matebit.io import fit_side

        s_photo, s_name = _as_photo(structure, "structure")
        e_photo, e_name = _as_photo(exemplar, "exemplar")
        given = s_photo.size
        if max_side:
            s_photo, e_photo = fit_side(s_photo, max_side, s_name), fit_side(e_photo, max_side, e_name)
        ex, e_al = self.exemplar(e_photo, align, e_name, warn)
        if from_photo is None:
            return PhotoPair(s_photo, ex, None, e_photo.size, None, e_al, given)
        s_map, s_al = self.structure(s_photo, from_photo, align, s_name, warn)
        return PhotoPair(s_map, ex, s_photo, e_photo.size, s_al, e_al, given)
