"""Typed configuration: dataclasses, strict JSON round trips and the named presets.

Every model is built from a `ModelConfig`; nothing reads a global options object. Unknown keys and values
of the wrong type are errors (nanoGPT's rule), so a typo in a preset or an override fails loudly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

CorrespondenceKind = Literal["masked", "full", "official"]
MaskKind = Literal["relu", "none"]
ReliabilityKind = Literal["quality", "mass"]
FeedForwardKind = Literal["adaconv", "ffn"]
SpectralNormKind = Literal["all", "official", "none"]


# The encoders downsample three times (1/8: the token grid of the MAT blocks) and the decoder's bottleneck once
# more (1/16), so input sides must be multiples of 16.
TOKEN_STRIDE = 8
SIZE_STRIDE = 16
# The smallest side the network runs at: at 16 the 1/16 bottleneck is one pixel, where reflect padding and
# instance norm fail. Inference pads (or resizes) smaller inputs up to this; training sizes start here.
MIN_NET_SIDE = 2 * SIZE_STRIDE
# torch.compile's modes, as `matebit.speed.maybe_compile`, `Translator(compile=...)` and the --compile flags take them
# (one list: the tuple is read off the type).
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
COMPILE_MODES: tuple[str, ...] = typing.get_args(CompileMode)


# The errors the models raise come through this module, so that `matebit.models` imports only `matebit.config`.
from matebit.bounds import check_fields, parse_json  # noqa: E402
from matebit.errors import ConfigError, InputSizeError  # noqa: E402  (re-exported)


@dataclass
class ModelConfig:
    """The generator and discriminator. Defaults are the paper's model with the released code's sizes."""

    structure_channels: int = 3  # channels of x_A (3: HED edges read as RGB, as in the released MetFaces setup)
    image_channels: int = 3
    base_channels: int = 64  # ngf: width of the first encoder stage
    feature_channels: int = 512  # C of the 1/8-resolution matching space (released: 64 * 8)
    spade_hidden: int = 512  # hidden width of the SPADE-style modulation nets (released: 512)
    n_mat_blocks: int = 3  # 0 = "w/o MAT"
    correspondence: CorrespondenceKind = "masked"  # masked (paper) | full (CoCosNet) | official (released code)
    mask: MaskKind = "relu"  # Eq. 2; "none" is the "w/o ReLU" ablation
    # Eq. 5's X_uncor weight is 1 - reliability; the two bounded readings are in models/correspondence.py.
    reliability: ReliabilityKind = "quality"
    alpha: float = 100.0  # Eq. 3 softmax sharpness
    feed_forward: FeedForwardKind = "adaconv"  # Fig. 3c AdaConv, or a plain FFN (ablation)
    adaconv_kernel: int = 7
    adaconv_expansion: int = 4
    official_pos_channels: int = 128  # released code: pos_dim 16 * 8, concatenated
    official_prune_channels: int = 128
    skip_connections: bool = True  # U-Net skips from E_A (Sec. 3.3)
    global_style: bool = True  # z through AdaIN (Sec. 3.3)
    style_dim: int = 64
    decoder_attention: bool = False  # released code's SAGAN block in the decoder (not in the paper)
    upsample_align_corners: bool = False  # decoder's bilinear x2 (the released code: True)
    spectral_norm: SpectralNormKind = "all"  # paper Sec. 4: "all the layers"
    # Discriminator (multi-scale PatchGAN, conditioned on x_A)
    d_channels: int = 64
    d_layers: int = 4
    d_scales: int = 2
    d_padding: int = 2  # of its 4x4 convolutions: pix2pixHD's 2, or the released code's 1
    # Which implementation computes the correspondence is a runtime choice, not part of the model:
    # MATEBITGenerator.set_attention / Translator(attention=...) (models/correspondence.py: AttentionRuntime).

    def __post_init__(self) -> None:
        _check_types(self)
        check_fields(self, "model")  # ranges: matebit/bounds.py

    @property
    def stride(self) -> int:
        """Input height and width must be multiples of this (encoder /8, decoder bottleneck /16)."""
        return SIZE_STRIDE

    @property
    def token_stride(self) -> int:
        """Pixels per token side: the MAT blocks work on the 1/8 grid of the input."""
        return TOKEN_STRIDE


@dataclass
class LossConfig:
    """Loss weights (Eq. 14) and loss options; each preset's recipe is in `PRESETS`."""

    recipe: Literal["paper", "official", "demo", "faces"] = "paper"
    # The paper gives no lambda values (Eq. 14); these put every term near 1 at initialisation.
    style: float = 1.0  # lambda_1, contrastive style (Eq. 7)
    align: float = 10.0  # lambda_2 (Eq. 8)
    corr: float = 10.0  # lambda_3 (Eq. 9)
    structure: float = 1.0  # lambda_4 (Eq. 12)
    perceptual: float = 1.0  # lambda_5 (Eq. 10)
    contextual: float = 1.0  # lambda_5 (Eq. 11)
    adversarial: float = 1.0  # lambda_6 (Eq. 13)
    # Extras of the released recipe; zero in the paper recipe.
    gan_feature_matching: float = 0.0
    vgg_feature_matching: float = 0.0
    gram_style: float = 0.0
    # Not in the paper or the released code: L1 to the target in pixels. Only the CPU demo uses it, because
    # it cannot load VGG19 offline and must learn in minutes.
    pixel: float = 0.0
    # Not in the paper or the released code: cross-entropy of the MAT blocks' unmasked attention rows against the
    # token a self-exemplar's warp moved each structure token to (losses/correspondence.py: match_loss).
    # Self-supervised (the warp is drawn by the data pipeline); the demo uses it because Eq. 9 alone does not learn
    # matching in its minutes of training (docs/demo-study.md).
    match: float = 0.0
    perceptual_kind: Literal["l1", "mse"] = "l1"  # Eq. 10 says L1; the released code uses MSE
    contextual_form: Literal["paper", "official"] = "paper"
    # CX centring: by y's mean over positions (Mechrez), or by its per-position channel mean (the released
    # recipes pass --PONO, which does that).
    contextual_center: Literal["y_mean", "y_position"] = "y_mean"
    perceptual_network: Literal["vgg19", "hed-vgg16"] = "vgg19"
    vgg19_path: str = ""
    lpips_backbone_path: str = ""
    # Eq. 13 names y_B as "real", but D is conditioned on x_A and y_B is not aligned with it, so D would
    # learn misalignment as realness; the released code (and we, by default) use the target x_B.
    d_real: Literal["target", "exemplar"] = "target"
    tau: float = 0.07
    queue_size: int = 1024
    negatives: Literal["paper", "exemplars", "cast"] = "paper"
    early_steps: int = 2000  # "early in training": generated images' codes are queued for this many steps
    normalize_style_codes: bool = True

    def __post_init__(self) -> None:
        _check_types(self)
        check_fields(self, "loss")  # ranges: matebit/bounds.py


