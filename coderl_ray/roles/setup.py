"""The roles of one run, started once and shared by every stage (and by both loops).

    with Roles(cfg, storage=out / "ray_train") as roles:
        stages.rollout_round(cfg, train, actor, 1, buffer, roles=roles)      # generators + sandbox executors
        stages.train_critic(..., roles=roles)                                # the critic trainer
        ...

Each pool or trainer starts the first time a stage asks for it and lives until :meth:`Roles.close`: a pipeline that
evaluates, rolls out, scores and trains twice per round starts each of them once. What each role asks Ray for is
the registry's (:mod:`coderl_ray.registry`: ``generator_pool``, ``sandbox_pool``, ``scorer_pool``,
``train_workers``), which ``coderl-ray plan`` reads too, so the plan checks exactly what is requested here:

========================  ======================================================================================
generators                ``rollout.num_workers`` x (``rollout.cpus_per_worker`` CPUs, ``rollout.gpus_per_worker``)
sandbox executors         up to one per unit of ``sandbox.resource`` (``sandbox.max_tasks_in_flight``), each
                          ``sandbox.cpus_per_task`` CPUs and one unit of the resource
critic scorers            ``cs.critic_num_workers`` x (``cs.critic_cpus_per_worker``, ``cs.critic_gpus_per_worker``)
actor / critic trainers   ``train.num_workers`` Ray Train workers each (``train.cpus_per_worker``, and with
                          ``train.use_gpu`` ``train.gpus_per_worker`` of a GPU each)
========================  ======================================================================================

A stage called without ``roles`` (a one-stage command, a benchmark) gets roles of its own for its duration
(:func:`roles_for`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

from coderl_ray.config import PipelineConfig
from coderl_ray.registry import generator_pool, sandbox_pool, scorer_pool


def local_cpus(cfg: PipelineConfig, cores: int) -> float:
    """The CPUs an in-process Ray on a machine of ``cores`` cores advertises for a run: every persistent role's
    reservation (the sandbox executors: one per core) plus one CPU for Ray Data's tasks, or the cores if more.

    The roles take turns on the cores (the staged loop runs one stage at a time), so their reservations may add up
    to more than the machine has; without the extra, executors holding ``cores x sandbox.cpus_per_task`` CPUs would
    starve the trainers' data reads. With the defaults on 2 cores: 2 trainers + a generator + a scorer (1 CPU each)
    + 2 executors (1 each) + 1 = 7.

    >>> local_cpus(PipelineConfig(), 2)
    7.0
    """
    from coderl_ray.registry import all_roles, role_cpus

    roles = role_cpus(all_roles(cfg)) + cores * cfg.sandbox.cpus_per_task
    return float(max(cores, roles + 1))


class Roles:
    """Lazily started, long-lived role pools and trainers of one run, and the weight store they share."""

    def __init__(self, cfg: PipelineConfig, storage: str | Path):
        from coderl_ray.roles.weights import start_weight_store

        self.cfg = cfg
        self.storage = Path(storage)
        # Versions kept per model: a generator call may wait in a queue while the online trainer publishes a few more
        # (it asks for the version it was admitted with, at most rl.max_staleness behind).
        self.store = start_weight_store(keep=cfg.rl.max_staleness + 4)
        self._pools: dict[str, Any] = {}
        self._trainers: dict[str, Any] = {}
        self.slots: dict[tuple[str, str], str] = {}  # (trainer, slot) -> the folder its model equals
        self.startup_s: dict[str, float] = {}  # seconds each role took to start (constructors, model loads)
        self._problem_refs: dict[str, Any] = {}

    # --- pools ---------------------------------------------------------------------------------------------------

    def _pool(self, name: str, build):
        if name not in self._pools:
            start = time.perf_counter()
            pool = build()
            pool.wait_ready()
            self.startup_s[name] = round(time.perf_counter() - start, 2)
            self._pools[name] = pool
        return self._pools[name]

    @property
    def generators(self):
        from coderl_ray.roles.pool import RolePool
        from coderl_ray.roles.workers import GeneratorRole

        pool = generator_pool(self.cfg)
        return self._pool("generator", lambda: RolePool(
            "generator", GeneratorRole, (self.store, self.cfg.seed, self.cfg.rollout.score_batch_size), pool.workers,
            pool.ray_options()))

    @property
    def executors(self):
        from coderl_ray.execution.stage import execution_resource, pool_size
        from coderl_ray.roles.pool import RolePool
        from coderl_ray.roles.workers import ExecutorRole

        s = dataclasses.replace(self.cfg.sandbox, resource=execution_resource(self.cfg.sandbox))
        pool = sandbox_pool(self.cfg, resource=s.resource)
        # Sized from the cluster (one per unit of the resource) unless sandbox.max_tasks_in_flight says.
        return self._pool("sandbox", lambda: RolePool(
            "sandbox", ExecutorRole, (s.tier,), pool_size(s), pool.ray_options(),
            max_in_flight_per_actor=s.tasks_in_flight_per_worker))

    @property
    def scorers(self):
        from coderl_ray.roles.pool import RolePool
        from coderl_ray.roles.workers import ScorerRole

        pool = scorer_pool(self.cfg)
        return self._pool("scorer", lambda: RolePool(
            "scorer", ScorerRole, (self.store, self.cfg.train.precision), pool.workers, pool.ray_options()))

    def problems(self, problems) -> tuple[str, list]:
        """A problem set for the executors: its name (from its problem ids) and a one-element list holding its
        reference in the object store (put once; each executor resolves it once)."""
        import hashlib

        import ray

        from coderl_ray.execution.stage import _problem_dict

        table = _problem_dict(problems)
        name = hashlib.sha256("\n".join(sorted(table)).encode()).hexdigest()[:16]
        if name not in self._problem_refs:
            self._problem_refs[name] = [ray.put(table)]
        return name, self._problem_refs[name]

    # --- trainers ------------------------------------------------------------------------------------------------

    def trainer(self, name: str):
        """The persistent Ray Train group ``name`` ("actor" or "critic")."""
        from coderl_ray.roles.trainer import TrainerGroup

        if name not in self._trainers:
            start = time.perf_counter()
            t = self.cfg.train
            self._trainers[name] = TrainerGroup(name, t, self.storage, self.store, torch_threads=t.torch_threads)
            self.startup_s[f"{name}_trainer"] = round(time.perf_counter() - start, 2)
        return self._trainers[name]

    def ensure_slot(self, trainer: str, slot: str, loop, folder: str | Path) -> None:
        """Make ``slot`` of ``trainer`` hold the model that ``folder`` holds (``loop``: how to build it, e.g. a new
        critic head), loading it only when the slot holds something else (after a driver restart it is empty)."""
        from dataclasses import asdict

        key = (trainer, slot)
        identity = str(Path(folder).resolve()) + ("#new" if getattr(loop, "new_critic", False) else "")
        if self.slots.get(key) == identity:
            return
        group = self.trainer(trainer)
        first = group.commands == 0
        start = time.perf_counter()
        group.run({"op": "load", "slot": slot, "loop": asdict(loop)})
        if first:
            # The worker group starts in the background: its first command waits for it (and loads the model).
            self.startup_s[f"{trainer}_trainer"] = round(self.startup_s.get(f"{trainer}_trainer", 0.0)
                                                         + time.perf_counter() - start, 2)
        self.slots[key] = identity

    def saved(self, trainer: str, slot: str, folder: str | Path) -> None:
        """Record that ``slot`` now equals what was saved to ``folder``."""
        self.slots[(trainer, slot)] = str(Path(folder).resolve())

    # --- reporting and shutdown ----------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether any role has been started (a run whose stages were all done earlier starts none)."""
        return bool(self._pools or self._trainers)

    def stats(self, wall_s: float) -> dict[str, Any]:
        for pool in self._pools.values():
            with contextlib.suppress(Exception):
                pool.processes()
        out: dict[str, Any] = {name: pool.stats.as_dict(wall_s, pool.size) for name, pool in self._pools.items()}
        for name, trainer in self._trainers.items():
            out[f"{name}_trainer"] = {"commands": trainer.commands, "restarts": trainer.restarts()}
        out["startup_s"] = dict(self.startup_s)
        return out

    def close(self) -> None:
        import ray

        for trainer in self._trainers.values():
            with contextlib.suppress(Exception):
                trainer.close()
        for pool in self._pools.values():
            with contextlib.suppress(Exception):
                pool.shutdown()
        with contextlib.suppress(Exception):
            ray.kill(self.store)
        self._pools.clear()
        self._trainers.clear()

    def __enter__(self) -> Roles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def roles_for(cfg: PipelineConfig, roles: Roles | None, storage: str | Path):
    """``roles`` when given (a pipeline's), else roles of its own for the caller's duration."""
    if roles is not None:
        yield roles
        return
    with Roles(cfg, storage) as own:
        yield own
