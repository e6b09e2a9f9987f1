"""Translate structure maps with exemplars: `Translator`, and `load_image`, the one input reader.

    from matebit.inference import Translator
    translator = Translator.from_pretrained("runs/celeba/final")
    image = translator("sketch.png", "portrait.jpg")            # PIL.Image
    images = translator(["a.png", "b.png"], "portrait.jpg")     # list: one exemplar for every map
    result = translator("sketch.png", "portrait.jpg", return_aux=True)
    masked, full = result.correspondence([(40, 52)])            # heat maps over the exemplar

Accepted inputs (for both `structure` and `exemplar`, or lists of them for a batch):

* a path (str or Path) to an image file or a .npy array (as below, (C, H, W) also accepted); PIL images;
  numpy arrays (H, W) or (H, W, C), channels last,
  uint8 (0..255), uint16 (0..65535), bool, or float in [0, 1];
* torch tensors, channels first, (C, H, W) or (B, C, H, W) (a batch): a **structure** tensor is in
  [0, 1] and an **exemplar** tensor in [-1, 1], the ranges the generator itself takes.

How images are read (all in `load_image`):

* EXIF orientation is applied; animated images (GIF, APNG, WebP) use their first frame.
* Palette, CMYK, YCbCr, LAB and HSV images become RGB; '1' becomes greyscale; 16-bit images ('I;16', 'I')
  are scaled from 0..65535; 32-bit float images ('F') must already lie in [0, 1].
* Transparency is composited away: structure maps onto **black** (their background: white lines on
  black), exemplars onto **white**.
* Structure channels: a greyscale map is replicated for a 3-channel model; an RGB map for a 1-channel model
  is accepted only if it is grey (all channels equal), otherwise it is an error. A greyscale exemplar is
  replicated to RGB.
* Refused, with the input named ("structure[2]" or the path): missing, empty, truncated or undecodable
  files, folders, images with a side under 16 px, more than `MAX_PIXELS` pixels (checked from the header,
  before decoding: decompression bombs), NaN/inf, values outside the documented range.

Sizes (`size_policy`): the network needs sides that are multiples of 16.

* "pad" (default): the exemplar is resized to the structure's size; both are reflect-padded on the right
  and bottom to the next multiple of 16; the output is cropped back. Output pixels match the structure's.
* "resize": both are resized to `size` (an int or (height, width), multiples of 16) or, by default, to the
  structure's size rounded to the nearest multiple of 16; the output is resized back to the structure's size.

Items of a batch with different sizes are run in separate groups, never padded to each other.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from matebit import speed
from matebit.config import ExperimentConfig, ModelConfig
from matebit.errors import InputError, first_line

MAX_PIXELS = 64_000_000  # ~8000 x 8000; bigger images are refused before decoding
MIN_SIDE = 16  # one token of the 1/16 bottleneck
STRIDE = 16

Role = Literal["structure", "exemplar"]
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, Tensor]
SizePolicy = Literal["pad", "resize"]


class ImageInputError(InputError):
    """An input image cannot be used; the message names it (path or 'structure[i]') and the reason."""


# --------------------------------------------------------------------------------------------------------------
# Reading one image


def open_image(path: str | os.PathLike, name: str | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file (first frame, EXIF orientation applied), with clear errors."""
    path = Path(path)
    name = name or str(path)
    if path.is_dir():
        raise ImageInputError(f"{name}: is a folder, expected an image file")
    if not path.exists():
        raise ImageInputError(f"{name}: no such file")
    if path.stat().st_size == 0:
        raise ImageInputError(f"{name}: empty file")
    with warnings.catch_warnings():
        # PIL only warns between its own limit and twice that; treat the warning as the error it is for us.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                _check_pixels(im.size, name, max_pixels)  # from the header, before any pixel is decoded
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)
                im.load()
                return ImageOps.exif_transpose(im)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageInputError(f"{name}: refused as a possible decompression bomb ({exc})") from None
        except UnidentifiedImageError:
            raise ImageInputError(f"{name}: not an image file PIL can read") from None
        except PermissionError:
            raise ImageInputError(f"{name}: permission denied") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            if isinstance(exc, ImageInputError):
                raise
            raise ImageInputError(f"{name}: cannot decode image, truncated or corrupt ({exc})") from None


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ImageInputError(f"{name}: {w}x{h} is more than {max_pixels:,} pixels; refused as a possible "
                              f"decompression bomb (downscale it first)")


