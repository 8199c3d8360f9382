"""One training loop for the actor (SFT, RL) and the critic, run by every Ray Train worker.

The loop is plain PyTorch over an iterator of row batches; :func:`train_loop_per_worker` plugs it into Ray Train
(dataset shards, DDP or FSDP, checkpoints, reports) and :func:`fit` is the driver. The same loop runs without Ray in
tests and in ``benchmarks/train_throughput.py`` through :func:`run_loop`, so what is benchmarked is what trains.

Step budget, not epochs: every worker runs exactly ``steps`` optimizer steps over an endlessly cycled (and
reshuffled) shard, so workers never disagree on the number of collective calls whatever their shard sizes.

One step (``train_step``): the worker's ``batch_size // world_size`` rows are split into micro-batches (rows and
token budget, :mod:`coderl_ray.train.batching`), each micro-batch's loss is weighted so the sum is the whole batch's
loss, gradients accumulate (reduced across workers only in the last backward), then clipping, AdamW, the schedule.
An RL step with ``alternation="micro_batch"`` (the original CodeRL's scheme, see :func:`step_plan`) does this for
one cross-entropy batch and one RL batch and adds their losses, each at weight 1/2.

A checkpoint (``<checkpoint>/``) holds ``model/`` (Hugging Face ``save_pretrained`` plus the tokenizer; a critic
adds its head), ``trainer_state.pt`` (optimizer, scheduler, step, data position) and ``trainer_state.json`` (the same
without tensors, for people and for :func:`coderl_ray.models.actor.resolve_model_path`). A killed run restarted by
Ray Train (``FailureConfig``) resumes from the latest one: same model, optimizer moments, learning rate, random
state (seeded per step) and position in each dataset shard, hence the same losses as if it had not been killed.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from coderl_ray.models.actor import CHECKPOINT_INFO, CHECKPOINT_MODEL
from coderl_ray.train.batching import (
    BatchCursor,
    bucket_by_length,
    group_by_key,
    micro_batch_weights,
    padded_tokens,
    row_lengths,
    split_micro_batches,
)

MODEL_SUBDIR = CHECKPOINT_MODEL
STATE_FILE = "trainer_state.pt"


@dataclass
class LoopConfig:
    """What one training run does. ``batch_size`` is global; each worker takes ``batch_size // world_size`` rows
    per step and splits them into micro-batches (see :mod:`coderl_ray.train.batching` for how sizes compose)."""

    objective: str  # "sft" | "rl" | "critic"
    init_path: str  # actor folder (sft, rl), or critic folder / backbone folder (critic)
    steps: int
    batch_size: int
    lr: float
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0  # AdamW decay of matrices; biases and norms are never decayed
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    n_classes: int = 4
    head_hidden: int = 128
    critic_pooling: str = "tokens"  # a new critic's pooling (models.critic.CodeCritic); a loaded one must match
    critic_pool_length: int = 0  # positions pooled by "all_positions" (the target limit)
    critic_scale_input: bool = True  # a new critic's head reads states at its backbone's LM-head scale
    critic_read_logprobs: bool = False  # a new critic's head also reads its tokens' log-probabilities; loaded: match
    critic_train_backbone: bool = True  # critic: False = only the head trains (the backbone is frozen)
    critic_rank_weight: float = 0.0  # critic: weight of the within-problem ranking term (CriticConfig.rank_weight)
    # Regroup this many batches at a time so one problem's rows share a batch (rows need problem_id; the data must
    # arrive ordered by problem, not shuffled row by row); 0 = off. Excludes bucket_batches.
    group_batches: int = 0
    use_critic: bool = True
    alternate_ce: bool = True
    alternation: str = "micro_batch"  # "micro_batch" | "step": how RL and cross-entropy alternate (step_plan)
    rl_temperature: float = 1.0  # RL steps: score sampled programs at the temperature they were sampled at
    rl_clip: float = 0.0  # RL steps: PPO-style trust region around the rows' old_logprobs; 0 = CodeRL's plain loss
    precision: str = "fp32"  # "bf16": bf16 autocast on GPU (fp32 master weights); CPU always runs fp32
    seed: int = 0
    report_every: int = 10
    checkpoint_every: int = 0  # 0 = only at the end
    new_critic: bool = False  # critic: build a fresh head on the backbone at init_path
    # Scale (each documented in TrainConfig, which sets them for the pipeline).
    parallel: str = "ddp"  # "ddp" | "fsdp"
    micro_batch_size: int = 0  # rows per micro-batch on a worker; 0 = the worker's whole batch
    max_tokens_per_micro_batch: int = 0  # padded (prompt + program) tokens per micro-batch; 0 = no budget
    bucket_batches: int = 0  # regroup this many batches by length; 0 or 1 = off
    pad_to_multiple_of: int = 1  # round padded lengths up (bounds the shapes a compiled model sees)
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the model (per transformer block under FSDP)
    torch_threads: int = 0  # CPU threads for torch's kernels in each worker; 0 = Ray's default (cpus_per_worker)
    min_lr_ratio: float = 0.1  # the cosine schedule decays to lr * min_lr_ratio
    # Metrics.
    name: str = ""  # run name in logs ("" = the objective)
    log_dir: str = "auto"  # TensorBoard folder; "auto" = <storage>/<run name>/tensorboard under fit(); "" = off
    mlflow_tracking_uri: str = ""
    wandb_project: str = ""
    progress_bar: bool = True  # rank 0 draws one in the driver's console (fit() turns it off when not a terminal)

    def __post_init__(self) -> None:
        if self.objective not in ("sft", "rl", "critic"):
            raise ValueError(f"objective must be sft, rl or critic, got {self.objective!r}")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"parallel must be ddp or fsdp, got {self.parallel!r}")
        if self.alternation not in ("micro_batch", "step"):
            raise ValueError(f"alternation must be micro_batch or step, got {self.alternation!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if not 0 <= self.rl_clip < 1:
            raise ValueError(f"rl_clip must lie in [0, 1), got {self.rl_clip}")
        if self.rl_temperature <= 0:
            raise ValueError(f"rl_temperature must be > 0, got {self.rl_temperature}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps ({self.steps}) and batch_size ({self.batch_size}) must be >= 1")
        if min(self.micro_batch_size, self.max_tokens_per_micro_batch, self.bucket_batches) < 0:
            raise ValueError("micro_batch_size, max_tokens_per_micro_batch and bucket_batches must be >= 0")
        if self.group_batches < 0 or (self.group_batches and self.bucket_batches > 1):
            raise ValueError(f"group_batches must be >= 0 and excludes bucket_batches (regrouping by length would "
                             f"split the problems' groups): got {self.group_batches} and {self.bucket_batches}")
        if self.pad_to_multiple_of < 1 or self.report_every < 1:
            raise ValueError("pad_to_multiple_of and report_every must be >= 1")


def train_options(train_cfg) -> dict[str, Any]:
    """The LoopConfig fields that come from the pipeline's ``TrainConfig`` (shared by SFT, critic and RL runs)."""
    t = train_cfg
    return {"precision": t.precision, "grad_clip": t.grad_clip, "checkpoint_every": t.checkpoint_every,
            "parallel": t.parallel, "micro_batch_size": t.micro_batch_size_per_worker,
            "max_tokens_per_micro_batch": t.max_tokens_per_micro_batch, "bucket_batches": t.bucket_batches,
            "pad_to_multiple_of": t.pad_to_multiple_of, "gradient_checkpointing": t.gradient_checkpointing,
            "compile": t.compile, "torch_threads": t.torch_threads, "log_dir": "auto" if t.tensorboard else "",
            "mlflow_tracking_uri": t.mlflow_tracking_uri, "wandb_project": t.wandb_project}


