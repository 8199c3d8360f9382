"""Critic sampling's procedure as pure functions (no Ray, no torch): what each pass generates, and what is submitted.

Per problem, within a budget of generated programs (CodeRL Sec. 3.3, docs/design.md step 7):

1. pass 0 samples ``first_samples`` programs plainly; the programs run on the problem's example tests and the critic
   scores them (:mod:`coderl_ray.inference.stage` does both);
2. each later pass plans the problem from everything generated so far (:func:`plan_problem`):

   * **refine** when a program passes the examples: its *seed* is the prefix at which the critic's "passed"
     probability peaks (:func:`best_prefix`); the ``seeds_top_k`` best seeds of the problem are continued;
   * **repair** when none passes and a repair model is given: the ``repair_candidates`` failed programs the critic
     rates best are rewritten by the repair model from the problem, the program and its example-test error;
   * **sample** plainly otherwise, and always for a problem without example tests (critic ranking alone decides);

3. :func:`rank_programs` orders the problem's programs for submission: passing the examples (or without a verdict
   on them) first, then by the critic's "passed" probability, then by sample id (deterministic ties).

Programs are dicts with the fields of a pass's Parquet rows (``problem_id``, ``sample_id``, ``cs_pass``, ``origin``,
``token_ids``, ``code``, ``example_outcome``, ``example_error``, ``critic_pass_prob``, ``seed_len``, ``seed_value``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coderl_ray.data.prompts import build_prompt, build_repair_prompt
from coderl_ray.eval.metrics import passes_filter

SAMPLE, REFINE, REPAIR = "sample", "refine", "repair"
ORIGINS = (SAMPLE, REFINE, REPAIR)
PASSED = "passed"


def pass_budgets(budget: int, passes: int, first_samples: int) -> list[int]:
    """Programs each problem generates in each pass; they sum to ``budget`` exactly.

    Pass 0 takes ``first_samples`` (the whole budget when there is one pass); the rest is split evenly over the later
    passes, the earlier ones taking the remainder.

    >>> pass_budgets(10, 3, 4)  # 4, then 6 over 2 passes
    [4, 3, 3]
    >>> pass_budgets(10, 3, 3)  # 7 over 2 passes: 4 + 3
    [3, 4, 3]
    """
    if passes == 1:
        return [budget]
    later, rest = passes - 1, budget - first_samples
    if first_samples < 1 or rest < later:
        raise ValueError(f"a budget of {budget} cannot give {first_samples} programs to pass 0 and at least one to "
                         f"each of {later} later passes")
    return [first_samples] + [rest // later + (i < rest % later) for i in range(later)]


def split_evenly(n: int, parts: int) -> list[int]:
    """``n`` programs over ``parts`` requests, the first ones taking the remainder; requests of 0 are dropped.

    >>> split_evenly(5, 2), split_evenly(1, 3)
    ([3, 2], [1])
    """
    return [c for c in (n // parts + (i < n % parts) for i in range(parts)) if c]


def has_example_tests(problem: dict[str, Any]) -> bool:
    tests = problem.get("example_tests") or {}
    return bool(tests.get("asserts") if tests.get("kind") == "assert" else tests.get("inputs"))


# --- seeds -----------------------------------------------------------------------------------------------------


def token_pass_probs(token_logits: np.ndarray) -> np.ndarray:
    """The critic's "passed" probability at every program position: [T, C] logits -> [T] (the last class)."""
    z = token_logits - token_logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p[:, -1] / p.sum(axis=-1)


def best_prefix(pass_probs: Sequence[float]) -> tuple[int, float]:
    """(length, value) of a program's seed: the prefix at which the critic's "passed" probability is highest.

    The critic reads the program shifted right (teacher forcing, as in training), so its value at position t has
    read the prompt and the tokens *before* t: it rates the prefix ``token_ids[:t]``. A seed holds at least one
    token (the empty prefix is plain sampling) and at most all but the last one (the whole program is not a seed to
    continue from); ties go to the shorter prefix. ``(0, -inf)`` when the program has no such prefix.

    >>> best_prefix([0.2, 0.5, 0.9, 0.4, 0.95])  # position 4 rates the whole program but its last token
    (4, 0.95)
    >>> best_prefix([0.9, 0.3, 0.6])  # position 0 (the empty prefix) is not a seed
    (2, 0.6)
    """
    values = np.asarray(pass_probs, dtype=np.float64)
    if len(values) < 2:
        return 0, -math.inf
    t = int(np.argmax(values[1:])) + 1
    return t, float(values[t])


@dataclass(frozen=True)
class Seed:
    parent_id: str
    token_ids: tuple[int, ...]
    value: float


def top_seeds(programs: Sequence[dict[str, Any]], k: int) -> list[Seed]:
    """The ``k`` best distinct seeds among a problem's programs that pass the examples (highest value first, then
    sample id). Two programs that share their seed give it once: continuing it twice would split one draw in two."""
    seeds: dict[tuple[int, ...], Seed] = {}
    for p in sorted(programs, key=lambda p: p["sample_id"]):
        if p.get("example_outcome") != PASSED or not p.get("seed_len"):
            continue
        ids = tuple(int(t) for t in p["token_ids"][: int(p["seed_len"])])
        seed = Seed(p["sample_id"], ids, float(p["seed_value"]))
        if ids not in seeds or seed.value > seeds[ids].value:
            seeds[ids] = seed
    return sorted(seeds.values(), key=lambda s: (-s.value, s.parent_id))[:k]


