"""Long-lived pools of role actors, and the stream that chains them.

    generators = RolePool("generator", GeneratorRole, (actor_dir, seed, store, 0), size=2, options={"num_cpus": 1})
    stream = Stream([Hop(generators, "generate", args), Hop(executors, "execute", rows=64)], sink=write_part)
    stats = stream.run(items)            # items flow generate -> execute -> sink, overlapped, as results arrive

Why not Ray Data's ``map_batches`` with an actor pool, as the stages used before: Ray Data starts a new pool for
every dataset it executes, so every stage of every round loaded its models again (~8 s per pool on 2 CPUs, most of
it importing torch and transformers). A :class:`RolePool` is started once per run and serves every stage.

Scheduling: a call goes to the actor of the pool with the fewest calls in flight, at most
``max_in_flight_per_actor`` each (two keeps an actor busy while its next input is shipped). A call whose actor died
(``RayActorError``: the process was killed, its node was lost) is sent again - Ray restarts the actor
(``max_restarts=-1``) - and counted in the pool's ``retries``; an exception raised by the role's own code is not
retried and stops the stream with the item it failed on. Calls carry every input they need (weights by version,
see :mod:`coderl_ray.roles.weights`), so a restarted actor serves the retry exactly as the lost one would have.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


class Role:
    """Base of the role classes: ``run`` times a method, so the pool can report how busy its actors were."""

    def run(self, method: str, *args):
        start = time.perf_counter()
        out = getattr(self, method)(*args)
        return out, time.perf_counter() - start

    def ready(self) -> bool:
        return True

    def process(self) -> dict:
        """This actor's process id and whether Ray restarted it (it died and was constructed again)."""
        import os
        import warnings

        import ray

        with warnings.catch_warnings():
            # Ray 2.60's property reads its own deprecated actor_id on the way (a warning per call, nothing wrong).
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        return {"pid": os.getpid(), "restarted": restarted}


@dataclass
class PoolStats:
    calls: int = 0
    retries: int = 0  # calls sent again because their actor died with them
    busy_s: float = 0.0
    restarts: int = 0  # actors Ray constructed again after they died (counted when the pool is asked)

    def as_dict(self, wall_s: float, size: int) -> dict[str, Any]:
        return {"calls": self.calls, "retries": self.retries, "restarts": self.restarts,
                "busy_s": round(self.busy_s, 2),
                "busy_fraction": round(self.busy_s / (wall_s * size), 3) if wall_s > 0 and size else 0.0}


class RolePool:
    """``size`` actors of ``cls`` (a :class:`Role`), started once, restarted by Ray when they die."""

    def __init__(self, name: str, cls: type, args: tuple, size: int, options: dict[str, Any] | None = None,
                 max_in_flight_per_actor: int = 2):
        import ray

        if size < 1:
            raise ValueError(f"pool {name!r}: size must be >= 1, got {size}")
        self.name, self.size, self.max_in_flight = name, size, max_in_flight_per_actor
        opts = {"max_restarts": -1, "max_task_retries": 0, **(options or {})}
        self.actors = [ray.remote(cls).options(**opts).remote(*args) for _ in range(size)]
        self.load = [0] * size
        self.back_at = [0.0] * size  # an actor that failed a call gets none before this time (it is restarting)
        self.backoff = [0.0] * size
        self.stats = PoolStats()
        self.pids: list[int] = []  # the actors' processes when they first became ready

    def wait_ready(self) -> None:
        """Block until every actor has finished its constructor (model loads), e.g. to time start-up apart."""
        self.pids = [p["pid"] for p in self.processes()]

    def free_actor(self) -> int | None:
        now = time.monotonic()
        up = [j for j in range(self.size) if self.back_at[j] <= now]
        if not up:
            return None
        i = min(up, key=lambda j: self.load[j])
        return i if self.load[i] < self.max_in_flight else None

    def failed(self, i: int, lost_work: bool) -> None:
        """Actor ``i`` failed a call: it died with it (``lost_work``: counted as a retry) or is still restarting.
        It gets no call for a while (doubling from 0.2 s up to 5 s while it keeps failing)."""
        self.load[i] -= 1
        self.stats.retries += int(lost_work)
        self.backoff[i] = min(5.0, max(0.2, 2 * self.backoff[i]))
        self.back_at[i] = time.monotonic() + self.backoff[i]

    def next_wakeup(self) -> float | None:
        """Seconds until an actor that is backing off may be called again (None if none is)."""
        now = time.monotonic()
        waits = [t - now for t in self.back_at if t > now]
        return min(waits) if waits else None

    def call(self, i: int, method: str, args: tuple):
        self.load[i] += 1
        self.stats.calls += 1
        return self.actors[i].run.remote(method, *args)

    def done(self, i: int, busy_s: float) -> None:
        self.load[i] -= 1
        self.backoff[i] = 0.0
        self.stats.busy_s += busy_s

    def broadcast(self, method: str, *args) -> list:
        """Run ``method`` on every actor (e.g. to load a model slot) and return the results."""
        import ray

        return [out for out, _ in ray.get([a.run.remote(method, *args) for a in self.actors])]

    def processes(self) -> list[dict]:
        """Each actor's :meth:`Role.process` (waits for restarting actors); updates ``stats.restarts``."""
        import ray

        procs = ray.get([a.process.remote() for a in self.actors])
        self.stats.restarts = sum(p["restarted"] for p in procs)
        return procs

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []


