"""Sampling programs from the actor: the pure core of the rollout stage (no Ray).

For each problem: ``num_samples`` programs sampled with temperature / top-p, plus (optionally) one greedy program,
the "baseline" whose reward the relative return subtracts (CodeRL, Eq. 6).

Two decoders produce the same distribution: ``hf`` (``model.generate``) and ``static``
(:class:`coderl_ray.models.decoding.StaticDecoder`: encoder once per prompt, static caches, optionally a compiled
step replayed as a CUDA graph on GPU). The model folder may be a training checkpoint or a whole training run
(its latest checkpoint), so rollout can follow a trainer that is still running.

Memory and reproducibility: a batch's ``prompts x num_samples`` rows are decoded in chunks of at most
``max_rows_per_generate`` rows (:func:`plan_chunks`), since every row holds its own self- and cross-attention caches
(200 samples x 16 prompts of CodeT5-large would need ~360 GB). Every sampled row draws its randomness from a key of
(seed, round, problem id, sample index) (:func:`sample_key`, keyed sampling in :mod:`coderl_ray.models.decoding`),
so a program does not depend on the chunking, on which problems share its batch, or on the decoder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from coderl_ray.data.prompts import build_prompt
from coderl_ray.models.batching import encode_prompt


@dataclass(frozen=True)
class SamplingParams:
    num_samples: int = 8
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 50  # 0 = off; 50 is what the original's generate() sampled with (the library default then)
    max_new_tokens: int = 128
    max_source_tokens: int = 600
    greedy_baseline: bool = True
    decoder: str = "hf"  # "hf" (model.generate) or "static" (models.decoding.StaticDecoder)
    compile: bool = False  # static decoder: torch.compile the decode step (CUDA graphs on GPU)
    max_rows_per_generate: int = 0  # rows (prompts x samples) per decoder call; 0 = the whole batch at once

    def __post_init__(self) -> None:
        if self.decoder not in ("hf", "static"):
            raise ValueError(f"decoder must be 'hf' or 'static', got {self.decoder!r}")
        if self.compile and self.decoder != "static":
            raise ValueError("compile applies to the static decoder only (set decoder='static')")
        if self.max_rows_per_generate < 0 or self.top_k < 0:
            raise ValueError("max_rows_per_generate and top_k must be >= 0 (0 = no limit / off)")


def sample_id(problem_id: str, round_: int, index: int | None) -> str:
    """Stable ids: ``<problem>#r<round>s<k>`` for samples, ``...g`` for the greedy baseline."""
    return f"{problem_id}#r{round_}" + ("g" if index is None else f"s{index}")


