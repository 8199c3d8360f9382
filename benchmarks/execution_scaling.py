"""Execution throughput with 1 and then 2 sandbox nodes, on a local multi-node cluster, measured in one run.

    .venv/bin/python benchmarks/execution_scaling.py                      # both workloads, 2000 programs, 3 repeats
    .venv/bin/python benchmarks/execution_scaling.py --workloads trivial --samples 4000 --repeats 5

Starts ``cluster/local-cluster.sh`` (a head with no CPUs, a trainer node, one sandbox node of 1 CPU), runs the
execution stage (:func:`coderl_ray.execution.execute_samples`) on ``--samples`` programs, adds a second sandbox
node with ``local-cluster.sh add-sandbox`` - nothing else changes, the pool grows because it sizes itself from the
``sandbox`` resource - runs again, and prints the throughput of each and the ratio. The cluster is stopped at the
end (only its own processes).

Workloads: ``trivial`` is scenario (a) of benchmarks/sandbox_throughput.py (a stdio program, 1 test): CPU-bound,
so on a machine whose cores other jobs also use, the second node can only add what the machine has left.
``sleep`` is a program that waits 20 ms before answering: it occupies a sandbox slot without a CPU, so it measures
how the pool's scheduling scales when the cores are not the limit (program wall time as on a real pool, where
tests wait on I/O and timeouts).

Reported per measurement: programs/s over the whole stage (pool start included), programs/s in steady state (the
middle 80% of the results), and programs per CPU-second of the execution processes (executors, their zygotes and the
programs) - what an idle core would do, whatever the machine's load. On this machine a "1 CPU" sandbox node is a
Ray accounting unit, not a core: its executor, zygote and programs are three processes that spread over the real
cores, so a CPU-bound workload cannot show the second node's gain here; the CPU-second rate and the sleep workload
are what carry over to a real pool.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCRIPT = ROOT / "cluster" / "local-cluster.sh"
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

PROBLEM = {"problem_id": "add", "question": "", "fn_name": None,
           "tests": {"kind": "stdio", "inputs": ["3 4\n"], "outputs": ["7\n"]}}
PROGRAMS = {"trivial": "a, b = map(int, input().split())\nprint(a + b)",
            "sleep": "import time\ntime.sleep(0.02)\na, b = map(int, input().split())\nprint(a + b)"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _executor_cpu(cluster_dir: Path, sessions: set[int]) -> dict[int, float]:
    """pid -> CPU seconds of the execution processes of the sandbox nodes: executors (Ray workers running
    ``ExecuteBatch``), their zygotes and the programs. The nodes' daemons (raylet, agents) are left out: they cost
    the same per node whatever the load, and a short run would charge them to its programs.

    Each process counts its own time; the zygote (``_harness.py``) also counts its reaped children, the programs,
    which live for milliseconds and would escape any sampling."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # After the command name: state(0) ppid(1) pgrp(2) session(3) ... utime(11) stime(12) cutime(13) cstime(14)
        zygote = b"_harness.py" in cmdline
        own = (11, 12, 13, 14) if zygote else (11, 12)
        counted = zygote or cmdline.startswith(b"ray::MapWorker")
        cpu = sum(int(fields[i]) for i in own) / CLK_TCK if counted else 0.0
        table[int(entry.name)] = (int(fields[1]), int(fields[3]), cpu)
    keep = {pid for pid, (_, sid, _) in table.items() if sid in sessions}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, _) in table.items():
            if pid not in keep and ppid in keep:
                keep.add(pid)
                grew = True
    return {pid: table[pid][2] for pid in keep}


