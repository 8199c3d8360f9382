"""The pipeline's stages after the last round, at micro scale on a real local Ray cluster: the binary critic that
critic sampling reads (critic.inference_classes=2) and the repair model (repair.enabled), with the critics' quality
in state.json and the summary."""

import json

import pytest

from coderl_ray.config import load_config
from coderl_ray.models.critic import load_critic
from coderl_ray.pipeline import run_pipeline
from tests.conftest import ROOT

MICRO = ROOT / "tests" / "configs" / "micro.yaml"


@pytest.mark.slow
def test_pipeline_trains_a_binary_critic_and_a_repair_model_after_the_last_round(ray_cluster, tmp_path):
    from coderl_ray.models.actor import load_actor
    from coderl_ray.models.tokenizer import load_tokenizer

    out = tmp_path / "run"
    cfg = load_config(MICRO, [f"output_dir={out}", "critic.inference_classes=2", "repair.enabled=true",
                              "repair.epochs=1", "repair.batch_size=8"])
    summary = run_pipeline(cfg)
    state = json.loads((out / "state.json").read_text())["stages"]
    assert list(state)[-3:] == ["eval/round_1", "critic_binary", "repair"]

    binary = state["critic_binary"]["info"]
    # micro.yaml: 24 training problems x (2 samples + 1 greedy) in round 1, plus 24 reference programs.
    assert binary["rows"] == 24 * 3 + 24
    assert load_critic(out / "models" / "critic_binary").n_classes == 2
    assert load_critic(out / "models" / "critic_round_1").n_classes == 4
    # Held out: the last evaluation's programs, 9 test problems x 2 samples (infrastructure errors left out).
    held = binary["heldout"]
    assert 0 < held["programs"] <= 9 * 2 and 0.0 <= held["accuracy"] <= 1.0 and 0.5 <= held["majority_rate"] <= 1.0
    score = state["round_1/score"]["info"]
    assert score["train"]["programs"] == 24 * 3 and score["train_accuracy"] == score["train"]["accuracy"]
    assert score["heldout"]["programs"] <= 9 * 2

    repair = state["repair"]["info"]
    assert repair["pairs"] > 0 and repair["problems"] <= 24
    assert repair["steps"] == max(1, round(repair["pairs"] / 8))  # 1 epoch of batches of 8
    assert set(repair["outcomes"]) <= {"compile_error", "runtime_error", "timeout", "failed"}
    load_actor(out / "models" / "repair")
    assert load_tokenizer(out / "models" / "repair").get_vocab() == load_tokenizer(out / "models" /
                                                                                    "actor_round_1").get_vocab()

    assert "critic_binary: acc " in summary["table"] and "round_1: acc " in summary["table"]
    assert "repair" in summary["table"]  # its wall time