def repair_candidates(programs: Sequence[dict[str, Any]], m: int) -> list[dict[str, Any]]:
    """The ``m`` failed programs (a verdict on the examples other than passed) the critic rates best, distinct by
    code; ties by sample id."""
    seen, out = set(), []
    failed = [p for p in programs if not passes_filter(p.get("example_outcome"))]
    for p in sorted(failed, key=lambda p: (-float(p["critic_pass_prob"]), p["sample_id"])):
        if p["code"] not in seen:
            seen.add(p["code"])
            out.append(p)
    return out[:m]


# --- the plan of a pass ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """``n`` programs to generate for one problem: from ``source`` (the text the generating model reads) and, when
    refining, after ``seed_ids``. Their sample ids are ``<problem>#p<pass>s<first + j>``."""

    problem_id: str
    cs_pass: int
    first: int
    n: int
    origin: str
    model: str  # "actor" or "repair"
    source: str
    prompt: str  # the problem's prompt: what the critic reads with every program, whatever generated it
    seed_ids: tuple[int, ...] = ()
    parent_id: str = ""

    def sample_ids(self) -> list[str]:
        return [sample_id(self.problem_id, self.cs_pass, self.first + j) for j in range(self.n)]


def sample_id(problem_id: str, cs_pass: int, index: int) -> str:
    return f"{problem_id}#p{cs_pass}s{index}"


def plan_problem(problem: dict[str, Any], programs: Sequence[dict[str, Any]], cs_pass: int, n: int, top_k: int,
                 candidates: int, repair: bool) -> list[Request]:
    """The requests of one problem in pass ``cs_pass``: ``n`` programs in all, planned from ``programs`` (every
    program of the problem from the earlier passes, with its example verdict and critic scores)."""
    if n <= 0:
        return []
    pid, prompt = problem["problem_id"], build_prompt(problem)
    plain = [Request(pid, cs_pass, 0, n, SAMPLE, "actor", prompt, prompt)]
    if cs_pass == 0 or not has_example_tests(problem):
        return plain
    if any(p.get("example_outcome") == PASSED for p in programs):
        seeds = top_seeds(programs, top_k)
        if not seeds:  # every passing program is a single token: nothing to continue from
            return plain
        out, first = [], 0
        for seed, count in zip(seeds, split_evenly(n, len(seeds))):
            out.append(Request(pid, cs_pass, first, count, REFINE, "actor", prompt, prompt, seed.token_ids,
                               seed.parent_id))
            first += count
        return out
    if repair:
        failed = repair_candidates(programs, candidates)
        if failed:
            out, first = [], 0
            for p, count in zip(failed, split_evenly(n, len(failed))):
                source = build_repair_prompt(problem, p["code"], p["example_outcome"], p.get("example_error") or "")
                out.append(Request(pid, cs_pass, first, count, REPAIR, "repair", source, prompt, (), p["sample_id"]))
                first += count
            return out
    return plain


def plan_pass(problems: Sequence[dict[str, Any]], programs: Sequence[dict[str, Any]], cs_pass: int, n: int,
              top_k: int, candidates: int, repair: bool) -> list[Request]:
    """Every problem's requests for one pass, in problem order; ``programs`` are those of all earlier passes."""
    by_problem: dict[str, list[dict[str, Any]]] = {p["problem_id"]: [] for p in problems}
    for p in programs:
        by_problem[p["problem_id"]].append(p)
    return [r for p in problems for r in plan_problem(p, by_problem[p["problem_id"]], cs_pass, n, top_k, candidates,
                                                      repair)]


def pack_units(requests: Sequence[Request], max_programs: int) -> list[list[Request]]:
    """Requests grouped into generation units of at most ``max_programs`` programs (a request larger than that is a
    unit of its own), one model per unit, in order: the work a generator takes at a time. Units do not decide the
    programs (every row is keyed: :func:`coderl_ray.inference.continuation.cs_sample_key`)."""
    units: list[list[Request]] = []
    for model in ("actor", "repair"):
        current, size = [], 0
        for r in requests:
            if r.model != model:
                continue
            if current and size + r.n > max_programs:
                units.append(current)
                current, size = [], 0
            current.append(r)
            size += r.n
        if current:
            units.append(current)
    return units


# --- submission ------------------------------------------------------------------------------------------------


def rank_programs(programs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submission order: programs that pass the example-test filter first (passed, or no verdict:
    :func:`coderl_ray.eval.metrics.passes_filter`), each group by the critic's "passed" probability, then by
    sample id. n@k (:mod:`coderl_ray.inference.metrics`) scores exactly this order."""
    return sorted(programs, key=lambda p: (not passes_filter(p.get("example_outcome")),
                                           -float(p["critic_pass_prob"]), p["sample_id"]))
