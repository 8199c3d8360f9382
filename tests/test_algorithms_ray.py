"""rl.algorithm, rl.tracked_problems and the unseen-wording family through a whole pipeline on a local Ray cluster, in
the online loop: RLOO's group shape and stored advantages, no critic trainer or scorer when nothing reads the critic,
and evaluations that score the tracked training problems apart from the test split. (The staged loop's rounds share
the rollout's parameters, the advantages and the evaluation with it; `benchmarks/algorithms.py` runs them.)"""

import json

import pyarrow.parquet as pq
import pytest

from coderl_ray.config import load_config
from coderl_ray.data.problems import read_problems
from coderl_ray.rl.returns import group_advantages
from coderl_ray.rl.tracked import tracked_problems
from tests.conftest import ROOT

MICRO = ROOT / "tests" / "configs" / "micro.yaml"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_online_rloo_draws_one_more_sample_instead_of_the_greedy_trains_no_critic_and_scores_tracked_problems(
        ray_cluster, tmp_path):
    from coderl_ray.pipeline import run_pipeline

    out = tmp_path / "run"
    cfg = load_config(MICRO, [f"output_dir={out}", "rl.loop=online", "rl.algorithm=rloo", "rl.tracked_problems=3",
                              "rollout.problems_per_round=6", "data.suite_unseen_wording=0.3",
                              "data.reference_problems=12", "cs.enabled=false", "repair.enabled=false"])
    run_pipeline(cfg)
    state = json.loads((out / "state.json").read_text())["stages"]
    train, test = read_problems(out / "data" / "train.jsonl"), read_problems(out / "data" / "test.jsonl")

    # micro.yaml: rollout.num_samples 2, so RLOO draws 3 samples per problem and no greedy program; 6 problems a round.
    online = state["online"]["info"]
    assert online["programs"] == 6 * 3 and online["critic_steps"] == 0 and "scorer_busy" not in online
    assert not (out / "models" / "critic_round_1").exists() and not (out / "models" / "critic_online_init").exists()
    assert (out / "models" / "actor_round_1" / "config.json").is_file()
    rows = pq.read_table(out / "buffer" / "round_0001").to_pylist()
    assert len(rows) == 18 and not any(r["is_greedy"] for r in rows)
    tracked = tracked_problems(train, 3, cfg.seed)
    assert {p["problem_id"] for p in tracked} <= {r["problem_id"] for r in rows}  # every round samples them
    for pid in {r["problem_id"] for r in rows}:
        group = [r for r in rows if r["problem_id"] == pid]
        assert {r["sample_id"]: r["advantage"] for r in group} == \
            {r["sample_id"]: r["advantage"] for r in group_advantages(group, "rloo")}
        assert all(r["relative_return"] is None for r in group)  # no greedy program: no CodeRL return

    # The test split's results stay apart from the tracked problems' (the critic of a staged run reads them).
    ev = state["eval/round_1"]["info"]
    results = out / "eval" / "round_1"
    assert {r["problem_id"] for r in pq.read_table(results / "results").to_pylist()} == {p["problem_id"] for p in test}
    assert {r["problem_id"] for r in pq.read_table(results / "tracked_results").to_pylist()} == \
        {p["problem_id"] for p in tracked}
    assert ev["all"]["problems"] == len(test) and ev["groups"]["tracked"]["problems"] == 3
    # 30% of the 9 test problems (round(2.7) = 3) are in the unseen-wording family.
    assert ev["groups"]["unseen_wording"]["problems"] == sum(p.get("wording") == "unseen" for p in test) == 3
    # (a group with no problem is left out)
    assert ev["groups"].get("tracked_tests_only", {}).get("problems", 0) == sum(not p["solutions"] for p in tracked)
    assert "tracked" not in state["eval/untrained"]["info"]["groups"]  # scored from SFT on
    assert "tracked" in state["eval/sft"]["info"]["groups"]
