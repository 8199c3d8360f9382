"""CodeRL's returns and RL loss as small pure functions (paper: Le et al., NeurIPS 2022, Sec. 3.2-3.3), and the
group-relative advantages of GRPO and RLOO on the same rows (docs/training.md, "RL algorithms").

Notation: B programs in a batch, T program tokens (right-padded; ``mask`` [B, T] marks real tokens), C critic
classes; G sampled programs of one problem (its *group*). Rewards come from :func:`coderl_ray.records.reward` (one
table for the whole project).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import torch

from coderl_ray.records import Outcome, critic_class, reward

ALGORITHMS = ("coderl", "grpo", "rloo")
GRPO_EPS = 1e-6  # added to the group's standard deviation: a group whose rewards all agree divides 0 by it


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


def group_advantages(rows: Iterable[dict[str, Any]], algorithm: str = "coderl") -> list[dict[str, Any]]:
    """The advantage of every program of ONE problem's group: its result rows (the G samples, and the greedy
    baseline when the rollout drew one) in, the same rows out with ``reward``, ``relative_return`` and
    ``advantage``; infrastructure failures dropped (as :func:`add_relative_returns`). A pure function of the
    group, so the staged and the online loop (``replay_buffer.returns_by_problem``, per problem of a work item as
    it completes) compute the same numbers. With r_i the reward of sample i and G the group's labelled samples:

    * ``coderl`` (CodeRL, Eq. 6): A_i = r_i - r(greedy); None without a greedy row.
    * ``grpo`` (Shao et al. 2024, DeepSeekMath Eq. 3 with outcome rewards): A_i = (r_i - mean(r)) / (std(r) + eps),
      std with Bessel's correction (``torch.std``'s default), eps = :data:`GRPO_EPS`; None when G < 2.
    * ``rloo`` (Kool et al. 2019; Ahmadian et al. 2024): A_i = r_i - mean_{j != i} r_j
      = G / (G - 1) * (r_i - mean(r)); None when G < 2.

    The greedy row itself is never trained on (advantage None): it is not a sample of the policy it would update.
    GRPO and RLOO ignore it; the rollout gives them one more sample instead (:func:`group_shape`).

    >>> rows = [{"is_greedy": True, "outcome": "failed"}, {"is_greedy": False, "outcome": "passed"},
    ...         {"is_greedy": False, "outcome": "failed"}, {"is_greedy": False, "outcome": "failed"}]
    >>> [r["advantage"] for r in group_advantages(rows, "coderl")]  # 1.0 - (-0.3), -0.3 - (-0.3)
    [None, 1.3, 0.0, 0.0]
    >>> [round(r["advantage"], 3) for r in group_advantages(rows, "rloo")[1:]]  # 1.0 - (-0.3), -0.3 - 0.35
    [1.3, -0.65, -0.65]
    >>> [round(r["advantage"], 3) for r in group_advantages(rows, "grpo")[1:]]  # 0.8667 / 0.7506, -0.4333 / 0.7506
    [1.155, -0.577, -0.577]
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown RL algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    rows = add_relative_returns(rows)
    samples = [r for r in rows if not r.get("is_greedy")]
    g = len(samples)
    # Exact arithmetic on the rewards' binary values: a group whose rewards are all equal gets advantages of exactly
    # 0 (float sums leave ~1e-17, and the RL stage keeps only rows whose advantage is not 0).
    total = sum((Fraction(r["reward"]) for r in samples), Fraction(0))
    mean = total / g if g else Fraction(0)
    std = math.sqrt(sum((Fraction(r["reward"]) - mean) ** 2 for r in samples) / (g - 1)) if g > 1 else 0.0
    for r in rows:
        if r.get("is_greedy"):
            r["advantage"] = None
        elif algorithm == "coderl":
            r["advantage"] = r["relative_return"]
        elif g < 2:
            r["advantage"] = None
        elif algorithm == "grpo":
            r["advantage"] = float(Fraction(r["reward"]) - mean) / (std + GRPO_EPS)
        else:
            r["advantage"] = float(Fraction(r["reward"]) - (total - Fraction(r["reward"])) / (g - 1))
    return rows


def group_shape(algorithm: str, num_samples: int) -> tuple[int, bool]:
    """(sampled programs, greedy baseline?) a rollout draws per problem for ``algorithm``, at the budget of
    ``num_samples`` samples plus one greedy program that CodeRL spends: GRPO and RLOO have no use for the greedy
    program, so they get its share of the budget as one more sample (same number of generated programs and of
    sandbox runs for every algorithm).

    >>> group_shape("coderl", 8), group_shape("grpo", 8)
    ((8, True), (9, False))
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown RL algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    return (num_samples, True) if algorithm == "coderl" else (num_samples + 1, False)


def row_advantage(row: dict[str, Any]) -> float:
    """The advantage the RL step trains a row on: ``advantage`` (:func:`group_advantages`), or CodeRL's
    ``relative_return`` for rows that predate it (the two are equal under ``coderl``)."""
    value = row["advantage"] if "advantage" in row else row.get("relative_return")
    if value is None:
        raise ValueError(f"row {row.get('sample_id', '?')!r} of problem {row.get('problem_id', '?')!r} has no "
                         "advantage; the RL step takes only rows with one")
    return float(value)


def token_returns(critic_token_logits: torch.Tensor, outcome_class: torch.Tensor, advantage: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """q_t = softmax(critic logits_t)[class of the sample's outcome] * A (paper, Eq. 7, where A is the relative
    return; any algorithm's sequence advantage can be weighted this way, ``rl.use_critic``).

    Shapes: [B, T, C], [B] (long), [B], [B, T] -> [B, T] (0 on padding). The critic's probability that the program,
    read up to token t, ends in the outcome it actually had, says how much token t is to credit or blame.
    """
    probs = torch.softmax(critic_token_logits.float(), dim=-1)
    p_outcome = probs.gather(-1, outcome_class.view(-1, 1, 1).expand(-1, probs.shape[1], 1)).squeeze(-1)
    return p_outcome * advantage.view(-1, 1) * mask


def sequence_returns(advantage: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Without a critic every token gets the program's advantage: [B], [B, T] -> [B, T]."""
    return advantage.view(-1, 1) * mask


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
