"""The execution stage on Ray: a pool of sandbox executors applied to a streaming Dataset of samples.

    results = execute_samples(samples_ds, problems, cfg.sandbox)      # lazy; rows stream through

Each executor is a Ray actor (``map_batches`` with a callable class) that owns one warm
:class:`~coderl_ray.sandbox.Sandbox` - starting a zygote costs ~0.2 s, a program a few ms, so the zygote must
outlive a batch. Executors request ``cfg.resource`` (``sandbox``), which only execution nodes advertise.

Failure handling: anything a program does is a result row (``runtime_error``, ``timeout`` ...); a sandbox failure,
or a program the machine starved of CPU (docs/sandbox.md#time), is retried inside the executor and, if it persists,
becomes an ``infra_error`` row, which consumers drop and reports count. Only infrastructure failures reach Ray: if an executor process dies, Ray restarts it and reruns its batch
(system failures only; application exceptions are not retried), so no result is lost.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import pyarrow as pa

from coderl_ray.config import SandboxConfig
from coderl_ray.records import problem_from_row
from coderl_ray.sandbox import Sandbox, SandboxLimits, execute_many

# Result columns and their Arrow types. Fixed here so that every block has the same schema even when a batch's
# values would infer differently (e.g. a batch where every test_results list is empty).
RESULT_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("outcome", pa.string()),
    ("passed_tests", pa.int32()),
    ("total_tests", pa.int32()),
    ("test_results", pa.list_(pa.bool_())),
    ("error", pa.string()),
    ("duration_s", pa.float64()),
)


def results_schema() -> pa.Schema:
    """Schema of a result row when the samples carry only ``problem_id``, ``sample_id`` and ``code``."""
    return pa.schema([("problem_id", pa.string()), ("sample_id", pa.string()), ("code", pa.string()),
                      *RESULT_FIELDS])


def limits_from_config(cfg: SandboxConfig, example_tests: bool = False) -> SandboxLimits:
    return SandboxLimits(timeout_s=cfg.timeout_s, program_timeout_s=cfg.program_timeout_s,
                         memory_mb=cfg.memory_mb, max_output_mb=cfg.max_output_mb, max_processes=cfg.max_processes,
                         compare=cfg.compare, stop_on_first_failure=cfg.stop_on_first_failure,
                         example_tests=example_tests, tier=cfg.tier, infra_retries=cfg.infra_retries)


def _problem_dict(problems: Any) -> dict[str, dict[str, Any]]:
    if isinstance(problems, dict):
        return problems
    out = {}
    for p in problems:
        # Rows read back from a problems Dataset carry tests in their Arrow form (records.problem_to_row).
        if isinstance(p.get("tests"), dict) and p["tests"].get("kind") == "call" and p["tests"].get("inputs") \
                and isinstance(p["tests"]["inputs"][0], str):
            p = problem_from_row(p)
        out[p["problem_id"]] = p
    return out


def execute_table(batch: pa.Table, problems: dict[str, dict[str, Any]], limits: SandboxLimits,
                  sandbox: Sandbox | None = None) -> pa.Table:
    """Run a table of samples; returns it with the result columns appended (replacing same-named ones)."""
    samples = batch.select([c for c in ("problem_id", "sample_id", "code") if c in batch.column_names]).to_pylist()
    results = execute_many(problems, samples, limits, sandbox=sandbox)
    out = batch.drop_columns([name for name, _ in RESULT_FIELDS if name in batch.column_names])
    values = {
        "outcome": [r.outcome.value for r in results],
        "passed_tests": [r.passed_tests for r in results],
        "total_tests": [r.total_tests for r in results],
        "test_results": [list(r.test_results) for r in results],
        "error": [r.error for r in results],
        "duration_s": [r.duration_s for r in results],
    }
    for name, type_ in RESULT_FIELDS:
        out = out.append_column(pa.field(name, type_), pa.array(values[name], type=type_))
    return out


class ExecuteBatch:
    """Callable for ``map_batches``: one warm sandbox per executor actor, the problems resolved once.

    Sample columns other than the result's own pass through untouched (types included), so ids such as ``round``,
    ``policy_version`` and token ids stay on every row.
    """

    def __init__(self, problems, limits: SandboxLimits):
        import ray

        # Passed as an ObjectRef so the driver ships the problems once to the object store, not once per actor.
        self.problems = _problem_dict(ray.get(problems) if isinstance(problems, ray.ObjectRef) else problems)
        self.limits = limits
        self.sandbox = Sandbox(limits.tier)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return execute_table(batch, self.problems, self.limits, self.sandbox)

    def __del__(self):
        sandbox = getattr(self, "sandbox", None)
        if sandbox is not None:
            sandbox.close()


def pool_size(cfg: SandboxConfig) -> int:
    """How many executors the pool may grow to: one per unit of the sandbox resource present now, or
    ``max_tasks_in_flight`` when set (then the pool may wait for an autoscaler to add sandbox nodes)."""
    import ray

    if cfg.max_tasks_in_flight:
        return cfg.max_tasks_in_flight
    resources = ray.cluster_resources()
    slots = int(resources.get(cfg.resource, 0) if cfg.resource else resources.get("CPU", 1))
    if slots < 1:
        raise RuntimeError(f"no node advertises the '{cfg.resource}' resource; start sandbox nodes with "
                           f"--resources='{{\"{cfg.resource}\": N}}', set sandbox.max_tasks_in_flight for an "
                           "autoscaled sandbox group that starts empty, or set sandbox.resource='' to use plain CPUs")
    return slots


def execution_resource(cfg: SandboxConfig) -> str:
    """The resource executors request: ``cfg.resource``, except on a one-node cluster that does not advertise it
    (a plain ``ray start --head`` on a laptop), whose CPUs then run the programs as an in-process Ray's would. A
    multi-node cluster without sandbox nodes is an error (:func:`pool_size`): programs must not land on the others."""
    import ray

    if not cfg.resource or cfg.max_tasks_in_flight or ray.cluster_resources().get(cfg.resource, 0) >= 1:
        return cfg.resource
    if len([n for n in ray.nodes() if n.get("Alive")]) != 1:
        return cfg.resource
    global _warned_single_node
    if not _warned_single_node:
        _warned_single_node = True
        print(f"WARNING: no node advertises the '{cfg.resource}' resource: this one-node cluster runs programs on its "
              f"CPUs (start it with --resources='{{\"{cfg.resource}\": N}}' to choose how many)", file=sys.stderr,
              flush=True)
    return ""


_warned_single_node = False


def execute_samples(samples, problems: list[dict[str, Any]] | dict[str, dict[str, Any]], cfg: SandboxConfig,
                    example_tests: bool = False):
    """Samples dataset (``problem_id``, ``sample_id``, ``code``, ...) -> the same rows plus the result columns
    (``outcome``, ``passed_tests``, ``total_tests``, ``test_results``, ``error``, ``duration_s``). Lazy and
    streaming: nothing runs until the returned Dataset is consumed."""
    import ray

    cfg = dataclasses.replace(cfg, resource=execution_resource(cfg))
    problems_ref = ray.put(_problem_dict(problems))
    size = pool_size(cfg)
    return samples.map_batches(
        ExecuteBatch,
        fn_constructor_args=(problems_ref, limits_from_config(cfg, example_tests)),
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        num_cpus=cfg.cpus_per_task,
        resources={cfg.resource: 1} if cfg.resource else None,
        # Ray Data's defaults for actor pools are the retry policy we want: a dead executor is restarted and its
        # batches rerun (max_restarts=-1, max_task_retries=-1), but only system failures are retried
        # (retry_exceptions=[RaySystemError]); an exception raised by the code would not be - and programs'
        # failures never raise, they are result rows.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size,
                                           max_tasks_in_flight_per_actor=cfg.tasks_in_flight_per_worker),
    )
