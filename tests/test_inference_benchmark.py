"""benchmarks/critic_sampling.py runs end to end at a micro scale on a run folder laid out as the pipeline leaves it."""

import json
import shutil
import sys

import pytest

from benchmarks import critic_sampling
from coderl_ray.config import load_config, save_config
from coderl_ray.data.problems import write_jsonl
from tests.conftest import ROOT
from tests.helpers import tiny_actor_dir, tiny_suite
from tests.test_inference_ray import _critic_dir


@pytest.mark.slow
def test_the_benchmark_runs_every_strategy_over_seeds(ray_cluster, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    save_config(load_config(ROOT / "tests" / "configs" / "micro.yaml", [f"output_dir={run}"]), run / "config.yaml")
    actor = tiny_actor_dir(tmp_path)
    shutil.copytree(actor, run / "models" / "actor_round_1")  # micro.yaml: one round
    shutil.copytree(actor, run / "models" / "repair")  # any actor folder serves as a repair model
    _critic_dir(actor, run / "models" / "critic_round_1")
    write_jsonl(tiny_suite()[1][:3], run / "data" / "test.jsonl")
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", ["critic_sampling.py", "--run", str(run), "--seeds", "0", "1", "--budget", "3",
                                      "--passes", "2", "--first-samples", "2", "--submissions", "1,2",
                                      "--json", str(out)])
    assert critic_sampling.main() == 0
    result = json.loads(out.read_text())
    table = result["strategies"]
    assert list(table) == ["random", "filter", "filter+critic", "cs-refine", "cs-repair"]
    for row in table.values():
        assert len(row["1@k"]["values"]) == 2 and 0 <= row["1@k"]["mean"] <= row["pass@k"]["mean"] <= 1
        assert row["wall_s"]["mean"] > 0
    # A random tiny model passes no example: CS with a repair model repairs in pass 1, without one it samples.
    assert table["cs-repair"]["contributions"]["repair"]["programs"] == 3  # 3 problems x 1 program in pass 1
    assert "refine" not in table["cs-refine"].get("contributions", {})
    printed = capsys.readouterr().out
    assert "k = 3 programs per problem" in printed and "cs-repair" in printed
