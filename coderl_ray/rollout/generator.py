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

The same generator serves critic sampling (:meth:`ProgramGenerator.generate_rows`): explicit rows of (source ids,
prefix ids, row key), where the prefix is a seed of program tokens to continue from (refining). A seq2seq model
takes the prefix as its decoder input (``[decoder_start] + prefix``, left-padded and masked: exact for T5's relative
positions, tested; a decoder with absolute positions, e.g. BART, is called with one prefix length per call); a
causal model reads prompt + prefix as one left-padded prompt. The static decoder has no decoder-prefix input, so
seq2seq rows *with* a prefix are decoded with ``model.generate`` (``hf``) whatever ``decoder`` says; keyed sampling
makes that the same program either decoder would draw (up to float rounding). Plain rows keep the configured decoder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from coderl_ray.data.prompts import build_prompt
from coderl_ray.models.batching import encode_prompt

# Decoders whose positions are relative, so left-padding their inputs leaves every real token's view unchanged.
RELATIVE_POSITION_DECODERS = frozenset({"t5", "mt5", "umt5", "longt5"})


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
        # Left padding: a causal LM continues right after the prompt; harmless for an encoder.
        ids, mask = self._left_pad([encode_prompt(self.tokenizer, build_prompt(p), max_source_tokens)
                                    for p in problems])
        return {"input_ids": ids, "attention_mask": mask}

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
                row_keys: torch.Tensor | None, max_new_tokens: int | None = None) -> list[list[int]]:
        """One decoder call: all ``prompts x n`` rows at once; each row's new tokens, cut after its first EOS.

        ``enc`` holds ``input_ids``/``attention_mask`` (left-padded prompts) and, for seq2seq rows that continue a
        prefix, ``decoder_input_ids``/``decoder_attention_mask``; those always go through ``model.generate``."""
        max_new = params.max_new_tokens if max_new_tokens is None else max_new_tokens
        if params.decoder == "static" and "decoder_input_ids" not in enc:
            return self._static_decoder(params).generate(
                enc["input_ids"], enc["attention_mask"], num_samples=n, max_new_tokens=max_new,
                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k, greedy=greedy,
                eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id, row_keys=row_keys)
        from transformers import LogitsProcessorList

        from coderl_ray.models.decoding import KeyedSampler

        kwargs = dict(max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id,
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
        # What generate returns before the new tokens: the decoder's inputs (the start token, or start + prefix) for
        # seq2seq, the prompt for a causal model.
        if "decoder_input_ids" in enc:
            width = enc["decoder_input_ids"].shape[1]
        else:
            width = 1 if self.seq2seq else enc["input_ids"].shape[1]
        rows = []
        eos = self.tokenizer.eos_token_id
        for row in out[:, width:].tolist():
            # Rows that finished early are padded after their EOS; rows that did not finish are not padded, so
            # a pad id before any EOS was generated by the model and is kept (the RL loss must score it).
            if eos in row:
                row = row[: row.index(eos) + 1]
            rows.append(row)
        return rows

    def _left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        pad, width = self.tokenizer.pad_token_id, max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long,
                            device=self.device)
        return ids, mask

    def row_inputs(self, sources: list[list[int]], prefixes: list[list[int]]) -> dict[str, torch.Tensor]:
        """Decoder inputs of (source, prefix) rows: seq2seq reads the source and starts its decoder from
        ``[decoder_start] + prefix`` (only when some row has a prefix); causal reads ``source + prefix``."""
        if not self.seq2seq:
            ids, mask = self._left_pad([list(s) + list(p) for s, p in zip(sources, prefixes)])
            return {"input_ids": ids, "attention_mask": mask}
        ids, mask = self._left_pad(sources)
        enc = {"input_ids": ids, "attention_mask": mask}
        if any(len(p) for p in prefixes):
            start = self.model.config.decoder_start_token_id
            dec, dec_mask = self._left_pad([[start, *p] for p in prefixes])
            enc.update(decoder_input_ids=dec, decoder_attention_mask=dec_mask)
        return enc

    def _row_groups(self, prefixes: list[list[int]]) -> list[list[int]]:
        """Row indices grouped so that each group can share decoder calls.

        Seq2seq rows without a prefix form a group of their own (they may use the static decoder); rows with one
        share calls when the decoder's positions are relative, else (BART) one group per prefix length, since left
        padding would shift an absolute-position decoder's prefix. A causal model's rows are one group."""
        rows = range(len(prefixes))
        if not self.seq2seq:
            return [list(rows)]
        groups = [[i for i in rows if not prefixes[i]]]
        prefixed = [i for i in rows if prefixes[i]]
        if getattr(self.model.config, "model_type", "") in RELATIVE_POSITION_DECODERS:
            groups.append(prefixed)
        else:
            for length in sorted({len(prefixes[i]) for i in prefixed}):
                groups.append([i for i in prefixed if len(prefixes[i]) == length])
        return [g for g in groups if g]

    @torch.no_grad()
    def generate_rows(self, sources: Sequence[Sequence[int]], prefixes: Sequence[Sequence[int]],
                      row_keys: Sequence[int], params: SamplingParams) -> list[list[int]]:
        """Program token ids for explicit rows (source ids, prefix ids, row key), in row order: what critic sampling
        generates (plain samples, refinements of a seed, repairs from a repair prompt).

        Each row is sampled with ``params`` (temperature, top_p, top_k, max_new_tokens, decoder,
        max_rows_per_generate; num_samples, greedy_baseline and max_source_tokens are not read: the sources come
        tokenised) and keyed by its ``row_keys`` entry (an integer in [0, 2**63)), so its program does not depend
        on the other rows or the chunking. A row's program is its prefix followed by what the model adds, cut after
        the first EOS and to ``max_new_tokens`` tokens in all, prefix included (a prefix is never cut).
        """
        if not len(sources) == len(prefixes) == len(row_keys):
            raise ValueError(f"generate_rows needs one prefix and one key per source: {len(sources)} sources, "
                             f"{len(prefixes)} prefixes, {len(row_keys)} keys")
        sources = [[int(t) for t in s] for s in sources]
        prefixes = [[int(t) for t in p] for p in prefixes]
        out: list[list[int] | None] = [None] * len(sources)
        for group in self._row_groups(prefixes):
            # The group's tensors are padded once, so every call of the group has the same widths (a row computes
            # the same thing in any chunk).
            enc = self.row_inputs([sources[i] for i in group], [prefixes[i] for i in group])
            keys = torch.tensor([int(row_keys[i]) for i in group], dtype=torch.int64, device=self.device)
            for c in plan_chunks(len(group), 1, params.max_rows_per_generate):
                part = slice(c.first_prompt, c.first_prompt + c.prompts)
                idx = group[part]
                room = params.max_new_tokens - min(len(prefixes[i]) for i in idx)
                new = self._decode({k: v[part] for k, v in enc.items()}, 1, params, greedy=False,
                                   row_keys=keys[part], max_new_tokens=max(room, 1))
                for i, cont in zip(idx, new):
                    out[i] = prefixes[i] + cont[: max(params.max_new_tokens - len(prefixes[i]), 0)]
        return out  # type: ignore[return-value]

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
