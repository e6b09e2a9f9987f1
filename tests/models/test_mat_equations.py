"""Eqs. 1-6 of the paper against a small case computed by hand (numpy, float64), not against the code itself."""

from __future__ import annotations

import numpy as np
import torch

from matebit.config import model_preset
from matebit.models.mat import BlockContext, MaskedMATBlock

C, H, W = 4, 2, 2  # four channels on a 2x2 token grid: four queries, four keys
ALPHA = 100.0


def _block(reliability: str) -> MaskedMATBlock:
    cfg = model_preset("tiny", feature_channels=C, spade_hidden=4, reliability=reliability)
    block = MaskedMATBlock(cfg).eval()
    with torch.no_grad():
        for conv in (block.to_q, block.to_k, block.to_v):  # Q = X_A, K = V = Y_B
            conv.weight.copy_(torch.eye(C).reshape(C, C, 1, 1))
            conv.bias.zero_()
        # gamma(x_A) = 0.5 and beta(x_A) = 0.25 everywhere: Eq. 4 becomes 1.5 * IN(Q) + 0.25 ((1 + gamma) form).
        for conv, value in ((block.modulate.gamma, 0.5), (block.modulate.beta, 0.25)):
            conv.weight.zero_()
            conv.bias.fill_(value)
        block.feed_forward.pwise2.weight.zero_()  # AdaConv(X_agg) = 0: the block returns X_agg (Eq. 6)
        block.feed_forward.pwise2.bias.zero_()
    return block


def _by_hand(x: np.ndarray, y: np.ndarray, reliability: str) -> tuple[np.ndarray, np.ndarray]:
    q = x.reshape(C, -1).T  # (4 queries, C)
    k = y.reshape(C, -1).T
    def unit(t):
        t = t - t.mean(1, keepdims=True)
        return t / np.linalg.norm(t, axis=1, keepdims=True)
    cos = unit(q) @ unit(k).T  # Eq. 1
    scores = ALPHA * np.maximum(cos, 0)  # Eq. 2
    a = np.exp(scores - scores.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)  # Eq. 3
    x_cor = a @ k  # V = Y_B
    if reliability == "quality":
        rel = (a * np.maximum(cos, 0)).sum(1)
    else:
        rel = (a * (cos > 0)).sum(1)
    # Eq. 4: instance norm of Q per channel over positions (biased variance, eps 1e-5), then modulation.
    q_in = (q - q.mean(0)) / np.sqrt(q.var(0) + 1e-5)
    q_mod = 1.5 * q_in + 0.25
    x_uncor = (1 - rel)[:, None] * q_mod  # Eq. 5
    agg = x_cor + x_uncor + q
    agg = (agg - agg.mean(1, keepdims=True)) / np.sqrt(agg.var(1, keepdims=True) + 1e-5)  # Eq. 6, PONO
    return agg.T.reshape(C, H, W), (1 - rel).reshape(H, W)


def test_eqs_1_to_6_on_a_hand_built_case():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(C, H, W))
    # Every key lies near the opposite of query 0, so query 0 has no key with a positive cosine (X_uncor weight 1),
    # while the other queries find partial matches.
    y = -x[:, :1, :1] + 0.3 * rng.normal(size=(C, H, W))
    for reliability in ("quality", "mass"):
        block = _block(reliability)
        ctx = BlockContext(structure=torch.zeros(1, 3, 16, 16), pos=torch.zeros(1, C, H, W),
                           exemplar_small=torch.zeros(1, 3, H, W))
        with torch.no_grad():
            out, aux = block(torch.from_numpy(x)[None].float(), torch.from_numpy(y)[None].float(), ctx)
        want_out, want_uncor = _by_hand(x, y, reliability)
        np.testing.assert_allclose(aux.uncor_weight[0, 0].numpy(), want_uncor, atol=1e-5)
        np.testing.assert_allclose(out[0].numpy(), want_out, atol=1e-4)
        assert want_uncor[0, 0] == 1 and want_uncor.min() < 0.9  # X_uncor matters here, and not everywhere
