"""Limits and options of one sandboxed execution."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Literal

from coderl_ray.sandbox.compare import FLOAT_TOL


@dataclass(frozen=True)
class SandboxLimits:
    """What a program may use, and how its output is judged.

    Time (docs/sandbox.md#time): ``timeout_s`` is the CPU time (user + system, all threads) one test may use - APPS's
    4 s, counted in CPU instead of wall-clock seconds so that a verdict does not depend on how busy the machine is;
    for ``call``/``assert`` the first test's budget also covers loading the program. ``program_timeout_s`` is the
    CPU time of all tests of one program together. The wall clock is only a backstop against programs that sleep
    or block: ``wall_factor`` x the budget + ``wall_extra_s``, counted in time the program ran or slept, not time
    it waited for a CPU (a program past it is a ``timeout``). A test or program still short of its backstop after
    ``starvation_factor`` x the backstop of plain wall time was starved by the machine: an ``infra_error``, retried.
    Space: ``memory_mb`` (address space), ``max_file_mb`` (largest file), ``scratch_mb`` (all files together,
    namespace tier), ``max_open_files``, ``max_output_mb`` (stdout of one test, or everything one process reports);
    ``max_processes`` = 1 forbids creating processes (threads stay allowed).
    """

    timeout_s: float = 4.0
    program_timeout_s: float = 20.0
    # 3x + 5 s: room for what is neither CPU nor waiting for one - VM steal time, page-ins, a worker slow to drain
    # a pipe (docs/sandbox.md#time says why these numbers).
    wall_factor: float = 3.0
    wall_extra_s: float = 5.0
    starvation_factor: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 1
    max_file_mb: int = 16
    max_open_files: int = 64
    max_output_mb: float = 8.0
    scratch_mb: int = 64
    # "auto": the problem's own mode (its record's "compare"; APPS problems say "apps"), strict when it says none.
    compare: Literal["auto", "strict", "apps"] = "auto"
    float_tolerance: float = FLOAT_TOL  # strict mode only; apps has its own (numpy.allclose, 3-decimal rounding)
    stop_on_first_failure: bool = False
    example_tests: bool = False  # run the problem's example_tests instead of its hidden tests
    tier: Literal["auto", "namespace", "process", "bwrap"] = "auto"
    infra_retries: int = 2  # fresh zygote and rerun when the sandbox itself fails

    def __post_init__(self) -> None:
        for name in ("timeout_s", "program_timeout_s", "max_output_mb", "wall_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("memory_mb", "max_processes", "max_file_mb", "max_open_files", "scratch_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"SandboxLimits.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_open_files < 16:
            raise ValueError("SandboxLimits.max_open_files must be >= 16 (the interpreter itself needs some)")
        if self.wall_extra_s < 0 or self.infra_retries < 0:
            raise ValueError("SandboxLimits.wall_extra_s and infra_retries must be >= 0")
        if self.wall_factor < 1 or self.starvation_factor <= 1:
            raise ValueError(f"SandboxLimits.wall_factor must be >= 1 (a backstop below the CPU budget would decide "
                             f"CPU-bound programs by the wall clock) and starvation_factor > 1, got "
                             f"{self.wall_factor!r} and {self.starvation_factor!r}")
        if self.compare not in ("auto", "strict", "apps"):
            raise ValueError(f"SandboxLimits.compare must be 'auto', 'strict' or 'apps', got {self.compare!r}")
        if self.tier not in ("auto", "namespace", "process", "bwrap"):
            raise ValueError(f"SandboxLimits.tier must be auto, namespace, process or bwrap, got {self.tier!r}")

    def for_problem(self, problem: dict) -> "SandboxLimits":
        """These limits with ``compare`` resolved for ``problem`` ("auto" follows the problem's own mode). Raises
        ValueError for a mode the sandbox does not know."""
        if self.compare != "auto":
            return self
        mode = problem.get("compare") or "strict"
        if mode not in ("strict", "apps"):
            raise ValueError(f"problem {problem.get('problem_id')!r}: unknown compare mode {mode!r}")
        return _with_compare(self, mode)

    @property
    def output_cap_bytes(self) -> int:
        return int(self.max_output_mb * (1 << 20))

    def wall_backstop_s(self, cpu_budget_s: float) -> float:
        """Wall seconds a program may spend running or asleep against ``cpu_budget_s`` of CPU."""
        return self.wall_factor * cpu_budget_s + self.wall_extra_s

    def wall_check(self, test_wall_s: float, test_waited_s: float, program_wall_s: float,
                   program_waited_s: float) -> tuple[str, float]:
        """What the wall clock says about a program still running: ``(verdict, seconds to wait before asking again)``.

        ``*_wall_s``: wall time since the test (the program) started; ``*_waited_s``: of that, the time its processes
        waited for a CPU. The backstops count the rest - time the program ran or slept. Verdicts: ``"test"`` or
        ``"program"`` when that backstop has run out (a timeout, the program's doing), ``"starved"`` when the plain
        wall time reached ``starvation_factor`` x a backstop first (the machine's doing), ``""`` to keep waiting.

        >>> limits = SandboxLimits(timeout_s=4, program_timeout_s=20)      # backstops 3 x 4 + 5 = 17 s, 65 s
        >>> limits.wall_check(17.0, 0.0, 17.0, 0.0)                         # asleep for 17 s
        ('test', 0.0)
        >>> limits.wall_check(40.0, 30.0, 40.0, 30.0)                       # 10 s of its own in 40 s: 7 s to go
        ('', 7.0)
        >>> limits.wall_check(170.0, 160.0, 170.0, 160.0)                   # 10 x 17 s, held back nearly all along
        ('starved', 0.0)
        """
        test_backstop = self.wall_backstop_s(self.timeout_s)
        program_backstop = self.wall_backstop_s(self.program_timeout_s)
        test_left = test_backstop - (test_wall_s - test_waited_s)
        program_left = program_backstop - (program_wall_s - program_waited_s)
        if test_left <= 0:
            return "test", 0.0
        if program_left <= 0:
            return "program", 0.0
        patience = min(self.starvation_factor * test_backstop - test_wall_s,
                       self.starvation_factor * program_backstop - program_wall_s)
        if patience <= 0:
            return "starved", 0.0
        return "", min(test_left, program_left, patience)

    def program_cpu_limit_s(self, tests_left: int, spent_s: float = 0.0) -> float:
        """CPU budget of a process that loads the program and then runs ``tests_left`` tests, when earlier
        processes of the same program used ``spent_s``; at most what is left of ``program_timeout_s``."""
        return min(self.timeout_s * (tests_left + 1), self.program_timeout_s - spent_s)

    def child_limits(self, cpu_total_s: float) -> dict:
        """The resource limits a child applies to itself (sent to the zygote with each spawn): ``cpu_total_s`` is
        the process's CPU budget, ``cpu_s`` what one test may use of it. Both are enforced to the millisecond by an
        ``ITIMER_PROF`` timer the child re-arms before each test; ``RLIMIT_CPU`` (whole seconds, just above) stops
        a program that disarms the timer."""
        return {"cpu_s": self.timeout_s, "cpu_total_s": float(cpu_total_s), "memory_mb": self.memory_mb,
                "max_processes": self.max_processes,
                "max_file_mb": self.max_file_mb, "max_open_files": self.max_open_files,
                "scratch_mb": self.scratch_mb}


@functools.lru_cache(maxsize=64)
def _with_compare(limits: SandboxLimits, mode: str) -> SandboxLimits:
    # Once per (limits, mode), not once per program: rebuilding a frozen dataclass costs ~30 us.
    return dataclasses.replace(limits, compare=mode)
