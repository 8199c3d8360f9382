"""APPS (Hendrycks et al., 2021) as canonical problem records.

Two sources hold the same problems:

- the raw release, ``APPS/{train,test}/<id>/`` with ``question.txt``, ``input_output.json`` (``inputs``,
  ``outputs``, optional ``fn_name``), ``solutions.json``, ``metadata.json`` (``difficulty``, ``url``) and an optional
  ``starter_code.py`` — :func:`load_apps_dir`;
- the Hugging Face ``codeparrot/apps`` rows (``problem_id``, ``question``, ``solutions`` and ``input_output`` as JSON
  strings, ``difficulty``, ``url``, ``starter_code``), from local JSON Lines / Parquet or from the Hub —
  :func:`load_apps_rows`, :func:`load_apps_hub`.

A problem with ``fn_name`` becomes a ``call`` test (LeetCode ``class Solution`` starter code included: the sandbox
calls the method on an instance); every other problem becomes ``stdio``. Problems whose tests are missing or cannot
be parsed are skipped and listed in the result's ``skipped`` (APPS's train split has a few hundred); any other
malformed input (bad JSON in a record, a file that is not UTF-8, a field of the wrong type) is a
:class:`~coderl_ray.data.problems.ProblemError` naming the file and the problem.

Test values are kept as the dataset has them. In particular Codewars problems store a call's expected value wrapped
in a one-element list (``[[false]]`` for a function returning ``False``); APPS's harness accepts either form, and so
does the sandbox in both comparison modes, so the wrapping is not "fixed" here (unwrapping would be wrong for
functions that do return one-element lists).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from coderl_ray.data.examples import extract_example_tests
from coderl_ray.data.jsonl import iter_records, record_files
from coderl_ray.data.loaded import LoadedProblems, SkippedProblem
from coderl_ray.data.problems import DIFFICULTIES, ProblemError, validate_problem

SPLITS = ("train", "test")
HUB_NAME = "codeparrot/apps"


class UnusableTests(ProblemError):
    """The problem's tests are missing or unparsable: the problem is skipped (and reported), not fatal."""


def problem_id_of(name: str | int, split: str | None) -> str:
    """``apps/<split>/<id>`` when the split is known (train and test ids overlap), else ``apps/<id>``; numeric ids
    are zero-padded to four digits, as the release's folder names are.

    >>> problem_id_of(1, "test"), problem_id_of("0111", None)
    ('apps/test/0001', 'apps/0111')
    """
    name = f"{name:04d}" if isinstance(name, int) else str(name)
    return f"apps/{split}/{name}" if split else f"apps/{name}"


def _stdio_text(value: Any, what: str, where: str) -> str:
    # APPS's harness joins a list of lines with "\n" before feeding or comparing it; do the same once, here.
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    raise UnusableTests(f"{where}: standard-input {what} must be a string or a list of lines, "
                        f"got {type(value).__name__}")


def tests_from_input_output(io: Any, where: str) -> tuple[dict[str, Any], str | None]:
    """APPS's ``input_output`` object -> (canonical ``tests``, ``fn_name``). Raises :class:`UnusableTests`."""
    if not isinstance(io, dict):
        raise UnusableTests(f"{where}: input_output must be an object, got {type(io).__name__}")
    inputs, outputs = io.get("inputs"), io.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise UnusableTests(f"{where}: input_output needs 'inputs' and 'outputs' lists")
    if not inputs:
        raise UnusableTests(f"{where}: input_output has no test cases")
    if len(inputs) != len(outputs):
        raise UnusableTests(f"{where}: {len(inputs)} inputs but {len(outputs)} outputs")
    fn_name = io.get("fn_name")
    if fn_name is not None and (not isinstance(fn_name, str) or not fn_name.strip()):
        raise UnusableTests(f"{where}: fn_name must be a non-empty string, got {fn_name!r}")
    if fn_name:
        for i, x in enumerate(inputs):
            if not isinstance(x, list):
                raise UnusableTests(f"{where}: call-based input {i} is not an argument list ({type(x).__name__})")
        return {"kind": "call", "inputs": inputs, "outputs": outputs}, fn_name.strip()
    return {
        "kind": "stdio",
        "inputs": [_stdio_text(x, f"input {i}", where) for i, x in enumerate(inputs)],
        "outputs": [_stdio_text(y, f"output {i}", where) for i, y in enumerate(outputs)],
    }, None


