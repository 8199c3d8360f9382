"""(prompt, program) pairs -> padded tensors, and the actor's per-token log-probabilities of a program.

Both architectures share one batch layout: the prompt ``input_ids`` [B, S] (left-padded, so for a causal LM the
prompt ends where the program starts) and the program ``program_ids`` [B, T] (right-padded, ending in EOS). Batches
are padded to their own longest row, never to the configured maximum (dynamic padding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def encode_prompt(tokenizer, prompt: str, max_tokens: int) -> list[int]:
    """Token ids of a prompt, cut from the left when too long (the end, "ANSWER:", must survive)."""
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    return ids[-max_tokens:]


def encode_program(tokenizer, code: str, max_tokens: int) -> list[int]:
    """Token ids of a program followed by EOS, cut to ``max_tokens``."""
    ids = tokenizer(code, add_special_tokens=False).input_ids[: max_tokens - 1]
    return ids + [tokenizer.eos_token_id]


def pad_batch(prompts: Sequence[Sequence[int]], programs: Sequence[Sequence[int]], pad_id: int) -> dict:
    s = max(len(p) for p in prompts)
    t = max(len(p) for p in programs)
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


def causal_position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, so a left-padded prompt sees the same positions as an unpadded one."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def token_logprobs(model, batch: dict) -> torch.Tensor:
    """log p(w_t | prompt, w_<t) for every program token: [B, T] (padding positions are 0).

    Seq2seq: the decoder reads the program shifted right (teacher forcing). Causal: one sequence, prompt then
    program; the logits at the position before each program token score it.
    """
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    program_ids, program_mask = batch["program_ids"], batch["program_mask"]
    core = getattr(model, "module", model)  # DDP / FSDP wrappers
    if getattr(core.config, "is_encoder_decoder", False):
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       decoder_input_ids=core._shift_right(program_ids), decoder_attention_mask=program_mask,
                       use_cache=False).logits
    else:
        ids = torch.cat([input_ids, program_ids], dim=1)
        mask = torch.cat([attention_mask, program_mask], dim=1)
        s = input_ids.shape[1]
        logits = model(input_ids=ids, attention_mask=mask, position_ids=causal_position_ids(mask),
                       use_cache=False).logits[:, s - 1: s - 1 + program_ids.shape[1]]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, program_ids.unsqueeze(-1)).squeeze(-1)
    return logp * program_mask


def cross_entropy(logp: torch.Tensor, program_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over all real program tokens of the batch."""
    return -(logp.sum() / program_mask.sum().clamp(min=1))
