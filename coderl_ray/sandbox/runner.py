"""Run one program against a problem's tests: the worker-side supervisor of sandboxed children.

    from coderl_ray.sandbox import Sandbox, SandboxLimits
    with Sandbox() as sandbox:
        result = sandbox.execute(problem, code, sample_id="p1-s0", limits=SandboxLimits(timeout_s=2))

The worker (this module) never runs candidate code. It asks the zygote for children, hands them their job through a
memfd, keeps the wall-clock backstop (CPU budgets are enforced in the children, see :class:`_Clock`), caps what it
reads, and decides every verdict on plain data. How each test kind runs:

* ``stdio``: one child per test, the program run as ``__main__`` with the input on fd 0 (strict) or APPS's
  StringIO emulation (``apps``); stdout is compared in the worker.
* ``call``: one child loads the program once and answers one call per test; the worker rebuilds each return value
  and compares it with the expected output. A crash or timeout on one test is followed by a fresh child for the
  remaining tests when all tests are run.
* ``assert``: the same candidate child, driven either by the worker (fast path) or by a judge child that runs the
  test code (see :mod:`coderl_ray.sandbox.asserts`).
"""

from __future__ import annotations

import json
import logging
import marshal
import math
import os
import select
import signal
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from coderl_ray.records import ExecutionResult, Outcome
from coderl_ray.sandbox import compare
from coderl_ray.sandbox._harness import APPS_PRELUDE, apps_stdio_source
from coderl_ray.sandbox.wire import DecodeError, MessageReader, ProtocolError, decode, encode, pack
from coderl_ray.sandbox.asserts import AssertPlan, fast_verdict, plan_asserts
from coderl_ray.sandbox.limits import SandboxLimits
from coderl_ray.sandbox.zygote import TierUnavailable, Zygote, ZygoteError

MAX_ERROR_CHARS = 2000
# Programs up to this size are compiled here, in the warm worker, and sent to the child as a code object: compile()
# in a freshly forked child costs ~2.5 ms of page faults on its cold compiler, here ~0.1 ms, and a program that does
# not compile needs no child at all. Larger sources (never model samples) are compiled in the child instead.
MAX_WORKER_COMPILE = 256 * 1024


class SandboxSetupError(ZygoteError):
    """A child failed before it read its job (an infrastructure failure, retried)."""


# --- per-test records ----------------------------------------------------------------------------------------------

PASS, FAIL, ERROR, TIMEOUT, NOT_RUN = "pass", "fail", "error", "timeout", "not_run"


@dataclass
class _Tests:
    """Per-test statuses of one program, filled in as tests finish."""

    n: int
    status: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    compile_error: str | None = None

    def __post_init__(self):
        self.status = [NOT_RUN] * self.n
        self.errors = [""] * self.n

    def set(self, i: int, status: str, error: str = "") -> None:
        self.status[i] = status
        self.errors[i] = error

    def settle_rest(self, start: int, status: str, error: str) -> None:
        for i in range(start, self.n):
            if self.status[i] == NOT_RUN:
                self.set(i, status, error)

    def load_timed_out(self, start: int, limits: SandboxLimits, error: str) -> None:
        """The program did not finish loading within its time (wall or CPU). APPS's harness counts any exception
        while loading the module, its own timeout included, as a compile error (-2); strict mode calls it a
        timeout. Only a first load counts: a reload in a fresh child after a crash is this sandbox's doing."""
        if limits.compare == "apps" and start == 0:
            self.compile_error = f"{error} (APPS counts a timeout while loading the module as a compile error)"
        else:
            self.settle_rest(start, TIMEOUT, error)

    def stop_after(self, i: int, limits: SandboxLimits) -> bool:
        return limits.stop_on_first_failure and self.status[i] != PASS

    def result(self, pid: str, sid: str, duration: float) -> ExecutionResult:
        n = self.n
        if self.compile_error is not None:
            return ExecutionResult(pid, sid, Outcome.COMPILE_ERROR, 0, n, [None] * n,
                                   _clip(self.compile_error), duration)
        results = [True if s == PASS else False if s == FAIL else None for s in self.status]
        passed = sum(r is True for r in results)
        # CodeRL's label precedence: a runtime error (a timeout is one, in APPS) anywhere decides, then a failed test.
        first_bad = next((i for i, s in enumerate(self.status) if s in (ERROR, TIMEOUT)), None)
        if first_bad is not None:
            outcome = Outcome.TIMEOUT if self.status[first_bad] == TIMEOUT else Outcome.RUNTIME_ERROR
            error = self.errors[first_bad]
        elif FAIL in self.status:
            outcome, error = Outcome.FAILED, self.errors[self.status.index(FAIL)]
        elif NOT_RUN in self.status and n:
            outcome, error = Outcome.FAILED, "stopped before running every test"
        else:
            outcome, error = Outcome.PASSED, ""
        return ExecutionResult(pid, sid, outcome, passed, n, results, _clip(error), duration)