def concurrent_torch_threads(train_cfg) -> int:
    """``train.torch_threads`` for a trainer that computes while other roles compute beside it (the online loop):
    at most the CPUs each worker reserves, and at least one thread (0 stays Ray's default, which is exactly that).

    ``train.torch_threads`` above the reservation lets a trainer use cores the other roles reserve, which is right
    where it trains alone (the staged loop: one stage at a time) and oversubscribes the cores where it does not
    (docs/benchmarks.md, "Staged vs online loop": on 2 cores, 2 threads per trainer gave the online loop 0.99x the
    staged loop's programs per second, one thread 1.53x).

    >>> from coderl_ray.config import TrainConfig
    >>> concurrent_torch_threads(TrainConfig(cpus_per_worker=0.125, torch_threads=2))
    1
    >>> concurrent_torch_threads(TrainConfig(cpus_per_worker=4, torch_threads=8))
    4
    >>> concurrent_torch_threads(TrainConfig(cpus_per_worker=4, torch_threads=2))
    2
    """
    t = train_cfg
    return min(t.torch_threads, max(1, int(t.cpus_per_worker))) if t.torch_threads > 0 else 0


def _lr_lambda(cfg: LoopConfig) -> Callable[[int], float]:
    warmup = max(1, int(cfg.warmup_ratio * cfg.steps))
    floor = cfg.min_lr_ratio

    def f(step: int) -> float:
        # Linear warm-up then cosine decay to a floor: the tiny runs are short, so the tail matters.
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, cfg.steps - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def make_optimizer(cfg: LoopConfig, model, state: dict | None = None, fused: bool = False):
    """AdamW + warm-up/cosine schedule, restored from a checkpoint's ``state`` when given.

    Matrices are decayed, biases and norm weights are not (decaying a LayerNorm gain towards 0 only hurts).
    ``fused``: one kernel for all parameters on GPU. Order matters when restoring: the scheduler's constructor
    rewrites each group's lr, so the optimizer state (which carries the lr of the step it was saved at) is loaded
    after it.
    """
    from coderl_ray.train.parallel import load_optimizer_state

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for _, p in named if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    if state is not None:
        load_optimizer_state(model, optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    return optimizer, scheduler


def build_model(cfg: LoopConfig):
    """The model to train, in fp32 whatever dtype its checkpoint was stored in: the optimizer updates fp32 master
    weights and bf16 comes only from autocast (``precision``), so small updates are not rounded away."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if cfg.objective == "critic":
        from coderl_ray.models.critic import build_critic, head_input_scale, load_critic

        if cfg.new_critic:
            critic = build_critic(cfg.init_path, cfg.n_classes, cfg.head_hidden, seed=cfg.seed, dtype=torch.float32,
                                  pooling=cfg.critic_pooling, pool_length=cfg.critic_pool_length,
                                  input_scale=None if cfg.critic_scale_input else 1.0,
                                  read_logprobs=cfg.critic_read_logprobs)
            return _head_only(critic) if not cfg.critic_train_backbone else critic
        critic = load_critic(cfg.init_path, dtype=torch.float32)
        scale = head_input_scale(critic.backbone.config) if cfg.critic_scale_input else 1.0
        if abs(critic.input_scale - scale) > 1e-9 * scale:
            raise ValueError(f"the critic in {cfg.init_path} reads its backbone's states scaled by "
                             f"{critic.input_scale:.4g} but the run asks for {scale:.4g} (critic.scale_head_input); "
                             "start a new critic, or set the flag to how this one was trained")
        if critic.n_classes != cfg.n_classes:
            raise ValueError(f"the critic in {cfg.init_path} has {critic.n_classes} classes but the run asks for "
                             f"{cfg.n_classes}; start a new critic (new_critic) to change the number of classes")
        if critic.read_logprobs != cfg.critic_read_logprobs:
            raise ValueError(f"the critic in {cfg.init_path} has read_logprobs={critic.read_logprobs} but the run asks "
                             f"for {cfg.critic_read_logprobs}; start a new critic to change what its head reads")
        wanted = (cfg.critic_pooling, cfg.critic_pool_length if cfg.critic_pooling == "all_positions" else 0)
        if (critic.pooling, critic.pool_length) != wanted:
            raise ValueError(f"the critic in {cfg.init_path} pools {critic.pooling!r} (length {critic.pool_length}) "
                             f"but the run asks for {wanted[0]!r} (length {wanted[1]}); start a new critic to change "
                             "its pooling")
        return _head_only(critic) if not cfg.critic_train_backbone else critic
    from coderl_ray.models.actor import load_actor

    return load_actor(cfg.init_path, dtype=torch.float32)


def _head_only(critic):
    """``critic`` with its backbone frozen (``critic_train_backbone`` off): the optimizer, which takes the parameters
    that require a gradient, then trains the head alone."""
    critic.backbone.requires_grad_(False)
    return critic


def step_plan(cfg: LoopConfig, step: int, has_ce: bool) -> list[tuple[str, float]]:
    """What optimizer step ``step`` (0-based) trains: ``(kind, share)`` parts, each one batch whose loss enters the
    step's loss times ``share``. Kinds: "sft", "critic", "rl", and "ce" (the cross-entropy half of an RL run).

    An RL run alternates cross-entropy on ground truth with the RL objective (``alternate_ce``), in one of two ways:

    * ``"micro_batch"`` (the original CodeRL's): every step takes one CE batch and one RL batch and its loss is
      CE/2 + RL/2. The original trainer switched objective on the micro-batch index (``step % 2`` inside its
      gradient-accumulation loop) and divided every micro-batch's loss by the number of accumulation steps, so with
      its scripts' 4 accumulation steps every update was the mean of 2 CE and 2 RL micro-batch losses.
    * ``"step"``: even steps are pure CE, odd steps pure RL (what the original did only with no accumulation). The RL
      gradient then carries a whole update on its own, and Adam's moments mix the two objectives step by step.
    """
    if cfg.objective != "rl":
        return [(cfg.objective, 1.0)]
    if not (cfg.alternate_ce and has_ce):
        return [("rl", 1.0)]
    if cfg.alternation == "micro_batch":
        return [("ce", 0.5), ("rl", 0.5)]
    return [("ce", 1.0)] if step % 2 == 0 else [("rl", 1.0)]


def step_seed(seed: int, rank: int, step: int) -> int:
    """The random state of a step is a function of (seed, rank, step), so a resumed run draws the same dropout."""
    return (seed * 1_000_003 + rank * 10_007 + step) % (2**63)


def _micro_loss(kind: str, model, rows, pad_id: int, cfg: LoopConfig, device):
    from coderl_ray.train.objectives import critic_objective, rl_objective, sft_loss

    pad = {"pad_to_multiple_of": cfg.pad_to_multiple_of}
    if kind in ("sft", "ce"):
        return sft_loss(model, rows, pad_id, device, **pad)
    if kind == "critic":
        return critic_objective(model, rows, pad_id, device, rank_weight=cfg.critic_rank_weight, **pad)
    return rl_objective(model, rows, pad_id, cfg.n_classes, cfg.use_critic, device, temperature=cfg.rl_temperature,
                        clip=cfg.rl_clip, **pad)


def train_step(cfg: LoopConfig, model, parts: list[tuple[str, list[dict], float]], pad_id: int,
               device: torch.device, optimizer, scheduler, params: list[torch.Tensor]) -> dict[str, float]:
    """One optimizer step on one worker's ``parts``, ``(kind, rows, share)`` as :func:`step_plan` lays them out
    (``[(kind, rows, 1.0)]`` for one batch); returns its metrics (one host sync, at the end).

    A part's micro-batches weigh ``share`` x their share of the part's batch, so the step's loss is
    sum(share x the part's whole-batch loss). Its metrics (``ce_loss``, ``rl_loss``, ...) are the parts' own losses,
    unweighted by ``share``; ``loss`` is the weighted sum that was differentiated.
    """
    from coderl_ray.train.parallel import is_fsdp, max_over_workers, no_sync, world_size

    t0 = time.perf_counter()
    micro: list[tuple[str, list[dict], float, float]] = []  # (kind, rows, weight in the loss, weight in metrics)
    for kind, rows, share in parts:
        mbs = split_micro_batches(rows, cfg.micro_batch_size, cfg.max_tokens_per_micro_batch)
        within = micro_batch_weights("sft" if kind == "ce" else kind, mbs)
        if is_fsdp(model):
            # FSDP gathers parameters in every forward: all workers must run as many micro-batches. Extra ones
            # repeat the part's last micro-batch with weight 0 (no gradient, same collectives).
            n = max_over_workers(len(mbs), device)
            mbs, within = mbs + [mbs[-1]] * (n - len(mbs)), within + [0.0] * (n - len(mbs))
        micro += [(kind, mb, share * w, w) for mb, w in zip(mbs, within)]
    sync_each = world_size() > 1
    autocast = cfg.precision == "bf16" and device.type == "cuda"
    optimizer.zero_grad(set_to_none=True)
    loss_total = torch.zeros((), device=device)
    sums: dict[str, Any] = {}
    for i, (kind, mb, w, w_metric) in enumerate(micro):
        with no_sync(model, enabled=sync_each and i < len(micro) - 1), \
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, m = _micro_loss(kind, model, mb, pad_id, cfg, device)
            (loss * w).backward()
        if w == 0.0:
            continue
        loss_total = loss_total + loss.detach() * w
        for k, v in m.items():
            if k == "tokens":
                sums[k] = sums.get(k, 0) + v
            else:
                sums[k] = sums.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v) * w_metric
    if cfg.grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    else:
        grad_norm = torch.zeros((), device=device)
    optimizer.step()
    scheduler.step()
    real = [mb for _, mb, w, _ in micro if w > 0]
    metrics = {k: float(v) for k, v in sums.items()}  # the step's only host sync
    metrics.update(loss=float(loss_total), grad_norm=float(grad_norm), lr=scheduler.get_last_lr()[0],
                   micro_batches=len(real), padded_tokens=sum(padded_tokens(mb) for mb in real),
                   real_tokens=sum(sum(row_lengths(r)) for mb in real for r in mb),
                   step_s=time.perf_counter() - t0)
    return metrics


def run_loop(cfg: LoopConfig, model, batches: Iterator[list[dict]], pad_id: int, *,
             ce_batches: Iterator[list[dict]] | None = None, device: torch.device | str = "cpu",
             start_step: int = 0, optimizer=None, scheduler=None, rank: int = 0,
             on_step: Callable[[int, dict, Any, Any], None] | None = None) -> list[dict]:
    """The loop itself: ``cfg.steps - start_step`` optimizer steps; returns one metrics dict per step.

    ``model`` is ready to train (on ``device``, wrapped by :func:`coderl_ray.train.parallel.prepare_model` when
    distributed). RL alternates cross-entropy on ground truth (from ``ce_batches``) with the RL objective on
    sampled programs (from ``batches``) as :func:`step_plan` says: within every step (``cfg.alternation ==
    "micro_batch"``, one batch of each) or step by step (``"step"``).
    """
    device = torch.device(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer, scheduler = make_optimizer(cfg, model, fused=device.type == "cuda")
    history = []
    model.train()
    for step in range(start_step, cfg.steps):
        torch.manual_seed(step_seed(cfg.seed, rank, step))
        parts = [(kind, next(ce_batches if kind == "ce" else batches), share)
                 for kind, share in step_plan(cfg, step, ce_batches is not None)]
        metrics = train_step(cfg, model, parts, pad_id, device, optimizer, scheduler, params)
        metrics["step"] = step + 1
        history.append(metrics)
        if on_step is not None:
            on_step(step + 1, metrics, optimizer, scheduler)
    return history


# --- checkpoints -------------------------------------------------------------------------------------------------


def save_model(model, folder: str | Path, tokenizer=None, state_dict: dict | None = None) -> None:
    """Hugging Face folder of ``model`` (a critic adds its head). ``state_dict``: a full one gathered under FSDP."""
    from coderl_ray.models.batching import unwrap

    core = unwrap(model)
    if state_dict is None:
        core.save_pretrained(folder)
    else:
        core.save_pretrained(folder, state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def write_checkpoint(folder: Path, cfg: LoopConfig, model, optimizer, scheduler, tokenizer, step: int,
                     positions: dict[str, tuple[int, int]], rank: int) -> bool:
    """Write a checkpoint into ``folder`` (rank 0 writes; under FSDP every rank must call). True if written."""
    from coderl_ray.train.parallel import full_state_dicts

    model_sd, optim_sd = full_state_dicts(model, optimizer, rank)
    if rank != 0:
        return False
    save_model(model, folder / MODEL_SUBDIR, tokenizer, state_dict=model_sd)
    info = {"step": step, "steps": cfg.steps, "objective": cfg.objective, "parallel": cfg.parallel,
            "data_position": {k: list(v) for k, v in positions.items()}}
    torch.save({**info, "optimizer": optim_sd, "scheduler": scheduler.state_dict(), "config": asdict(cfg)},
               folder / STATE_FILE)
    (folder / CHECKPOINT_INFO).write_text(json.dumps(info, indent=1))
    return True


def load_trained(checkpoint_dir: str | Path, dest: str | Path) -> Path:
    """Copy the Hugging Face model out of a Ray Train checkpoint folder into ``dest`` (atomically)."""
    src = Path(checkpoint_dir) / MODEL_SUBDIR
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


# --- Ray Train ---------------------------------------------------------------------------------------------------


def shard_cursor(shard, per_worker: int, cfg: LoopConfig, seed: int,
                 position: tuple[int, int] = (0, 0)) -> BatchCursor:
    """A resumable cursor over a worker's shard (a Ray Data ``DataIterator``): shuffled per epoch, optionally
    bucketed; or, with ``group_batches``, regrouped by problem (a row-level shuffle would scatter the groups)."""

    def epoch(e: int) -> Iterator[list[dict]]:
        shuffle = {} if cfg.group_batches else {"local_shuffle_buffer_size": max(4 * per_worker, 256),
                                                 "local_shuffle_seed": seed + e}
        tables = shard.iter_batches(batch_size=per_worker, batch_format="pyarrow", drop_last=False, **shuffle)
        if cfg.group_batches:
            return group_by_key((t.to_pylist() for t in tables), cfg.group_batches, "problem_id", seed + e)
        return bucket_by_length((t.to_pylist() for t in tables), cfg.bucket_batches, seed + e)

    return BatchCursor(epoch, position)


def data_cursors(cfg: LoopConfig, shards: dict[str, Any], rank: int, world: int,
                 positions: dict[str, tuple[int, int]] | None = None) -> dict[str, BatchCursor]:
    """This worker's cursors: ``train`` always, ``ce`` (ground truth) for an RL run that alternates."""
    per_worker = max(1, cfg.batch_size // world)
    positions = positions or {}
    cursors = {"train": shard_cursor(shards["train"], per_worker, cfg, cfg.seed + 1000 * rank,
                                     positions.get("train", (0, 0)))}
    if cfg.objective == "rl" and cfg.alternate_ce and "ce" in shards:
        cursors["ce"] = shard_cursor(shards["ce"], per_worker, cfg, cfg.seed + 1000 * rank + 7,
                                     positions.get("ce", (0, 0)))
    return cursors


class StepLog:
    """Every ``report_every`` steps (and at the last): the window's metrics, reduced over workers (every rank must
    call, in step), written by rank 0 to the console, TensorBoard and the configured trackers."""

    def __init__(self, cfg: LoopConfig, rank: int, device, start_step: int = 0):
        from coderl_ray.train.metrics import MetricsLogger

        self.cfg, self.device = cfg, device
        self.logger = MetricsLogger(cfg.name or cfg.objective, cfg.steps, start_step,
                                    log_dir="" if cfg.log_dir == "auto" else cfg.log_dir,
                                    mlflow_tracking_uri=cfg.mlflow_tracking_uri, wandb_project=cfg.wandb_project,
                                    progress_bar=cfg.progress_bar, run_config=asdict(cfg),
                                    in_ray=True) if rank == 0 else None
        self.window: list[dict] = []
        self.t_window = time.perf_counter()

    def step(self, step: int, metrics: dict, force: bool = False) -> dict | None:
        """Record one step; returns the window's summary (on every rank) when a window closes, else None."""
        from coderl_ray.train.metrics import summarize
        from coderl_ray.train.parallel import mean_over_workers, sum_over_workers

        self.window.append(metrics)
        if self.logger is not None:
            self.logger.advance()
        if not (force or step == self.cfg.steps or step % self.cfg.report_every == 0):
            return None
        # Every worker reaches here at the same steps with the same metric names, so tokens can be summed and
        # losses averaged across workers (rank 0's own loss would be a quarter of the data on 4 workers).
        tokens = sum_over_workers(sum(m.get("tokens", 0) for m in self.window), self.device)
        summary = summarize(self.window, time.perf_counter() - self.t_window, tokens)
        throughput = summary.pop("tokens_per_s")
        summary = {**mean_over_workers(summary, self.device), "tokens_per_s": throughput}
        self.window.clear()
        if self.logger is not None:
            self.logger.log(step, summary)
        self.t_window = time.perf_counter()
        return summary

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config`` is ``asdict(LoopConfig)`` (plain values pickle across nodes), plus an
    optional ``step_callback(step, metrics, rank)`` run on every worker after each step (see :func:`fit`)."""
    import ray.train
    import ray.train.torch

    from coderl_ray.models.tokenizer import load_tokenizer
    from coderl_ray.train.parallel import prepare_model

    config = dict(config)
    step_callback = config.pop("step_callback", None)
    cfg = LoopConfig(**config)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()

    start_step, state = 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        # Resuming after a worker failure (or a rerun): model, optimizer, scheduler, step and data position.
        with checkpoint.as_directory() as d:
            model = build_model(replace(cfg, init_path=str(Path(d) / MODEL_SUBDIR), new_critic=False))
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
            tokenizer = load_tokenizer(Path(d) / MODEL_SUBDIR)
        start_step = int(state["step"])
    else:
        model = build_model(cfg)
        tokenizer = load_tokenizer(cfg.init_path)
    torch.manual_seed(cfg.seed)
    model = prepare_model(model, parallel=cfg.parallel, device=device, precision=cfg.precision,
                          gradient_checkpointing=cfg.gradient_checkpointing, compile_model=cfg.compile)
    optimizer, scheduler = make_optimizer(cfg, model, state, fused=device.type == "cuda")

    positions = {k: tuple(v) for k, v in (state or {}).get("data_position", {}).items()}
    if checkpoint is not None and rank == 0:
        print(f"[{cfg.name or cfg.objective}] resumed from step {start_step} of {cfg.steps} "
              f"(data position {positions}, checkpoint {checkpoint.path})", flush=True)
    shards = {name: ray.train.get_dataset_shard(name) for name in ("train", "ce")
              if name == "train" or (cfg.objective == "rl" and cfg.alternate_ce)}
    cursors = data_cursors(cfg, shards, rank, world, positions)
    log = StepLog(cfg, rank, device, start_step)

    def on_step(step: int, metrics: dict, opt, sched) -> None:
        last = step == cfg.steps
        want_ckpt = last or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
        summary = log.step(step, metrics, force=bool(want_ckpt))
        if summary is not None:
            summary["step"] = step
            if want_ckpt:
                with tempfile.TemporaryDirectory() as tmp:
                    written = write_checkpoint(Path(tmp), cfg, model, opt, sched, tokenizer, step,
                                               {k: c.position for k, c in cursors.items()}, rank)
                    ckpt = ray.train.Checkpoint.from_directory(tmp) if written else None
                    ray.train.report(summary, checkpoint=ckpt)
            else:
                ray.train.report(summary)
        if step_callback is not None:
            step_callback(step, metrics, rank)

    try:
        run_loop(cfg, model, cursors["train"], tokenizer.pad_token_id, ce_batches=cursors.get("ce"), device=device,
                 start_step=start_step, optimizer=optimizer, scheduler=scheduler, rank=rank, on_step=on_step)
    finally:
        log.close()


def fit(loop_cfg: LoopConfig, datasets: dict, *, num_workers: int = 1, use_gpu: bool = False,
        cpus_per_worker: float = 1, storage_path: str | Path, name: str, max_failures: int = 1,
        step_callback: Callable[[int, dict, int], None] | None = None) -> Path:
    """Run the loop on Ray Train and return the folder of the final checkpoint (``<folder>/model`` holds it).

    ``max_failures``: how many times Ray Train restarts the workers from the latest checkpoint after a failure.
    ``step_callback(step, metrics, rank)``: a picklable function run on every worker after each optimizer step
    (custom logging; the resume tests use it to kill a worker mid-run).
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from coderl_ray.ray_runtime import train_logging_config

    storage_path = Path(storage_path).resolve()
    storage_path.mkdir(parents=True, exist_ok=True)
    if loop_cfg.log_dir == "auto":
        loop_cfg = replace(loop_cfg, log_dir=str(storage_path / name / "tensorboard"))
    if not loop_cfg.name:
        loop_cfg = replace(loop_cfg, name=name)
    if loop_cfg.progress_bar and not sys.stderr.isatty():
        # A bar redrawn into a log file (CI, `ray job logs`) is noise; the metric lines every N steps remain.
        loop_cfg = replace(loop_cfg, progress_bar=False)
    config = asdict(loop_cfg)
    if step_callback is not None:
        config["step_callback"] = step_callback
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=train_logging_config(),
        ),
        # Same block order on every pass, so that a resumed run's data position points at the same rows.
        dataset_config=ray.train.DataConfig(execution_options=_ordered_execution()),
        datasets=datasets,
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name} finished without a checkpoint (see {storage_path / name})")
    return Path(result.checkpoint.path)


def _ordered_execution():
    import ray.data

    options = ray.data.ExecutionOptions()
    options.preserve_order = True
    return options
