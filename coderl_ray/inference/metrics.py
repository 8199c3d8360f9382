"""n@k of critic sampling and of its baselines at equal budget, and what refining and repairing contributed (pure).

Every strategy generates the same ``k`` programs per problem (the budget) and submits ``n`` of them; a problem is
solved when a submission passes the hidden tests. All strategies fill their n submissions the same way - programs
that pass the example tests first, then (when fewer than n pass) the others - and differ only in the order inside
those two groups:

* ``random``: no filter, a random n of the k (its expectation is pass@n over the k programs);
* ``filter``: passing the examples first, random order inside each group (exact expectation below);
* ``filter+critic`` / ``cs``: passing the examples first, then the critic's "passed" probability
  (:func:`coderl_ray.inference.procedure.rank_programs`), deterministic.

``pass@k`` here is whether *any* of the k programs passes the hidden tests (the best a selection could do).
A hidden-test infrastructure failure counts as not passing (and is counted).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from coderl_ray.data.problems import examples_among_hidden_tests
from coderl_ray.eval.metrics import NO_DIFFICULTY, pass_at_k
from coderl_ray.inference.procedure import ORIGINS, PASSED, SAMPLE, has_example_tests, rank_programs

PLAIN_STRATEGIES = ("random", "filter", "filter+critic")
DIFFICULTY_ORDER = ("introductory", "interview", "competition")


def filter_then_random(correct: Sequence[bool], kept: Sequence[bool], n: int) -> float:
    """Expected share of solved: submit ``n`` programs, those ``kept`` by the filter first, random order inside
    each group.

    With N programs, F kept (Ck of them correct) and Cu correct among the N - F others: for F >= n a random n of the
    kept fail with probability C(F - Ck, n) / C(F, n); for F < n all F are submitted and n - F random others, which
    fail with probability [Ck = 0] * C(N - F - Cu, n - F) / C(N - F, n - F).

    >>> filter_then_random([True, False, False], [False, True, True], 1)  # the kept two are wrong
    0.0
    >>> filter_then_random([True, False, False], [True, True, False], 1)  # one of the two kept is right: 1/2
    0.5
    """
    N = len(correct)
    n = min(n, N)
    F = sum(kept)
    ck = sum(c for c, k in zip(correct, kept) if k)
    cu = sum(c for c, k in zip(correct, kept) if not k)
    if F >= n:
        fail = math.comb(F - ck, n) / math.comb(F, n)
    else:
        fail = 0.0 if ck else math.comb(N - F - cu, n - F) / math.comb(N - F, n - F)
    return 1.0 - fail


def _correct(p: dict[str, Any]) -> bool:
    return p.get("outcome") == PASSED


def _kept(p: dict[str, Any]) -> bool:
    return p.get("example_outcome") in (PASSED, None, "infra_error")


def problem_scores(programs: Sequence[dict[str, Any]], submissions: Sequence[int], strategy: str) -> dict[str, float]:
    """``{"<n>@k": ..., "pass@k": ...}`` of one problem's programs (with their hidden ``outcome``)."""
    correct = [_correct(p) for p in programs]
    out: dict[str, float] = {}
    for n in submissions:
        if strategy == "random":
            value = pass_at_k(len(programs), sum(correct), min(n, len(programs))) if programs else 0.0
        elif strategy == "filter":
            value = filter_then_random(correct, [_kept(p) for p in programs], n) if programs else 0.0
        else:
            value = float(any(_correct(p) for p in rank_programs(programs)[:n]))
        out[f"{n}@k"] = value
    out["pass@k"] = float(any(correct))
    return out


def _mean_groups(per_problem: list[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in per_problem:
        groups["all"].append(p)
        groups[p["difficulty"]].append(p)
    order = ["all"] + [d for d in DIFFICULTY_ORDER if d in groups] + sorted(
        d for d in groups if d not in DIFFICULTY_ORDER and d != "all")
    return {g: {"problems": len(groups[g]),
                **{k: sum(p[k] for p in groups[g]) / len(groups[g]) for k in keys}} for g in order}


def strategy_metrics(problems: Sequence[dict[str, Any]], programs: Sequence[dict[str, Any]],
                     submissions: Sequence[int], strategies: Sequence[str]) -> dict[str, Any]:
    """Per strategy: the mean of each problem's n@k and pass@k, overall and per difficulty; plus per problem."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in programs:
        by_problem[p["problem_id"]].append(p)
    keys = [f"{n}@k" for n in submissions] + ["pass@k"]
    out: dict[str, Any] = {}
    per_problem_all: dict[str, dict[str, Any]] = {}
    for strategy in strategies:
        rows = []
        for problem in problems:
            pid = problem["problem_id"]
            scores = problem_scores(by_problem.get(pid, []), submissions, strategy)
            rows.append({"problem_id": pid, "difficulty": problem.get("difficulty") or NO_DIFFICULTY, **scores})
            per_problem_all.setdefault(pid, {"problem_id": pid, "difficulty": rows[-1]["difficulty"],
                                             "programs": len(by_problem.get(pid, []))})[strategy] = scores
        out[strategy] = _mean_groups(rows, keys)
    return {"strategies": out, "per_problem": list(per_problem_all.values())}


def diagnostics(problems: Sequence[dict[str, Any]], programs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What each origin (plain sample, refined, repaired) added, in programs and in problems.

    A program is *new* when no earlier program of its problem has the same code. ``newly_solved`` counts the problems
    that no plain sample solved on the hidden tests and a program of this origin did (``newly_passing_examples``:
    the same on the example tests).
    """
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in programs:
        by_problem[p["problem_id"]].append(p)
    stats = {o: Counter() for o in ORIGINS}
    plans: dict[str, Counter] = defaultdict(Counter)
    for pid, group in by_problem.items():
        seen: set[str] = set()
        group = sorted(group, key=lambda p: (p["cs_pass"], p["sample_id"]))
        for p in group:
            s = stats[p["origin"]]
            s["programs"] += 1
            new = p["code"] not in seen
            seen.add(p["code"])
            s["new_programs"] += new
            s["pass_examples"] += p.get("example_outcome") == PASSED
            s["pass_hidden"] += _correct(p)
            s["new_pass_examples"] += new and p.get("example_outcome") == PASSED
            s["new_pass_hidden"] += new and _correct(p)
            s["hidden_infra_errors"] += p.get("outcome") == "infra_error"
        for origin in ORIGINS:
            mine = [p for p in group if p["origin"] == origin]
            if origin != SAMPLE and mine:
                plain = [p for p in group if p["origin"] == SAMPLE]
                stats[origin]["problems"] += 1
                stats[origin]["newly_solved"] += (not any(map(_correct, plain))) and any(map(_correct, mine))
                stats[origin]["newly_passing_examples"] += (
                    not any(p.get("example_outcome") == PASSED for p in plain)
                    and any(p.get("example_outcome") == PASSED for p in mine))
        for cs_pass in sorted({p["cs_pass"] for p in group}):
            origins = {p["origin"] for p in group if p["cs_pass"] == cs_pass}
            plans[f"pass_{cs_pass}"][next(o for o in (*ORIGINS[1:], SAMPLE) if o in origins)] += 1
    return {"by_origin": {o: dict(stats[o]) for o in ORIGINS},
            "problems_by_plan": {k: dict(v) for k, v in sorted(plans.items())},
            "problems_without_example_tests": sum(not has_example_tests(p) for p in problems),
            "problems_with_examples_among_hidden_tests": sum(map(examples_among_hidden_tests, problems))}