def _pil_to_array(im: Image.Image, name: str) -> np.ndarray:
    """PIL image -> float32 (H, W, C) in [0, 1]; C is 1, 2 (L+alpha), 3 or 4 (RGB+alpha)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.float32) / 65535.0
        return np.clip(arr, 0.0, 1.0)[..., None]
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        _check_unit_range(arr, name, "a 32-bit float image")
        return arr[..., None]
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "1":
        im = im.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    arr = np.asarray(im, dtype=np.uint8).astype(np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def _check_unit_range(arr: np.ndarray | Tensor, name: str, what: str, low: float = 0.0, high: float = 1.0) -> None:
    finite = np.isfinite(arr).all() if isinstance(arr, np.ndarray) else bool(torch.isfinite(arr).all())
    if not finite:
        raise ImageInputError(f"{name}: contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    tol = 1e-4  # float round-off from the caller's own normalisation
    if lo < low - tol or hi > high + tol:
        raise ImageInputError(f"{name}: {what} must lie in [{low:g}, {high:g}], got values in [{lo:.4g}, {hi:.4g}]")


def _array_to_unit(arr: np.ndarray, name: str) -> np.ndarray:
    """numpy (H, W) or (H, W, C) -> float32 (H, W, C) in [0, 1]."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ImageInputError(f"{name}: expected an array (H, W) or (H, W, C) with C in 1..4 (channels last), "
                              f"got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        _check_unit_range(arr, name, "a float array")
        return np.clip(arr, 0.0, 1.0)
    raise ImageInputError(f"{name}: arrays must be uint8, uint16, bool or float in [0, 1], got {arr.dtype}")


def _open_npy(path: Path, name: str, max_pixels: int) -> np.ndarray:
    """A .npy map (H, W), (H, W, C) or (C, H, W) -> a channels-last array; never unpickles."""
    if path.is_dir():
        raise ImageInputError(f"{name}: is a folder, expected a .npy file")
    if not path.exists():
        raise ImageInputError(f"{name}: no such file")
    try:
        with open(path, "rb") as fh:  # the header alone: dtype and shape, checked before any data is read
            major, _ = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(fh)
        if dtype.hasobject:
            raise ImageInputError(f"{name}: a .npy of Python objects (a pickle); refused, matebit never unpickles")
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except ImageInputError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        msg = first_line(exc)
        raise ImageInputError(f"{name}: cannot read .npy file ({msg})") from None
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = arr.transpose(1, 2, 0)  # (C, H, W), the layout the data loader also accepts
    if arr.ndim in (2, 3):
        _check_pixels((arr.shape[1], arr.shape[0]), name, max_pixels)
    return np.array(arr)


def _composite(unit: Tensor, background: float) -> Tensor:
    """(C, H, W) with a trailing alpha channel (C = 2 or 4) -> alpha-composited onto `background`."""
    colour, alpha = unit[:-1], unit[-1:]
    return colour * alpha + background * (1 - alpha)


def _fit_channels(unit: Tensor, channels: int, role: Role, name: str) -> Tensor:
    c = unit.shape[0]
    if c == channels:
        return unit
    if c == 1:
        return unit.expand(channels, -1, -1).clone()  # grey map for a colour model: replicate
    if channels == 1 and c == 3:
        if float((unit - unit[:1]).abs().max()) <= 1.0 / 255 + 1e-6:
            return unit[:1].clone()
        raise ImageInputError(f"{name}: a colour {role} for a model that takes 1-channel {role} maps; "
                              f"convert it to greyscale first")
    raise ImageInputError(f"{name}: {c} channels, but the model takes {channels}-channel {role} inputs")


