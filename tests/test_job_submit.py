"""The README's cluster commands, verbatim, on a machine where Ray already ran.

A user's sequence: a local run (``make demo``, or any plain ``ray.init()``: a notebook), then the README's block:
``export RAY_AUTH_MODE=token``, ``ray get-auth-token --generate > /dev/null``, ``ray start --head``, ``ray job submit
--working-dir . --runtime-env cluster/runtime_env.yaml -- python jobs/pipeline.py ...``, in a shell where nothing
Ray-related is set. With Ray 2.60 a plain local ``ray.init()`` leaves ``~/.ray/auth_token`` behind, after which a
bare ``ray start --head`` turns token authentication on and a bare ``ray job submit`` (which sends the token only
when ``RAY_AUTH_MODE=token`` is set) is rejected; the README's first two lines make head and client agree whether or
not a token exists (docs/cluster.md). coderl_ray's own local runs leave no token
(``coderl_ray.ray_runtime.use_run_token``).

The tests read the block from README.md, so that what they run is what the README prints. Every head here keeps
Ray's temporary files (and the record of the running head) under a ``RAY_TMPDIR`` of its own, so that no other Ray
user of the machine finds it, and is stopped by its process session, never with ``ray stop`` (which would end every
Ray process on the machine).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
BIN = Path(sys.executable).parent
ADD = {"problem_id": "add", "question": "Add two numbers.",
       "tests": {"kind": "stdio", "inputs": ["1 2\n"], "outputs": ["3\n"]}}


def _shell(home: Path) -> dict[str, str]:
    """A fresh shell of a user whose home is ``home``, with the virtual environment activated (the README's `ray`
    and the jobs' `python` are the venv's) and nothing Ray- or coderl-specific set (PYTHONPATH names this checkout,
    which an editable install of another checkout would otherwise shadow)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "CODERL_"))}
    env.update(HOME=str(home), PATH=f"{BIN}:{env.get('PATH', '')}", PYTHONPATH=str(ROOT))
    return env


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


def _stop_session(sid: int) -> None:
    """End a head started in its own session (`ray stop` would kill every Ray process on the machine)."""
    pids = _session_pids(sid)
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


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False


def _local_run(home: Path, tmp: Path) -> None:
    """A coderl-ray command that starts Ray in-process, as `make demo` does (a small `execute`)."""
    (tmp / "problems.jsonl").write_text(json.dumps(ADD) + "\n")
    (tmp / "samples.jsonl").write_text(json.dumps({"problem_id": "add", "sample_id": "s0", "code": "print(3)"}) + "\n")
    run = subprocess.run([str(BIN / "coderl-ray"), "execute", "--problems", str(tmp / "problems.jsonl"), "--samples",
                          str(tmp / "samples.jsonl"), "--out", str(tmp / "results.jsonl"), "--num-workers", "1",
                          "--address", "local"], env=_shell(home), cwd=tmp, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert json.loads((tmp / "results.jsonl").read_text())["outcome"] == "passed"


def _plain_ray_init(home: Path) -> None:
    """What a notebook or script does on the machine: a plain local ``ray.init()``."""
    script = "import ray; ray.init(address='local', num_cpus=1, include_dashboard=False); ray.shutdown()"
    init = subprocess.run([sys.executable, "-c", script], env=_shell(home), cwd=home,
                          capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stderr[-3000:]


def readme_cluster_block() -> str:
    """The README's bash block that starts a head and submits the pipeline, as printed."""
    blocks = [b for b in re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
              if "ray start --head" in b]
    assert len(blocks) == 1, f"README.md should have one bash block with `ray start --head`, found {len(blocks)}"
    assert re.search(r"^ray job submit .* -- python jobs/pipeline\.py .*$", blocks[0], re.M), blocks[0]
    return blocks[0]


def _with_job(block: str, entrypoint: str) -> str:
    """The block with the job's entry point (what follows `--` on the `ray job submit` line) replaced."""
    return re.sub(r"^(ray job submit .* -- ).*$", lambda m: m.group(1) + entrypoint, block, count=1, flags=re.M)


def _private_ray_tmpdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))  # Ray's socket paths must stay short


