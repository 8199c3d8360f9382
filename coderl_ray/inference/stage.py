"""Critic sampling on the run's roles: one stream per pass, and the hidden-test judgement of every program.

    units -> generator actor pool (actor + repair model) -> sandbox pool (example tests) -> critic scorer pool

A pass has no barrier inside: a unit's programs run on the examples while later units are still generating, and are
scored as their verdicts arrive. The generators, sandbox executors and critic scorers are the run's persistent
roles (:mod:`coderl_ray.roles`; their resources are declared in :mod:`coderl_ray.roles.setup`): the same ones that
sampled, executed and scored the rounds.

The generators are :class:`~coderl_ray.rollout.generator.ProgramGenerator` (the rollout's, sampling rows keyed by
:func:`~coderl_ray.inference.continuation.cs_sample_key`) and the scorers :class:`~coderl_ray.rl.scoring.CriticScorer`
(RL scoring's, under the training step's autocast), followed by :func:`sampling_columns`, a pure step.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from coderl_ray.config import PipelineConfig
from coderl_ray.inference.continuation import cs_sampling_params
from coderl_ray.inference.procedure import Request, best_prefix, has_example_tests, token_pass_probs

REQUEST_TYPE = pa.struct([
    ("problem_id", pa.string()), ("cs_pass", pa.int32()), ("first", pa.int32()), ("n", pa.int32()),
    ("origin", pa.string()), ("source", pa.string()), ("prompt", pa.string()), ("seed_ids", pa.list_(pa.int32())),
    ("parent_id", pa.string()),
])
UNIT_SCHEMA = pa.schema([("unit", pa.int32()), ("model", pa.string()), ("requests", pa.list_(REQUEST_TYPE))])
SAMPLE_SCHEMA = pa.schema([
    ("problem_id", pa.string()), ("sample_id", pa.string()), ("cs_pass", pa.int32()), ("origin", pa.string()),
    ("parent_id", pa.string()), ("prefix_len", pa.int32()), ("code", pa.string()),
    ("token_ids", pa.list_(pa.int32())), ("prompt_ids", pa.list_(pa.int32())),
])
# What the scorer makes of the sandbox's result columns: the verdict on the *example* tests, under its own name.
EXAMPLE_COLUMNS = {"outcome": "example_outcome", "passed_tests": "example_passed_tests",
                   "total_tests": "example_total_tests", "error": "example_error"}


def units_table(units: list[list[Request]]) -> pa.Table:
    rows = [{"unit": i, "model": unit[0].model,
             "requests": [{"problem_id": r.problem_id, "cs_pass": r.cs_pass, "first": r.first, "n": r.n,
                           "origin": r.origin, "source": r.source, "prompt": r.prompt, "seed_ids": list(r.seed_ids),
                           "parent_id": r.parent_id} for r in unit]} for i, unit in enumerate(units)]
    return pa.Table.from_pylist(rows, schema=UNIT_SCHEMA)


def sampling_columns(table: pa.Table, with_examples: frozenset[str], n_classes: int) -> pa.Table:
    """Critic sampling's columns from a table scored by :class:`~coderl_ray.rl.scoring.CriticScorer` (pure).

    The sandbox's verdict moves to ``example_*`` names (None for a problem without example tests, which ran
    nothing); the program's seed (``seed_len``, ``seed_value``: its best prefix, from the token-level "passed"
    probabilities of ``critic_logits`` [T, ``n_classes``]) is added; ``critic_pass_prob`` stays; the token logits,
    the predicted class and the sandbox's per-test detail are dropped."""
    import numpy as np

    has = [pid in with_examples for pid in table.column("problem_id").to_pylist()]
    for old, new in EXAMPLE_COLUMNS.items():
        type_ = table.schema.field(old).type
        values = [v if h else None for v, h in zip(table.column(old).to_pylist(), has)]
        table = table.set_column(table.column_names.index(old), pa.field(new, type_), pa.array(values, type=type_))
    seeds = [best_prefix(token_pass_probs(np.asarray(flat, dtype=np.float32).reshape(-1, n_classes)))
             for flat in table.column("critic_logits").to_pylist()]
    drop = [c for c in ("test_results", "duration_s", "critic_logits", "critic_pred") if c in table.column_names]
    table = table.drop_columns(drop)
    table = table.append_column(pa.field("seed_len", pa.int32()), pa.array([n for n, _ in seeds], type=pa.int32()))
    return table.append_column(pa.field("seed_value", pa.float64()),
                               pa.array([v if n else None for n, v in seeds], type=pa.float64()))


