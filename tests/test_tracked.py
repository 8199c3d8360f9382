"""The tracked training problems (rl.tracked_problems): a fixed set every round samples and every evaluation scores,
and the named groups an evaluation reports pass@k on."""

import pytest

from coderl_ray.config import ConfigError, DataConfig, load_config
from coderl_ray.rl.tracked import draw_round, eval_groups, group_pass_at_k, tracked_problems
from coderl_ray.stages import load_problems, round_problems


def _train(n=40, refs=10, seed=0):
    train, _ = load_problems(DataConfig(suite_seed=seed, suite_train_problems=n, suite_test_problems=3,
                                        reference_problems=refs))
    return train


def test_tracked_problems_are_seeded_kept_in_order_and_mix_references_and_tests_only():
    train = _train(400, refs=100)
    tracked = tracked_problems(train, 80, seed=0)
    assert len(tracked) == 80 and tracked == tracked_problems(train, 80, seed=0)
    order = [p["problem_id"] for p in train]
    assert [order.index(p["problem_id"]) for p in tracked] == sorted(order.index(p["problem_id"]) for p in tracked)
    assert {p["problem_id"] for p in tracked_problems(train, 80, seed=1)} != {p["problem_id"] for p in tracked}
    assert 8 <= sum(bool(p["solutions"]) for p in tracked) <= 32  # a quarter have references: expected 20
    with pytest.raises(ValueError, match="rl.tracked_problems=401, but there are only 400 training problems"):
        tracked_problems(train, 401, seed=0)


@pytest.mark.parametrize("round_", [1, 2, 3])
def test_every_round_samples_the_tracked_problems_within_its_budget(round_):
    train = _train(200)
    tracked = tracked_problems(train, 20, seed=0)
    drawn = round_problems(train, 50, 0, round_, tracked=20)
    ids = [p["problem_id"] for p in drawn]
    assert len(ids) == len(set(ids)) == 50
    assert {p["problem_id"] for p in tracked} <= set(ids)
    # Without tracked problems a round draws what it drew before they existed.
    import random

    assert round_problems(train, 50, 0, round_) == random.Random(0 * 1000 + round_).sample(train, 50)
    assert draw_round(train, 0, 0, round_, tracked) == train  # per_round 0: every problem, tracked included


def test_more_tracked_problems_than_a_round_samples_is_an_error_naming_both_keys():
    train = _train(60)
    with pytest.raises(ValueError, match=r"rl.tracked_problems=30 exceeds rollout.problems_per_round=20"):
        draw_round(train, 20, 0, 1, tracked_problems(train, 30, 0))
    with pytest.raises(ConfigError, match="rl.tracked_problems must be >= 0"):
        load_config(None, ["rl.tracked_problems=-1"])


def test_eval_groups_name_the_unseen_wording_and_tracked_subsets():
    test = [{"problem_id": "t1", "wording": "unseen"}, {"problem_id": "t2", "wording": "seen"}, {"problem_id": "t3"}]
    tracked = [{"problem_id": "a", "solutions": ["x"], "wording": "seen"},
               {"problem_id": "b", "solutions": [], "wording": "unseen"},
               {"problem_id": "c", "solutions": [], "wording": "seen"}]
    assert eval_groups(test, tracked) == {"unseen_wording": ["t1"], "tracked": ["a", "b", "c"],
                                          "tracked_tests_only": ["b", "c"], "tracked_unseen_wording": ["b"]}
    assert eval_groups(test[1:], []) == {}  # nothing to report: no key at all


def test_group_pass_at_k_averages_over_the_groups_problems():
    problems = [{"problem_id": p} for p in "abc"]

    def rows(pid, outcomes):
        return [{"problem_id": pid, "sample_id": f"{pid}{i}", "outcome": o} for i, o in enumerate(outcomes)]

    results = rows("a", ["passed", "failed"]) + rows("b", ["failed", "failed"]) + rows("c", ["passed", "passed"])
    got = group_pass_at_k(problems, results, [1, 2], {"ab": ["a", "b"], "c": ["c"]})
    # a: pass@1 = 1/2, pass@2 = 1; b: 0, 0 -> group ab: pass@1 = 0.25, pass@2 = 0.5. c: 1, 1.
    assert got == {"ab": {"pass@1": 0.25, "pass@2": 0.5, "problems": 2},
                   "c": {"pass@1": 1.0, "pass@2": 1.0, "problems": 1}}
    with pytest.raises(ValueError, match="group 'x' names problem 'z'"):
        group_pass_at_k(problems, results, [1], {"x": ["z"]})


def test_algorithm_sets_the_critic_default_and_unknown_names_are_config_errors():
    assert load_config(None, []).rl.use_critic is True  # coderl: the critic's token-level weights
    assert load_config(None, ["rl.algorithm=grpo"]).rl.use_critic is False
    assert load_config(None, ["rl.algorithm=rloo", "rl.use_critic=true"]).rl.use_critic is True  # the combination
    with pytest.raises(ConfigError, match=r"rl.algorithm' must be one of \['coderl', 'grpo', 'rloo'\]"):
        load_config(None, ["rl.algorithm=ppo"])
