"""What the critic trains on: sampled programs, greedy baselines (unless switched off, as in the original) and
reference programs as "passed"."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coderl_ray.config import load_config
from coderl_ray.stages import critic_dataset


def test_critic_rows_with_and_without_the_greedy_baselines(ray_cluster, tmp_path):
    import ray

    buffer = [{"problem_id": f"p{i // 3}", "is_greedy": i % 3 == 2, "prompt_ids": [1, 2], "token_ids": [3, i],
               "outcome": "failed" if i % 3 == 2 else "passed"} for i in range(9)]  # 3 problems x (2 samples + greedy)
    (tmp_path / "gt").mkdir()
    pq.write_table(pa.Table.from_pylist([{"prompt_ids": [1, 2], "token_ids": [9], "outcome": "passed"}] * 2),
                   tmp_path / "gt" / "part-0.parquet")
    ds = ray.data.from_items(buffer)

    def rows(*overrides):
        return sorted((tuple(r["token_ids"]), r["outcome"])
                      for r in critic_dataset(load_config(None, list(overrides)), ds, tmp_path / "gt").take_all())

    everything = rows()
    assert len(everything) == 9 + 2
    assert sum(o == "failed" for _, o in everything) == 3  # the 3 greedy programs
    original = rows("critic.include_greedy=false")
    assert len(original) == 6 + 2 and all(o == "passed" for _, o in original)
    assert len(rows("critic.include_greedy=false", "critic.include_ground_truth=false")) == 6


def test_mixed_problems_keeps_only_problems_whose_programs_both_pass_and_fail(ray_cluster, tmp_path):
    import ray

    outcomes = {"all_pass": ["passed", "passed"], "all_fail": ["failed", "timeout"],
                "mixed": ["passed", "runtime_error"], "infra": ["passed", "infra_error"]}
    buffer = [{"problem_id": pid, "is_greedy": False, "prompt_ids": [1], "token_ids": [k, i], "outcome": o}
              for k, (pid, os_) in enumerate(outcomes.items()) for i, o in enumerate(os_)]
    (tmp_path / "gt").mkdir()
    pq.write_table(pa.Table.from_pylist([{"problem_id": pid, "prompt_ids": [1], "token_ids": [9, k],
                                          "outcome": "passed"} for k, pid in enumerate(outcomes)]),
                   tmp_path / "gt" / "part-0.parquet")
    cfg = load_config(None, ["critic.data=mixed_problems"])
    rows = critic_dataset(cfg, ray.data.from_items(buffer), tmp_path / "gt").take_all()
    # "mixed" only (an infrastructure failure is no label): its two programs and its reference.
    assert sorted(tuple(r["token_ids"]) for r in rows) == [(2, 0), (2, 1), (9, 2)]

    only_pass = ray.data.from_items([r for r in buffer if r["outcome"] == "passed"])
    with pytest.raises(ValueError, match="critic.data=mixed_problems: no problem"):
        critic_dataset(cfg, only_pass, tmp_path / "gt")
