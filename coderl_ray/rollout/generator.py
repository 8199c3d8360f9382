"""Sampling programs from the actor: the pure core of the rollout stage (no Ray).

For each problem: ``num_samples`` programs sampled with temperature / top-p, plus (optionally) one greedy program,
the "baseline" whose reward the relative return subtracts (CodeRL, Eq. 6).

Two decoders produce the same distribution: ``hf`` (``model.generate``) and ``static``
(:class:`coderl_ray.models.decoding.StaticDecoder`: encoder once per prompt, static caches, optionally a compiled
step replayed as a CUDA graph on GPU). The model folder may be a training checkpoint or a whole training run
(its latest checkpoint), so rollout can follow a trainer that is still running.
"""

from __future__ import annotations

import zlib
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
    max_new_tokens: int = 128
    max_source_tokens: int = 600
    greedy_baseline: bool = True
    decoder: str = "hf"  # "hf" (model.generate) or "static" (models.decoding.StaticDecoder)
    compile: bool = False  # static decoder: torch.compile the decode step (CUDA graphs on GPU)

    def __post_init__(self) -> None:
        if self.decoder not in ("hf", "static"):
            raise ValueError(f"decoder must be 'hf' or 'static', got {self.decoder!r}")
        if self.compile and self.decoder != "static":
            raise ValueError("compile applies to the static decoder only (set decoder='static')")


def sample_id(problem_id: str, round_: int, index: int | None) -> str:
    """Stable ids: ``<problem>#r<round>s<k>`` for samples, ``...g`` for the greedy baseline."""
    return f"{problem_id}#r{round_}" + ("g" if index is None else f"s{index}")


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
    def _generate(self, enc: dict[str, torch.Tensor], n: int, params: SamplingParams, greedy: bool) -> list[list[int]]:
        if params.decoder == "static":
            return self._static_decoder(params).generate(
                enc["input_ids"], enc["attention_mask"], num_samples=n, max_new_tokens=params.max_new_tokens,
                temperature=params.temperature, top_p=params.top_p, greedy=greedy,
                eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id)
        kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                      eos_token_id=self.tokenizer.eos_token_id, num_return_sequences=n)
        if greedy:
            kwargs.update(do_sample=False, num_beams=1)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
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
        # A seed per batch (from its first problem id) keeps reruns reproducible whatever the batching.
        torch.manual_seed(zlib.crc32(f"{self.seed}/{round_}/{problems[0]['problem_id']}".encode()))
        enc = self._prompts(problems, params.max_source_tokens)
        records = []
        sampled = self._generate(enc, params.num_samples, params, greedy=False) if params.num_samples else []
        greedy = self._generate(enc, 1, params, greedy=True) if params.greedy_baseline else []
        for i, p in enumerate(problems):
            for k in range(params.num_samples):
                records.append(self._record(p, sampled[i * params.num_samples + k], round_, policy_version, k))
            if greedy:
                records.append(self._record(p, greedy[i], round_, policy_version, None))
        return records

    def _record(self, problem, ids, round_, policy_version, index) -> dict[str, Any]:
        return {
            "problem_id": problem["problem_id"], "sample_id": sample_id(problem["problem_id"], round_, index),
            "round": round_, "policy_version": policy_version, "is_greedy": index is None,
            "code": self.tokenizer.decode(ids, skip_special_tokens=True), "token_ids": ids,
        }
