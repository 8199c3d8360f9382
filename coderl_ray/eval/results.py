"""Reading result records (docs/design.md) from JSON Lines or Parquet, checked record by record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coderl_ray.data.jsonl import iter_records
from coderl_ray.data.problems import ProblemError
from coderl_ray.eval.metrics import validate_result


class ResultError(ProblemError):
    """A malformed result record. A subclass of ProblemError so the command line reports it as bad input (one line
    naming the file and the record) rather than as a crash."""


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Result records from a JSON Lines file, a Parquet file, or a folder of either (e.g. a replay-buffer round).

    Errors name the file and the line (or row) of the record.
    """
    out = []
    for where, record in iter_records(path):
        try:
            out.append(validate_result(record, where))
        except ValueError as exc:
            raise ResultError(str(exc)) from None
    return out
