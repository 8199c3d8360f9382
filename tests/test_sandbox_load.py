"""A verdict does not depend on how busy the machine is (docs/sandbox.md#time): the same CPU-heavy programs get
the same verdicts idle and with the machine oversubscribed on purpose (4 busy-looping processes per core, more
sandbox workers than cores), a CPU-bound program within its CPU budget passes however long the machine holds it
back, and a program that sleeps past the wall-clock backstop is still a timeout. Real sandboxed children, no Ray.

Every program burns CPU time by the process's own clock (``time.process_time``), so what it uses is fixed and only
the machine's load changes between runs. No assertion here is about how fast anything runs.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from coderl_ray.records import Outcome
from coderl_ray.sandbox import Sandbox, SandboxLimits, execute_many
from tests.cpu_load import cpu_burners

# A program's run-queue waits are read from /proc/<pid>/schedstat (kernels with CONFIG_SCHED_INFO, which every
# major distribution enables); without it the backstop is plain wall time and only CPU-bound verdicts are load-proof.
SCHEDSTAT = os.path.exists("/proc/self/schedstat")

BURN = ("import time\n"
        "def burn(seconds):\n"
        "    end = time.process_time() + seconds\n"
        "    while time.process_time() < end:\n"
        "        pass\n")

STDIO = {"problem_id": "double", "tests": {"kind": "stdio", "inputs": ["1\n", "5\n"], "outputs": ["2\n", "10\n"]}}
CALL = {"problem_id": "call", "fn_name": "double",
        "tests": {"kind": "call", "inputs": [[1], [5]], "outputs": [2, 10]}}
ASSERT = {"problem_id": "assert", "fn_name": "double",
          "tests": {"kind": "assert", "setup_code": "", "asserts": ["assert double(1) == 2", "assert double(5) == 10"]}}
JUDGED = {"problem_id": "judged", "fn_name": "double", "tests": {"kind": "assert", "asserts": ["check(double)"],
          "setup_code": "def check(candidate):\n    for x in range(3):\n        assert candidate(x) == 2 * x\n"}}
PROBLEMS = {p["problem_id"]: p for p in (STDIO, CALL, ASSERT, JUDGED)}

# (problem, code, expected outcome): ~0.3 s of CPU per program against a budget of 1 s per test; one program
# never ends (CPU-bound: its budget decides), one is wrong.
PROGRAMS = [
    ("double", BURN + "x = int(input())\nburn(0.15)\nprint(2 * x)", Outcome.PASSED),
    ("double", BURN + "x = int(input())\nburn(0.15)\nprint(2 * x + (x > 1))", Outcome.FAILED),
    ("double", BURN + "x = int(input())\nwhile x > 1:\n    pass\nprint(2 * x)", Outcome.TIMEOUT),
    ("call", BURN + "def double(x):\n    burn(0.15)\n    return 2 * x", Outcome.PASSED),
    ("assert", BURN + "def double(x):\n    burn(0.15)\n    return 2 * x", Outcome.PASSED),
    ("judged", BURN + "def double(x):\n    burn(0.1)\n    return 2 * x", Outcome.PASSED),
]


def _verdicts(results):
    return [(r.sample_id, r.outcome, r.test_results) for r in results]


def test_verdicts_are_the_same_idle_and_on_an_oversubscribed_machine():
    samples = [{"problem_id": pid, "sample_id": str(i), "code": code} for i, (pid, code, _) in enumerate(PROGRAMS)]
    limits = SandboxLimits(timeout_s=1.0, program_timeout_s=10.0)
    workers = 2 * (os.cpu_count() or 1)  # more sandbox workers than cores
    with Sandbox() as box:
        idle = execute_many(PROBLEMS, samples, limits, max_workers=workers, sandbox=box)
        with cpu_burners(per_core=4):
            loaded = execute_many(PROBLEMS, samples, limits, max_workers=workers, sandbox=box)
    assert [r.outcome for r in idle] == [outcome for _, _, outcome in PROGRAMS], [r.error for r in idle]
    assert idle[2].test_results == [True, None] and "CPU time limit" in idle[2].error
    assert _verdicts(loaded) == _verdicts(idle), [r.error for r in loaded]


# What APPS's harness does around every test (hendrycks/apps and CodeRL, utils/testing_util.py: a SIGALRM handler
# that raises TimeoutException, installed at import; signal.alarm(timeout) before the call, alarm(0) after; timeout
# = 4), here with a 1 s alarm around a program that needs 0.4 s of CPU. alarm() counts wall-clock seconds.
APPS_ALARM = BURN + """
import signal
class TimeoutException(Exception):
    pass
