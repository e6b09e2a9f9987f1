"""Structural loss (Eq. 12): LPIPS between HED edge maps of the output and the ground truth.

Not implemented in the released code (it has neither HED nor LPIPS); this follows the paper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def edges_to_image(edges: Tensor) -> Tensor:
    """HED probabilities (B, 1, H, W) in [0, 1] -> a 3-channel image in [-1, 1], as LPIPS expects."""
    if edges.dim() != 4 or edges.shape[1] != 1:
        raise ValueError(f"edges_to_image: expected (B, 1, H, W), got {tuple(edges.shape)}")
    return (edges * 2 - 1).expand(-1, 3, -1, -1)


def structure_loss(
    fake: Tensor,
    real: Tensor,
    hed: Callable[[Tensor], Tensor],
    lpips: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """LPIPS(H(x_hat_B), H(x_B)), averaged over the batch. Gradients reach ``fake`` only.

    ``hed``: images in [-1, 1] -> edges (B, 1, H, W) in [0, 1]; ``lpips``: two images in [-1, 1] ->
    per-sample distances (any shape with B leading).
    """
    edges_fake = edges_to_image(hed(fake))
    with torch.no_grad():  # the ground truth is data: no graph needed on its side
        edges_real = edges_to_image(hed(real))
    return lpips(edges_fake, edges_real).mean()
