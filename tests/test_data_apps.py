"""APPS loaders: the raw release layout and codeparrot/apps rows, field by field against the source files; skipped
problems reported; malformed input named by file and problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coderl_ray.data.apps import load_apps_dir, load_apps_rows
from coderl_ray.data.jsonl import load_jsonl
from coderl_ray.data.problems import ProblemError, write_jsonl
from coderl_ray.records import problem_from_row, problem_to_row

SAMPLE_IDS = ["0001", "0111", "2287", "2404", "4184"]


def write_problem(folder: Path, question="Add.\n", io=None, solutions=None, metadata=None, starter=None):
    folder.mkdir(parents=True)
    (folder / "question.txt").write_text(question)
    if io is not None:
        (folder / "input_output.json").write_text(io if isinstance(io, str) else json.dumps(io))
    (folder / "solutions.json").write_text(json.dumps(solutions or ["print(3)"]))
    (folder / "metadata.json").write_text(json.dumps(metadata or {"difficulty": "interview"}))
    if starter is not None:
        (folder / "starter_code.py").write_text(starter)


def hf_row(folder: Path) -> dict:
    """A codeparrot/apps row made from a raw problem folder (the Hub's own construction)."""
    meta = json.loads((folder / "metadata.json").read_text())
    starter = folder / "starter_code.py"
    return {"problem_id": int(folder.name), "question": (folder / "question.txt").read_text(),
            "solutions": (folder / "solutions.json").read_text(),
            "input_output": (folder / "input_output.json").read_text(), "difficulty": meta["difficulty"],
            "url": meta["url"], "starter_code": starter.read_text() if starter.is_file() else ""}


def test_apps_sample_field_by_field(shared_data):
    root = shared_data / "apps_sample"
    problems = load_apps_dir(root)
    assert [p["problem_id"] for p in problems] == [f"apps/{i}" for i in SAMPLE_IDS]
    assert problems.skipped == []
    for p in problems:
        folder = root / p["problem_id"].split("/")[-1]
        io = json.loads((folder / "input_output.json").read_text())
        assert p["source"] == "apps"
        assert p["question"] == (folder / "question.txt").read_text()
        assert p["solutions"] == json.loads((folder / "solutions.json").read_text())
        assert p["difficulty"] == json.loads((folder / "metadata.json").read_text())["difficulty"]
        starter = folder / "starter_code.py"
        assert p["starter_code"] == (starter.read_text() if starter.is_file() else "")
        assert p["fn_name"] == io.get("fn_name")
        assert p["tests"] == {"kind": "call" if io.get("fn_name") else "stdio",
                              "inputs": io["inputs"], "outputs": io["outputs"]}
        assert p["compare"] == "apps"  # judged as APPS's harness judges it unless told otherwise
    by_id = {p["problem_id"]: p for p in problems}
    assert "class Solution" in by_id["apps/2404"]["starter_code"]  # LeetCode style stays call-based
    assert by_id["apps/4184"]["tests"]["outputs"][0] == [False]  # Codewars's wrapped outputs are kept as they are


def test_round_trips_through_jsonl_and_arrow(shared_data, tmp_path):
    problems = load_apps_dir(shared_data / "apps_sample")
    write_jsonl(problems, tmp_path / "p.jsonl")
    assert load_jsonl(tmp_path / "p.jsonl") == problems
    table = pa.Table.from_pylist([problem_to_row(p) for p in problems])
    assert [problem_from_row(r) for r in table.to_pylist()] == list(problems)


def test_release_layout_and_splits(shared_data, tmp_path):
    for split, ids in (("train", SAMPLE_IDS[:2]), ("test", SAMPLE_IDS[2:])):
        for i in ids:
            shutil.copytree(shared_data / "apps_sample" / i, tmp_path / "APPS" / split / i)
    both = load_apps_dir(tmp_path / "APPS")
    assert [p["problem_id"] for p in both] == ["apps/test/2287", "apps/test/2404", "apps/test/4184",
                                               "apps/train/0001", "apps/train/0111"]
    assert [p["problem_id"] for p in load_apps_dir(tmp_path / "APPS", "train")] == ["apps/train/0001",
                                                                                     "apps/train/0111"]
    assert [p["problem_id"] for p in load_apps_dir(tmp_path / "APPS" / "test")][0] == "apps/test/2287"
    assert [p["problem_id"] for p in load_apps_dir(tmp_path / "APPS" / "test" / "2404")] == ["apps/test/2404"]
    with pytest.raises(ProblemError, match="unknown APPS split 'dev'"):
        load_apps_dir(tmp_path / "APPS", "dev")


def test_hf_rows_equal_raw_layout(shared_data, tmp_path):
    root = shared_data / "apps_sample"
    rows = [hf_row(root / i) for i in SAMPLE_IDS]
    raw = load_apps_dir(root, "test")  # ids apps/test/<id>, as the rows of test.jsonl get
    write_jsonl(rows, tmp_path / "test.jsonl")
    assert load_apps_rows(tmp_path / "test.jsonl") == raw
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000-of-00001.parquet")
    assert load_apps_rows(tmp_path / "test-00000-of-00001.parquet") == raw
    assert load_apps_rows(iter(rows), "test") == raw  # e.g. a datasets.Dataset


def test_problems_without_usable_tests_are_skipped_and_reported(tmp_path):
    write_problem(tmp_path / "0000", io={"inputs": ["1\n"], "outputs": ["2\n"]})
    write_problem(tmp_path / "0001")  # no input_output.json
    write_problem(tmp_path / "0002", io="")  # empty file
    write_problem(tmp_path / "0003", io="{not json")
    write_problem(tmp_path / "0004", io={"inputs": [], "outputs": []})
    write_problem(tmp_path / "0005", io={"inputs": ["1"], "outputs": ["1", "2"]})
    write_problem(tmp_path / "0006", io={"fn_name": "f", "inputs": [3], "outputs": [3]})  # input not an arg list
    problems = load_apps_dir(tmp_path)
    assert [p["problem_id"] for p in problems] == ["apps/0000"]
    assert [s.problem_id for s in problems.skipped] == [f"apps/000{i}" for i in range(1, 7)]
    reasons = [s.reason for s in problems.skipped]
    assert "no tests" in reasons[0] and "bad JSON" in reasons[2] and "no test cases" in reasons[3]
    assert "2 outputs" in reasons[4] and "not an argument list" in reasons[5]
    with pytest.raises(ProblemError, match="0001.*no tests"):
        load_apps_dir(tmp_path, strict=True)


def test_stdio_lists_of_lines_are_joined_as_apps_does(tmp_path):
    write_problem(tmp_path / "0007", io={"inputs": [["1 2", "3"]], "outputs": [["3", "3"]]})
    (p,) = load_apps_dir(tmp_path)
    assert p["tests"] == {"kind": "stdio", "inputs": ["1 2\n3"], "outputs": ["3\n3"]}


@pytest.mark.parametrize("break_it, message", [
    (lambda f: (f / "solutions.json").write_text("[oops"), r"solutions.json: bad JSON .*apps/0009"),
    (lambda f: (f / "question.txt").write_bytes(b"caf\xe9\n"), r"question.txt: not UTF-8 .*apps/0009"),
    (lambda f: (f / "question.txt").unlink(), r"0009: missing question.txt"),
    (lambda f: (f / "metadata.json").write_text('{"difficulty": 3}'), r"0009.*difficulty must be a string"),
    (lambda f: (f / "metadata.json").write_text('{"difficulty": "easy"}'), r"0009.*'easy' is not one of"),
    (lambda f: (f / "solutions.json").write_text('[1, 2]'), r"0009.*solutions must be a list of strings"),
    (lambda f: (f / "metadata.json").write_text('[]'), r"metadata.json: expected a JSON object"),
])
def test_malformed_raw_problem_names_file_and_problem(tmp_path, break_it, message):
    write_problem(tmp_path / "0009", io={"inputs": ["1\n"], "outputs": ["1\n"]})
    break_it(tmp_path / "0009")
    with pytest.raises(ProblemError, match=message):
        load_apps_dir(tmp_path)


def test_missing_folder():
    with pytest.raises(ProblemError, match="no such APPS folder"):
        load_apps_dir("/nonexistent/apps")


def test_malformed_rows_name_file_line_and_problem(tmp_path):
    good = {"problem_id": 1, "question": "q", "solutions": "[]", "difficulty": "interview", "url": "",
            "starter_code": "", "input_output": json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]})}
    path = tmp_path / "train.jsonl"

    def expect(lines: list[bytes], message: str):
        path.write_bytes(b"\n".join(lines) + b"\n")
        with pytest.raises(ProblemError, match=message):
            load_apps_rows(path)

    ok = json.dumps(good).encode()
    expect([ok, b'{"problem_id": 2, '], r"train.jsonl:2: bad JSON")
    expect([ok, ok.replace(b'"q"', b'"caf\xe9"')], r"train.jsonl:2: not UTF-8")
    expect([json.dumps({**good, "question": 5}).encode()], r"train.jsonl:1 \(apps/train/0001\): question must be")
    expect([json.dumps({**good, "solutions": "[1"}).encode()], r"train.jsonl:1 \(apps/train/0001\): 'solutions'")
    expect([json.dumps({**good, "problem_id": None}).encode()], r"train.jsonl:1: 'problem_id' must be")
    expect([json.dumps({k: v for k, v in good.items() if k != "input_output"}).encode()],
           r"missing column 'input_output'")
    expect([b"[1, 2]"], r"train.jsonl:1: expected a JSON object")
    expect([ok, ok], r"duplicate problem_id 'apps/train/0001'")
    skipped = load_apps_rows([{**good, "input_output": "{bad"}], "train")
    assert skipped == [] and skipped.skipped[0].problem_id == "apps/train/0001"


