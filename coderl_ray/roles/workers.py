"""The long-lived roles of a run: generators, critic scorers and sandbox executors (each a :class:`RolePool` of
Ray actors, see :mod:`coderl_ray.roles.pool`).

Each wraps the pure core the stages always used - :class:`~coderl_ray.rollout.generator.ProgramGenerator`, the
critic scorer of :mod:`coderl_ray.rl.scoring`, the sandbox's :func:`~coderl_ray.execution.stage.execute_table` -
and adds only what a role that outlives a stage needs: its models follow published versions (every call says which
version it wants, so a restarted actor catches up on its next call), and it holds several problem sets (rollout's
training problems, evaluation's test problems) keyed by name, shipped once as object references.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from coderl_ray.roles.pool import Role


@dataclass(frozen=True)
class ModelRef:
    """Which weights a call wants: model ``name`` at ``version``; ``folder`` holds version ``folder_version`` of it
    (what an actor that does not hold the model yet - new, or restarted by Ray - builds it from before fetching
    ``version`` from the weight store)."""

    name: str
    folder: str
    folder_version: int
    version: int

    def at(self, version: int) -> ModelRef:
        return ModelRef(self.name, self.folder, self.folder_version, int(version))

    @classmethod
    def of_folder(cls, name: str, folder, version: int | None = None) -> ModelRef:
        """The model saved in ``folder``, as version ``version`` (None: a version of its own, derived from the path,
        for callers outside a pipeline that just name a folder)."""
        import zlib
        from pathlib import Path

        path = str(Path(folder).resolve())
        v = -2 - zlib.crc32(path.encode()) if version is None else int(version)
        return cls(name, path, v, v)


class _Models:
    """Named models of one actor, each with a :class:`~coderl_ray.roles.weights.Follower`."""

    def __init__(self, store, build):
        self.store, self.build = store, build
        self.held: dict[str, tuple[Any, Any]] = {}  # name -> (core, follower)

    def get(self, ref: ModelRef):
        """The model at ``ref.version``: as held, else synced from the weight store, else built from ``ref.folder``
        (when nothing is held yet, or the store lacks the version and the folder holds exactly it)."""
        from coderl_ray.roles.weights import NotPublished

        held = self.held.get(ref.name)
        if held is None:
            held = self._build(ref)
        core, follower = held
        try:
            follower.sync(_module_of(core), ref.version)
        except NotPublished:
            if ref.version != ref.folder_version:
                raise
            core, _ = self._build(ref)
        return core

    def _build(self, ref: ModelRef):
        from coderl_ray.roles.weights import Follower

        held = (self.build(ref.folder), Follower(self.store, ref.name, ref.folder_version))
        self.held[ref.name] = held
        return held


def _module_of(core):
    """The torch module a role's core holds: a generator's ``model``, a critic scorer's ``critic``."""
    return core.model if hasattr(core, "model") else core.critic


class GeneratorRole(Role):
    """Samples programs with the actor (and, for critic sampling, the repair model)."""

    def __init__(self, store, seed: int, logprob_rows: int = 64, warm: ModelRef | None = None):
        from coderl_ray.rollout.generator import ProgramGenerator

        self.seed, self.logprob_rows = seed, logprob_rows
        self.models = _Models(store, lambda folder: ProgramGenerator(folder, seed=seed))
        if warm is not None:
            self.models.get(warm)  # load at start-up, not on the first call

    def generate(self, prompts: pa.Table, model: ModelRef, params, round_: int, seed: int,
                 logprob_temperature: float | None = None, policy_version: int | None = None) -> pa.Table:
        """Sample rows (``rollout.stage.SAMPLE_SCHEMA``) for the prompt rows, tagged with the policy version;
        with ``logprob_temperature``, also the behaviour log-probabilities of every sampled token (``old_logprobs``,
        empty for the greedy baseline) under softmax(logits / that temperature), the policy that drew them.
        ``policy_version``: the version recorded on the rows (default: the model's)."""
        from coderl_ray.rollout.stage import samples_table

        generator = self.models.get(model)
        generator.seed = seed  # the sampling keys' seed (rollout and evaluation draw from different streams)
        version = model.version if policy_version is None else policy_version
        table = samples_table(generator, prompts.to_pylist(), params, round_, version)
        if logprob_temperature is not None:
            table = table.append_column("old_logprobs", behaviour_logprobs(generator, table, logprob_temperature,
                                                                            rows=self.logprob_rows))
        return table


    def generate_units(self, units: pa.Table, actor: ModelRef, repair: ModelRef | None, params, seed: int) -> pa.Table:
        """Critic sampling's programs for a table of units (``inference.stage.UNIT_SCHEMA``): plain samples and
        refinements from the actor, repairs from the repair model; ``prompt_ids`` always in the actor's tokenizer
        (the critic rates the problem and the program, whoever wrote it)."""
        from coderl_ray.inference.continuation import generate_unit
        from coderl_ray.inference.stage import SAMPLE_SCHEMA

        models = {"actor": self.models.get(actor)}
        rows = []
        for unit in units.to_pylist():
            if unit["model"] not in models:
                if unit["model"] != "repair" or repair is None:
                    raise ValueError(f"a critic sampling unit asks for the {unit['model']!r} model, which this run "
                                     "does not have")
                models["repair"] = self.models.get(repair)
            rows += generate_unit(models[unit["model"]], models["actor"].tokenizer, unit, params, seed)
        return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)

    def logprobs(self, table: pa.Table, model: ModelRef, temperature: float = 1.0) -> pa.Array:
        """log p(w_t) of every row's program tokens (``prompt_ids``, ``token_ids``) under ``model``: what the
        weight-publication tests compare with the trainer's own."""
        return behaviour_logprobs(self.models.get(model), table, temperature, sampled_only=False,
                                  rows=self.logprob_rows)


