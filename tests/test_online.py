"""The online loop (rl.loop=online) end to end on the micro config, with a generator, a sandbox executor, a critic
scorer and a trainer worker killed mid-run; and its scheduling rules, by hand."""

from __future__ import annotations

import json
import os
import signal

import pyarrow.parquet as pq
import pytest

from coderl_ray.online.schedule import Window, critic_due, due_step, may_generate, may_step, sample_rows
from tests.conftest import ROOT

MICRO = ROOT / "tests" / "configs" / "micro.yaml"


def test_items_are_spread_over_steps_and_generation_stays_within_the_staleness_bound():
    # 6 items over 8 steps: d(i) = floor(8 i / 6) = 0, 1, 2, 4, 5, 6.
    assert [due_step(i, 6, 8) for i in range(6)] == [0, 1, 2, 4, 5, 6]
    # k = 1: item 3 (due at step 4) may start once the actor has taken 3 steps, not before.
    assert not may_generate(3, 6, 8, version=2, max_staleness=1)
    assert may_generate(3, 6, 8, version=3, max_staleness=1)
    # k = 0 is synchronous: item 3 waits for version 4, the step it is due at.
    assert not may_generate(3, 6, 8, version=3, max_staleness=0)
    # Step 4 needs items 0-3 (due at 0, 1, 2, 4), not item 4 (due at 5).
    assert not may_step(4, {0, 1, 2}, 6, 8) and may_step(4, {0, 1, 2, 3}, 6, 8)


def test_admission_keeps_an_items_rows_in_the_window_until_the_next_item_is_due():
    # Fewer items than steps (the demo: an item feeds 4-5 steps): starting an item k steps before it is due would
    # make its rows k versions old on arrival, out of the window one step later, and leave the next steps without
    # RL rows. Over a grid of shapes, the first version admitted is early enough for pacing (by the item's due step)
    # and late enough that every step the item feeds, up to the next item's due step, sees its rows in the window
    # (where k allows it).
    for items in range(1, 9):
        for steps in range(1, 13):
            for k in range(0, 6):
                for i in range(items):
                    first = next(v for v in range(steps + 1) if may_generate(i, items, steps, v, k))
                    due = due_step(i, items, steps)
                    nxt = due_step(i + 1, items, steps) if i + 1 < items else steps
                    last = max(due, nxt - 1)
                    assert due - k <= first <= due, (items, steps, k, i)
                    if last - due <= k:  # the rows can stay in the window up to `last`: they do
                        assert last - first <= k, (items, steps, k, i)
                    else:  # they cannot (k shorter than the item's span): as late as pacing allows
                        assert first == due, (items, steps, k, i)


def test_a_step_trains_only_on_rows_within_the_bound_and_counts_what_ages_out_unused():
    w = Window(max_staleness=2, seed=0)
    w.add([{"sample_id": f"v0-{j}", "policy_version": 0} for j in range(3)])
    w.add([{"sample_id": f"v1-{j}", "policy_version": 1} for j in range(3)])
    first = w.batch(step=2, size=2)  # versions 0 and 1 are both within 2 of step 2
    assert len(first) == 2
    later = w.batch(step=3, size=10)  # version 0 is now 3 old: out
    assert {r["policy_version"] for r in later} == {1} and len(later) == 3
    # The version-0 rows step 2 did not draw were never trained on: dropped, and counted.
    unused_v0 = 3 - sum(r["policy_version"] == 0 for r in first)
    assert w.dropped == unused_v0
    assert w.max_seen_staleness == 2


