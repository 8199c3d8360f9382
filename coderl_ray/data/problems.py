"""The canonical problem record: validation, reading and writing JSON Lines.

Every data source (the embedded suite, APPS, MBPP, HumanEval, a user's own file) ends up as these records, so this
is where a malformed record is caught, with the file and line that hold it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from coderl_ray.records import COMPARE_MODES, TEST_KINDS

DIFFICULTIES = ("introductory", "interview", "competition")


class ProblemError(ValueError):
    """A problem record that does not follow docs/design.md's canonical schema; the message says where and why."""


def _fail(where: str, msg: str) -> None:
    raise ProblemError(f"{where}: {msg}")


def loads_line(line: str, where: str) -> Any:
    """Parse one line of a JSON Lines file; ``where`` names the line (``"problems.jsonl:3"``).

    A bad line raises :class:`ProblemError` that places the error in the line: json's own message counts the lines
    of the text it was given, so a record cut short reads "line 2 column 1" (the newline that ends it) while the
    file's line is another number.

    >>> for line in ('{"a": 1 "b": 2}', '{"a": 1,'):
    ...     try:
    ...         loads_line(line, "f.jsonl:3")
    ...     except ProblemError as exc:
    ...         print(exc)
    f.jsonl:3: bad JSON at column 9 of that line (Expecting ',' delimiter): '{"a": 1 "b": 2}'
    f.jsonl:3: bad JSON: the line ends before the record does (Expecting property name enclosed in double quotes)
    """
    text = line.rstrip("\r\n")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            raise ProblemError(f"{where}: bad JSON: the line ends before the record does ({exc.msg})") from None
        # json's messages that end in "at" expect the position after them; here it comes first.
        msg = exc.msg.removesuffix(" at").removesuffix(" starting")
        near = text[max(0, exc.pos - 30):exc.pos + 10]
        raise ProblemError(f"{where}: bad JSON at column {exc.pos + 1} of that line ({msg}): "
                           f"{'...' if exc.pos > 30 else ''}{near!r}") from None


def validate_tests(tests: Any, where: str, fn_name: str | None) -> None:
    if not isinstance(tests, dict):
        _fail(where, f"expected an object with a 'kind' field, got {type(tests).__name__}")
    kind = tests.get("kind")
    if kind not in TEST_KINDS:
        _fail(where, f"'kind' must be one of {', '.join(TEST_KINDS)}, got {kind!r}")
    if kind in ("stdio", "call"):
        inputs, outputs = tests.get("inputs"), tests.get("outputs")
        if not isinstance(inputs, list) or not isinstance(outputs, list):
            _fail(where, f"a {kind} test needs 'inputs' and 'outputs' lists")
        if len(inputs) != len(outputs):
            _fail(where, f"{len(inputs)} inputs but {len(outputs)} outputs")
        if kind == "stdio":
            for i, (x, y) in enumerate(zip(inputs, outputs)):
                if not isinstance(x, str) or not isinstance(y, str):
                    _fail(where, f"stdio test {i}: input and output must be strings, got "
                                 f"{type(x).__name__} and {type(y).__name__}")
        else:
            if not fn_name:
                _fail(where, "a call test needs the problem's 'fn_name'")
            for i, x in enumerate(inputs):
                if not isinstance(x, list):
                    _fail(where, f"call test {i}: input must be a list of arguments, got {type(x).__name__}")
    else:
        asserts = tests.get("asserts")
        if not isinstance(asserts, list) or not all(isinstance(a, str) for a in asserts):
            _fail(where, "an assert test needs 'asserts', a list of strings")
        if not isinstance(tests.get("setup_code", ""), str):
            _fail(where, "'setup_code' must be a string")


