"""Critic scoring on Ray Data: token-level critic logits for every sample (a pool of critic actors)."""

from __future__ import annotations

import pyarrow as pa


class ScoreBatch:
    """``map_batches`` callable: adds ``critic_logits`` (flattened [T, C]), ``critic_pred`` and ``critic_pass_prob``.

    The critic runs as it trained: fp32 weights, and the training step's autocast (``precision``) on GPU."""

    def __init__(self, critic_dir: str, precision: str = "fp32"):
        from transformers.utils import logging as hf_logging

        from coderl_ray.models.critic import load_critic
        from coderl_ray.models.device import autocast, inference_device
        from coderl_ray.models.tokenizer import load_tokenizer

        hf_logging.disable_progress_bar()
        self.device = inference_device()
        autocast(self.device, precision)  # checks the name before any work
        self.precision = precision
        self.critic = load_critic(critic_dir).to(self.device).eval()
        self.pad_id = load_tokenizer(critic_dir).pad_token_id

    def __call__(self, batch: pa.Table) -> pa.Table:
        from coderl_ray.models.critic import score_programs
        from coderl_ray.models.device import autocast

        with autocast(self.device, self.precision):
            scores = score_programs(self.critic, batch.to_pylist(), self.pad_id, self.device)
        table = batch
        table = table.append_column("critic_logits", pa.array([s.token_logits.reshape(-1) for s in scores],
                                                              type=pa.list_(pa.float32())))
        table = table.append_column("critic_pred", pa.array([s.pred for s in scores], type=pa.int32()))
        table = table.append_column("critic_pass_prob", pa.array([s.pass_prob for s in scores], type=pa.float64()))
        return table


def score_samples(ds, critic_dir: str, batch_size: int = 64, num_workers: int = 1, num_cpus: float = 1.0,
                  num_gpus: float = 0.0, precision: str = "fp32"):
    """Lazy Dataset: ``ds`` rows (need ``prompt_ids``, ``token_ids``) plus the critic's scores."""
    import ray

    return ds.map_batches(ScoreBatch, fn_constructor_args=(str(critic_dir), precision), batch_size=batch_size,
                          batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=num_workers),
                          num_cpus=num_cpus, num_gpus=num_gpus)


def critic_accuracy(rows: list[dict], n_classes: int) -> float | None:
    """Share of scored rows whose predicted class is the class of their real outcome (None if no rows)."""
    from coderl_ray.records import Outcome, critic_class

    labelled = [r for r in rows if Outcome(r["outcome"]).is_label]
    if not labelled:
        return None
    return sum(int(r["critic_pred"]) == critic_class(r["outcome"], n_classes) for r in labelled) / len(labelled)


class OldLogprobBatch:
    """``map_batches`` callable: adds ``old_logprobs`` (one float per program token), the log-probabilities of
    the policy an RL run starts from: the reference point of its trust region (``rl.clip_ratio``).

    They must be what the RL step computes before its first update, or the ratio p / p_old starts away from 1 and
    the trust region clips from step one: so the same fp32 weights, the same function (``token_logprobs``) and the
    same autocast (``precision``, the run's ``train.precision``; bf16 on GPU, fp32 on CPU)."""

    def __init__(self, actor_dir: str, temperature: float, precision: str = "fp32"):
        from transformers.utils import logging as hf_logging

        from coderl_ray.models.actor import load_actor
        from coderl_ray.models.device import autocast, inference_device
        from coderl_ray.models.tokenizer import load_tokenizer

        hf_logging.disable_progress_bar()
        self.device = inference_device()
        autocast(self.device, precision)  # checks the name before any work
        self.precision = precision
        self.actor = load_actor(actor_dir).to(self.device).eval()
        self.pad_id = load_tokenizer(actor_dir).pad_token_id
        self.temperature = temperature

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        from coderl_ray.models.batching import program_batch, token_logprobs
        from coderl_ray.models.device import autocast

        rows = batch.to_pylist()
        with torch.no_grad(), autocast(self.device, self.precision):
            b = program_batch(rows, self.pad_id, self.device)
            logp = token_logprobs(self.actor, b, self.temperature).float().cpu().numpy()
        lengths = b["program_mask"].sum(-1).tolist()
        values = [logp[i, :n] for i, n in enumerate(lengths)]
        return batch.append_column("old_logprobs", pa.array(values, type=pa.list_(pa.float32())))


def add_old_logprobs(ds, actor_dir: str, temperature: float, batch_size: int = 64, num_workers: int = 1,
                     num_cpus: float = 1.0, num_gpus: float = 0.0, precision: str = "fp32"):
    """Lazy Dataset: ``ds`` rows plus ``old_logprobs`` under ``actor_dir`` at ``temperature``, computed in the RL
    step's ``precision`` (``train.precision``)."""
    import ray

    return ds.map_batches(OldLogprobBatch, fn_constructor_args=(str(actor_dir), float(temperature), precision),
                          batch_size=batch_size, batch_format="pyarrow",
                          compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=num_cpus,
                          num_gpus=num_gpus)
