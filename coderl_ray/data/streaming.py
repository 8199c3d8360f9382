"""Problems as a Ray Dataset, read in parallel and streamed, in the Arrow row form of ``records.problem_to_row``.

A full APPS dump is a few GB of JSON Lines, most of it test data. Ray's stock ``read_json`` cannot type it (a call
test's inputs mix numbers, strings and lists) and ``read_text`` loads each file whole, so this module has its own
datasource: every JSON Lines file is cut into byte ranges, each range is one read task that streams its lines,
converts each record with the same pure functions the single-process loaders use, and yields small Arrow blocks.
A record belongs to the range holding its first byte, so ranges need no coordination. Gzipped files cannot be cut
and are streamed by one task each. Parquet dumps go through ``ray.data.read_parquet`` (already columnar and
splittable) and a ``map_batches`` conversion.

Errors name the file and the byte offset of the record's line (the read tasks cannot know line numbers without
reading everything before them); ``tail -c +<offset+1> FILE | head -1`` shows the record.

    import ray
    from coderl_ray.data.streaming import read_problems_dataset
    ds = read_problems_dataset("apps/test.jsonl")               # codeparrot/apps rows, format detected
    problems = [problem_from_row(r) for r in ds.iter_rows()]   # coderl_ray.records.problem_from_row

Nothing here runs at import time and Ray is imported only inside functions, so the parsers stay usable without it.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from coderl_ray.data import apps as apps_mod
from coderl_ray.data.jsonl import JSONL_SUFFIXES, PARQUET_SUFFIXES
from coderl_ray.data.problems import ProblemError, loads_line, validate_problem
from coderl_ray.records import problem_to_row

FORMATS = ("auto", "canonical", "apps")
SKIP_COLUMN = "skip_reason"

_TESTS_TYPE = pa.struct([
    ("kind", pa.string()), ("inputs", pa.list_(pa.string())), ("outputs", pa.list_(pa.string())),
    ("setup_code", pa.string()), ("asserts", pa.list_(pa.string())),
])


def problem_row_schema(include_skipped: bool = False) -> pa.Schema:
    """The Arrow schema of a problems dataset. Fields beyond docs/design.md's canonical record are not carried."""
    fields = [
        ("problem_id", pa.string()), ("source", pa.string()), ("difficulty", pa.string()),
        ("question", pa.string()), ("starter_code", pa.string()), ("fn_name", pa.string()),
        ("tests", _TESTS_TYPE), ("example_tests", _TESTS_TYPE), ("solutions", pa.list_(pa.string())),
        ("compare", pa.string()),
    ]
    if include_skipped:
        fields.append((SKIP_COLUMN, pa.string()))
    return pa.schema(fields)


# --- pure conversion (no Ray) --------------------------------------------------------------------------------------

def detect_format(record: dict[str, Any], where: str) -> str:
    if "tests" in record:
        return "canonical"
    if "input_output" in record:
        return "apps"
    raise ProblemError(f"{where}: cannot tell the format: neither a canonical problem (no 'tests') nor a "
                       f"codeparrot/apps row (no 'input_output'); keys: {', '.join(sorted(record)[:10])}")


def convert_record(record: Any, fmt: str, where: str, split: str | None, with_examples: bool,
                   include_skipped: bool) -> dict[str, Any] | None:
    """One source record -> a problem row, or a skip row (``include_skipped``), or None (skipped, not kept)."""
    if not isinstance(record, dict):
        raise ProblemError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if fmt == "auto":
        fmt = detect_format(record, where)
    if fmt == "canonical":
        row = problem_to_row(validate_problem(record, where))
    else:
        try:
            row = problem_to_row(apps_mod.problem_from_hf_row(record, split, where, with_examples))
        except apps_mod.UnusableTests as exc:
            if not include_skipped:
                return None
            raw_id = record.get("problem_id")
            row = {"problem_id": apps_mod.problem_id_of(raw_id, split) if raw_id is not None else "?",
                   "source": "apps", "difficulty": record.get("difficulty") or "", "question": "",
                   "starter_code": "", "fn_name": "", "tests": None, "example_tests": None, "solutions": [],
                   "compare": "", SKIP_COLUMN: str(exc)}
            return row
    if include_skipped:
        row[SKIP_COLUMN] = ""
    return row