def _clip(text: str) -> str:
    text = text or ""
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return text[:MAX_ERROR_CHARS // 3] + "\n...\n" + text[-(2 * MAX_ERROR_CHARS // 3):]


# --- talking to one child ------------------------------------------------------------------------------------------

def _memfd(data: bytes) -> int:
    fd = os.memfd_create("coderl-job", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Stream:
    """The non-blocking read end of a pipe from a child, with a byte cap."""

    def __init__(self, fd: int, cap: int, messages: bool):
        os.set_blocking(fd, False)
        self.fd = fd
        self.cap = cap
        self.eof = False
        self.overflow = False
        self.total = 0
        self.data = bytearray()
        self.reader = MessageReader(cap) if messages else None
        self.messages: list[dict] = []
        self.corrupt: str | None = None

    def pump(self) -> None:
        while not self.eof and not self.overflow:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                return
            self.total += len(chunk)
            if self.total > self.cap:
                self.overflow = True
                return
            if self.reader is None:
                self.data += chunk
            elif self.corrupt is None:
                try:
                    self.messages.extend(self.reader.feed(chunk))
                except ProtocolError as exc:
                    self.corrupt = str(exc)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _wait_any(streams: list[_Stream], deadline: float) -> bool:
    """Block until a stream has data or hits EOF, or the deadline passes (returns False then)."""
    live = [s for s in streams if not s.eof and not s.overflow and s.fd >= 0]
    if not live:
        return True
    timeout = deadline - time.monotonic()
    if timeout <= 0:
        return False
    poller = select.poll()
    for s in live:
        poller.register(s.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    events = poller.poll(max(1, math.ceil(timeout * 1000)))
    for s in live:
        s.pump()
    return bool(events) or time.monotonic() < deadline


class _Child:
    """A spawned child: its pid, its result stream, and the zygote to release it with."""

    def __init__(self, zygote: Zygote, pid: int, result: _Stream, extra: list[_Stream] = (),
                 clock: "_Clock | None" = None):
        self.zygote = zygote
        self.pid = pid
        self.result = result
        self.extra = list(extra)
        self.done = False
        self.phase = "setup"  # setup -> compiling -> loading (compiled) -> ready
        self.cursor = 0
        self.cpu = 0.0  # CPU seconds it used, known once it was waited for (status)
        self.clock = clock
        self._host_pid: int | None = None  # 0: the kernel could not say
        if clock is not None:
            clock.children.append(self)

    def next_message(self, clock: "_Clock") -> dict | None:
        """The next protocol message; None at EOF; raises TimeoutError when the clock runs out."""
        while True:
            if self.cursor < len(self.result.messages):
                msg = self.result.messages[self.cursor]
                self.cursor += 1
                self._advance(msg)
                return msg
            if self.result.corrupt is not None:
                return {"t": "corrupt", "error": self.result.corrupt}
            if self.result.overflow:
                return {"t": "overflow"}
            if self.result.eof:
                return None
            if not clock.wait([self.result]):
                raise TimeoutError

    def _advance(self, msg: dict) -> None:
        t = msg.get("t")
        if t == "setup_error" and self.phase != "setup":
            msg["t"] = "corrupt"  # only the harness, before any candidate code ran, may report a setup failure
            msg["error"] = "setup_error after the job started"
        elif t == "compiling" and self.phase == "setup":
            self.phase = "compiling"
        elif t == "compiled" and self.phase in ("setup", "compiling"):
            self.phase = "loading"  # candidate code runs from here: its failures are its own
        elif t == "ready" and self.phase in ("setup", "compiling", "loading"):
            self.phase = "ready"

    def run_delay(self) -> float | None:
        """Seconds its threads have waited for a CPU so far (None where the kernel does not say); it must not have
        been waited for yet. The first call asks the zygote for the child's pid as this process sees it."""
        if self._host_pid is None:
            self._host_pid = self.zygote.host_pid(self.pid) or 0
        return _task_run_delay(self._host_pid) if self._host_pid else None

    def status(self) -> tuple[int, float]:
        """Wait status and CPU time; kills the child if it still runs."""
        if self.clock is not None:
            self.clock.child_ending(self)
        self.done = True
        status, self.cpu = self.zygote.wait(self.pid)
        return status, self.cpu

    def release(self, finished: bool = False) -> None:
        """Kill the child; ``finished``: it has reported everything and is exiting by itself."""
        if self.clock is not None and self in self.clock.children:
            self.clock.children.remove(self)
        if not self.done:
            self.done = True
            try:
                self.zygote.release(self.pid, finished=finished)
            except ZygoteError:
                pass
        for s in [self.result, *self.extra]:
            s.close()


def _run_delay(path: str) -> float | None:
    """The run-queue wait, in seconds, of the task whose ``schedstat`` is at ``path`` (its second field: nanoseconds
    spent runnable but not running, Documentation/scheduler/sched-stats.rst); None where the kernel lacks it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # not open(): a buffered file object costs 5x more here
        try:
            return int(os.read(fd, 256).split()[1]) / 1e9
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        return None


def _task_run_delay(pid: int) -> float | None:
    """The longest run-queue wait of any thread of process ``pid`` (the one doing the work may not be the first).

    The longest, not the sum: a program's own threads can make each other wait, but one thread waits only while
    others run on its CPU, so the longest wait it can cause itself is bounded by its CPU time, which its budget
    bounds. A sum would let a thousand briefly-woken threads claim minutes of waiting for a few ms of CPU, and turn
    a sleeper's timeout into an infrastructure error that is never a label (docs/sandbox.md#time)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    waits = [_run_delay(f"/proc/{pid}/task/{tid}/schedstat") for tid in tids]
    known = [w for w in waits if w is not None]
    return max(known) if known else None


class SandboxStarved(ZygoteError):
    """The machine held a program back so long that its verdict could not be decided: an infrastructure failure,
    retried (docs/sandbox.md#time)."""


class _Clock:
    """The time of one program, as the worker keeps it (docs/sandbox.md#time).

    Timeouts are decided on CPU time, in the child, by the kernel (a per-test ``ITIMER_PROF``, ``RLIMIT_CPU``). The
    worker keeps only the wall-clock backstop against programs that sleep or block, and counts it in time the
    program ran or slept: wall time minus the time its processes, and the worker thread that serves them, waited
    for a CPU. Those waits are read from ``/proc`` only when a backstop would otherwise run out, so a program that
    ends in time costs one read of this thread's ``schedstat``.
    """

    def __init__(self, limits: SandboxLimits):
        self.limits = limits
        self.start = self.test_start = time.monotonic()
        self.worker_wait0 = _run_delay("/proc/thread-self/schedstat")
        self.children: list[_Child] = []
        self.ended_wait = 0.0  # waited by this program's children that ended, when it was read
        self.waited = 0.0  # all the waiting known at the last reading
        self.test_waited = 0.0  # `waited` when the current test started: what it may not count as its own
        self.cpu_spent = 0.0  # CPU of this program's processes that ended before the current one
        self.expired = ""  # "test" or "program": the backstop the last wait ran into
        self.checked = self.left = 0.0  # the next check is due `left` seconds after `checked`
        self.restart_test()

    def restart_test(self) -> None:
        self.test_start = self.checked = time.monotonic()
        self.test_waited = self.waited
        limits = self.limits
        self.left = min(limits.wall_backstop_s(limits.timeout_s),
                        self.start + limits.wall_backstop_s(limits.program_timeout_s) + self.waited - self.checked)

    def wait(self, streams: list[_Stream]) -> bool:
        """Block until a stream has news (True) or a backstop has run out (False, ``expired`` says which). Raises
        :class:`SandboxStarved` when the machine held the program back too long to judge it."""
        while True:
            if _wait_any(streams, self.checked + self.left):
                return True
            now = time.monotonic()
            self.waited = max(self.waited, self._read_waits())
            verdict, self.left = self.limits.wall_check(now - self.test_start, self.waited - self.test_waited,
                                                        now - self.start, self.waited)
            self.checked = now
            if verdict == "starved":
                raise SandboxStarved(
                    f"starved: the program waited {self.waited:.1f}s for a CPU in {now - self.start:.1f}s and had "
                    f"run or slept only {now - self.start - self.waited:.1f}s; the machine is overloaded")
            if verdict:
                self.expired = verdict
                return False
            self.left = max(self.left, 0.005)

    def _read_waits(self) -> float:
        total = self.ended_wait
        for child in self.children:
            if not child.done:
                total += child.run_delay() or 0.0
        worker_wait = _run_delay("/proc/thread-self/schedstat") if self.worker_wait0 is not None else None
        if worker_wait is not None:
            # This thread drains the program's pipes: while it waits for a CPU, a program writing more than a pipe
            # holds is blocked, which would otherwise count as its own sleep.
            total += max(0.0, worker_wait - self.worker_wait0)
        return total

    def child_ending(self, child: _Child) -> None:
        """Called before the zygote reaps ``child``: once a program has run for a while, keep what its child waited
        (the next child's backstops count on it)."""
        if child in self.children:
            self.children.remove(child)
            if child._host_pid or time.monotonic() - self.start > 1.0:
                self.ended_wait += child.run_delay() or 0.0

    def timeout_error(self, where: str) -> str:
        """The error of a test (``where``: "test 3") or a load ("while loading the program") that ran into the
        backstop the last wait reported."""
        limits = self.limits
        if self.expired == "program":
            return (f"{where}: time limit exceeded: the program ran or slept past its wall-clock backstop of "
                    f"{limits.wall_backstop_s(limits.program_timeout_s):g}s")
        return (f"{where}: time limit exceeded: ran or slept past the wall-clock backstop of "
                f"{limits.wall_backstop_s(limits.timeout_s):g}s without using its {limits.timeout_s:g}s of CPU "
                "(asleep or blocked)")

    def exhausted(self) -> str:
        """Why no further test of the program may start (its CPU budget or its wall-clock backstop is spent), or
        an empty string."""
        limits = self.limits
        if self.cpu_spent >= limits.program_timeout_s - 1e-3:
            return f"program CPU time limit of {limits.program_timeout_s:g}s exhausted"
        if time.monotonic() - self.start - self.waited >= limits.wall_backstop_s(limits.program_timeout_s):
            return (f"program wall-clock backstop of {limits.wall_backstop_s(limits.program_timeout_s):g}s "
                    "exhausted")
        return ""

    def spent(self, child: _Child) -> None:
        """Count the CPU time of a child that ran some of the program's tests, when more follow in a fresh one."""
        if not child.done:
            child.status()
        self.cpu_spent += child.cpu


class _CompileError(Exception):
    pass


# Compiling a model's program in the worker would print its SyntaxWarnings ("'tuple' object is not callable; perhaps
# you missed a comma?") into the worker's log, thousands per round. A module filter (global, so thread-safe, unlike
# catch_warnings) silences exactly the programs' warnings: compile() attributes them to the filename "<solution>".
warnings.filterwarnings("ignore", category=SyntaxWarning, module="<solution>")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="<solution>")


def _compiled(source: str) -> bytes | None:
    """The marshalled code object of ``source`` (None when it is too large to compile here); raises
    :class:`_CompileError` with the message the child would report."""
    if len(source) > MAX_WORKER_COMPILE:
        return None
    try:
        return marshal.dumps(compile(source, "<solution>", "exec", dont_inherit=True))
    except Exception as exc:  # SyntaxError, null bytes (ValueError), RecursionError, MemoryError, ...
        raise _CompileError(f"{type(exc).__name__}: {exc}") from None


def _crash_reason(status: int, cpu: float, cpu_limit: float) -> tuple[str, str]:
    """(test status, error) for a child that died without reporting."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        # SIGPROF: the per-test CPU timer (its default action); SIGXCPU, then SIGKILL: RLIMIT_CPU, the process's.
        if sig in (signal.SIGPROF, signal.SIGXCPU) or (sig == signal.SIGKILL and cpu >= cpu_limit - 0.05):
            return TIMEOUT, f"CPU time limit exceeded (the process used {cpu:.2f}s)"
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return ERROR, f"killed by signal {name}"
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        if code == 124:
            return TIMEOUT, f"CPU time limit exceeded (the process used {cpu:.2f}s)"
        return ERROR, f"exited with status {code} before reporting"
    return ERROR, f"ended with wait status {status}"


# --- the sandbox ---------------------------------------------------------------------------------------------------

class Sandbox:
    """A warm zygote plus the supervisor logic; safe to share between threads (each call runs its own children).

    ``tier``: ``"auto"`` (namespaces where the kernel allows them, else the process tier), ``"namespace"``,
    ``"process"`` or ``"bwrap"``. See docs/sandbox.md for what each guarantees.
    """

    def __init__(self, tier: str = "auto", sandbox_uid: int = 65534):
        self.requested_tier = tier
        self.sandbox_uid = sandbox_uid
        self._zygotes: dict[str, Zygote] = {}
        self._lock = threading.Lock()

    # zygote lifecycle ---------------------------------------------------------------------------------------------
    def _get_zygote(self, flavor: str = "lean") -> Zygote:
        with self._lock:
            zygote = self._zygotes.get(flavor)
            if zygote is not None and zygote.alive:
                return zygote
            if zygote is not None:
                zygote.close()
            zygote = self._zygotes[flavor] = self._start_zygote(flavor)
            return zygote

    def _start_zygote(self, flavor: str) -> Zygote:
        if self.requested_tier != "auto":
            return Zygote(self.requested_tier, self.sandbox_uid, flavor=flavor)
        try:
            return Zygote("namespace", self.sandbox_uid, flavor=flavor)
        except TierUnavailable as exc:
            self.requested_tier = "process"  # decided once: the kernel will not change its mind
            logging.getLogger(__name__).warning(
                "sandbox: %s; using the process tier, which isolates less (docs/sandbox.md#isolation-tiers)", exc)
            return Zygote("process", self.sandbox_uid, flavor=flavor)

    def _restart(self, broken: Zygote | None) -> None:
        with self._lock:
            for flavor, zygote in list(self._zygotes.items()):
                if zygote is broken:
                    broken.close()
                    del self._zygotes[flavor]

    @staticmethod
    def flavor_for(code: str, limits: SandboxLimits) -> str:
        """APPS's prelude imports numpy, as do some programs: fork those from the zygote that has it warm."""
        return "full" if limits.compare == "apps" or "numpy" in code else "lean"

    @property
    def info(self) -> dict:
        """What the running zygote reported: tier, whether uids are dropped, seccomp, Landlock ABI, user namespace."""
        return dict(self._get_zygote().info)

    def zygote_pids(self) -> list[int]:
        """Process ids of the running zygotes (to find them from outside, e.g. in tests)."""
        with self._lock:
            return [z.pid for z in self._zygotes.values() if z.alive]

    def close(self) -> None:
        with self._lock:
            for zygote in self._zygotes.values():
                zygote.close()
            self._zygotes.clear()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # the public entry point ---------------------------------------------------------------------------------------
    def execute(self, problem: dict[str, Any], code: str, sample_id: str = "",
                limits: SandboxLimits | None = None) -> ExecutionResult:
        """Run ``code`` against ``problem``'s tests (or example tests); never raises for anything the program does.

        Sandbox failures are retried ``limits.infra_retries`` times with a fresh zygote, then reported as
        ``infra_error`` (which is never a training label).
        """
        limits = limits or SandboxLimits()
        pid = str(problem.get("problem_id", ""))
        tests = problem.get("example_tests") if limits.example_tests else problem.get("tests")
        start = time.monotonic()
        try:
            limits = limits.for_problem(problem)
        except ValueError as exc:  # bad data, not worth a retry
            return ExecutionResult(pid, sample_id, Outcome.INFRA_ERROR, error=str(exc))
        if not tests:
            which = "example tests" if limits.example_tests else "tests"
            return ExecutionResult(pid, sample_id, Outcome.INFRA_ERROR, error=f"problem {pid!r} has no {which}")
        if not isinstance(code, str):
            return ExecutionResult(pid, sample_id, Outcome.INFRA_ERROR, error="sample code is not a string")
        if tests.get("kind") not in ("stdio", "call", "assert"):  # bad data, not worth a retry
            return ExecutionResult(pid, sample_id, Outcome.INFRA_ERROR,
                                   error=f"problem {pid!r}: unknown test kind {tests.get('kind')!r}")
        error = ""
        for attempt in range(limits.infra_retries + 1):
            zygote = None
            try:
                zygote = self._get_zygote(self.flavor_for(code, limits))
                outcome = self._run(zygote, problem, tests, code, limits)
                return outcome.result(pid, sample_id, time.monotonic() - start)
            except TierUnavailable:
                raise
            except ZygoteError as exc:
                error = str(exc)
                if not isinstance(exc, (SandboxSetupError, SandboxStarved)):  # the zygote is not to blame
                    self._restart(zygote)
            except Exception as exc:  # the worker ran out of something (fds, memory), or a bug here: not the program
                import traceback

                error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
                self._restart(zygote)
        return ExecutionResult(pid, sample_id, Outcome.INFRA_ERROR, 0, 0, [],
                               _clip(f"sandbox failure after {limits.infra_retries + 1} attempts: {error}"),
                               time.monotonic() - start)

    def _run(self, zygote: Zygote, problem: dict, tests: dict, code: str, limits: SandboxLimits) -> _Tests:
        kind = tests.get("kind")
        if kind not in ("stdio", "call", "assert"):
            raise ValueError(f"problem {problem.get('problem_id')!r}: unknown test kind {kind!r}")
        n = len(tests.get("asserts") or ()) if kind == "assert" else len(tests.get("inputs") or ())
        apps = limits.compare == "apps"
        source = code
        if apps and kind == "stdio":
            source = apps_stdio_source(code)
        elif apps and kind == "call":
            source = APPS_PRELUDE + code
        try:
            code_obj = _compiled(source)
        except _CompileError as exc:
            record = _Tests(n)
            record.compile_error = str(exc)
            return record
        clock = _Clock(limits)
        if kind == "stdio":
            return self._run_stdio(zygote, tests, code, code_obj, limits, clock)
        if kind == "call":
            return self._run_call(zygote, problem, tests, code, code_obj, limits, clock)
        return self._run_assert(zygote, problem, tests, code, code_obj, limits, clock)

    # stdio ------------------------------------------------------------------------------------------------------
    def _run_stdio(self, zygote, tests, code, code_obj, limits, clock) -> _Tests:
        inputs, outputs = tests["inputs"], tests["outputs"]
        record = _Tests(len(inputs))
        apps = limits.compare == "apps"

        def verdict(i: int, output: str) -> tuple[str, str]:
            ok = (compare.apps_stdout_equal(output, outputs[i]) if apps
                  else compare.strict_stdout_equal(output, outputs[i], limits.float_tolerance))
            if ok:
                return PASS, ""
            return FAIL, f"test {i}: wrong answer: expected {_short(outputs[i])}, got {_short(output)}"

        start = 0
        while start < len(inputs):
            exhausted = clock.exhausted()
            if exhausted:
                record.settle_rest(start, TIMEOUT, exhausted)
                break
            next_start = self._stdio_batch(zygote, code, code_obj, inputs, start, apps, verdict, record, limits,
                                           clock)
            if next_start is None:
                break
            start = next_start
        return record

    def _stdio_batch(self, zygote, code, code_obj, inputs, start, apps, verdict, record: _Tests, limits,
                     clock):
        """Tests ``start..`` in one child; returns the index to continue from in a fresh child, or None."""
        cap = limits.output_cap_bytes
        cpu = limits.program_cpu_limit_s(len(inputs) - start, clock.cpu_spent)
        encoded = [x.encode("utf-8", "surrogateescape") for x in inputs]
        fds_here: list[int] = []
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        try:
            fds_here.append(go_r)
            spec_fd = _memfd(marshal.dumps({"code": code, "code_obj": code_obj, "apps": apps, "output_cap": cap,
                                            "cpu_s": limits.timeout_s, "inputs": encoded, "start": start,
                                            "stdin_given": not apps}))
            fds_here.append(spec_fd)
            res_r, res_w = os.pipe2(os.O_CLOEXEC)
            fds_here.append(res_w)
            result = _Stream(res_r, cap + (1 << 20), messages=True)
            fds = {3: res_w, 4: spec_fd, 5: go_r}
            out = None
            if not apps:
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                fds_here.append(out_w)
                out = _Stream(out_r, cap, messages=False)
                fds[1] = out_w
                # The first test's input goes in as fd 0 (the child makes the later ones): cheaper here, in a warm
                # process, than in a freshly forked child.
                fds[0] = _memfd(encoded[start])
                fds_here.append(fds[0])
            child_limits = {**limits.child_limits(cpu), "max_input_bytes": max(map(len, encoded), default=0)}
            pid = zygote.spawn("stdio", child_limits, fds)
        except BaseException:
            os.close(go_w)
            raise
        finally:
            for fd in fds_here:
                os.close(fd)
        child = _Child(zygote, pid, result, [out] if out is not None else [], clock)
        finished = False
        try:
            next_start = self._stdio_loop(child, go_w, out, inputs, start, apps, verdict, record, limits,
                                          clock, cpu)
            # All tests ran: closing the go pipe makes the child exit on its own. Only a program that could not
            # start processes has nothing left to kill, so only then may the kill wait for the next spawn.
            finished = (next_start is None and record.status[-1] != NOT_RUN and child.phase == "ready"
                        and limits.max_processes == 1)
            if next_start is not None and next_start < len(inputs):
                clock.spent(child)
            return next_start
        finally:
            os.close(go_w)
            child.release(finished=finished)

    def _stdio_loop(self, child: _Child, go_w, out, inputs, start, apps, verdict, record, limits, clock,
                    cpu):
        streams = [child.result] + ([out] if out is not None else [])
        i = start
        sent = -1
        clock.restart_test()
        while i < len(inputs):
            if sent < i:
                # One byte per test: the child starts the next test only after the worker has drained the previous
                # test's stdout, so every byte in the pipe belongs to the test that is running.
                try:
                    os.write(go_w, b"g")
                except OSError:
                    pass  # the child is gone; its result stream tells why
                sent = i
                if child.phase == "ready":
                    clock.restart_test()
            end = None
            while child.cursor < len(child.result.messages) and end is None:
                msg = child.result.messages[child.cursor]
                child.cursor += 1
                child._advance(msg)
                t = msg.get("t")
                if t == "setup_error":
                    raise SandboxSetupError(str(msg.get("error")))
                if t == "compile_error" and child.phase in ("compiling", "loading"):
                    record.compile_error = str(msg.get("error", ""))
                    return None
                if t == "cpu_limit":
                    if child.phase != "ready" and i == start:
                        record.load_timed_out(start, limits, "CPU time limit exceeded while loading the program")
                        return None
                    record.set(i, TIMEOUT, f"test {i}: CPU time limit exceeded")
                    return None if record.stop_after(i, limits) else i + 1
                if child.phase != "ready":
                    continue
                if t == "ready" or (t == "begin" and msg.get("i") == i):
                    clock.restart_test()
                elif t == "end" and msg.get("i") == i:
                    end = msg
            if end is None:
                problem = None
                if child.result.corrupt:
                    problem = (ERROR, f"result channel corrupted: {child.result.corrupt}")
                elif child.result.overflow or (out is not None and out.overflow):
                    problem = (ERROR, f"output limit exceeded ({limits.max_output_mb} MB)")
                elif child.result.eof:
                    if out is not None:
                        while not out.eof and not out.overflow and clock.wait([out]):
                            pass
                    problem = self._stdio_died(child, out, i, apps, verdict, cpu)
                    if problem is None:
                        return None
                if problem is not None:
                    if problem[0] == TIMEOUT and child.phase == "loading" and i == start:
                        record.load_timed_out(start, limits, f"while loading the program: {problem[1]}")
                        return None
                    record.set(i, problem[0], f"test {i}: {problem[1]}")
                    return None if record.stop_after(i, limits) else i + 1
                if not clock.wait(streams):
                    if child.phase != "ready" and i == start:
                        record.load_timed_out(start, limits, clock.timeout_error("while loading the program"))
                        return None
                    record.set(i, TIMEOUT, clock.timeout_error(f"test {i}"))
                    return None if record.stop_after(i, limits) else i + 1
                continue
            # The test ended: everything it wrote to fd 1 is already in the pipe, so a non-blocking drain gets it.
            if out is not None:
                out.pump()
                if out.overflow:
                    record.set(i, ERROR, f"test {i}: output limit exceeded ({limits.max_output_mb} MB)")
                    return None if record.stop_after(i, limits) else i + 1
                output = out.data.decode("utf-8", "replace")
                out.data.clear()
                out.total = 0
            else:
                if end.get("truncated"):
                    record.set(i, ERROR, f"test {i}: output limit exceeded ({limits.max_output_mb} MB)")
                    return None if record.stop_after(i, limits) else i + 1
                output = str(end.pop("text", None) or "")
            child.result.total = 0  # the output caps are per test
            if end.get("error"):
                status, error = ERROR, f"test {i}: {end['error']}"
            elif end.get("code") not in (0, None):
                status, error = ERROR, f"test {i}: exited with status {end.get('code')}"
            else:
                status, error = verdict(i, output)
            record.set(i, status, error)
            if record.stop_after(i, limits):
                return None
            i += 1
        return None

    def _stdio_died(self, child: _Child, out, i, apps, verdict, cpu):
        """The child ended during test ``i`` without reporting its end: (status, error), or None when the record
        was settled (compile error). ``os._exit(0)`` after printing is a normal end for a strict stdio program."""
        if child.phase == "setup":
            status, _ = child.status()
            raise SandboxSetupError(f"child ended during setup (wait status {status})")
        status, cpu_used = child.status()
        if child.phase == "compiling":
            return ERROR, f"compiler crashed ({_crash_reason(status, cpu_used, cpu)[1]})"
        if not apps and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and out is not None:
            output = out.data.decode("utf-8", "replace")
            out.data.clear()
            return verdict(i, output)
        return _crash_reason(status, cpu_used, cpu)

    # call -------------------------------------------------------------------------------------------------------
    def _run_call(self, zygote, problem, tests, code, code_obj, limits, clock) -> _Tests:
        inputs, outputs = tests["inputs"], tests["outputs"]
        apps = limits.compare == "apps"
        fn_name = problem.get("fn_name")
        if not fn_name:
            raise ValueError(f"problem {problem.get('problem_id')!r}: call tests need fn_name")
        solution_class = True if "class Solution" in (problem.get("starter_code") or "") else None
        requests = []
        for i, args in enumerate(inputs):
            if apps:
                args = compare.apps_call_inputs(list(args))
            requests.append({"op": "call", "target": "entry", "args": [encode(a) for a in args], "i": i})

        def verdict(i: int, value: Any) -> tuple[str, str]:
            try:
                ok = (compare.apps_value_equal(value, outputs[i]) if apps
                      else compare.strict_value_equal(value, outputs[i], limits.float_tolerance))
            except Exception as exc:  # APPS counts an exception while comparing as a runtime error
                return ERROR, f"test {i}: comparing the result raised {type(exc).__name__}: {exc}"
            if ok:
                return PASS, ""
            return FAIL, f"test {i}: wrong answer: expected {_short(outputs[i])}, got {_short(value)}"

        spec = {"code": code, "code_obj": code_obj, "apps": apps,
                "entry": {"name": fn_name, "solution_class": solution_class}}
        return self._run_server(zygote, spec, requests, verdict, limits, clock)

    # assert -----------------------------------------------------------------------------------------------------
    def _run_assert(self, zygote, problem, tests, code, code_obj, limits, clock) -> _Tests:
        asserts = tuple(tests.get("asserts") or ())
        setup = tests.get("setup_code") or ""
        fn_name = problem.get("fn_name") or None
        plan: AssertPlan = plan_asserts(setup, asserts, fn_name)
        spec = {"code": code, "code_obj": code_obj, "apps": False}
        if plan.fast is None:
            return self._run_judged(zygote, spec, setup, asserts, plan, fn_name, limits, clock)
        requests = [{**check.request, "i": i} for i, check in enumerate(plan.fast)]

        def verdict(i: int, value: Any) -> tuple[str, str]:
            if fast_verdict(value, plan.fast[i]):
                return PASS, ""
            return FAIL, f"test {i}: assertion failed: {asserts[i][:300]} (got {_short(value)})"

        return self._run_server(zygote, spec, requests, verdict, limits, clock)

    # one candidate child answering a batch of calls ----------------------------------------------------------------
    def _run_server(self, zygote, spec, requests, verdict, limits, clock) -> _Tests:
        record = _Tests(len(requests))
        start = 0
        while start < len(requests):
            exhausted = clock.exhausted()
            if exhausted:
                record.settle_rest(start, TIMEOUT, exhausted)
                break
            next_start = self._server_batch(zygote, spec, requests, start, verdict, record, limits,
                                            clock)
            if next_start is None:
                break
            start = next_start
        return record

    def _server_batch(self, zygote, spec, requests, start, verdict, record: _Tests, limits, clock):
        """Run tests ``start..`` in one child. Returns the index to continue from in a fresh child, or None."""
        cpu = limits.program_cpu_limit_s(len(requests) - start, clock.cpu_spent)
        fds_here = []
        try:
            spec_fd = _memfd(marshal.dumps({**spec, "cpu_s": limits.timeout_s}))
            fds_here.append(spec_fd)
            req_fd = _memfd(b"".join(pack(r) for r in requests[start:]))
            fds_here.append(req_fd)
            res_r, res_w = os.pipe2(os.O_CLOEXEC)
            fds_here.append(res_w)
            result = _Stream(res_r, limits.output_cap_bytes + (1 << 20), messages=True)
            pid = zygote.spawn("server", limits.child_limits(cpu), {3: res_w, 4: spec_fd, 5: req_fd})
        finally:
            for fd in fds_here:
                os.close(fd)
        child = _Child(zygote, pid, result, clock=clock)
        finished = False
        try:
            next_start = self._server_loop(child, requests, start, verdict, record, limits, clock, cpu)
            # Every request answered: the child reads the end of its requests and exits (see the stdio case).
            finished = (next_start is None and record.status[-1] != NOT_RUN and child.phase == "ready"
                        and limits.max_processes == 1)
            if next_start is not None and next_start < len(requests):
                clock.spent(child)
            return next_start
        finally:
            child.release(finished=finished)

    def _server_loop(self, child: _Child, requests, start, verdict, record: _Tests, limits, clock, cpu):
        clock.restart_test()
        i = start
        while i < len(requests):
            try:
                msg = child.next_message(clock)
            except TimeoutError:
                if child.phase != "ready" and i == start:
                    record.load_timed_out(start, limits, clock.timeout_error("while loading the program"))
                    return None
                record.set(i, TIMEOUT, clock.timeout_error(f"test {i}"))
                return None if record.stop_after(i, limits) else i + 1
            if msg is None or msg.get("t") in ("corrupt", "overflow"):
                if msg is None and child.phase == "setup":
                    status, _ = child.status()
                    raise SandboxSetupError(f"child ended during setup (wait status {status})")
                if msg is None and child.phase == "compiling":
                    status, cpu_used = child.status()
                    record.compile_error = f"compiler crashed ({_crash_reason(status, cpu_used, cpu)[1]})"
                    return None
                if msg is None:
                    status, cpu_used = child.status()
                    kind, error = _crash_reason(status, cpu_used, cpu)
                    if child.phase != "ready" and kind == TIMEOUT:
                        record.load_timed_out(start, limits, f"while loading the program: {error}")
                        return None
                    if child.phase != "ready":
                        record.settle_rest(start, kind, f"while loading the program: {error}")
                        return None
                    error = f"the program ended the process ({error})" if kind == ERROR else error
                elif msg.get("t") == "overflow":
                    kind, error = ERROR, f"output limit exceeded ({limits.max_output_mb} MB)"
                else:
                    kind, error = ERROR, f"result channel corrupted: {msg.get('error')}"
                record.set(i, kind, f"test {i}: {error}")
                return None if record.stop_after(i, limits) else i + 1
            t = msg.get("t")
            if t == "setup_error":
                raise SandboxSetupError(str(msg.get("error")))
            if t == "compile_error" and child.phase in ("compiling", "loading"):
                record.compile_error = str(msg.get("error", ""))
                return None
            if t == "load_error" and child.phase == "loading":
                record.settle_rest(start, ERROR, f"error while loading the program: {msg.get('error', '')}")
                return None
            if t == "cpu_limit":
                if child.phase != "ready" and i == start:
                    record.load_timed_out(start, limits, "CPU time limit exceeded while loading the program")
                    return None
                record.set(i, TIMEOUT, f"test {i}: CPU time limit exceeded")
                return None if record.stop_after(i, limits) else i + 1
            if t == "ready" and child.phase == "ready":
                clock.restart_test()
                continue
            if t != "reply" or child.phase != "ready" or msg.get("i") != i:
                continue
            child.result.total = 0  # the output cap is per test
            if "exc" in msg:
                status, error = ERROR, f"test {i}: {msg.get('tb') or msg.get('exc')}"
            else:
                try:
                    value = decode(msg.pop("ok", None))
                except DecodeError as exc:
                    status, error = ERROR, f"test {i}: malformed return value: {exc}"
                else:
                    status, error = verdict(i, value)
            record.set(i, status, error)
            if record.stop_after(i, limits):
                return None
            i += 1
            clock.restart_test()
        return None

    # judge + candidate --------------------------------------------------------------------------------------------
    def _run_judged(self, zygote, spec, setup, asserts, plan, fn_name, limits, clock) -> _Tests:
        record = _Tests(len(asserts))
        start = 0
        while start < len(asserts):
            exhausted = clock.exhausted()
            if exhausted:
                record.settle_rest(start, TIMEOUT, exhausted)
                break
            next_start = self._judged_batch(zygote, spec, setup, asserts, plan, fn_name, start, record, limits,
                                            clock)
            if next_start is None:
                break
            start = next_start
        return record

    def _judged_batch(self, zygote, spec, setup, asserts, plan, fn_name, start, record, limits, clock):
        cpu = limits.program_cpu_limit_s(len(asserts) - start, clock.cpu_spent)
        fds_here = []
        children: list[_Child] = []
        try:
            req_r, req_w = os.pipe2(os.O_CLOEXEC)
            rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
            c_res_r, c_res_w = os.pipe2(os.O_CLOEXEC)
            j_res_r, j_res_w = os.pipe2(os.O_CLOEXEC)
            fds_here += [req_r, req_w, rep_r, rep_w, c_res_w, j_res_w]
            cand_spec = _memfd(marshal.dumps({**spec, "rpc": True, "entry": {"name": fn_name},
                                              "cpu_s": limits.timeout_s}))
            fds_here.append(cand_spec)
            judge_spec = _memfd(marshal.dumps({"setup_code": setup, "asserts": list(asserts), "start": start,
                                               "free_names": list(plan.free_names), "fn_name": fn_name}))
            fds_here.append(judge_spec)
            c_result = _Stream(c_res_r, limits.output_cap_bytes + (1 << 20), messages=True)
            j_result = _Stream(j_res_r, limits.output_cap_bytes + (1 << 20), messages=True)
            cand_pid = zygote.spawn("server", limits.child_limits(cpu),
                                    {3: c_res_w, 4: cand_spec, 5: req_r, 6: rep_w})
            children.append(_Child(zygote, cand_pid, c_result, clock=clock))
            # The judge runs the tests' own code for every test in one go: it gets the whole budget at once.
            judge_pid = zygote.spawn("judge", {**limits.child_limits(cpu), "cpu_s": cpu},
                                     {3: j_res_w, 4: judge_spec, 5: req_w, 6: rep_r})
            children.append(_Child(zygote, judge_pid, j_result, clock=clock))
        except BaseException:
            for c in children:
                c.release()
            raise
        finally:
            for fd in fds_here:
                os.close(fd)
        cand, judge = children
        try:
            next_start = self._judge_loop(cand, judge, asserts, start, record, limits, clock, cpu)
            if next_start is not None and next_start < len(asserts):
                clock.spent(cand)
            return next_start
        finally:
            judge.release()
            cand.release()

    @staticmethod
    def _candidate_events(cand: _Child, record: _Tests, start: int, cpu: float) -> bool:
        """Handle the candidate's own reports; True when they decide the program (compile or load error)."""
        while cand.cursor < len(cand.result.messages):
            msg = cand.result.messages[cand.cursor]
            cand.cursor += 1
            cand._advance(msg)
            t = msg.get("t")
            if t == "setup_error":
                raise SandboxSetupError(str(msg.get("error")))
            if t == "compile_error" and cand.phase in ("compiling", "loading"):
                record.compile_error = str(msg.get("error", ""))
                return True
            if t == "load_error" and cand.phase == "loading":
                record.settle_rest(start, ERROR, f"error while loading the program: {msg.get('error', '')}")
                return True
        if cand.result.eof and cand.phase == "setup":
            status, _ = cand.status()
            raise SandboxSetupError(f"candidate child ended during setup (wait status {status})")
        if cand.result.eof and cand.phase == "compiling":
            status, cpu_used = cand.status()
            record.compile_error = f"compiler crashed ({_crash_reason(status, cpu_used, cpu)[1]})"
            return True
        return False

    def _judge_loop(self, cand: _Child, judge: _Child, asserts, start, record, limits, clock, cpu):
        """Follow the judge's begin/verdict messages; returns the index to continue from in fresh children."""
        clock.restart_test()
        current = start
        while True:
            cand.result.pump()
            judge.result.pump()
            if self._candidate_events(cand, record, start, cpu):
                return None
            gone_at = None
            while judge.cursor < len(judge.result.messages) and gone_at is None:
                msg = judge.result.messages[judge.cursor]
                judge.cursor += 1
                t, i = msg.get("t"), msg.get("i")
                if t == "setup_error" and judge.phase == "setup":
                    raise SandboxSetupError(f"judge: {msg.get('error')}")
                judge.phase = "ready"
                if not isinstance(i, int) or not start <= i < len(asserts):
                    continue
                if t == "begin":
                    current = i
                    clock.restart_test()
                elif t == "verdict":
                    cand.result.total = judge.result.total = 0  # the output caps are per test
                    status = {"pass": PASS, "fail": FAIL}.get(msg.get("v"), ERROR)
                    record.set(i, status, "" if status == PASS else f"test {i}: {msg.get('error', '')}")
                    if record.stop_after(i, limits):
                        return None
                    current = i + 1
                elif t == "candidate_gone":
                    gone_at = i
            if gone_at is not None:
                # The candidate died. If it never got ready, its own report (compile or load error) decides.
                while not cand.result.eof and clock.wait([cand.result]):
                    pass
                if self._candidate_events(cand, record, start, cpu):
                    return None
                status, cpu_used = cand.status()
                kind, error = _crash_reason(status, cpu_used, cpu)
                record.set(gone_at, kind, f"test {gone_at}: the program ended the process ({error})")
                return None if record.stop_after(gone_at, limits) else gone_at + 1
            if judge.result.corrupt or judge.result.overflow:
                record.set(current, ERROR, f"test {current}: the judge's channel failed")
                return None if record.stop_after(current, limits) else current + 1
            if judge.result.eof and judge.cursor >= len(judge.result.messages):
                if all(s != NOT_RUN for s in record.status[start:]):
                    return None
                if judge.phase == "setup":
                    status, _ = judge.status()
                    raise SandboxSetupError(f"judge ended during setup (wait status {status})")
                status, cpu_used = judge.status()
                kind, error = _crash_reason(status, cpu_used, cpu)
                record.set(current, TIMEOUT if kind == TIMEOUT else ERROR, f"test {current}: judge died ({error})")
                return None if record.stop_after(current, limits) else current + 1
            if not clock.wait([cand.result, judge.result]):
                if cand.phase != "ready" and current == start:
                    record.settle_rest(start, TIMEOUT, clock.timeout_error("while loading the program"))
                    return None
                record.set(current, TIMEOUT, clock.timeout_error(f"test {current}"))
                return None if record.stop_after(current, limits) else current + 1


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = repr(text) if isinstance(value, str) else text
    return text if len(text) <= limit else text[:limit] + "..."


# --- module-level convenience: one warm sandbox per process and tier ------------------------------------------------

_DEFAULT: dict[tuple[int, str], Sandbox] = {}
_DEFAULT_LOCK = threading.Lock()


def default_sandbox(tier: str = "auto") -> Sandbox:
    """The process-wide sandbox for ``tier`` (a fresh one after ``fork``)."""
    key = (os.getpid(), tier)
    with _DEFAULT_LOCK:
        sandbox = _DEFAULT.get(key)
        if sandbox is None:
            sandbox = _DEFAULT[key] = Sandbox(tier)
        return sandbox


def execute(problem: dict[str, Any], code: str, sample_id: str = "",
            limits: SandboxLimits | None = None) -> ExecutionResult:
    """Run ``code`` against ``problem``'s tests (or example tests) and return the result record."""
    limits = limits or SandboxLimits()
    return default_sandbox(limits.tier).execute(problem, code, sample_id, limits)


def execute_many(problems: dict[str, dict[str, Any]], samples: Iterable[dict[str, Any]],
                 limits: SandboxLimits | None = None, max_workers: int = 1,
                 sandbox: Sandbox | None = None) -> list[ExecutionResult]:
    """Run each sample (``{problem_id, sample_id, code}``) against its problem; results in the input order.

    ``max_workers`` > 1 runs that many programs at a time (threads sharing one zygote).
    """
    limits = limits or SandboxLimits()
    box = sandbox or default_sandbox(limits.tier)
    samples = list(samples)

    def one(s: dict[str, Any]) -> ExecutionResult:
        problem = problems.get(s["problem_id"])
        if problem is None:
            return ExecutionResult(s["problem_id"], s.get("sample_id", ""), Outcome.INFRA_ERROR,
                                   error=f"unknown problem_id {s['problem_id']!r}")
        return box.execute(problem, s.get("code"), s.get("sample_id", ""), limits)

    if max_workers <= 1 or len(samples) <= 1:
        return [one(s) for s in samples]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        return list(pool.map(one, samples))
