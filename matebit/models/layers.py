"""Small shared layers: PONO, the SPADE-style modulation, residual blocks, coordinate attention, AdaConv,
AdaIN, the sine positional code, and the spectral-norm policy."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


# ---------------------------------------------------------------------------------------------------------------
# Spectral normalisation. Layers are built plain and the policy is applied once to the finished network, so
# the three policies (paper: every layer; the released code's subset; none) cannot drift apart.


def official_sn(module: nn.Module) -> nn.Module:
    """Mark a layer as spectrally normalised in the released code (used by the `official` policy)."""
    module._matebit_official_sn = True
    return module


def apply_spectral_norm(net: nn.Module, policy: str) -> nn.Module:
    if policy == "none":
        return net
    for module in list(net.modules()):
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if policy == "all" or (policy == "official" and getattr(module, "_matebit_official_sn", False)):
            nn.utils.parametrizations.spectral_norm(module)
    return net


# ---------------------------------------------------------------------------------------------------------------
# Normalisations


def pono(x: Tensor, eps: float = 1e-5, unbiased: bool = False) -> Tensor:
    """Positional normalisation (Li et al. 2019): normalise every position over its channels.

    The released code divides by the unbiased standard deviation with eps = 1e-8 (`official_pono`); the paper's
    PONO and this default use the biased variance, like every other normalisation layer.
    """
    # Two passes with sums over channels rather than x.var(dim=1): torch's variance kernel, like its norm, is slow
    # over the strided channel axis of NCHW (see channel_norm); this is the same biased / unbiased variance.
    centred = x - x.mean(dim=1, keepdim=True)
    var = (centred * centred).sum(dim=1, keepdim=True) / (x.shape[1] - (1 if unbiased else 0))
    return centred * torch.rsqrt(var + eps)


def official_pono(x: Tensor) -> Tensor:
    """The released code's PositionalNorm2d: unbiased variance, eps 1e-8 (a 1e-3 relative difference at C=512)."""
    return pono(x, eps=1e-8, unbiased=True)


def channel_norm(x: Tensor, dim: int = 1) -> Tensor:
    """Euclidean length over `dim`, kept as a size-1 dimension.

    Why not `x.norm(dim=1)`: on NCHW tensors torch's vector-norm kernel reduces over the strided channel axis one
    position at a time, far slower on a CPU than a product and a sum (measured: benchmarks/README.md). Same value
    up to rounding. The clamp at
    the dtype's smallest normal number keeps the gradient of an all-zero vector at 0, as torch's norm has it (a
    bare sqrt's gradient at 0 is infinite, and 0 * inf made NaN for blank inputs).
    """
    return (x * x).sum(dim, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny).sqrt()


