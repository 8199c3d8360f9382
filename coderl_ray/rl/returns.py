"""CodeRL's returns and RL loss as small pure functions (paper: Le et al., NeurIPS 2022, Sec. 3.2-3.3).

Notation: B programs in a batch, T program tokens (right-padded; ``mask`` [B, T] marks real tokens), C critic
classes. Rewards come from :func:`coderl_ray.records.reward` (one table for the whole project).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from coderl_ray.records import Outcome, critic_class, reward


def add_relative_returns(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Relative return of every sample of ONE problem: r(sample) - r(greedy baseline) (paper, Eq. 6).

    Rows are result records with ``is_greedy`` and ``outcome``. Infrastructure failures are dropped (they are not
    labels); if the baseline itself is missing, the samples get no relative return (``None``) and the RL step skips
    them rather than guessing a baseline.

    >>> rows = [{"is_greedy": True, "outcome": "failed"}, {"is_greedy": False, "outcome": "passed"}]
    >>> [r["relative_return"] for r in add_relative_returns(rows)]  # greedy: -0.3 - -0.3; sample: 1.0 - -0.3
    [0.0, 1.3]
    """
    rows = [dict(r) for r in rows if Outcome(r["outcome"]).is_label]
    baseline = next((reward(r["outcome"]) for r in rows if r.get("is_greedy")), None)
    for r in rows:
        r["reward"] = reward(r["outcome"])
        r["relative_return"] = None if baseline is None else r["reward"] - baseline
    return rows


def token_returns(critic_token_logits: torch.Tensor, outcome_class: torch.Tensor, relative_return: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """q_t = softmax(critic logits_t)[class of the sample's outcome] * relative return (paper, Eq. 7).

    Shapes: [B, T, C], [B] (long), [B], [B, T] -> [B, T] (0 on padding). The critic's probability that the program,
    read up to token t, ends in the outcome it actually had, says how much token t is to credit or blame.
    """
    probs = torch.softmax(critic_token_logits.float(), dim=-1)
    p_outcome = probs.gather(-1, outcome_class.view(-1, 1, 1).expand(-1, probs.shape[1], 1)).squeeze(-1)
    return p_outcome * relative_return.view(-1, 1) * mask


def sequence_returns(relative_return: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Without a critic every token gets the program's relative return: [B], [B, T] -> [B, T]."""
    return relative_return.view(-1, 1) * mask


def rl_loss(token_logprobs: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_rl = -mean_t(q_t * log p(w_t)) per program, averaged over the batch (paper, Eq. 7-8). Shapes [B, T] -> []."""
    per_program = (returns * token_logprobs * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return -per_program.mean()


def clipped_rl_loss(token_logprobs: torch.Tensor, old_logprobs: torch.Tensor, returns: torch.Tensor,
                    mask: torch.Tensor, clip: float) -> torch.Tensor:
    """CodeRL's loss inside a PPO trust region: per token -min(rho_t q_t, clip(rho_t, 1 - clip, 1 + clip) q_t),
    rho_t = p(w_t) / p_old(w_t), averaged like :func:`rl_loss`. Shapes [B, T] -> [].

    While the policy is still the one that sampled (rho = 1) the gradient is exactly :func:`rl_loss`'s. What
    changes is that a token stops pulling once its probability has moved ``clip`` away in the direction its return
    asks for: the RL steps of a round reuse one fixed set of samples, and on fixed samples -q log p with q < 0
    has no lower bound (pushing a failed program towards probability 0 can go on forever, and drags the rest of
    the policy with it).
    """
    ratio = torch.exp(token_logprobs - old_logprobs)
    surrogate = torch.minimum(ratio * returns, ratio.clamp(1 - clip, 1 + clip) * returns)
    per_program = (surrogate * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return -per_program.mean()


def outcome_classes(outcomes: Iterable[str], n_classes: int) -> torch.Tensor:
    return torch.tensor([critic_class(o, n_classes) for o in outcomes], dtype=torch.long)
