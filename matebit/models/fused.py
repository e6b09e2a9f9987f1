"""Fused masked correspondence (FlexAttention): softmax(alpha * ReLU(cos)) V without the N x M matrix.

Placeholder dispatch only until the fused kernel lands: `applies` is False everywhere, so the matrix form runs.
"""

from __future__ import annotations

from torch import Tensor


def applies(q: Tensor) -> bool:
    return False


def masked_correspondence_fused(q, k, v, alpha, mask):
    raise NotImplementedError("the fused correspondence is not available yet; use attention_impl='reference'")