def make_problem(problem_id: str, question: Any, input_output: Any, solutions: Any, difficulty: Any,
                 starter_code: Any, where: str, with_examples: bool = True) -> dict[str, Any]:
    """One APPS problem from its parsed fields -> a validated canonical record.

    ``input_output`` is the parsed object (``None`` when absent). Raises :class:`UnusableTests` when the problem has
    no usable tests, :class:`ProblemError` for anything else malformed.
    """
    label = f"{where} ({problem_id})"
    for name, value in (("question", question), ("starter_code", starter_code), ("difficulty", difficulty)):
        if not isinstance(value, str):
            raise ProblemError(f"{label}: {name} must be a string, got {type(value).__name__}")
    if not isinstance(solutions, list) or not all(isinstance(s, str) for s in solutions):
        raise ProblemError(f"{label}: solutions must be a list of strings")
    if difficulty and difficulty not in DIFFICULTIES:
        raise ProblemError(f"{label}: difficulty {difficulty!r} is not one of {', '.join(DIFFICULTIES)}")
    if input_output is None:
        raise UnusableTests(f"{label}: no tests (input_output missing or empty)")
    tests, fn_name = tests_from_input_output(input_output, label)
    examples = extract_example_tests(question, tests["kind"], fn_name) if with_examples else None
    return validate_problem({
        "problem_id": problem_id,
        "source": "apps",
        "difficulty": difficulty,
        "question": question,
        "starter_code": starter_code,
        "fn_name": fn_name,
        "tests": tests,
        "example_tests": examples,
        "solutions": solutions,
        "compare": "apps",  # judged as APPS's harness judges it, unless sandbox.compare / --compare says otherwise
    }, where)


# --- raw release layout --------------------------------------------------------------------------------------------

