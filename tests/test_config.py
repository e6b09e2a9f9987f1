import pytest

from matebit.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    apply_overrides,
    from_dict,
    from_json,
    model_preset,
    to_json,
)


def test_round_trip_json():
    cfg = ExperimentConfig(model=model_preset("official"))
    again = from_json(ExperimentConfig, to_json(cfg))
    assert again == cfg


def test_unknown_keys_and_wrong_types_are_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(ModelConfig, {"n_mat_block": 3})
    with pytest.raises(ConfigError, match="n_mat_blocks"):
        from_dict(ModelConfig, {"n_mat_blocks": "3"})
    with pytest.raises(ConfigError, match="mask"):
        from_dict(ModelConfig, {"mask": "sigmoid"})
    with pytest.raises(ConfigError, match="alpha: expected float"):
        from_dict(ExperimentConfig, {"model": {"alpha": True}})
    with pytest.raises(ConfigError, match="not valid JSON"):
        from_json(ModelConfig, "{bad")
    with pytest.raises(ConfigError, match="unknown preset"):
        model_preset("papr")


def test_overrides():
    cfg = apply_overrides(ExperimentConfig(), ["model.n_mat_blocks=2", "train.lr_g=0.0002", "loss.negatives=cast"])
    assert cfg.model.n_mat_blocks == 2 and cfg.train.lr_g == 2e-4 and cfg.loss.negatives == "cast"
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(ExperimentConfig(), ["model.nope=1"])
    with pytest.raises(ConfigError):
        apply_overrides(ExperimentConfig(), ["model.n_mat_blocks=two"])


def test_old_config_files_with_runtime_switches_still_load(tmp_path):
    import json
    import warnings

    from matebit.checkpoint import load_config
    from matebit.config import experiment_preset, to_dict
    old = to_dict(experiment_preset("tiny"))
    old["model"].update(attention_impl="auto", fused_min_tokens=32768)  # what every config.json held before
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the values every model had: nothing to say
        assert from_dict(ExperimentConfig, old) == experiment_preset("tiny")
        # A config.json as save_pretrained wrote it then (the face model shipped up to commit 05c2ec4 had one).
        folder = tmp_path / "old-model"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"_class": "ExperimentConfig", "_matebit_version": "0.1.0",
                                                        **old}))
        assert load_config(folder) == experiment_preset("tiny")
    old["model"].update(attention_impl="fused")  # a choice the file can no longer make
    with pytest.warns(UserWarning, match="model.attention_impl = 'fused' is ignored: it is a runtime setting"):
        assert from_dict(ExperimentConfig, old) == experiment_preset("tiny")
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(experiment_preset("tiny"), ["model.attention_impl=fused"])
