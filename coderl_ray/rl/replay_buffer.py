"""The replay buffer: execution results with returns, as Parquet, one folder per round.

    <root>/round_0001/part-*.parquet     samples + results + reward + relative_return + advantage

A round folder appears only when complete (written to ``round_0001.tmp`` then renamed), so a crash mid-write never
leaves a half round that a rerun would mistake for a finished one. Trainers read the folders back as a Ray Dataset
and take their share with ``ray.train.get_dataset_shard``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from coderl_ray.data.parquet import read_parquet
from coderl_ray.rl.returns import group_advantages


def round_dir(root: str | Path, round_: int) -> Path:
    return Path(root) / f"round_{round_:04d}"


def _with_returns(group: pa.Table, algorithm: str = "coderl") -> pa.Table:
    """One problem's rows with their rewards and advantages (:func:`coderl_ray.rl.returns.group_advantages`)."""
    rows = group_advantages(group.to_pylist(), algorithm)
    if not rows:
        return pa.Table.from_pylist([], schema=_schema_with_returns(group.schema))
    return pa.Table.from_pylist(rows, schema=_schema_with_returns(group.schema))


def _schema_with_returns(schema: pa.Schema) -> pa.Schema:
    for name in ("reward", "relative_return", "advantage"):
        if name not in schema.names:
            schema = schema.append(pa.field(name, pa.float64()))
    return schema


def returns_by_problem(table: pa.Table, algorithm: str = "coderl") -> pa.Table:
    """Rewards, relative returns and the ``algorithm``'s advantages (``rl.algorithm``) of a table that holds whole
    problems (every sample of each, with its greedy baseline when the rollout drew one), computed per problem: what a
    rollout item becomes before it is stored, in the staged and the online loop alike."""
    groups: dict[str, list[int]] = {}
    for i, pid in enumerate(table.column("problem_id").to_pylist()):
        groups.setdefault(pid, []).append(i)
    parts = [_with_returns(table.take(idx), algorithm) for idx in groups.values()]
    if not parts:
        return pa.Table.from_pylist([], schema=_schema_with_returns(table.schema))
    return pa.concat_tables(parts)


def write_parquet_atomic(ds, dest: str | Path) -> Path:
    """Write a Dataset to ``dest`` as Parquet so that ``dest`` exists only once complete (tmp folder + rename)."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.write_parquet(str(tmp))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def write_round(results, root: str | Path, round_: int, algorithm: str = "coderl") -> Path:
    """Group a results Dataset by problem, add rewards and the ``algorithm``'s advantages, write the round folder."""
    import ray

    # One shuffle partition per CPU: the default (200) costs 20-40 s of task overhead per round on a small cluster.
    partitions = max(1, int(ray.cluster_resources().get("CPU", 1)))
    with_returns = results.groupby("problem_id", num_partitions=partitions).map_groups(
        _with_returns, fn_kwargs={"algorithm": algorithm}, batch_format="pyarrow")
    return write_parquet_atomic(with_returns, round_dir(root, round_))


def read_rounds(root: str | Path, rounds: list[int]):
    paths = [str(round_dir(root, r)) for r in rounds]
    missing = [p for p in paths if not Path(p).is_dir()]
    if missing:
        raise FileNotFoundError(f"replay buffer round folder(s) missing: {', '.join(missing)}")
    return read_parquet(paths)


def ground_truth_rows(problems: list[dict[str, Any]], tokenizer, max_source_tokens: int,
                      max_target_tokens: int, reindent: str = "spaces") -> list[dict[str, Any]]:
    """Reference programs as training rows: the SFT data, and "passed" examples for the critic (paper).

    ``reindent``: the indentation style the programs are put in first (:mod:`coderl_ray.data.reindent`).
    """
    from coderl_ray.data.prompts import build_prompt
    from coderl_ray.data.reindent import reindent as reindent_code
    from coderl_ray.models.batching import encode_program, encode_prompt

    rows = []
    for p in problems:
        prompt_ids = encode_prompt(tokenizer, build_prompt(p), max_source_tokens)
        for k, code in enumerate(p.get("solutions") or []):
            ids = encode_program(tokenizer, reindent_code(code, reindent), max_target_tokens)
            rows.append({"problem_id": p["problem_id"], "sample_id": f"{p['problem_id']}#gt{k}",
                         "prompt_ids": prompt_ids, "token_ids": ids, "outcome": "passed"})
    return rows
