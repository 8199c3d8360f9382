"""rl.algorithm end to end without Ray: the RL objective trains on each algorithm's advantage, GRPO's and RLOO's
advantages of a real group, and which runs need the critic at all."""

import pytest
import torch

from coderl_ray.config import load_config
from coderl_ray.models.actor import load_actor
from coderl_ray.models.batching import program_batch, token_logprobs
from coderl_ray.models.tokenizer import load_tokenizer
from coderl_ray.rl.replay_buffer import ground_truth_rows
from coderl_ray.rl.returns import group_advantages
from coderl_ray.registry import needs_critic
from coderl_ray.train.objectives import rl_objective
from tests.helpers import tiny_actor_dir, tiny_suite


@pytest.fixture(scope="module")
def actor_rows(tmp_path_factory):
    actor = tiny_actor_dir(tmp_path_factory.mktemp("actor"))
    tok = load_tokenizer(actor)
    return load_actor(actor), tok.pad_token_id, ground_truth_rows(tiny_suite()[0][:4], tok, 256, 128)


def test_the_rl_objective_trains_on_the_advantage_column(actor_rows):
    model, pad, rows = actor_rows
    model.eval()  # no dropout: the same log-probs in every call
    # A group of 4 programs of one problem, no greedy program (as GRPO's rollout draws it): two passed, two failed.
    group = [{**r, "is_greedy": False, "outcome": o} for r, o in zip(rows, ["passed", "failed", "failed", "passed"])]
    scored = group_advantages(group, "rloo")
    # r = [1, -0.3, -0.3, 1], sum 1.4: RLOO gives 1 - (1.4 - 1) / 3 = 0.8667 and -0.3 - (1.4 + 0.3) / 3 = -0.8667.
    assert [round(r["advantage"], 4) for r in scored] == [0.8667, -0.8667, -0.8667, 0.8667]
    assert all(r["relative_return"] is None for r in scored)  # no greedy program: no CodeRL return
    loss, metrics = rl_objective(model, scored, pad, 4, use_critic=False)
    # -mean over programs of (A_i x mean over its tokens of log p): computed here from the model's own log-probs.
    batch = program_batch(scored, pad, "cpu")
    logp = token_logprobs(model, batch)
    mask = batch["program_mask"].float()
    per_program = (logp * mask).sum(-1) / mask.sum(-1)
    adv = torch.tensor([r["advantage"] for r in scored])
    assert loss.item() == pytest.approx(-(adv * per_program).mean().item(), abs=1e-5)
    assert metrics["mean_return"].item() == pytest.approx(0.0, abs=1e-6)  # RLOO's advantages sum to 0
    # The advantage wins over a relative return in the same row.
    stale = [{**r, "relative_return": 99.0} for r in scored]
    assert rl_objective(model, stale, pad, 4, use_critic=False)[0].item() == pytest.approx(loss.item(), abs=1e-6)


def test_critic_weights_apply_to_any_algorithms_advantage(actor_rows):
    model, pad, rows = actor_rows
    model.eval()
    group = [{**r, "is_greedy": False, "outcome": o} for r, o in zip(rows[:2], ["passed", "failed"])]
    scored = group_advantages(group, "grpo")  # r = [1, -0.3]: mean 0.35, std 0.9192: A = +-0.7071
    assert [round(r["advantage"], 4) for r in scored] == [0.7071, -0.7071]
    # A critic certain of each program's real outcome on every token (class 3 passed, 2 failed): weight 1, so the
    # critic-weighted loss equals the plain one; a uniform critic weighs every token 1/4.
    certain = [{**r, "critic_logits": ([0.0, 0.0, 0.0, 50.0] if r["outcome"] == "passed" else [0.0, 0.0, 50.0, 0.0])
                * len(r["token_ids"])} for r in scored]
    uniform = [{**r, "critic_logits": [0.0] * 4 * len(r["token_ids"])} for r in scored]
    plain = rl_objective(model, scored, pad, 4, use_critic=False)[0].item()
    assert rl_objective(model, certain, pad, 4, use_critic=True)[0].item() == pytest.approx(plain, rel=1e-5)
    assert rl_objective(model, uniform, pad, 4, use_critic=True)[0].item() == pytest.approx(plain / 4, rel=1e-5)


@pytest.mark.parametrize("overrides, needed", [
    ([], True),  # CodeRL reads the critic (and critic sampling does)
    (["cs.enabled=false"], True),  # CodeRL's token weights
    (["cs.enabled=false", "rl.algorithm=grpo"], False),
    (["cs.enabled=false", "rl.algorithm=rloo"], False),
    (["cs.enabled=false", "rl.use_critic=false"], False),  # the paper's ablation
    (["cs.enabled=false", "rl.ce_only=true"], False),  # the control trains on references only
    (["cs.enabled=false", "rl.algorithm=grpo", "rl.use_critic=true"], True),  # the combination
    (["rl.algorithm=grpo"], True),  # critic sampling reads it
    (["cs.enabled=false", "rl.algorithm=grpo", "critic.inference_classes=2"], True),  # the binary critic starts from it
])
def test_runs_that_read_no_critic_train_none(overrides, needed):
    assert needs_critic(load_config(None, overrides)) is needed


def test_staged_rounds_without_a_critic_skip_the_critic_and_score_stages_and_the_online_loop_its_roles():
    from coderl_ray import registry

    def stages(overrides):
        return [s.name for s in registry.pipeline_stages(load_config(None, overrides))]

    assert stages(["cs.enabled=false"]) == ["data", "init", "eval", "sft", "rollout", "critic", "score", "rl"]
    assert stages(["cs.enabled=false", "rl.algorithm=grpo"]) == ["data", "init", "eval", "sft", "rollout", "rl"]
    roles = [p.key for p in registry.run_roles(load_config(None, ["cs.enabled=false", "rl.algorithm=rloo",
                                                                  "rl.loop=online"]))]
    assert roles == ["generator", "sandbox", "actor_trainer"]  # no scorers, no critic trainer


