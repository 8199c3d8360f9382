"""The whole pipeline on a real local Ray cluster: every stage, outputs, resume, and a crashed stage."""

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from coderl_ray.config import load_config
from coderl_ray.pipeline import StageError, run_pipeline
from tests.conftest import ROOT
from tests.helpers import DIE_AT_ROW_150, run_killed

MICRO = ROOT / "tests" / "configs" / "micro.yaml"
# A third of the training problems have no reference solution: RL alone learns from them.
REFS = "data.reference_problems=16"
# The stages after the last round too: a binary critic for critic sampling and the repair model.
AFTER = ["critic.inference_classes=2", "repair.enabled=true", "repair.epochs=1", "repair.batch_size=8"]

# Three runs of the micro pipeline in one test: up to ~10 min each on a loaded 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_crashed_stage_names_the_cause_and_a_rerun_resumes_after_finished_stages(ray_cluster, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="critic.backbone: /nonexistent/backbone does not exist"):
        run_pipeline(load_config(MICRO, [f"output_dir={out}", REFS, *AFTER, "critic.backbone=/nonexistent/backbone"]))
    assert not out.exists()  # checked before any work

    not_a_model = tmp_path / "empty-folder"
    not_a_model.mkdir()
    broken = load_config(MICRO, [f"output_dir={out}", REFS, *AFTER, f"critic.backbone={not_a_model}",
                                 "train.max_failures=0"])
    with pytest.raises(StageError) as err:
        run_pipeline(broken)
    msg = str(err.value)
    assert "round_1/critic" in msg and str(not_a_model) in msg and "rerun" in msg
    done = json.loads((out / "state.json").read_text())["stages"]
    assert list(done) == ["data", "init", "eval/untrained", "sft", "eval/sft", "round_1/rollout"]
    capsys.readouterr()

    fixed = load_config(MICRO, [f"output_dir={out}", REFS, *AFTER])
    summary = run_pipeline(fixed)
    printed = capsys.readouterr().out
    for stage in ["data", "init", "eval/untrained", "sft", "eval/sft", "round_1/rollout"]:
        assert f"==> {stage}: finished in an earlier run, skipped" in printed
    assert "changed config keys: critic.backbone" in printed
    state = json.loads((out / "state.json").read_text())["stages"]
    assert list(state) == ["data", "init", "eval/untrained", "sft", "eval/sft", "round_1/rollout", "round_1/critic",
                           "round_1/score", "round_1/rl", "eval/round_1", "critic_binary", "repair", "cs"]
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
    _check_binary_critic_and_repair(out, state, summary)

    # A third run has nothing left to do, starts no role and keeps the roles record of the run that did the work.
    roles = json.loads((out / "state.json").read_text())["roles"]
    assert roles["startup_s"]["generator"] > 0
    run_pipeline(fixed)
    assert "==> cs: finished in an earlier run, skipped" in capsys.readouterr().out
    assert json.loads((out / "state.json").read_text())["roles"] == roles


def _check_binary_critic_and_repair(out: Path, state: dict, summary: dict) -> None:
    """The stages after the last round: the binary critic (critic.inference_classes=2) and the repair model
    (repair.enabled), their quality in state.json and the summary, and critic sampling reading both."""
    from coderl_ray.models.actor import load_actor
    from coderl_ray.models.critic import load_critic
    from coderl_ray.models.tokenizer import load_tokenizer

    binary = state["critic_binary"]["info"]
    # micro.yaml: 24 training problems x (2 samples + 1 greedy) in round 1, plus the 16 problems' reference programs.
    gt_rows = pq.read_table(out / "data" / "ground_truth").num_rows
    assert binary["rows"] == 24 * 3 + gt_rows
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
    # Critic sampling reads what the two stages trained.
    assert state["cs"]["info"]["critic"] == "critic_binary" and state["cs"]["info"]["repair"] is True

    assert re.search(r"^  critic_binary  held out \d+\.\d% \(\d+\.\d%\) ", summary["table"], re.M)
    assert re.search(r"^  round_1 +held out ", summary["table"], re.M)
    assert re.search(r"^  repair +\d", summary["table"], re.M)  # its wall time


# --- a driver killed mid-stage -------------------------------------------------------------------------------


def test_an_execute_command_killed_mid_write_reruns_with_every_row_once(ray_cluster, tmp_path):
    """SIGKILL of the execute command's driver leaves its `.tmp` file (JSON Lines, written row by row); rerunning
    the same command gives every sample exactly one row. (The rollout and score stages, whose drivers are killed
    as they rename their `.tmp` folders: tests/test_cluster_stage_jobs.py.)"""
    from coderl_ray.cli import main
    from coderl_ray.data.problems import write_jsonl

    # The driver dies after 150 of 200 result rows, some of them already in its .tmp file.
    add = {"problem_id": "add", "question": "Add two numbers.",
           "tests": {"kind": "stdio", "inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]}}
    write_jsonl([add], tmp_path / "problems.jsonl")
    code = "a, b = map(int, input().split())\nprint(a + b)"
    samples = [{"problem_id": "add", "sample_id": f"add-{i}", "code": code} for i in range(200)]
    write_jsonl(samples, tmp_path / "samples.jsonl")
    results = tmp_path / "results.jsonl"
    execute = ["execute", "--problems", str(tmp_path / "problems.jsonl"), "--samples", str(tmp_path / "samples.jsonl"),
               "--out", str(results), "--num-workers", "1"]
    # The killed driver joins this session's cluster.
    run_killed(DIE_AT_ROW_150, [*execute, "--address", ray_cluster.get_runtime_context().gcs_address],
               tmp_path / "killed.log")
    partial = results.with_name(results.name + ".tmp")
    # 149 rows of ~180 bytes went through an 8 KiB write buffer: more than a hundred reached the file.
    written = partial.read_text().count("\n")
    assert 0 < written < len(samples) and not results.exists(), written

    assert main(execute) == 0
    done = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["sample_id"] for r in done] == [s["sample_id"] for s in samples]
    assert {r["outcome"] for r in done} == {"passed"} and not partial.exists()
