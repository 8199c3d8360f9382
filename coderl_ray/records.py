"""The records that flow between stages, and the one outcome enum everything agrees on.

docs/design.md fixes three JSON Lines records: problems, samples and results. This module is the only place that knows
their fields, how an execution outcome maps to an APPS code and to CodeRL's reward, and which outcomes may become
training labels. It imports neither Ray nor torch, so parsers, the sandbox and the metrics can all share it.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any


class Outcome(str, enum.Enum):
    """What happened when a program ran against a problem's tests.

    ``INFRA_ERROR`` means the verdict is the infrastructure's, not the program's: the sandbox broke, the input was
    malformed (a problem without tests, a sample without code), or the machine starved the program of CPU so that
    its wall-clock backstop fired first (docs/sandbox.md#time). A broken or starved run is retried
    (``SandboxLimits.infra_retries``), malformed input is not; an ``infra_error`` is never a training label, is left
    out of every metric and is counted in every report (``infra_errors``).
    """

    PASSED = "passed"
    FAILED = "failed"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    COMPILE_ERROR = "compile_error"
    INFRA_ERROR = "infra_error"

    @property
    def apps_result(self) -> bool | int | None:
        """The code the APPS harness reports: True, False, -1 (runtime error, timeouts included), -2 (compile)."""
        return _APPS_CODES[self]

    @property
    def is_label(self) -> bool:
        """Whether this outcome may become a training label (infrastructure failures may not)."""
        return self is not Outcome.INFRA_ERROR


_APPS_CODES: dict[Outcome, bool | int | None] = {
    Outcome.PASSED: True,
    Outcome.FAILED: False,
    Outcome.RUNTIME_ERROR: -1,
    Outcome.TIMEOUT: -1,
    Outcome.COMPILE_ERROR: -2,
    Outcome.INFRA_ERROR: None,
}

# CodeRL's critic classes (paper, Sec. 3.2): compile error, runtime error, failed test, passed. Timeouts are runtime
# errors, as in APPS. The binary critic collapses everything but "passed".
CRITIC_CLASSES_4 = ("compile_error", "runtime_error", "failed", "passed")
CRITIC_CLASSES_2 = ("not_passed", "passed")

_CLASS_OF_OUTCOME_4 = {
    Outcome.COMPILE_ERROR: 0,
    Outcome.RUNTIME_ERROR: 1,
    Outcome.TIMEOUT: 1,
    Outcome.FAILED: 2,
    Outcome.PASSED: 3,
}

# Reward of each critic class (CodeRL, Eq. 4): compile error -1.0, runtime error -0.6, failed -0.3, passed +1.0.
REWARD_OF_CLASS_4 = (-1.0, -0.6, -0.3, 1.0)


def critic_class(outcome: Outcome | str, n_classes: int = 4) -> int:
    """Index of the critic class of an outcome (0..n_classes-1). Infrastructure errors have no class.

    >>> critic_class("timeout"), critic_class("passed", n_classes=2)
    (1, 1)
    """
    outcome = Outcome(outcome)
    if not outcome.is_label:
        raise ValueError(f"outcome {outcome.value!r} is an infrastructure failure and has no critic class")
    cls = _CLASS_OF_OUTCOME_4[outcome]
    if n_classes == 4:
        return cls
    if n_classes == 2:
        return int(cls == 3)
    raise ValueError(f"n_classes must be 2 or 4, got {n_classes}")


def reward(outcome: Outcome | str) -> float:
    """CodeRL's reward of an outcome.

    >>> reward("passed"), reward("timeout"), reward("compile_error")
    (1.0, -0.6, -1.0)
    """
    return REWARD_OF_CLASS_4[critic_class(outcome, 4)]


@dataclass
class ExecutionResult:
    """The result record of docs/design.md: one program run against one problem's tests."""

    problem_id: str
    sample_id: str
    outcome: Outcome
    passed_tests: int = 0
    total_tests: int = 0
    # One entry per test: True passed, False wrong answer, None not run or crashed (APPS's per-test list).
    test_results: list[bool | None] = field(default_factory=list)
    error: str = ""
    duration_s: float = 0.0

    @property
    def apps_result(self) -> bool | int | None:
        return Outcome(self.outcome).apps_result

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["outcome"] = Outcome(self.outcome).value
        row["apps_result"] = self.apps_result
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "ExecutionResult":
        return cls(
            problem_id=row["problem_id"],
            sample_id=row["sample_id"],
            outcome=Outcome(row["outcome"]),
            passed_tests=int(row.get("passed_tests", 0)),
            total_tests=int(row.get("total_tests", 0)),
            test_results=list(row.get("test_results") or []),
            error=row.get("error") or "",
            duration_s=float(row.get("duration_s", 0.0)),
        )


# --- Arrow view of records -------------------------------------------------------------------------------------
# Ray Datasets are Arrow tables, and Arrow needs one type per column. A `call` test's inputs are lists of arbitrary
# JSON values, so in the Arrow view every test input and output is carried as a string: the stdin/stdout text for
# `stdio`, the JSON encoding of the argument list / expected value for `call`. `problem_to_row` and
# `problem_from_row` are the only two functions that convert.

TEST_KINDS = ("stdio", "call", "assert")
# How a problem's outputs are judged (docs/sandbox.md, "Output comparison"): a problem record may name the mode of
# its source (APPS problems say "apps"); ``sandbox.compare`` = "auto" follows it, "strict" when the problem says
# nothing.
COMPARE_MODES = ("strict", "apps")


def _tests_to_row(tests: dict[str, Any] | None) -> dict[str, Any] | None:
    if tests is None:
        return None
    kind = tests["kind"]
    row = {"kind": kind, "inputs": [], "outputs": [], "setup_code": "", "asserts": []}
    if kind == "stdio":
        row["inputs"] = list(tests.get("inputs", []))
        row["outputs"] = list(tests.get("outputs", []))
    elif kind == "call":
        row["inputs"] = [json.dumps(x) for x in tests.get("inputs", [])]
        row["outputs"] = [json.dumps(x) for x in tests.get("outputs", [])]
    else:
        row["setup_code"] = tests.get("setup_code", "") or ""
        row["asserts"] = list(tests.get("asserts", []))
    return row


def _tests_from_row(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    kind = row["kind"]
    if kind == "stdio":
        return {"kind": kind, "inputs": list(row["inputs"]), "outputs": list(row["outputs"])}
    if kind == "call":
        return {
            "kind": kind,
            "inputs": [json.loads(x) for x in row["inputs"]],
            "outputs": [json.loads(x) for x in row["outputs"]],
        }
    return {"kind": kind, "setup_code": row.get("setup_code") or "", "asserts": list(row["asserts"])}


def problem_to_row(problem: dict[str, Any]) -> dict[str, Any]:
    """Canonical problem record -> a row with a fixed Arrow type (see the note above)."""
    row = dict(problem)
    row["tests"] = _tests_to_row(problem.get("tests"))
    row["example_tests"] = _tests_to_row(problem.get("example_tests"))
    row["starter_code"] = problem.get("starter_code") or ""
    row["fn_name"] = problem.get("fn_name") or ""
    row["solutions"] = list(problem.get("solutions") or [])
    row["compare"] = problem.get("compare") or ""
    return row


def problem_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`problem_to_row` (accepts numpy arrays, as Ray Data batches hold them)."""
    problem = {k: _plain(v) for k, v in row.items()}
    problem["tests"] = _tests_from_row(problem.get("tests"))
    problem["example_tests"] = _tests_from_row(problem.get("example_tests"))
    problem["fn_name"] = problem.get("fn_name") or None
    problem["compare"] = problem.get("compare") or None
    return problem


def _plain(value: Any) -> Any:
    """numpy arrays / scalars from Arrow -> plain Python lists and scalars."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