def test_the_critic_advances_with_the_share_of_items_stored_and_batches_are_seeded():
    # 10 critic steps over 5 items: step c needs c / 2 items stored (rounded up).
    assert [critic_due(c, 10, 2, 5) for c in range(6)] == [True] * 5 + [False]
    rows = [{"i": i} for i in range(5)]
    assert sample_rows(rows, 3, "s") == sample_rows(rows, 3, "s")
    assert len(sample_rows(rows, 8, "s")) == 8  # fewer rows than asked: drawn with replacement
    assert sample_rows([], 4, "s") == []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_online_loop_survives_a_killed_generator_executor_scorer_trainer_and_driver_with_every_row_once(
        ray_cluster, tmp_path):
    from coderl_ray.config import load_config
    from coderl_ray.online import loop as online
    from coderl_ray.pipeline import StageError, run_pipeline

    killed: dict[str, int] = {}
    first_roles: list[dict] = []

    def kill_roles(event: str, info: dict) -> None:
        roles = info["roles"]
        if event == "item" and info["stored"] == 1:
            killed["generator"] = roles.generators.pids[0]
            killed["sandbox"] = roles.executors.pids[0]
            _kill(killed["generator"])
            _kill(killed["sandbox"])
        elif event == "item" and info["stored"] == 2:
            killed["scorer"] = roles.scorers.pids[0]
            _kill(killed["scorer"])
        elif event == "step" and info["step"] == 2 and "trainer" not in killed:
            killed["trainer"] = roles.trainer("actor").worker_pids()[0]
            _kill(killed["trainer"])
        elif event == "step" and info["step"] == 6 and "driver" not in killed:
            # The driver fails after round 1's checkpoint (step 4): the rerun resumes from what is stored.
            killed["driver"] = 1
            first_roles.append(roles.stats(1.0))
            raise RuntimeError("the driver dies here")

    out = tmp_path / "run"
    cfg = load_config(MICRO, [f"output_dir={out}", "data.reference_problems=16", "rl.loop=online", "rl.rounds=2",
                              "rl.max_staleness=1", "cs.enabled=false", "train.max_failures=2",
                              "train.torch_threads=2"])
    online.HOOKS.append(kill_roles)
    try:
        with pytest.raises(StageError, match="stage 'online' failed: RuntimeError: the driver dies here"):
            run_pipeline(cfg)
        run_pipeline(cfg)  # the same command again: it resumes the online stage
    finally:
        online.HOOKS.remove(kill_roles)
    assert set(killed) == {"generator", "sandbox", "scorer", "trainer", "driver"}

    state = json.loads((out / "state.json").read_text())
    info = state["stages"]["online"]["info"]
    # micro.yaml: 24 problems x (2 samples + 1 greedy) per round, 2 rounds; 4 RL steps per round.
    assert info["programs"] == 2 * 24 * 3 and info["rl_steps"] == 8
    assert info["max_staleness_trained"] <= 1 and info["dropped_stale"] >= 0
    # SFT may borrow both cores (train.torch_threads=2); the online steps, beside the other roles, keep to the
    # eighth of a CPU each trainer reserves: one thread.
    assert info["trainer_torch_threads"] == 1
    # (the steps this run took: the rerun resumed after round 1)
    assert 0 < len(info["rl_rows_each_step"]) <= 8 and info["ce_only_steps"] == info["rl_rows_each_step"].count(0)
    for r in (1, 2):
        rows = pq.read_table(out / "buffer" / f"round_{r:04d}", columns=["sample_id", "round"]).to_pylist()
        ids = [row["sample_id"] for row in rows]
        assert len(ids) == len(set(ids)) == 24 * 3 and {row["round"] for row in rows} == {r}
        assert (out / "models" / f"actor_round_{r}" / "config.json").is_file()
    # The first run's report said what was retried and restarted (the rerun's roles are new).
    roles = first_roles[0]
    for role in ("generator", "sandbox", "scorer"):
        assert roles[role]["restarts"] >= 1, (role, roles[role])
    assert roles["actor_trainer"]["restarts"] >= 1, roles["actor_trainer"]
    assert {"eval/round_1", "eval/round_2"} <= set(state["stages"])
    # Each round's critic is measured as the staged loop's score stage measures it, and the report says so.
    for r in (1, 2):
        quality = state["stages"][f"round_{r}/critic_quality"]["info"]
        assert 0 < quality["train"]["programs"] <= 24 * 3 and 0 <= quality["train_accuracy"] <= 1
        assert quality["heldout"]["programs"] > 0
    report = (out / "report" / "summary.md").read_text()
    assert "critic: accuracy" in report and "round_2  held out" in report


def test_the_online_benchmark_summary_pairs_seeds_and_prints_percentages():
    from benchmarks.online_loop import summarize

    def row(loop, seed, per_s, p1):
        return {"loop": loop, "seed": seed, "rounds_wall_s": 100.0, "programs": 3600, "programs_per_s": per_s,
                "trainer_busy": 0.5, "generator_busy": 0.5, "sft_pass@1": 0.28, "pass@1": p1}

    text = summarize([row("staged", 0, 18.0, 0.30), row("online", 0, 9.0, 0.31),
                      row("staged", 1, 10.0, 0.34), row("online", 1, 15.0, 0.33)])
    assert "programs/s online / staged: 1.00x (per seed: 0.50, 1.50)" in text
    assert "pass@1 staged: 32.0% (std 2.8, seeds 2)" in text and "pass@1 online: 32.0% (std 1.4, seeds 2)" in text
    assert "   28.0  30.0" in text  # SFT and final pass@1 of a row, in %
