"""Critic sampling's pure core: seeds, the plan of a pass, exact budget accounting, fallback, ranking and n@k."""

import math

import numpy as np
import pytest

from coderl_ray.config import ConfigError, load_config
from coderl_ray.data.prompts import build_prompt, build_repair_prompt
from coderl_ray.inference.metrics import diagnostics, problem_scores, strategy_metrics
from coderl_ray.inference.procedure import (
    REFINE, REPAIR, SAMPLE, best_prefix, pack_units, pass_budgets, plan_pass, plan_problem, rank_programs, sample_id,
    token_pass_probs, top_seeds,
)


def _problem(pid, examples=True, difficulty="introductory"):
    return {"problem_id": pid, "question": f"Solve {pid}.", "starter_code": "", "fn_name": None,
            "difficulty": difficulty, "tests": {"kind": "stdio", "inputs": ["1\n"], "outputs": ["1\n"]},
            "example_tests": {"kind": "stdio", "inputs": ["2\n"], "outputs": ["2\n"]} if examples else None}


def _program(pid, sid, example, prob, token_ids=(5, 6, 7, 8), seed_len=2, seed_value=0.5, code=None, hidden=None,
             **extra):
    """A program of a pass's state: its verdict on the ``example`` tests, critic "passed" probability ``prob``, and
    (after the judgement) its ``hidden``-test outcome."""
    return {"problem_id": pid, "sample_id": sid, "cs_pass": 0, "origin": SAMPLE, "token_ids": list(token_ids),
            "code": code if code is not None else sid, "example_outcome": example, "example_error": "boom",
            "outcome": hidden,
            "critic_pass_prob": prob, "seed_len": seed_len, "seed_value": seed_value, **extra}


def test_seed_is_the_prefix_at_the_critics_highest_passed_probability():
    # Hand-made critic output for a 5-token program: "passed" (the last class) logit x_t, the other three 0, so
    # p_t = e^x / (e^x + 3): x = [4, 1, 2, 3, 0.5] -> p = [.948, .475, .711, .870, .355]. Position 0 rates the empty
    # prefix and is not a seed; among positions 1..4 the peak is t = 3, which has read tokens 0..2: seed = ids[:3].
    x = np.array([4.0, 1.0, 2.0, 3.0, 0.5])
    logits = np.zeros((5, 4))
    logits[:, 3] = x
    probs = token_pass_probs(logits)
    assert probs[3] == pytest.approx(math.exp(3) / (math.exp(3) + 3))  # 20.09 / 23.09 = 0.870
    length, value = best_prefix(probs)
    assert (length, value) == (3, pytest.approx(0.8700, abs=1e-4))
    token_ids = [11, 12, 13, 14, 2]
    program = _program("p", "p#0", "passed", 0.9, token_ids=token_ids, seed_len=length, seed_value=value)
    (seed,) = top_seeds([program], k=2)
    assert seed.token_ids == (11, 12, 13) and seed.parent_id == "p#0"
    # Ties go to the shorter prefix; a one-token program has no seed.
    assert best_prefix([0.1, 0.7, 0.7]) == (1, 0.7)
    assert best_prefix([0.9]) == (0, -math.inf)


def test_top_seeds_keep_the_best_distinct_seeds_of_passing_programs():
    programs = [
        _program("p", "p#a", "passed", 0.2, token_ids=[1, 2, 3], seed_len=2, seed_value=0.6),
        _program("p", "p#b", "passed", 0.9, token_ids=[1, 2, 9], seed_len=2, seed_value=0.8),  # same seed [1, 2]
        _program("p", "p#c", "passed", 0.5, token_ids=[4, 5, 6], seed_len=1, seed_value=0.7),
        _program("p", "p#d", "failed", 0.99, token_ids=[7, 8, 9], seed_len=2, seed_value=0.99),  # fails: no seed
    ]
    seeds = top_seeds(programs, k=2)
    assert [(s.token_ids, s.value, s.parent_id) for s in seeds] == [((1, 2), 0.8, "p#b"), ((4,), 0.7, "p#c")]
    assert len(top_seeds(programs, k=5)) == 2


