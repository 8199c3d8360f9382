"""Each test kind, each outcome, both comparison modes, stop-at-first-failure and infrastructure errors, with real
sandboxed children (no Ray)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from coderl_ray.records import Outcome
from coderl_ray.sandbox import Sandbox, SandboxLimits, default_sandbox, execute, execute_many


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as box:
        yield box


def run(sandbox, problem, code, **limits):
    # Generous limits unless a test is about them: the suite shares its machine with other work.
    limits.setdefault("timeout_s", 10.0)
    limits.setdefault("program_timeout_s", max(60.0, limits["timeout_s"]))
    return sandbox.execute(problem, code, "s0", SandboxLimits(**limits))


def stdio(inputs, outputs):
    return {"problem_id": "stdio", "tests": {"kind": "stdio", "inputs": inputs, "outputs": outputs}}


ADD = stdio(["1 2\n", "3 4\n", "10 -2\n"], ["3\n", "7\n", "8\n"])
ADD_OK = "a, b = map(int, input().split())\nprint(a + b)"


# --- stdio ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compare", ["strict", "apps"])
@pytest.mark.parametrize("code,outcome,results", [
    (ADD_OK, Outcome.PASSED, [True, True, True]),
    ("a, b = map(int, input().split())\nprint(a - b)", Outcome.FAILED, [False, False, False]),
    ("a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)", Outcome.FAILED, [True, True, False]),
    ("print(1 // 0)", Outcome.RUNTIME_ERROR, [None, None, None]),
    ("def f(:\n    pass", Outcome.COMPILE_ERROR, [None, None, None]),
])
def test_stdio_outcomes(sandbox, compare, code, outcome, results):
    result = run(sandbox, ADD, code, compare=compare)
    assert result.outcome is outcome, result.error
    assert result.test_results == results
    assert result.total_tests == 3 and result.passed_tests == results.count(True)
    assert result.problem_id == "stdio" and result.sample_id == "s0" and result.duration_s > 0


def test_stdio_timeout_then_the_next_test_runs_in_a_fresh_process(sandbox):
    code = "a, b = map(int, input().split())\nif a == 3:\n    while True:\n        pass\nprint(a + b)"
    result = run(sandbox, ADD, code, timeout_s=0.5)
    assert result.outcome is Outcome.TIMEOUT
    assert result.test_results == [True, None, True]
    assert "time limit" in result.error


def test_stdio_crash_midway_keeps_the_other_tests(sandbox):
    code = "import os\na, b = map(int, input().split())\nif a == 3:\n    os.abort()\nprint(a + b)"
    result = run(sandbox, ADD, code)
    assert result.outcome is Outcome.RUNTIME_ERROR
    assert result.test_results == [True, None, True]
    assert "SIGABRT" in result.error


def test_stop_on_first_failure(sandbox):
    code = "a, b = map(int, input().split())\nprint(a + b if a != 1 else 0)"
    assert run(sandbox, ADD, code).test_results == [False, True, True]
    stopped = run(sandbox, ADD, code, stop_on_first_failure=True)
    assert stopped.outcome is Outcome.FAILED
    assert stopped.test_results == [False, None, None] and stopped.total_tests == 3


def test_stdio_input_styles_all_work_in_strict_mode(sandbox):
    problem = stdio(["2\n5 6\n"], ["11\n"])
    for code in [
        "n = int(input())\nprint(sum(map(int, input().split())))",
        "import sys\ndata = sys.stdin.buffer.read().split()\nprint(int(data[1]) + int(data[2]))",
        "import sys\nlines = sys.stdin.readlines()\nprint(sum(map(int, lines[1].split())))",
        "print(sum(map(int, open(0).read().split()[1:])))",
        "import os\nprint(sum(map(int, os.read(0, 100).split()[1:])))",
        "import sys\nsys.stdout.buffer.write(b'11\\n')",
        "import os\nos.write(1, b'11\\n')",
    ]:
        assert run(sandbox, problem, code).outcome is Outcome.PASSED, code


def test_apps_mode_reproduces_the_apps_harness_stdin(sandbox):
    problem = stdio(["2\n5 6\n"], ["11\n"])
    # APPS gives the program a StringIO stdin: no .buffer, so this correct program is a runtime error there.
    code = "import sys\ndata = sys.stdin.buffer.read().split()\nprint(int(data[1]) + int(data[2]))"
    assert run(sandbox, problem, code).outcome is Outcome.PASSED
    assert run(sandbox, problem, code, compare="apps").outcome is Outcome.RUNTIME_ERROR
    # ... and open() returns the input whatever the file name.
    assert run(sandbox, problem, "print(sum(map(int, open('x.txt').read().split()[1:])))",
               compare="apps").outcome is Outcome.PASSED


def test_apps_mode_wraps_the_program_as_apps_does(sandbox):
    problem = stdio(["1\n", "2\n"], ["odd\n", "even\n"])
    # A top-level return is legal inside APPS's ``def code():`` wrapper, a compile error for a real script.
    code = "n = int(input())\nif n % 2:\n    print('odd')\n    return\nprint('even')"
    assert run(sandbox, problem, code).outcome is Outcome.COMPILE_ERROR
    assert run(sandbox, problem, code, compare="apps").outcome is Outcome.PASSED
    # APPS's prelude imports sqrt, Counter, numpy as np, ... for every program.
    code = "print('odd' if int(sqrt(int(input()) ** 2)) % 2 else 'even')"
    assert run(sandbox, problem, code).outcome is Outcome.RUNTIME_ERROR
    assert run(sandbox, problem, code, compare="apps").outcome is Outcome.PASSED


def test_a_problem_carries_its_comparison_mode(sandbox):
    # Converted APPS problems say compare="apps": the default limits (compare="auto") follow the problem, an explicit
    # mode overrides it, and a problem that says nothing is judged strictly.
    problem = {**stdio(["1\n", "2\n"], ["odd\n", "even\n"]), "compare": "apps"}
    code = "n = int(input())\nif n % 2:\n    print('odd')\n    return\nprint('even')"
    assert SandboxLimits().compare == "auto"
    assert run(sandbox, problem, code).outcome is Outcome.PASSED
    assert run(sandbox, problem, code, compare="strict").outcome is Outcome.COMPILE_ERROR
    assert run(sandbox, {**problem, "compare": None}, code).outcome is Outcome.COMPILE_ERROR
    assert run(sandbox, {**problem, "compare": None}, code, compare="apps").outcome is Outcome.PASSED
    bad = run(sandbox, {**problem, "compare": "loose"}, code)
    assert bad.outcome is Outcome.INFRA_ERROR and "unknown compare mode 'loose'" in bad.error


def test_exit_codes_in_strict_and_apps(sandbox):
    problem = stdio(["1 2\n"], ["3\n"])
    assert run(sandbox, problem, "print(3)\nraise SystemExit(0)").outcome is Outcome.PASSED
    assert run(sandbox, problem, "import sys\nprint(3)\nsys.exit(1)").outcome is Outcome.RUNTIME_ERROR
    assert run(sandbox, problem, "import sys\nprint(3)\nsys.exit(1)", compare="apps").outcome is Outcome.PASSED
    # os._exit after flushing is a normal end for a standard-input program.
    assert run(sandbox, problem, "import os, sys\nprint(3)\nsys.stdout.flush()\nos._exit(0)").outcome \
        is Outcome.PASSED
    assert run(sandbox, problem, "import os\nos._exit(3)").outcome is Outcome.RUNTIME_ERROR


def test_interpreter_shutdown_semantics(sandbox):
    problem = stdio(["4\n"], ["8\n"])
    threaded = ("import sys, threading\nsys.setrecursionlimit(10 ** 5)\nthreading.stack_size(2 ** 26)\n"
                "def main():\n    n = int(input())\n    print(n * 2)\nthreading.Thread(target=main).start()")
    at_exit = ("import atexit, sys\nout = []\natexit.register(lambda: sys.stdout.write(''.join(out)))\n"
               "out.append('8\\n')")
    deep = ("import sys\nsys.setrecursionlimit(10 ** 6)\ndef f(n):\n    return n if n == 0 else 1 + f(n - 1)\n"
            "print(f(8000) // 1000)")
    for code in (threaded, at_exit, deep):
        assert run(sandbox, problem, code).outcome is Outcome.PASSED, code


@pytest.mark.parametrize("compare", ["strict", "apps"])
def test_what_one_test_leaves_for_the_next(sandbox, compare):
    # The tests of one program share one process, as APPS's harness runs them (docs/sandbox.md, "Tests of one
    # program"): what a test stores on builtins, sys or an imported module, the next test sees. Its own globals are
    # fresh in strict mode (a new __main__ per test); in apps mode code() is called again, so its locals are fresh
    # and the module-level names of APPS's rewrite (imports) are shared.
    problem = stdio(["a\n", "b\n", "c\n"], ["a 1 1 fresh\n", "b 2 2 fresh\n", "c 3 3 fresh\n"])
    code = ("import builtins, sys, json\n"
            "builtins.counter = getattr(builtins, 'counter', 0) + 1\n"
            "sys.counter = getattr(sys, 'counter', 0) + 1\n"
            "json.counter = getattr(json, 'counter', 0) + 1\n"
            "mine = 'seen' if 'mine' in globals() else 'fresh'\n"
            "assert builtins.counter == sys.counter == json.counter\n"
            "print(input(), builtins.counter, sys.counter, mine)")
    result = run(sandbox, problem, code, compare=compare)
    assert result.test_results == [True, True, True], result.error
    # A crash or timeout moves the remaining tests to a fresh process, which starts from the zygote's state again.
    crash = code.replace("print(input()", "import os\nline = input()\nline == 'b' and os.abort()\nprint(line")
    problem["tests"]["outputs"][2] = "c 1 1 fresh\n"
    result = run(sandbox, problem, crash, compare=compare)
    assert result.test_results == [True, None, True], result.error


# Burns `seconds` of this process's CPU time, however long that takes on a busy machine.
BURN = "import time\ndef burn(seconds):\n    end = time.process_time() + seconds\n    while time.process_time() < end:\n" \
       "        pass\n"


def test_program_cpu_time_limit(sandbox):
    problem = stdio([""] * 4, ["x\n"] * 4)
    # 4 tests of 0.4 s of CPU against a program budget of 1.0 s: two pass (0.8 s and the interpreter's few ms),
    # the third runs out of the program's budget, the fourth finds it spent.
    result = run(sandbox, problem, BURN + "burn(0.4)\nprint('x')", timeout_s=1.0, program_timeout_s=1.0)
    assert result.outcome is Outcome.TIMEOUT
    assert result.test_results == [True, True, None, None], result.error
    assert "CPU time limit" in result.error


def test_program_wall_clock_backstop(sandbox):
    problem = stdio([""] * 4, ["x\n"] * 4)
    # 4 tests asleep for 0.5 s each against a program backstop of 1 x 0.25 s + 1 s = 1.25 s: the first passes, the
    # backstop runs out during the third (sleeping uses no CPU: only the wall clock can stop it).
    result = run(sandbox, problem, "import time\ntime.sleep(0.5)\nprint('x')", timeout_s=0.25,
                 program_timeout_s=0.25, wall_factor=1.0, wall_extra_s=1.0)
    assert result.outcome is Outcome.TIMEOUT
    assert result.test_results[0] is True and result.test_results[-1] is None, result.error
    assert "backstop" in result.error


# --- call ----------------------------------------------------------------------------------------------------------

CALL = {"problem_id": "call", "fn_name": "add",
        "tests": {"kind": "call", "inputs": [[1, 2], [3, 4], [[1], [2]]], "outputs": [3, [7], [[1, 2]]]}}


@pytest.mark.parametrize("compare", ["strict", "apps"])
def test_call_outcomes(sandbox, compare):
    assert run(sandbox, CALL, "def add(a, b):\n    return a + b", compare=compare).outcome is Outcome.PASSED
    wrong = run(sandbox, CALL, "def add(a, b):\n    return a - b if a == 1 else a + b", compare=compare)
    assert wrong.outcome is Outcome.FAILED and wrong.test_results == [False, True, True]
    crash = run(sandbox, CALL, "def add(a, b):\n    return a + b if a != 3 else a / 0", compare=compare)
    assert crash.outcome is Outcome.RUNTIME_ERROR and crash.test_results == [True, None, True]
    assert "ZeroDivisionError" in crash.error
    loop = run(sandbox, CALL, "def add(a, b):\n    while a == 3:\n        pass\n    return a + b",
               compare=compare, timeout_s=0.5)
    assert loop.outcome is Outcome.TIMEOUT and loop.test_results == [True, None, True]
    assert run(sandbox, CALL, "def add(a, b) return", compare=compare).outcome is Outcome.COMPILE_ERROR


def test_a_timeout_while_loading_is_a_compile_error_only_in_apps(sandbox):
    # APPS's harness loads a call-based program under its 4 s alarm and counts any exception there, the alarm's
    # included, as a compile error (-2); strict mode calls it a timeout. The wall clock and the CPU limit alike.
    sleeps = "import time\ntime.sleep(30)\ndef add(a, b):\n    return a + b"
    spins = "while True:\n    pass\ndef add(a, b):\n    return a + b"
    backstop = {"timeout_s": 1.0, "wall_factor": 1.0, "wall_extra_s": 0.5}
    for code, limits in ((sleeps, backstop), (spins, {"timeout_s": 1.0})):
        strict = run(sandbox, CALL, code, **limits)
        assert strict.outcome is Outcome.TIMEOUT and "while loading" in strict.error, strict.error
        apps = run(sandbox, CALL, code, compare="apps", **limits)
        assert apps.outcome is Outcome.COMPILE_ERROR and apps.apps_result == -2, apps.error
        assert "while loading" in apps.error


def test_call_missing_function_is_a_compile_error_only_in_apps(sandbox):
    code = "def plus(a, b):\n    return a + b"
    assert run(sandbox, CALL, code).outcome is Outcome.RUNTIME_ERROR
    assert run(sandbox, CALL, code, compare="apps").outcome is Outcome.COMPILE_ERROR


def test_leetcode_class_solution(sandbox):
    problem = {"problem_id": "lc", "fn_name": "findKthPositive",
               "starter_code": "class Solution:\n    def findKthPositive(self, arr: List[int], k: int) -> int:\n",
               "tests": {"kind": "call", "inputs": [[[2, 3, 4, 7, 11], 5], [[1, 2, 3, 4], 2]], "outputs": [9, 6]}}
    code = ("class Solution:\n    def findKthPositive(self, arr: List[int], k: int) -> int:\n"
            "        s = set(arr)\n        n = 0\n        while k:\n            n += 1\n"
            "            if n not in s:\n                k -= 1\n        return n\n")
    for compare in ("strict", "apps"):
        assert run(sandbox, problem, code, compare=compare).outcome is Outcome.PASSED


# --- assert --------------------------------------------------------------------------------------------------------

MBPP = {"problem_id": "mbpp", "fn_name": "f",
        "tests": {"kind": "assert", "setup_code": "", "asserts": ["assert f(2) == 4", "assert f(3) == 9",
                                                                   "assert not f(0)"]}}


def test_assert_outcomes(sandbox):
    assert run(sandbox, MBPP, "def f(x):\n    return x * x").outcome is Outcome.PASSED
    wrong = run(sandbox, MBPP, "def f(x):\n    return x + x")
    assert wrong.outcome is Outcome.FAILED and wrong.test_results == [True, False, True]
    assert "assert f(3) == 9" in wrong.error
    crash = run(sandbox, MBPP, "def f(x):\n    return x * x if x else 1 // x")
    assert crash.outcome is Outcome.RUNTIME_ERROR and crash.test_results == [True, True, None]
    assert run(sandbox, MBPP, "def g(x):\n    return x * x").outcome is Outcome.RUNTIME_ERROR
    assert run(sandbox, MBPP, "def f(x) return").outcome is Outcome.COMPILE_ERROR
    assert run(sandbox, MBPP, "def f(x):\n    while True:\n        pass",
               timeout_s=0.3).outcome is Outcome.TIMEOUT


HUMANEVAL = {"problem_id": "he", "fn_name": "add", "tests": {
    "kind": "assert", "asserts": ["check(add)"], "setup_code": (
        "import math\nMETADATA = {}\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n"
        "    for x in range(20):\n        assert math.isclose(candidate(x, 0.5), x + 0.5)\n")}}


def test_assert_judge_runs_test_code_with_loops_and_helpers(sandbox):
    assert run(sandbox, HUMANEVAL, "def add(a, b):\n    return a + b").outcome is Outcome.PASSED
    wrong = run(sandbox, HUMANEVAL, "def add(a, b):\n    return a + b if a < 10 else 0")
    assert wrong.outcome is Outcome.FAILED and "math.isclose" in wrong.error
    crash = run(sandbox, HUMANEVAL, "def add(a, b):\n    return [][a]")
    assert crash.outcome is Outcome.RUNTIME_ERROR and "IndexError" in crash.error


def test_assert_setup_that_builds_candidate_objects(sandbox):
    # MBPP's tree tasks: the test setup builds a tree from the candidate's own Node class.
    problem = {"problem_id": "tree", "fn_name": "depth", "tests": {
        "kind": "assert", "setup_code": "root = Node(1)\nroot.left = Node(2)\nroot.left.left = Node(3)\n",
        "asserts": ["assert depth(root) == 3", "assert depth(None) == 0"]}}
    code = ("class Node:\n    def __init__(self, v):\n        self.v = v\n        self.left = self.right = None\n"
            "def depth(n):\n    return 0 if n is None else 1 + max(depth(n.left), depth(n.right))\n")
    assert run(sandbox, problem, code).outcome is Outcome.PASSED
    assert run(sandbox, problem, code.replace("1 + max", "max")).outcome is Outcome.FAILED


def test_tests_that_expect_the_candidate_to_raise(sandbox):
    problem = {"problem_id": "raises", "fn_name": "f", "tests": {"kind": "assert", "setup_code": (
        "def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError:\n        return\n"
        "    assert False, 'no ValueError'\n"), "asserts": ["check(f)"]}}
    assert run(sandbox, problem, "def f(x):\n    if x < 0:\n        raise ValueError(x)").outcome is Outcome.PASSED
    assert run(sandbox, problem, "def f(x):\n    return x").outcome is Outcome.FAILED


# --- example tests, infrastructure errors, batches ---------------------------------------------------------------

def test_example_tests(sandbox):
    problem = {**ADD, "example_tests": {"kind": "stdio", "inputs": ["1 1\n"], "outputs": ["2\n"]}}
    result = run(sandbox, problem, ADD_OK, example_tests=True)
    assert result.outcome is Outcome.PASSED and result.total_tests == 1
    missing = run(sandbox, ADD, ADD_OK, example_tests=True)
    assert missing.outcome is Outcome.INFRA_ERROR and not missing.outcome.is_label


def test_a_dead_zygote_is_an_infrastructure_failure_that_is_retried():
    problem = stdio(["1 2\n"], ["3\n"])
    code = "import time\ntime.sleep(1.0)\nprint(3)"
    for retries, outcome in ((2, Outcome.PASSED), (0, Outcome.INFRA_ERROR)):
        with Sandbox() as box:
            box.execute(problem, ADD_OK, "warm", SandboxLimits())
            victims = box.zygote_pids()
            threading.Timer(0.4, lambda: [os.killpg(pid, signal.SIGKILL) for pid in victims]).start()
            result = box.execute(problem, code, "s", SandboxLimits(timeout_s=5, infra_retries=retries))
            assert result.outcome is outcome, result.error
            if outcome is Outcome.INFRA_ERROR:
                assert "sandbox failure" in result.error and result.apps_result is None


def test_a_zygote_started_by_a_thread_outlives_the_thread():
    # Linux's parent-death signal follows the thread that forked the zygote: started by a pool thread, it used to
    # die with the pool at the end of every execute_many(max_workers > 1) call.
    with Sandbox() as box:
        results = execute_many({"stdio": ADD}, [{"problem_id": "stdio", "sample_id": "a", "code": ADD_OK}] * 2,
                               SandboxLimits(), max_workers=2, sandbox=box)
        assert [r.outcome for r in results] == [Outcome.PASSED] * 2
        zygotes = box.zygote_pids()
        thread = threading.Thread(target=lambda: box.execute(ADD, ADD_OK, "b", SandboxLimits()))
        thread.start()
        thread.join()
        assert len(zygotes) == 1 and box.zygote_pids() == zygotes
        os.kill(zygotes[0], 0)  # still running


def test_execute_many_keeps_the_input_order():
    problems = {"stdio": ADD}
    samples = [{"problem_id": "stdio", "sample_id": str(i),
                "code": ADD_OK if i % 2 else f"import time\ntime.sleep({0.05 * (i % 3)})\nprint(0)"}
               for i in range(12)] + [{"problem_id": "nope", "sample_id": "x", "code": ""}]
    results = execute_many(problems, samples, SandboxLimits(), max_workers=3)
    assert [r.sample_id for r in results] == [s["sample_id"] for s in samples]
    assert [r.outcome for r in results[:-1]] == [Outcome.PASSED if i % 2 else Outcome.FAILED for i in range(12)]
    assert results[-1].outcome is Outcome.INFRA_ERROR


def test_module_level_execute_uses_a_shared_warm_sandbox():
    assert execute(ADD, ADD_OK, "a").outcome is Outcome.PASSED
    box = default_sandbox()
    zygotes = box.zygote_pids()
    assert execute(ADD, ADD_OK, "b").outcome is Outcome.PASSED
    # The second program ran in a zygote already warm: none started for it (earlier tests of the session may have
    # started others in the shared sandbox, for other limits, so their number is not checked).
    assert default_sandbox() is box and box.zygote_pids() == zygotes and zygotes


def test_programs_see_the_same_random_sequence_in_every_zygote():
    # Verdicts are reproducible: a randomised program gets the same draws in every run, on every executor.
    problem = stdio([""], ["x\n"])
    code = "import random\nprint(random.random())"
    outputs = set()
    for _ in range(2):
        with Sandbox() as box:
            result = box.execute(problem, code, "r", SandboxLimits(timeout_s=10))
            outputs.add(result.error)
    assert len(outputs) == 1 and "got" in outputs.pop()


@pytest.mark.parametrize("compare", ["strict", "apps"])
def test_output_caps_are_per_test(sandbox, compare):
    # Five tests of 0.6 MB each are within a 1 MB cap per test, though 3 MB together.
    problem = stdio([f"{i}\n" for i in range(5)], [f"{'x' * 600_000}{i}\n" for i in range(5)])
    code = "i = input()\nprint('x' * 600_000 + i)"
    assert run(sandbox, problem, code, compare=compare, max_output_mb=1).outcome is Outcome.PASSED
    call = {"problem_id": "big", "fn_name": "f", "tests": {
        "kind": "call", "inputs": [[i] for i in range(5)], "outputs": [[i] * 300_000 for i in range(5)]}}
    assert run(sandbox, call, "def f(i):\n    return [i] * 300_000", compare=compare,
               max_output_mb=1).outcome is Outcome.PASSED
