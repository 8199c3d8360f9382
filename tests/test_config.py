"""Typed config: YAML + overrides, and errors that name the key."""

import pytest

from coderl_ray.config import (ConfigError, PipelineConfig, apply_overrides, config_to_dict, diff_configs,
                               load_config)
from tests.conftest import ROOT


def test_tiny_config_loads_with_overrides():
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["rl.rounds=3", "rollout.temperature=0.8", "eval.ks=[1, 2]"])
    assert isinstance(cfg, PipelineConfig)
    assert cfg.rl.rounds == 3
    assert cfg.rollout.temperature == 0.8
    assert cfg.eval.ks == [1, 2]
    assert cfg.model.arch == "seq2seq"


def test_defaults_without_file_and_for_keys_a_file_leaves_out(tmp_path):
    # The defaults written in coderl_ray/config.py: RLConfig rounds 2, steps_per_round 60, lr 5e-4; CriticConfig
    # epochs 3.0; EvalConfig ks [1, 5]; ray_address "" (connect to a running cluster, else start Ray in-process).
    cfg = load_config(None, [])
    assert (cfg.rl.rounds, cfg.rl.steps_per_round, cfg.rl.lr) == (2, 60, 5e-4)
    assert (cfg.critic.epochs, cfg.eval.ks, cfg.ray_address) == (3.0, [1, 5], "")
    # A file that sets one key of a section keeps that section's other keys, and the other sections, at theirs.
    path = tmp_path / "partial.yaml"
    path.write_text("rl:\n  rounds: 5\n")
    partial = load_config(path)
    assert (partial.rl.rounds, partial.rl.steps_per_round, partial.rl.lr, partial.critic.epochs) == (5, 60, 5e-4, 3.0)
    # configs/tiny.yaml sets other values for those keys (rl.lr 1e-4, critic.epochs 0.5): no file means no tiny.yaml.
    tiny = load_config(ROOT / "configs" / "tiny.yaml")
    assert (tiny.rl.lr, tiny.critic.epochs) == (1e-4, 0.5)


@pytest.mark.parametrize("override, key", [
    ("rl.roundz=3", "rl.roundz"),
    ("rl.rounds=three", "rl.rounds"),
    ("rollout.temperature=[1]", "rollout.temperature"),
    ("model.arch=rnn", "model.arch"),
    ("nosuchsection.x=1", "nosuchsection"),
    ("eval.ks=[1, x]", "eval.ks[1]"),
])
def test_bad_key_or_type_names_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key.replace('[', '.').replace(']', '.')}"):
        load_config(ROOT / "configs" / "tiny.yaml", [override])


def test_invalid_combination_is_explained():
    with pytest.raises(ConfigError, match="eval.ks"):
        load_config(None, ["eval.num_samples=2", "eval.ks=[1, 5]"])
    with pytest.raises(ConfigError, match="train_path and data.test_path"):
        load_config(None, ["data.train_path=/tmp/x.jsonl"])


def test_int_accepted_for_float_but_bool_is_not_an_int():
    assert load_config(None, ["sft.lr=1"]).sft.lr == 1.0
    with pytest.raises(ConfigError, match="rl.rounds"):
        load_config(None, ["rl.rounds=true"])


def test_scientific_notation_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 (PyYAML) reads `3e-4` as a string, in files and in overrides alike.
    path = tmp_path / "c.yaml"
    path.write_text("rl:\n  lr: 3e-4\n")
    assert load_config(path).rl.lr == pytest.approx(3e-4)
    assert load_config(None, ["sft.lr=1E-3"]).sft.lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="rl.lr"):
        load_config(None, ["rl.lr=3e-4x"])


def test_missing_file_and_malformed_override(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["rl.rounds"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("rl: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_diff_configs_lists_changed_keys():
    a = config_to_dict(load_config(None, []))
    b = config_to_dict(load_config(None, ["rl.rounds=5", "sft.lr=0.5"]))
    assert diff_configs(a, b) == ["rl.rounds", "sft.lr"]
