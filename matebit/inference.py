"""Translate structure maps with exemplars: `Translator` and its size policy.

    from matebit.inference import Translator
    translator = Translator.from_pretrained("runs/celeba/final")
    image = translator("sketch.png", "portrait.jpg")            # PIL.Image
    images = translator(["a.png", "b.png"], "portrait.jpg")     # list: one exemplar for every map
    result = translator("sketch.png", "portrait.jpg", return_aux=True)
    masked, full = result.correspondence([(40, 52)])            # heat maps over the exemplar

Inputs (`structure` and `exemplar`): anything `matebit.io.load_image` reads (a path, PIL image, numpy array or
tensor; its docstring has the ranges, the modes and what is refused), or a list of them, or a (B, C, H, W) tensor,
for a batch.

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

Items of a batch with different sizes are run in separate groups, never padded to each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from matebit import speed
from matebit.config import MIN_NET_SIDE, SIZE_STRIDE, ExperimentConfig, ModelConfig
from matebit.errors import ImageInputError, InputError
from matebit.io import ImageInput, Role, load_image, to_pil

SizePolicy = Literal["trained", "pad", "resize"]


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
    s = SIZE_STRIDE
    return max(MIN_NET_SIDE, round(h / s) * s), max(MIN_NET_SIDE, round(w / s) * s)


def _check_size_arg(size: Any) -> tuple[int, int] | None:
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


def _prepare(structure: Tensor, exemplar: Tensor, policy: SizePolicy, size: tuple[int, int] | None) -> _Prepared:
    h, w = structure.shape[-2:]
    ex_size = tuple(exemplar.shape[-2:])
    if policy == "pad":
        ex = _resize(exemplar, (h, w), "bicubic").clamp(-1, 1)
        ph, pw = max(MIN_NET_SIDE, h + -h % SIZE_STRIDE) - h, max(MIN_NET_SIDE, w + -w % SIZE_STRIDE) - w
        # Reflect, not zeros: a black border would read as structure (an edge) or as a dark exemplar region.
        s, ex = _pad(structure, pw, ph), _pad(ex, pw, ph)
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


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N"; anything else is an InputError."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise InputError(f"device {str(device)!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r} requested, but no CUDA device is available (use 'cpu' or 'auto')")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {str(device)!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def _resolve_dtype(dtype: Any) -> str:
    """None/"auto" -> speed's default (bf16 on CUDA and on CPUs with native bf16); "fp32"; "bf16"."""
    if dtype in (None, "auto"):
        return "auto"
    if dtype in (torch.float32, "fp32", "float32"):
        return "fp32"
    if dtype in (torch.bfloat16, "bf16", "bfloat16"):
        return "bf16"
    raise InputError(f"dtype must be 'auto', 'fp32' or 'bf16', got {dtype!r}")