def test_the_comparison_mode_is_checked_and_survives_every_form(shared_data, tmp_path):
    from coderl_ray.data.problems import validate_problem
    from coderl_ray.data.streaming import read_problems_dataset

    problem = load_apps_dir(shared_data / "apps_sample" / "0001")[0]
    with pytest.raises(ProblemError, match=r"'compare' must be one of strict, apps or null, got 'loose'"):
        validate_problem({**problem, "compare": "loose"}, "p.jsonl:1")
    assert validate_problem({k: v for k, v in problem.items() if k != "compare"})["compare"] is None
    write_jsonl([problem], tmp_path / "p.jsonl")
    row = pa.Table.from_pylist([problem_to_row(problem)]).to_pylist()[0]
    assert row["compare"] == "apps" and problem_from_row(row)["compare"] == "apps"
    (read_row,) = read_problems_dataset(tmp_path / "p.jsonl").take_all()
    assert read_row["compare"] == "apps"


def test_a_folder_of_split_files_loads_each_split(shared_data, tmp_path):
    rows = [hf_row(shared_data / "apps_sample" / i) for i in SAMPLE_IDS]
    write_jsonl(rows[:2], tmp_path / "dump" / "test.jsonl")
    write_jsonl(rows[2:], tmp_path / "dump" / "train.jsonl")
    ids = [p["problem_id"] for p in load_apps_rows(tmp_path / "dump")]
    assert ids == ["apps/test/0001", "apps/test/0111", "apps/train/2287", "apps/train/2404", "apps/train/4184"]
    forced = [p["problem_id"] for p in load_apps_rows(tmp_path / "dump" / "train.jsonl", "test")]
    assert forced == ["apps/test/2287", "apps/test/2404", "apps/test/4184"]
