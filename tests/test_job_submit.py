"""`ray start --head` + `ray job submit jobs/pipeline.py`: the way users run on a cluster, on one machine."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args, env, timeout=600, check=True):
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          check=check)


@pytest.fixture
def head_node(tmp_path):
    """A separate Ray cluster (own ports and temp dir), so it never meets the in-process test cluster."""
    port, dash = _free_port(), _free_port()
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    temp_dir = Path("/tmp") / f"ray-job-test-{os.getpid()}"
    _ray("start", "--head", f"--port={port}", "--num-cpus=2", '--resources={"sandbox": 2}', "--include-dashboard=true",
         f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
         env=env)
    try:
        yield {**env, "RAY_ADDRESS": f"http://127.0.0.1:{dash}"}
    finally:
        _ray("stop", "--force", env=env, check=False)


def test_pipeline_job_runs_on_a_started_cluster(head_node, tmp_path):
    out = tmp_path / "job-out"
    submit = _ray("job", "submit", "--working-dir", str(ROOT), "--runtime-env", str(ROOT / "cluster" /
                  "runtime_env.yaml"), "--", "python", "jobs/pipeline.py", "--config", "tests/configs/micro.yaml",
                  f"output_dir={out}", env=head_node, timeout=900, check=False)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "SUCCEEDED" in submit.stdout + submit.stderr
    state = json.loads((out / "state.json").read_text())["stages"]
    assert "eval/round_1" in state and "round_1/rl" in state
    assert (out / "report" / "summary.md").is_file()
    assert (out / "models" / "actor_round_1" / "config.json").is_file()
