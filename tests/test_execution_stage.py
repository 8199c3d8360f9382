"""The execution stage on a real local Ray cluster: columns pass through, results stream in order when asked, and
an executor process killed mid-batch loses no result."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from coderl_ray.config import ConfigError, SandboxConfig
from coderl_ray.execution import RESULT_FIELDS, execute_samples, execute_table, limits_from_config
from coderl_ray.records import problem_to_row

ADD = {"problem_id": "add", "question": "", "fn_name": None,
       "tests": {"kind": "stdio", "inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]}}
CALL = {"problem_id": "sq", "question": "", "fn_name": "sq",
        "tests": {"kind": "call", "inputs": [[3], [4]], "outputs": [9, 16]}}
GOOD = {"add": "a, b = map(int, input().split())\nprint(a + b)", "sq": "def sq(x):\n    return x * x"}
BAD = {"add": "print(0)", "sq": "def sq(x):\n    return x"}


def samples(n, slow=0.0):
    rows = []
    for i in range(n):
        pid = "add" if i % 2 else "sq"
        code = GOOD[pid] if i % 3 else BAD[pid]
        if slow and pid == "add":
            code = f"import time\ntime.sleep({slow})\n" + code
        rows.append({"problem_id": pid, "sample_id": f"s{i}", "code": code, "round": 7, "policy_version": 3,
                     "token_ids": [i, i + 1, i + 2]})
    return rows


def expected_outcome(i):
    return "passed" if i % 3 else "failed"


def test_execute_table_appends_typed_result_columns_and_keeps_the_rest():
    table = pa.Table.from_pylist(samples(6))
    out = execute_table(table, {"add": ADD, "sq": CALL}, limits_from_config(SandboxConfig()))
    assert out.column_names[:6] == table.column_names
    assert out.select(table.column_names).equals(table)
    for name, type_ in RESULT_FIELDS:
        assert out.schema.field(name).type == type_
    rows = out.to_pylist()
    assert [r["outcome"] for r in rows] == [expected_outcome(i) for i in range(6)]
    assert rows[1]["test_results"] == [True, True] and rows[0]["test_results"] == [False, False]


def test_pipeline_columns_survive_the_ray_stage(ray_cluster):
    ds = ray_cluster.data.from_items(samples(40), override_num_blocks=4)
    problems = [ADD, problem_to_row(CALL)]  # a problem row in its Arrow form works too
    rows = sorted(execute_samples(ds, problems, SandboxConfig(batch_size=8)).take_all(),
                  key=lambda r: int(r["sample_id"][1:]))
    assert len(rows) == 40
    for i, row in enumerate(rows):
        assert row["outcome"] == expected_outcome(i)
        assert row["round"] == 7 and row["policy_version"] == 3 and list(row["token_ids"]) == [i, i + 1, i + 2]
        assert row["total_tests"] == 2 and row["duration_s"] > 0


def test_example_tests_through_ray(ray_cluster):
    problem = {**ADD, "example_tests": {"kind": "stdio", "inputs": ["2 2\n"], "outputs": ["4\n"]}}
    ds = ray_cluster.data.from_items([{"problem_id": "add", "sample_id": "e", "code": GOOD["add"]}])
    (row,) = execute_samples(ds, {"add": problem}, SandboxConfig(), example_tests=True).take_all()
    assert row["outcome"] == "passed" and row["total_tests"] == 1


def test_order_is_preserved_when_the_context_asks_for_it(ray_cluster):
    ctx = ray_cluster.data.DataContext.get_current()
    previous = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        rows = samples(30, slow=0.05)
        ds = ray_cluster.data.from_items(rows, override_num_blocks=10)
        out = [r["sample_id"] for r in execute_samples(ds, [ADD, CALL], SandboxConfig(batch_size=3)).iter_rows()]
    finally:
        ctx.execution_options.preserve_order = previous
    assert out == [r["sample_id"] for r in rows]


def _executor_pids() -> list[int]:
    """Ray actors running ExecuteBatch: the parents of sandbox zygotes that are not this test process."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"_harness.py" not in cmdline:
                continue
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid != os.getpid() and b"_harness.py" not in (Path("/proc") / str(ppid) / "cmdline").read_bytes():
            pids.add(ppid)
    return sorted(pids)


def test_a_killed_executor_loses_no_result(ray_cluster):
    rows = samples(24, slow=0.3)
    ds = ray_cluster.data.from_items(rows, override_num_blocks=6)
    cfg = SandboxConfig(batch_size=4)
    killed = []

    def kill_one_executor():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            pids = _executor_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_executor)
    killer.start()
    try:
        out = execute_samples(ds, [ADD, CALL], cfg).take_all()
    finally:
        killer.join()
    assert killed, "no executor process was found to kill"
    assert sorted(r["sample_id"] for r in out) == sorted(r["sample_id"] for r in rows)
    by_id = {r["sample_id"]: r["outcome"] for r in out}
    assert all(by_id[f"s{i}"] == expected_outcome(i) for i in range(24))


def test_a_one_node_cluster_without_the_execution_resource_runs_programs_on_its_cpus(ray_cluster, capfd,
                                                                                      monkeypatch):
    """A plain `ray start --head` advertises no `sandbox`: its one node runs the programs, and says so. (A cluster
    of several nodes without it is an error: tests/test_cluster_local.py.)"""
    from coderl_ray.execution import stage

    monkeypatch.setattr(stage, "_warned_single_node", False)
    ds = ray_cluster.data.from_items(samples(4))
    out = sorted(execute_samples(ds, [ADD, CALL], SandboxConfig(resource="gpu-sandbox")).take_all(),
                 key=lambda r: r["sample_id"])
    assert [r["outcome"] for r in out] == [expected_outcome(i) for i in range(4)]
    assert "no node advertises the 'gpu-sandbox' resource: this one-node cluster" in capfd.readouterr().err


def test_sandbox_config_rejects_impossible_limits():
    with pytest.raises(ConfigError, match="program_timeout_s"):
        SandboxConfig(timeout_s=10, program_timeout_s=5)
    with pytest.raises(ConfigError, match="memory_mb"):
        SandboxConfig(memory_mb=8)