def _run_block(block: str, env: dict[str, str], timeout: int) -> tuple[int, str]:
    """Run the block in bash (stopping at the first failing command) in a process session of its own, then end
    every process of that session: the head's daemons, which `ray start` leaves running."""
    run = subprocess.Popen(["bash", "-e", "-c", block], env=env, cwd=ROOT, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        run.kill()
        out, _ = run.communicate()
    finally:
        _stop_session(run.pid)
    return run.returncode, out


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.timeout(900)
def test_a_coderl_run_leaves_no_token_and_the_readme_cluster_block_works_on_free_ports(tmp_path):
    """A local coderl run leaves no Ray token behind; then the README's block, with a one-line job on free ports (so
    that it runs beside other Ray instances), works from that home with no token at all. (From a home where a plain
    `ray.init()` left a token: the README's commands verbatim, on Ray's default ports, in the own_process test below.)"""
    home = tmp_path / "home"
    home.mkdir()
    _local_run(home, tmp_path)  # `make demo`: coderl_ray's local runs use a token of their own (use_run_token)
    assert not (home / ".ray").exists()
    gcs, dashboard, agent, client = _free_ports(4)
    block = readme_cluster_block().replace(
        "ray start --head", f"ray start --head --num-cpus=1 --port={gcs} --dashboard-port={dashboard} "
                            f"--dashboard-agent-listen-port={agent} --ray-client-server-port={client}", 1)
    block = _with_job(block, "python -c 'import ray; ray.init(); "
                             "print(\"job sees CPUs:\", ray.cluster_resources()[\"CPU\"])'")
    temp = _private_ray_tmpdir()
    try:
        env = {**_shell(home), "RAY_TMPDIR": str(temp), "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}"}
        code, out = _run_block(block, env, timeout=800)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert code == 0 and "job sees CPUs: 1.0" in out and "succeeded" in out, out[-6000:]
    assert "AuthenticationError" not in out, out[-6000:]
    assert (home / ".ray" / "auth_token").is_file()  # the README's second line made one when there was none


def _with_dead_head_recorded(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    """Run ``script`` where Ray's temp dir records a head that no longer runs (`ray start` writes
    <ray temp dir>/ray_current_cluster and only `ray stop` removes it)."""
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths must stay short
    try:
        (temp / "ray").mkdir()
        (temp / "ray" / "ray_current_cluster").write_text("192.0.2.123:6379")  # TEST-NET: nothing answers
        env = {**_shell(tmp_path), "RAY_TMPDIR": str(temp)}
        return subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_a_plain_ray_init_joins_a_dead_recorded_head_and_fails(tmp_path):
    """Ray's behaviour that once made every local run of ours fail in CI (docs/cluster.md)."""
    run = _with_dead_head_recorded(tmp_path, "import ray; ray.init(num_cpus=1)")
    assert run.returncode != 0
    assert "When connecting to an existing cluster, num_cpus and num_gpus must not be provided" in run.stderr


@pytest.mark.parametrize("address", ["local", ""])
def test_a_local_run_starts_its_own_ray_when_a_dead_head_is_still_recorded(tmp_path, address):
    run = _with_dead_head_recorded(tmp_path, "import ray; from coderl_ray.ray_runtime import init_ray; "
                                             f"init_ray({address!r}, num_cpus=1); "
                                             "print('cpus', ray.cluster_resources()['CPU'])")
    assert run.returncode == 0 and "cpus 1.0" in run.stdout, run.stdout[-2000:] + run.stderr[-3000:]

# Every Ray started without an explicit agent port (a plain `ray start`, and any `ray.init()`, which has no setting
# for it) binds its dashboard agent to this one.
AGENT_PORT = 52365


@pytest.mark.own_process
@pytest.mark.timeout(1800)  # a local run, a head, and the micro pipeline's SFT as a job: minutes on a loaded box
def test_readme_cluster_commands_work_verbatim_after_a_local_run(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    _plain_ray_init(home)  # e.g. a notebook
    # Ray's behaviour that breaks a bare `ray start --head` + `ray job submit`: the plain init left a token.
    assert (home / ".ray" / "auth_token").is_file()
    _local_run(home, tmp_path)  # `make demo`
    if _port_taken(6379) or _port_taken(8265):
        pytest.skip("the README's `ray start --head` uses ports 6379 and 8265, and another process holds one here")
    deadline = time.time() + 30  # the local run's Ray has exited; its agent may take a moment to let go
    while _port_taken(AGENT_PORT) and time.time() < deadline:
        time.sleep(1)
    if _port_taken(AGENT_PORT):
        pytest.skip(f"another Ray on this machine (this pytest process's own, if other Ray tests ran in it) holds the "
                    f"dashboard agent's port {AGENT_PORT}: the head's agent could not start and `ray job submit` "
                    "would fail with 'No available agent' (docs/cluster.md). `make test` runs this test in a pytest "
                    "process of its own")

    out_dir = tmp_path / "job-out"
    # The README's job on the micro config, up to SFT and its evaluation: the job's plumbing (working dir, runtime
    # env, a pipeline on the head's cluster, its log) is what is under test. The rounds and critic sampling run as
    # a job in tests/test_cluster_local.py (online, on a 4-node cluster) and in-process in tests/test_pipeline.py.
    block = _with_job(readme_cluster_block(), "python jobs/pipeline.py --config tests/configs/micro.yaml "
                                              f"output_dir={out_dir} rl.rounds=0 cs.enabled=false")
    temp = _private_ray_tmpdir()
    try:
        code, out = _run_block(block, {**_shell(home), "RAY_TMPDIR": str(temp)}, timeout=1500)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    log = out[-10000:]
    assert code == 0 and "succeeded" in out.lower(), log
    state = json.loads((out_dir / "state.json").read_text())["stages"]
    assert "sft" in state and "eval/sft" in state
    assert (out_dir / "report" / "summary.md").is_file()
    assert (out_dir / "models" / "actor_sft" / "config.json").is_file()
    # What `ray job logs` shows: the pipeline's own lines, not Ray Data's plans and progress.
    assert "==> eval/sft" in out and "Execution plan of Dataset" not in out, log