def load_image(source: ImageInput, *, role: Role = "exemplar", channels: int = 3, name: str | None = None,
               max_pixels: int = MAX_PIXELS) -> Tensor:
    """Read one image for the generator: float32 (channels, H, W), structure in [0, 1], exemplar in [-1, 1].

    `source` is a path, PIL image, numpy array or tensor (see the module docstring for ranges and modes);
    `name` is what error messages call it (default: the path, or the role).
    """
    if role not in ("structure", "exemplar"):
        raise ValueError(f"role must be 'structure' or 'exemplar', got {role!r}")
    if isinstance(source, (str, os.PathLike)):
        name = name or str(source)
        if Path(source).suffix.lower() == ".npy":  # training reads .npy structure maps, so inference must too
            source = _open_npy(Path(source), name, max_pixels)
        else:
            source = open_image(source, name=name, max_pixels=max_pixels)
    name = name or role
    alpha_background = 0.0 if role == "structure" else 1.0

    if isinstance(source, Image.Image):
        _check_pixels(source.size, name, max_pixels)
        if getattr(source, "n_frames", 1) > 1:
            source.seek(0)
        unit = torch.from_numpy(np.ascontiguousarray(_pil_to_array(source, name))).permute(2, 0, 1)
        if unit.shape[0] in (2, 4):
            unit = _composite(unit, alpha_background)
    elif isinstance(source, np.ndarray):
        unit = torch.from_numpy(np.ascontiguousarray(_array_to_unit(source, name))).permute(2, 0, 1)
        if unit.shape[0] in (2, 4):
            unit = _composite(unit, alpha_background)
    elif isinstance(source, Tensor):
        t = source.detach()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3:
            raise ImageInputError(f"{name}: expected a tensor (C, H, W) (channels first), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ImageInputError(f"{name}: tensors must be floating point, got {t.dtype}")
        t = t.to("cpu", torch.float32)
        if role == "structure":
            _check_unit_range(t, name, "a structure tensor")
            unit = t.clamp(0, 1)
        else:
            _check_unit_range(t, name, "an exemplar tensor", -1.0, 1.0)
            unit = ((t + 1) / 2).clamp(0, 1)
    else:
        raise ImageInputError(f"{name}: unsupported input type {type(source).__name__}; give a path, PIL image, "
                              f"numpy array or torch tensor")

    h, w = unit.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ImageInputError(f"{name}: {w}x{h} is too small; both sides must be at least {MIN_SIDE} px")
    unit = _fit_channels(unit, channels, role, name).contiguous()
    return unit if role == "structure" else unit * 2 - 1


# --------------------------------------------------------------------------------------------------------------
# Sizes


@dataclass
class _Prepared:
    """One pair at network size, and what is needed to map results back."""

    structure: Tensor  # (C, Hn, Wn) in [0, 1]
    exemplar: Tensor  # (3, Hn, Wn) in [-1, 1]
    size: tuple[int, int]  # structure's original (H, W): the output size
    exemplar_size: tuple[int, int]  # exemplar's original (H, W)
    policy: SizePolicy

    @property
    def net_size(self) -> tuple[int, int]:
        return tuple(self.structure.shape[-2:])


def _resize(t: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resize (C, H, W) or (B, C, H, W); antialiased when shrinking."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    x = t if t.dim() == 4 else t[None]
    x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=mode in ("bilinear", "bicubic"))
    return x if t.dim() == 4 else x[0]


def _round_size(h: int, w: int) -> tuple[int, int]:
    return max(STRIDE, round(h / STRIDE) * STRIDE), max(STRIDE, round(w / STRIDE) * STRIDE)


def _check_size_arg(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and v >= STRIDE and v % STRIDE == 0 for v in hw):
        raise ValueError(f"size must be an int or (height, width) of positive multiples of {STRIDE}, got {size!r}")
    return hw


def _prepare(structure: Tensor, exemplar: Tensor, policy: SizePolicy, size: tuple[int, int] | None) -> _Prepared:
    h, w = structure.shape[-2:]
    ex_size = tuple(exemplar.shape[-2:])
    if policy == "pad":
        ex = _resize(exemplar, (h, w), "bicubic").clamp(-1, 1)
        ph, pw = -h % STRIDE, -w % STRIDE
        # Reflect, not zeros: a black border would read as structure (an edge) or as a dark exemplar region.
        s = F.pad(structure[None], (0, pw, 0, ph), mode="reflect")[0]
        ex = F.pad(ex[None], (0, pw, 0, ph), mode="reflect")[0]
    else:
        target = size or _round_size(h, w)
        s = _resize(structure, target).clamp(0, 1)
        ex = _resize(exemplar, target, "bicubic").clamp(-1, 1)
    return _Prepared(s, ex, (h, w), ex_size, policy)


def _restore(t: Tensor, prep: _Prepared, mode: str = "bilinear") -> Tensor:
    """A (B, C, h, w) map on the network's canvas (any resolution) -> (B, C, H, W) at the structure's size."""
    t = _resize(t, prep.net_size, mode)
    if prep.policy == "pad":
        return t[..., : prep.size[0], : prep.size[1]]
    return _resize(t, prep.size, mode)


def _to_pil(t: Tensor, low: float) -> Image.Image:
    """(C, H, W) in [low, 1] -> 8-bit PIL ('L' for one channel, else 'RGB')."""
    arr = ((t.float() - low) / (1 - low) * 255).round().clamp(0, 255).to(torch.uint8).cpu()
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0].numpy(), mode="L")
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), mode="RGB")


