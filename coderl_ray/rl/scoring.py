"""Critic scoring and old log-probabilities: pure cores (:class:`CriticScorer`, :class:`LogprobScorer`: a model,
its pad id, a device and a precision; table in, table out; no Ray) and their Ray Data wrappers (:class:`ScoreBatch`,
:class:`OldLogprobBatch`, pools of actors).

Both cores compute what the training step computes: fp32 weights under the training step's autocast (``precision``,
the run's ``train.precision``: bf16 on GPU, nothing on CPU). RL scoring, critic sampling's scorer
(critic sampling's scorers, :mod:`coderl_ray.roles.workers`) and anything that records behaviour log-probabilities call
these, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

SCORE_COLUMNS = (("critic_logits", pa.list_(pa.float32())), ("critic_pred", pa.int32()),
                 ("critic_pass_prob", pa.float64()))


class CriticScorer:
    """Scores programs with a critic: ``critic_logits`` (the token logits [T, C], flattened row-major),
    ``critic_pred`` (the pooled prediction) and ``critic_pass_prob`` (the pooled probability of "passed").

    ``critic``: a :class:`~coderl_ray.models.critic.CodeCritic` in eval mode on ``device`` (fp32 weights, as it
    trained); ``precision``: ``train.precision`` (``fp32`` / ``bf16``; bf16 autocasts on GPU only)."""

    def __init__(self, critic, pad_id: int, device, precision: str = "fp32"):
        import torch

        from coderl_ray.models.device import autocast

        self.device = torch.device(device)
        autocast(self.device, precision)  # checks the name before any work
        self.critic, self.pad_id, self.precision = critic, pad_id, precision

    @classmethod
    def load(cls, critic_dir: str, precision: str = "fp32", device=None) -> CriticScorer:
        """The critic saved in ``critic_dir`` on ``device`` (default: what Ray assigned this process)."""
        from transformers.utils import logging as hf_logging

        from coderl_ray.models.critic import load_critic
        from coderl_ray.models.device import inference_device
        from coderl_ray.models.tokenizer import load_tokenizer

        hf_logging.disable_progress_bar()
        device = device or inference_device()
        return cls(load_critic(critic_dir).to(device).eval(), load_tokenizer(critic_dir).pad_token_id, device,
                   precision)

    @property
    def n_classes(self) -> int:
        return self.critic.n_classes

    def score(self, rows: Sequence[dict[str, Any]]):
        """:class:`~coderl_ray.models.critic.ProgramScore` of each row (``prompt_ids``, ``token_ids``)."""
        from coderl_ray.models.critic import score_programs
        from coderl_ray.models.device import autocast

        with autocast(self.device, self.precision):
            return score_programs(self.critic, rows, self.pad_id, self.device)

    def __call__(self, table: pa.Table) -> pa.Table:
        """``table`` plus the :data:`SCORE_COLUMNS`; scores it already holds (an online round's rows, scored by the
        critic of their moment) are replaced by this critic's."""
        table = table.drop_columns([name for name, _ in SCORE_COLUMNS if name in table.column_names])
        scores = self.score(table.to_pylist())
        values = {"critic_logits": [s.token_logits.reshape(-1) for s in scores],
                  "critic_pred": [s.pred for s in scores], "critic_pass_prob": [s.pass_prob for s in scores]}
        for name, type_ in SCORE_COLUMNS:
            table = table.append_column(pa.field(name, type_), pa.array(values[name], type=type_))
        return table


class LogprobScorer:
    """log p of every program token under an actor, as the RL step computes it before its first update: the
    reference point of the trust region (``old_logprobs``), or behaviour log-probabilities recorded at generation.

    ``actor``: fp32 weights in eval mode on ``device``; ``temperature``: the step's (``rollout.temperature`` with
    ``rl.on_policy_logprobs``, else 1); ``precision``: ``train.precision``. A generator holding bf16 weights
    (``models.device.inference_dtype`` on GPU) is *not* this: its log-probabilities differ from the step's by bf16
    rounding of the weights, and p / p_old would start away from 1."""

    def __init__(self, actor, pad_id: int, device, precision: str = "fp32", temperature: float = 1.0,
                 column: str = "old_logprobs"):
        import torch

        from coderl_ray.models.device import autocast

        self.device = torch.device(device)
        autocast(self.device, precision)  # checks the name before any work
        self.actor, self.pad_id, self.precision = actor, pad_id, precision
        self.temperature, self.column = float(temperature), column

    @classmethod
    def load(cls, actor_dir: str, temperature: float, precision: str = "fp32", device=None,
             column: str = "old_logprobs") -> LogprobScorer:
        from transformers.utils import logging as hf_logging

        from coderl_ray.models.actor import load_actor
        from coderl_ray.models.device import inference_device
        from coderl_ray.models.tokenizer import load_tokenizer

        hf_logging.disable_progress_bar()
        device = device or inference_device()
        return cls(load_actor(actor_dir).to(device).eval(), load_tokenizer(actor_dir).pad_token_id, device,
                   precision, temperature, column)

    def logprobs(self, rows: Sequence[dict[str, Any]]) -> list:
        """One float32 array per row (``prompt_ids``, ``token_ids``): log p of each program token."""
        import torch

        from coderl_ray.models.batching import program_batch, token_logprobs
        from coderl_ray.models.device import autocast

        with torch.no_grad(), autocast(self.device, self.precision):
            b = program_batch(rows, self.pad_id, self.device)
            logp = token_logprobs(self.actor, b, self.temperature).float().cpu().numpy()
        lengths = b["program_mask"].sum(-1).tolist()
        return [logp[i, :n] for i, n in enumerate(lengths)]

    def __call__(self, table: pa.Table) -> pa.Table:
        """``table`` plus ``column`` (list<float32>, one value per program token)."""
        values = self.logprobs(table.to_pylist())
        return table.append_column(self.column, pa.array(values, type=pa.list_(pa.float32())))