def timeout_handler(signum, frame):
    raise TimeoutException
signal.signal(signal.SIGALRM, timeout_handler)
signal.alarm(1)
try:
    burn(0.4)
    signal.alarm(0)
    print("passed")
except TimeoutException:
    print("timeout")
"""


@pytest.mark.skipif(not SCHEDSTAT, reason="this kernel does not report run-queue waits (/proc/<pid>/schedstat)")
def test_the_backstop_stops_a_sleeping_program_but_not_a_starved_one():
    # Backstop: 1 x 0.5 s + 0.1 s = 0.6 s of time the program ran or slept. The CPU-bound program needs 0.4 s of
    # CPU; with 4 burners per core it gets a fifth of a core at best, so it spends well over 0.6 s of wall time,
    # most of it waiting for a CPU, which the backstop does not count. The sleeper waits for nothing: past 0.6 s.
    limits = SandboxLimits(timeout_s=0.5, program_timeout_s=0.5, wall_factor=1.0, wall_extra_s=0.1,
                           starvation_factor=1000.0)
    problem = {"problem_id": "one", "tests": {"kind": "stdio", "inputs": [""], "outputs": ["ok\n"]}}
    with Sandbox() as box, cpu_burners(per_core=4):
        starved = box.execute(problem, BURN + "burn(0.4)\nprint('ok')", "cpu-bound", limits)
        sleeper = box.execute(problem, "import time\ntime.sleep(60)\nprint('ok')", "sleeper", limits)
        # In a session of its own, like the sandbox's programs and the burners (tests/cpu_load.py).
        apps = subprocess.run([sys.executable, "-c", APPS_ALARM], capture_output=True, text=True,
                              start_new_session=True, timeout=300).stdout.strip()
    assert starved.outcome is Outcome.PASSED, starved.error
    # The load did hold it back past the backstop in wall time: a wall-clock limit would have failed it, as APPS's
    # alarm does (docs/sandbox.md#time, "Where this departs from APPS").
    assert starved.duration_s > limits.wall_backstop_s(limits.timeout_s)
    assert apps == "timeout"
    assert sleeper.outcome is Outcome.TIMEOUT and "backstop" in sleeper.error, sleeper.error


@pytest.mark.skipif(not SCHEDSTAT, reason="this kernel does not report run-queue waits (/proc/<pid>/schedstat)")
def test_a_program_the_machine_starves_is_an_infra_error_not_a_timeout():
    # starvation_factor 1.0001: the plain wall time reaches "starved" (1.0001 x the backstop) just after the
    # backstop itself, so a program that has waited for a CPU at all by then is given up on as the machine's fault.
    limits = SandboxLimits(timeout_s=0.5, program_timeout_s=0.5, wall_factor=1.0, wall_extra_s=0.1,
                           starvation_factor=1.0001, infra_retries=1)
    problem = {"problem_id": "one", "tests": {"kind": "stdio", "inputs": [""], "outputs": ["ok\n"]}}
    with Sandbox() as box, cpu_burners(per_core=4):
        result = box.execute(problem, BURN + "burn(0.45)\nprint('ok')", "starved", limits)
    assert result.outcome is Outcome.INFRA_ERROR and not result.outcome.is_label, result.error
    assert "starved" in result.error and "2 attempts" in result.error
