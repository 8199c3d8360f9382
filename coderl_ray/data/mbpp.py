"""MBPP (Austin et al., 2021) as canonical problem records with ``assert`` tests.

Reads the original JSON Lines (``text``, ``code``, ``task_id``, ``test_setup_code``, ``test_list``,
``challenge_test_list``), the Hugging Face ``mbpp`` "full" configuration (the same fields) and the "sanitized"
configuration (``prompt`` and ``test_imports`` instead of ``text`` and ``test_setup_code``), from a file, a folder of
JSON Lines / Parquet files, or an iterable of row dicts.

Splits are defined by task id, as in the paper: ``prompt`` 1-10 (few-shot examples), ``test`` 11-510,
``validation`` 511-600, ``train`` 601-974. The question is the usual MBPP prompt: the description followed by the
test asserts ("Your code should pass these tests:"), because the asserts are what fix the function's name and
signature. The example tests are the first assert (the one a filter may run before the hidden tests), which by
default is also the first hidden test. That is common practice (MBPP's evaluation runs every assert of
``test_list``, and work that filters or ranks programs by an example test takes the first of them), under which a
program kept by the filter has already passed one of its three hidden tests. ``hold_out_example=True`` keeps it
out of the hidden tests instead: they are then the other asserts (a task without another is skipped and reported),
and with ``tests_in_prompt="first"`` the question quotes only the example, so that no hidden test is shown.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from coderl_ray.data.apps import UnusableTests
from coderl_ray.data.examples import quiet_parse
from coderl_ray.data.jsonl import iter_records
from coderl_ray.data.loaded import LoadedProblems, SkippedProblem
from coderl_ray.data.problems import ProblemError, validate_problem

SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
TESTS_IN_PROMPT = ("all", "first", "none")


def split_of(task_id: int) -> str | None:
    """The standard split a task id belongs to.

    >>> split_of(11), split_of(600), split_of(974), split_of(975)
    ('test', 'validation', 'train', None)
    """
    for name, (lo, hi) in SPLITS.items():
        if lo <= task_id <= hi:
            return name
    return None


def function_name(asserts: list[str], code: str) -> str | None:
    """The function the asserts exercise: the first called name that the reference program defines (else the first
    called name that is not a builtin)."""
    defined: set[str] = set()
    try:
        for node in ast.walk(quiet_parse(code)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
    except SyntaxError:
        pass
    called: list[str] = []
    for statement in asserts:
        try:
            tree = quiet_parse(statement)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                called.append(node.func.id)
    for name in called:
        if name in defined:
            return name
    for name in called:
        if not hasattr(builtins, name):
            return name
    return None


def _question(text: str, asserts: list[str], tests_in_prompt: str) -> str:
    shown = {"all": asserts, "first": asserts[:1], "none": []}[tests_in_prompt]
    if not shown:
        return text
    return text + "\nYour code should pass these tests:\n\n" + "\n".join(shown)


def _string_list(value: Any, name: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProblemError(f"{where}: {name!r} must be a list of strings, got {type(value).__name__}")
    return list(value)


def problem_from_row(row: Any, where: str, tests_in_prompt: str = "all",
                     include_challenge: bool = False, hold_out_example: bool = False) -> dict[str, Any]:
    """One MBPP row (original or Hugging Face schema) -> canonical record. Errors name ``where`` and the task."""
    if not isinstance(row, dict):
        raise ProblemError(f"{where}: expected an object, got {type(row).__name__}")
    task_id = row.get("task_id")
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise ProblemError(f"{where}: 'task_id' must be an integer, got {task_id!r}")
    where = f"{where} (mbpp/{task_id})"
    text = row["text"] if "text" in row else row.get("prompt")
    code = row.get("code")
    for name, value in (("text", text), ("code", code)):
        if not isinstance(value, str):
            raise ProblemError(f"{where}: {name!r} must be a string, got {type(value).__name__}")
    if "test_list" not in row:
        raise ProblemError(f"{where}: missing 'test_list'")
    asserts = _string_list(row["test_list"], "test_list", where)
    if not asserts:
        raise ProblemError(f"{where}: 'test_list' is empty")
    if include_challenge:
        asserts += _string_list(row.get("challenge_test_list") or [], "challenge_test_list", where)
    hidden = asserts
    if hold_out_example:
        # Every copy: five MBPP tasks repeat an assert (37, 337, 508, 713, 862), their first one included.
        hidden = [a for a in asserts if a != asserts[0]]
        if not hidden:
            raise UnusableTests(f"{where}: every assert of 'test_list' is the example, so holding it out "
                                "(hold_out_example) leaves no hidden test")
    if "test_imports" in row and "test_setup_code" not in row:
        setup = "\n".join(_string_list(row["test_imports"] or [], "test_imports", where))
    else:
        setup = row.get("test_setup_code") or ""
        if not isinstance(setup, str):
            raise ProblemError(f"{where}: 'test_setup_code' must be a string, got {type(setup).__name__}")
    # The release's programs use Windows line endings; a tokenizer should not learn "\r" as part of Python.
    code = code.replace("\r\n", "\n")
    text = text.strip()
    return validate_problem({
        "problem_id": f"mbpp/{task_id}",
        "source": "mbpp",
        "difficulty": "",
        "question": _question(text, asserts[:len(row["test_list"])], tests_in_prompt),
        "starter_code": "",
        "fn_name": function_name(asserts, code),
        "tests": {"kind": "assert", "setup_code": setup, "asserts": hidden},
        "example_tests": {"kind": "assert", "setup_code": setup, "asserts": asserts[:1]},
        "solutions": [code],
    }, where)


def load_mbpp(path: str | Path | Iterable[dict[str, Any]], split: str | None = None, *,
              tests_in_prompt: str = "all", include_challenge: bool = False,
              hold_out_example: bool = False, strict: bool = False) -> LoadedProblems:
    """MBPP problems, optionally one standard split (``prompt``, ``test``, ``validation``, ``train``).

    ``tests_in_prompt`` chooses how many asserts the question quotes (``all``, ``first``, ``none``);
    ``include_challenge`` adds ``challenge_test_list`` to the hidden tests; ``hold_out_example`` removes the example
    (the first assert) from them (see the module's docstring); ``strict`` raises on a task left without hidden tests
    instead of skipping it.
    """
    if split is not None and split not in SPLITS:
        raise ProblemError(f"unknown MBPP split {split!r} (expected one of {', '.join(SPLITS)})")
    if tests_in_prompt not in TESTS_IN_PROMPT:
        raise ProblemError(f"tests_in_prompt must be one of {', '.join(TESTS_IN_PROMPT)}, got {tests_in_prompt!r}")
    if isinstance(path, (str, Path)):
        pairs: Iterable[tuple[str, dict[str, Any]]] = iter_records(path)
        source = str(path)
    else:
        pairs = ((f"row {i}", row) for i, row in enumerate(path))
        source = "mbpp rows"
    out = LoadedProblems(source=source)
    seen: set[str] = set()
    for where, row in pairs:
        try:
            problem = problem_from_row(row, where, tests_in_prompt, include_challenge, hold_out_example)
        except UnusableTests as exc:
            if strict:
                raise
            if split is None or split_of(row["task_id"]) == split:
                out.skipped.append(SkippedProblem(f"mbpp/{row['task_id']}", where, str(exc)))
            continue
        if split is not None and split_of(row["task_id"]) != split:
            continue
        if problem["problem_id"] in seen:
            raise ProblemError(f"{where}: duplicate task_id {row['task_id']}")
        seen.add(problem["problem_id"])
        out.append(problem)
    return out
