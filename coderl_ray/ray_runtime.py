"""Connecting to Ray: a running cluster when there is one, otherwise a local one that advertises ``sandbox``."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path


def init_ray(address: str = "", sandbox_resource: str = "sandbox", num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``, set by ``ray job submit``), else to a cluster started on this
    machine with ``ray start --head``, else start Ray in-process. ``address="local"`` always starts Ray in-process,
    ignoring any cluster running on the machine.

    An in-process Ray advertises the execution resource on every CPU, so one machine runs every stage; on a real
    cluster only the sandbox nodes advertise it (see cluster/). Other in-process Ray instances on the machine (a
    notebook's, a test session's) are never joined: only a cluster that ``ray start`` recorded.
    """
    import ray

    # Ray Data reads Parquet footers with 32 actors per read by default, which on a small cluster costs more than
    # reading a replay-buffer round itself (measured 22 s vs 8 s per read in-process on 2 cores).
    os.environ.setdefault("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "2")
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS", "")
        if address and address != "local":
            ray.init(address=address)
        elif not address and _started_cluster():
            # "auto" rather than the address itself: Ray then also picks up the token of a head that runs with
            # token authentication (an explicit address would not send it).
            ray.init(address="auto")
        else:
            use_run_token()
            cpus = num_cpus or os.cpu_count() or 1
            ray.init(num_cpus=cpus, resources={sandbox_resource: cpus} if sandbox_resource else None,
                     runtime_env={"worker_process_setup_hook": "coderl_ray.ray_runtime.setup_worker"})


def _started_cluster() -> str | None:
    """The address ``ray start`` recorded on this machine, if a GCS still answers there.

    ``ray.init(address="auto")`` alone would also join any other in-process Ray of the machine (it scans for GCS
    processes when nothing is recorded), and a stale record (a head killed without ``ray stop``) would fail the
    connection instead of starting Ray here.
    """
    from ray._private.utils import read_ray_address  # the file `ray start` writes; Ray has no public reader

    recorded = read_ray_address()
    if not recorded or ":" not in recorded:
        return None
    host, port = recorded.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return recorded
    except (OSError, ValueError):
        return None


def use_run_token() -> None:
    """Give a Ray started in this process a token authentication token of its own, kept out of ``~/.ray``.

    Ray 2.60's ``ray.init()`` turns on token authentication for the cluster it starts and, when the user has no
    token yet, writes one to ``~/.ray/auth_token`` for good. A later ``ray start --head`` finds that file and turns
    authentication on, but ``ray job submit`` sends the token only when ``RAY_AUTH_MODE=token`` is set in its own
    shell, so the README's cluster commands fail after any local run (tests/test_job_submit.py). This run's token
    lives in a private temporary file instead (``$RAY_AUTH_TOKEN_PATH``, which every Ray process of the run inherits;
    the dashboard asks for it), removed at exit. A token or mode the user chose is left alone, and so is an existing
    ``~/.ray/auth_token``: Ray then uses it, and nothing new is written.
    """
    if any(k in os.environ for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return
    if (Path.home() / ".ray" / "auth_token").exists():
        return
    folder = tempfile.mkdtemp(prefix="coderl-ray-auth-")
    path = Path(folder) / "auth_token"
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    # Registered before ray.init, so it runs after Ray's own shutdown at exit.
    atexit.register(shutil.rmtree, folder, True)


def setup_worker() -> None:
    """``worker_process_setup_hook`` of the Ray started by :func:`init_ray`: tell its workers where their cluster is.

    Ray Train's placement-group cleaner finds the cluster through Ray's address discovery, which fails (and prints a
    traceback per training run) when another Ray runs on the same machine, unless ``RAY_ADDRESS`` names it.
    """
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