def behaviour_logprobs(generator, table: pa.Table, temperature: float, sampled_only: bool = True,
                       rows: int = 64) -> pa.Array:
    """log p(w_t) of each sampled program's tokens under the generator's model at ``temperature``: teacher-forced
    passes of :class:`~coderl_ray.rl.scoring.LogprobScorer` over ``rows`` programs at a time
    (``rollout.score_batch_size``), the function the RL step's trust region uses (empty for the greedy baseline
    unless ``sampled_only`` is off). On GPU the generator's weights are bf16, so
    these differ from the fp32-plus-autocast step's by bf16 rounding (the first step's ``logprob_shift`` shows by
    how much)."""
    from coderl_ray.rl.scoring import LogprobScorer

    programs = table.select(["prompt_ids", "token_ids"] + (["is_greedy"] if sampled_only else [])).to_pylist()
    scorer = LogprobScorer(generator.model, generator.tokenizer.pad_token_id, generator.device,
                           temperature=temperature)
    sampled = [i for i, r in enumerate(programs) if r["token_ids"] and not (sampled_only and r["is_greedy"])]
    values: list[list[float]] = [[] for _ in programs]
    for start in range(0, len(sampled), rows):
        idx = sampled[start: start + rows]
        for i, logp in zip(idx, scorer.logprobs([programs[i] for i in idx])):
            values[i] = [float(x) for x in logp]
    return pa.array(values, type=pa.list_(pa.float32()))


class ScorerRole(Role):
    """Critic scores of executed programs (token logits, predicted class, P(passed)), with the critic at the version
    each call asks for."""

    def __init__(self, store, precision: str = "fp32", warm: ModelRef | None = None):
        from coderl_ray.rl.scoring import CriticScorer

        self.models = _Models(store, lambda folder: CriticScorer.load(folder, precision))
        if warm is not None:
            self.models.get(warm)

    def score(self, table: pa.Table, critic: ModelRef) -> pa.Table:
        return self.models.get(critic)(table)

    def score_for_sampling(self, table: pa.Table, critic: ModelRef, with_examples: frozenset) -> pa.Table:
        """Critic sampling's columns (``inference.stage.sampling_columns``): the example verdict under its own
        name, P(passed), and each program's seed."""
        from coderl_ray.inference.stage import sampling_columns

        scorer = self.models.get(critic)
        return sampling_columns(scorer(table), with_examples, scorer.n_classes)


class ExecutorRole(Role):
    """Runs programs against a problem set's tests in one warm sandbox (the ``sandbox`` resource's executor)."""

    def __init__(self, tier: str = "auto"):
        from coderl_ray.sandbox import Sandbox

        self.sandbox = Sandbox(tier)
        self.problem_sets: dict[str, dict[str, dict[str, Any]]] = {}

    def execute(self, table: pa.Table, problem_set: str, problems: list, limits) -> pa.Table:
        """``problems``: a one-element list holding the ObjectRef of the set (shipped once, resolved here once)."""
        from coderl_ray.execution.stage import execute_table

        if problem_set not in self.problem_sets:
            import ray

            from coderl_ray.execution.stage import _problem_dict

            value = problems[0]
            self.problem_sets[problem_set] = _problem_dict(ray.get(value) if isinstance(value, ray.ObjectRef)
                                                           else value)
        return execute_table(table, self.problem_sets[problem_set], limits, self.sandbox)

    def __del__(self):
        sandbox = getattr(self, "sandbox", None)
        if sandbox is not None:
            sandbox.close()
