"""The online loop's bookkeeping, as pure functions: when an item may be generated, when a step may run, which rows
a step may train on (no Ray, no torch; unit-tested on plain lists).

Notation. The run samples ``N`` work items (batches of problems, round by round: the staged loop's problems in the
staged loop's order) and takes ``S`` RL optimizer steps (``rl.rounds x rl.steps_per_round``), both as the staged loop
does. The actor's version ``v`` is the number of RL steps applied (0 = the SFT actor). Item ``i`` is *due* at step

    d(i) = floor(i * S / N)

so generation and training advance together, and:

* **admission** - item ``i`` may start generating once ``v >= min(d(i), last(i) - k)`` (``k = rl.max_staleness``,
  ``last(i)`` the step before item ``i + 1`` is due): generation runs ahead of training, but only so far that the
  item's rows are still in the window at every step they are due to feed (:func:`may_generate`);
* **pacing** - step ``s`` may run once every item due at or before ``s`` has arrived (executed, scored, stored): the
  trainer never runs ahead of the data it is meant to see;
* **staleness** - step ``s`` trains only on rows sampled by a policy at most ``k`` versions old
  (``policy_version >= s - k``); a row that leaves that window without having been trained on is *dropped* and
  counted. The PPO-style ratio against each row's behaviour log-probabilities (``rl.clip_ratio``) corrects for what
  the window lets through.

With ``k = 0`` this is the synchronous loop (sample with ``v``, train step ``v`` on exactly those rows); larger ``k``
lets generation, execution and scoring of later items overlap with training on earlier ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


def due_step(item: int, items: int, steps: int) -> int:
    """The RL step item ``item`` (of ``items``) is due at: items spread evenly over ``steps`` steps.

    >>> [due_step(i, 6, 3) for i in range(6)]  # two items per step
    [0, 0, 1, 1, 2, 2]
    >>> [due_step(i, 3, 6) for i in range(3)]  # more steps than items: every other step gets a new item
    [0, 2, 4]
    """
    if items < 1 or steps < 1:
        raise ValueError(f"need at least one item and one step, got {items} items, {steps} steps")
    return item * steps // items


def may_generate(item: int, items: int, steps: int, version: int, max_staleness: int) -> bool:
    """Admission: item ``i`` starts once its rows will still be inside the staleness window at the last step they
    are due to feed, the step before the next item is due: ``v >= last(i) - k`` with ``last(i) = max(d(i),
    d(i+1) - 1)`` (``S - 1`` for the last item), and never later than ``v = d(i)``, which pacing needs it by.

    Starting ``k`` steps before ``d(i)`` instead would let generation run furthest ahead, but its rows would reach
    the trainer already ``k`` versions old and leave the window after one step, so the steps up to the next item's
    would find it empty (measured on the demo: about half of the 60 steps had no RL row).

    >>> may_generate(4, 6, 3, version=0, max_staleness=1)  # due at step 2, two steps ahead of version 0
    False
    >>> may_generate(4, 6, 3, version=1, max_staleness=1)
    True
    >>> [due_step(i, 3, 6) for i in range(3)]  # 3 items over 6 steps: item 1 feeds steps 2 and 3
    [0, 2, 4]
    >>> may_generate(1, 3, 6, version=1, max_staleness=1), may_generate(1, 3, 6, version=2, max_staleness=1)
    (False, True)
    >>> may_generate(1, 3, 6, version=2, max_staleness=0)  # k = 0: at its due step, as pacing needs
    True
    """
    due = due_step(item, items, steps)
    last = max(due, (due_step(item + 1, items, steps) if item + 1 < items else steps) - 1)
    return version >= min(due, last - max_staleness)


def may_step(step: int, arrived: set[int], items: int, steps: int) -> bool:
    """Pacing: step ``step`` waits for every item due at or before it.

    >>> may_step(1, {0, 1}, 6, 3), may_step(1, {0, 1, 2, 3}, 6, 3)  # step 1 needs items 0-3
    (False, True)
    """
    needed = [i for i in range(items) if due_step(i, items, steps) <= step]
    return all(i in arrived for i in needed)


@dataclass
class Window:
    """The RL rows a step may train on: rows arrive with their ``policy_version``; step ``s`` samples among those with
    ``policy_version >= s - max_staleness``. Rows that age out unused are counted in ``dropped``.

    >>> w = Window(max_staleness=1, seed=0)
    >>> w.add([{"sample_id": "a", "policy_version": 0}, {"sample_id": "b", "policy_version": 1}])
    >>> sorted(r["sample_id"] for r in w.batch(step=2, size=8))  # "a" is 2 versions old at step 2: out
    ['b']
    >>> w.dropped, w.trained_ids == {"b"}
    (1, True)
    """

    max_staleness: int
    seed: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0  # rows that left the window without ever being trained on
    trained_ids: set[str] = field(default_factory=set)
    max_seen_staleness: int = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def expire(self, step: int) -> None:
        oldest = step - self.max_staleness
        keep = []
        for r in self.rows:
            if r["policy_version"] >= oldest:
                keep.append(r)
            elif r["sample_id"] not in self.trained_ids:
                self.dropped += 1
        self.rows = keep

    def batch(self, step: int, size: int) -> list[dict[str, Any]]:
        """Up to ``size`` rows for step ``step``, drawn without replacement among the rows in the window (seeded per
        step); fewer when the window holds fewer."""
        self.expire(step)
        rng = random.Random(f"{self.seed}/{step}")
        chosen = rng.sample(self.rows, min(size, len(self.rows)))
        for r in chosen:
            self.trained_ids.add(r["sample_id"])
            self.max_seen_staleness = max(self.max_seen_staleness, step - r["policy_version"])
        return chosen


def critic_due(step: int, steps: int, arrived_items: int, items: int) -> bool:
    """The critic's step ``step`` (of ``steps``) runs once its share of the items has arrived: the critic sees the
    buffer grow as the staged critic saw it round by round.

    >>> critic_due(0, 10, 1, 5), critic_due(4, 10, 2, 5), critic_due(5, 10, 2, 5)
    (True, True, False)
    """
    return arrived_items * steps >= step * items


def sample_rows(rows: list[dict[str, Any]], size: int, seed: str) -> list[dict[str, Any]]:
    """``size`` rows drawn uniformly (with replacement when fewer rows exist than asked for)."""
    rng = random.Random(seed)
    if not rows:
        return []
    if len(rows) >= size:
        return rng.sample(rows, size)
    return [rng.choice(rows) for _ in range(size)]