def _examine_hops(cfg: PipelineConfig, roles, problems: list[dict[str, Any]], critic) -> list:
    """The sandbox executors on the example tests, then the critic scorers with critic sampling's columns."""
    from coderl_ray.execution.stage import limits_from_config
    from coderl_ray.roles.pool import Hop

    with_examples = frozenset(p["problem_id"] for p in problems if has_example_tests(p))
    problem_set, problem_ref = roles.problems(problems)
    limits = limits_from_config(cfg.sandbox, example_tests=True)
    return [Hop(roles.executors, "execute", lambda item: (problem_set, problem_ref, limits),
                rows=cfg.sandbox.batch_size),
            Hop(roles.scorers, "score_for_sampling", lambda item: (critic, with_examples),
                rows=cfg.cs.critic_batch_size)]


def run_pass(cfg: PipelineConfig, roles, units: list[list[Request]], problems: list[dict[str, Any]], actor,
             critic, repair, seed: int, dest) -> None:
    """One pass into ``dest``: every unit's programs (generators: ``actor``, and ``repair`` for repair units, both
    :class:`~coderl_ray.roles.workers.ModelRef`), run on the example tests and scored by ``critic``; a part per
    unit, so a killed pass resumes with the units it had not finished."""
    from coderl_ray.data.parts import PartFolder
    from coderl_ray.progress import stage_bar
    from coderl_ray.roles.pool import Hop, Item, Stream

    params = cs_sampling_params(cfg)
    table = units_table(units)
    parts = PartFolder(dest, {"units": table.to_pylist(), "actor": [actor.folder, actor.version],
                              "critic": [critic.folder, critic.version], "seed": seed, "params": repr(params)})

    def sink(item: Item, scored: pa.Table) -> None:
        parts.write(item.key, scored)
        bar.update(scored.num_rows)

    stream = Stream([Hop(roles.generators, "generate_units", lambda item: (actor, repair, params, seed)),
                     *_examine_hops(cfg, roles, problems, critic)], sink)
    items = [Item(i, table.slice(i, 1)) for i in range(table.num_rows) if not parts.has(i)]
    total = sum(r["n"] for u in table.column("requests").to_pylist() for r in u)
    with stage_bar("critic sampling", total=total, unit="program") as bar:
        stream.run(items)
    parts.finish()


def examine(cfg: PipelineConfig, roles, samples: pa.Table, problems: list[dict[str, Any]], critic, dest) -> None:
    """Programs already written (``SAMPLE_SCHEMA`` rows) through the example tests and the critic, into ``dest``
    as a pass folder holds them."""
    from coderl_ray.data.parts import PartFolder
    from coderl_ray.roles.pool import Item, Stream

    parts = PartFolder(dest, {"programs": samples.column("sample_id").to_pylist(), "critic": critic.folder})
    Stream(_examine_hops(cfg, roles, problems, critic), lambda item, table: parts.write(item.key, table)).run(
        [Item(0, samples)])
    parts.finish()


def judge(cfg: PipelineConfig, roles, pass_dirs: list, problems: list[dict[str, Any]], dest) -> None:
    """Every program of every pass on the hidden tests, into ``dest``: ids, code and the result columns."""
    import pyarrow.parquet as pq

    from coderl_ray.data.parts import PartFolder
    from coderl_ray.execution.stage import limits_from_config
    from coderl_ray.roles.pool import Hop, Item, Stream

    programs = pa.concat_tables([pq.read_table(d, columns=["problem_id", "sample_id", "code"]) for d in pass_dirs])
    problem_set, problem_ref = roles.problems(problems)
    limits = limits_from_config(cfg.sandbox)
    rows = cfg.sandbox.batch_size
    parts = PartFolder(dest, {"passes": [str(d) for d in pass_dirs], "rows": programs.num_rows, "batch": rows})
    items = [Item(i, programs.slice(s, rows)) for i, s in enumerate(range(0, programs.num_rows, rows))]
    Stream([Hop(roles.executors, "execute", lambda item: (problem_set, problem_ref, limits))],
           lambda item, table: parts.write(item.key, table)).run([it for it in items if not parts.has(it.key)])
    parts.finish()