@dataclass
class Hop:
    """One step of a stream: ``pool.method(table, *args(item))``; ``rows`` > 0 splits the item's table into calls of
    at most that many rows, whose results are concatenated in order before the next hop."""

    pool: RolePool
    method: str
    args: Callable[[Item], tuple] = lambda item: ()
    rows: int = 0


@dataclass
class Item:
    """A unit of work travelling through the hops: its ``key`` (caller's id), its current table, its metadata."""

    key: Any
    table: Any
    meta: dict[str, Any] = field(default_factory=dict)
    hop: int = 0
    parts: list = field(default_factory=list)
    waiting: int = 0


class StreamError(RuntimeError):
    """A role's own code raised on an item (not an infrastructure failure, so not retried)."""


class Stream:
    """Items through a chain of pools, overlapped: item 2 generates while item 1 executes.

    ``sink(item, table)`` receives each item's final table as it completes (in completion order). At most
    ``max_items`` items are in the stream at once (memory), which also bounds how far generation runs ahead of
    execution. :meth:`run` drives everything; :meth:`add` / :meth:`poll` let a caller (the online loop) interleave
    its own work and futures.
    """

    def __init__(self, hops: list[Hop], sink: Callable[[Item, Any], None], max_items: int = 0):
        self.hops = hops
        self.sink = sink
        self.max_items = max_items or 2 * sum(h.pool.size for h in hops) + 2
        self.queues: list[deque] = [deque() for _ in hops]  # (item, part index, table) waiting for an actor
        self.inflight: dict[Any, tuple[Item, int, int, Any]] = {}  # ref -> (item, hop, actor, (part, table))
        self.items_in_stream = 0
        self.completed = 0

    @property
    def has_room(self) -> bool:
        return self.items_in_stream < self.max_items

    @property
    def busy(self) -> bool:
        return self.items_in_stream > 0

    def add(self, item: Item) -> None:
        self.items_in_stream += 1
        self._enter(item, 0)

    def _enter(self, item: Item, hop: int) -> None:
        item.hop = hop
        h = self.hops[hop]
        n = item.table.num_rows
        if h.rows and n > h.rows:
            chunks = [item.table.slice(s, h.rows) for s in range(0, n, h.rows)]
        else:
            chunks = [item.table]
        item.parts, item.waiting = [None] * len(chunks), len(chunks)
        for i, chunk in enumerate(chunks):
            self.queues[hop].append((item, i, chunk))
        self._dispatch()

    def _dispatch(self) -> None:
        for hop, queue in enumerate(self.queues):
            pool = self.hops[hop].pool
            while queue:
                actor = pool.free_actor()
                if actor is None:
                    break
                item, part, chunk = queue.popleft()
                ref = pool.call(actor, self.hops[hop].method, (chunk, *self.hops[hop].args(item)))
                self.inflight[ref] = (item, hop, actor, (part, chunk))

    def poll(self, extra: list | None = None, timeout: float | None = None) -> list:
        """Wait for one completion (of the stream's calls or of ``extra`` refs); handle the stream's; return the
        ``extra`` refs that are ready."""
        import ray

        extra = list(extra or [])
        refs = list(self.inflight) + extra
        wakeups = [w for w in (h.pool.next_wakeup() for h in self.hops) if w is not None]
        if wakeups and any(self.queues):
            timeout = min(wakeups) if timeout is None else min(timeout, min(wakeups))
        if not refs:
            if wakeups:
                time.sleep(min(wakeups))
                self._dispatch()
            return []
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        extra_set = set(extra)
        # Also take whatever else is already finished, without waiting.
        rest = [r for r in refs if r not in ready]
        more = ray.wait(rest, num_returns=len(rest), timeout=0)[0] if rest else []
        done_extra = []
        for ref in ready + more:
            if ref in extra_set:
                done_extra.append(ref)
            else:
                self._complete(ref)
        self._dispatch()
        return done_extra

    def _complete(self, ref) -> None:
        import ray

        item, hop, actor, (part, chunk) = self.inflight.pop(ref)
        pool = self.hops[hop].pool
        try:
            table, busy = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            # The actor died with the call (killed, OOM, node lost), or is restarting and never ran it: Ray restarts
            # it (max_restarts=-1); the call goes back to the queue.
            pool.failed(actor, lost_work=not isinstance(exc, ray.exceptions.ActorUnavailableError))
            self.queues[hop].appendleft((item, part, chunk))
            return
        except ray.exceptions.RayTaskError as exc:
            pool.done(actor, 0.0)
            raise StreamError(f"{pool.name}.{self.hops[hop].method} failed on item {item.key!r}: "
                              f"{exc.cause if exc.cause is not None else exc}") from exc
        pool.done(actor, busy)
        item.parts[part] = table
        item.waiting -= 1
        if item.waiting:
            return
        import pyarrow as pa

        tables = [t for t in item.parts if t is not None]
        item.table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
        item.parts = []
        if hop + 1 < len(self.hops):
            self._enter(item, hop + 1)
        else:
            self.items_in_stream -= 1
            self.completed += 1
            self.sink(item, item.table)

    def run(self, items: Iterable[Item]) -> int:
        """Push every item through and return how many completed."""
        pending = iter(items)
        exhausted = False
        while True:
            while not exhausted and self.has_room:
                item = next(pending, None)
                if item is None:
                    exhausted = True
                    break
                self.add(item)
            if exhausted and not self.busy:
                return self.completed
            self.poll()
