"""The three training objectives, each a pure function of (model, rows) -> loss, shared by every loop.

Rows are dicts as they come out of the Ray Datasets (``prompt_ids`` and ``token_ids`` token lists, plus the fields
an objective needs); batches are padded to their own longest row (rounded up to ``pad_to_multiple_of``).

Metrics come back as detached 0-d tensors (``tokens`` as an int counted on the host) so that a training step syncs
with the GPU once, when the loop turns them into numbers, rather than once per micro-batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from coderl_ray.models.batching import cross_entropy, program_batch, token_logprobs, unwrap
from coderl_ray.records import critic_class
from coderl_ray.rl.returns import clipped_rl_loss, rl_loss, row_advantage, sequence_returns, token_returns


def _tokens(rows: list[dict[str, Any]]) -> int:
    return sum(len(r["token_ids"]) for r in rows)


def sft_loss(model, rows: list[dict[str, Any]], pad_id: int, device="cpu",
             pad_to_multiple_of: int = 1) -> tuple[torch.Tensor, dict]:
    """Token-mean cross-entropy on reference programs (warm-up, and the CE half of each RL round)."""
    batch = program_batch(rows, pad_id, device, pad_to_multiple_of)
    loss = cross_entropy(token_logprobs(model, batch), batch["program_mask"])
    return loss, {"ce_loss": loss.detach(), "tokens": _tokens(rows)}


def rl_objective(model, rows: list[dict[str, Any]], pad_id: int, n_classes: int, use_critic: bool,
                 device="cpu", pad_to_multiple_of: int = 1, temperature: float = 1.0,
                 clip: float = 0.0) -> tuple[torch.Tensor, dict]:
    """-mean_t(q_t log p(w_t)) on sampled programs: q_t = the program's advantage (``rl.algorithm``: CodeRL's
    relative return, GRPO's or RLOO's group-relative one, :func:`coderl_ray.rl.returns.group_advantages`), weighted
    per token by the stored critic logits when ``use_critic``, else the same on every token.

    ``temperature`` is the one the programs were sampled at: log p is taken under that tempered policy. ``clip`` > 0
    bounds each token's move from its ``old_logprobs`` (see :func:`coderl_ray.rl.returns.clipped_rl_loss`).
    """
    batch = program_batch(rows, pad_id, device, pad_to_multiple_of)
    mask = batch["program_mask"].float()
    ret = torch.tensor([row_advantage(r) for r in rows], device=device)
    if use_critic:
        t = mask.shape[1]
        # Filled on the host, then one copy to the device (not one small copy per row).
        logits = torch.zeros((len(rows), t, n_classes))
        for i, r in enumerate(rows):
            lg = np.asarray(r["critic_logits"], dtype=np.float32).reshape(-1, n_classes)[:t]
            logits[i, : len(lg)] = torch.from_numpy(lg)
        logits = logits.to(device)
        cls = torch.tensor([critic_class(r["outcome"], n_classes) for r in rows], device=device)
        q = token_returns(logits, cls, ret, mask)
    else:
        q = sequence_returns(ret, mask)
    logp = token_logprobs(model, batch, temperature)
    extra = {}
    if clip > 0:
        old = _padded([r["old_logprobs"] for r in rows], mask.shape[1]).to(device)
        loss = clipped_rl_loss(logp, old, q, mask, clip)
        extra["logprob_shift"] = ((logp.detach() - old).abs() * mask).sum() / mask.sum().clamp(min=1)
    else:
        loss = rl_loss(logp, q, mask)
    return loss, {"rl_loss": loss.detach(), "mean_return": ret.mean(), **extra, "tokens": _tokens(rows)}


def _padded(values: list[Any], t: int) -> torch.Tensor:
    """Right-padded [B, t] float tensor of per-token values (each row cut to t), filled on the host."""
    out = torch.zeros((len(values), t))
    for i, v in enumerate(values):
        v = np.asarray(v, dtype=np.float32)[:t]
        out[i, : len(v)] = torch.from_numpy(v)
    return out


def critic_objective(critic, rows: list[dict[str, Any]], pad_id: int, device="cpu", pad_to_multiple_of: int = 1,
                     rank_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of the max-pooled token logits (the critic's ``pooling``) against each program's outcome, plus
    ``rank_weight`` x :func:`~coderl_ray.models.critic.pairwise_rank_loss` over the (passing, failing) pairs of one
    problem in the batch (rows then need ``problem_id``; the batches should hold several programs of a problem,
    ``LoopConfig.group_batches``). Pairs are formed within a micro-batch: splitting a batch loses the pairs whose
    programs land in different micro-batches."""
    from coderl_ray.models.critic import pairwise_rank_loss, pass_log_odds

    batch = program_batch(rows, pad_id, device, pad_to_multiple_of)
    core = unwrap(critic)
    labels = torch.tensor([critic_class(r["outcome"], core.n_classes) for r in rows], device=device)
    token_logits = critic(batch["input_ids"], batch["attention_mask"], batch["program_ids"], batch["program_mask"])
    pooled = core.pool(token_logits, batch["program_mask"])
    ce = torch.nn.functional.cross_entropy(pooled.float(), labels)
    acc = (pooled.argmax(-1) == labels).float().mean()
    metrics = {"critic_loss": ce.detach(), "critic_acc": acc.detach()}
    loss = ce
    if rank_weight > 0:
        ids: dict[str, int] = {}
        groups = torch.tensor([ids.setdefault(r["problem_id"], len(ids)) for r in rows], device=device)
        rank = pairwise_rank_loss(pass_log_odds(pooled), labels == core.n_classes - 1, groups)
        loss = ce + rank_weight * rank
        metrics["critic_rank_loss"] = rank.detach()
    return loss, {**metrics, "tokens": _tokens(rows)}
