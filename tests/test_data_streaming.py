"""Problems as Ray Datasets: byte-range reads give every record exactly once, and the same problems as the
single-process loaders; skips are kept on request; errors name the file and the record's byte offset."""

from __future__ import annotations

import gzip
import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coderl_ray.data.apps import load_apps_rows
from coderl_ray.data.mbpp import load_mbpp
from coderl_ray.data.problems import ProblemError, write_jsonl
from coderl_ray.data.streaming import SKIP_COLUMN, iter_line_range, read_problems_dataset
from coderl_ray.records import problem_from_row

SAMPLE_IDS = ["0001", "0111", "2287", "2404", "4184"]


def hf_row(folder) -> dict:
    """A codeparrot/apps row made from a raw problem folder (as in test_data_apps; test modules do not import each
    other, so the suite runs whether or not tests/ is a package)."""
    meta = json.loads((folder / "metadata.json").read_text())
    starter = folder / "starter_code.py"
    return {"problem_id": int(folder.name), "question": (folder / "question.txt").read_text(),
            "solutions": (folder / "solutions.json").read_text(),
            "input_output": (folder / "input_output.json").read_text(), "difficulty": meta["difficulty"],
            "url": meta["url"], "starter_code": starter.read_text() if starter.is_file() else ""}


def test_line_ranges_cover_every_line_once():
    rng = random.Random(0)
    lines = [b"x" * rng.randint(0, 40) for _ in range(199)] + [b"last"]  # empty lines included
    for data in (b"\n".join(lines), b"\n".join(lines) + b"\n"):
        _check_ranges(data, lines)
    offsets = [off for off, _ in iter_line_range(io.BytesIO(b"ab\ncd\n\nef"), 0, 9)]
    assert offsets == [0, 3, 6, 7]


def _check_ranges(data: bytes, lines: list[bytes]) -> None:
    for chunk in (1, 2, 7, 64, 1000, len(data) + 5):
        got = []
        for start in range(0, len(data), chunk):
            got += [line for _, line in iter_line_range(io.BytesIO(data), start, min(start + chunk, len(data)),
                                                        read_size=16)]
        assert got == lines, chunk


@pytest.fixture(scope="module")
def apps_dump(shared_data, tmp_path_factory):
    """30 copies of the five sample problems (distinct ids) plus one row without tests, as codeparrot/apps rows."""
    base = [hf_row(shared_data / "apps_sample" / i) for i in SAMPLE_IDS]
    rows = [{**r, "problem_id": 1000 * copy + r["problem_id"] % 1000} for copy in range(30) for r in base]
    rows.insert(17, {**base[0], "problem_id": 99999, "input_output": ""})
    folder = tmp_path_factory.mktemp("apps_dump")
    write_jsonl(rows, folder / "test.jsonl")
    return folder / "test.jsonl", rows


def _collect(ds):
    return sorted((problem_from_row(r) for r in ds.iter_rows()), key=lambda p: p["problem_id"])


def test_apps_rows_in_byte_ranges_equal_the_single_process_loader(ray_cluster, apps_dump):
    path, rows = apps_dump
    expected = sorted(load_apps_rows(path), key=lambda p: p["problem_id"])
    assert len(expected) == 150
    ds = read_problems_dataset(path, chunk_bytes=50_000)  # ~15 ranges, most starting mid-record
    assert _collect(ds) == expected
    with_skips = list(read_problems_dataset(path, "apps", include_skipped=True).iter_rows())
    skipped = [r for r in with_skips if r[SKIP_COLUMN]]
    assert len(with_skips) == 151 and [r["problem_id"] for r in skipped] == ["apps/test/99999"]
    assert "no tests" in skipped[0][SKIP_COLUMN]


def test_parquet_gzip_and_canonical_inputs(ray_cluster, apps_dump, shared_data, tmp_path):
    path, rows = apps_dump
    expected = sorted(load_apps_rows(path), key=lambda p: p["problem_id"])
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test.parquet", row_group_size=20)
    assert _collect(read_problems_dataset(tmp_path / "test.parquet")) == expected

    write_jsonl(rows[:40], tmp_path / "splits" / "train.jsonl")
    pq.write_table(pa.Table.from_pylist(rows[40:50]), tmp_path / "splits" / "test-00000-of-00001.parquet")
    assert _collect(read_problems_dataset(tmp_path / "splits")) == \
        sorted(load_apps_rows(tmp_path / "splits"), key=lambda p: p["problem_id"])
    assert {p["problem_id"].split("/")[1] for p in _collect(read_problems_dataset(tmp_path / "splits"))} == \
        {"train", "test"}

    mbpp = load_mbpp(shared_data / "mbpp" / "mbpp.jsonl", "validation")
    write_jsonl(mbpp, tmp_path / "canon" / "mbpp.jsonl")
    with gzip.open(tmp_path / "canon" / "more.jsonl.gz", "wt") as f:
        for p in expected[:5]:
            f.write(json.dumps(p) + "\n")
    got = _collect(read_problems_dataset(tmp_path / "canon", "canonical", chunk_bytes=20_000))
    assert got == sorted(list(mbpp) + expected[:5], key=lambda p: p["problem_id"])


def test_errors_name_file_and_byte_offset(ray_cluster, tmp_path):
    good = json.dumps({"problem_id": "x/1", "question": "q", "tests": {"kind": "stdio", "inputs": [],
                                                                        "outputs": []}})
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + '{"problem_id": "x/2", "question": 3, "tests": null}' + "\n")
    with pytest.raises(Exception, match=rf"bad.jsonl \(line at byte {len(good) + 1}\).*'question'") as info:
        read_problems_dataset(path).materialize()
    assert isinstance(info.value, ProblemError)  # Ray re-raises the task's error type, so callers can catch it
    path.write_bytes(good.encode() + b"\n{oops\n")
    with pytest.raises(ProblemError, match=r"line at byte \d+\): bad JSON"):
        read_problems_dataset(path).materialize()
    with pytest.raises(ProblemError, match="no such file or folder"):
        read_problems_dataset(tmp_path / "absent.jsonl")
    with pytest.raises(ProblemError, match="unknown problems format"):
        read_problems_dataset(path, "csv")


def test_convert_command_with_ray_reports_skips(ray_cluster, apps_dump, tmp_path, capsys):
    from coderl_ray.cli import main
    from coderl_ray.data.jsonl import load_jsonl

    path, _ = apps_dump
    assert main(["convert", "apps", str(path), "--ray", "--out", str(tmp_path / "apps.jsonl")]) == 0
    assert load_jsonl(tmp_path / "apps.jsonl") == sorted(load_apps_rows(path), key=lambda p: p["problem_id"])
    err = capsys.readouterr().err
    assert "skipped 1 problem(s) without usable tests" in err and "apps/test/99999" in err
