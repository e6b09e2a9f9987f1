"""Translate structure maps with exemplars: `Translator` and its size policy.

    from matebit.inference import Translator
    translator = Translator.from_pretrained("runs/celeba/final")
    result = translator("sketch.png", "portrait.jpg")           # a TranslationResult, whatever the inputs
    result.image.save("out.png")                                # the output (PIL); .images for a batch
    images = translator(["a.png", "b.png"], "portrait.jpg").images   # one exemplar for every map
    masked, full = result.correspondence([(40, 52)])            # heat maps over the exemplar

Inputs (`structure` and `exemplar`): anything `matebit.io.load_image` reads (a path, PIL image, numpy array or
tensor; its docstring has the ranges, the modes and what is refused), or a list of them, or a (B, C, H, W) tensor,
for a batch.

Sizes (`size_policy`, "trained" by default) and photos (`from_photo`, `align`, `paste_back`): see
`matebit.image_processor`, the one pre- and post-processing path. With a face model, photos are aligned to the
model's face template first:

    result = translator("me.jpg", "portrait.jpg", from_photo="hed")
    result.image                                   # the aligned portrait at the model's size
    translator("me.jpg", "portrait.jpg", from_photo="hed", paste_back=True).image   # in me.jpg's own frame
    masked, full = result.correspondence([(412, 300)])   # a point of me.jpg -> heat maps over portrait.jpg
    result.match([(412, 300)])                     # -> the best-matching point of portrait.jpg, in its pixels

Items of a batch with different sizes are run in separate groups, never padded to each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from matebit import speed
from matebit.config import ExperimentConfig, ModelConfig
from matebit.errors import ImageInputError, InputError
from matebit.image_processor import ImageProcessor, Prepared, SizePolicy, check_size_arg, prepare, resize, restore
from matebit.io import ImageInput, Role, load_image, to_pil


# --------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class TranslationResult:
    """What every call of a `Translator` returns; every list has one entry per input pair (one for a single pair).

    images: the translations (PIL 'RGB', the structure's size; for aligned photos the aligned portrait, or the
        structure photo's frame with `paste_back`).
    warped: the exemplar warped by the last MAT block's correspondence (Eq. 9), upsampled to the output size;
        None for a model without MAT blocks.
    uncor_weight: the weight of X_uncor in Eq. 5 for the last block (PIL 'L'): white (1) = no reliable match
        in the exemplar, so the structure's own features fill in; black (0) = fully matched. None without MAT.
    photos: per pair, the `matebit.image_processor.PhotoPair` when the inputs were photos (the aligned crops, the
        structure map and the alignments), else None.
    """

    images: list[Image.Image]
    warped: list[Image.Image | None]
    uncor_weight: list[Image.Image | None]
    photos: list[Any] = field(default_factory=list)
    _translator: "Translator" = field(repr=False, default=None)
    _prepared: list[Prepared] = field(repr=False, default_factory=list)

    @property
    def image(self) -> Image.Image:
        return self.images[0]

    def _check(self, item: int) -> Prepared:
        if self._translator is None:
            raise RuntimeError("this result is not attached to a Translator")
        if not -len(self._prepared) <= item < len(self._prepared):
            raise IndexError(f"item {item} out of range for {len(self._prepared)} pair(s)")
        return self._prepared[item]

    def correspondence(self, points_xy: Any, block: int = -1, item: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Where query points of the structure look in the exemplar: (masked, full) heat maps.

        points_xy: (P, 2) or (2,) pixel coordinates (x, y) in the structure image of pair `item` (for photos: the
        structure photo's own pixels, mapped through its alignment).
        Returns two float32 arrays (P, H_ex, W_ex) over the exemplar's own pixels (for photos: the exemplar photo,
        the alignment undone), each map summing to 1: `masked` is MAT's softmax(alpha * ReLU(cos)), `full` the
        unmasked softmax(alpha * cos) (Fig. 1). The MAT block is `block` (default: the last). Reruns the generator
        for that one pair.
        """
        return self._translator._correspondence(self._check(item), points_xy, block)

    def match(self, points_xy: Any, block: int = -1, item: int = 0, rows: str = "masked") -> np.ndarray:
        """(P, 2) points of the exemplar (its own pixels, as `correspondence`) that the query points match best: the
        centre of the token with the most attention (`rows`: "masked" or "full")."""
        return self._translator._match(self._check(item), points_xy, block, rows)


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
    The first call at each new input shape (size or batch size) compiles, which takes tens of seconds on a CPU;
    later calls are faster (measured: benchmarks/README.md). So it is off by default and pays for long runs: a
    large folder, a server. A compiled graph follows later thread-count changes (the thread governor's).

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
                 fused_min_tokens: int | None = None, processor: ImageProcessor | None = None):
        self.config = config.model if isinstance(config, ExperimentConfig) else config
        self.trained_size = config.train.image_size if isinstance(config, ExperimentConfig) else None
        # How the model's recipe made its inputs from photos (face template, HED size): matebit.image_processor.
        self.processor = processor or ImageProcessor(None, self.trained_size)
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
        config = load_config(folder)
        processor = ImageProcessor.from_pretrained(folder, config)
        return cls(generator, config, dev, dtype, owned=True, source=str(directory), compile=compile,
                   attention=attention, fused_min_tokens=fused_min_tokens, processor=processor)

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

    def _load_pairs(self, structure: Any, exemplar: Any) -> tuple[list[Tensor], list[Tensor]]:
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
        return s * (n if len(s) == 1 else 1), e * (n if len(e) == 1 else 1)

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
                 batch_size: int = 8, size: int | tuple[int, int] | None = None,
                 from_photo: str | None = None, align: bool | None = None, paste_back: bool = False,
                 max_side: int | None = None) -> TranslationResult:
        """Translate structure map(s) with exemplar(s); always a `TranslationResult` (`.image`, `.images`, the warped
        exemplars, the X_uncor weights, and the correspondence of any point).

        Lists (or 4-D tensors) are batches, with a single structure or exemplar shared across the other side's list.
        `size_policy` and `size` are described in `matebit.image_processor`.

        Photos: `from_photo` ("hed", "canny", "landmarks") converts the structure inputs, which are photos. With a
        face model (its folder records a face template) both photos are first aligned to that template (`align=False`
        skips it; for a face model an exemplar photo is aligned even when the structure is a ready map), and the
        output is the aligned portrait at the model's size; `paste_back=True` blends it into the structure photo's
        own frame instead. `max_side` reads photos at most that long on their longer side.
        """
        if size_policy not in ("trained", "pad", "resize"):
            raise InputError(f"size_policy must be 'trained', 'pad' or 'resize', got {size_policy!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
        if size is not None and size_policy == "pad":
            raise InputError("size is used only with size_policy='resize' (or the default, 'trained')")
        target = check_size_arg(size)
        if size_policy == "trained":
            if target is None and self.trained_size:
                target = (self.trained_size, self.trained_size)
            size_policy = "resize" if target is not None else "pad"
        photos = self._photo_pairs(structure, exemplar, from_photo, align, paste_back, max_side)
        if photos is not None:
            structure, exemplar = [p.structure_map for p in photos], [p.exemplar for p in photos]
        structures, exemplars = self._load_pairs(structure, exemplar)  # all validation happens here
        prepared = [prepare(s, e, size_policy, target) for s, e in zip(structures, exemplars)]
        for i, p in enumerate(prepared):
            p.photos = photos[i] if photos is not None else None

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
            image = to_pil(restore(img, p, "bicubic")[0].clamp(-1, 1), -1.0)
            if paste_back:
                image = p.photos.structure_align.paste_back(p.photos.structure_photo, image)
            images.append(image)
            warped.append(to_pil(restore(wrp, p)[0].clamp(-1, 1), -1.0) if wrp is not None else None)
            uncor.append(to_pil(restore(unc, p)[0].clamp(0, 1), 0.0) if unc is not None else None)
        return TranslationResult(images, warped, uncor, [p.photos for p in prepared], _translator=self,
                                 _prepared=prepared)

    def _photo_pairs(self, structure: Any, exemplar: Any, from_photo: str | None, align: bool | None,
                     paste_back: bool, max_side: int | None) -> list[Any] | None:
        """The inputs as `PhotoPair`s when they are photos (a conversion, an alignment or both apply), else None."""
        from matebit.image_processor import PhotoPair

        s_items, s_batched = self._as_items(structure, "structure")
        if all(isinstance(x, PhotoPair) for x in s_items):  # made by `processor.photos` already
            pairs = s_items
        else:
            aligned = self.processor.is_face_model and align is not False
            if align and not self.processor.is_face_model:
                raise InputError(f"{self.source}: align=True, but this model records no face template (not a face "
                                 f"model); pass align=False")
            if from_photo is None and not aligned:
                if paste_back:
                    raise InputError("paste_back needs a structure photo (from_photo) aligned by a face model")
                return None
            e_items, e_batched = self._as_items(exemplar, "exemplar")
            if s_batched and e_batched and len(s_items) != len(e_items):
                raise ImageInputError(f"{len(s_items)} structure inputs but {len(e_items)} exemplars; give as many "
                                      f"exemplars as structures, or a single one for all")
            n = max(len(s_items), len(e_items))
            s_items = s_items * (n if len(s_items) == 1 else 1)
            e_items = e_items * (n if len(e_items) == 1 else 1)
            pairs = [self.processor.photos(s, e, from_photo, align, max_side) for s, e in zip(s_items, e_items)]
        if paste_back and any(p.structure_align is None for p in pairs):
            raise InputError("paste_back needs a structure photo (from_photo) aligned by a face model")
        return pairs

    def _points_on_canvas(self, prep: Prepared, points_xy: Any) -> np.ndarray:
        """Query points of the structure (photo) -> pixels of the network's canvas, checked."""
        pts = np.asarray(points_xy, dtype=np.float64)
        if pts.ndim == 1:
            pts = pts[None]
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
            raise InputError(f"points_xy must be (P, 2) pixel coordinates (x, y), got shape {pts.shape}")
        s_align = prep.photos.structure_align if prep.photos is not None else None
        s_photo = prep.photos.structure_photo if prep.photos is not None else None
        h, w = prep.size
        if s_align is not None:
            W, H = s_align.photo_size
        elif s_photo is not None:  # a photo converted at another size than its map's
            W, H = s_photo.size
        else:
            W, H = w, h
        bad = ~np.isfinite(pts).all(1) | (pts[:, 0] < 0) | (pts[:, 0] >= W) | (pts[:, 1] < 0) | (pts[:, 1] >= H)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"point {i} {tuple(pts[i])} lies outside the {W}x{H} structure image")
        if s_align is not None:
            pts = s_align.to_crop(pts)
            side = s_align.side
            out = ~((pts >= -0.5) & (pts <= side - 0.5)).all(1)
            if out.any():
                i = int(np.flatnonzero(out)[0])
                raise InputError(f"point {i} {tuple(np.asarray(points_xy, np.float64).reshape(-1, 2)[i])} lies "
                                 f"outside the aligned face crop (the part of the photo the model sees)")
            pts = np.clip(pts, 0, side - 1e-3)
        elif s_photo is not None and (W, H) != (w, h):
            pts = (pts + 0.5) * np.array([w / W, h / H]) - 0.5
        hn, wn = prep.net_size
        if prep.policy == "resize":  # structure pixels -> network canvas
            pts = pts * np.array([wn / w, hn / h])
        return pts

    def _block_index(self, block: int) -> None:
        n_blocks = self.config.n_mat_blocks
        if n_blocks == 0:
            raise InputError("this model has no MAT blocks, so it has no correspondence to show")
        if not -n_blocks <= block < n_blocks:
            raise IndexError(f"block {block} out of range for a model with {n_blocks} MAT blocks")

    def _probe_points(self, prep: Prepared, points_xy: Any, block: int):
        """(the probe of the query points' rows, token grid (gh, gw)) for points of the structure (photo)."""
        self._block_index(block)
        pts = self._points_on_canvas(prep, points_xy)
        hn, wn = prep.net_size
        index = self.generator.point_to_token(torch.from_numpy(pts), hn, wn)
        return self._probe(prep.structure[None], prep.exemplar[None], index), self.generator.token_grid(hn, wn)

    def _match(self, prep: Prepared, points_xy: Any, block: int, rows: str) -> np.ndarray:
        if rows not in ("masked", "full"):
            raise InputError(f"rows must be 'masked' or 'full', got {rows!r}")
        probe, (gh, gw) = self._probe_points(prep, points_xy, block)
        hn, wn = prep.net_size
        best = probe.rows(rows, block)[0].float().argmax(-1).cpu().numpy()  # (P,) token index
        # Token centres on the canvas, then the exemplar as the canvas holds it (resized, or padded), then its photo.
        xy = np.stack([(best % gw + 0.5) * wn / gw - 0.5, (best // gw + 0.5) * hn / gh - 0.5], 1)
        eh, ew = prep.exemplar_size
        if prep.policy == "pad":
            h, w = prep.size
            xy = xy * np.array([ew / w, eh / h])
        else:
            xy = (xy + 0.5) * np.array([ew / wn, eh / hn]) - 0.5
        e_align = prep.photos.exemplar_align if prep.photos is not None else None
        return e_align.to_photo(xy) if e_align is not None else xy

    def _correspondence(self, prep: Prepared, points_xy: Any, block: int) -> tuple[np.ndarray, np.ndarray]:
        probe, (gh, gw) = self._probe_points(prep, points_xy, block)
        e_align = prep.photos.exemplar_align if prep.photos is not None else None
        maps = []
        for rows in (probe.rows("masked", block), probe.rows("full", block)):
            heat = rows[0].float().reshape(-1, 1, gh, gw)  # (P, 1, gh, gw)
            heat = restore(heat, prep)  # exemplar as resized to the structure's canvas
            heat = resize(heat, prep.exemplar_size).clamp_min(0)[:, 0]
            if e_align is not None:  # the aligned crop -> the exemplar photo's own pixels
                heat = torch.from_numpy(_unalign_maps(heat.cpu().numpy(), e_align))
            total = heat.sum(dim=(1, 2), keepdim=True)
            # All mass can only vanish if it sat in the padding; fall back to uniform rather than divide by 0.
            heat = torch.where(total > 0, heat / total.clamp_min(1e-30), torch.full_like(heat, 1.0 / heat[0].numel()))
            maps.append(heat.cpu().numpy().astype(np.float32))
        return maps[0], maps[1]


def _unalign_maps(maps: np.ndarray, aligned: Any) -> np.ndarray:
    """(P, s, s) maps over an aligned crop -> (P, H, W) over the photo it was cut from (mass outside the photo is
    lost; the caller renormalises)."""
    import cv2

    from matebit.align import invert

    side = maps.shape[-1]
    a = aligned.resized(side) if side != aligned.side else aligned
    W, H = aligned.photo_size
    back = invert(a.matrix)
    return np.stack([cv2.warpAffine(m.astype(np.float32), back, (W, H), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT) for m in maps])


__all__ = ["TranslationResult", "Translator"]