def test_the_online_plan_follows_the_group_shape_and_counts_no_critic_steps_without_a_critic():
    from coderl_ray.online.loop import make_plan
    from coderl_ray.rl.tracked import tracked_problems
    from coderl_ray.stages import load_problems

    base = ["data.suite_train_problems=30", "data.suite_test_problems=3", "rollout.problems_per_round=10",
            "rollout.num_samples=4", "rollout.batch_size_per_worker=4", "rl.rounds=2", "rl.tracked_problems=6",
            "critic.epochs=1", "critic.batch_size=8", "cs.enabled=false"]
    cfg = load_config(None, base)
    train, _ = load_problems(cfg.data)
    coderl = make_plan(cfg, train, gt_rows=10)
    # 10 problems a round in batches of 4: items of 4, 4, 2 per round. The critic's rows after round r: r x 10 x (4
    # samples + 1 greedy) + 10 references -> round 1: 60 rows / 8 = 7.5 -> 8 steps; round 2: 110 / 8 = 13.75 -> 14.
    assert [len(it["problems"]) for it in coderl.items] == [4, 4, 2] * 2
    assert coderl.critic_round_ends == [8, 22] and coderl.critic_steps == 22
    grpo = make_plan(load_config(None, [*base, "rl.algorithm=grpo"]), train, gt_rows=10)
    assert grpo.items == coderl.items and grpo.rl_steps == coderl.rl_steps  # same problems, same steps
    assert grpo.critic_steps == 0 and grpo.critic_round_ends == [0, 0]
    # The combination reads the critic: 5 samples and no greedy program per problem, the same 5 rows per problem.
    combo = make_plan(load_config(None, [*base, "rl.algorithm=grpo", "rl.use_critic=true"]), train, gt_rows=10)
    assert combo.critic_round_ends == [8, 22]
    tracked = {p["problem_id"] for p in tracked_problems(train, 6, cfg.seed)}
    for r in (1, 2):  # every round samples the tracked problems
        assert tracked <= {p["problem_id"] for it in coderl.items if it["round"] == r for p in it["problems"]}


def test_the_benchmark_table_pairs_each_arm_with_the_control_of_its_seed():
    from benchmarks import algorithms

    def row(seed, arm, test, tests_only):
        return {"seed": seed, "arm": arm, "test_pass@1": test, "tracked_tests_only": tests_only, "wall_s": 10.0}

    rows = [row(0, "control", 20.0, 10.0), row(1, "control", 22.0, 12.0),
            row(0, "grpo", 21.0, 15.0), row(1, "grpo", 22.5, 18.0)]
    grpo = algorithms.summarize(rows)["grpo"]
    # tests-only: differences 5 and 6, mean 5.5, std 0.7071 (sqrt(0.5)): 5.5 > 2 x 0.7071, goal met.
    mean, std, per_seed = grpo["vs_control_tracked_tests_only"]
    assert per_seed == [5.0, 6.0] and mean == pytest.approx(5.5) and std == pytest.approx(0.5 ** 0.5)
    assert grpo["goal_tracked"] is True
    # test split: differences 1 and 0.5, mean 0.75, std 0.3536: 0.75 > 0.3536, goal met.
    assert grpo["vs_control_test_pass@1"][:2] == pytest.approx((0.75, 0.125 ** 0.5)) and grpo["goal_test"] is True
    # One seed has no spread: no verdict.
    one = algorithms.summarize([r for r in rows if r["seed"] == 0])["grpo"]
    assert one["goal_tracked"] is None and "n/a (one seed)" in algorithms.format_table(rows[::2])


def test_a_later_run_adds_its_arms_to_the_table_and_replaces_only_its_own_rows():
    from benchmarks import algorithms

    old = [{"arm": "sft", "seed": 0, "v": 1}, {"arm": "control", "seed": 0, "v": 1}, {"arm": "grpo", "seed": 0, "v": 1}]
    new = [{"arm": "sft", "seed": 0, "v": 2}, {"arm": "coderl", "seed": 0, "v": 2}, {"arm": "sft", "seed": 1, "v": 2}]
    merged = algorithms.merge_rows(old, new)
    # Table order (SFT, then the arms as ARMS lists them), seeds within an arm; the rerun's rows win.
    assert [(r["arm"], r["seed"], r["v"]) for r in merged] == [
        ("sft", 0, 2), ("sft", 1, 2), ("control", 0, 1), ("coderl", 0, 2), ("grpo", 0, 1)]

def test_the_figure_draws_every_arm_and_the_paired_differences(tmp_path):
    from benchmarks import algorithms

    rows = [{"seed": s, "arm": arm, "test_pass@1": 20.0 + s + k, "tracked_tests_only": 10.0 + 2 * k, "wall_s": 1.0}
            for s in (0, 1) for k, arm in enumerate(["sft", "control", "grpo", "rloo"])]
    algorithms.plot(rows, tmp_path / "algorithms.png")
    assert (tmp_path / "algorithms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

def test_the_plan_has_no_critic_estimates_for_a_run_without_a_critic():
    from coderl_ray.plan import make_plan

    def critic_estimates(overrides):
        stages = [e.stage for e in make_plan(load_config(None, ["cs.enabled=false", *overrides])).stages]
        return [s for s in stages if s.removeprefix("online/").split("/")[0] in ("critic", "score")]

    assert critic_estimates([]) and not critic_estimates(["rl.algorithm=grpo"])
    assert critic_estimates(["rl.loop=online"]) and not critic_estimates(["rl.loop=online", "rl.algorithm=rloo"])
