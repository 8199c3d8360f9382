"""Limits and options of one sandboxed execution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 4.0  # wall time per test
    program_timeout_s: float = 20.0  # wall time for all tests of a program
    memory_mb: int = 1024
    compare: Literal["strict", "apps"] = "strict"
    stop_on_first_failure: bool = False
    example_tests: bool = False  # run the problem's example_tests instead of its hidden tests
