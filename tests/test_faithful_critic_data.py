"""What the critic trains on: sampled programs, greedy baselines (unless switched off, as in the original) and
reference programs as "passed"."""

import pyarrow as pa
import pyarrow.parquet as pq

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