def iter_line_range(f: Any, start: int, end: int, read_size: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for every line of the seekable binary file ``f`` whose first byte lies in [start, end).

    A range that starts mid-line skips to the next line: that line belongs to the previous range.
    """
    if start > 0:
        f.seek(start - 1)
        pos = start - 1
        buf = b""
        while True:  # find the end of the line holding byte start-1
            chunk = f.read(read_size)
            if not chunk:
                return
            nl = chunk.find(b"\n")
            if nl >= 0:
                pos += nl + 1
                buf = chunk[nl + 1:]
                break
            pos += len(chunk)
    else:
        f.seek(0)
        pos, buf = 0, b""
    # `i` indexes into `buf` so that taking a line does not copy the rest of the buffer, and a line longer than the
    # buffer (APPS has test data of tens of MB on one line) is collected in parts and joined once.
    i = 0
    while pos < end:
        nl = buf.find(b"\n", i)
        if nl >= 0:
            yield pos, buf[i:nl]
            pos += nl + 1 - i
            i = nl + 1
            continue
        parts = [buf[i:]]
        while True:
            chunk = f.read(read_size)
            if not chunk:
                line = b"".join(parts)
                if line:
                    yield pos, line
                return
            k = chunk.find(b"\n")
            if k >= 0:
                parts.append(chunk[:k])
                line = b"".join(parts)
                yield pos, line
                pos += len(line) + 1
                buf, i = chunk, k + 1
                break
            parts.append(chunk)


def rows_from_lines(lines: Iterator[tuple[int, bytes]], path: str, fmt: str, split: str | None,
                    with_examples: bool, include_skipped: bool, rows_per_block: int,
                    bytes_per_block: int) -> Iterator[pa.Table]:
    """Parse and convert lines into Arrow blocks of at most ``rows_per_block`` rows / about ``bytes_per_block``."""
    schema = problem_row_schema(include_skipped)
    rows: list[dict[str, Any]] = []
    size = 0
    for offset, raw in lines:
        where = f"{path} (line at byte {offset})"
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProblemError(f"{where}: not UTF-8 text ({exc})") from None
        record = loads_line(text, where)
        row = convert_record(record, fmt, where, split, with_examples, include_skipped)
        if row is None:
            continue
        rows.append(row)
        size += len(raw)
        if len(rows) >= rows_per_block or size >= bytes_per_block:
            yield pa.Table.from_pylist(rows, schema=schema)
            rows, size = [], 0
    if rows:
        yield pa.Table.from_pylist(rows, schema=schema)


# --- Ray -----------------------------------------------------------------------------------------------------------

def _filesystem(path: str):
    import pyarrow.fs as pafs

    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), str(Path(path).resolve())


def _list_files(path: str) -> tuple[Any, list[tuple[str, int]]]:
    """(filesystem, [(file, size)]) of the JSON Lines / Parquet files at a path or folder (local or URI)."""
    import pyarrow.fs as pafs

    fs, p = _filesystem(path)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.NotFound:
        raise ProblemError(f"{path}: no such file or folder")
    if info.type == pafs.FileType.File:
        return fs, [(p, info.size)]
    found = [i for i in fs.get_file_info(pafs.FileSelector(p, recursive=False))
             if i.type == pafs.FileType.File and i.base_name.endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)]
    if not found:
        raise ProblemError(f"{path}: folder holds no .jsonl, .json(.gz) or .parquet files")
    return fs, sorted((i.path, i.size) for i in found)


def _make_datasource(fs: Any, files: list[tuple[str, int]], fmt: str, split: str | None, with_examples: bool,
                     include_skipped: bool, chunk_bytes: int | None, rows_per_block: int, bytes_per_block: int):
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class JsonLinesProblemsDatasource(Datasource):
        """Byte ranges of JSON Lines files -> problem rows (see the module docstring)."""

        def estimate_inmemory_data_size(self) -> int | None:
            return sum(size for _, size in files)

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            total = max(1, sum(size for _, size in files))
            # Ranges of at least 16 MiB: below that, task overhead outweighs parallel parsing.
            chunk = chunk_bytes or max(16 << 20, math.ceil(total / max(1, parallelism)))
            tasks = []
            for path, size in files:
                ranges = [(0, size)] if path.endswith(".gz") else \
                    [(s, min(s + chunk, size)) for s in range(0, max(size, 1), chunk)]
                for start, end in ranges:
                    meta = BlockMetadata(num_rows=None, size_bytes=end - start, input_files=[path],
                                         exec_stats=None)
                    tasks.append(ReadTask(_reader(path, start, end), meta,
                                          schema=problem_row_schema(include_skipped),
                                          per_task_row_limit=per_task_row_limit))
            return tasks

    def _reader(path: str, start: int, end: int):
        file_split = split or apps_mod.split_from_name(path)

        def read() -> Iterator[pa.Table]:
            with fs.open_input_file(path) as raw:
                if path.endswith(".gz"):
                    with gzip.GzipFile(fileobj=raw) as f:
                        lines = ((0, line.rstrip(b"\n")) for line in f)
                        yield from rows_from_lines(_offsets(lines), path, fmt, file_split, with_examples,
                                                   include_skipped, rows_per_block, bytes_per_block)
                    return
                yield from rows_from_lines(iter_line_range(raw, start, end), path, fmt, file_split, with_examples,
                                           include_skipped, rows_per_block, bytes_per_block)
        return read

    return JsonLinesProblemsDatasource()


def _offsets(lines: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
    """Offsets into the *uncompressed* stream of a gzipped file."""
    pos = 0
    for _, line in lines:
        yield pos, line
        pos += len(line) + 1


def _convert_parquet_batch(batch: pa.Table, fmt: str, split: str | None, with_examples: bool,
                           include_skipped: bool) -> pa.Table:
    rows = []
    for record in batch.to_pylist():
        path = record.pop("path", "parquet")
        where = f"{path} (problem_id {record.get('problem_id')!r})"
        if fmt == "canonical" or (fmt == "auto" and "tests" in record):
            from coderl_ray.records import problem_from_row
            record = problem_from_row(record)
            fmt_here = "canonical"
        else:
            fmt_here = fmt
        row = convert_record(record, fmt_here, where, split or apps_mod.split_from_name(path), with_examples,
                             include_skipped)
        if row is not None:
            rows.append(row)
    return pa.Table.from_pylist(rows, schema=problem_row_schema(include_skipped))


def read_problems_dataset(path: str | Path, fmt: str = "auto", split: str | None = None, *,
                          with_examples: bool = True, include_skipped: bool = False,
                          chunk_bytes: int | None = None, rows_per_block: int = 64,
                          bytes_per_block: int = 128 << 20):
    """A Ray Dataset of problems in the Arrow row form, from canonical JSON Lines or ``codeparrot/apps`` rows.

    ``path`` is a file or a folder of ``.jsonl`` / ``.jsonl.gz`` / ``.parquet`` files, local or a URI pyarrow
    understands (``s3://...``); on a cluster every node must see it. ``fmt`` is ``canonical``, ``apps`` or ``auto``
    (decided per record). APPS ids take ``split``, or else the split each file's name states (``test.jsonl``).
    APPS rows without usable tests are dropped unless ``include_skipped`` is set, in which case
    they are kept as rows with an empty ``tests`` and the reason in a ``skip_reason`` column (count them with
    ``ds.filter(lambda r: r["skip_reason"] != "")``). ``chunk_bytes`` sets the byte range of one read task
    (default: the total size over Ray's requested parallelism, at least 16 MiB).
    """
    import ray

    if fmt not in FORMATS:
        raise ProblemError(f"unknown problems format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if split is not None and split not in apps_mod.SPLITS:
        raise ProblemError(f"unknown APPS split {split!r} (expected one of {', '.join(apps_mod.SPLITS)})")
    fs, files = _list_files(str(path))
    jsonl = [(f, s) for f, s in files if f.endswith(JSONL_SUFFIXES)]
    parquet = [f for f, _ in files if f.endswith(PARQUET_SUFFIXES)]
    parts = []
    if jsonl:
        source = _make_datasource(fs, jsonl, fmt, split, with_examples, include_skipped, chunk_bytes,
                                  rows_per_block, bytes_per_block)
        parts.append(ray.data.read_datasource(source))
    if parquet:
        ds = ray.data.read_parquet(parquet, filesystem=fs, include_paths=True)
        parts.append(ds.map_batches(_convert_parquet_batch, batch_format="pyarrow", batch_size=rows_per_block,
                                    fn_kwargs={"fmt": fmt, "split": split, "with_examples": with_examples,
                                               "include_skipped": include_skipped}))
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
