"""The masked correspondence of MAT (Eqs. 1-3 and the reliability weight of Eq. 5), in its plain matrix form.

Tokens are (B, N, C) for queries and (B, M, C) for keys and values. This file is the readable reference: it
materialises the N x M matrix, which is what the visualisations and the tests use as their oracle. Fast paths
(chunked, fused) live beside it and must agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from matebit.config import ConfigError
from matebit.models import fused


def centred_unit(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Eq. 1's Q~ and K~: subtract each token's mean over channels, then scale to unit length.

    With both sides prepared like this, a plain dot product is the centred cosine of Eq. 1.
    """
    x = x - x.mean(dim=-1, keepdim=True)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


@dataclass
class Correspondence:
    """Result of one correspondence pass.

    out:         (B, N, Cv) the values aggregated by the attention weights (X_cor of Eq. 3).
    reliability: (B, N) in [0, 1], how much each query's match can be trusted (see `RELIABILITY`);
                 1 - reliability is the weight of X_uncor in Eq. 5 (see `MaskedMATBlock`).
    weights:     (B, N, M) the attention matrix in float32, only when asked for.
    cos:         (B, N, M) the centred cosine of Eq. 1 in float32, with `weights`.
    rows:        the attention rows a `RowRequest` asked for (`query_rows`), kind -> (B, P, M).
    """

    out: Tensor
    reliability: Tensor
    weights: Tensor | None = None
    cos: Tensor | None = None
    rows: dict[str, Tensor] | None = None


RowKind = Literal["used", "masked", "full"]
ROW_KINDS: tuple[RowKind, ...] = ("used", "masked", "full")


@dataclass(frozen=True)
class RowRequest:
    """Attention rows a forward pass hands back beside its output, from its own projections and cosine.

    index: the query tokens, (P,) shared by the batch or (B, P) per item; None for every token (B, N, M).
    kinds: "masked" softmax(alpha * ReLU(cos)), MAT's correspondence; "full" softmax(alpha * cos), CoCosNet's;
           "used" the one the block aggregates with (masked for the paper's block, full for "w/o ReLU" and
           "Full Corr."). Only the kinds asked for are computed.
    """

    index: Tensor | None = None
    kinds: tuple[RowKind, ...] = ROW_KINDS

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(ROW_KINDS)
        if unknown:
            raise ValueError(f"row kind must be 'used', 'masked' or 'full', got {sorted(unknown)}")


@dataclass(frozen=True)
class AttentionRuntime:
    """Which implementation computes the masked correspondence: a runtime choice, never saved with a model
    (`MATEBITGenerator.set_attention`, `Translator(attention=...)`).

    impl: "auto" takes the fused kernel where it applies, i.e. on CUDA from `fused_min_tokens` query tokens up
    (fused.DEFAULT_MIN_TOKENS: above 1024x1024, where the matrix form stops being the better choice; measured on
    an H200, see models/fused.py), else the matrix form; "reference" always the matrix; "fused" always the kernel.
    """

    impl: Literal["auto", "reference", "fused"] = "auto"
    fused_min_tokens: int = fused.DEFAULT_MIN_TOKENS

    def __post_init__(self) -> None:
        if self.impl not in ("auto", "reference", "fused"):
            raise ConfigError(f"attention must be 'auto', 'reference' or 'fused', got {self.impl!r}")
        if isinstance(self.fused_min_tokens, bool) or not isinstance(self.fused_min_tokens, int) \
                or self.fused_min_tokens < 1:
            raise ConfigError(f"fused_min_tokens must be an int >= 1, got {self.fused_min_tokens!r}")


# How reliable a query's match is, for the bounded weight 1 - reliability of X_uncor (Eq. 5). As printed,
# 1 - sum_j ReLU(A)(u, j) sums raw cosines over up to h*w keys and leaves [0, 1], so a bounded reading is needed:
#   "quality": sum_j A(u, j) ReLU(cos(u, j)), the cosine of the keys the query attends to, averaged with the
#              attention weights. Near 1 when the attended keys match well, near 0 when even the best keys barely
#              correlate. Follows the paper's intent (the ReLU-masked scores decide) and stays informative at any
#              number of keys.
#   "mass":    sum_j A(u, j) [cos(u, j) > 0], the share of the softmax mass on keys the ReLU keeps: the released
#              code's bounded form with the paper's ReLU mask in place of its learned one. With alpha = 100 it
#              falls below 1/2 only when the best cosine is under ln(M) / alpha (0.069 for 1024 keys), so it is
#              about 1 almost everywhere.
RELIABILITY = ("quality", "mass")


def masked_correspondence_reference(q: Tensor, k: Tensor, v: Tensor, alpha: float, mask: str = "relu",
                                    return_weights: bool = False, reliability: str = "quality") -> Correspondence:
    """softmax(alpha * ReLU(cos(q, k))) v, with q and k already passed through `centred_unit`.

    mask="relu" is the paper (Eq. 2); mask="none" is the "w/o ReLU" ablation, softmax(alpha * cos), for which
    every key counts as reliable (there is no mask to say otherwise), so reliability is 1.
    """
    if reliability not in RELIABILITY:
        raise ValueError(f"unknown reliability kind {reliability!r}")
    # Eq. 1, (B, N, M), in fp32 even under autocast: alpha = 100 turns a bf16 rounding error of 0.004 in the
    # cosine into 0.4 in the logits, enough to move the argmax.
    with torch.autocast(q.device.type, enabled=False):
        cos = q.float() @ k.float().transpose(-1, -2)
    if mask == "relu":
        scores = alpha * torch.relu(cos)  # Eq. 2, then the scaling inside Eq. 3
    elif mask == "none":
        scores = alpha * cos
    else:
        raise ValueError(f"unknown mask kind {mask!r}")
    probs = torch.softmax(scores, dim=-1)
    weights = probs.to(v.dtype)  # Eq. 3
    out = weights @ v
    if mask == "none":
        rel = torch.ones(q.shape[:-1], dtype=weights.dtype, device=q.device)
    elif reliability == "quality":
        rel = (weights.float() * torch.relu(cos)).sum(dim=-1).to(weights.dtype)
    else:
        # A key with cos <= 0 still receives exp(0) / Z after the softmax; that share is the unreliable mass.
        rel = (weights * (cos > 0).to(weights.dtype)).sum(dim=-1)
    return Correspondence(out, rel, probs, cos) if return_weights else Correspondence(out, rel)


