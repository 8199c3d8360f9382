"""Results that are no verdict on the program (``infra_error``: the sandbox failed, or the machine starved the
program, after retries) are counted in every report: ``coderl-ray execute``'s summary, the evaluation metrics and
report, and the pipeline's closing summary. None of them scores one as a failure."""

from __future__ import annotations

import collections

from coderl_ray.cli import main
from coderl_ray.commands.execute import outcome_summary
from coderl_ray.data.problems import write_jsonl
from coderl_ray.eval.metrics import summarize
from coderl_ray.eval.report import render_markdown
from coderl_ray.summary import format_table

PROBLEMS = [
    {"problem_id": "add", "question": "add", "tests": {"kind": "stdio", "inputs": ["1 2\n"], "outputs": ["3\n"]},
     "example_tests": {"kind": "stdio", "inputs": ["2 2\n"], "outputs": ["4\n"]}},
    {"problem_id": "sq", "question": "square", "fn_name": "sq",
     "tests": {"kind": "call", "inputs": [[3]], "outputs": [9]}},
]


def test_execute_summary_always_counts_infra_errors(tmp_path, capsys):
    # "sq" has no example tests: run on its example tests, its sample gets no verdict - an infra_error.
    write_jsonl(PROBLEMS, tmp_path / "p.jsonl")
    write_jsonl([{"problem_id": "add", "sample_id": "a", "code": "a, b = map(int, input().split())\nprint(a + b)"},
                 {"problem_id": "sq", "sample_id": "s", "code": "def sq(x):\n    return x * x"}],
                tmp_path / "s.jsonl")
    argv = ["execute", "--problems", str(tmp_path / "p.jsonl"), "--samples", str(tmp_path / "s.jsonl"),
            "--out", str(tmp_path / "r.jsonl"), "--example-tests", "--no-ray"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "1 passed, 1 infra_error - not verdicts on the programs" in err
    assert outcome_summary(collections.Counter(passed=3)) == "3 passed, 0 infra_error"


def test_evaluation_counts_infra_errors_on_hidden_and_example_tests():
    results = [{"problem_id": "add", "sample_id": "a", "outcome": "passed", "passed_tests": 1, "total_tests": 1,
                "example_outcome": "infra_error"},
               {"problem_id": "add", "sample_id": "b", "outcome": "infra_error", "passed_tests": 0, "total_tests": 0,
                "example_outcome": "passed"},
               {"problem_id": "sq", "sample_id": "c", "outcome": "failed", "passed_tests": 0, "total_tests": 1,
                "example_outcome": "failed"}]
    metrics = summarize(PROBLEMS, results, ks=[1], submissions=[1])
    overall = metrics["overall"]
    # Scored: a (passed) and c (failed); b is left out, not counted as a failure: pass@1 = (1/1 + 0/1) / 2.
    assert overall["infra_errors"] == 1 and overall["samples"] == 2 and overall["pass@k"]["1"] == 0.5
    # a's example run was an infra error (a is kept by the filter: 1@1 = (1 + 0) / 2); b's example run is not
    # counted, b having no hidden-test verdict.
    assert overall["example_infra_errors"] == 1 and overall["n@k"]["1@1"] == 0.5
    report = render_markdown(metrics)
    assert "1 infrastructure errors (excluded from every metric)" in report
    assert "1 runs on the example tests were infrastructure errors" in report


def test_pipeline_summary_counts_infra_errors_per_stage():
    state = {"stages": {
        "round_1/rollout": {"wall_s": 5.0, "info": {"programs": 40, "outcomes": {"passed": 10, "failed": 28,
                                                                                  "infra_error": 2}}},
        "eval/round_1": {"wall_s": 3.0, "info": {"all": {"pass@1": 0.25, "infra_errors": 1},
                                                 "outcomes": {"passed": 5, "failed": 14}}},
    }}
    table = format_table(state)
    assert "infrastructure errors" in table
    section = table.split("infrastructure errors")[1].split("wall time per stage")[0]
    lines = {line.split()[0]: line.split()[1:] for line in section.splitlines()[1:] if line.strip()}
    assert lines == {"round_1/rollout": ["2", "of", "40"],
                     "eval/round_1": ["1", "of", "20"]}  # 19 scored + 1 infra error


def test_critic_sampling_report_counts_hidden_test_infra_errors():
    from coderl_ray.inference.metrics import diagnostics
    from coderl_ray.inference.report import render_markdown

    def program(sid, outcome, cs_pass=0, origin="sample"):
        return {"problem_id": "add", "sample_id": sid, "code": f"print({sid!r})", "origin": origin,
                "cs_pass": cs_pass, "outcome": outcome, "example_outcome": "passed"}

    programs = [program("a", "passed"), program("b", "infra_error"), program("c", "infra_error", 1, "refine")]
    diag = diagnostics(PROBLEMS[:1], programs)
    assert diag["by_origin"]["sample"]["hidden_infra_errors"] == 1
    assert diag["by_origin"]["refine"]["hidden_infra_errors"] == 1
    report = render_markdown({"budget": 3, "submissions": [1], "problems": 1, "strategies": {},
                              "diagnostics": diag}, "CS")
    assert "2 program(s) got an infrastructure error on the hidden tests" in report
    sample_row = next(line for line in report.splitlines() if line.startswith("| sample |"))
    assert sample_row.rstrip(" |").endswith("| 1")
