"""n@k of critic sampling and of its baselines at equal budget, and what refining and repairing contributed (pure).

Every strategy generates the same ``k`` programs per problem (the budget) and submits ``n`` of them; a problem is
solved when a submission passes the hidden tests. n@k is :func:`coderl_ray.eval.metrics.n_at_k`, the one definition
evaluation uses too, with k = every program of the problem: the programs that pass the example-test filter
(:func:`~coderl_ray.eval.metrics.passes_filter`: passed, or no verdict) come first, then the others, and the
strategies differ only in the order inside those two groups:

* ``random``: no filter, a random n of the k (pass@n over the k programs);
* ``filter``: the filter's programs first, random order inside each group;
* ``filter+critic`` / ``cs``: the filter's programs first, each group by the critic's "passed" probability, then by
  sample id (:func:`coderl_ray.inference.procedure.rank_programs`, the order ``submissions.jsonl`` lists).

``pass@k`` here is whether *any* of the k programs passes the hidden tests (the best a selection could do).
A hidden-test ``infra_error`` leaves the program out of its problem's programs (:func:`~coderl_ray.eval.metrics.
has_verdict`: as if it had not been drawn; counted in the diagnostics); a problem left with no program is unscored:
listed, and left out of the means, as in evaluation.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from coderl_ray.data.problems import examples_among_hidden_tests
from coderl_ray.eval.metrics import NO_DIFFICULTY, has_verdict, n_at_k, passes_filter
from coderl_ray.inference.procedure import ORIGINS, PASSED, SAMPLE, has_example_tests

PLAIN_STRATEGIES = ("random", "filter", "filter+critic")
DIFFICULTY_ORDER = ("introductory", "interview", "competition")


def _correct(p: dict[str, Any]) -> bool:
    return p.get("outcome") == PASSED


def problem_scores(programs: Sequence[dict[str, Any]], submissions: Sequence[int],
                   strategy: str) -> dict[str, float] | None:
    """``{"<n>@k": ..., "pass@k": ...}`` of one problem's programs (with their hidden ``outcome``), or None when no
    program has a hidden-test verdict (unscored)."""
    scored = sorted((p for p in programs if has_verdict(p.get("outcome"))), key=lambda p: p["sample_id"])
    if not scored:
        return None
    k = len(scored)
    correct = [_correct(p) for p in scored]
    if strategy == "random":
        kept, scores = [True] * k, None
    elif strategy == "filter":
        kept, scores = [passes_filter(p.get("example_outcome")) for p in scored], None
    else:
        kept = [passes_filter(p.get("example_outcome")) for p in scored]
        scores = [float(p["critic_pass_prob"]) for p in scored]
    out = {f"{n}@k": n_at_k(correct, kept, n, k, scores) for n in submissions}
    out["pass@k"] = float(any(correct))
    return out


def _mean_groups(per_problem: list[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, float]]:
    """Means over each group's scored problems; ``problems`` counts those, ``unscored`` the others."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in per_problem:
        groups["all"].append(p)
        groups[p["difficulty"]].append(p)
    order = ["all"] + [d for d in DIFFICULTY_ORDER if d in groups] + sorted(
        d for d in groups if d not in DIFFICULTY_ORDER and d != "all")
    out = {}
    for g in order:
        scored = [p for p in groups[g] if p["scored"]]
        out[g] = {"problems": len(scored), "unscored": len(groups[g]) - len(scored),
                  **{k: sum(p[k] for p in scored) / len(scored) if scored else None for k in keys}}
    return out


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
            rows.append({"problem_id": pid, "difficulty": problem.get("difficulty") or NO_DIFFICULTY,
                         "scored": scores is not None, **(scores or {})})
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
