"""The tracked problems: a fixed, seeded set of training problems that every RL round samples and every evaluation
scores (``rl.tracked_problems``), and the named problem groups an evaluation reports pass@k on.

Why a fixed set: the RL stage optimises the reward on its own training problems, most of which have no reference
solution (only RL learns from them; docs/training.md). Measuring that on whatever problems a round happened to draw
would compare arms on different problems; a fixed set, sampled by every round and evaluated with the same sampling
keys (seed, problem id, sample index) in every run, compares them on the same programs' worth of chances.

Pure functions over problem records and result rows: no Ray.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from coderl_ray.eval.metrics import summarize


def tracked_problems(train: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` seeded training problems (in their order in ``train``), with and without reference solutions in
    proportion; a random stream of their own, so they do not repeat a round's or the reference subset's draw.

    >>> train = [{"problem_id": f"p{i}"} for i in range(10)]
    >>> len(tracked_problems(train, 3, seed=0)), tracked_problems(train, 3, 0) == tracked_problems(train, 3, 0)
    (3, True)
    """
    if n > len(train):
        raise ValueError(f"rl.tracked_problems={n}, but there are only {len(train)} training problems")
    keep = set(random.Random(f"tracked-problems/{seed}").sample(range(len(train)), n))
    return [p for i, p in enumerate(train) if i in keep]


def draw_round(train: list[dict[str, Any]], per_round: int, seed: int, round_: int,
               always: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The problems a round samples: all of them (``per_round`` 0, or at least as many as there are), or the
    ``always`` problems plus a fresh seeded draw of the others up to ``per_round``.

    Without ``always`` the draw is the one rounds made before tracked problems existed (same generator, same
    call), so runs without them sample the same problems as before.
    """
    if not per_round or len(train) <= per_round:
        return train
    fixed = {p["problem_id"] for p in always}
    if len(fixed) > per_round:
        raise ValueError(f"rl.tracked_problems={len(fixed)} exceeds rollout.problems_per_round={per_round}: every "
                         "round samples the tracked problems, within its budget of problems")
    rest = [p for p in train if p["problem_id"] not in fixed]
    drawn = random.Random(seed * 1000 + round_).sample(rest, per_round - len(fixed))
    return [p for p in train if p["problem_id"] in fixed] + drawn


def eval_groups(test: list[dict[str, Any]], tracked: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Named groups of problem ids that an evaluation reports besides the test split's difficulties; empty
    groups are left out.

    * ``unseen_wording``: test problems stated in words no reference solution shows (the embedded suite's
      ``data.suite_unseen_wording`` family, docs/suite.md);
    * ``tracked``: the tracked training problems; ``tracked_tests_only``: those of them without a reference solution
      (only RL learns them); ``tracked_unseen_wording``: those of them in unseen wording.
    """
    groups = {
        "unseen_wording": [p["problem_id"] for p in test if p.get("wording") == "unseen"],
        "tracked": [p["problem_id"] for p in tracked],
        "tracked_tests_only": [p["problem_id"] for p in tracked if not p.get("solutions")],
        "tracked_unseen_wording": [p["problem_id"] for p in tracked if p.get("wording") == "unseen"],
    }
    return {name: ids for name, ids in groups.items() if ids}


def group_pass_at_k(problems: Iterable[dict[str, Any]], results: Iterable[dict[str, Any]], ks: Sequence[int],
                    groups: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """pass@k of each named group of problems (means over its problems, :func:`coderl_ray.eval.metrics.summarize`),
    with the group's ``problems`` count: ``{name: {"pass@1": ..., "problems": ...}}``."""
    by_id = {p["problem_id"]: p for p in problems}
    rows_by_problem: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        rows_by_problem.setdefault(r["problem_id"], []).append(r)
    out = {}
    for name, ids in groups.items():
        missing = [pid for pid in ids if pid not in by_id]
        if missing:
            raise ValueError(f"group {name!r} names problem {missing[0]!r}, which is not among the problems given")
        overall = summarize([by_id[pid] for pid in ids], [r for pid in ids for r in rows_by_problem.get(pid, [])],
                            ks, submissions=())["overall"]
        out[name] = {**{f"pass@{k}": v for k, v in overall["pass@k"].items()}, "problems": overall["problems"]}
    return out
