"""How rows become optimizer steps: length bucketing, token-budgeted micro-batches, and a resumable data cursor.

Pure Python (no Ray, no torch), so every rule here is unit-tested on lists of dicts.

How the sizes compose, for one optimizer step:

* ``batch_size`` rows in total, ``batch_size // world_size`` on each worker (the loop's ``LoopConfig``);
* each worker splits its rows into micro-batches of at most ``micro_batch_size`` rows and at most
  ``max_tokens_per_micro_batch`` padded tokens, longest rows first, and accumulates their gradients;
* the micro-batch losses are weighted so that the step's loss is exactly the loss of the whole batch
  (:func:`micro_batch_weights`): splitting changes memory, never the objective.

Bucketing (``bucket_batches = k``) draws k step-batches at a time, sorts their rows by length and deals them back
out as k batches of similar lengths in a shuffled order, so little compute goes to padding.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

Row = dict[str, Any]


def row_lengths(row: Row) -> tuple[int, int]:
    """(prompt tokens, program tokens) of a training row."""
    return len(row["prompt_ids"]), len(row["token_ids"])


def padded_tokens(rows: list[Row]) -> int:
    """Tokens a padded batch of ``rows`` occupies: rows x (longest prompt + longest program)."""
    if not rows:
        return 0
    lengths = [row_lengths(r) for r in rows]
    return len(rows) * (max(p for p, _ in lengths) + max(q for _, q in lengths))


def split_micro_batches(rows: list[Row], max_rows: int = 0, max_tokens: int = 0) -> list[list[Row]]:
    """Split one worker's batch into micro-batches within ``max_rows`` rows and ``max_tokens`` padded tokens.

    Rows are sorted longest first so that rows of similar length share a micro-batch (less padding). A single row
    longer than the budget gets a micro-batch of its own rather than being dropped. 0 means no limit.

    >>> rows = [{"prompt_ids": [0] * p, "token_ids": [0] * q} for p, q in [(2, 2), (8, 8), (2, 3), (7, 9)]]
    >>> [[row_lengths(r) for r in mb] for mb in split_micro_batches(rows, max_tokens=34)]
    [[(8, 8), (7, 9)], [(2, 3), (2, 2)]]
    """
    order = sorted(rows, key=lambda r: sum(row_lengths(r)), reverse=True)
    out: list[list[Row]] = []
    current: list[Row] = []
    for row in order:
        candidate = current + [row]
        too_many = max_rows and len(candidate) > max_rows
        too_big = max_tokens and padded_tokens(candidate) > max_tokens
        if current and (too_many or too_big):
            out.append(current)
            current = [row]
        else:
            current = candidate
    if current:
        out.append(current)
    return out


def micro_batch_weights(objective: str, micro_batches: list[list[Row]]) -> list[float]:
    """Weights w_i with sum_i w_i * loss_i == loss of the whole batch, for each objective's normalisation.

    Cross-entropy (``sft``, and the CE half of RL) is a mean over program tokens, so a micro-batch weighs its share
    of the tokens; the RL loss (mean over tokens per program, then over programs) and the critic loss (mean over
    programs) weigh their share of the rows.

    >>> mbs = [[{"prompt_ids": [1], "token_ids": [1, 2, 3]}], [{"prompt_ids": [1], "token_ids": [1]}] * 2]
    >>> micro_batch_weights("sft", mbs), micro_batch_weights("rl", mbs)
    ([0.6, 0.4], [0.3333333333333333, 0.6666666666666666])
    """
    if objective == "sft":
        sizes = [sum(len(r["token_ids"]) for r in mb) for mb in micro_batches]
    elif objective in ("rl", "critic"):
        sizes = [len(mb) for mb in micro_batches]
    else:
        raise ValueError(f"unknown objective {objective!r}")
    total = sum(sizes)
    return [s / total if total else 0.0 for s in sizes]


def bucket_by_length(batches: Iterable[list[Row]], pool: int, seed: int) -> Iterator[list[Row]]:
    """Regroup every ``pool`` consecutive batches into as many batches of similar lengths, in a seeded order.

    Batch sizes are kept (the step's batch size does not change), only which rows share a batch. ``pool`` <= 1
    passes batches through unchanged.
    """
    if pool <= 1:
        yield from batches
        return
    rng = random.Random(seed)

    def regroup(pooled: list[list[Row]]) -> list[list[Row]]:
        rows = sorted((r for b in pooled for r in b), key=lambda r: sum(row_lengths(r)))
        regrouped = _cut(rows, pooled)
        rng.shuffle(regrouped)
        return regrouped

    yield from _regroup_pools(batches, pool, regroup)


def _cut(rows: list[Row], like: list[list[Row]]) -> list[list[Row]]:
    """``rows`` cut into consecutive batches of the sizes of ``like``'s batches."""
    out, start = [], 0
    for b in like:
        out.append(rows[start: start + len(b)])
        start += len(b)
    return out


def _regroup_pools(batches: Iterable[list[Row]], pool: int,
                   regroup: Callable[[list[list[Row]]], list[list[Row]]]) -> Iterator[list[Row]]:
    """Every ``pool`` consecutive batches (and the last, shorter pool) replaced by ``regroup(those batches)``."""
    buffer: list[list[Row]] = []
    for batch in batches:
        buffer.append(batch)
        if len(buffer) == pool:
            yield from regroup(buffer)
            buffer = []
    if buffer:
        yield from regroup(buffer)


def group_by_key(batches: Iterable[list[Row]], pool: int, key: str, seed: int) -> Iterator[list[Row]]:
    """Regroup every ``pool`` consecutive batches so that rows sharing ``key`` (a problem) sit side by side: the
    pool's rows are grouped by ``key``, the groups (and the rows within each) put in a seeded order, concatenated
    and cut back into batches of the original sizes. A loss that compares one problem's programs (the critic's
    ranking term) needs them in one batch; a group larger than a batch, or cut at a batch boundary, spans two.

    The stream must arrive with a group's rows close together (the critic's data is ordered by problem, not
    shuffled row by row: :func:`coderl_ray.stages.critic_dataset`), so that ``pool`` batches hold whole groups.

    >>> rows = [{"problem_id": p, "i": i} for i, p in enumerate("abab")]
    >>> [[r["problem_id"] for r in b] for b in group_by_key([rows[:2], rows[2:]], 2, "problem_id", 0)]
    [['a', 'a'], ['b', 'b']]
    """
    if pool < 1:
        raise ValueError(f"group_by_key needs pool >= 1, got {pool}")
    rng = random.Random(seed)

    def regroup(pooled: list[list[Row]]) -> list[list[Row]]:
        groups: dict[Any, list[Row]] = {}
        for row in (r for b in pooled for r in b):
            groups.setdefault(row[key], []).append(row)
        order = list(groups.values())
        rng.shuffle(order)
        rows = []
        for group in order:
            rng.shuffle(group)
            rows += group
        return _cut(rows, pooled)

    yield from _regroup_pools(batches, pool, regroup)


class BatchCursor:
    """An endless iterator over epochs of batches that knows, and can restore, where it is.

    ``make_epoch`` returns the batches of one epoch and must be deterministic for a given epoch number (a seeded
    shuffle); then the position ``(epoch, batches taken in that epoch)`` is enough to resume exactly: a restored
    cursor replays the epoch and skips what was already consumed. Ray Datasets cannot seek, so the skip reads the
    skipped rows once; that costs I/O, never a repeated or missed training example.
    """

    def __init__(self, make_epoch: Callable[[int], Iterable[list[Row]]], position: tuple[int, int] = (0, 0)):
        self._make_epoch = make_epoch
        self.epoch, self.taken = int(position[0]), 0
        self._iter = iter(self._make_epoch(self.epoch))
        for _ in range(int(position[1])):
            if next(self._iter, None) is None:
                raise ValueError(f"cannot resume at batch {position[1]} of epoch {self.epoch}: the epoch holds only "
                                 f"{self.taken} batches (did the dataset or batch size change?)")
            self.taken += 1

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.taken

    def __iter__(self) -> BatchCursor:
        return self

    def __next__(self) -> list[Row]:
        for _ in range(2):  # the current epoch, then (if it was exhausted) the next one
            for rows in self._iter:
                if rows:
                    self.taken += 1
                    return rows
            self.epoch, self.taken = self.epoch + 1, 0
            self._iter = iter(self._make_epoch(self.epoch))
        raise RuntimeError("the training data shard is empty")
