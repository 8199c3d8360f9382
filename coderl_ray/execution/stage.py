"""Thin Ray Data wrapper over :func:`coderl_ray.sandbox.execute_many`."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from coderl_ray.config import SandboxConfig
from coderl_ray.sandbox import SandboxLimits, execute_many


def results_schema() -> pa.Schema:
    return pa.schema([
        ("problem_id", pa.string()), ("sample_id", pa.string()), ("outcome", pa.string()),
        ("passed_tests", pa.int32()), ("total_tests", pa.int32()), ("test_results", pa.list_(pa.bool_())),
        ("error", pa.string()), ("duration_s", pa.float64()),
    ])


def limits_from_config(cfg: SandboxConfig, example_tests: bool = False) -> SandboxLimits:
    return SandboxLimits(timeout_s=cfg.timeout_s, program_timeout_s=cfg.program_timeout_s, memory_mb=cfg.memory_mb,
                         compare=cfg.compare, stop_on_first_failure=cfg.stop_on_first_failure,
                         example_tests=example_tests)


class ExecuteBatch:
    """Callable for ``map_batches``: holds the problems once per worker, runs a batch of samples.

    Sample columns other than the result's own pass through, so ids such as ``round`` stay on every row.
    """

    def __init__(self, problems, limits: SandboxLimits):
        import ray

        # Passed as an ObjectRef so the driver ships the problems once to the object store, not once per actor.
        self.problems = ray.get(problems) if isinstance(problems, ray.ObjectRef) else problems
        self.limits = limits

    def __call__(self, batch: pa.Table) -> pa.Table:
        samples = batch.to_pylist()
        results = execute_many(self.problems, samples, self.limits)
        rows = []
        for sample, result in zip(samples, results):
            row = {k: v for k, v in sample.items()}
            row.update(result.to_dict())
            row.pop("apps_result", None)  # derivable from outcome; a mixed bool/int column has no Arrow type
            rows.append(row)
        return pa.Table.from_pylist(rows)


def execute_samples(samples, problems: list[dict[str, Any]] | dict[str, dict[str, Any]], cfg: SandboxConfig,
                    example_tests: bool = False):
    """Samples dataset (``problem_id``, ``sample_id``, ``code``, ...) -> the same rows plus result fields."""
    import ray

    if isinstance(problems, list):
        problems = {p["problem_id"]: p for p in problems}
    problems_ref = ray.put(problems)
    resources = {cfg.resource: 1} if cfg.resource else None
    # One warm executor per sandbox slot: the pool grows to whatever the cluster's sandbox nodes advertise.
    slots = ray.cluster_resources().get(cfg.resource, 0) if cfg.resource else ray.cluster_resources().get("CPU", 1)
    if slots < 1:
        raise RuntimeError(f"no node advertises the '{cfg.resource}' resource; start sandbox nodes with "
                           f"--resources='{{\"{cfg.resource}\": N}}' or set sandbox.resource='' to use plain CPUs")
    max_size = int(min(slots, cfg.max_tasks_in_flight or slots))
    return samples.map_batches(
        ExecuteBatch,
        fn_constructor_args=(problems_ref, limits_from_config(cfg, example_tests)),
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        num_cpus=cfg.cpus_per_task,
        resources=resources,
        concurrency=(1, max_size),
    )
