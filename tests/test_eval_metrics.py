"""pass@k and n@k against brute-force enumeration; the summary's numbers worked out by hand."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from coderl_ray.eval.metrics import n_at_k, pass_at_k, summarize


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (the first c correct) that contain a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def brute_n_at_k(correct, filtered, n, k, scores) -> float:
    """Enumerate every k-subset; the filtered samples present come first, then the others, each group ranked by
    score or (without scores) every choice of the submissions among them."""
    total = 0.0
    n = min(n, k)
    subsets = list(itertools.combinations(range(len(correct)), k))
    for subset in subsets:
        kept = [i for i in subset if filtered[i]]
        others = [i for i in subset if not filtered[i]]
        if scores is not None:
            chosen = (sorted(kept, key=lambda i: -scores[i]) + sorted(others, key=lambda i: -scores[i]))[:n]
            total += any(correct[i] for i in chosen)
        elif len(kept) >= n:
            choices = list(itertools.combinations(kept, n))
            total += sum(any(correct[i] for i in ch) for ch in choices) / len(choices)
        else:
            choices = [kept + list(ch) for ch in itertools.combinations(others, n - len(kept))]
            total += sum(any(correct[i] for i in ch) for ch in choices) / len(choices)
    return total / len(subsets)


def test_pass_at_k_matches_brute_force():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_by_hand_and_limits():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # 1 - C(7,5)/C(10,5) = 1 - 21/252
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(200, 13, 100) == pytest.approx(1 - math.comb(187, 100) / math.comb(200, 100))
    with pytest.raises(ValueError, match="at least 6 samples"):
        pass_at_k(5, 1, 6)


def test_n_at_k_matches_brute_force():
    rng = random.Random(7)
    for _ in range(300):
        size = rng.randint(1, 8)
        k, n = rng.randint(1, size), rng.randint(1, 4)
        correct = [rng.random() < 0.4 for _ in range(size)]
        filtered = [rng.random() < 0.7 for _ in range(size)]
        scores = [rng.choice([0.1, 0.5, 0.9, rng.random()]) for _ in range(size)] if rng.random() < 0.5 else None
        expected = brute_n_at_k(correct, filtered, n, k, scores)
        assert n_at_k(correct, filtered, n, k, scores) == pytest.approx(expected, abs=1e-12)


def test_n_at_k_by_hand():
    correct = [True, False, False, False]
    # Nothing filtered out, 1 submission of 4 drawn: a random sample, 1/4 right.
    assert n_at_k(correct, [True] * 4, n=1, k=4) == pytest.approx(0.25)
    # The filter removes the three wrong ones: whenever the right sample is drawn it is submitted; 1@2 = P(drawn)
    # = 1 - C(3,2)/C(4,2) = 1/2.
    assert n_at_k(correct, [True, False, False, False], n=1, k=2) == pytest.approx(0.5)
    # A critic that ranks the right sample last only helps once all four are drawn and 4 may be submitted.
    scores = [0.0, 0.3, 0.2, 0.1]
    assert n_at_k(correct, [True] * 4, n=1, k=4, scores=scores) == 0.0
    assert n_at_k(correct, [True] * 4, n=4, k=4, scores=scores) == 1.0
    # n > k submits the k drawn: 5@4 = 4@4.
    assert n_at_k(correct, [True] * 4, n=5, k=4, scores=scores) == 1.0
    with pytest.raises(ValueError, match="1 <= k <= the 4 samples"):
        n_at_k(correct, [True] * 4, n=1, k=5)


def test_n_at_k_fills_the_slots_the_filter_leaves_empty():
    # Only the right sample fails the filter (its example run said "failed"), all 4 drawn (k = 4). 1@4: the first
    # of the three filtered wrong ones: 0. 2@4: the three filtered fill both slots: 0. 4@4: the 3 filtered and then
    # the right one: 1.
    correct, filtered = [True, False, False, False], [False, True, True, True]
    assert [n_at_k(correct, filtered, n, 4) for n in (1, 2, 4)] == [0.0, 0.0, 1.0]
    # Nothing passes the filter: it orders nothing, so n@k is pass@n of what is drawn. 2@4 = 1 - C(3,2)/C(4,2) = 1/2.
    assert n_at_k(correct, [False] * 4, n=2, k=4) == pytest.approx(0.5)
    # k = 2 of the 4 drawn, 2 submitted: both drawn are submitted whatever the filter says, so 2@2 = P(the right one
    # is drawn) = 1 - C(3,2)/C(4,2) = 1/2, with or without scores.
    assert n_at_k(correct, filtered, n=2, k=2) == pytest.approx(0.5)
    assert n_at_k(correct, filtered, n=2, k=2, scores=[0.1, 0.9, 0.8, 0.7]) == pytest.approx(0.5)
    # One filtered (wrong) sample and two others, one right: 2@3 submits the filtered one, then one of the two
    # others at random (1/2), or the critic's choice among them (the right one scores 0.9: 1).
    assert n_at_k([False, True, False], [True, False, False], n=2, k=3) == pytest.approx(0.5)
    assert n_at_k([False, True, False], [True, False, False], n=2, k=3, scores=[0.0, 0.9, 0.5]) == 1.0


def _result(pid, sid, outcome, passed=0, total=4, **extra):
    return {"problem_id": pid, "sample_id": sid, "outcome": outcome, "passed_tests": passed,
            "total_tests": total, **extra}


PROBLEMS = [
    {"problem_id": "a", "source": "apps", "difficulty": "introductory"},
    {"problem_id": "b", "source": "apps", "difficulty": "competition"},
    {"problem_id": "m", "source": "mbpp", "difficulty": ""},
    {"problem_id": "z", "source": "mbpp", "difficulty": ""},  # no results at all
]
RESULTS = [
    _result("a", "a0", "passed", 4), _result("a", "a1", "failed", 2), _result("a", "a2", "compile_error"),
    _result("a", "a3", "infra_error"),
    _result("b", "b0", "timeout", 1), _result("b", "b1", "runtime_error", 0), _result("b", "b2", "failed", 3),
    _result("m", "m0", "passed", 3, 3), _result("m", "m1", "passed", 3, 3), _result("m", "m2", "infra_error"),
]


def test_summary_numbers_by_hand():
    s = summarize(PROBLEMS, RESULTS, ks=[1, 2, 3])
    a, b, m, z = s["per_problem"]
    # a: 3 scored samples (the infra error is not one), 1 correct.
    assert (a["n"], a["c"], a["infra_errors"]) == (3, 1, 1)
    assert a["pass@k"] == {"1": pytest.approx(1 / 3), "2": pytest.approx(2 / 3), "3": 1.0}
    # test-case average of a: (4/4 + 2/4 + 0/4) / 3 = 0.5; b: (1/4 + 0 + 3/4) / 3 = 1/3; m: 1.
    assert a["test_case_average"] == pytest.approx(0.5)
    assert b["test_case_average"] == pytest.approx(1 / 3)
    assert m["n"] == 2 and m["pass@k"] == {"1": 1.0, "2": 1.0}  # pass@3 needs 3 samples: m has 2
    assert z["n"] == 0 and s["unscored_problems"] == ["z"]
    overall = s["overall"]
    # pass@1 over the three scored problems: (1/3 + 0 + 1) / 3; pass@3 only over a and b: (1 + 0) / 2.
    assert overall["pass@k"]["1"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert overall["pass@k"]["3"] == pytest.approx(0.5) and overall["pass@k_problems"]["3"] == 2
    assert overall["strict_accuracy"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert overall["test_case_average"] == pytest.approx((0.5 + 1 / 3 + 1) / 3)
    assert overall["infra_errors"] == 2 and overall["samples"] == 8
    assert overall["outcomes"] == {"passed": 3, "failed": 2, "runtime_error": 1, "timeout": 1, "compile_error": 1}
    assert overall["outcome_fractions"]["passed"] == pytest.approx(3 / 8)
    assert "infra_error" not in overall["outcomes"]
    assert list(s["by_difficulty"]) == ["introductory", "competition", "unspecified"]
    assert s["by_difficulty"]["competition"]["pass@k"]["1"] == 0.0
    assert s["by_source"]["mbpp"]["problems"] == 2 and s["by_source"]["mbpp"]["problems_scored"] == 1
    assert "n@k" not in overall and s["submissions"] == []


def test_n_at_k_in_the_summary_from_example_results_and_critic_scores():
    results = [_result("a", f"s{i}", o, critic_score=sc)
               for i, (o, sc) in enumerate([("passed", 0.2), ("failed", 0.9), ("failed", 0.5), ("passed", 0.1)])]
    examples = [_result("a", "s0", "passed"), _result("a", "s1", "passed"), _result("a", "s2", "failed"),
                _result("a", "s3", "infra_error")]  # no verdict for s3: it stays in
    s = summarize(PROBLEMS[:1], results, ks=[4], example_results=examples, submissions=[1, 2])
    p = s["per_problem"][0]
    # All 4 drawn; filtered: s0, s1, s3; by score s1 (wrong) first, then s0 (right): 1@4 = 0, 2@4 = 1.
    assert p["n@k"] == {"1@4": 0.0, "2@4": 1.0} and p["ranked_by"] == "critic_score"
    assert (p["examples_passed"], p["examples_unknown"]) == (2, 1)
    unranked = summarize(PROBLEMS[:1], results, ks=[4], example_results=examples, submissions=[1],
                         score_column=None)["per_problem"][0]
    # Random order among the 3 filtered, 2 right: 2/3.
    assert unranked["n@k"] == {"1@4": pytest.approx(2 / 3)} and unranked["ranked_by"] == "random"
    inline = [dict(r, example_outcome=e["outcome"]) for r, e in zip(results, examples)]
    assert summarize(PROBLEMS[:1], inline, ks=[4], submissions=[1, 2])["per_problem"][0]["n@k"] == p["n@k"]


@pytest.mark.parametrize("bad, message", [
    ({"problem_id": "a", "sample_id": "x", "outcome": "ok"}, r"result #0 \(a / x\): 'outcome' must be one of"),
    ({"problem_id": "a", "outcome": "passed"}, r"result #0: missing 'sample_id'"),
    ({"problem_id": "a", "sample_id": "x", "outcome": "passed", "passed_tests": "1"}, r"'passed_tests' must be"),
    ({"problem_id": "a", "sample_id": "x", "outcome": "passed", "passed_tests": 2, "total_tests": 1},
     r"passed_tests 2 > total_tests 1"),
    ({"problem_id": "q", "sample_id": "x", "outcome": "passed"}, r"names problem 'q', which is not among"),
])
def test_malformed_results(bad, message):
    with pytest.raises(ValueError, match=message):
        summarize(PROBLEMS, [bad])


def test_duplicates_and_orphan_example_results():
    r = _result("a", "a0", "passed")
    with pytest.raises(ValueError, match="result #1: duplicate result for problem 'a', sample 'a0'"):
        summarize(PROBLEMS, [r, r])
    with pytest.raises(ValueError, match="example result .* sample 'zz' has no hidden-test result"):
        summarize(PROBLEMS, [r], example_results=[_result("a", "zz", "passed")])
