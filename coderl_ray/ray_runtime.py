"""Connecting to Ray: a running cluster when there is one, otherwise a local one that advertises ``sandbox``."""

from __future__ import annotations

import os


def init_ray(address: str = "", sandbox_resource: str = "sandbox", num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``, set by ``ray job submit``), else to a cluster started on this
    machine with ``ray start --head``, else start Ray in-process. ``address="local"`` always starts Ray in-process,
    ignoring any cluster running on the machine.

    An in-process Ray advertises the execution resource on every CPU, so one machine runs every stage; on a real
    cluster only the sandbox nodes advertise it (see cluster/).
    """
    import ray

    # Ray Data reads Parquet footers with 32 actors per read by default, which on a small cluster costs more than
    # reading a replay-buffer round itself (measured 22 s vs 8 s per read in-process on 2 cores).
    os.environ.setdefault("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "2")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address and address != "local":
        ray.init(address=address)
        return
    if not address:
        try:
            ray.init(address="auto")
            return
        except ConnectionError:
            pass
    cpus = num_cpus or os.cpu_count() or 1
    ray.init(num_cpus=cpus, resources={sandbox_resource: cpus} if sandbox_resource else None)
