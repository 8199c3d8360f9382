"""`ray start --head` + `ray job submit jobs/pipeline.py`: the way users run on a cluster, on one machine."""

import json
import os
import signal
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


def _session_pids(sid: int) -> list[int]:
    """Every process of the session (the head's daemons) and their descendants (job drivers, workers)."""
    rows = [tuple(map(int, line.split())) for line in
            subprocess.run(["ps", "-eo", "pid=,ppid=,sid="], capture_output=True, text=True).stdout.splitlines()]
    keep = {pid for pid, _, s in rows if s == sid}
    grew = True
    while grew:
        new = {pid for pid, ppid, _ in rows if ppid in keep and pid not in keep}
        keep |= new
        grew = bool(new)
    return sorted(keep)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


@pytest.fixture
def head_node(tmp_path):
    """A head started with `ray start --head --num-cpus 2` in its own session, stopped by ending that session only
    (`ray stop` would kill every Ray process on the machine, other clusters included)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"  # job entrypoints run `python` from the node's PATH
    if subprocess.run([str(BIN / "ray"), "get-auth-token", "--help"], capture_output=True).returncode == 0:
        # Ray enables token auth when ~/.ray/auth_token exists; clients with an explicit address then need this.
        env["RAY_AUTH_MODE"] = "token"
        subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, capture_output=True)
    port, dash = _free_port(), _free_port()
    temp_dir = Path("/tmp") / f"rayjob-{os.getpid()}"  # short: Ray's socket paths must stay under 108 bytes
    start = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2", '--resources={"sandbox": 2}',
         "--include-dashboard=true", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
         f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--dashboard-agent-listen-port={_free_port()}"],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = start.communicate(timeout=180)
    assert start.returncode == 0, out
    try:
        yield {**env, "RAY_ADDRESS": f"http://127.0.0.1:{dash}"}
    finally:
        pids = _session_pids(start.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.5)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_pipeline_job_runs_on_a_started_cluster(head_node, tmp_path):
    out = tmp_path / "job-out"
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--working-dir", str(ROOT), "--runtime-env",
         str(ROOT / "cluster" / "runtime_env.yaml"), "--", "python", "jobs/pipeline.py", "--config",
         "tests/configs/micro.yaml", f"output_dir={out}"],
        env=head_node, capture_output=True, text=True, timeout=1500)
    log = submit.stdout[-4000:] + submit.stderr[-4000:]
    assert submit.returncode == 0, log
    assert "succeeded" in log.lower(), log
    state = json.loads((out / "state.json").read_text())["stages"]
    assert "eval/round_1" in state and "round_1/rl" in state
    assert (out / "report" / "summary.md").is_file()
    assert (out / "models" / "actor_round_1" / "config.json").is_file()
