"""The report files, and the `convert` and `evaluate` commands end to end (through the console entry point)."""

from __future__ import annotations

import json

import pytest

from coderl_ray.cli import main
from coderl_ray.data.jsonl import load_jsonl
from coderl_ray.data.problems import write_jsonl
from coderl_ray.eval.metrics import summarize
from coderl_ray.eval.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_write_report(tmp_path):
    problems = [{"problem_id": "p1", "source": "apps", "difficulty": "interview"},
                {"problem_id": "p2", "source": "apps", "difficulty": "competition"}]
    results = [{"problem_id": "p1", "sample_id": f"s{i}", "outcome": "passed" if i < 3 else "failed",
                "passed_tests": 1 if i < 3 else 0, "total_tests": 1} for i in range(10)]
    results += [{"problem_id": "p2", "sample_id": "s0", "outcome": "infra_error"}]
    metrics = summarize(problems, results, ks=[1, 5])
    paths = write_report(metrics, tmp_path / "report")
    assert json.loads(paths["metrics"].read_text()) == metrics
    for name in ("pass_at_k", "outcomes"):
        assert paths[name].read_bytes()[:8] == PNG_MAGIC and paths[name].stat().st_size > 5000
    md = paths["report"].read_text()
    # p1: pass@1 = 3/10; p2 has only an infra error, so it is unscored and named in a warning.
    assert "| overall | 1/2 | 10 | 30.0% |" in md
    assert "1 problem(s) have no scored sample" in md and "p2" in md
    assert "![pass@k per difficulty](pass_at_k.png)" in md


@pytest.fixture(scope="module")
def converted(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    assert main(["convert", "apps", str(shared_data / "apps_sample"), "--out", str(out / "apps.jsonl"),
                 "--reference-samples", str(out / "apps_ref.jsonl"), "--max-solutions", "2"]) == 0
    return out


def test_convert_every_source(converted, shared_data, tmp_path, capsys):
    apps = load_jsonl(converted / "apps.jsonl")
    assert [p["problem_id"] for p in apps] == ["apps/0001", "apps/0111", "apps/2287", "apps/2404", "apps/4184"]
    refs = [json.loads(line) for line in (converted / "apps_ref.jsonl").read_text().splitlines()]
    assert len(refs) == 2 * 5 - 1  # 0111 has a single solution
    assert refs[0] == {"problem_id": "apps/0001", "sample_id": "apps/0001#ref0", "code": apps[0]["solutions"][0]}
    assert main(["convert", "mbpp", str(shared_data / "mbpp" / "mbpp.jsonl"), "--split", "prompt",
                 "--out", str(tmp_path / "mbpp.jsonl")]) == 0
    assert len(load_jsonl(tmp_path / "mbpp.jsonl")) == 10
    assert main(["convert", "humaneval", "--out", str(tmp_path / "he.jsonl")]) == 0
    assert len(load_jsonl(tmp_path / "he.jsonl")) == 164
    assert main(["convert", "jsonl", str(tmp_path / "he.jsonl"), "--out", str(tmp_path / "he2.jsonl")]) == 0
    assert (tmp_path / "he2.jsonl").read_bytes() == (tmp_path / "he.jsonl").read_bytes()
    out = capsys.readouterr().out
    assert "example tests for 10/10" in out and "wrote 164 problems" in out


def test_convert_reports_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"problem_id": "x", "question": "q", "tests": {"kind": "sql"}}\n')
    assert main(["convert", "jsonl", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1 (x) tests: 'kind' must be one of" in err and "Traceback" not in err
    assert main(["convert", "mbpp", "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "needs SRC" in capsys.readouterr().err


def test_evaluate_command(converted, tmp_path, capsys):
    apps = load_jsonl(converted / "apps.jsonl")
    results = [{"problem_id": p["problem_id"], "sample_id": f"{p['problem_id']}#{i}", "outcome": "passed",
                "passed_tests": 1, "total_tests": 1} for p in apps for i in range(2)]
    write_jsonl(results, tmp_path / "results.jsonl")
    args = ["evaluate", "--problems", str(converted / "apps.jsonl"), "--results", str(tmp_path / "results.jsonl"),
            "--out", str(tmp_path / "report"), "--k", "1,2"]
    assert main(args + ["--require-all-pass"]) == 0
    assert "pass@1 100.00%" in capsys.readouterr().out
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["overall"]["pass@k"] == {"1": 1.0,
                                                                                                 "2": 1.0}
    results[3]["outcome"] = "runtime_error"
    write_jsonl(results, tmp_path / "results.jsonl")
    assert main(args + ["--require-all-pass"]) == 1
    assert "apps/0111: 1/2 passed {'runtime_error': 1}" in capsys.readouterr().err
    (tmp_path / "results.jsonl").write_text(json.dumps(results[0]) + "\n" + '{"problem_id": "apps/0001"}\n')
    assert main(args) == 2
    assert "results.jsonl:2: missing 'sample_id'" in capsys.readouterr().err
