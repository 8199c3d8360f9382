"""Evaluation metrics as small pure functions over lists of dicts (no Ray, no torch).

- :func:`pass_at_k`: the unbiased estimator of Chen et al. (2021).
- :func:`n_at_k`: AlphaCode's / CodeRL's n@k — draw k samples, submit n of them, those that pass the example tests
  first (by critic score when there is one, else in random order); solved if a submission passes the hidden tests.
  Computed exactly as an expectation over the random k-subsets of the samples drawn, like pass@k. Evaluation
  (:func:`summarize`) and critic sampling (:mod:`coderl_ray.inference.metrics`) both use it.
- :func:`summarize`: every metric the papers report, per problem, per difficulty, per source and overall.

Definitions used throughout (``n`` is the number of a problem's samples whose execution produced a verdict):

- Results with outcome ``infra_error`` (the sandbox broke or the machine starved the program, not the program's
  doing; docs/sandbox.md#time) are excluded from every metric and counted separately (``infra_errors``; on the
  example tests ``example_infra_errors``, whose samples are not filtered out); a problem whose results are all
  infrastructure failures is listed as unscored.
- **Infrastructure errors in n@k** (:func:`has_verdict`, :func:`passes_filter`): an ``infra_error`` on the *hidden*
  tests removes the sample from the problem's samples (as if it had not been drawn: it is neither correct nor
  wrong, and k counts only samples with a verdict); an ``infra_error`` on the *example* tests is no verdict, and a
  sample without an example verdict (its problem has no example tests, or it was not run on them) passes the filter.
- **Fewer than n samples pass the filter**: the remaining submissions go to the samples that do not pass it (ranked
  or random as the rest), so n slots are never left empty (:func:`n_at_k`).
- APPS *strict accuracy* of a problem: the fraction of its samples that pass every test; *test-case average*: the
  mean over its samples of passed / total tests (a compile error passes none). With one sample per problem these are
  exactly the numbers of APPS's ``test_one_solution.py``; with more they are their expectation for one random sample.
- Group values are means over the group's problems (each problem weighs the same, as in all three papers).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from coderl_ray.records import Outcome

OUTCOMES = tuple(o.value for o in Outcome)
DEFAULT_KS = (1, 5, 10, 100)
DEFAULT_SUBMISSIONS = (1, 5)
DEFAULT_SCORE_COLUMN = "critic_score"
NO_DIFFICULTY = "unspecified"
_CURVE_KS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021), Eq. 1: 1 - C(n-c, k) / C(n, k), computed as a stable product.

    n samples were drawn, c of them passed; k <= n.

    >>> round(pass_at_k(5, 1, 1), 4)  # one of five passes: 1/5
    0.2
    >>> round(pass_at_k(5, 2, 2), 4)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    0.7
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def has_verdict(outcome: str | None) -> bool:
    """Whether a hidden-test outcome counts in the metrics: everything but ``infra_error`` (the sandbox failed, so
    nothing is known about the program; such samples are left out and counted apart)."""
    return outcome != Outcome.INFRA_ERROR.value


def passes_filter(example_outcome: str | None) -> bool:
    """The example-test filter of n@k: False only for a verdict other than passed. No verdict (the problem has no
    example tests, the sample was not run on them, or the run was an ``infra_error``) passes.

    >>> [passes_filter(o) for o in ("passed", "failed", "timeout", None, "infra_error")]
    [True, False, False, True, True]
    """
    return example_outcome is None or example_outcome in (Outcome.PASSED.value, Outcome.INFRA_ERROR.value)


def _first_m_all_wrong(correct: Sequence[bool], present: int, m: int, ranked: bool) -> float:
    """P(the first ``m`` submitted of a uniform ``present``-subset of ``correct`` are all wrong).

    Random order (``ranked`` False): they are a uniform m-subset, C(I, m) / C(L, m) with L entries, I wrong.
    Ranked (``correct`` in submission order): sum over the rank q of the m-th present entry, which must be wrong with
    m - 1 wrong present entries before it and the other present - m after it: C(I(q-1), m-1) C(L-q, present-m) /
    C(L, present), I(j) = wrong among the first j."""
    if m <= 0:
        return 1.0
    L, I = len(correct), sum(1 for c in correct if not c)
    if not ranked:
        return math.comb(I, m) / math.comb(L, m)
    ways, wrong_before = 0, 0
    for q, c in enumerate(correct, start=1):
        if not c:
            ways += math.comb(wrong_before, m - 1) * math.comb(L - q, present - m)
            wrong_before += 1
    return ways / math.comb(L, present)


def n_at_k(correct: Sequence[bool], filtered: Sequence[bool], n: int, k: int,
           scores: Sequence[float] | None = None) -> float:
    """Expected n@k of one problem from its drawn samples (exact, no sampling).

    ``correct[i]``: sample i passes the hidden tests; ``filtered[i]``: it passes the example-test filter
    (:func:`passes_filter`); ``scores[i]``: its ranking score (higher first; ties keep sample order), or ``None`` for
    a random order. Only samples with a hidden-test verdict belong here (:func:`has_verdict`). A uniformly random
    k-subset of the N samples is "generated"; its samples that pass the filter come first, then the others, each
    group ranked by ``scores`` (or in random order); the first min(n, k) are submitted, and the result is the
    probability that a submission is correct. With k = N (critic sampling: every generated program) there is no
    randomness in which samples exist, only (without scores) in their order.

    Given f filtered samples present (f ~ Hypergeometric(N, F, k), the k - f others a uniform subset of the N - F),
    the run fails iff the first min(n, f) filtered ones are all wrong and, when n > f, so are the first n - f of the
    others: P(fail | f) = A(filtered, f, min(n, f)) * A(others, k - f, n - f), A as in :func:`_first_m_all_wrong`.

    >>> n_at_k([True, False], [True, True], n=1, k=2)  # two filtered samples, one right, one submitted at random
    0.5
    >>> n_at_k([True, False], [True, True], n=1, k=2, scores=[0.9, 0.1])  # the critic ranks the right one first
    1.0
    >>> n_at_k([True, False, False], [False, True, False], n=2, k=3)  # the wrong filtered one, then 1 of 2 others
    0.5
    """
    N = len(correct)
    if len(filtered) != N or (scores is not None and len(scores) != N):
        raise ValueError("correct, filtered and scores must have one entry per sample")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 1 <= k <= N:
        raise ValueError(f"{n}@{k} needs 1 <= k <= the {N} samples drawn")
    if not any(correct):
        return 0.0
    n = min(n, k)
    order = list(range(N))
    if scores is not None:
        order.sort(key=lambda i: -scores[i])  # stable: ties keep sample order
    kept = [bool(correct[i]) for i in order if filtered[i]]
    others = [bool(correct[i]) for i in order if not filtered[i]]
    ranked = scores is not None
    F, U = len(kept), len(others)
    total = math.comb(N, k)
    fail = 0.0
    for f in range(max(0, k - U), min(k, F) + 1):
        p_f = math.comb(F, f) * math.comb(U, k - f) / total
        p_fail = _first_m_all_wrong(kept, f, min(n, f), ranked)
        if n > f and p_fail:
            p_fail *= _first_m_all_wrong(others, k - f, n - f, ranked)
        fail += p_f * p_fail
    return float(min(1.0, max(0.0, 1.0 - fail)))


# --- result records ------------------------------------------------------------------------------------------------

def validate_result(record: Any, where: str) -> dict[str, Any]:
    """Check one result record (docs/design.md) and return it with ``outcome`` as a plain string."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a result object, got {type(record).__name__}")
    for key in ("problem_id", "sample_id"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise ValueError(f"{where}: missing {key!r} (a non-empty string)")
    where = f"{where} ({record['problem_id']} / {record['sample_id']})"
    outcome = record.get("outcome")
    if outcome not in OUTCOMES:
        raise ValueError(f"{where}: 'outcome' must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    for key in ("passed_tests", "total_tests"):
        value = record.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}: {key!r} must be a non-negative integer, got {value!r}")
    if record.get("passed_tests", 0) > record.get("total_tests", 0):
        raise ValueError(f"{where}: passed_tests {record['passed_tests']} > total_tests {record['total_tests']}")
    return record


def _index_results(results: Iterable[dict[str, Any]], what: str) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for i, r in enumerate(results):
        r = validate_result(r, f"{what} #{i}")
        key = (r["problem_id"], r["sample_id"])
        if key in out:
            raise ValueError(f"{what} #{i}: duplicate result for problem {key[0]!r}, sample {key[1]!r}")
        out[key] = r
    return out


def _example_outcome(sample: dict[str, Any], example: dict[str, Any] | None) -> str | None:
    return example["outcome"] if example is not None else sample.get("example_outcome")


def _example_verdict(sample: dict[str, Any], example: dict[str, Any] | None) -> bool | None:
    """True / False when the sample's run on example tests gave a verdict, None when it did not (no example tests,
    no example run, or an infrastructure failure): such samples are not filtered out."""
    outcome = _example_outcome(sample, example)
    if outcome is None or not has_verdict(outcome):
        return None
    return outcome == Outcome.PASSED.value


# --- summary -------------------------------------------------------------------------------------------------------

def _problem_metrics(samples: list[dict[str, Any]], infra: int, ks: Sequence[int], submissions: Sequence[int],
                     verdicts: list[bool | None] | None, score_column: str | None) -> dict[str, Any]:
    n = len(samples)
    correct = [s["outcome"] == Outcome.PASSED.value for s in samples]
    c = sum(correct)
    out: dict[str, Any] = {"n": n, "c": c, "infra_errors": infra,
                           "outcomes": dict(Counter(s["outcome"] for s in samples))}
    if n == 0:
        return out
    out["pass@k"] = {str(k): pass_at_k(n, c, k) for k in ks if k <= n}
    out["curve"] = {str(k): pass_at_k(n, c, k) for k in _curve_ks(ks) if k <= n}
    out["strict_accuracy"] = c / n
    fractions = [s.get("passed_tests", 0) / s["total_tests"] for s in samples if s.get("total_tests", 0) > 0]
    out["test_case_average"] = float(np.mean(fractions)) if fractions else 0.0
    if verdicts is not None:
        filtered = [v is not False for v in verdicts]  # = passes_filter of the example outcome
        scores = None
        if score_column and all(isinstance(s.get(score_column), (int, float)) and not isinstance(
                s.get(score_column), bool) for s in samples):
            scores = [float(s[score_column]) for s in samples]
        out["examples_passed"] = sum(v is True for v in verdicts)
        out["examples_unknown"] = sum(v is None for v in verdicts)
        out["n@k"] = {f"{m}@{k}": n_at_k(correct, filtered, m, k, scores)
                      for k in ks for m in submissions if m <= k <= n}
        out["ranked_by"] = score_column if scores is not None else "random"
    return out


def _curve_ks(ks: Sequence[int]) -> list[int]:
    return sorted(set(_CURVE_KS) | set(ks))


def _mean_of(problems: list[dict[str, Any]], key: str) -> tuple[dict[str, float], dict[str, int]]:
    """Mean of a per-problem dict of values (e.g. pass@k), each entry over the problems that have it."""
    values: dict[str, list[float]] = defaultdict(list)
    for p in problems:
        for k, v in p.get(key, {}).items():
            values[k].append(v)
    return {k: float(np.mean(v)) for k, v in sorted(values.items(), key=lambda kv: _sort_key(kv[0]))}, \
        {k: len(v) for k, v in values.items()}


def _sort_key(key: str) -> tuple[int, int]:
    if "@" in key:
        a, b = key.split("@")
        return int(b), int(a)
    return int(key), 0


def _group_metrics(problems: list[dict[str, Any]]) -> dict[str, Any]:
    scored = [p for p in problems if p["n"] > 0]
    outcomes: Counter = Counter()
    for p in problems:
        outcomes.update(p["outcomes"])
    samples = sum(outcomes.values())
    pass_k, pass_k_count = _mean_of(scored, "pass@k")
    curve, curve_count = _mean_of(scored, "curve")
    group: dict[str, Any] = {
        "problems": len(problems),
        "problems_scored": len(scored),
        "samples": samples,
        "infra_errors": sum(p["infra_errors"] for p in problems),
        "pass@k": pass_k,
        "pass@k_problems": pass_k_count,
        "strict_accuracy": float(np.mean([p["strict_accuracy"] for p in scored])) if scored else None,
        "test_case_average": float(np.mean([p["test_case_average"] for p in scored])) if scored else None,
        "outcomes": {o: outcomes.get(o, 0) for o in OUTCOMES if o != Outcome.INFRA_ERROR.value},
        "outcome_fractions": {o: (outcomes.get(o, 0) / samples if samples else 0.0)
                              for o in OUTCOMES if o != Outcome.INFRA_ERROR.value},
        "curve": curve,
        "curve_problems": curve_count,
    }
    if any("n@k" in p for p in scored):
        group["n@k"], group["n@k_problems"] = _mean_of(scored, "n@k")
    if any("example_infra_errors" in p for p in problems):
        group["example_infra_errors"] = sum(p.get("example_infra_errors", 0) for p in problems)
    return group


def summarize(problems: Iterable[dict[str, Any]], results: Iterable[dict[str, Any]],
              ks: Sequence[int] = DEFAULT_KS, *, example_results: Iterable[dict[str, Any]] | None = None,
              submissions: Sequence[int] = DEFAULT_SUBMISSIONS,
              score_column: str | None = DEFAULT_SCORE_COLUMN) -> dict[str, Any]:
    """All metrics of an evaluation, as a JSON-ready dict (see the module docstring for the definitions).

    ``problems`` are canonical problem records (for difficulty and source); ``results`` are result records of the
    samples on the hidden tests. Example-test verdicts, for n@k, come from ``example_results`` (result records of the
    same samples run on the example tests, joined on problem and sample id) or from an ``example_outcome`` field of
    the results; without either there is no n@k. When every sample of a problem has a numeric ``score_column``
    (default ``critic_score``), n@k ranks the filtered samples by it.

    pass@k of a group is averaged over the problems with at least k scored samples (``pass@k_problems`` says how
    many); a k above every problem's sample count is left out.
    """
    ks = sorted({int(k) for k in ks})
    submissions = sorted({int(m) for m in submissions})
    if not ks or ks[0] < 1 or (submissions and submissions[0] < 1):
        raise ValueError(f"ks and submissions must be positive integers, got {ks} and {submissions}")
    by_id: dict[str, dict[str, Any]] = {}
    for i, p in enumerate(problems):
        pid = p.get("problem_id") if isinstance(p, dict) else None
        if not isinstance(pid, str):
            raise ValueError(f"problem #{i}: missing 'problem_id'")
        by_id[pid] = p
    indexed = _index_results(results, "result")
    examples = _index_results(example_results, "example result") if example_results is not None else None
    have_verdicts = examples is not None or any("example_outcome" in r for r in indexed.values())

    per_problem_samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    infra: Counter = Counter()
    for (pid, _sid), r in indexed.items():
        if pid not in by_id:
            raise ValueError(f"result for sample {r['sample_id']!r} names problem {pid!r}, which is not among the "
                             f"{len(by_id)} problems given")
        if not has_verdict(r["outcome"]):
            infra[pid] += 1
        else:
            per_problem_samples[pid].append(r)
    if examples is not None:
        for (pid, sid) in examples:
            if (pid, sid) not in indexed:
                raise ValueError(f"example result for problem {pid!r}, sample {sid!r} has no hidden-test result")

    per_problem = []
    for pid, problem in by_id.items():
        samples = sorted(per_problem_samples.get(pid, []), key=lambda s: s["sample_id"])
        verdicts = None
        if have_verdicts:
            verdicts = [_example_verdict(s, examples.get((pid, s["sample_id"])) if examples else None)
                        for s in samples]
        metrics = _problem_metrics(samples, infra[pid], ks, submissions, verdicts, score_column)
        if have_verdicts:
            metrics["example_infra_errors"] = sum(_example_outcome(s, examples.get((pid, s["sample_id"])) if examples
                                                                   else None) == Outcome.INFRA_ERROR.value
                                                  for s in samples)
        metrics.update(problem_id=pid, source=problem.get("source") or "",
                       difficulty=problem.get("difficulty") or NO_DIFFICULTY)
        per_problem.append(metrics)

    by_difficulty: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in per_problem:
        by_difficulty[p["difficulty"]].append(p)
        by_source[p["source"] or "unspecified"].append(p)
    return {
        "ks": ks,
        "submissions": submissions if have_verdicts else [],
        "overall": _group_metrics(per_problem),
        "by_difficulty": {d: _group_metrics(v) for d, v in sorted(by_difficulty.items(), key=_difficulty_order)},
        "by_source": {s: _group_metrics(v) for s, v in sorted(by_source.items())},
        "unscored_problems": [p["problem_id"] for p in per_problem if p["n"] == 0],
        "per_problem": per_problem,
    }


def _difficulty_order(item: tuple[str, Any]) -> tuple[int, str]:
    order = {"introductory": 0, "interview": 1, "competition": 2}
    return order.get(item[0], 3), item[0]