def sample_key(seed: int, round_: int, problem_id: str, index: int) -> int:
    """The random key of one sampled program, in [0, 2**63): the same whatever batch or chunk it is drawn in."""
    digest = hashlib.blake2b(f"{seed}/{round_}/{problem_id}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class Chunk:
    """One decoder call: ``samples`` samples (indices ``first_sample``...) of each of ``prompts`` prompts
    (``first_prompt``...): ``prompts * samples`` rows."""

    first_prompt: int
    prompts: int
    first_sample: int
    samples: int

    @property
    def rows(self) -> int:
        return self.prompts * self.samples


def _even_split(total: int, parts: int) -> list[int]:
    q, r = divmod(total, parts)
    return [q + 1] * r + [q] * (parts - r)


def plan_chunks(num_prompts: int, num_samples: int, max_rows: int = 0) -> list[Chunk]:
    """Decoder calls covering ``num_prompts x num_samples`` rows, each of at most ``max_rows`` rows (0 = one call).

    Whole prompts go together while their samples fit (``max_rows // num_samples`` prompts per call); a prompt
    with more samples than ``max_rows`` is split over calls. Calls are balanced, so a batch has at most two call
    shapes (each shape is a compile and a set of caches for the static decoder).

    >>> [(c.first_prompt, c.prompts, c.first_sample, c.samples) for c in plan_chunks(16, 20, 100)]
    [(0, 4, 0, 20), (4, 4, 0, 20), (8, 4, 0, 20), (12, 4, 0, 20)]
    >>> [(c.first_prompt, c.first_sample, c.samples) for c in plan_chunks(2, 200, 128)]
    [(0, 0, 100), (0, 100, 100), (1, 0, 100), (1, 100, 100)]
    """
    if num_prompts <= 0 or num_samples <= 0:
        return []
    if max_rows <= 0 or num_prompts * num_samples <= max_rows:
        return [Chunk(0, num_prompts, 0, num_samples)]
    if num_samples <= max_rows:
        per_call = max_rows // num_samples
        calls = -(-num_prompts // per_call)
        chunks, start = [], 0
        for size in _even_split(num_prompts, calls):
            chunks.append(Chunk(start, size, 0, num_samples))
            start += size
        return chunks
    parts = -(-num_samples // max_rows)
    chunks = []
    for prompt in range(num_prompts):
        start = 0
        for size in _even_split(num_samples, parts):
            chunks.append(Chunk(prompt, 1, start, size))
            start += size
    return chunks


class ProgramGenerator:
    """Holds one actor and its tokenizer; turns a batch of problems into sample records."""

    def __init__(self, model_dir: str | Path, device: str | None = None, seed: int = 0):
        from transformers.utils import logging as hf_logging

        from coderl_ray.models.actor import is_seq2seq, load_actor
        from coderl_ray.models.device import inference_device, inference_dtype
        from coderl_ray.models.tokenizer import load_tokenizer

        hf_logging.disable_progress_bar()
        # What Ray assigned this worker (CPU for a worker given no GPU, even on a GPU node): models/device.py.
        self.device = torch.device(device) if device else inference_device()
        self.model = load_actor(model_dir, dtype=inference_dtype(self.device)).to(self.device).eval()
        self.tokenizer = load_tokenizer(model_dir)
        self.seq2seq = is_seq2seq(self.model)
        self.seed = seed
        self._static, self._static_compiled = None, False

    def _static_decoder(self, params: SamplingParams):
        from coderl_ray.models.decoding import StaticDecoder

        if self._static is None or self._static_compiled != params.compile:
            self._static = StaticDecoder(self.model, compile_step=params.compile,
                                         cuda_graphs=params.compile and self.device.type == "cuda")
            self._static_compiled = params.compile
        return self._static

    def _prompts(self, problems: list[dict[str, Any]], max_source_tokens: int) -> dict[str, torch.Tensor]:
        ids = [encode_prompt(self.tokenizer, build_prompt(p), max_source_tokens) for p in problems]
        s = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        # Left padding: a causal LM continues right after the prompt; harmless for an encoder.
        input_ids = torch.tensor([[pad] * (s - len(x)) + x for x in ids], device=self.device)
        mask = torch.tensor([[0] * (s - len(x)) + [1] * len(x) for x in ids], device=self.device)
        return {"input_ids": input_ids, "attention_mask": mask}

    @torch.no_grad()
    def _generate(self, enc: dict[str, torch.Tensor], n: int, params: SamplingParams, greedy: bool,
                  row_keys: torch.Tensor | None = None) -> list[list[int]]:
        """Token ids of ``len(prompts) * n`` rows (prompt-major), in chunks of at most ``max_rows_per_generate``.

        Every chunk keeps the batch's padded prompt length, so a row computes the same thing in any chunk; chunks
        come in prompt-major, sample order, so their rows concatenate into the batch's."""
        rows: list[list[int]] = []
        for c in plan_chunks(enc["input_ids"].shape[0], n, params.max_rows_per_generate):
            sub = {k: v[c.first_prompt: c.first_prompt + c.prompts] for k, v in enc.items()}
            keys = None
            if row_keys is not None:
                keys = row_keys.view(-1, n)[c.first_prompt: c.first_prompt + c.prompts,
                                            c.first_sample: c.first_sample + c.samples].reshape(-1)
            rows.extend(self._decode(sub, c.samples, params, greedy, keys))
        return rows

    def _decode(self, enc: dict[str, torch.Tensor], n: int, params: SamplingParams, greedy: bool,
                row_keys: torch.Tensor | None) -> list[list[int]]:
        """One decoder call: all ``prompts x n`` rows at once."""
        if params.decoder == "static":
            return self._static_decoder(params).generate(
                enc["input_ids"], enc["attention_mask"], num_samples=n, max_new_tokens=params.max_new_tokens,
                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k, greedy=greedy,
                eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id, row_keys=row_keys)
        from transformers import LogitsProcessorList

        from coderl_ray.models.decoding import KeyedSampler

        kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                      eos_token_id=self.tokenizer.eos_token_id, num_return_sequences=n)
        if greedy:
            kwargs.update(do_sample=False, num_beams=1)
        elif row_keys is not None:
            # generate's warpers would run after ours (custom processors come first), so they are switched off.
            kwargs.update(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, logits_processor=LogitsProcessorList(
                [KeyedSampler(row_keys, params.temperature, params.top_p, params.top_k)]))
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        out = self.model.generate(**enc, **kwargs)
        if not self.seq2seq:
            out = out[:, enc["input_ids"].shape[1]:]
        rows = []
        eos = self.tokenizer.eos_token_id
        for row in out.tolist():
            if self.seq2seq:
                row = row[1:]  # the decoder start token is an input, not a generated token
            # Rows that finished early are padded after their EOS; rows that did not finish are not padded, so
            # a pad id before any EOS was generated by the model and is kept (the RL loss must score it).
            if eos in row:
                row = row[: row.index(eos) + 1]
            rows.append(row)
        return rows

    def generate(self, problems: list[dict[str, Any]], params: SamplingParams, round_: int = 0,
                 policy_version: int = 0) -> list[dict[str, Any]]:
        """Sample records ``{problem_id, sample_id, round, policy_version, is_greedy, code, token_ids}``."""
        if not problems:
            return []
        enc = self._prompts(problems, params.max_source_tokens)
        n = params.num_samples
        records = []
        sampled = []
        if n:
            keys = torch.tensor([sample_key(self.seed, round_, p["problem_id"], k) for p in problems
                                 for k in range(n)], dtype=torch.int64, device=self.device)
            sampled = self._generate(enc, n, params, greedy=False, row_keys=keys)
        greedy = self._generate(enc, 1, params, greedy=True) if params.greedy_baseline else []
        for i, p in enumerate(problems):
            for k in range(n):
                records.append(self._record(p, sampled[i * n + k], round_, policy_version, k))
            if greedy:
                records.append(self._record(p, greedy[i], round_, policy_version, None))
        return records

    def _record(self, problem, ids, round_, policy_version, index) -> dict[str, Any]:
        return {
            "problem_id": problem["problem_id"], "sample_id": sample_id(problem["problem_id"], round_, index),
            "round": round_, "policy_version": policy_version, "is_greedy": index is None,
            "code": self.tokenizer.decode(ids, skip_special_tokens=True), "token_ids": ids,
        }