def _read_text(path: Path, where: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProblemError(f"{path}: not UTF-8 text ({exc}) [{where}]") from None
    except OSError as exc:
        raise ProblemError(f"{path}: cannot read ({exc.strerror}) [{where}]") from None


def _read_json(path: Path, where: str, unusable: bool = False) -> Any:
    text = _read_text(path, where)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        cls = UnusableTests if unusable else ProblemError
        raise cls(f"{path}: bad JSON ({exc}) [{where}]") from None


def read_problem_dir(folder: Path, problem_id: str, with_examples: bool = True) -> dict[str, Any]:
    """One raw APPS problem folder -> canonical record (raises UnusableTests / ProblemError)."""
    where = str(folder)
    question_file = folder / "question.txt"
    if not question_file.is_file():
        raise ProblemError(f"{folder}: missing question.txt ({problem_id})")
    question = _read_text(question_file, problem_id)
    io_file = folder / "input_output.json"
    input_output = None
    if io_file.is_file():
        text = _read_text(io_file, problem_id)
        if text.strip():
            try:
                input_output = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UnusableTests(f"{io_file}: bad JSON ({exc}) ({problem_id})") from None
    sol_file = folder / "solutions.json"
    solutions = _read_json(sol_file, problem_id) if sol_file.is_file() else []
    meta_file = folder / "metadata.json"
    metadata = _read_json(meta_file, problem_id) if meta_file.is_file() else {}
    if not isinstance(metadata, dict):
        raise ProblemError(f"{meta_file}: expected a JSON object ({problem_id})")
    starter_file = folder / "starter_code.py"
    starter = _read_text(starter_file, problem_id) if starter_file.is_file() else ""
    return make_problem(problem_id, question, input_output, solutions, metadata.get("difficulty") or "", starter,
                        where, with_examples)


def _is_problem_dir(path: Path) -> bool:
    return (path / "question.txt").is_file()


def _problem_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_apps_dir(path: str | Path, split: str | None = None, *, with_examples: bool = True,
                  strict: bool = False) -> LoadedProblems:
    """APPS problems from the raw release layout.

    ``path`` may be the release root (holding ``train/`` and ``test/``; ``split`` picks one, default both), a split
    folder, a folder of problem folders (e.g. ``../shared/data/apps_sample``) or one problem folder. Ids are
    ``apps/<split>/<folder>`` when the split is known, else ``apps/<folder>``. ``strict=True`` raises instead of
    skipping problems without usable tests.
    """
    path = Path(path)
    if not path.is_dir():
        raise ProblemError(f"{path}: no such APPS folder")
    if split is not None and split not in SPLITS:
        raise ProblemError(f"unknown APPS split {split!r} (expected one of {', '.join(SPLITS)})")
    if _is_problem_dir(path):
        jobs = [(path, path.parent.name if path.parent.name in SPLITS else split)]
    else:
        children = _problem_dirs(path)
        split_dirs = [c for c in children if c.name in SPLITS and not _is_problem_dir(c)]
        if split_dirs and len(split_dirs) == len(children):
            chosen = [c for c in split_dirs if split in (None, c.name)]
            if not chosen:
                raise ProblemError(f"{path}: has no {split}/ folder")
            jobs = [(p, c.name) for c in chosen for p in _problem_dirs(c)]
        else:
            own_split = path.name if path.name in SPLITS else split
            jobs = [(p, own_split) for p in children]
        if not jobs:
            raise ProblemError(f"{path}: no APPS problem folders (folders with question.txt) here")
    out = LoadedProblems(source=str(path))
    for folder, sp in jobs:
        pid = problem_id_of(folder.name, sp)
        try:
            out.append(read_problem_dir(folder, pid, with_examples))
        except UnusableTests as exc:
            if strict:
                raise
            out.skipped.append(SkippedProblem(pid, str(folder), str(exc)))
    out.log_skipped()
    return out


# --- Hugging Face rows (codeparrot/apps) ---------------------------------------------------------------------------

HF_COLUMNS = ("problem_id", "question", "solutions", "input_output", "difficulty", "url", "starter_code")


def problem_from_hf_row(row: Any, split: str | None, where: str, with_examples: bool = True) -> dict[str, Any]:
    """One ``codeparrot/apps`` row -> canonical record (raises UnusableTests / ProblemError)."""
    if not isinstance(row, dict):
        raise ProblemError(f"{where}: expected an object, got {type(row).__name__}")
    raw_id = row.get("problem_id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)) or raw_id == "":
        raise ProblemError(f"{where}: 'problem_id' must be an integer or a non-empty string, got {raw_id!r}")
    pid = problem_id_of(raw_id, split)
    for name in ("question", "solutions", "input_output"):
        if name not in row:
            raise ProblemError(f"{where} ({pid}): missing column {name!r} (expected the codeparrot/apps schema: "
                               f"{', '.join(HF_COLUMNS)})")
    solutions_text = row.get("solutions") or ""
    if not isinstance(solutions_text, str):
        raise ProblemError(f"{where} ({pid}): 'solutions' must be a JSON string, got {type(solutions_text).__name__}")
    try:
        solutions = json.loads(solutions_text) if solutions_text.strip() else []
    except json.JSONDecodeError as exc:
        raise ProblemError(f"{where} ({pid}): 'solutions' is not valid JSON ({exc})") from None
    io_text = row.get("input_output") or ""
    if not isinstance(io_text, str):
        raise ProblemError(f"{where} ({pid}): 'input_output' must be a JSON string, got {type(io_text).__name__}")
    input_output = None
    if io_text.strip():
        try:
            input_output = json.loads(io_text)
        except json.JSONDecodeError as exc:
            raise UnusableTests(f"{where} ({pid}): 'input_output' is not valid JSON ({exc})") from None
    return make_problem(pid, row.get("question"), input_output, solutions, row.get("difficulty") or "",
                        row.get("starter_code") or "", where, with_examples)


def iter_apps_rows(rows: Iterable[tuple[str, dict[str, Any]]], split: str | None, *, with_examples: bool = True,
                   strict: bool = False) -> Iterator[dict[str, Any] | SkippedProblem]:
    """Stream ``(where, row)`` pairs -> problems, or :class:`SkippedProblem` for rows without usable tests."""
    for where, row in rows:
        try:
            yield problem_from_hf_row(row, split, where, with_examples)
        except UnusableTests as exc:
            if strict:
                raise
            raw_id = row.get("problem_id") if isinstance(row, dict) else None
            yield SkippedProblem(problem_id_of(raw_id, split) if raw_id is not None else "?", where, str(exc))


def load_apps_rows(path_or_rows: str | Path | Iterable[dict[str, Any]], split: str | None = None, *,
                   with_examples: bool = True, strict: bool = False) -> LoadedProblems:
    """APPS problems from ``codeparrot/apps`` rows: a JSON Lines / Parquet file or folder, or any iterable of row
    dicts (e.g. a ``datasets.Dataset``). Files are streamed record by record.

    Without a ``split`` argument, each file whose name says its split (``test.jsonl``,
    ``train-00000-of-00001.parquet``) gives its rows that split, so a folder holding both splits loads as both.
    """
    if split is not None and split not in SPLITS:
        raise ProblemError(f"unknown APPS split {split!r} (expected one of {', '.join(SPLITS)})")
    if isinstance(path_or_rows, (str, Path)):
        source = str(path_or_rows)
        files = record_files(path_or_rows)
        items: Iterable[dict[str, Any] | SkippedProblem] = (
            item for file in files
            for item in iter_apps_rows(iter_records(file), split or split_from_name(file),
                                       with_examples=with_examples, strict=strict))
    else:
        source = "codeparrot/apps rows"
        items = iter_apps_rows(((f"row {i}", row) for i, row in enumerate(path_or_rows)), split,
                               with_examples=with_examples, strict=strict)
    out = LoadedProblems(source=source)
    seen: set[str] = set()
    for item in items:
        if isinstance(item, SkippedProblem):
            out.skipped.append(item)
            continue
        if item["problem_id"] in seen:
            raise ProblemError(f"{source}: duplicate problem_id {item['problem_id']!r} (mixing splits? pass split=)")
        seen.add(item["problem_id"])
        out.append(item)
    out.log_skipped()
    return out


def split_from_name(path: str | Path) -> str | None:
    """The split a dump's file name states: ``test.jsonl``, ``train-00000-of-00001.parquet``; else None."""
    stem = Path(path).name.split(".")[0].split("-")[0]
    return stem if stem in SPLITS else None


def load_apps_hub(split: str = "test", name: str = HUB_NAME, **kwargs: Any) -> LoadedProblems:
    """APPS from the Hugging Face Hub (or the local ``datasets`` cache) via ``datasets.load_dataset``.

    ``codeparrot/apps`` ships JSON Lines files next to a loading script that current ``datasets`` releases no
    longer run, so the files are read with the ``json`` builder, streamed row by row. Machines without Hub access
    should download ``{split}.jsonl`` once and use :func:`load_apps_rows` on it.
    """
    from datasets import load_dataset

    if split not in SPLITS:
        raise ProblemError(f"unknown APPS split {split!r} (expected one of {', '.join(SPLITS)})")
    rows = load_dataset("json", data_files={split: f"hf://datasets/{name}/{split}.jsonl"}, split=split,
                        streaming=True, **kwargs)
    return load_apps_rows(rows, split)