@dataclass
class WarpConfig:
    """The self-exemplar warp (Sec. 3.4, matebit/data/warp.py): strength of each component; every field at 0 gives
    the identity.

    Angles are in degrees, `scale` is the max relative zoom (s in [1-scale, 1+scale]), `translation` and
    `crop` are fractions of the image side, `elastic` is the max displacement of the non-rigid field as a
    fraction of the image side, on a `elastic_grid` x `elastic_grid` lattice of control points.
    """

    rotation: float = 10.0
    scale: float = 0.1
    shear: float = 5.0
    translation: float = 0.05
    elastic: float = 0.02
    elastic_grid: int = 4
    flip: float = 0.5  # probability of a horizontal flip
    crop: float = 0.1  # max fraction of each side removed before resizing back
    padding_mode: str = "reflection"  # grid_sample padding outside the source

    def __post_init__(self) -> None:
        for name in ("rotation", "scale", "shear", "translation", "elastic", "flip", "crop"):
            if getattr(self, name) < 0:
                raise ConfigError(f"WarpConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.scale >= 1:
            raise ConfigError(f"WarpConfig.scale must be < 1, got {self.scale}")
        if self.crop >= 1:
            raise ConfigError(f"WarpConfig.crop must be < 1, got {self.crop}")
        if self.flip > 1:
            raise ConfigError(f"WarpConfig.flip is a probability, got {self.flip}")
        if self.elastic_grid < 2:
            raise ConfigError(f"WarpConfig.elastic_grid must be >= 2, got {self.elastic_grid}")
        if self.padding_mode not in ("reflection", "border", "zeros"):
            raise ConfigError(f"WarpConfig.padding_mode must be reflection|border|zeros, got {self.padding_mode!r}")

    @classmethod
    def none(cls) -> "WarpConfig":
        """The identity warp."""
        return cls(rotation=0.0, scale=0.0, shear=0.0, translation=0.0, elastic=0.0, flip=0.0, crop=0.0)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping (Sec. 4)."""

    batch_size: int = 4
    steps: int = 100_000
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.999
    decay_start: int = 50_000  # linear decay to 0 from here to `steps`
    image_size: int = 256
    num_workers: int = 2
    seed: int = 0
    log_every: int = 50
    image_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # The released code runs its loss networks (VGG19, HED, LPIPS) in fp32 under AMP; True runs them under the
    # training autocast too: faster with precision=bf16 on CPUs with native bf16, at a small cost in PCK@0.10 in the
    # one comparison made (measured: benchmarks/README.md, "Training steps on a CPU").
    loss_networks_autocast: bool = False
    exemplar_rate: float = 0.0  # share of pairs-file exemplars; the paper uses warped self-exemplars only
    flip: bool = True
    # Not in the paper: the share of self-exemplar items whose exemplar has its backdrop and clothes (the region
    # joined to the image border by small colour steps) recoloured by a random smooth colour field
    # (matebit/data/augment.py); with recolour_target the target's, before the exemplar is warped from it, so that
    # the output must take the new colours. For plain-backdrop portraits, whose set shows one backdrop colour.
    recolour_background: float = 0.0
    recolour_target: bool = False
    # Strength of the self-exemplar warp (Sec. 3.4): max rotation (degrees), zoom (relative), shift (of the side);
    # the three parts of WarpConfig a run sets. Their defaults and checks are WarpConfig's (`TrainConfig.warp`).
    warp_rotation: float = WarpConfig.rotation
    warp_zoom: float = WarpConfig.scale
    warp_shift: float = WarpConfig.translation
    nan_policy: Literal["stop", "skip"] = "stop"
    # torch.compile the G side and D for training (matebit.train.Trainer). Off by default: on a CPU the compile
    # time outweighed the gain over the demo's run, and the face step gained nothing (benchmarks/README.md).
    compile: bool = False

    def __post_init__(self) -> None:
        _check_types(self)
        check_fields(self, "train")  # ranges: matebit/bounds.py

    @property
    def warp(self) -> WarpConfig:
        """The self-exemplar warp of this run: WarpConfig's defaults with the run's rotation, zoom and shift."""
        return WarpConfig(rotation=self.warp_rotation, scale=self.warp_zoom, translation=self.warp_shift)


@dataclass
class ExperimentConfig:
    """Everything a run needs; saved as JSON beside every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "paper"

    def __post_init__(self) -> None:
        _check_types(self)


# --------------------------------------------------------------------------------------------------------------
# Strict conversion to and from plain dicts / JSON


def _check_types(obj: Any) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not _matches(value, hints[f.name]):
            raise ConfigError(
                f"{type(obj).__name__}.{f.name}: expected {_type_name(hints[f.name])}, got {value!r}")


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value in typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, tp)
    if tp is float:  # JSON lets NaN and Infinity through; no setting means either
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


