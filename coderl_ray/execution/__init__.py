"""The execution stage on Ray: apply the sandbox to a Ray Dataset of samples on CPU tasks.

Tasks request a custom resource (``sandbox`` by default) that only execution nodes advertise, so the execution pool
scales on its own: add or remove sandbox nodes and nothing else changes.
"""

from coderl_ray.execution.stage import (
    RESULT_FIELDS, ExecuteBatch, execute_samples, execute_table, limits_from_config, results_schema,
)

__all__ = ["RESULT_FIELDS", "ExecuteBatch", "execute_samples", "execute_table", "limits_from_config",
           "results_schema"]
