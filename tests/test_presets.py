"""The preset registry gives every preset exactly the config (and help line) it had before the registry existed.

`fixtures/presets-05c2ec4.json` was written by the old code (MODEL_PRESETS, PRESET_HELP, LOSS_PRESETS and the
if/elif in experiment_preset) at commit 05c2ec4: {name: {"help": ..., "config": to_dict(experiment_preset(name))}}.
"""

import json
from pathlib import Path

import pytest

from matebit.config import PRESETS, ConfigError, TrainConfig, WarpConfig, experiment_preset, to_dict

SNAPSHOT = json.loads((Path(__file__).parent / "fixtures" / "presets-05c2ec4.json").read_text())
# Changed on purpose since the snapshot: the face recipe trains on aligned, varied portraits (data/portraits.py), so
# the exemplar-only backdrop recolouring is off and the budget is longer.
CHANGED = {name: {"train": {"steps": 3000, "decay_start": 2000, "keep_checkpoints": 5, "recolour_background": 0.0}}
           for name in ("faces", "faces-full-corr")}


def test_the_registry_has_the_same_presets_in_the_same_order():
    assert list(PRESETS) == list(SNAPSHOT)  # `matebit info` lists them in this order


# The runtime switches that left ModelConfig afterwards (MATEBITGenerator.set_attention); every preset had these.
RUNTIME = {"attention_impl": "auto", "fused_min_tokens": 32768}


@pytest.mark.parametrize("name", list(SNAPSHOT))
def test_every_preset_gives_the_config_it_gave_before(name):
    assert PRESETS[name].help == SNAPSHOT[name]["help"]
    want = json.loads(json.dumps(SNAPSHOT[name]["config"]))
    for section, values in CHANGED.get(name, {}).items():
        want[section].update(values)
    assert {k: want["model"][k] for k in RUNTIME} == RUNTIME
    want = {**want, "model": {k: v for k, v in want["model"].items() if k not in RUNTIME}}
    assert to_dict(experiment_preset(name)) == want


def test_warp_strength_is_declared_once():
    # TrainConfig's warp fields default to WarpConfig's; their ranges are the bounds table's (matebit/bounds.py).
    t = TrainConfig()
    assert t.warp == WarpConfig()
    assert experiment_preset("faces").train.warp == WarpConfig(rotation=15.0, scale=0.15, translation=0.08)
    with pytest.raises(ConfigError, match="warp_zoom must be a number, at least 0 and below 1"):
        TrainConfig(warp_zoom=1.0)
    with pytest.raises(ConfigError, match="warp_rotation must be a number, at least 0"):
        TrainConfig(warp_rotation=-1.0)
