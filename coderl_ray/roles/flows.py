"""The streams the stages run on the roles: generate -> execute (rollout, evaluation) and score, written as parts.

    generate_and_execute(roles, problems, ...)   # prompts -> generators -> sandbox executors -> <dest>/part-*.parquet
    score_folder(roles, src, critic, dest)       # executed programs -> critic scorers -> <dest>/part-*.parquet

A work item is a batch of problems (``rollout.batch_size_per_worker``, all samples of a problem in one item, so
per-problem returns can be computed as the item completes) or a batch of programs to score. Items overlap: one
generates while the previous ones execute. Each completed item is one part of the output folder
(:class:`~coderl_ray.data.parts.PartFolder`), so a stage killed half-way resumes with the items it had not finished.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from coderl_ray.data.parts import PartFolder
from coderl_ray.progress import stage_bar
from coderl_ray.roles.pool import Hop, Item, Stream


def problem_batches(problems: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [problems[i: i + size] for i in range(0, len(problems), size)]


def generate_and_execute(roles, problems: list[dict[str, Any]], model, params, round_: int, seed: int, limits,
                         dest: Path, *, batch_size: int, logprob_temperature: float | None = None,
                         policy_version: int | None = None, transform: Callable[[pa.Table], pa.Table] | None = None,
                         label: str = "rollout", execute_rows: int = 64) -> tuple[Path, dict[str, float]]:
    """Sample ``params`` programs for every problem with ``model`` (a :class:`~coderl_ray.roles.workers.ModelRef`),
    run them on the problems' tests (``limits``), ``transform`` each item's table (e.g. add returns), write
    ``dest``. Returns ``dest`` and the seconds the generators and executors spent on it (their busy time)."""
    from coderl_ray.rollout.stage import prompt_rows

    batches = problem_batches(problems, batch_size)
    plan = {"items": [[p["problem_id"] for p in b] for b in batches], "model": [model.folder, model.version],
            "params": repr(params), "round": round_, "seed": seed, "limits": repr(limits)}
    parts = PartFolder(dest, plan)
    problem_set, problem_ref = roles.problems(problems)
    per_problem = params.num_samples + int(params.greedy_baseline)

    def sink(item: Item, table: pa.Table) -> None:
        parts.write(item.key, transform(table) if transform else table)
        bar.update(table.num_rows)

    stream = Stream([Hop(roles.generators, "generate",
                         lambda item: (model, params, round_, seed, logprob_temperature, policy_version)),
                     Hop(roles.executors, "execute", lambda item: (problem_set, problem_ref, limits),
                         rows=execute_rows)], sink)
    todo = [Item(i, pa.Table.from_pylist(prompt_rows(b))) for i, b in enumerate(batches) if not parts.has(i)]
    busy = {name: pool.stats.busy_s for name, pool in (("generator", roles.generators), ("sandbox", roles.executors))}
    with stage_bar(label, total=len(problems) * per_problem, unit="program") as bar:
        bar.update(sum(len(batches[k]) for k in parts.done_keys()) * per_problem)
        stream.run(todo)
    busy = {f"{name}_busy_s": round(pool.stats.busy_s - busy[name], 2)
            for name, pool in (("generator", roles.generators), ("sandbox", roles.executors))}
    return parts.finish(), busy


def score_table_items(table: pa.Table, rows: int) -> list[Item]:
    return [Item(i, table.slice(s, rows)) for i, s in enumerate(range(0, table.num_rows, rows))]


def score_folder(roles, src: Path, critic, dest: Path, batch_size: int, label: str = "score") -> Path:
    """Every row of the Parquet folder ``src`` plus the critic's scores, written to ``dest``."""
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    items = score_table_items(table, batch_size)
    parts = PartFolder(dest, {"src": str(src), "rows": table.num_rows, "critic": [critic.folder, critic.version],
                              "batch": batch_size})

    def sink(item: Item, scored: pa.Table) -> None:
        parts.write(item.key, scored)
        bar.update(scored.num_rows)

    with stage_bar(label, total=table.num_rows, unit="program") as bar:
        Stream([Hop(roles.scorers, "score", lambda item: (critic,))], sink).run(
            [it for it in items if not parts.has(it.key)])
    return parts.finish()


def score_rows(roles, table: pa.Table, critic, batch_size: int) -> pa.Table:
    """``table`` plus the critic's scores, in memory (for measuring a critic without writing anything)."""
    out: dict[int, pa.Table] = {}
    Stream([Hop(roles.scorers, "score", lambda item: (critic,))],
           lambda item, scored: out.__setitem__(item.key, scored)).run(score_table_items(table, batch_size))
    return pa.concat_tables([out[k] for k in sorted(out)]) if out else table
