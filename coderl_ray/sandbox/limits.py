"""Limits and options of one sandboxed execution."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Literal

from coderl_ray.sandbox.compare import FLOAT_TOL


@dataclass(frozen=True)
class SandboxLimits:
    """What a program may use, and how its output is judged.

    Time: ``timeout_s`` is wall time per test (for ``call``/``assert`` the first test's clock also covers loading
    the program); ``program_timeout_s`` caps all tests of one program together; ``cpu_s`` is the CPU time of one
    test's process (0: same as ``timeout_s``) - a long-lived ``call``/``assert`` process gets ``cpu_s`` per test it
    still has to run. Space: ``memory_mb`` (address space), ``max_file_mb`` (largest file), ``scratch_mb`` (all
    files together, namespace tier), ``max_open_files``, ``max_output_mb`` (stdout of one test, or everything one
    process reports); ``max_processes`` = 1 forbids creating processes (threads stay allowed).
    """

    timeout_s: float = 4.0
    program_timeout_s: float = 20.0
    cpu_s: float = 0.0
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
        for name in ("timeout_s", "program_timeout_s", "max_output_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("memory_mb", "max_processes", "max_file_mb", "max_open_files", "scratch_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"SandboxLimits.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_open_files < 16:
            raise ValueError("SandboxLimits.max_open_files must be >= 16 (the interpreter itself needs some)")
        if self.cpu_s < 0 or self.infra_retries < 0:
            raise ValueError("SandboxLimits.cpu_s and infra_retries must be >= 0")
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
    def cpu_limit_s(self) -> float:
        return self.cpu_s or self.timeout_s

    @property
    def output_cap_bytes(self) -> int:
        return int(self.max_output_mb * (1 << 20))

    def program_cpu_limit_s(self, tests_left: int) -> float:
        """CPU budget of a process that loads the program and then runs ``tests_left`` tests."""
        return min(self.cpu_limit_s * (tests_left + 1), max(self.program_timeout_s, self.cpu_limit_s)) + 1

    def child_limits(self, cpu_total_s: float) -> dict:
        """The resource limits a child applies to itself (sent to the zygote with each spawn): ``cpu_total_s`` is
        the process's CPU budget, ``cpu_s`` what one test may use of it."""
        return {"cpu_s": self.cpu_limit_s, "cpu_total_s": math.ceil(cpu_total_s), "memory_mb": self.memory_mb,
                "max_processes": self.max_processes,
                "max_file_mb": self.max_file_mb, "max_open_files": self.max_open_files,
                "scratch_mb": self.scratch_mb}


@functools.lru_cache(maxsize=64)
def _with_compare(limits: SandboxLimits, mode: str) -> SandboxLimits:
    # Once per (limits, mode), not once per program: rebuilding a frozen dataclass costs ~30 us.
    return dataclasses.replace(limits, compare=mode)
