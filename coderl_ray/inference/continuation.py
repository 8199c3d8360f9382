"""Generating critic sampling's programs: plain, from a seed (a prefix of a program), or from a repair prompt.

A generation *unit* (:func:`coderl_ray.inference.procedure.pack_units`) is a list of requests. Each of its rows is a
source text (the prompt, or the repair prompt), a prefix of program tokens (empty unless refining) and a row key;
:meth:`coderl_ray.rollout.generator.ProgramGenerator.generate_rows` samples them, the one generator of rollout,
evaluation and critic sampling (same sampler, same decoders, same chunking; the module docstring there says how a
prefix reaches a seq2seq or a causal model). The program returned is the prefix followed by what the model adds, cut
after its first EOS and to ``max_new_tokens`` tokens in all, as a plain sample is.

Sampling settings (:func:`cs_sampling_params`): ``cs.temperature`` and ``cs.top_p``, as evaluation has its own
``eval.temperature`` / ``eval.top_p``; everything else is the rollout's sampler: ``rollout.top_k`` (the original's
generate() default of 50, which its critic sampling also ran with), ``rollout.max_new_tokens``, ``rollout.decoder``,
``rollout.compile``, ``rollout.max_rows_per_generate``.

Every row draws its randomness from a key of (seed, pass, problem id, sample index) (:func:`cs_sample_key`), like the
rollout's :func:`~coderl_ray.rollout.generator.sample_key`: a program depends on neither the unit it was packed in,
nor the rows beside it, nor the decoder call it fell into.
"""

from __future__ import annotations

import hashlib
from typing import Any

from coderl_ray.config import PipelineConfig
from coderl_ray.inference.procedure import sample_id
from coderl_ray.models.batching import encode_prompt
from coderl_ray.rollout.generator import SamplingParams


def cs_sample_key(seed: int, cs_pass: int, problem_id: str, index: int) -> int:
    """The random key of critic sampling's program ``index`` of ``problem_id`` in pass ``cs_pass``, in [0, 2**63).

    A stream of its own ("cs" in the hashed text), so that no CS program shares its randomness with a rollout or
    evaluation sample (:func:`coderl_ray.rollout.generator.sample_key`) whatever the seeds."""
    digest = hashlib.blake2b(f"{seed}/cs/{cs_pass}/{problem_id}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def cs_sampling_params(cfg: PipelineConfig) -> SamplingParams:
    """The sampler of critic sampling: ``cs.temperature`` / ``cs.top_p``, the rest from ``rollout.*`` (module
    docstring)."""
    r = cfg.rollout
    return SamplingParams(num_samples=1, temperature=cfg.cs.temperature, top_p=cfg.cs.top_p, top_k=r.top_k,
                          max_new_tokens=r.max_new_tokens, max_source_tokens=cfg.model.max_source_tokens,
                          greedy_baseline=False, decoder=r.decoder, compile=r.compile,
                          max_rows_per_generate=r.max_rows_per_generate)


def generate_unit(generator, prompt_tokenizer, unit: dict[str, Any], params: SamplingParams,
                  seed: int) -> list[dict[str, Any]]:
    """Sample rows of one unit (a dict ``{"unit", "model", "requests"}`` as :mod:`coderl_ray.inference.stage` ships
    it), from ``generator`` (a :class:`~coderl_ray.rollout.generator.ProgramGenerator` holding the actor or the
    repair model). ``prompt_ids`` of every row is the problem's prompt in ``prompt_tokenizer`` (the actor's, which
    the critic shares): the critic rates (problem, program) whatever model wrote the program."""
    tok = generator.tokenizer
    sources, prefixes, keys, meta = [], [], [], []
    for r in unit["requests"]:
        source = encode_prompt(tok, r["source"], params.max_source_tokens)
        prompt_ids = encode_prompt(prompt_tokenizer, r["prompt"], params.max_source_tokens)
        seed_ids = [int(t) for t in r["seed_ids"] or []]
        for j in range(r["n"]):
            sources.append(source)
            prefixes.append(seed_ids)
            keys.append(cs_sample_key(seed, r["cs_pass"], r["problem_id"], r["first"] + j))
            meta.append((r, j, prompt_ids))
    programs = generator.generate_rows(sources, prefixes, keys, params)
    rows = []
    for (r, j, prompt_ids), ids in zip(meta, programs):
        rows.append({
            "problem_id": r["problem_id"], "sample_id": sample_id(r["problem_id"], r["cs_pass"], r["first"] + j),
            "cs_pass": r["cs_pass"], "origin": r["origin"], "parent_id": r["parent_id"],
            "prefix_len": len(r["seed_ids"] or []), "code": tok.decode(ids, skip_special_tokens=True),
            "token_ids": ids, "prompt_ids": prompt_ids,
        })
    return rows
