"""Hard negatives for the critic: programs one Python token away from a passing one, labelled by running them.

Why: on the embedded suite the actor's failing programs differ from its passing ones in one constant or operator
(``x % 6`` where the statement says "divisible by 7"; docs/benchmarks.md, "Critic quality"), and a critic trained
on sampled programs alone learns which *problems* pass, not which *programs*. A mutant of a passing program (a
reference solution, or a passing sample) is the contrast it lacks: the same problem, the same program but for one
token. Its label is never assumed: a mutant can still pass (``x >= 0`` for ``x > 0`` on tests without a zero), so
every mutant is executed in the sandbox like any other program (:func:`coderl_ray.stages.critic_mutants`).

Pure Python (``tokenize`` from the standard library), no Ray, no torch.
"""

from __future__ import annotations

import io
import random
import tokenize
from typing import Any

# Operators a mutation may swap for another of the same kind: a wrong arithmetic step or a wrong comparison is what
# the actor's failing programs show besides wrong constants.
OPERATOR_GROUPS = (("+", "-", "*", "//", "%"), ("<", ">", "<=", ">=", "==", "!="))
_GROUP_OF = {op: group for group in OPERATOR_GROUPS for op in group}
# Integer literals become another value in 0..10 or the literal +- 1: the actor's wrong constants are small ones.
SMALL_INTS = tuple(range(11))


def _int_value(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None  # a float, an imaginary or an odd literal: left alone


def mutation_sites(code: str) -> list[tuple[int, int, int, list[str]]]:
    """Every token a mutation may replace: ``(line (1-based), start column, end column, replacements)``.

    >>> [(line, col, sorted(r)[:3]) for line, col, _, r in mutation_sites("a = x % 7\\n")]
    [(1, 6, ['*', '+', '-']), (1, 8, ['0', '1', '10'])]
    """
    sites = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []
    for tok in tokens:
        if tok.start[0] != tok.end[0]:
            continue
        if tok.type == tokenize.NUMBER:
            value = _int_value(tok.string)
            if value is None:
                continue
            options = {str(v) for v in (*SMALL_INTS, value - 1, value + 1) if v >= 0 and v != value}
        elif tok.type == tokenize.OP and tok.string in _GROUP_OF:
            options = {op for op in _GROUP_OF[tok.string] if op != tok.string}
        else:
            continue
        sites.append((tok.start[0], tok.start[1], tok.end[1], sorted(options)))
    return sites


def mutants(code: str, n: int, rng: random.Random) -> list[str]:
    """Up to ``n`` distinct programs that differ from ``code`` in one integer literal or operator, drawn with
    ``rng``: a site first (uniformly), then its replacement, so a program's many literals do not crowd out its
    operators. Fewer when ``code`` has fewer distinct mutants (none when it does not tokenize).

    >>> mutants("a = x % 7\\n", 3, random.Random(0))
    ['a = x % 5\\n', 'a = x - 7\\n', 'a = x % 6\\n']
    """
    sites = mutation_sites(code)
    if not sites or n <= 0:
        return []
    lines = code.splitlines(keepends=True)
    total = sum(len(options) for *_, options in sites)
    out: list[str] = []
    seen = {code}
    for _ in range(4 * n):  # bounded: a program with few distinct mutants must not loop forever
        if len(out) >= n or len(seen) > total:
            break
        line, start, end, options = rng.choice(sites)
        new = rng.choice(options)
        text = lines[line - 1]
        candidate = "".join(lines[: line - 1]) + text[:start] + new + text[end:] + "".join(lines[line:])
        if candidate not in seen:
            seen.add(candidate)
            out.append(candidate)
    return out


def mutant_samples(sources: list[dict[str, Any]], per_program: int, seed: int) -> list[dict[str, Any]]:
    """Samples (``problem_id``, ``sample_id``, ``code``, ``source_id``) to execute: ``per_program`` mutants of every
    source program (``problem_id``, ``sample_id``, ``code``; a passing one), seeded per source so that adding
    sources does not change the others' mutants.

    >>> [s["sample_id"] for s in mutant_samples([{"problem_id": "p", "sample_id": "p#gt0", "code": "y = 2\\n"}], 2, 0)]
    ['p#gt0~m0', 'p#gt0~m1']
    """
    out = []
    for src in sources:
        rng = random.Random(f"mutants/{seed}/{src['sample_id']}")
        for k, code in enumerate(mutants(src["code"], per_program, rng)):
            out.append({"problem_id": src["problem_id"], "sample_id": f"{src['sample_id']}~m{k}", "code": code,
                        "source_id": src["sample_id"]})
    return out
