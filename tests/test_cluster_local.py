"""The cluster layout and its failures on real multi-node Ray: a head with no CPUs, two sandbox nodes and a trainer
node started on this machine by ``cluster/local-cluster.sh``.

- a stage job submitted with ``ray job submit`` runs its executors on sandbox nodes only;
- a sandbox node whose raylet is killed mid-stream costs no result and duplicates none in the replay buffer;
- a Ray Train worker killed mid-run resumes from its last checkpoint, and a training stage whose driver is killed
  resumes from its last checkpoint when the same command is rerun.

Processes are found and killed by the session of the node they belong to (each node of the script runs in a
session of its own), never by name: other Ray clusters may run on the same machine.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BIN = Path(sys.executable).parent
SCRIPT = ROOT / "cluster" / "local-cluster.sh"
ADD = {"problem_id": "add", "question": "Add two numbers.", "fn_name": None,
       "tests": {"kind": "stdio", "inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]}}
SQUARE = {"problem_id": "sq", "question": "Square a number.", "fn_name": "sq",
          "tests": {"kind": "call", "inputs": [[3], [4]], "outputs": [9, 16]}}
GOOD = {"add": "a, b = map(int, input().split())\nprint(a + b)", "sq": "def sq(x):\n    return x * x"}
BAD = {"add": "print(0)", "sq": "def sq(x):\n    return x"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


class LocalCluster:
    """Handle on a cluster started by local-cluster.sh: its environment for clients, its nodes' processes."""

    def __init__(self, state_dir: Path, env: dict[str, str]):
        self.dir, self.env = state_dir, env

    def sessions(self) -> dict[int, str]:
        nodes = self.dir / "nodes"
        return {int(f.read_text()): f.name for f in nodes.iterdir()} if nodes.is_dir() else {}

    def processes(self, title_prefix: str) -> list[tuple[int, str]]:
        """(pid, node name) of this cluster's processes whose title starts with ``title_prefix``."""
        sessions, out = self.sessions(), []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _session(int(entry.name)) in sessions:
                if _title(int(entry.name)).startswith(title_prefix):
                    out.append((int(entry.name), sessions[_session(int(entry.name))]))
        return out

    def raylet(self, node: str) -> int:
        pids = [pid for pid, name in self.processes("/") if name == node and Path(_title(pid)).name == "raylet"]
        assert len(pids) == 1, f"expected one raylet for node {node}, found {pids}"
        return pids[0]

    def state(self, kind: str, *filters: str) -> list[dict]:
        """``ray list <kind>`` through the dashboard (no driver needed in the test process)."""
        args = [str(BIN / "ray"), "list", kind, "--address", self.env["RAY_API_SERVER_ADDRESS"], "--detail",
                "--format", "json", "--limit", "10000", *[a for f in filters for a in ("-f", f)]]
        out = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=120, check=True)
        return json.loads(out.stdout)

    def python(self, *args: str, **kw) -> subprocess.Popen:
        """A driver process connected to this cluster, run from the repository root."""
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def cluster():
    # Short, fresh state folder: Ray's Unix sockets live under it and their paths must stay below 108 bytes.
    state_dir = Path(tempfile.mkdtemp(prefix="clc-", dir="/tmp"))
    head, dashboard = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(CLUSTER_DIR=str(state_dir), HEAD_PORT=str(head), DASHBOARD_PORT=str(dashboard), SANDBOX_NODES="2",
               SANDBOX_CPUS="1", TRAINER_CPUS="2", RAY=str(BIN / "ray"))
    started = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        client = {**env, "RAY_ADDRESS": f"127.0.0.1:{head}", "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}",
                  "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(state_dir / "auth_token"),
                  "PYTHONUNBUFFERED": "1",
                  # Ray Data reads Parquet footers with 32 actors per read by default; on 2 cores starting them
                  # costs ~40 s per read of a replay-buffer round (measured), so tests use one.
                  "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1"}
        yield LocalCluster(state_dir, client)
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=300)
        subprocess.run(["rm", "-rf", str(state_dir)], check=False)


