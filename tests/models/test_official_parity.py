"""The `official` block against the authors' released MAT block, numerically (tests/fixtures/README.md).

The fixture holds one released `DynamicTransformerBlock` (64 feature + 16 positional channels, 16 prune channels,
N(0, 0.05) weights, eval mode), its inputs and its outputs. Mapped onto `OfficialMATBlock`, the block output and the
attention logits must agree to float32 rounding. The exemplar warp is a listed departure (README): the released
code warps with the keys its mask *drops* (a quirk inherited from DynaST), we with the keys it keeps; the test
rebuilds the released warp from our block's own projections and mask to show that this is the only difference.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from matebit.config import model_preset
from matebit.models.correspondence import grid, tokens
from matebit.models.mat import BlockContext
from matebit.models.official import OfficialMATBlock

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "released-mat-block.safetensors"
TOL = dict(atol=2e-5, rtol=1e-4)  # float32 rounding of two differently ordered computations

# released name -> ours (weights of 1x1 Linear layers become 1x1 convolutions)
NAMES = {
    "f": "to_q", "g": "to_k", "h": "to_v", "f_prune": "prune_q", "g_prune": "prune_k",
    "spade.mlp_shared.0": "modulate.shared.0", "spade.mlp_gamma": "modulate.gamma", "spade.mlp_beta": "modulate.beta",
    "adablock.dwconv": "feed_forward.dwise", "adablock.coordatten.conv1": "feed_forward.coord.reduce",
    "adablock.coordatten.bn1": "feed_forward.coord.norm", "adablock.coordatten.conv_h": "feed_forward.coord.to_h",
    "adablock.coordatten.conv_w": "feed_forward.coord.to_w", "adablock.norm": "feed_forward.norm.norm",
    "adablock.pwconv1": "feed_forward.pwise1", "adablock.pwconv2": "feed_forward.pwise2",
}
# Parameters the released block builds but never uses in its forward (mask=None path): left unmapped.
UNUSED = ("spade.coord.", "adablock.fast_path")


def _released_state(weights: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in weights.items():
        if name.startswith(UNUSED):
            continue
        if name == "adablock.gamma":
            out["feed_forward.layer_scale"] = value.reshape(-1, 1, 1)
            continue
        module, leaf = name.rsplit(".", 1)
        target = f"{NAMES[module]}.{leaf}"
        out[target] = value.reshape(ours[target].shape)
    return out


@pytest.fixture(scope="module")
def fixture():
    data = load_file(FIXTURE)
    split = {"weights": {}, "input": {}, "output": {}}
    for key, value in data.items():
        group, name = key.split(".", 1)
        split[group][name] = value
    return split


@pytest.fixture(scope="module")
def block(fixture):
    cfg = model_preset("official", feature_channels=64, official_pos_channels=16, official_prune_channels=16,
                       spade_hidden=64, structure_channels=3)
    block = OfficialMATBlock(cfg).eval()
    state = _released_state(fixture["weights"], block.state_dict())
    block.load_state_dict(state, strict=True)  # every parameter of ours comes from the released block
    return block


def test_block_output_matches_the_released_block(fixture, block):
    inp = fixture["input"]
    ctx = BlockContext(structure=inp["seg_map"], pos=inp["pos"], exemplar_small=inp["v2"])
    with torch.no_grad():
        out, aux = block(inp["q"], inp["kv"], ctx)
    want = fixture["output"]["block"]
    torch.testing.assert_close(out, want, **TOL)
    assert (out - want).abs().max() < 1e-3 * want.abs().max()


def test_attention_logits_match_and_the_warp_differs_only_by_the_mask_side(fixture, block):
    inp = fixture["input"]
    with torch.no_grad():
        q, k, _, pq, pk = block._project(inp["q"], inp["kv"], inp["pos"])
        logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
        torch.testing.assert_close(logits, fixture["output"]["cor_map"], **TOL)
        keep = (pq @ pk.transpose(-1, -2) / pq.shape[-1]) > 0
        # The released warp: softmax over the keys the mask drops.
        released_warp = torch.softmax(logits.masked_fill(keep, -1e4), -1) @ tokens(inp["v2"])
    torch.testing.assert_close(grid(released_warp, 16, 16), fixture["output"]["warp_v2"], **TOL)
