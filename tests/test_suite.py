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