def _lines(proc: subprocess.Popen) -> queue.Queue:
    """The process's output lines, read by a thread so the test can wait for one with a deadline."""
    q: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _wait_for_line(q: queue.Queue, marker: str, timeout: float, seen: list[str]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            return False
        seen.append(line)
        if line.startswith(marker):
            return True
    return False


def _drain(q: queue.Queue, seen: list[str]) -> str:
    while True:
        line = q.get()
        if line is None:
            return "".join(seen)
        seen.append(line)


def _stage_summary(log: str) -> dict:
    """The JSON line a stage command prints last (progress bars may share its line)."""
    start = log.rindex('{"stage": ')
    return json.loads(log[start:].splitlines()[0])


def _wait(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- layout ----------------------------------------------------------------------------------------------------


def test_the_head_takes_no_work_and_only_sandbox_nodes_advertise_the_resource(cluster):
    from coderl_ray.config import SandboxConfig

    resource = SandboxConfig().resource
    nodes = cluster.state("nodes", "state=ALIVE")
    heads = [n for n in nodes if n["is_head_node"]]
    workers = [n["resources_total"] for n in nodes if not n["is_head_node"]]
    assert len(heads) == 1 and heads[0]["resources_total"].get("CPU", 0) == 0
    assert sorted(w.get(resource, 0) for w in workers) == [0, 0, 1, 1]
    # One execution slot per CPU of a sandbox node; the trainer and inference nodes have none, and advertise the
    # placement resources that train.resource / rollout.resource name instead.
    assert all(w[resource] == w["CPU"] for w in workers if resource in w)
    assert sorted((w.get("trainer", 0), w.get("inference", 0)) for w in workers) == [(0, 0), (0, 0), (0, 1), (1, 0)]


def test_a_cluster_of_several_nodes_without_the_execution_resource_is_a_clear_error(cluster):
    driver = cluster.python(
        "-c", "import ray; from coderl_ray.ray_runtime import init_ray; init_ray(); "
              "from coderl_ray.config import SandboxConfig; from coderl_ray.execution import execute_samples; "
              "ds = ray.data.from_items([{'problem_id': 'add', 'sample_id': 's0', 'code': 'print(3)'}]); "
              f"execute_samples(ds, [{ADD!r}], SandboxConfig(resource='gpu-sandbox'))")
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode != 0 and "no node advertises the 'gpu-sandbox' resource; start sandbox nodes" in out, out


def test_an_execute_job_submitted_to_the_cluster_runs_only_on_sandbox_nodes(cluster, tmp_path):
    from coderl_ray.data.problems import write_jsonl

    write_jsonl([ADD, SQUARE], tmp_path / "problems.jsonl")
    samples = [{"problem_id": pid, "sample_id": f"{pid}-{i}", "code": (GOOD if i % 2 else BAD)[pid]}
               for i in range(12) for pid in ("add", "sq")]
    write_jsonl(samples, tmp_path / "samples.jsonl")
    submission = f"coderl-execute-{os.getpid()}"
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--submission-id", submission, "--working-dir", str(ROOT),
         "--runtime-env", str(ROOT / "cluster" / "runtime_env.yaml"), "--", "python", "jobs/execute.py",
         "--problems", str(tmp_path / "problems.jsonl"), "--samples", str(tmp_path / "samples.jsonl"),
         "--out", str(tmp_path / "results.jsonl")],
        env=cluster.env, capture_output=True, text=True, timeout=900)
    assert submit.returncode == 0 and f"Job '{submission}' succeeded" in submit.stdout + submit.stderr, \
        submit.stdout[-3000:] + submit.stderr[-3000:]

    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in results] == [s["sample_id"] for s in samples]
    assert [r["outcome"] for r in results] == ["passed" if i % 2 else "failed" for i in range(12) for _ in (0, 1)]

    (job,) = [j for j in cluster.state("jobs") if j.get("submission_id") == submission]
    executors = [a for a in cluster.state("actors", f"job_id={job['job_id']}") if "ExecuteBatch" in a["class_name"]]
    assert executors, "the job started no executor"
    sandbox_nodes = {n["node_id"] for n in cluster.state("nodes") if "sandbox" in n["resources_total"]}
    assert {a["node_id"] for a in executors} <= sandbox_nodes