CHUNK = 4096  # queries per block of the chunked form; at most this many, the matrix is formed whole


def masked_correspondence_chunked(q: Tensor, k: Tensor, v: Tensor, alpha: float, mask: str = "relu",
                                  chunk: int = CHUNK, reliability: str = "quality") -> Correspondence:
    """The reference, evaluated over blocks of queries so that memory stays O(chunk * M).

    Rows of a softmax are independent, so splitting the queries changes nothing but peak memory.
    """
    if q.shape[1] <= chunk:
        return masked_correspondence_reference(q, k, v, alpha, mask, reliability=reliability)
    outs, rels = [], []
    for start in range(0, q.shape[1], chunk):
        part = masked_correspondence_reference(q[:, start:start + chunk], k, v, alpha, mask,
                                               reliability=reliability)
        outs.append(part.out)
        rels.append(part.reliability)
    return Correspondence(torch.cat(outs, 1), torch.cat(rels, 1))


def masked_correspondence(q: Tensor, k: Tensor, v: Tensor, alpha: float, mask: str = "relu",
                          impl: str = "auto", return_weights: bool = False,
                          min_tokens: int = fused.DEFAULT_MIN_TOKENS, reliability: str = "quality",
                          rows: RowRequest | None = None) -> Correspondence:
    """Dispatch to the implementation that fits (`AttentionRuntime`): the fused kernel where it applies
    (`impl="auto"`: CUDA and at least `min_tokens` queries), else the matrix form. `rows`: also the attention rows
    of those queries (`Correspondence.rows`, see `query_rows`)."""
    use_fused = impl == "fused" or (impl == "auto" and fused.applies(q, min_tokens))
    whole = impl == "reference" or (rows is not None and not use_fused and q.shape[1] <= CHUNK)
    if return_weights or whole:
        c = masked_correspondence_reference(q, k, v, alpha, mask, True, reliability)
    elif use_fused:
        c = Correspondence(*fused.masked_correspondence_fused(q, k, v, alpha, mask, reliability=reliability))
    else:
        c = masked_correspondence_chunked(q, k, v, alpha, mask, reliability=reliability)
    if rows is not None:
        c.rows = query_rows(c, q, k, alpha, mask, rows)
    if not return_weights:
        c.weights = c.cos = None
    return c


def query_rows(c: Correspondence, q: Tensor, k: Tensor, alpha: float, mask: str,
               request: RowRequest) -> dict[str, Tensor]:
    """The rows `request` asks for, in float32: gathered from the pass's own cosine and softmax where it formed the
    matrix (`c.cos`, `c.weights`); the other kind is one softmax of the same cosine rows. The fused kernel and the
    chunked form never hold the whole matrix, so there the queried rows alone are computed from the same q and k."""
    index = request.index
    if c.cos is not None:
        cos = c.cos if index is None else gather_rows(c.cos, index)
        own = c.weights if index is None else gather_rows(c.weights, index)
    else:
        rows_q = q if index is None else gather_rows(q, index)
        with torch.autocast(q.device.type, enabled=False):
            cos = rows_q.float() @ k.float().transpose(-1, -2)
        own = None
    used: RowKind = "masked" if mask == "relu" else "full"
    out: dict[str, Tensor] = {}
    for kind in dict.fromkeys(used if kind == "used" else kind for kind in request.kinds):
        if kind == used and own is not None:
            out[kind] = own
        else:
            out[kind] = torch.softmax(alpha * (torch.relu(cos) if kind == "masked" else cos), -1)
    if "used" in request.kinds:
        out["used"] = out[used]
    return out


def tokens(x: Tensor) -> Tensor:
    """(B, C, h, w) feature map -> (B, hw, C) tokens, row-major over the grid."""
    return x.flatten(2).transpose(1, 2)


def grid(t: Tensor, h: int, w: int) -> Tensor:
    """(B, hw, C) tokens -> (B, C, h, w) feature map."""
    return t.transpose(1, 2).reshape(t.shape[0], -1, h, w)


def gather_rows(t: Tensor, index: Tensor) -> Tensor:
    """Tokens (B, N, C) of the queried positions: index (P,) for every item or (B, P) per item -> (B, P, C)."""
    index = index.to(t.device).long()
    if index.dim() == 1:
        index = index.unsqueeze(0).expand(t.shape[0], -1)
    return torch.gather(t, 1, index.unsqueeze(-1).expand(-1, -1, t.shape[-1]))


def downsample_to(image: Tensor, size: tuple[int, int]) -> Tensor:
    """The `↓` of Eq. 9: area-average an image down to the token grid."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.adaptive_avg_pool2d(image, size)