class ScoreBatch:
    """``map_batches`` callable around :class:`CriticScorer`: adds ``critic_logits``, ``critic_pred`` and
    ``critic_pass_prob``."""

    def __init__(self, critic_dir: str, precision: str = "fp32"):
        self.scorer = CriticScorer.load(critic_dir, precision)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.scorer(batch)


def score_samples(ds, critic_dir: str, batch_size: int = 64, num_workers: int = 1, num_cpus: float = 1.0,
                  num_gpus: float = 0.0, precision: str = "fp32"):
    """Lazy Dataset: ``ds`` rows (need ``prompt_ids``, ``token_ids``) plus the critic's scores."""
    import ray

    return ds.map_batches(ScoreBatch, fn_constructor_args=(str(critic_dir), precision), batch_size=batch_size,
                          batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=num_workers),
                          num_cpus=num_cpus, num_gpus=num_gpus)


def roc_auc(scores: list[float], positives: list[bool]) -> float | None:
    """Area under the ROC curve: the probability that a random positive scores above a random negative, a tie
    counting one half (the Mann-Whitney U statistic over n_pos * n_neg). None when either class is absent.

    >>> roc_auc([0.9, 0.5, 0.5, 0.1], [True, True, False, False])  # pairs: 0.9>0.5, 0.9>0.1, 0.5=0.5, 0.5>0.1
    0.875
    """
    if len(scores) != len(positives):
        raise ValueError(f"{len(scores)} scores for {len(positives)} labels")
    n_pos = sum(map(bool, positives))
    n_neg = len(positives) - n_pos
    if not n_pos or not n_neg:
        return None
    # Walk the scores in ascending order one tie group at a time: each positive of a group beats every negative
    # below the group and ties with the group's own negatives.
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    wins, negatives_below, i = 0.0, 0, 0
    while i < len(order):
        j = i
        while j < len(order) and scores[order[j]] == scores[order[i]]:
            j += 1
        pos = sum(bool(positives[k]) for k in order[i:j])
        neg = (j - i) - pos
        wins += pos * negatives_below + 0.5 * pos * neg
        negatives_below += neg
        i = j
    return wins / (n_pos * n_neg)


def critic_quality(rows: list[dict], n_classes: int) -> dict | None:
    """How well the critic reads scored rows (``outcome``, ``critic_pred``, ``critic_pass_prob``, ``problem_id``);
    None if none has a label.

    ``accuracy`` over the critic's ``n_classes`` next to ``majority_rate``, the accuracy of always answering the most
    frequent real class (a critic below it has learnt less than the class counts, or was trained on other class
    proportions); ``auc``, the ranking quality of the "passed" probability against passed / not passed over all
    programs (None when every program passed or none did); ``auc_within_problems``, the mean AUC over the
    ``mixed_problems`` that have both passed and failed programs: how well it picks among one problem's programs,
    which is what critic sampling asks of it (telling easy problems from hard ones raises ``auc`` alone);
    ``programs`` and ``passed``, the counts behind them.
    """
    from collections import Counter, defaultdict

    from coderl_ray.records import Outcome, critic_class

    labelled = [r for r in rows if Outcome(r["outcome"]).is_label]
    if not labelled:
        return None
    classes = [critic_class(r["outcome"], n_classes) for r in labelled]
    passed = [c == n_classes - 1 for c in classes]
    probs = [float(r["critic_pass_prob"]) for r in labelled]
    groups: dict[str, tuple[list[float], list[bool]]] = defaultdict(lambda: ([], []))
    for r, prob, ok in zip(labelled, probs, passed):
        groups[r.get("problem_id", "")][0].append(prob)
        groups[r.get("problem_id", "")][1].append(ok)
    within = [a for a in (roc_auc(*g) for g in groups.values()) if a is not None]
    n = len(labelled)
    return {"programs": n, "passed": sum(passed),
            "accuracy": sum(int(r["critic_pred"]) == c for r, c in zip(labelled, classes)) / n,
            "majority_rate": max(Counter(classes).values()) / n,
            "auc": roc_auc(probs, passed),
            "auc_within_problems": sum(within) / len(within) if within else None, "mixed_problems": len(within)}


class OldLogprobBatch:
    """``map_batches`` callable around :class:`LogprobScorer`: adds ``old_logprobs`` (one float per program
    token), the log-probabilities of the policy an RL run starts from: the reference point of its trust region
    (``rl.clip_ratio``). They must be what the RL step computes before its first update, or the ratio p / p_old
    starts away from 1 and the trust region clips from step one: hence the same fp32 weights, the same function
    (``token_logprobs``) and the same autocast (``precision``)."""

    def __init__(self, actor_dir: str, temperature: float, precision: str = "fp32"):
        self.scorer = LogprobScorer.load(actor_dir, temperature, precision)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.scorer(batch)


def add_old_logprobs(ds, actor_dir: str, temperature: float, batch_size: int = 64, num_workers: int = 1,
                     num_cpus: float = 1.0, num_gpus: float = 0.0, precision: str = "fp32"):
    """Lazy Dataset: ``ds`` rows plus ``old_logprobs`` under ``actor_dir`` at ``temperature``, computed in the RL
    step's ``precision`` (``train.precision``)."""
    import ray

    return ds.map_batches(OldLogprobBatch, fn_constructor_args=(str(actor_dir), float(temperature), precision),
                          batch_size=batch_size, batch_format="pyarrow",
                          compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=num_cpus,
                          num_gpus=num_gpus)
