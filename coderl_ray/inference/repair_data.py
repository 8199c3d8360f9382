"""Training data of the repair model (CodeRL, Sec. 3.3, program repairing), built from the replay buffer. No Ray.

A pair is a failed program of a problem, with its error, as input and a passing program of the same problem as
target. The choices (docs/repair.md says why):

* **Which failures.** Outcomes ``compile_error``, ``runtime_error``, ``timeout`` and ``failed``: the program ran
  and the sandbox has an error to report. ``infra_error`` (the sandbox broke, not the program) never; ``passed`` is
  a target, not an input.
* **Which targets.** The problem's reference solutions and its passing samples (any round), each distinct program
  once. A problem with no passing program gives no pair.
* **Dedup.** Failed programs of a problem with the same code (ignoring leading and trailing whitespace) count once,
  as the one with the smallest sample id; so do equal targets (a reference solution wins over an equal sample).
* **How many.** At most ``max_pairs_per_problem`` failed programs per problem, a seeded draw among its distinct
  ones (the same draw whatever the rows' order), so the problems the actor fails most do not dominate the data.
* **Which target when several pass.** The one closest to the failed program (``difflib`` similarity of the code;
  ties to the first in target order: references, then samples by id): the smallest rewrite that passes, so the
  model learns to keep what was right and change what was wrong instead of ignoring its input.
"""

from __future__ import annotations

import difflib
import random
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

REPAIRABLE_OUTCOMES = ("compile_error", "runtime_error", "timeout", "failed")


class NoRepairPairsError(ValueError):
    """No problem of the buffer has both a failed program and a passing one: nothing to train a repair model on."""


def repair_pairs(problems: Iterable[dict[str, Any]], rows: Iterable[dict[str, Any]], max_pairs_per_problem: int,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Repair pairs from buffer ``rows`` (``problem_id``, ``sample_id``, ``code``, ``outcome``, ``error``) and the
    ``problems`` they belong to (their ``solutions`` are targets too).

    Returns ``{problem_id, sample_id, outcome, error, program, target_id, target}`` dicts, sorted by problem and
    failed sample id. ``sample_id`` is the failed program's; ``target_id`` is ``<problem_id>#gt<k>`` for the k-th
    reference solution, else the passing sample's id. Rows of problems not in ``problems`` are ignored.
    """
    if max_pairs_per_problem < 1:
        raise ValueError(f"max_pairs_per_problem must be >= 1, got {max_pairs_per_problem}")
    by_id = {p["problem_id"]: p for p in problems}
    failures: dict[str, dict[str, dict]] = defaultdict(dict)  # problem -> stripped code -> row
    passing: dict[str, dict[str, str]] = defaultdict(dict)  # problem -> stripped code -> sample id
    for r in rows:
        pid = r["problem_id"]
        if pid not in by_id:
            continue
        code = (r.get("code") or "").strip()
        if r["outcome"] == "passed":
            _keep_smallest(passing[pid], code, r["sample_id"])
        elif r["outcome"] in REPAIRABLE_OUTCOMES:
            held = failures[pid].get(code)
            if held is None or r["sample_id"] < held["sample_id"]:
                failures[pid][code] = r

    pairs = []
    for pid in sorted(failures):
        targets = _targets(by_id[pid], passing.get(pid, {}))
        if not targets:
            continue
        chosen = sorted(failures[pid].values(), key=lambda r: r["sample_id"])
        if len(chosen) > max_pairs_per_problem:
            # A stream of its own per problem: the draw does not depend on which other problems are present.
            chosen = sorted(random.Random(f"repair-pairs/{seed}/{pid}").sample(chosen, max_pairs_per_problem),
                            key=lambda r: r["sample_id"])
        for r in chosen:
            program = (r.get("code") or "").strip()
            candidates = [(tid, code) for tid, code in targets if code != program]
            if not candidates:
                continue
            tid, target = max(candidates, key=lambda t: _similarity(program, t[1]))  # max keeps the first of ties
            pairs.append({"problem_id": pid, "sample_id": r["sample_id"], "outcome": r["outcome"],
                          "error": r.get("error") or "", "program": r.get("code") or "", "target_id": tid,
                          "target": target})
    return pairs


def _keep_smallest(seen: dict[str, str], code: str, sample_id: str) -> None:
    if code not in seen or sample_id < seen[code]:
        seen[code] = sample_id


def _targets(problem: dict[str, Any], passing: dict[str, str]) -> list[tuple[str, str]]:
    """(target id, stripped code) of a problem's distinct passing programs: references first, then samples by id."""
    out, seen = [], set()
    for k, code in enumerate(problem.get("solutions") or []):
        code = code.strip()
        if code not in seen:
            seen.add(code)
            out.append((f"{problem['problem_id']}#gt{k}", code))
    for code, sid in sorted(passing.items(), key=lambda kv: kv[1]):
        if code not in seen:
            seen.add(code)
            out.append((sid, code))
    return out


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def repair_rows(pairs: list[dict[str, Any]], problems: Iterable[dict[str, Any]], tokenizer, max_source_tokens: int,
                max_target_tokens: int) -> list[dict[str, Any]]:
    """Pairs as SFT rows for the training loop: ``prompt_ids`` the encoded repair prompt
    (:func:`coderl_ray.data.prompts.build_repair_prompt`, cut from the left like every prompt so that the error and
    ``ANSWER:`` survive), ``token_ids`` the target program plus EOS (cut to ``max_target_tokens``), as
    :func:`coderl_ray.rl.replay_buffer.ground_truth_rows` builds the actor's SFT rows."""
    from coderl_ray.data.prompts import build_repair_prompt
    from coderl_ray.models.batching import encode_program, encode_prompt

    by_id = {p["problem_id"]: p for p in problems}
    return [{"problem_id": p["problem_id"], "sample_id": f"{p['sample_id']}>{p['target_id']}",
             "prompt_ids": encode_prompt(tokenizer, build_repair_prompt(by_id[p["problem_id"]], p["program"],
                                                                        p["outcome"], p["error"]),
                                         max_source_tokens),
             "token_ids": encode_program(tokenizer, p["target"], max_target_tokens), "outcome": "passed"}
            for p in pairs]