def test_the_plan_refines_repairs_or_samples_and_each_pass_generates_exactly_its_share():
    problems = [_problem("refine"), _problem("repair"), _problem("no-verdict"), _problem("no-examples", False)]
    state = [
        _program("refine", "refine#0", "passed", 0.3, token_ids=[1, 2, 3], seed_len=2, seed_value=0.9),
        _program("refine", "refine#1", "passed", 0.4, token_ids=[4, 5, 6], seed_len=1, seed_value=0.4),
        _program("refine", "refine#2", "failed", 0.9),
        _program("repair", "repair#0", "failed", 0.2, code="print(0)"),
        _program("repair", "repair#1", "runtime_error", 0.7, code="print(1/0)"),
        _program("repair", "repair#2", "compile_error", 0.5, code="print(1/0)"),  # same code as #1: once
        _program("repair", "repair#3", None, 0.99),  # no verdict (the sandbox broke): not a repair input
        _program("no-verdict", "no-verdict#0", "infra_error", 0.5),
        _program("no-examples", "no-examples#0", None, 0.5),
    ]
    requests = plan_pass(problems, state, cs_pass=1, n=5, top_k=2, candidates=2, repair=True)
    by = {}
    for r in requests:
        by.setdefault(r.problem_id, []).append(r)
    assert {pid: sum(r.n for r in rs) for pid, rs in by.items()} == {p["problem_id"]: 5 for p in problems}
    # refine: 5 programs over 2 seeds, 3 + 2, best seed first, from the prompt.
    assert [(r.origin, r.n, r.seed_ids, r.parent_id, r.first) for r in by["refine"]] == [
        (REFINE, 3, (1, 2), "refine#0", 0), (REFINE, 2, (4,), "refine#1", 3)]
    assert by["refine"][0].source == build_prompt(problems[0]) and by["refine"][0].model == "actor"
    # repair: the two failed programs the critic rates best (distinct code), with their example errors.
    assert [(r.origin, r.n, r.parent_id, r.model) for r in by["repair"]] == [
        (REPAIR, 3, "repair#1", "repair"), (REPAIR, 2, "repair#0", "repair")]
    assert by["repair"][0].source == build_repair_prompt(problems[1], "print(1/0)", "runtime_error", "boom")
    assert by["repair"][0].prompt == build_prompt(problems[1])  # what the critic reads
    # A problem with no failed program to repair samples plainly; so does one without example tests.
    assert [(r.origin, r.n) for r in by["no-verdict"]] == [(SAMPLE, 5)]
    assert [(r.origin, r.n) for r in by["no-examples"]] == [(SAMPLE, 5)]
    # Without a repair model, a problem none of whose programs passes samples plainly.
    no_repair = plan_pass(problems, state, cs_pass=1, n=5, top_k=2, candidates=2, repair=False)
    assert [r.origin for r in no_repair if r.problem_id == "repair"] == [SAMPLE]
    # Pass 0 samples everything plainly.
    assert {r.origin for r in plan_pass(problems, [], cs_pass=0, n=3, top_k=2, candidates=2, repair=True)} == {SAMPLE}
    # Sample ids are unique within a problem's pass.
    ids = [s for r in by["refine"] for s in r.sample_ids()]
    assert ids == [sample_id("refine", 1, j) for j in range(5)]


