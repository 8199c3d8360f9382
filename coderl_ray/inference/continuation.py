"""Generating critic sampling's programs: plain, from a seed (a prefix of a program), or from a repair prompt.

A generation *unit* (:func:`coderl_ray.inference.procedure.pack_units`) is a list of requests; it becomes one
seeded batch of ``model.generate`` calls. Each row is a source text (the prompt, or the repair prompt) and a prefix
of program tokens (empty unless refining); the program returned is the prefix followed by what the model adds, cut
after its first EOS and to ``max_new_tokens`` tokens in all, as a plain sample is.

How a prefix is given to the model:

* seq2seq (T5, CodeT5): the encoder reads the source, the decoder starts from ``[decoder_start] + prefix``
  (``decoder_input_ids``). Rows of different prefix lengths share a batch with their decoder inputs left-padded and
  masked: T5's decoder has relative positions, so left padding changes nothing (tests compare the logits with
  unpadded single rows). A decoder with absolute positions (BART) would shift its prefix, so there rows are grouped
  by prefix length instead.
* causal: the prefix is appended to the prompt; the batch is left-padded as for plain sampling.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from coderl_ray.inference.procedure import sample_id
from coderl_ray.models.batching import encode_prompt

# Decoders whose positions are relative, so left-padding their inputs leaves every real token's view unchanged.
_RELATIVE_POSITION_DECODERS = {"t5", "mt5", "umt5", "longt5"}


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 128  # program tokens in all, prefix included
    max_source_tokens: int = 600
    max_rows: int = 64  # rows per model.generate() call


def _left_pad(rows: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return ids, mask


def _finish(prefix: Sequence[int], continuation: list[int], eos: int, max_tokens: int) -> list[int]:
    # Rows that finished early are padded after their EOS; a pad before any EOS was generated and is kept.
    if eos in continuation:
        continuation = continuation[: continuation.index(eos) + 1]
    return list(prefix) + continuation[: max(max_tokens - len(prefix), 0)]


def batch_inputs(model, tokenizer, sources: list[list[int]], prefixes: list[list[int]],
                 device=None) -> tuple[dict[str, torch.Tensor], int]:
    """``model.generate`` inputs for rows of (source ids, prefix ids), and the width after which new tokens start."""
    pad = tokenizer.pad_token_id
    if getattr(model.config, "is_encoder_decoder", False):
        input_ids, mask = _left_pad(sources, pad, device)
        start = model.config.decoder_start_token_id
        decoder_ids, decoder_mask = _left_pad([[start] + p for p in prefixes], pad, device)
        return {"input_ids": input_ids, "attention_mask": mask, "decoder_input_ids": decoder_ids,
                "decoder_attention_mask": decoder_mask}, decoder_ids.shape[1]
    input_ids, mask = _left_pad([s + p for s, p in zip(sources, prefixes)], pad, device)
    return {"input_ids": input_ids, "attention_mask": mask}, input_ids.shape[1]


@torch.no_grad()
def _generate_group(model, tokenizer, sources: list[list[int]], prefixes: list[list[int]],
                    settings: GenerationSettings, device) -> list[list[int]]:
    new = settings.max_new_tokens - min(len(p) for p in prefixes)
    inputs, width = batch_inputs(model, tokenizer, sources, prefixes, device)
    out = model.generate(**inputs, do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0,
                         max_new_tokens=max(new, 1), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return [_finish(p, row[width:], tokenizer.eos_token_id, settings.max_new_tokens)
            for p, row in zip(prefixes, out.tolist())]


def generate_rows(model, tokenizer, sources: list[list[int]], prefixes: list[list[int]],
                  settings: GenerationSettings, device=None) -> list[list[int]]:
    """Program token ids for each (source ids, prefix ids) row, sampled with ``settings``, in row order."""
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    device = device or next(model.parameters()).device
    pads_safely = not seq2seq or getattr(model.config, "model_type", "") in _RELATIVE_POSITION_DECODERS
    order = list(range(len(sources)))
    if not pads_safely:
        order.sort(key=lambda i: len(prefixes[i]))  # stable: equal-length prefixes keep their order
    out: list[list[int] | None] = [None] * len(sources)
    start = 0
    while start < len(order):
        stop = min(start + settings.max_rows, len(order))
        if not pads_safely:
            length = len(prefixes[order[start]])
            while stop > start + 1 and len(prefixes[order[stop - 1]]) != length:
                stop -= 1
        idx = order[start:stop]
        rows = _generate_group(model, tokenizer, [sources[i] for i in idx], [prefixes[i] for i in idx],
                               settings, device)
        for i, row in zip(idx, rows):
            out[i] = row
        start = stop
    return out  # type: ignore[return-value]


def unit_seed(seed: int, unit: dict[str, Any]) -> int:
    """The torch seed of a unit: from the run's seed, the pass and the unit's first request, like the rollout's."""
    first = unit["requests"][0]
    return zlib.crc32(f"{seed}/cs/{first['cs_pass']}/{first['problem_id']}/{first['first']}/{unit['model']}".encode())


def generate_unit(generator, prompt_tokenizer, unit: dict[str, Any], settings: GenerationSettings,
                  seed: int) -> list[dict[str, Any]]:
    """Sample rows of one unit (a dict ``{"unit", "model", "requests"}`` as :mod:`coderl_ray.inference.stage` ships
    it), from ``generator`` (a :class:`~coderl_ray.rollout.generator.ProgramGenerator` holding the actor or the
    repair model). ``prompt_ids`` of every row is the problem's prompt in ``prompt_tokenizer`` (the actor's, which
    the critic shares): the critic rates (problem, program) whatever model wrote the program."""
    tok = generator.tokenizer
    sources, prefixes, meta = [], [], []
    for r in unit["requests"]:
        source = encode_prompt(tok, r["source"], settings.max_source_tokens)
        prompt_ids = encode_prompt(prompt_tokenizer, r["prompt"], settings.max_source_tokens)
        seed_ids = [int(t) for t in r["seed_ids"] or []]
        for j in range(r["n"]):
            sources.append(source)
            prefixes.append(seed_ids)
            meta.append((r, j, prompt_ids))
    torch.manual_seed(unit_seed(seed, unit))
    programs = generate_rows(generator.model, tok, sources, prefixes, settings, generator.device)
    rows = []
    for (r, j, prompt_ids), ids in zip(meta, programs):
        rows.append({
            "problem_id": r["problem_id"], "sample_id": sample_id(r["problem_id"], r["cs_pass"], r["first"] + j),
            "cs_pass": r["cs_pass"], "origin": r["origin"], "parent_id": r["parent_id"],
            "prefix_len": len(r["seed_ids"] or []), "code": tok.decode(ids, skip_special_tokens=True),
            "token_ids": ids, "prompt_ids": prompt_ids,
        })
    return rows
