"""Which training problems keep their reference solutions (SFT data) and which are left to RL (tests only)."""

import pytest

from coderl_ray.config import ConfigError, DataConfig, load_config
from coderl_ray.stages import keep_references, load_problems, round_problems


def test_reference_problems_keeps_solutions_on_a_seeded_subset_and_tests_on_all():
    full, test = load_problems(DataConfig(suite_train_problems=40, suite_test_problems=6))
    train, test_again = load_problems(DataConfig(suite_train_problems=40, suite_test_problems=6, reference_problems=10))
    assert [p["problem_id"] for p in train] == [p["problem_id"] for p in full]  # every problem stays, for RL
    assert test_again == test
    with_refs = [p for p in train if p["solutions"]]
    assert len(with_refs) == 10
    by_id = {p["problem_id"]: p for p in full}
    assert all(p["solutions"] == by_id[p["problem_id"]]["solutions"] for p in with_refs)
    assert all(p["tests"] == by_id[p["problem_id"]]["tests"] for p in train)
    # Same seed, same subset; another suite seed, another one.
    again, _ = load_problems(DataConfig(suite_train_problems=40, suite_test_problems=6, reference_problems=10))
    assert [p["problem_id"] for p in again if p["solutions"]] == [p["problem_id"] for p in with_refs]
    other = keep_references(full, 10, seed=1)
    assert {p["problem_id"] for p in other if p["solutions"]} != {p["problem_id"] for p in with_refs}


def test_more_reference_problems_than_solutions_is_an_error_naming_the_key():
    full, _ = load_problems(DataConfig(suite_train_problems=8, suite_test_problems=3))
    unsolved = [{**p, "solutions": []} if i % 2 else p for i, p in enumerate(full)]
    with pytest.raises(ValueError, match=r"data.reference_problems=5, but only 4 training problems have a reference"):
        keep_references(unsolved, 5, seed=0)
    with pytest.raises(ConfigError, match="data.reference_problems must be >= 0"):
        load_config(None, ["data.reference_problems=-1"])


def test_sft_data_comes_only_from_problems_with_references(tmp_path):
    from coderl_ray.models.tokenizer import train_tokenizer
    from coderl_ray.rl.replay_buffer import ground_truth_rows

    train, _ = load_problems(DataConfig(suite_train_problems=20, suite_test_problems=3, reference_problems=5))
    tokenizer = train_tokenizer([p["question"] for p in train] + [s for p in train for s in p["solutions"]],
                                tmp_path / "tok", vocab_size=300)
    rows = ground_truth_rows(train, tokenizer, 256, 96)
    assert {r["problem_id"] for r in rows} == {p["problem_id"] for p in train if p["solutions"]}
    assert len({r["problem_id"] for r in rows}) == 5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rounds_draw_problems_with_and_without_references_in_proportion(seed):
    # The reference subset and the rounds' draws must come from different random streams: with the same stream a
    # round drew (almost) only the problems SFT had seen, and the next round (almost) only the others.
    train, _ = load_problems(DataConfig(suite_seed=seed, suite_train_problems=400, suite_test_problems=3,
                                        reference_problems=100))
    for round_ in (1, 2, 3):
        drawn = round_problems(train, 100, seed, round_)
        assert len({p["problem_id"] for p in drawn}) == 100
        assert 10 <= sum(bool(p["solutions"]) for p in drawn) <= 40  # expected 25