@pytest.mark.parametrize("budget,passes,first", [(10, 3, 4), (7, 2, 1), (5, 5, 1), (6, 1, 3)])
def test_budget_accounting_is_exact_over_a_whole_run(budget, passes, first):
    """Every problem ends with exactly ``budget`` programs, each sample id once, whatever its plans were."""
    shares = pass_budgets(budget, passes, first)
    assert sum(shares) == budget and len(shares) == passes and min(shares) >= 1
    problems = [_problem("a"), _problem("b"), _problem("c", examples=False)]
    programs = []
    for cs_pass, n in enumerate(shares):
        requests = plan_pass(problems, programs, cs_pass, n, top_k=2, candidates=3, repair=True)
        for r in requests:
            for sid in r.sample_ids():
                # Problem "a" passes its examples from the first program on (it is refined); "b" never does.
                example = None if r.problem_id == "c" else "passed" if r.problem_id == "a" else "failed"
                programs.append(_program(r.problem_id, sid, example, 0.5, token_ids=[1, 2, len(programs)],
                                         code=sid, cs_pass=cs_pass, origin=r.origin))
    for p in problems:
        assert sum(x["problem_id"] == p["problem_id"] for x in programs) == budget
    assert len({x["sample_id"] for x in programs}) == len(programs)
    origins = {(x["problem_id"], x["origin"]) for x in programs}
    if passes > 1:
        assert ("a", REFINE) in origins and ("b", REPAIR) in origins
    assert {o for pid, o in origins if pid == "c"} == {SAMPLE}  # no examples: plain samples throughout


def test_budget_smaller_than_the_passes_need_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"cs\.budget \(--budget\) 3 is smaller than the passes need.*= 4"):
        load_config(None, ["cs.budget=3", "cs.passes=3", "cs.first_samples=2", "cs.submissions=[1]"])
    with pytest.raises(ConfigError, match="cs.submissions"):
        load_config(None, ["cs.budget=4", "cs.first_samples=2", "cs.submissions=[1,5]"])
    with pytest.raises(ValueError, match="cannot give 4 programs to pass 0"):
        pass_budgets(5, 3, 4)


def test_units_pack_requests_in_order_one_model_each():
    problems = [_problem(f"p{i}") for i in range(4)]
    state = [_program("p1", "p1#0", "failed", 0.5)]
    requests = plan_pass(problems, state, 1, 3, 2, 1, repair=True)  # p1 repaired, the others sampled (no passer)
    units = pack_units(requests, max_programs=7)
    assert [[(r.problem_id, r.n) for r in u] for u in units] == [
        [("p0", 3), ("p2", 3)], [("p3", 3)], [("p1", 3)]]
    assert [u[0].model for u in units] == ["actor", "actor", "repair"]


def test_ranking_puts_the_filters_programs_first_then_the_critic_then_sample_id():
    # Passed and no verdict (None, infra_error) pass the filter alike; a failed verdict goes last whatever its score.
    programs = [_program("p", "p#3", "failed", 0.99), _program("p", "p#2", "passed", 0.1),
                _program("p", "p#1", "passed", 0.6), _program("p", "p#0", "passed", 0.6),
                _program("p", "p#4", None, 0.5), _program("p", "p#5", "infra_error", 0.55)]
    assert [p["sample_id"] for p in rank_programs(programs)] == ["p#0", "p#1", "p#5", "p#4", "p#2", "p#3"]


def test_fallback_without_example_tests_is_critic_ranking_of_plain_samples():
    problems = [_problem("x", examples=False)]
    # Three plain samples, no example verdicts; the one the critic likes best is the correct one.
    programs = [_program("x", "x#0", None, 0.2, hidden="failed", cs_pass=0),
                _program("x", "x#1", None, 0.9, hidden="passed", cs_pass=0),
                _program("x", "x#2", None, 0.5, hidden="failed", cs_pass=0)]
    assert plan_problem(problems[0], programs, 1, 4, 2, 2, repair=True)[0].origin == SAMPLE
    m = strategy_metrics(problems, programs, [1, 2], ["random", "filter", "filter+critic"])["strategies"]
    assert m["filter+critic"]["all"]["1@k"] == 1.0  # the critic's first pick is right
    assert m["random"]["all"]["1@k"] == pytest.approx(1 / 3)  # pass@1 of 1 correct in 3
    assert m["filter"]["all"]["1@k"] == pytest.approx(1 / 3)  # nothing filtered out: random among the 3
    assert m["random"]["all"]["2@k"] == pytest.approx(2 / 3)  # 1 - C(2,2)/C(3,2) = 1 - 1/3
    assert diagnostics(problems, programs)["problems_without_example_tests"] == 1