# Runtime switches that earlier versions kept in ModelConfig, and so wrote into every config.json, with the value
# every model had. They are arguments of the runtime now (MATEBITGenerator.set_attention, Translator(attention=...)).
# A file that holds them at those values loads silently: nobody chose them, they were saved because they were
# fields (the shipped models' files hold them too). A file that holds another value warns, because the file asked
# for a behaviour it no longer decides; the warning says where the setting went.
_RETIRED: dict[str, dict[str, Any]] = {"ModelConfig": {"attention_impl": "auto", "fused_min_tokens": 32768}}


def _drop_retired(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    retired = _RETIRED.get(cls.__name__, {})
    for key in sorted(set(data) & set(retired)):
        if data[key] != retired[key]:
            warnings.warn(f"{where or cls.__name__}.{key} = {data[key]!r} is ignored: it is a runtime setting now, "
                          f"not part of the model (MATEBITGenerator.set_attention, Translator(attention=...))",
                          stacklevel=3)
    return {k: v for k, v in data.items() if k not in retired}


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected an object, got {type(data).__name__}")
    data = _drop_retired(cls, data, where)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {', '.join(unknown)}")
    if cls is ExperimentConfig and "model" not in data:
        # Without it the paper's model would be built silently, whatever the file meant.
        raise ConfigError(f"{where or cls.__name__}: no 'model' section; a run config needs one (write a preset's "
                          f"config with `matebit train --preset NAME ...` and edit its config.json)")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            value = from_dict(tp, value, where=f"{where}.{key}" if where else key)
        elif tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # A wrong type is found by __post_init__, which does not know the file; name it here.
        if where and not str(exc).startswith(where):
            raise ConfigError(f"{where}: {exc}") from None
        raise


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def from_json(cls: type, text: str, where: str = "") -> Any:
    return from_dict(cls, parse_json(text, where or "config", ConfigError), where=where)


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Apply `section.key=value` strings (values parsed as JSON, else taken as strings)."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        value = parse_json(raw, f"override {item[:60]!r}", ConfigError, lenient=True)  # not JSON: a string
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {item!r}: unknown section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {key!r}")
        node[parts[-1]] = value
    return from_dict(type(cfg), data)


# --------------------------------------------------------------------------------------------------------------
# Presets: the paper's model, its ablations (Table 2, Fig. 7), the released code, and small ones for CPU.
# One registry entry per preset holds all of it: the model's departures from ModelConfig, the loss recipe, the
# training settings and the line `matebit info` prints.


@dataclass(frozen=True)
class Preset:
    """A named run: overrides of ModelConfig, LossConfig and TrainConfig defaults, and one line of help."""

    help: str
    model: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


_TINY = dict(base_channels=8, feature_channels=32, spade_hidden=16, style_dim=16, d_channels=8, d_layers=2)
# Sized to train in minutes on 2 CPU cores; spectral norm off because its power iterations cost a third of a CPU
# step at this size (a departure from the paper's "all layers", listed in docs/departures.md).
_DEMO = dict(base_channels=8, feature_channels=64, spade_hidden=32, style_dim=16, d_channels=16, d_layers=2,
             spectral_norm="none")

# The shipped face model (`matebit recipe faces`): sized to train at 128x128 on 2 CPU cores (its training time:
# docs/faces.md); spectral norm off for the same reason as the demo.
_FACES = dict(base_channels=16, feature_channels=128, spade_hidden=64, style_dim=32, d_channels=32, d_layers=3,
              spectral_norm="none")

# The released code's README recipe (CelebA-HQ): its extra terms and weights, its contextual form, its
# contrastive variant (exemplar codes as negatives, raw dot products).
_OFFICIAL_LOSS = dict(recipe="official", style=100.0, align=10.0, corr=1000.0, structure=0.0,
                      perceptual=0.001, perceptual_kind="mse", contextual=10.0, contextual_form="official",
                      contextual_center="y_position",
                      adversarial=10.0, gan_feature_matching=10.0, vgg_feature_matching=10.0, gram_style=1.0,
                      negatives="exemplars", normalize_style_codes=False)
# CPU demo: no pretrained network can be loaded offline in minutes, so the VGG/HED terms are off and a
# pixel L1 stands in for them (stated wherever the demo reports results).
# `match` (self-warp matching, not in the paper): without it no demo model beat the identity map on PCK
# (docs/demo-study.md).
_DEMO_LOSS = dict(recipe="demo", structure=0.0, perceptual=0.0, contextual=0.0, pixel=10.0, adversarial=0.1,
                  early_steps=200, queue_size=256, match=1.0)
# Real portraits on 2 CPU cores: the demo's terms plus Eq. 10's perceptual term on the HED network's VGG16
# trunk (the only pretrained image network offline; a named substitute for VGG19).
# Contextual (Eq. 11) and structural (Eq. 12) terms are off: together they would halve the steps again.
# `match` at 0.1, not the demo's 1.0: at 1.0 the correspondence learned fast but the generator saturated to a
# white image partway through training and never recovered (docs/faces.md).
_FACES_LOSS = dict(recipe="faces", structure=0.0, perceptual=1.0, contextual=0.0, pixel=10.0, adversarial=0.1,
                   perceptual_network="hed-vgg16", early_steps=500, queue_size=512, match=0.1)

# Adam with momentum (beta1 0.5) at 10x the paper's rates: with beta1 = 0 and 1e-4 the demo model
# learns almost nothing in the few minutes it has (matebit demo). The self-exemplar warp is as strong as
# the benchmark's moved exemplars (20 degrees, zoom 20%, shift 10%): with loss.match, one seed scored
# a higher PCK than with the default warp (docs/demo-study.md).
_DEMO_TRAIN = dict(image_size=64, batch_size=8, steps=1300, decay_start=866, checkpoint_every=1300, log_every=20,
                   image_every=325, lr_g=1e-3, lr_d=2e-3, beta1=0.5, warp_rotation=20.0, warp_zoom=0.2,
                   warp_shift=0.1)
# The demo's optimiser settings (they learn in a short budget); the self-exemplar warp as strong as the moved-exemplar
# evaluation's transforms (rotation 15 degrees, zoom 15%, shift 8%). The data are aligned portraits with varied
# backdrops, clothes, light and framing (`matebit prepare faces --align --variants`, data/portraits.py), so the
# target and its exemplar share whatever backdrop a variant has and the output learns to take the exemplar's; the
# exemplar-only recolouring of earlier recipes (recolour_background) is off.
_FACES_TRAIN = dict(image_size=128, batch_size=8, steps=3000, decay_start=2000, checkpoint_every=100, log_every=20,
                    image_every=300, lr_g=1e-3, lr_d=2e-3, beta1=0.5, warp_rotation=15.0, warp_zoom=0.15,
                    warp_shift=0.08, keep_checkpoints=5)

PRESETS: dict[str, Preset] = {
    "paper": Preset("MATEBIT as the paper describes it, with the released code's layer sizes"),
    "official": Preset("the released code's MAT block: learned sign mask, scaled dot product, concatenated PE, SAGAN",
                       model=dict(correspondence="official", decoder_attention=True, spectral_norm="official",
                                  upsample_align_corners=True, d_padding=1),
                       loss=_OFFICIAL_LOSS, train=dict(exemplar_rate=0.7)),
    "no-mat": Preset("Table 2 'w/o MAT': no MAT blocks", model=dict(n_mat_blocks=0)),
    **{f"mat{n}": Preset(f"Fig. 7: {n} MAT block(s)", model=dict(n_mat_blocks=n)) for n in range(1, 6)},
    "no-relu": Preset("Table 2 'w/o ReLU': softmax over the unmasked cosine", model=dict(mask="none")),
    "full-corr": Preset("Table 2 'Full Corr.': CoCosNet-style full correspondence instead of MAT",
                        model=dict(correspondence="full")),
    "ffn": Preset("Table 2 'w/o AdaConv': a pointwise FFN instead of AdaConv", model=dict(feed_forward="ffn")),
    "no-skip": Preset("Table 2 'w/o skip connection'", model=dict(skip_connections=False)),
    "no-style": Preset("Table 2 'w/o global style z'", model=dict(global_style=False)),
    "tiny": Preset("a 0.5 M-parameter model for fast tests", model=_TINY, loss=_DEMO_LOSS,
                   train=dict(image_size=64, batch_size=8, steps=600, decay_start=400, checkpoint_every=200,
                              log_every=20, image_every=200)),
    "demo": Preset("a small model that trains on 2 CPU cores in minutes (the embedded demo)", model=_DEMO,
                   loss=_DEMO_LOSS, train=_DEMO_TRAIN),
    "demo-no-relu": Preset("the demo model without the ReLU mask", model={**_DEMO, "mask": "none"},
                           loss=_DEMO_LOSS, train=_DEMO_TRAIN),
    "demo-full-corr": Preset("the demo model with full correspondence", model={**_DEMO, "correspondence": "full"},
                             loss=_DEMO_LOSS, train=_DEMO_TRAIN),
    "faces": Preset("the shipped face model: 128x128 HED edges -> portrait, trained on 2 CPU cores", model=_FACES,
                    loss=_FACES_LOSS, train=_FACES_TRAIN),
    "faces-full-corr": Preset("the face model with full correspondence (Table 2 beside the shipped model)",
                              model={**_FACES, "correspondence": "full"}, loss=_FACES_LOSS, train=_FACES_TRAIN),
}


def preset(name: str) -> Preset:
    """The registry entry of that name; a ConfigError naming the choices otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    return from_dict(ModelConfig, {**preset(name).model, **overrides})


def experiment_preset(name: str) -> ExperimentConfig:
    """A whole run: the model, loss recipe and training settings of the preset of that name."""
    p = preset(name)
    return ExperimentConfig(model=model_preset(name), loss=from_dict(LossConfig, p.loss),
                            train=from_dict(TrainConfig, p.train), preset=name)