# --------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class TranslationResult:
    """Outputs of one call with `return_aux=True`; every list has one entry per input pair.

    images: the translations (PIL 'RGB', the structure's size).
    warped: the exemplar warped by the last MAT block's correspondence (Eq. 9), upsampled to the output size;
        None for a model without MAT blocks.
    uncor_weight: the weight of X_uncor in Eq. 5 for the last block (PIL 'L'): white (1) = no reliable match
        in the exemplar, so the structure's own features fill in; black (0) = fully matched. None without MAT.
    """

    images: list[Image.Image]
    warped: list[Image.Image | None]
    uncor_weight: list[Image.Image | None]
    _translator: "Translator" = field(repr=False, default=None)
    _prepared: list[_Prepared] = field(repr=False, default_factory=list)

    @property
    def image(self) -> Image.Image:
        return self.images[0]

    def correspondence(self, points_xy: Any, block: int = -1, item: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Where query points of the structure map look in the exemplar: (masked, full) heat maps.

        points_xy: (P, 2) or (2,) pixel coordinates (x, y) in the structure image of pair `item`.
        Returns two float32 arrays (P, H_ex, W_ex) at the exemplar's original size, each map summing to 1:
        `masked` is MAT's softmax(alpha * ReLU(cos)), `full` the unmasked softmax(alpha * cos) (Fig. 1).
        The MAT block is `block` (default: the last). Reruns the generator for that one pair.
        """
        if self._translator is None:
            raise RuntimeError("this result is not attached to a Translator")
        if not -len(self._prepared) <= item < len(self._prepared):
            raise IndexError(f"item {item} out of range for {len(self._prepared)} pair(s)")
        return self._translator._correspondence(self._prepared[item], points_xy, block)


# --------------------------------------------------------------------------------------------------------------
# The translator


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested, but no CUDA device is available (use 'cpu' or 'auto')")
    return dev


def _resolve_dtype(dtype: Any) -> str:
    """None/"auto" -> speed's default (bf16 on CUDA and on CPUs with native bf16); "fp32"; "bf16"."""
    if dtype in (None, "auto"):
        return "auto"
    if dtype in (torch.float32, "fp32", "float32"):
        return "fp32"
    if dtype in (torch.bfloat16, "bf16", "bfloat16"):
        return "bf16"
    raise ValueError(f"dtype must be 'auto', 'fp32' or 'bf16', got {dtype!r}")


class Translator:
    """A generator ready for inference: eval mode, no gradients, inputs validated before any model work.

    Translator(generator, config, device="auto", dtype=None)
    Translator.from_pretrained(directory, device="auto", dtype=None)   # a folder from save_pretrained

    `dtype`: "auto" (default) computes in bf16 on CUDA and on CPUs with native bf16 (AMX / AVX512-BF16), else in
    fp32; "fp32" gives exact reference numbers. Outputs are float32 either way.
    """

    def __init__(self, generator: torch.nn.Module, config: ModelConfig | ExperimentConfig,
                 device: str | torch.device = "auto", dtype: Any = None, owned: bool = False):
        self.config = config.model if isinstance(config, ExperimentConfig) else config
        self.device = _resolve_device(device)
        self.precision = _resolve_dtype(dtype)
        # Threads, precision, channels_last and baked spectral norm: matebit.speed's measured defaults. Baking
        # and casting rewrite the weights, so they are done only to a model this Translator loaded itself.
        speed.configure_cpu_threads()
        self.generator, self._precision_ctx = speed.prepare_for_inference(
            generator, self.device, self.precision, bake=owned, cast_weights=owned)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "auto",
                        dtype: Any = None) -> "Translator":
        from matebit.checkpoint import load_pretrained

        dev = _resolve_device(device)
        generator, config = load_pretrained(directory, device=dev)
        return cls(generator, config, dev, dtype, owned=True)

    # -- inputs ---------------------------------------------------------------------------------------------------

    @staticmethod
    def _as_items(x: Any, role: Role) -> tuple[list[Any], bool]:
        if isinstance(x, (list, tuple)):
            if not x:
                raise ImageInputError(f"{role}: empty list")
            return list(x), True
        if isinstance(x, Tensor) and x.dim() == 4:
            return list(x.unbind(0)), True
        return [x], False

    def load(self, source: ImageInput, role: Role, name: str | None = None) -> Tensor:
        """`load_image` with this model's channel counts."""
        channels = self.config.structure_channels if role == "structure" else self.config.image_channels
        return load_image(source, role=role, channels=channels, name=name)

    def _load_pairs(self, structure: Any, exemplar: Any) -> tuple[list[Tensor], list[Tensor], bool]:
        s_items, s_batched = self._as_items(structure, "structure")
        e_items, e_batched = self._as_items(exemplar, "exemplar")
        if s_batched and e_batched and len(s_items) != len(e_items):
            raise ImageInputError(f"{len(s_items)} structure inputs but {len(e_items)} exemplars; give as many "
                                  f"exemplars as structures, or a single one for all")

        def names(items: list, role: str, batched: bool) -> list[str | None]:
            out = []
            for i, item in enumerate(items):
                label = f"{role}[{i}]" if batched else role
                out.append(f"{label} ({item})" if isinstance(item, (str, os.PathLike)) else label)
            return out

        s = [self.load(x, "structure", n) for x, n in zip(s_items, names(s_items, "structure", s_batched))]
        e = [self.load(x, "exemplar", n) for x, n in zip(e_items, names(e_items, "exemplar", e_batched))]
        n = max(len(s), len(e))  # a single input is shared by every pair
        return s * (n if len(s) == 1 else 1), e * (n if len(e) == 1 else 1), s_batched or e_batched

    # -- running --------------------------------------------------------------------------------------------------

    def _forward(self, structure: Tensor, exemplar: Tensor, query_index: Tensor | None = None):
        with torch.inference_mode(), self._precision_ctx:
            out = self.generator(speed.channels_last_input(structure.to(self.device)),
                                 speed.channels_last_input(exemplar.to(self.device)), query_index=query_index)
        # bf16 runs return bf16 tensors; everything downstream (PIL, heat maps) works in float32.
        for name in ("image", "z"):
            if getattr(out, name) is not None:
                setattr(out, name, getattr(out, name).float())
        for name in ("warped", "uncor_weight", "rows_masked", "rows_full", "attention"):
            setattr(out, name, [t.float() for t in getattr(out, name)])
        return out

    def __call__(self, structure: Any, exemplar: Any, size_policy: SizePolicy = "pad",
                 return_aux: bool = False, batch_size: int = 8, size: int | tuple[int, int] | None = None):
        """Translate structure map(s) with exemplar(s).

        A single pair gives a PIL image; lists (or 4-D tensors) give a list, with a single structure or
        exemplar shared across the other side's list. `return_aux=True` gives a `TranslationResult`
        instead. `size_policy` and `size` are described in the module docstring.
        """
        if size_policy not in ("pad", "resize"):
            raise ValueError(f"size_policy must be 'pad' or 'resize', got {size_policy!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if size is not None and size_policy != "resize":
            raise ValueError("size is used only with size_policy='resize'")
        target = _check_size_arg(size)
        structures, exemplars, batched = self._load_pairs(structure, exemplar)  # all validation happens here
        prepared = [_prepare(s, e, size_policy, target) for s, e in zip(structures, exemplars)]

        outputs: list[tuple[Tensor, Tensor | None, Tensor | None]] = [None] * len(prepared)  # type: ignore
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(prepared):
            groups.setdefault(p.net_size, []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                out = self._forward(torch.stack([prepared[i].structure for i in chunk]),
                                    torch.stack([prepared[i].exemplar for i in chunk]))
                for j, i in enumerate(chunk):
                    outputs[i] = (out.image[j:j + 1].float(),
                                  out.warped[-1][j:j + 1].float() if out.warped else None,
                                  out.uncor_weight[-1][j:j + 1].float() if out.uncor_weight else None)

        images, warped, uncor = [], [], []
        for p, (img, wrp, unc) in zip(prepared, outputs):
            images.append(_to_pil(_restore(img, p, "bicubic")[0].clamp(-1, 1), -1.0))
            warped.append(_to_pil(_restore(wrp, p)[0].clamp(-1, 1), -1.0) if wrp is not None else None)
            uncor.append(_to_pil(_restore(unc, p)[0].clamp(0, 1), 0.0) if unc is not None else None)
        if return_aux:
            return TranslationResult(images, warped, uncor, _translator=self, _prepared=prepared)
        return images if batched else images[0]

    def _correspondence(self, prep: _Prepared, points_xy: Any, block: int) -> tuple[np.ndarray, np.ndarray]:
        n_blocks = self.config.n_mat_blocks
        if n_blocks == 0:
            raise ValueError("this model has no MAT blocks, so it has no correspondence to show")
        if not -n_blocks <= block < n_blocks:
            raise IndexError(f"block {block} out of range for a model with {n_blocks} MAT blocks")
        pts = np.asarray(points_xy, dtype=np.float64)
        if pts.ndim == 1:
            pts = pts[None]
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
            raise ValueError(f"points_xy must be (P, 2) pixel coordinates (x, y), got shape {pts.shape}")
        h, w = prep.size
        bad = ~np.isfinite(pts).all(1) | (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"point {i} {tuple(pts[i])} lies outside the {w}x{h} structure image")
        hn, wn = prep.net_size
        if prep.policy == "resize":  # structure pixels -> network canvas
            pts = pts * np.array([wn / w, hn / h])
        index = self.generator.point_to_token(torch.from_numpy(pts), hn, wn)
        out = self._forward(prep.structure[None], prep.exemplar[None], query_index=index)
        gh, gw = self.generator.token_grid(hn, wn)
        maps = []
        for rows in (out.rows_masked[block], out.rows_full[block]):
            heat = rows[0].float().reshape(-1, 1, gh, gw)  # (P, 1, gh, gw)
            heat = _restore(heat, prep)  # exemplar as resized to the structure's canvas
            heat = _resize(heat, prep.exemplar_size).clamp_min(0)[:, 0]
            total = heat.sum(dim=(1, 2), keepdim=True)
            # All mass can only vanish if it sat in the padding; fall back to uniform rather than divide by 0.
            heat = torch.where(total > 0, heat / total.clamp_min(1e-30), torch.full_like(heat, 1.0 / heat[0].numel()))
            maps.append(heat.cpu().numpy().astype(np.float32))
        return maps[0], maps[1]


__all__ = ["MAX_PIXELS", "ImageInputError", "TranslationResult", "Translator", "load_image", "open_image"]
