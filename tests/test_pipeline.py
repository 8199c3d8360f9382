"""The whole pipeline on a real local Ray cluster: every stage, outputs, resume, and a crashed stage."""

import json

import pyarrow.parquet as pq
import pytest

from coderl_ray.config import load_config
from coderl_ray.pipeline import StageError, run_pipeline
from tests.conftest import ROOT

MICRO = ROOT / "tests" / "configs" / "micro.yaml"
# A third of the training problems have no reference solution: RL alone learns from them.
REFS = "data.reference_problems=16"

pytestmark = pytest.mark.slow


def test_crashed_stage_names_the_cause_and_a_rerun_resumes_after_finished_stages(ray_cluster, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="critic.backbone: /nonexistent/backbone does not exist"):
        run_pipeline(load_config(MICRO, [f"output_dir={out}", REFS, "critic.backbone=/nonexistent/backbone"]))
    assert not out.exists()  # checked before any work

    not_a_model = tmp_path / "empty-folder"
    not_a_model.mkdir()
    broken = load_config(MICRO, [f"output_dir={out}", REFS, f"critic.backbone={not_a_model}",
                                     "train.max_failures=0"])
    with pytest.raises(StageError) as err:
        run_pipeline(broken)
    msg = str(err.value)
    assert "round_1/critic" in msg and str(not_a_model) in msg and "rerun" in msg
    done = json.loads((out / "state.json").read_text())["stages"]
    assert list(done) == ["data", "init", "eval/untrained", "sft", "eval/sft", "round_1/rollout"]
    capsys.readouterr()

    fixed = load_config(MICRO, [f"output_dir={out}", REFS])
    summary = run_pipeline(fixed)
    printed = capsys.readouterr().out
    for stage in ["data", "init", "eval/untrained", "sft", "eval/sft", "round_1/rollout"]:
        assert f"==> {stage}: finished in an earlier run, skipped" in printed
    assert "changed config keys: critic.backbone" in printed
    state = json.loads((out / "state.json").read_text())["stages"]
    assert list(state) == ["data", "init", "eval/untrained", "sft", "eval/sft", "round_1/rollout", "round_1/critic",
                           "round_1/score", "round_1/rl", "eval/round_1", "cs"]
    assert {k: v["wall_s"] for k, v in state.items() if k in done} == {k: v["wall_s"] for k, v in done.items()}

    # Outputs of every stage.
    for model in ["actor_init", "actor_sft", "critic_round_1", "actor_round_1"]:
        assert (out / "models" / model / "config.json").is_file()
    assert (out / "models" / "critic_round_1" / "critic_head.safetensors").is_file()
    buffer = pq.read_table(out / "buffer" / "round_0001").to_pylist()
    assert len(buffer) == 24 * (2 + 1)  # 2 samples + 1 greedy per training problem, with a reference or not
    assert len({r["problem_id"] for r in pq.read_table(out / "data" / "ground_truth").to_pylist()}) == 16
    assert len({r["sample_id"] for r in buffer}) == len(buffer)
    assert all(r["relative_return"] is not None for r in buffer if r["outcome"] != "infra_error")
    scored = pq.read_table(out / "scored" / "round_1").to_pylist()
    assert all(len(r["critic_logits"]) == 4 * len(r["token_ids"]) for r in scored)
    report = out / "eval" / "round_1" / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["by_difficulty"]) == {"introductory", "interview", "competition"}
    assert (report / "pass_at_k.png").is_file() and (report / "report.md").is_file()
    assert set(state["eval/round_1"]["info"]) >= {"all", "introductory", "interview", "competition"}
    assert "untrained" in summary["table"] and "round_1" in summary["table"]
    # Critic sampling on the test split with the last actor and critic, next to plain sampling at the same budget.
    cs = json.loads((out / "eval" / "cs" / "metrics.json").read_text())
    assert set(cs["strategies"]) == {"random", "filter", "filter+critic", "cs"} and cs["budget"] == 3
    assert pq.read_table(out / "eval" / "cs" / "cs" / "results.parquet").num_rows == 9 * 3
    assert "round_1 + CS" in summary["table"] and "round_1 + filter+critic" in summary["table"]
    assert (out / "report" / "pass_at_1.png").stat().st_size > 1000

    # A third run has nothing left to do.
    run_pipeline(fixed)
    assert "==> cs: finished in an earlier run, skipped" in capsys.readouterr().out
