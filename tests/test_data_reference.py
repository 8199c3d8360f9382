"""The loaders and the sandbox agree: reference solutions pass the converted hidden tests, and (where the statement
is right) the extracted example tests. The full check over every MBPP program is in docs/benchmarks.md; this test
runs a share of it that takes a few seconds."""

from __future__ import annotations

import pytest

from coderl_ray.commands.convert import reference_samples
from coderl_ray.data.apps import load_apps_dir
from coderl_ray.data.humaneval import load_humaneval
from coderl_ray.data.mbpp import load_mbpp
from coderl_ray.eval.metrics import summarize
from coderl_ray.sandbox import SandboxLimits, execute_many

# Docstrings that contradict their canonical solution (docs/benchmarks.md explains each).
HUMANEVAL_WRONG_EXAMPLES = {"humaneval/47", "humaneval/116", "humaneval/130", "humaneval/148"}


def _run(problems, limits, max_per_problem=1):
    samples = [s for s in reference_samples(problems, max_per_problem)
               if not limits.example_tests or next(p for p in problems if p["problem_id"] == s["problem_id"])
               ["example_tests"]]
    results = execute_many({p["problem_id"]: p for p in problems}, samples, limits, max_workers=2)
    return [r.to_dict() for r in results]


def test_apps_references_pass_hidden_and_example_tests(shared_data):
    problems = load_apps_dir(shared_data / "apps_sample")
    hidden = _run(problems, SandboxLimits(compare="apps", timeout_s=10))
    assert [r["outcome"] for r in hidden] == ["passed"] * 5
    examples = _run(problems, SandboxLimits(compare="apps", timeout_s=10, example_tests=True))
    assert [r["problem_id"] for r in examples] == ["apps/0001", "apps/0111", "apps/2287", "apps/2404"]
    assert all(r["outcome"] == "passed" for r in examples)
    assert summarize(problems, hidden, ks=[1])["overall"]["pass@k"] == {"1": 1.0}


def test_humaneval_references_pass_hidden_and_example_tests():
    problems = load_humaneval()
    hidden = _run(problems, SandboxLimits(timeout_s=10))
    assert [r["problem_id"] for r in hidden if r["outcome"] != "passed"] == []
    examples = _run(problems, SandboxLimits(timeout_s=10, example_tests=True))
    assert len(examples) == 152
    assert {r["problem_id"] for r in examples if r["outcome"] != "passed"} == HUMANEVAL_WRONG_EXAMPLES


@pytest.mark.parametrize("split", ["prompt", "validation"])
def test_mbpp_references_pass(shared_data, split):
    problems = load_mbpp(shared_data / "mbpp" / "mbpp.jsonl", split)
    for limits in (SandboxLimits(timeout_s=10), SandboxLimits(timeout_s=10, example_tests=True)):
        results = _run(problems, limits)
        assert len(results) == len(problems)
        assert [r["problem_id"] for r in results if r["outcome"] != "passed"] == []