def test_an_online_pipeline_job_puts_trainers_generators_and_sandboxes_on_their_own_nodes(cluster, tmp_path):
    """The online loop, where every role works at once, submitted as a job: the trainers run on the trainer node,
    the generators and critic scorers on the inference node, the sandbox executors on the sandbox nodes."""
    submission = f"coderl-online-{os.getpid()}"
    out = tmp_path / "run"
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--submission-id", submission, "--working-dir", str(ROOT),
         "--runtime-env", str(ROOT / "cluster" / "runtime_env.yaml"), "--", "python", "jobs/pipeline.py",
         "--config", "tests/configs/micro.yaml", f"output_dir={out}", "data.reference_problems=16", "rl.loop=online",
         "cs.enabled=false", "train.resource=trainer", "rollout.resource=inference"],
        env=cluster.env, capture_output=True, text=True, timeout=1500)
    assert submit.returncode == 0 and f"Job '{submission}' succeeded" in submit.stdout + submit.stderr, \
        submit.stdout[-3000:] + submit.stderr[-3000:]
    assert json.loads((out / "state.json").read_text())["stages"]["online"]["info"]["programs"] == 24 * 3

    (job,) = [j for j in cluster.state("jobs") if j.get("submission_id") == submission]
    nodes = {n["node_id"]: n["resources_total"] for n in cluster.state("nodes")}
    placed: dict[str, set[str]] = {}
    for actor in cluster.state("actors", f"job_id={job['job_id']}"):
        kind = next((k for k in ("GeneratorRole", "ScorerRole", "ExecutorRole", "RayTrainWorker")
                     if k in actor["class_name"]), None)
        if kind:
            placed.setdefault(kind, set()).add(next(r for r in ("trainer", "inference", "sandbox")
                                                    if r in nodes[actor["node_id"]]))
    assert placed == {"RayTrainWorker": {"trainer"}, "GeneratorRole": {"inference"}, "ScorerRole": {"inference"},
                      "ExecutorRole": {"sandbox"}}, placed


# --- training: a killed worker, a killed driver ----------------------------------------------------------------


def _registered(storage: Path, run: str) -> list[tuple[int, str]]:
    """(step, checkpoint folder) of the checkpoints Ray Train has registered for a run (its latest two)."""
    snapshot = storage / run / "checkpoint_manager_snapshot.json"
    try:
        results = json.loads(snapshot.read_text())["checkpoint_results"]
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return []
    return [(int(r["metrics"]["step"]), r["checkpoint_dir_name"]) for r in results]


def _on_disk(storage: Path, run: str) -> set[str]:
    return {p.name for p in (storage / run).glob("checkpoint_*")}


def _first_checkpoint_after(storage: Path, run: str, before: set[str], timeout: float):
    """After a failure: (the checkpoint registered before it, the first one registered after it)."""
    def new_one():
        registered = _registered(storage, run)
        return registered if len(registered) == 2 and registered[-1][1] not in before else None

    previous, new = _wait(new_one, timeout, "a checkpoint written after the failure")
    return previous, new


@pytest.mark.timeout(2400)  # its waits for checkpoints, kills and the rerun allow up to ~40 min on a loaded machine
def test_training_resumes_from_its_checkpoint_after_a_killed_worker_and_a_killed_driver(cluster, tmp_path):
    # 24 reference programs, one per step: 60 steps, a checkpoint every 10. The controller collects reports every
    # 2 s and a worker cannot run more than one report ahead of it, which paces the run for the kills below.
    every, steps = 10, 60
    storage = tmp_path / "storage"
    command = ["jobs/train_actor.py", "--config", "tests/configs/micro.yaml", "--mode", "sft",
               "--out", str(tmp_path / "actor_sft"), "--storage", str(storage), f"output_dir={tmp_path}",
               "sft.batch_size=1", "sft.epochs=2.5", f"train.checkpoint_every={every}", "train.max_failures=1"]
    driver = cluster.python(*command, start_new_session=True)
    out = _lines(driver)
    seen: list[str] = []
    try:
        _wait(lambda: _registered(storage, "sft"), 600, "the first checkpoint")
        (worker, _), = _wait(lambda: cluster.processes("ray::RayTrainWorker"), 60, "the Train worker")
        os.kill(worker, signal.SIGKILL)
        before = _on_disk(storage, "sft")  # what the dead worker wrote; its replacement needs seconds to start

        # FailureConfig restarts the worker group, which must continue from the last checkpoint registered before
        # the kill: its first new checkpoint comes `every` steps after that one. From scratch it would be step 10.
        previous, new = _first_checkpoint_after(storage, "sft", before, 600)
        assert previous[1] in before and new[0] == previous[0] + every, (previous, new)
        assert worker not in [pid for pid, _ in cluster.processes("ray::RayTrainWorker")]

        # Now kill the driver: the whole stage dies (its actors are owned by the driver).
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        _drain(out, seen)
    _wait(lambda: not cluster.processes("ray::RayTrainWorker"), 120, "the dead driver's workers to exit", 1)
    before = _on_disk(storage, "sft")
    last_before = _registered(storage, "sft")[-1]
    assert last_before[0] < steps, "the run finished before its driver could be killed; raise `steps`"

    # Rerunning the same command resumes the stage from the last checkpoint registered before the kill.
    rerun = cluster.python(*command)
    rerun_out = _lines(rerun)
    rerun_seen: list[str] = []
    try:
        previous, new = _first_checkpoint_after(storage, "sft", before, 600)
        assert rerun.wait(timeout=900) == 0, _drain(rerun_out, rerun_seen)[-4000:]
    finally:
        if rerun.poll() is None:
            rerun.kill()
    log = _drain(rerun_out, rerun_seen)
    assert previous == last_before and new[0] == previous[0] + every, (previous, new)
    assert f"from step {last_before[0]}" in log, log[-4000:]
    assert _registered(storage, "sft")[-1][0] == steps
    summary = _stage_summary(log)
    assert summary["steps"] == steps and (tmp_path / "actor_sft" / "config.json").is_file()