def l2_normalize(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Unit length per position over channels (the released code's feature_normalize)."""
    return x / (channel_norm(x) + eps)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (ConvNeXt's LN)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=bias, padding_mode="reflect")


def resize_condition(cond: Tensor, size: tuple[int, int]) -> Tensor:
    """Bring x_A to a feature map's size. Antialiased rather than nearest (SPADE's choice for label maps),
    because thin edge lines vanish under nearest-neighbour subsampling at 1/8 resolution."""
    if cond.shape[-2:] == size:
        return cond
    # Antialiased interpolation has no bf16 kernel on CPU: resize in fp32 and hand back the input's dtype.
    return F.interpolate(cond.float(), size=size, mode="bilinear", align_corners=False,
                         antialias=True).to(cond.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Blocks


class ResidualBlock(nn.Module):
    """conv-IN-PReLU-conv-IN plus the input, then PReLU (the released code's encoder/decoder block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        self.act = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(F.instance_norm(self.conv1(x)))
        return self.act(x + F.instance_norm(self.conv2(h)))


class SpatialModulation(nn.Module):
    """SPADE-style pixel-wise scale and bias predicted from the structure map: (1 + gamma) * x + beta.

    The input x is expected to be normalised already. (1 + gamma) rather than the paper's gamma is a
    reparametrisation that starts at identity; SPADE's and the released code's implementations do the same.
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int):
        super().__init__()
        self.shared = nn.Sequential(conv3x3(cond_channels, hidden), nn.ReLU())
        self.gamma = conv3x3(hidden, channels)
        self.beta = conv3x3(hidden, channels)

    def forward(self, x_normed: Tensor, cond: Tensor) -> Tensor:
        h = self.shared(resize_condition(cond, x_normed.shape[-2:]))
        return (1 + self.gamma(h)) * x_normed + self.beta(h)


class SPADEResBlock(nn.Module):
    """Residual block whose two convolutions are preceded by PONO + structure modulation.

    Used to embed each encoder's 1/8-resolution features into the matching space (the released code's
    embed_q4 / embed_kv4; the paper leaves this step to its supplementary material).
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int):
        super().__init__()
        self.mod0 = SpatialModulation(channels, cond_channels, hidden)
        self.mod1 = SpatialModulation(channels, cond_channels, hidden)
        self.conv0 = official_sn(conv3x3(channels, channels))
        self.conv1 = official_sn(conv3x3(channels, channels))
        self.act = nn.PReLU()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.conv0(self.act(self.mod0(pono(x), cond)))
        dx = self.conv1(self.act(self.mod1(pono(h), cond)))
        return self.act(x + dx)


class CoordinateAttention(nn.Module):
    """Coordinate attention (Hou et al. 2021): attention along H and along W from direction-wise pooling."""

    def __init__(self, channels: int, reduction: int = 32):
        super().__init__()
        mid = max(8, channels // reduction)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.norm = nn.BatchNorm2d(mid)
        self.act = nn.Hardswish()
        self.to_h = nn.Conv2d(mid, channels, 1)
        self.to_w = nn.Conv2d(mid, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pooled_h = x.mean(dim=3, keepdim=True)  # (B, C, H, 1)
        pooled_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        y = self.act(self.norm(self.reduce(torch.cat([pooled_h, pooled_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = torch.sigmoid(self.to_h(y_h))
        a_w = torch.sigmoid(self.to_w(y_w.transpose(2, 3)))
        return x * a_h * a_w


class AdaConv(nn.Module):
    """The AdaConv block of Fig. 3c: depthwise conv, coordinate attention, two pointwise convs.

    order="paper": Dwise -> CoordAtt -> Pwise -> GELU -> LN -> Pwise, as the paper states ("GELU and LN are
    used after the first Pwise layer"). order="convnext": the released code's ConvNeXt order
    Dwise -> CoordAtt -> LN -> Pwise -> GELU -> Pwise with a layer scale starting at 1e-6.
    The residual connection (X_MAT = AdaConv(X_agg) + X_agg) is added by the caller.
    """

    def __init__(self, channels: int, kernel: int = 7, expansion: int = 4, order: str = "paper"):
        super().__init__()
        self.order = order
        hidden = channels * expansion
        self.dwise = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.coord = CoordinateAttention(channels)
        self.pwise1 = nn.Conv2d(channels, hidden, 1)
        self.pwise2 = nn.Conv2d(hidden, channels, 1)
        if order == "paper":
            self.norm = ChannelLayerNorm(hidden)
        else:
            self.norm = ChannelLayerNorm(channels)
            self.layer_scale = nn.Parameter(torch.full((channels, 1, 1), 1e-6))

    def forward(self, x: Tensor) -> Tensor:
        t = self.coord(self.dwise(x))
        if self.order == "paper":
            return self.pwise2(self.norm(F.gelu(self.pwise1(t))))
        return self.layer_scale * self.pwise2(F.gelu(self.pwise1(self.norm(t))))


class FeedForward(nn.Module):
    """The vanilla Transformer FFN (two pointwise layers, no spatial context): Table 2's 'w/o AdaConv'."""

    def __init__(self, channels: int, expansion: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, channels * expansion, 1), nn.GELU(),
                                 nn.Conv2d(channels * expansion, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class AdaINResBlock(nn.Module):
    """Residual block modulated by the global style code z through AdaIN (Sec. 3.3).

    Scale is applied as (1 + s): the released code multiplies by s itself, which with its near-zero init
    silences the decoder at the start of training.
    """

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.conv1 = conv3x3(channels, channels, bias=False)
        self.conv2 = conv3x3(channels, channels, bias=False)
        self.affine = nn.Linear(style_dim, 2 * channels)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        scale, bias = self.affine(z)[:, :, None, None].chunk(2, dim=1)
        h = torch.relu((1 + scale) * F.instance_norm(self.conv1(x)) + bias)
        h = (1 + scale) * F.instance_norm(self.conv2(h)) + bias
        return x + h


class SelfAttention(nn.Module):
    """SAGAN self-attention, as in the released decoder (only in the `official` preset)."""

    def __init__(self, channels: int):
        super().__init__()
        self.theta = official_sn(nn.Conv2d(channels, max(1, channels // 8), 1, bias=False))
        self.phi = official_sn(nn.Conv2d(channels, max(1, channels // 8), 1, bias=False))
        self.g = official_sn(nn.Conv2d(channels, max(1, channels // 2), 1, bias=False))
        self.o = official_sn(nn.Conv2d(max(1, channels // 2), channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)
        g = F.max_pool2d(self.g(x), 2).flatten(2).transpose(1, 2)
        attn = torch.softmax(theta @ phi, dim=-1)
        o = (attn @ g).transpose(1, 2).reshape(b, -1, h, w)
        return x + self.gamma * self.o(o)


# ---------------------------------------------------------------------------------------------------------------
# Positional code


# Fixed angular frequencies of the positional code, in radians per image side: log-spaced from half a period
# across the image (pi) to 8 periods (16 pi). They do not depend on the grid, so a relative place gets the same code
# at every size. 8 periods are 4 tokens per period on the 32x32 grid of a 256x256 input; finer frequencies would
# alias on the grids the model meets (an 8x8 grid at 64x64 already samples 16 pi at its Nyquist limit).
POSITION_FREQUENCIES = (math.pi, 16 * math.pi)


def position_code_at(ys: Tensor, xs: Tensor, channels: int) -> Tensor:
    """The positional code at normalised coordinates: ys (h,), xs (w,) in [0, 1] -> (1, channels, h, w).

    Channels: sin and cos of each frequency times y, then the same for x (n = channels // 4 frequencies), then
    zeros for the channels left over.
    """
    n_freq = channels // 4
    rest = channels - 4 * n_freq
    lo, hi = POSITION_FREQUENCIES
    freqs = torch.logspace(math.log2(lo), math.log2(hi), max(n_freq, 1), base=2.0, device=ys.device)[:n_freq]
    h, w = ys.shape[0], xs.shape[0]
    py = ys.float()[:, None] * freqs[None, :]  # (h, F)
    px = xs.float()[:, None] * freqs[None, :]  # (w, F)
    code = torch.cat([
        torch.sin(py)[:, None, :].expand(h, w, n_freq), torch.cos(py)[:, None, :].expand(h, w, n_freq),
        torch.sin(px)[None, :, :].expand(h, w, n_freq), torch.cos(px)[None, :, :].expand(h, w, n_freq),
        torch.zeros(h, w, rest, device=ys.device),
    ], dim=-1)
    return code.permute(2, 0, 1).unsqueeze(0)


def sine_position_code(h: int, w: int, channels: int, device=None, dtype=None) -> Tensor:
    """A fixed 2-D sine/cosine code (1, channels, h, w) of the *relative* position of each token's centre.

    The released code learns a 32x32 tensor, which ties the model to 256x256 input. Here y runs 0..1 down the
    image and x 0..1 across it whatever the grid (each axis normalised by its own length, so a non-square input
    puts the same code on the same relative place), and the frequencies are fixed: the same weights see the same
    code for the same relative place at 256x256, 512x512 or 256x384, up to the sampling of the grid.
    """
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    return position_code_at(ys, xs, channels).to(dtype or torch.float32)
