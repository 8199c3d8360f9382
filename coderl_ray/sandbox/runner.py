"""Skeleton runner: a fresh interpreter per program, tests run inside it, verdicts decided in the parent."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Any

from coderl_ray.records import ExecutionResult, Outcome
from coderl_ray.sandbox.limits import SandboxLimits

# The child receives the program and the test *inputs* only; expected outputs stay in the parent.
_HARNESS = r'''
import io, json, sys, traceback
spec = json.loads(sys.stdin.read())
out = sys.stdout
sys.setrecursionlimit(10000)
def report(obj):
    out.write(json.dumps(obj) + "\n"); out.flush()
try:
    code = compile(spec["code"], "<program>", "exec")
except BaseException as exc:
    report({"compile_error": f"{type(exc).__name__}: {exc}"}); sys.exit(0)
for i, inp in enumerate(spec["inputs"]):
    buf = io.StringIO()
    sys.stdout = buf
    try:
        if spec["kind"] == "stdio":
            sys.stdin = io.StringIO(inp)
            exec(code, {"__name__": "__main__"})
            value = None
        else:
            env = {"__name__": "__main__"}
            exec(code, env)
            fn = env.get(spec["fn_name"])
            if fn is None and "Solution" in env:
                fn = getattr(env["Solution"](), spec["fn_name"])
            if fn is None:
                raise NameError(f"function {spec['fn_name']!r} is not defined")
            value = json.loads(json.dumps(fn(*json.loads(inp))))
        sys.stdout = out
        report({"i": i, "stdout": buf.getvalue(), "value": value})
    except SystemExit:
        sys.stdout = out
        report({"i": i, "stdout": buf.getvalue(), "value": None})
    except BaseException as exc:
        sys.stdout = out
        report({"i": i, "error": f"{type(exc).__name__}: {exc}"})
'''


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip().split("\n"))


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def execute(problem: dict[str, Any], code: str, sample_id: str = "",
            limits: SandboxLimits | None = None) -> ExecutionResult:
    """Run ``code`` against ``problem``'s tests (or example tests) and return the result record."""
    limits = limits or SandboxLimits()
    tests = problem["example_tests"] if limits.example_tests else problem["tests"]
    pid = problem["problem_id"]
    if tests is None:
        return ExecutionResult(pid, sample_id, Outcome.INFRA_ERROR, error=f"problem {pid} has no example tests")
    if tests["kind"] == "assert":
        raise NotImplementedError("assert-style tests need the hardened sandbox")
    inputs = tests["inputs"] if tests["kind"] == "stdio" else [json.dumps(x) for x in tests["inputs"]]
    spec = {"kind": tests["kind"], "code": code, "inputs": inputs, "fn_name": problem.get("fn_name")}
    n = len(inputs)
    start = time.perf_counter()
    budget = min(limits.program_timeout_s, limits.timeout_s * max(n, 1))
    with tempfile.TemporaryDirectory(prefix="coderl-") as scratch:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _HARNESS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, cwd=scratch, start_new_session=True,
            env={"PATH": "/usr/bin:/bin", "HOME": scratch},
        )
        timed_out = False
        try:
            stdout, _ = proc.communicate(json.dumps(spec).encode(), timeout=budget)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, _ = proc.communicate()
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    duration = time.perf_counter() - start
    results: list[bool | None] = [None] * n
    outcome, error = None, ""
    for line in stdout.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(msg, dict):
            continue
        if "compile_error" in msg:
            return ExecutionResult(pid, sample_id, Outcome.COMPILE_ERROR, 0, n, [None] * n,
                                   str(msg["compile_error"]), duration)
        i = msg.get("i")
        if not isinstance(i, int) or not 0 <= i < n:
            continue
        if "error" in msg:
            results[i] = None
            outcome = outcome or Outcome.RUNTIME_ERROR
            error = error or str(msg["error"])
        elif tests["kind"] == "stdio":
            results[i] = _normalise(str(msg.get("stdout", ""))) == _normalise(tests["outputs"][i])
        else:
            results[i] = _same_value(msg.get("value"), tests["outputs"][i])
    if timed_out and outcome is None:
        outcome, error = Outcome.TIMEOUT, f"timed out after {budget:.1f}s"
    passed = sum(r is True for r in results)
    if outcome is None:
        if any(r is None for r in results):
            outcome, error = Outcome.RUNTIME_ERROR, "program exited before running every test"
        else:
            outcome = Outcome.PASSED if passed == n else Outcome.FAILED
    return ExecutionResult(pid, sample_id, outcome, passed, n, results, error[:2000], duration)


def execute_many(problems: dict[str, dict[str, Any]], samples: Iterable[dict[str, Any]],
                 limits: SandboxLimits | None = None) -> list[ExecutionResult]:
    """Run each sample (``{problem_id, sample_id, code}``) against its problem, in order."""
    out = []
    for s in samples:
        problem = problems.get(s["problem_id"])
        if problem is None:
            out.append(ExecutionResult(s["problem_id"], s["sample_id"], Outcome.INFRA_ERROR,
                                       error=f"unknown problem_id {s['problem_id']!r}"))
            continue
        out.append(execute(problem, s["code"], s["sample_id"], limits))
    return out
