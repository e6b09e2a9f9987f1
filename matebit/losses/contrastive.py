"""Contrastive style learning (paper Sec. 3.2, Eq. 7): InfoNCE on style codes and the negatives queue.

Negative policies (the trainer picks one; ``StyleQueue.policy_enqueue`` does the queue side):

* ``"paper"``: negatives are style codes of images *generated early in training* (low quality).
  While ``step < early_steps`` the trainer's generated-image codes z(x_hat_B) are enqueued; after
  that the queue is frozen, so later (better) outputs never become negatives.
* ``"exemplars"``: the released code. The exemplar codes z+ = z(y_B) of past batches are enqueued
  every step (FIFO, newest m kept); no generated image ever enters the queue.
* ``"cast"``: the CAST baseline of the paper's ablation (Zhang et al. 2022): other high-quality
  exemplars are the negatives. Queue side as "exemplars"; in addition the trainer may use the other
  exemplars of the current batch (``in_batch_negatives``).

In all policies the anchor is z(x_hat_B) (with gradient) and the positive is z(y_B) (detached).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

Policy = Literal["paper", "exemplars", "cast"]
POLICIES: tuple[str, ...] = ("paper", "exemplars", "cast")


def info_nce(
    z: Tensor, z_pos: Tensor, z_neg: Tensor | None = None, tau: float = 0.07, normalize: bool = True
) -> Tensor:
    """Eq. 7: -log exp(z.z+/tau) / (exp(z.z+/tau) + sum_j exp(z.z-_j/tau)), averaged over the batch.

    z, z_pos: (B, d). z_neg: (m, d) shared by the batch, (B, m, d) per sample, or None/empty.
    ``normalize=True`` L2-normalises every code first (cosine similarities). Departure: the paper's
    z^T z+ and the released code use raw dot products; with tau = 0.07 raw products of unnormalised
    64-d codes saturate the softmax, so the default is normalised (normalize=False is the literal form).
    With no negatives the loss is exactly 0 (log 1), never NaN.
    """
    if z.dim() != 2 or z.shape != z_pos.shape:
        raise ValueError(f"info_nce: z and z_pos must both be (B, d), got {tuple(z.shape)} and {tuple(z_pos.shape)}")
    if normalize:
        z, z_pos = F.normalize(z, dim=1), F.normalize(z_pos, dim=1)
    pos = (z * z_pos).sum(dim=1, keepdim=True)  # (B, 1)
    if z_neg is None or z_neg.numel() == 0:
        neg = z.new_zeros(z.shape[0], 0)
    else:
        if z_neg.shape[-1] != z.shape[1]:
            raise ValueError(f"info_nce: negatives have dim {z_neg.shape[-1]}, codes have {z.shape[1]}")
        z_neg = z_neg.to(z.dtype)
        if normalize:
            z_neg = F.normalize(z_neg, dim=-1)
        if z_neg.dim() == 2:
            neg = z @ z_neg.t()
        elif z_neg.dim() == 3 and z_neg.shape[0] == z.shape[0]:
            neg = torch.einsum("bd,bmd->bm", z, z_neg)
        else:
            raise ValueError(f"info_nce: z_neg must be (m, d) or (B, m, d), got {tuple(z_neg.shape)}")
    logits = torch.cat([pos, neg], dim=1) / tau
    # Cross-entropy with the positive at index 0 == -log softmax(logits)[0].
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


def in_batch_negatives(z_exemplar: Tensor) -> Tensor:
    """(B, d) -> (B, B-1, d): for each sample, the codes of the batch's other exemplars (CAST)."""
    b = z_exemplar.shape[0]
    keep = ~torch.eye(b, dtype=torch.bool, device=z_exemplar.device)
    return z_exemplar.unsqueeze(0).expand(b, -1, -1)[keep].reshape(b, b - 1, -1)


def _all_gather_rows(x: Tensor) -> Tensor:
    """Concatenate (n_r, d) tensors of all ranks in rank order; n_r may differ between ranks."""
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes_i = [int(s.item()) for s in sizes]
    padded = x.new_zeros(max(sizes_i), x.shape[1])
    padded[: x.shape[0]] = x
    chunks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded)
    return torch.cat([c[:k] for c, k in zip(chunks, sizes_i)], dim=0)


class StyleQueue(nn.Module):
    """FIFO queue of m style codes (the paper's m = 1024 negatives), saved in the state_dict.

    Departure from the released code, whose queue is a plain attribute: here it is registered
    buffers (``codes``, ``filled``, ``ptr``), so it survives checkpoints and moves with ``.to()``.
    Under torch.distributed, ``enqueue`` gathers the codes of all ranks first so every rank's queue
    stays identical (every rank must call it at the same step).
    """

    codes: Tensor
    filled: Tensor
    ptr: Tensor

    def __init__(self, dim: int = 64, size: int = 1024) -> None:
        super().__init__()
        if dim < 1 or size < 1:
            raise ValueError(f"StyleQueue: dim and size must be positive, got dim={dim}, size={size}")
        self.register_buffer("codes", torch.zeros(size, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.codes.shape[0]

    def __len__(self) -> int:
        return int(self.filled.item())

    @torch.no_grad()
    def enqueue(self, codes: Tensor) -> None:
        """Append (n, d) codes (detached); the oldest are overwritten once the queue is full."""
        if codes.dim() != 2 or codes.shape[1] != self.codes.shape[1]:
            raise ValueError(f"StyleQueue.enqueue: expected (n, {self.codes.shape[1]}), got {tuple(codes.shape)}")
        codes = codes.detach().to(self.codes.device, self.codes.dtype)
        if dist.is_available() and dist.is_initialized():
            codes = _all_gather_rows(codes)
        n = codes.shape[0]
        if n == 0:
            return
        if n >= self.size:
            self.codes.copy_(codes[-self.size :])
            self.ptr.zero_()
            self.filled.fill_(self.size)
            return
        idx = (self.ptr + torch.arange(n, device=self.codes.device)) % self.size
        self.codes[idx] = codes
        self.ptr.copy_((self.ptr + n) % self.size)
        self.filled.copy_(torch.clamp(self.filled + n, max=self.size))

    def negatives(self) -> Tensor:
        """The filled rows, (filled, d) (order is irrelevant for InfoNCE)."""
        return self.codes[: len(self)]

    def policy_enqueue(
        self,
        policy: Policy,
        step: int,
        early_steps: int,
        z_generated: Tensor | None = None,
        z_exemplar: Tensor | None = None,
    ) -> bool:
        """Enqueue what ``policy`` says for this step (see the module docstring). Returns whether it did.

        Call it after the loss of the step is computed, so a batch is never its own negative.
        """
        if policy == "paper":
            if step >= early_steps:
                return False  # frozen: only early, low-quality generations are negatives
            if z_generated is None:
                raise ValueError("StyleQueue.policy_enqueue: policy 'paper' needs z_generated")
            self.enqueue(z_generated)
            return True
        if policy in ("exemplars", "cast"):
            if z_exemplar is None:
                raise ValueError(f"StyleQueue.policy_enqueue: policy {policy!r} needs z_exemplar")
            self.enqueue(z_exemplar)
            return True
        raise ValueError(f"StyleQueue.policy_enqueue: unknown policy {policy!r}; choose one of {POLICIES}")