class CpuMeter:
    """CPU seconds of the execution processes while a stage runs, sampled every 0.2 s (a process that exits between
    two samples loses at most its last 0.2 s)."""

    def __init__(self, cluster_dir: Path):
        self.sessions = {int(f.read_text()) for f in (cluster_dir / "nodes").glob("sandbox-*")}
        self.dir = cluster_dir
        self.start = _executor_cpu(cluster_dir, self.sessions)
        self.last = dict(self.start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        self.last.update(_executor_cpu(self.dir, self.sessions))

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(cpu - self.start.get(pid, 0.0) for pid, cpu in self.last.items())


def measure(cluster_dir: Path, workload: str, n: int) -> dict:
    import ray

    from coderl_ray.config import SandboxConfig
    from coderl_ray.execution import execute_samples

    rows = [{"problem_id": "add", "sample_id": f"s{i}", "code": PROGRAMS[workload]} for i in range(n)]
    cfg = SandboxConfig()
    ds = ray.data.from_items(rows, override_num_blocks=max(1, n // cfg.batch_size))
    meter = CpuMeter(cluster_dir)
    start = time.perf_counter()
    arrivals, passed = [], 0
    for row in execute_samples(ds, [PROBLEM], cfg).iter_rows():
        arrivals.append(time.perf_counter() - start)
        passed += row["outcome"] == "passed"
    wall = time.perf_counter() - start
    cpu = meter.stop()
    if len(arrivals) != n or passed != n:
        raise RuntimeError(f"{len(arrivals)} results for {n} programs, {passed} passed: the run is not valid")
    lo, hi = arrivals[n // 10], arrivals[(9 * n) // 10]
    return {"end_to_end": n / wall, "steady": (0.8 * n) / max(hi - lo, 1e-9), "per_cpu_s": n / max(cpu, 1e-9),
            "wall_s": wall}


def sandbox_slots() -> int:
    import ray

    return int(ray.cluster_resources().get("sandbox", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="programs per measurement (default 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per workload and node count; "
                                                               "the best is reported (default 3)")
    parser.add_argument("--workloads", default="trivial,sleep", help="comma-separated: trivial, sleep")
    args = parser.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(workloads) - set(PROGRAMS)
    if unknown:
        parser.error(f"unknown workload(s) {sorted(unknown)}; choose from {sorted(PROGRAMS)}")

    cluster_dir = Path(tempfile.mkdtemp(prefix="coderl-bench-", dir="/tmp"))
    head, dashboard = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(CLUSTER_DIR=str(cluster_dir), HEAD_PORT=str(head), DASHBOARD_PORT=str(dashboard), SANDBOX_NODES="1",
               SANDBOX_CPUS="1", TRAINER_CPUS="1", RAY=str(BIN / "ray"))
    load_start = os.getloadavg()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
          f"{platform.machine()}, Python {platform.python_version()}, load average {load_start[0]:.1f}", flush=True)
    subprocess.run([str(SCRIPT), "start"], env=env, check=True, stdout=subprocess.DEVNULL)
    results: dict[tuple[str, int], dict] = {}
    try:
        os.environ["RAY_AUTH_MODE"] = "token"  # the script's cluster uses token authentication
        import ray

        ray.init(address=f"127.0.0.1:{head}", log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        for nodes in (1, 2):
            if nodes == 2:
                subprocess.run([str(SCRIPT), "add-sandbox"], env=env, check=True, stdout=subprocess.DEVNULL)
                deadline = time.monotonic() + 120
                while sandbox_slots() < 2 and time.monotonic() < deadline:
                    time.sleep(0.5)
            assert sandbox_slots() == nodes, f"expected {nodes} sandbox slots, the cluster has {sandbox_slots()}"
            for workload in workloads:
                runs = []
                for r in range(args.repeats):
                    runs.append(measure(cluster_dir, workload, args.samples))
                    print(f"  {workload:8s} {nodes} sandbox node(s), run {r + 1}: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in runs[-1].items()), flush=True)
                results[(workload, nodes)] = {k: max(run[k] for run in runs) if k != "wall_s" else
                                              min(run[k] for run in runs) for k in runs[0]}
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", str(cluster_dir)], check=False)
    load_end = os.getloadavg()

    print(f"\n{args.samples} programs per run, best of {args.repeats}; load average {load_start[0]:.1f} at the "
          f"start, {load_end[0]:.1f} at the end\n")
    print("| workload | sandbox nodes (1 CPU each) | programs/s, whole stage | programs/s, steady state | "
          "programs per execution CPU-second |")
    print("| --- | --- | --- | --- | --- |")
    for workload in workloads:
        for nodes in (1, 2):
            m = results[(workload, nodes)]
            print(f"| {workload} | {nodes} | {m['end_to_end']:.1f} | {m['steady']:.1f} | {m['per_cpu_s']:.1f} |")
    print()
    for workload in workloads:
        one, two = results[(workload, 1)], results[(workload, 2)]
        print(f"{workload}: 2 nodes / 1 node = {two['end_to_end'] / one['end_to_end']:.2f}x whole stage, "
              f"{two['steady'] / one['steady']:.2f}x steady state")


if __name__ == "__main__":
    main()
