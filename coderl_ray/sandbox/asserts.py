"""Assert-style tests (MBPP, HumanEval): deciding where each part of an assert is evaluated.

The rule that keeps verdicts sound: the process that runs candidate code only ever *computes values* (a call of a
candidate function with given arguments); every comparison, every ``assert`` and all of the test's own code run
where candidate code never ran. Two ways to get there:

* **worker fast path** - an assert of the shape ``assert f(<literals or names>) <op> <literal>`` (``==``, ``!=``,
  ``is``, ``is not``), ``assert f(...)`` or ``assert not f(...)``, with no setup code: the worker sends the call to
  the candidate process, rebuilds the returned value from plain data, evaluates the literal with
  :func:`ast.literal_eval` and compares. 971 of MBPP's 974 tasks are of this shape. No test code is executed at all.
* **judge** - anything else (HumanEval's ``check(candidate)`` functions, setup code, loops, ``math.isclose``): a
  separate sandboxed *judge* process executes the setup and the asserts, and the names they use that the candidate
  defines (the :func:`free_names`) are proxies whose calls travel to the candidate process as data and come back as
  builtin values. Setup code is trusted dataset code and runs only in the judge; when it builds objects from
  candidate classes (MBPP's ``root = Node(1)``) the judge holds handles to the candidate's objects.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from coderl_ray.sandbox.wire import encode

_BUILTIN_NAMES = frozenset(dir(builtins))
_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not"}


@dataclass(frozen=True)
class FastAssert:
    """One assert decided in the worker: ``request`` is the call sent to the candidate process."""

    request: dict
    op: str  # "==", "!=", "is", "is not", "truthy", "falsy"
    expected: Any = None


@dataclass(frozen=True)
class AssertPlan:
    fast: tuple[FastAssert, ...] | None  # None: a judge process is needed
    free_names: tuple[str, ...]  # names the judge must take from the candidate


def _literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _argument(node: ast.AST) -> tuple[bool, Any]:
    """A call argument the candidate process can rebuild: a literal, or a name it resolves in its own globals."""
    if isinstance(node, ast.Name):
        return True, {"$ref": node.id}
    ok, value = _literal(node)
    if not ok:
        return False, None
    try:
        return True, encode(value)
    except Exception:
        return False, None


def _candidate_call(node: ast.AST) -> dict | None:
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return None
    if node.func.id in _BUILTIN_NAMES:
        return None
    args = []
    for arg in node.args:
        if isinstance(arg, ast.Starred):
            return None
        ok, value = _argument(arg)
        if not ok:
            return None
        args.append(value)
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            return None
        ok, value = _argument(kw.value)
        if not ok:
            return None
        kwargs[kw.arg] = value
    return {"op": "call", "target": {"$ref": node.func.id}, "args": args, "kwargs": kwargs}


def _fast_assert(source: str) -> FastAssert | None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    test = tree.body[0].test
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _OPS:
        op = _OPS[type(test.ops[0])]
        for call_node, other in ((test.left, test.comparators[0]), (test.comparators[0], test.left)):
            request = _candidate_call(call_node)
            if request is None:
                continue
            ok, expected = _literal(other)
            if ok:
                return FastAssert(request, op, expected)
        return None
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        request = _candidate_call(test.operand)
        return FastAssert(request, "falsy") if request else None
    request = _candidate_call(test)
    return FastAssert(request, "truthy") if request else None


def free_names(sources: list[str], fn_name: str | None = None) -> tuple[str, ...]:
    """Names the test code reads but never binds and that are not builtins: the candidate must provide them.

    >>> free_names(["def check(candidate):\\n    assert candidate(2) == helper(1)"], "add")
    ('add', 'helper')
    """
    loaded: set[str] = set()
    bound: set[str] = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    bound.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.ExceptHandler) and node.name:
                bound.add(node.name)
    free = loaded - bound - _BUILTIN_NAMES
    if fn_name:
        free.add(fn_name)
    return tuple(sorted(free))


@lru_cache(maxsize=4096)
def plan_asserts(setup_code: str, asserts: tuple[str, ...], fn_name: str | None = None) -> AssertPlan:
    """Decide, once per problem, whether the worker can judge every assert itself (see the module docstring)."""
    names = free_names([setup_code, *asserts], fn_name)
    if (setup_code or "").strip():
        return AssertPlan(None, names)
    fast = []
    for source in asserts:
        plan = _fast_assert(source)
        if plan is None:
            return AssertPlan(None, names)
        fast.append(plan)
    return AssertPlan(tuple(fast), names)


def fast_verdict(actual: Any, check: FastAssert) -> bool:
    """The verdict of a fast-path assert on the rebuilt (builtin-typed) return value."""
    try:
        if check.op == "==":
            return bool(actual == check.expected)
        if check.op == "!=":
            return bool(actual != check.expected)
        if check.op == "is":
            return actual is check.expected
        if check.op == "is not":
            return actual is not check.expected
        if check.op == "truthy":
            return bool(actual)
        return not actual
    except Exception:  # e.g. the ambiguous truth value of a numpy array: the assert would have raised
        return False
