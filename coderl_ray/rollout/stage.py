"""Ray Data wrapper of the rollout: a pool of generator actors over a dataset of prompts."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from coderl_ray.config import RolloutConfig
from coderl_ray.data.prompts import build_prompt
from coderl_ray.rollout.generator import SamplingParams


def samples_table(generator, rows: list[dict[str, Any]], params: SamplingParams, round_: int,
                  policy_version: int) -> pa.Table:
    """Prompt rows -> sample rows (``SAMPLE_SCHEMA``) from a :class:`~coderl_ray.rollout.generator.ProgramGenerator`,
    each carrying its prompt's token ids (what the critic and the RL step read)."""
    from coderl_ray.models.batching import encode_prompt

    samples = generator.generate(rows, params, round_, policy_version)
    prompt_ids = {r["problem_id"]: encode_prompt(generator.tokenizer, build_prompt(r), params.max_source_tokens)
                  for r in rows}
    for s in samples:
        s["prompt_ids"] = prompt_ids[s["problem_id"]]
    return pa.Table.from_pylist(samples, schema=SAMPLE_SCHEMA)


class GenerateBatch:
    """``map_batches`` callable: loads the actor once per pool member, turns prompt rows into sample rows."""

    def __init__(self, model_dir: str, params: SamplingParams, round_: int, policy_version: int, seed: int):
        from coderl_ray.rollout.generator import ProgramGenerator

        self.generator = ProgramGenerator(model_dir, seed=seed)
        self.params, self.round, self.policy_version = params, round_, policy_version

    def __call__(self, batch: pa.Table) -> pa.Table:
        return samples_table(self.generator, batch.to_pylist(), self.params, self.round, self.policy_version)


SAMPLE_SCHEMA = pa.schema([
    ("problem_id", pa.string()), ("sample_id", pa.string()), ("round", pa.int32()), ("policy_version", pa.int32()),
    ("is_greedy", pa.bool_()), ("code", pa.string()), ("token_ids", pa.list_(pa.int32())),
    ("prompt_ids", pa.list_(pa.int32())),
])


def prompt_rows(problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The few fields the generator reads (the prompt format needs the test kind, never the tests)."""
    return [{"problem_id": p["problem_id"], "question": p["question"], "starter_code": p.get("starter_code") or "",
             "fn_name": p.get("fn_name") or "", "tests": {"kind": p["tests"]["kind"]}} for p in problems]


def sampling_params(cfg: RolloutConfig, max_source_tokens: int, num_samples: int | None = None,
                    temperature: float | None = None, top_p: float | None = None,
                    greedy_baseline: bool = True) -> SamplingParams:
    return SamplingParams(
        num_samples=cfg.num_samples if num_samples is None else num_samples,
        temperature=cfg.temperature if temperature is None else temperature,
        top_p=cfg.top_p if top_p is None else top_p, top_k=cfg.top_k,
        max_new_tokens=cfg.max_new_tokens, max_source_tokens=max_source_tokens, greedy_baseline=greedy_baseline,
        decoder=cfg.decoder, compile=cfg.compile, max_rows_per_generate=cfg.max_rows_per_generate,
    )


def prompt_dataset(problems: list[dict[str, Any]], batch_size: int):
    """The prompts as a Ray Dataset of one block per batch: ``batch_size`` rows each, the last one the remainder.

    ``from_items`` splits rows into blocks of its own sizes, and ``map_batches(batch_size=B)`` cuts batches within
    the blocks it bundles, so 500 prompts became 46 generator calls, 16 of them with 2 prompts: every (rows, prompt
    bucket) shape is a compile and a CUDA-graph capture for the static decoder, and torch.compile gives up past its
    recompile limit. Blocks of exactly ``batch_size`` rows make every call a full batch but the last.
    """
    import ray

    rows = prompt_rows(problems)
    tables = [pa.Table.from_pylist(rows[i: i + batch_size]) for i in range(0, len(rows), batch_size)]
    return ray.data.from_arrow(tables) if tables else ray.data.from_items([])


def generate_samples(problems: list[dict[str, Any]], model_dir: str, cfg: RolloutConfig, params: SamplingParams,
                     round_: int = 0, policy_version: int = 0, seed: int = 0):
    """A (lazy, streaming) Ray Dataset of sample rows for ``problems``, from the actor at ``model_dir``."""
    import ray

    return prompt_dataset(problems, cfg.batch_size_per_worker).map_batches(
        GenerateBatch,
        fn_constructor_args=(str(model_dir), params, round_, policy_version, seed),
        batch_size=cfg.batch_size_per_worker,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.num_workers),
        num_cpus=cfg.cpus_per_worker,
        num_gpus=cfg.gpus_per_worker,
    )
