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
def test_the_benchmark_runs_every_strategy_end_to_end(ray_cluster, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    save_config(load_config(ROOT / "tests" / "configs" / "micro.yaml", [f"output_dir={run}"]), run / "config.yaml")
    actor = tiny_actor_dir(tmp_path)
    shutil.copytree(actor, run / "models" / "actor_round_1")  # micro.yaml: one round
    shutil.copytree(actor, run / "models" / "repair")  # any actor folder serves as a repair model
    _critic_dir(actor, run / "models" / "critic_round_1")
    write_jsonl(tiny_suite()[1][:3], run / "data" / "test.jsonl")
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", ["critic_sampling.py", "--run", str(run), "--seeds", "0", "--budget", "3",
                                      "--passes", "2", "--first-samples", "2", "--submissions", "1,2",
                                      "--json", str(out)])
    assert critic_sampling.main() == 0
    result = json.loads(out.read_text())
    table = result["strategies"]
    assert list(table) == ["random", "filter", "filter+critic", "cs-refine", "cs-repair"]
    for row in table.values():
        assert len(row["1@k"]["values"]) == 1 and 0 <= row["1@k"]["mean"] <= row["pass@k"]["mean"] <= 1
        assert row["wall_s"]["mean"] > 0
    # A random tiny model passes no example: CS with a repair model repairs in pass 1, without one it samples.
    assert table["cs-repair"]["contributions"]["repair"]["programs"] == 3  # 3 problems x 1 program in pass 1
    assert "refine" not in table["cs-refine"].get("contributions", {})
    printed = capsys.readouterr().out
    assert "k = 3 programs per problem" in printed and "cs-repair" in printed


def _seed_row(one_at_k: float, wall: float, repaired: int | None = None) -> dict:
    row = {"metrics": {"1@k": one_at_k, "2@k": one_at_k, "pass@k": min(1.0, 2 * one_at_k)}, "wall_s": wall}
    if repaired is not None:
        empty = {"programs": 0, "new_programs": 0, "new_pass_examples": 0, "new_pass_hidden": 0, "problems": 0,
                 "newly_solved": 0}
        row["diagnostics"] = {"by_origin": {"refine": {}, "repair": {**empty, "programs": repaired,
                                                                      "problems": repaired}}}
    return row


def test_seeds_are_summarised_as_mean_and_spread_per_strategy():
    """The aggregation over seeds, on two seeds' results (the end-to-end test runs one seed: each costs minutes)."""
    seeds = [{"random": _seed_row(0.2, 10), "filter+critic": _seed_row(0.4, 10), "cs-repair": _seed_row(0.5, 30, 3)},
             {"random": _seed_row(0.4, 14), "filter+critic": _seed_row(0.4, 12), "cs-repair": _seed_row(0.7, 34, 5)}]
    table = critic_sampling.summarize(seeds, [1, 2])
    assert list(table) == ["random", "filter+critic", "cs-repair"]  # the strategies' own order, absent ones left out
    assert table["random"]["1@k"] == {"mean": pytest.approx(0.3), "std": pytest.approx(0.1414, abs=1e-4),
                                      "values": [0.2, 0.4]}
    assert table["filter+critic"]["1@k"]["std"] == 0.0 and table["cs-repair"]["wall_s"]["mean"] == 32
    repair = table["cs-repair"]["contributions"]["repair"]
    assert set(table["cs-repair"]["contributions"]) == {"repair"} and repair["programs"] == repair["problems"] == 4
    text = critic_sampling.format_table(table, [1, 2], budget=3, problems=9, seeds=2)
    assert "k = 3 programs per problem for every strategy, 2 seed(s)" in text
    assert "cs-repair / filter+critic (1@k): 1.50" in text
    assert "cs-repair, repair (mean per seed): 4 programs on 4 problems" in text