def test_n_at_k_of_each_strategy_by_hand():
    # Four programs: two pass the examples (one of them correct, rated 0.3; the wrong one rated 0.8), two fail them
    # (one correct). random 1@k = 2 correct of 4 = 0.5; filter 1@k = one of the two passers at random = 0.5;
    # filter+critic submits the 0.8 passer first (wrong): 0, then the right one: 2@k = 1.
    programs = [_program("p", "p#0", "passed", 0.3, hidden="passed"), _program("p", "p#1", "passed", 0.8,
                                                                                 hidden="failed"),
                _program("p", "p#2", "failed", 0.9, hidden="passed"), _program("p", "p#3", "failed", 0.1,
                                                                                hidden="failed")]
    assert problem_scores(programs, [1, 2], "random") == {"1@k": 0.5, "2@k": pytest.approx(5 / 6), "pass@k": 1.0}
    assert problem_scores(programs, [1], "filter") == {"1@k": 0.5, "pass@k": 1.0}
    assert problem_scores(programs, [1, 2], "filter+critic") == {"1@k": 0.0, "2@k": 1.0, "pass@k": 1.0}
    # filter with 3 submissions: both passers (one of them correct) are submitted: solved for sure.
    assert problem_scores(programs, [3], "filter")["3@k"] == 1.0
    # Nobody passes the examples, one of 4 correct, 2 picks: the filter orders nothing, 1 - C(3,2)/C(4,2) = 1/2;
    # the critic picks its two best (0.9 and 0.8: the right one is among them).
    failing = [_program("q", f"q#{i}", "failed", prob, hidden=h)
               for i, (prob, h) in enumerate([(0.8, "passed"), (0.9, "failed"), (0.1, "failed"), (0.2, "failed")])]
    assert problem_scores(failing, [2], "filter")["2@k"] == pytest.approx(0.5)
    assert problem_scores(failing, [1, 2], "filter+critic") == {"1@k": 0.0, "2@k": 1.0, "pass@k": 1.0}


def test_infra_errors_in_n_at_k_follow_evaluations_rule():
    """Hidden-test infra_error: the program leaves the problem's k (neither right nor wrong); example-test
    infra_error: no verdict, so it passes the filter. The same numbers as eval.metrics.summarize."""
    from coderl_ray.eval.metrics import summarize

    programs = [_program("p", "p#0", "passed", 0.9, hidden="infra_error"),  # the critic's first pick: left out
                _program("p", "p#1", "infra_error", 0.3, hidden="passed"),  # kept by the filter
                _program("p", "p#2", "passed", 0.5, hidden="failed"),
                _program("p", "p#3", "failed", 0.8, hidden="passed")]
    # k = 3 (p#1, p#2, p#3). filter+critic: p#2 (0.5) then p#1 (0.3), then p#3: 1@k = 0, 2@k = 1.
    assert problem_scores(programs, [1, 2], "filter+critic") == {"1@k": 0.0, "2@k": 1.0, "pass@k": 1.0}
    # filter: one of p#1, p#2 at random: 1/2. random: 2 right of 3: 2/3.
    assert problem_scores(programs, [1], "filter")["1@k"] == pytest.approx(0.5)
    assert problem_scores(programs, [1], "random")["1@k"] == pytest.approx(2 / 3)
    results = [{"problem_id": "p", "sample_id": p["sample_id"], "outcome": p["outcome"], "passed_tests": 0,
                "total_tests": 1, "example_outcome": p["example_outcome"], "critic_score": p["critic_pass_prob"]}
               for p in programs]
    s = summarize([_problem("p")], results, ks=[3], submissions=[1, 2])["per_problem"][0]
    assert s["n@k"] == {"1@3": 0.0, "2@3": 1.0} and s["infra_errors"] == 1
    # A problem whose programs all broke the sandbox on the hidden tests is unscored: out of the means.
    broken = [_program("x", "x#0", "passed", 0.5, hidden="infra_error")]
    m = strategy_metrics([_problem("p"), _problem("x")], programs + broken, [1], ["filter+critic"])["strategies"]
    assert m["filter+critic"]["all"] == {"problems": 1, "unscored": 1, "1@k": 0.0, "pass@k": 1.0}
