"""What a stage command prints to a log file: its own lines, not Ray Data's execution plans and progress; and all of
Ray's output again with ``--verbose``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
RAY_DATA_LINES = ("Starting execution of Dataset", "Execution plan of Dataset", "Running Dataset")


def _execute(tmp_path, address: str, *extra: str) -> str:
    problem = {"problem_id": "add", "question": "Add two numbers.",
               "tests": {"kind": "stdio", "inputs": ["1 2\n"], "outputs": ["3\n"]}}
    (tmp_path / "problems.jsonl").write_text(json.dumps(problem) + "\n")
    (tmp_path / "samples.jsonl").write_text("".join(
        json.dumps({"problem_id": "add", "sample_id": f"s{i}", "code": "print(3)"}) + "\n" for i in range(4)))
    # Nothing of the test session's Ray settings but its token (the cluster the command joins asks for it).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "CODERL_VERBOSE")) or k.startswith("RAY_AUTH")}
    env["PYTHONPATH"] = str(ROOT)
    run = subprocess.run([sys.executable, "-m", "coderl_ray.cli", "execute", "--problems",
                          str(tmp_path / "problems.jsonl"), "--samples", str(tmp_path / "samples.jsonl"),
                          "--out", str(tmp_path / "results.jsonl"), "--num-workers", "1", "--address", address, *extra],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout + run.stderr


def test_a_stage_command_prints_its_own_lines_and_ray_data_only_when_verbose(ray_cluster, tmp_path):
    # The command joins the test session's cluster as a driver of its own (what `ray job submit` runs; a Ray of its
    # own would only add its start-up): Ray Data's lines are printed by the driver either way.
    address = ray_cluster.get_runtime_context().gcs_address
    quiet = _execute(tmp_path, address)
    assert "coderl-ray execute: 4 results" in quiet
    assert not [line for line in quiet.splitlines() if any(s in line for s in RAY_DATA_LINES)], quiet
    loud = _execute(tmp_path, address, "--verbose")
    assert "Execution plan of Dataset" in loud and "coderl-ray execute: 4 results" in loud
