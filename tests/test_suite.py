"""The embedded task suite: valid canonical records, seeded, compositional train/test split, correct references."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from coderl_ray.data.problems import validate_problem
from coderl_ray.data.suite import DIFFICULTIES, all_combos, generate_split, generate_suite, split_combos
from coderl_ray.sandbox import SandboxLimits, execute


@pytest.fixture(scope="module")
def suite():
    return generate_suite(seed=3, n_train=60, n_test=30)


def test_records_are_canonical_and_cover_tiers_and_kinds(suite):
    train, test = suite
    for p in train + test:
        validate_problem(p)
        assert p["example_tests"]["inputs"] and p["tests"]["inputs"]
    for split in (train, test):
        assert {p["difficulty"] for p in split} == set(DIFFICULTIES)
        assert {p["tests"]["kind"] for p in split} == {"stdio", "call"}


def test_same_seed_same_suite_different_seed_different_suite():
    assert generate_split("train", 20, 1) == generate_split("train", 20, 1)
    a, b = generate_split("train", 20, 1), generate_split("train", 20, 2)
    assert [p["question"] for p in a] != [p["question"] for p in b]


def test_test_split_holds_only_unseen_combinations(suite):
    train, test = suite
    for d in DIFFICULTIES:
        tr, te = split_combos(d)
        assert not set(tr) & set(te)
        assert len(tr) + len(te) == len(all_combos(d))
    assert not {p["combo"] for p in train} & {p["combo"] for p in test}
    assert not {p["problem_id"] for p in train} & {p["problem_id"] for p in test}


def test_example_tests_are_quoted_in_the_question(suite):
    for p in suite[0][:20]:
        ex = p["example_tests"]
        if ex["kind"] == "stdio":
            assert ex["inputs"][0] in p["question"] and ex["outputs"][0] in p["question"]
        else:
            assert f"{p['fn_name']}({ex['inputs'][0][0]}) == {ex['outputs'][0]}" in p["question"]


def test_reference_solutions_pass_hidden_and_example_tests(suite):
    problems = suite[0] + suite[1]

    def run(p):
        return (execute(p, p["solutions"][0], limits=SandboxLimits(timeout_s=5)).outcome.value,
                execute(p, p["solutions"][0], limits=SandboxLimits(timeout_s=5, example_tests=True)).outcome.value)

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(run, problems))
    assert outcomes == [("passed", "passed")] * len(problems)


def test_hidden_tests_reject_a_program_that_forgets_a_step():
    # Interview problems have a filter and a map; dropping the map line must fail the hidden tests.
    p = next(p for p in generate_split("train", 12, 0) if p["difficulty"] == "interview")
    lines = p["solutions"][0].splitlines()
    map_line = next(i for i, ln in enumerate(lines) if "for x in a]" in ln and " if " not in ln)
    broken = "\n".join(lines[:map_line] + lines[map_line + 1:])
    assert execute(p, broken).outcome.value == "failed"


# --- the unseen-wording family (data.suite_unseen_wording) ------------------------------------------------------


def test_unseen_wording_family_has_an_exact_share_and_leaves_the_other_problems_unchanged():
    plain = generate_split("train", 40, 5)
    mixed = generate_split("train", 40, 5, unseen_wording=0.25)
    family = [i for i, p in enumerate(mixed) if p.get("wording") == "unseen"]
    assert len(family) == 10 and not any("wording" in p for p in plain)  # only the family's problems are marked
    assert all(mixed[i] == plain[i] for i in range(40) if i not in family)
    assert [p["problem_id"] for p in mixed] == [p["problem_id"] for p in plain]
    assert sum(p.get("wording") == "unseen" for p in generate_split("test", 30, 5, unseen_wording=0.25)) == 8  # 7.5
    with pytest.raises(ValueError, match=r"unseen_wording is a share of the problems, in \[0, 1\]; got 1.5"):
        generate_split("train", 4, 0, unseen_wording=1.5)


def test_unseen_wording_problems_spell_out_exactly_one_constant_and_the_reference_has_its_digit():
    import re

    from coderl_ray.data.suite import NUMBER_WORDS

    train = generate_split("train", 60, 2, unseen_wording=0.3)
    test = generate_split("test", 30, 2, unseen_wording=0.3)
    words = {w: k for k, w in NUMBER_WORDS.items()}
    for p in train + test:
        statement = p["question"].lower().split("example")[0]
        used = [w for w in re.findall(r"[a-z]+", statement) if w in words]
        assert len(used) == (1 if p.get("wording") == "unseen" else 0)  # one spelled-out constant in the family
        if used and p["solutions"]:
            # The reference writes that constant as digits: "greater than seven" -> x > 7.
            assert re.search(rf"[ *+%<>-] ?{words[used[0]]}\b", p["solutions"][0])
    # Training problems of the family keep question and tests, never a reference solution; test problems keep one.
    assert all(not p["solutions"] and p["tests"]["inputs"] for p in train if p.get("wording") == "unseen")
    assert all(p["solutions"] for p in train + test if "wording" not in p)
    assert all(p["solutions"] for p in test)


def test_withheld_references_of_the_family_pass_their_tests():
    problems = [p for p in generate_split("train", 30, 4, unseen_wording=0.5, withhold_references=False)
                if p.get("wording") == "unseen"]
    withheld = {p["problem_id"] for p in generate_split("train", 30, 4, unseen_wording=0.5) if not p["solutions"]}
    assert {p["problem_id"] for p in problems} == withheld and len(problems) == 15
    for p in problems:
        assert execute(p, p["solutions"][0], limits=SandboxLimits(timeout_s=5)).outcome.value == "passed"


def test_the_family_is_a_data_config_key():
    from coderl_ray.config import ConfigError, DataConfig, load_config
    from coderl_ray.stages import load_problems

    train, test = load_problems(DataConfig(suite_train_problems=20, suite_test_problems=8, suite_unseen_wording=0.5))
    assert sum(not p["solutions"] for p in train) == 10 and sum(p.get("wording") == "unseen" for p in test) == 4
    with pytest.raises(ConfigError, match=r"data.suite_unseen_wording is a share in \[0, 1\], got -0.1"):
        load_config(None, ["data.suite_unseen_wording=-0.1"])
