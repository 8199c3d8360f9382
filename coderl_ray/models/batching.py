"""(prompt, program) pairs -> padded tensors, and the actor's per-token log-probabilities of a program.

Both architectures share one batch layout: the prompt ``input_ids`` [B, S] (left-padded, so for a causal LM the
prompt ends where the program starts) and the program ``program_ids`` [B, T] (right-padded; ending in EOS unless
it was cut at the length limit). Batches are padded to their own longest row, never to the configured maximum
(dynamic padding); ``pad_to_multiple_of`` rounds that length up so a compiled model sees a bounded set of shapes.

For a causal LM the prompt is the prefix of one sequence and only the program's tokens are scored, so the loss is
masked on the prompt by construction.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts around a text: CodeT5 ``<s> ... </s>``, GPT-2 and Qwen nothing.

    transformers 5 has no public ``build_inputs_with_special_tokens``; encoding one character with and without the
    specials and locating the body gives the same answer for every tokenizer family.
    """
    body = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a").input_ids
    for i in range(len(full) - len(body) + 1):
        if full[i: i + len(body)] == body:
            return full[:i], full[i + len(body):]
    return [], []


def encode_prompt(tokenizer, prompt: str, max_tokens: int) -> list[int]:
    """Token ids of a prompt with the tokenizer's own special tokens, cut from the left when too long.

    The end ("ANSWER:") must survive the cut. The specials matter for pretrained checkpoints: CodeT5 models were
    trained on ``<s> text </s>`` encoder inputs, so dropping them shifts every prompt out of distribution.
    """
    prefix, suffix = special_affixes(tokenizer)
    room = max(0, max_tokens - len(prefix) - len(suffix))
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    return prefix + (ids[-room:] if room else []) + suffix


def encode_program(tokenizer, code: str, max_tokens: int) -> list[int]:
    """Token ids of a program followed by EOS; a program with no room left for its EOS is cut to ``max_tokens``
    tokens *without* EOS.

    EOS says "the program ends here": a cut target that ended in EOS would teach the actor to stop in the middle of
    a program. The cut prefix is kept (its tokens are still right), as the original CodeRL kept its labels cut to
    512; sampled programs that hit ``max_new_tokens`` have no EOS either (``rollout.generator``).
    """
    ids = tokenizer(code, add_special_tokens=False).input_ids
    if len(ids) < max_tokens:
        return ids + [tokenizer.eos_token_id]
    return ids[:max_tokens]



def _round_up(n: int, multiple: int) -> int:
    return n if multiple <= 1 else -(-n // multiple) * multiple


def pad_batch(prompts: Sequence[Sequence[int]], programs: Sequence[Sequence[int]], pad_id: int,
              pad_to_multiple_of: int = 1) -> dict:
    s = _round_up(max(len(p) for p in prompts), pad_to_multiple_of)
    t = _round_up(max(len(p) for p in programs), pad_to_multiple_of)
    b = len(prompts)
    input_ids = torch.full((b, s), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((b, s), dtype=torch.long)
    program_ids = torch.full((b, t), pad_id, dtype=torch.long)
    program_mask = torch.zeros((b, t), dtype=torch.long)
    for i, (p, q) in enumerate(zip(prompts, programs)):
        if len(p):
            input_ids[i, s - len(p):] = torch.as_tensor(p)
            attention_mask[i, s - len(p):] = 1
        program_ids[i, : len(q)] = torch.as_tensor(q)
        program_mask[i, : len(q)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "program_ids": program_ids,
            "program_mask": program_mask}


def _ids(v: Any) -> list[int]:
    return v.tolist() if isinstance(v, np.ndarray) else list(v)


def program_batch(rows: Sequence[dict[str, Any]], pad_id: int, device: torch.device | str = "cpu",
                  pad_to_multiple_of: int = 1) -> dict:
    """Padded tensors of rows holding ``prompt_ids`` and ``token_ids`` (as they come out of a Ray Dataset), on
    ``device``: the batch layout every model here reads (training, scoring, critic sampling)."""
    batch = pad_batch([_ids(r["prompt_ids"]) for r in rows], [_ids(r["token_ids"]) for r in rows], pad_id,
                      pad_to_multiple_of)
    # Pinned host memory lets the copy to the GPU overlap with compute.
    pin = torch.device(device).type == "cuda"
    return {k: (v.pin_memory() if pin else v).to(device, non_blocking=pin) for k, v in batch.items()}


def causal_position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, so a left-padded prompt sees the same positions as an unpadded one."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def shift_right(config, ids: torch.Tensor) -> torch.Tensor:
    """Decoder inputs for teacher forcing: the decoder start token, then the program without its last token.

    What T5's private ``_shift_right`` does, for any encoder-decoder config (BART keeps it in a module function).
    """
    start = config.decoder_start_token_id
    if start is None:
        raise ValueError(f"{type(config).__name__} has no decoder_start_token_id; cannot build decoder inputs")
    out = ids.new_empty(ids.shape)
    out[:, 1:] = ids[:, :-1]
    out[:, 0] = start
    return out


def unwrap(model):
    """The module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if inner is None:
            inner = getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def _accepts_logits_to_keep(model) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(unwrap(model).forward).parameters
    except (TypeError, ValueError):
        return False


def token_logprobs(model, batch: dict, temperature: float = 1.0) -> torch.Tensor:
    """log p(w_t | prompt, w_<t) for every program token: [B, T] (padding positions are 0).

    ``temperature`` scores the tokens under softmax(logits / temperature), the distribution a sampler at that
    temperature drew them from (the RL step's on-policy log-probabilities).

    Seq2seq: the decoder reads the program shifted right (teacher forcing). Causal: one sequence, prompt then
    program; the logits at the position before each program token score it. Causal models that accept
    ``logits_to_keep`` project only those T positions onto the vocabulary, not the prompt's: with a 600-token
    prompt and a 150k vocabulary (Qwen2.5) the prompt's logits alone would be ~0.4 GB per row in fp32.
    """
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    program_ids, program_mask = batch["program_ids"], batch["program_mask"]
    core = unwrap(model)
    t = program_ids.shape[1]
    if getattr(core.config, "is_encoder_decoder", False):
        # No decoder padding mask: programs are right-padded, so under the causal mask no real position ever sees
        # a pad, and pad positions are masked out of every loss. Without it attention keeps its causal fast path.
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       decoder_input_ids=shift_right(core.config, program_ids), use_cache=False).logits
    else:
        ids = torch.cat([input_ids, program_ids], dim=1)
        mask = torch.cat([attention_mask, program_mask], dim=1)
        kwargs = {"logits_to_keep": t + 1} if _accepts_logits_to_keep(core) else {}
        logits = model(input_ids=ids, attention_mask=mask, position_ids=causal_position_ids(mask), use_cache=False,
                       **kwargs).logits
        # The last position predicts the token after the program: never scored.
        logits = logits[:, -(t + 1):-1]
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, program_ids.unsqueeze(-1)).squeeze(-1)
    return logp * program_mask


def cross_entropy(logp: torch.Tensor, program_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over all real program tokens of the batch."""
    return -(logp.sum() / program_mask.sum().clamp(min=1))
