"""Shared fixtures: one real local Ray cluster per test session, and the public data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CODERL_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster with 2 CPUs that also advertises the ``sandbox`` resource execution tasks need."""
    import ray

    from coderl_ray.ray_runtime import use_run_token

    os.environ.setdefault("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "2")  # see coderl_ray.ray_runtime.init_ray
    if ray.is_initialized():
        ray.shutdown()
    use_run_token()  # like a local run of the pipeline, `make test` leaves no ~/.ray/auth_token behind
    # address="local": a cluster of its own even when the machine runs a `ray start` head (which ray.init() would
    # join, refusing num_cpus), e.g. while tests/test_job_submit.py's head is up or after the README's cluster steps.
    ray.init(address="local", num_cpus=2, resources={"sandbox": 2}, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public data folder {SHARED_DATA} is absent (set CODERL_SHARED_DATA to point at it)")
    return SHARED_DATA
