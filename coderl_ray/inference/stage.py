"""Critic sampling on Ray Data: one streaming pipeline per pass, and the hidden-test judgement of every program.

    units -> generator actor pool (actor + repair model) -> sandbox pool (example tests) -> critic scorer pool

A pass has no barrier inside: a unit's programs run on the examples while later units are still generating, and are
scored as their verdicts arrive. Resources are declared here, where the stages are wired: the generators take
``rollout.num_workers`` x ``rollout.cpus_per_worker`` / ``gpus_per_worker``, the sandbox pool ``sandbox.*``, the
critic scorers ``cs.critic_num_workers`` x ``cs.critic_cpus_per_worker`` / ``critic_gpus_per_worker``.

The generators are :class:`~coderl_ray.rollout.generator.ProgramGenerator` (the rollout's, sampling rows keyed by
:func:`~coderl_ray.inference.continuation.cs_sample_key`) and the scorers :class:`~coderl_ray.rl.scoring.CriticScorer`
(RL scoring's, under the training step's autocast), followed by :func:`sampling_columns`, a pure step.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from coderl_ray.config import PipelineConfig
from coderl_ray.data.parquet import read_parquet
from coderl_ray.inference.continuation import cs_sampling_params
from coderl_ray.inference.procedure import Request, best_prefix, has_example_tests, token_pass_probs
from coderl_ray.rollout.generator import SamplingParams

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


class GenerateUnits:
    """``map_batches`` callable: holds the actor (and the repair model, when given) and turns units into samples.

    The repair model lives beside the actor in each generator rather than in a pool of its own: repairs are a minority
    of a pass's programs, and a pool of their own would hold its CPUs or GPU idle most of the pass.
    """

    def __init__(self, actor_dir: str, repair_dir: str, params: SamplingParams, seed: int):
        from coderl_ray.rollout.generator import ProgramGenerator

        self.generators = {"actor": ProgramGenerator(actor_dir, seed=seed)}
        if repair_dir:
            self.generators["repair"] = ProgramGenerator(repair_dir, seed=seed)
        self.params, self.seed = params, seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        from coderl_ray.inference.continuation import generate_unit

        rows = []
        for unit in batch.to_pylist():
            rows += generate_unit(self.generators[unit["model"]], self.generators["actor"].tokenizer, unit,
                                  self.params, self.seed)
        return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


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


class ScoreForSampling:
    """``map_batches`` callable: RL scoring's :class:`~coderl_ray.rl.scoring.CriticScorer` (same critic loading,
    same autocast), then :func:`sampling_columns`."""

    def __init__(self, critic_dir: str, with_examples: frozenset[str], precision: str = "fp32"):
        from coderl_ray.rl.scoring import CriticScorer

        self.scorer = CriticScorer.load(critic_dir, precision)
        self.with_examples = with_examples

    def __call__(self, batch: pa.Table) -> pa.Table:
        return sampling_columns(self.scorer(batch), self.with_examples, self.scorer.n_classes)


def pass_dataset(cfg: PipelineConfig, units: list[list[Request]], problems: list[dict[str, Any]], actor_dir: str,
                 critic_dir: str, repair_dir: str | None, seed: int):
    """The lazy Dataset of one pass: every unit's programs, run on the examples and scored."""
    import ray

    params = cs_sampling_params(cfg)
    table = units_table(units)
    # One block per unit, so the generators share a pass's units between them.
    ds = ray.data.from_arrow([table.slice(i, 1) for i in range(table.num_rows)])
    samples = ds.map_batches(
        GenerateUnits, fn_constructor_args=(str(actor_dir), str(repair_dir or ""), params, seed),
        batch_size=1, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=cfg.rollout.num_workers),
        num_cpus=cfg.rollout.cpus_per_worker, num_gpus=cfg.rollout.gpus_per_worker)
    return examine(cfg, samples, problems, critic_dir)


def examine(cfg: PipelineConfig, samples, problems: list[dict[str, Any]], critic_dir: str):
    """Samples (``SAMPLE_SCHEMA`` rows) -> the sandbox pool on the example tests -> the critic scorer pool (lazy)."""
    import ray

    from coderl_ray.execution import execute_samples

    executed = execute_samples(samples, problems, cfg.sandbox, example_tests=True)
    with_examples = frozenset(p["problem_id"] for p in problems if has_example_tests(p))
    return executed.map_batches(
        ScoreForSampling, fn_constructor_args=(str(critic_dir), with_examples, cfg.train.precision),
        batch_size=cfg.cs.critic_batch_size,
        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=cfg.cs.critic_num_workers),
        num_cpus=cfg.cs.critic_cpus_per_worker, num_gpus=cfg.cs.critic_gpus_per_worker)


def judge_dataset(cfg: PipelineConfig, pass_dirs: list[str], problems: list[dict[str, Any]]):
    """Every program of every pass on the hidden tests (lazy): ids, code and the result columns."""
    from coderl_ray.execution import execute_samples

    programs = read_parquet(pass_dirs).select_columns(["problem_id", "sample_id", "code"])
    return execute_samples(programs, problems, cfg.sandbox)