# --- execution: a sandbox node dies mid-stream (last: it leaves the cluster one sandbox node short) ------------


def _drive_execution(buffer_root: str, n_problems: int, per_problem: int) -> None:
    """Run by a driver process: execute slow programs into a replay-buffer round; print MIDSTREAM as soon as two
    batches have finished, so that the test kills a node while most of the work is still to do."""
    import ray
    from ray.util.state import list_tasks

    from coderl_ray.config import SandboxConfig
    from coderl_ray.execution import execute_samples
    from coderl_ray.rl.replay_buffer import write_round

    ray.init(log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    job = ray.get_runtime_context().get_job_id()
    problems = [{**ADD, "problem_id": f"add{p}"} for p in range(n_problems)]
    slow = "import time\ntime.sleep(0.1)\n"
    rows = [{"problem_id": f"add{p}", "sample_id": f"add{p}-s{s}", "is_greedy": s == 0,
             "code": slow + (GOOD["add"] if (p + s) % 3 else BAD["add"])}
            for p in range(n_problems) for s in range(per_problem)]
    done = threading.Event()

    def announce_midstream():
        while not done.is_set():
            finished = list_tasks(filters=[("job_id", "=", job), ("state", "=", "FINISHED")], limit=10000)
            if sum("ExecuteBatch" in t.name for t in finished) >= 2:
                print("MIDSTREAM", flush=True)
                return
            time.sleep(0.5)

    threading.Thread(target=announce_midstream, daemon=True).start()
    ds = ray.data.from_items(rows, override_num_blocks=len(rows) // 4)
    write_round(execute_samples(ds, problems, SandboxConfig(batch_size=4)), buffer_root, 1)
    done.set()
    print("DONE", flush=True)


@pytest.mark.timeout(1500)  # two waits of up to 600 s each
def test_killing_a_sandbox_raylet_mid_stream_keeps_exactly_one_result_per_sample(cluster, tmp_path):
    n_problems, per_problem = 24, 8
    driver = cluster.python("-c", "import sys; from tests.test_cluster_local import _drive_execution; "
                                  f"_drive_execution({str(tmp_path / 'buffer')!r}, {n_problems}, {per_problem})")
    out = _lines(driver)
    seen: list[str] = []
    try:
        assert _wait_for_line(out, "MIDSTREAM", 600, seen), "".join(seen)[-3000:]
        nodes = {node for _, node in cluster.processes("ray::MapWorker(MapBatches(ExecuteBatch))")}
        assert nodes, "no executor is running"
        victim = sorted(nodes)[-1]
        raylet = cluster.raylet(victim)
        os.kill(raylet, signal.SIGKILL)
        assert driver.wait(timeout=600) == 0, _drain(out, seen)[-4000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    log = _drain(out, seen)
    assert "DONE" in log, log[-3000:]
    assert not Path(f"/proc/{raylet}").exists()

    table = pq.read_table(tmp_path / "buffer" / "round_0001", columns=["sample_id", "problem_id", "outcome",
                                                                      "relative_return"])
    ids = table.column("sample_id").to_pylist()
    expected = {f"add{p}-s{s}": "passed" if (p + s) % 3 else "failed"
                for p in range(n_problems) for s in range(per_problem)}
    assert len(ids) == len(set(ids)), "a sample has two results"
    assert set(ids) == set(expected), f"missing: {sorted(set(expected) - set(ids))[:5]}"
    assert dict(zip(ids, table.column("outcome").to_pylist())) == expected