def validate_problem(problem: Any, where: str = "problem") -> dict[str, Any]:
    """Check one canonical problem record and return it with optional fields filled in.

    ``where`` names the record in errors (e.g. ``"problems.jsonl:12"``).
    """
    if not isinstance(problem, dict):
        _fail(where, f"expected a JSON object, got {type(problem).__name__}")
    pid = problem.get("problem_id")
    if not isinstance(pid, str) or not pid:
        _fail(where, "missing 'problem_id' (a non-empty string)")
    where = f"{where} ({pid})"
    if not isinstance(problem.get("question"), str):
        _fail(where, "missing 'question' (a string)")
    difficulty = problem.get("difficulty")
    if difficulty is not None and not isinstance(difficulty, str):
        _fail(where, f"'difficulty' must be a string, got {type(difficulty).__name__}")
    fn_name = problem.get("fn_name") or None
    if fn_name is not None and not isinstance(fn_name, str):
        _fail(where, f"'fn_name' must be a string or null, got {type(fn_name).__name__}")
    if "tests" not in problem:
        _fail(where, "missing 'tests'")
    validate_tests(problem["tests"], f"{where} tests", fn_name)
    if problem.get("example_tests") is not None:
        validate_tests(problem["example_tests"], f"{where} example_tests", fn_name)
    solutions = problem.get("solutions") or []
    if not isinstance(solutions, list) or not all(isinstance(s, str) for s in solutions):
        _fail(where, "'solutions' must be a list of strings")
    starter = problem.get("starter_code") or ""
    if not isinstance(starter, str):
        _fail(where, "'starter_code' must be a string")
    compare = problem.get("compare") or None
    if compare not in (None, *COMPARE_MODES):
        _fail(where, f"'compare' must be one of {', '.join(COMPARE_MODES)} or null, got {compare!r}")
    return {
        **problem,
        "source": problem.get("source") or "",
        "difficulty": difficulty or "",
        "starter_code": starter,
        "fn_name": fn_name,
        "example_tests": problem.get("example_tests"),
        "solutions": solutions,
        "compare": compare,
    }


def examples_among_hidden_tests(problem: dict[str, Any]) -> bool:
    """Whether the problem has example tests and every one of them is also a hidden test (same input and expected
    output, or the same assert after the same setup code), as MBPP's first assert is by default.

    >>> tests = {"kind": "stdio", "inputs": ["1\\n", "2\\n"], "outputs": ["1\\n", "4\\n"]}
    >>> [examples_among_hidden_tests({"tests": tests, "example_tests": {**tests, "inputs": ["2\\n"], "outputs": [y]}})
    ...  for y in ("4\\n", "2\\n")]
    [True, False]
    """
    hidden, examples = problem.get("tests") or {}, problem.get("example_tests") or {}
    if not examples or examples.get("kind") != hidden.get("kind"):
        return False
    if examples["kind"] == "assert":
        same_setup = (examples.get("setup_code") or "") == (hidden.get("setup_code") or "")
        return same_setup and bool(examples.get("asserts")) and all(a in hidden.get("asserts", [])
                                                                     for a in examples["asserts"])
    cases = list(zip(hidden.get("inputs", []), hidden.get("outputs", [])))
    shown = list(zip(examples.get("inputs", []), examples.get("outputs", [])))
    return bool(shown) and all(case in cases for case in shown)


def read_problems(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a canonical problems JSON Lines file. Errors name the file and the line."""
    return list(iter_problems(path))


def iter_problems(path: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"{path}: no such problems file")
    seen: set[str] = set()
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProblemError(f"{where}: not UTF-8 text ({exc})") from None
            if not line.strip():
                continue
            problem = validate_problem(loads_line(line, where), where)
            if problem["problem_id"] in seen:
                raise ProblemError(f"{where}: duplicate problem_id {problem['problem_id']!r}")
            seen.add(problem["problem_id"])
            yield problem


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write records as JSON Lines (atomically: a crash leaves no half-written file). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read any JSON Lines file; errors (:class:`ProblemError`, a ``ValueError``) name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    out = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProblemError(f"{path}:{lineno}: not UTF-8 text ({exc})") from None
            out.append(loads_line(line, f"{path}:{lineno}"))
    return out
