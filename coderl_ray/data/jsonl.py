"""Reading source records one at a time, with errors that name the file and the record.

Every loader reads through :func:`iter_records`, which streams JSON Lines (optionally gzipped) line by line and
Parquet files batch by batch, so a multi-GB APPS dump never has to fit in memory as one ``json.load``. Canonical
problem files (the ``coderl-ray convert`` output) are read with :func:`load_jsonl`, which validates every record.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coderl_ray.data.loaded import LoadedProblems
from coderl_ray.data.problems import ProblemError, iter_problems, loads_line

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return any(path.name.endswith(s) for s in suffixes)


def record_files(path: str | Path) -> list[Path]:
    """The JSON Lines / Parquet files at ``path``: the file itself, or the files of a folder in name order."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and _has_suffix(p, JSONL_SUFFIXES + PARQUET_SUFFIXES))
        if not files:
            raise ProblemError(f"{path}: folder holds no .jsonl, .json(.gz) or .parquet files")
        return files
    raise ProblemError(f"{path}: no such file or folder")


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, record)`` for each non-empty line; ``where`` is ``file:line``.

    Bad JSON, text that is not UTF-8 and lines that are not JSON objects raise :class:`ProblemError` naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"{path}: no such file")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProblemError(f"{where}: not UTF-8 text ({exc})") from None
            if not line.strip():
                continue
            record = loads_line(line, where)
            if not isinstance(record, dict):
                raise ProblemError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def iter_parquet(path: str | Path, batch_size: int = 64) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, record)`` for each row of a Parquet file, a few rows in memory at a time."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"{path}: no such file")
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a file that is not Parquet
        raise ProblemError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        for record in batch.to_pylist():
            yield f"{path} row {row}", record
            row += 1


def iter_records(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Records of every JSON Lines or Parquet file at ``path`` (a file or a folder), streamed."""
    for file in record_files(path):
        if _has_suffix(file, PARQUET_SUFFIXES):
            yield from iter_parquet(file)
        elif _has_suffix(file, JSONL_SUFFIXES):
            yield from iter_jsonl(file)
        else:
            raise ProblemError(f"{file}: unknown file type (expected {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)})")


def load_jsonl(path: str | Path) -> LoadedProblems:
    """Canonical problem records (docs/design.md) from a JSON Lines file, validated; errors name the file and line."""
    return LoadedProblems(list(iter_problems(path)), source=str(path))