class Translator:
    """A generator ready for inference: eval mode, no gradients, inputs validated before any model work.

    Translator(generator, config, device="auto", dtype=None)
    Translator.from_pretrained(directory, device="auto", dtype=None)   # a folder from save_pretrained

    `dtype`: "auto" (default) computes in bf16 on CUDA and on CPUs with native bf16 (AMX / AVX512-BF16), else in
    fp32; "fp32" gives exact reference numbers. Outputs are float32 either way.

    `compile`: None (default, eager) or a `torch.compile` mode ("default", "reduce-overhead", "max-autotune").
    The first call at each new input shape (size or batch size) compiles, which took 47-48 s on 2 CPU cores at
    256x256; afterwards a call was 1.23x faster in fp32 and 1.18x in bf16 there, and on a GPU "reduce-overhead"
    cut batch-1 latency from 13.2 ms (eager fp32) to 2.6 ms (README, Speed). So it is off by default and pays for
    long runs: a large folder, a server. A compiled graph follows later thread-count changes (the thread
    governor's): compiled at 2 threads and run at 1, it used one core (2026-12-02).

    `attention`, `fused_min_tokens`: which implementation computes the correspondence ("auto", "reference" or
    "fused"; `MATEBITGenerator.set_attention`), a runtime choice that no model file holds.

    Constructing one changes no process-wide setting: torch's thread count is the caller's to choose
    (`matebit.speed.configure_cpu_threads()` makes the commands' load-aware choice).

    `trained_size`: the side the model was trained at (`train.image_size` of an ExperimentConfig), which the
    default size policy runs it at; None for a bare ModelConfig. `source` names the model in error messages.
    """

    def __init__(self, generator: torch.nn.Module, config: ModelConfig | ExperimentConfig,
                 device: str | torch.device = "auto", dtype: Any = None, owned: bool = False,
                 source: str | None = None, compile: str | None = None, attention: str = "auto",
                 fused_min_tokens: int | None = None):
        self.config = config.model if isinstance(config, ExperimentConfig) else config
        self.trained_size = config.train.image_size if isinstance(config, ExperimentConfig) else None
        self.source = source or "the model"
        self.device = resolve_device(device)
        self.precision = _resolve_dtype(dtype)
        self.compile = compile  # checked by speed.maybe_compile (InputError for a mode matebit does not offer)
        # One layout decision, passed to prepare_for_inference and used for every input.
        self._channels_last = speed.default_channels_last(self.device, compiled=compile is not None)
        generator.set_attention(attention, fused_min_tokens)  # before compiling, which reads it
        # Precision, channels_last and baked spectral norm: matebit.speed's measured defaults. Baking and casting
        # rewrite the weights, so they are done only to a model this Translator loaded itself. Threads are
        # process-wide, so they stay the caller's (the commands call speed.configure_cpu_threads).
        self.generator, self._precision_ctx = speed.prepare_for_inference(
            generator, self.device, self.precision, channels_last=self._channels_last, bake=owned, cast_weights=owned,
            compile_mode=compile)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "auto",
                        dtype: Any = None, compile: str | None = None, attention: str = "auto",
                        fused_min_tokens: int | None = None) -> "Translator":
        from matebit.checkpoint import load_config, load_pretrained
        from matebit.weights import resolve_model  # a folder, or the name of a model shipped in the package

        dev = resolve_device(device)
        folder = resolve_model(directory)
        generator, _ = load_pretrained(folder, device=dev)
        # The whole config (an ExperimentConfig from training also has the size the model was trained at).
        return cls(generator, load_config(folder), dev, dtype, owned=True, source=str(directory), compile=compile,
                   attention=attention, fused_min_tokens=fused_min_tokens)

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

    def _inputs(self, structure: Tensor, exemplar: Tensor) -> tuple[Tensor, Tensor]:
        return (speed.channels_last_input(structure.to(self.device), self._channels_last),
                speed.channels_last_input(exemplar.to(self.device), self._channels_last))

    def _forward(self, structure: Tensor, exemplar: Tensor):
        with torch.inference_mode(), self._precision_ctx:
            out = self.generator(*self._inputs(structure, exemplar))
        if not bool(torch.isfinite(out.image).all()):  # would be saved as a black or garbage image
            hint = "; try dtype fp32" if self.precision != "fp32" else ""
            raise InputError(f"{self.source}: the model's output is non-finite (NaN or inf): its weights overflow "
                             f"on these inputs or are broken{hint}")
        # bf16 runs return bf16 tensors; everything downstream (PIL, heat maps) works in float32.
        out.image = out.image.float()
        out.z = out.z.float() if out.z is not None else None
        out.warped = [t.float() for t in out.warped]
        out.uncor_weight = [t.float() for t in out.uncor_weight]
        return out

    def _probe(self, structure: Tensor, exemplar: Tensor, query_index: Tensor):
        with torch.inference_mode(), self._precision_ctx:
            return self.generator.probe_correspondence(*self._inputs(structure, exemplar),
                                                       query_index=query_index.to(self.device))

    def __call__(self, structure: Any, exemplar: Any, size_policy: SizePolicy = "trained",
                 return_aux: bool = False, batch_size: int = 8, size: int | tuple[int, int] | None = None):
        """Translate structure map(s) with exemplar(s).

        A single pair gives a PIL image; lists (or 4-D tensors) give a list, with a single structure or
        exemplar shared across the other side's list. `return_aux=True` gives a `TranslationResult`
        instead. `size_policy` and `size` are described in the module docstring.
        """
        if size_policy not in ("trained", "pad", "resize"):
            raise InputError(f"size_policy must be 'trained', 'pad' or 'resize', got {size_policy!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
        if size is not None and size_policy == "pad":
            raise InputError("size is used only with size_policy='resize' (or the default, 'trained')")
        target = _check_size_arg(size)
        if size_policy == "trained":
            if target is None and self.trained_size:
                target = (self.trained_size, self.trained_size)
            size_policy = "resize" if target is not None else "pad"
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
            images.append(to_pil(_restore(img, p, "bicubic")[0].clamp(-1, 1), -1.0))
            warped.append(to_pil(_restore(wrp, p)[0].clamp(-1, 1), -1.0) if wrp is not None else None)
            uncor.append(to_pil(_restore(unc, p)[0].clamp(0, 1), 0.0) if unc is not None else None)
        if return_aux:
            return TranslationResult(images, warped, uncor, _translator=self, _prepared=prepared)
        return images if batched else images[0]

    def _correspondence(self, prep: _Prepared, points_xy: Any, block: int) -> tuple[np.ndarray, np.ndarray]:
        n_blocks = self.config.n_mat_blocks
        if n_blocks == 0:
            raise InputError("this model has no MAT blocks, so it has no correspondence to show")
        if not -n_blocks <= block < n_blocks:
            raise IndexError(f"block {block} out of range for a model with {n_blocks} MAT blocks")
        pts = np.asarray(points_xy, dtype=np.float64)
        if pts.ndim == 1:
            pts = pts[None]
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
            raise InputError(f"points_xy must be (P, 2) pixel coordinates (x, y), got shape {pts.shape}")
        h, w = prep.size
        bad = ~np.isfinite(pts).all(1) | (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"point {i} {tuple(pts[i])} lies outside the {w}x{h} structure image")
        hn, wn = prep.net_size
        if prep.policy == "resize":  # structure pixels -> network canvas
            pts = pts * np.array([wn / w, hn / h])
        index = self.generator.point_to_token(torch.from_numpy(pts), hn, wn)
        probe = self._probe(prep.structure[None], prep.exemplar[None], index)
        gh, gw = self.generator.token_grid(hn, wn)
        maps = []
        for rows in (probe.rows("masked", block), probe.rows("full", block)):
            heat = rows[0].float().reshape(-1, 1, gh, gw)  # (P, 1, gh, gw)
            heat = _restore(heat, prep)  # exemplar as resized to the structure's canvas
            heat = _resize(heat, prep.exemplar_size).clamp_min(0)[:, 0]
            total = heat.sum(dim=(1, 2), keepdim=True)
            # All mass can only vanish if it sat in the padding; fall back to uniform rather than divide by 0.
            heat = torch.where(total > 0, heat / total.clamp_min(1e-30), torch.full_like(heat, 1.0 / heat[0].numel()))
            maps.append(heat.cpu().numpy().astype(np.float32))
        return maps[0], maps[1]


__all__ = ["TranslationResult", "Translator"]
