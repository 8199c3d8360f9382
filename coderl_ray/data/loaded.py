"""What a loader returns: the problems it converted, and the ones it had to skip, with the reason for each."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedProblem:
    """A source record that could not become a problem, e.g. an APPS problem whose tests are missing."""

    problem_id: str
    where: str  # file (and line) or folder that holds it
    reason: str


class LoadedProblems(list):
    """A plain ``list`` of canonical problem dicts that also carries ``skipped``: the records a loader left out.

    Benchmarks such as APPS contain problems without usable tests; dropping them without a word would change the
    denominator of every metric. Loaders therefore keep the list of what they skipped, and log it once.
    """

    def __init__(self, problems: list[dict[str, Any]] | None = None,
                 skipped: list[SkippedProblem] | None = None, source: str = ""):
        super().__init__(problems or [])
        self.skipped: list[SkippedProblem] = list(skipped or [])
        self.source = source

    def log_skipped(self) -> None:
        if self.skipped:
            ids = ", ".join(s.problem_id for s in self.skipped[:20])
            more = f" and {len(self.skipped) - 20} more" if len(self.skipped) > 20 else ""
            logger.warning("%s: skipped %d problem(s) without usable tests: %s%s", self.source or "loader",
                           len(self.skipped), ids, more)

    def skipped_summary(self) -> str:
        """One line per skipped problem, for command-line reports."""
        return "\n".join(f"  {s.problem_id} ({s.where}): {s.reason}" for s in self.skipped)
