"""Sampling programs from the actor: the pure core of the rollout stage (no Ray).

For each problem: ``num_samples`` programs sampled with temperature / top-p, plus (optionally) one greedy program,
the "baseline" whose reward the relative return subtracts (CodeRL, Eq. 6).
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


def sample_id(problem_id: str, round_: int, index: int | None) -> str:
    """Stable ids: ``<problem>#r<round>s<k>`` for samples, ``...g`` for the greedy baseline."""
    return f"{problem_id}#r{round_}" + ("g" if index is None else f"s{index}")


class ProgramGenerator:
    """Holds one actor and its tokenizer; turns a batch of problems into sample records."""

    def __init__(self, model_dir: str | Path, device: str | None = None, seed: int = 0):
        from transformers.utils import logging as hf_logging

        from coderl_ray.models.actor import is_seq2seq, load_actor
        from coderl_ray.models.tokenizer import load_tokenizer

        hf_logging.disable_progress_bar()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" else None
        self.model = load_actor(model_dir, dtype=dtype).to(self.device).eval()
        self.tokenizer = load_tokenizer(model_dir)
        self.seq2seq = is_seq2seq(self.model)
        self.seed = seed

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
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        for row in out.tolist():
            if self.seq2seq and row and row[0] == self.model.config.decoder_start_token_id:
                row = row[1:]
            # Keep the EOS (it is a generated token the RL loss must score); drop what follows it.
            if eos in row:
                row = row[: row.index(eos) + 1]
            else:
                while row and row[-1] == pad:
                    row.pop()
            # An empty program still needs one token for the critic and the RL loss to score: its EOS.
            rows.append(row or [eos])
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
