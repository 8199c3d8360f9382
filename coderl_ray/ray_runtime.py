"""Connecting to Ray, and keeping Ray's own output out of the user's way.

:func:`init_ray` connects to a cluster (``ray job submit``'s ``$RAY_ADDRESS``, or one started on this machine with
``ray start --head``) or starts Ray in-process. Either way it then quiets Ray's own console output (Ray Data's
execution plans and progress bars, Ray Train's start-up messages, known-harmless internal errors): the console keeps
the pipeline's stage lines, its progress bars, training metrics, real warnings and errors. Everything Ray prints
still reaches its log files (``<session>/logs``). ``CODERL_VERBOSE=1`` in the environment, or ``--verbose`` on any
``coderl-ray`` command, leaves Ray's output as Ray makes it.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
from pathlib import Path

VERBOSE_ENV = "CODERL_VERBOSE"

# Worker lines the driver does not print (Ray's RAY_DEDUP_LOGS_SKIP_REGEX; they stay in the workers' log files):
# - Ray Data's per-execution messages in workers that run a dataset (the Ray Train ingest coordinator: one set per
#   training epoch) and its notes about progress bars, should a dataset miss the driver's settings;
# - Ray core's "constructor arguments in the object store" error, logged once per process that creates an actor
#   whose constructor arguments live in the object store: Ray Data's map workers and Ray Train's PreemptionWatcher
#   always do (https://github.com/ray-project/ray/issues/53727); nothing here restarts those actors from their
#   arguments;
# - Ray Train's "Reporting training result" line, one per ray.train.report, which its LoggingConfig does not filter
#   (the logger is named after the file, not ray.train.*); the metric line of each report says the same.
_WORKER_NOISE = "|".join([
    r"Starting execution of Dataset ",
    r"Execution plan of Dataset ",
    r"Dataset \S+ execution finished in ",
    r"A new progress UI is available",
    r"Progress bars (for operators )?disabled",
    r"Progress will be logged because",
    r"core_worker\.cc:\d+: Actor .*has constructor arguments in the object store",
    r"Reporting training result \d+: TrainingReport\(",
])


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def init_ray(address: str = "", sandbox_resource: str = "sandbox", num_cpus: int | None = None,
             logical_cpus: float | None = None) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``, set by ``ray job submit``), else to a cluster started on this
    machine with ``ray start --head``, else start Ray in-process. ``address="local"`` always starts Ray in-process,
    ignoring any cluster running on the machine.

    An in-process Ray advertises the execution resource on every CPU, so one machine runs every stage; on a real
    cluster only the sandbox nodes advertise it (see cluster/). Other in-process Ray instances on the machine (a
    notebook's, a test session's) are never joined: only a cluster that ``ray start`` recorded. ``logical_cpus``: the
    CPUs an in-process Ray advertises when more than the cores (:func:`coderl_ray.roles.setup.local_cpus`: a run's
    persistent roles hold their reservations all run long and take turns on the cores).
    """
    if not verbose() and "ray" not in sys.modules:
        # Read once, when Ray is imported; a driver that imported Ray earlier prints its workers' lines as they are.
        os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", _WORKER_NOISE)
    # Ray Data lists a read's files with 8 threads by default (the count is fixed in the driver when a read is
    # planned); their completion signaler races with the end of the listing task and sometimes dies with an
    # InterruptedError traceback in the console (ray.data._internal.dynamic_work_queue). Our reads list a few dozen
    # local files at most, which one thread does as fast.
    os.environ.setdefault("RAY_DATA_LIST_FILES_THREADED_NUM_WORKERS", "1")
    import ray

    # Ray Data reads Parquet footers with 32 actors per read by default, which on a small cluster costs more than
    # reading a replay-buffer round itself (measured 22 s vs 8 s per read in-process on 2 cores).
    os.environ.setdefault("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "2")
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS", "")
        if address and address != "local":
            ray.init(address=address, runtime_env=_worker_setup())
        elif not address and _started_cluster():
            # "auto" rather than the address itself: Ray then also picks up the token of a head that runs with
            # token authentication (an explicit address would not send it).
            ray.init(address="auto", runtime_env=_worker_setup())
        else:
            use_run_token()
            if not verbose():
                # Ray's notice that the cluster it starts uses token authentication: it is this run's own token.
                logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            cpus = num_cpus or os.cpu_count() or 1
            # address="local" because ray.init() without one joins whatever /tmp/ray/ray_current_cluster names, and
            # `ray start` leaves that record behind when its head dies without `ray stop` (then every run here
            # failed with "When connecting to an existing cluster, num_cpus ... must not be provided").
            ray.init(address="local", num_cpus=max(cpus, logical_cpus or 0),
                     resources={sandbox_resource: cpus} if sandbox_resource else None,
                     runtime_env=_worker_setup())
    quiet_ray_output()


def _worker_setup() -> dict:
    # Merged by Ray with the runtime env of `ray job submit` (cluster/runtime_env.yaml sets other keys). A new dict
    # each time: ray.init writes the hook into the dict it is given.
    return {"worker_process_setup_hook": "coderl_ray.ray_runtime.setup_worker"}


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
    """``worker_process_setup_hook`` of this job's workers (:func:`init_ray`).

    - Tell them where their cluster is: Ray Train's placement-group cleaner finds it through Ray's address
      discovery, which fails (and prints a traceback per training run) when another Ray runs on the same machine,
      unless ``RAY_ADDRESS`` names it.
    - Keep Ray Train from routing ``print`` in its workers through its logger as well: the line then reaches the
      driver twice (stdout and stderr), and so does each state of rank 0's progress bar, whose duplicated "closed"
      state makes the driver redraw the finished bar under every later stage. Prints still go to the workers'
      ``.out`` log files.
    """
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")


def quiet_ray_output() -> None:
    """This process's share of the quiet console: Ray Data without progress bars or execution plans (datasets copy
    these settings from the driver, so the workers that run them follow) and Ray Data's console at warnings."""
    if verbose():
        return
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":
            handler.setLevel(logging.WARNING)
            if not any(isinstance(f, _DropNotes) for f in handler.filters):
                handler.addFilter(_DropNotes())


class _DropNotes(logging.Filter):
    """Ray Data's warning that progress bars are off (we turned them off; our own bars replace them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars")


def train_logging_config():
    """Ray Train's ``LoggingConfig`` for the console: its start-up and checkpoint messages only when verbose."""
    import ray.train

    return ray.train.LoggingConfig(log_level="INFO" if verbose() else "WARNING")
