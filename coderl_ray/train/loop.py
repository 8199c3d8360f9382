"""One training loop for the actor (SFT, RL) and the critic, run by every Ray Train worker.

The loop is plain PyTorch over an iterator of row batches; :func:`train_loop_per_worker` plugs it into Ray Train
(dataset shards, DDP, checkpoints, reports). The same loop runs without Ray in tests through :func:`run_loop`.

Step budget, not epochs: every worker runs exactly ``steps`` optimizer steps over an endlessly cycled (and
reshuffled) shard, so DDP workers never disagree on the number of collective calls whatever their shard sizes.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

MODEL_SUBDIR = "model"
STATE_FILE = "trainer_state.pt"


@dataclass
class LoopConfig:
    """What one training run does. ``batch_size`` is global; each worker takes ``batch_size // world_size``."""

    objective: str  # "sft" | "rl" | "critic"
    init_path: str  # actor folder (sft, rl), or critic folder / backbone folder (critic)
    steps: int
    batch_size: int
    lr: float
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    n_classes: int = 4
    head_hidden: int = 128
    use_critic: bool = True
    alternate_ce: bool = True
    precision: str = "fp32"
    seed: int = 0
    report_every: int = 10
    checkpoint_every: int = 0  # 0 = only at the end
    new_critic: bool = False  # critic: build a fresh head on the backbone at init_path

    def __post_init__(self) -> None:
        if self.objective not in ("sft", "rl", "critic"):
            raise ValueError(f"objective must be sft, rl or critic, got {self.objective!r}")


def _cycle_batches(make_iter: Callable[[int], Iterator[list[dict]]]) -> Iterator[list[dict]]:
    epoch = 0
    while True:
        empty = True
        for rows in make_iter(epoch):
            if rows:
                empty = False
                yield rows
        if empty:
            raise RuntimeError("the training data shard is empty")
        epoch += 1


def _lr_lambda(cfg: LoopConfig) -> Callable[[int], float]:
    warmup = max(1, int(cfg.warmup_ratio * cfg.steps))

    def f(step: int) -> float:
        # Linear warm-up then cosine decay to 10%: the tiny runs are short, so the tail matters.
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, cfg.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def make_optimizer(cfg: LoopConfig, model, state: dict | None = None, fused: bool = False):
    """AdamW + warm-up/cosine schedule, restored from a checkpoint's ``state`` when given.

    Order matters: the scheduler's constructor rewrites each group's lr, so the optimizer state (which carries the
    lr of the step it was saved at) is loaded after it.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    return optimizer, scheduler


def build_model(cfg: LoopConfig):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if cfg.objective == "critic":
        from coderl_ray.models.critic import build_critic, load_critic

        if cfg.new_critic:
            return build_critic(cfg.init_path, cfg.n_classes, cfg.head_hidden, seed=cfg.seed)
        return load_critic(cfg.init_path)
    from coderl_ray.models.actor import load_actor

    return load_actor(cfg.init_path)


def run_loop(cfg: LoopConfig, model, batches: Iterator[list[dict]], pad_id: int, *,
             ce_batches: Iterator[list[dict]] | None = None, device: torch.device | str = "cpu",
             start_step: int = 0, optimizer=None, scheduler=None,
             on_step: Callable[[int, dict, Any, Any], None] | None = None) -> list[dict]:
    """The loop itself: ``cfg.steps - start_step`` optimizer steps; returns one metrics dict per step.

    RL alternates as in the paper: even steps are cross-entropy on ground truth (from ``ce_batches``), odd steps
    the RL objective on sampled programs (from ``batches``).
    """
    from coderl_ray.train.objectives import critic_objective, rl_objective, sft_loss

    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer, scheduler = make_optimizer(cfg, model, fused=str(device).startswith("cuda"))
    autocast = cfg.precision == "bf16" and str(device).startswith("cuda")
    history = []
    model.train()
    for step in range(start_step, cfg.steps):
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            if cfg.objective == "sft":
                loss, metrics = sft_loss(model, next(batches), pad_id, device)
            elif cfg.objective == "critic":
                loss, metrics = critic_objective(model, next(batches), pad_id, device)
            elif cfg.alternate_ce and ce_batches is not None and step % 2 == 0:
                loss, metrics = sft_loss(model, next(ce_batches), pad_id, device)
            else:
                loss, metrics = rl_objective(model, next(batches), pad_id, cfg.n_classes, cfg.use_critic, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else torch.tensor(0.)
        optimizer.step()
        scheduler.step()
        metrics.update(step=step + 1, loss=loss.item(), lr=scheduler.get_last_lr()[0],
                       grad_norm=float(grad_norm), step_s=time.perf_counter() - t0)
        history.append(metrics)
        if on_step is not None:
            on_step(step + 1, metrics, optimizer, scheduler)
    return history


def save_model(model, folder: str | Path, tokenizer=None) -> None:
    core = getattr(model, "module", model)
    core.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


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


def _shard_batches(name: str, per_worker: int, seed: int) -> Iterator[list[dict]]:
    import ray.train

    shard = ray.train.get_dataset_shard(name)

    def epoch_iter(epoch: int) -> Iterator[list[dict]]:
        for table in shard.iter_batches(batch_size=per_worker, batch_format="pyarrow", drop_last=False,
                                        local_shuffle_buffer_size=max(4 * per_worker, 256),
                                        local_shuffle_seed=seed + epoch):
            yield table.to_pylist()

    return _cycle_batches(epoch_iter)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config`` is ``asdict(LoopConfig)`` (plain values pickle across nodes)."""
    import ray.train
    import ray.train.torch

    from coderl_ray.models.tokenizer import load_tokenizer

    cfg = LoopConfig(**config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed + rank)
    device = ray.train.torch.get_device()
    per_worker = max(1, cfg.batch_size // world)

    start_step, state = 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        # Resuming after a worker failure (or a rerun): the model, optimizer, scheduler and step come back.
        with checkpoint.as_directory() as d:
            cfg_init = LoopConfig(**{**config, "init_path": str(Path(d) / MODEL_SUBDIR), "new_critic": False})
            model = build_model(cfg_init)
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
            start_step = int(state["step"])
            tokenizer = load_tokenizer(Path(d) / MODEL_SUBDIR)
    else:
        model = build_model(cfg)
        tokenizer = load_tokenizer(cfg.init_path)

    model = ray.train.torch.prepare_model(model)
    optimizer, scheduler = make_optimizer(cfg, model, state, fused=device.type == "cuda")

    batches = _shard_batches("train", per_worker, cfg.seed + 1000 * rank)
    ce_batches = _shard_batches("ce", per_worker, cfg.seed + 1000 * rank + 7) if cfg.objective == "rl" and \
        cfg.alternate_ce else None

    window: list[dict] = []
    t_window = time.perf_counter()

    def on_step(step: int, metrics: dict, opt, sched) -> None:
        nonlocal t_window
        window.append(metrics)
        last = step == cfg.steps
        want_ckpt = last or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
        if not (last or step % cfg.report_every == 0 or want_ckpt):
            return
        elapsed = time.perf_counter() - t_window
        summary = _summarize(window, elapsed, world)
        summary["step"] = step
        window.clear()
        t_window = time.perf_counter()
        if rank == 0:
            print(f"[{cfg.objective}] step {step}/{cfg.steps} " +
                  " ".join(f"{k}={v:.4g}" for k, v in summary.items() if k != "step"), flush=True)
        if want_ckpt:
            with tempfile.TemporaryDirectory() as tmp:
                ckpt = None
                if rank == 0:
                    save_model(model, Path(tmp) / MODEL_SUBDIR, tokenizer)
                    torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                "config": asdict(cfg)}, Path(tmp) / STATE_FILE)
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(summary, checkpoint=ckpt)
        else:
            ray.train.report(summary)

    run_loop(cfg, model, batches, tokenizer.pad_token_id, ce_batches=ce_batches, device=device,
             start_step=start_step, optimizer=optimizer, scheduler=scheduler, on_step=on_step)


def _summarize(window: list[dict], elapsed: float, world: int) -> dict[str, float]:
    out: dict[str, float] = {}
    keys = {k for m in window for k in m if k not in ("step", "tokens")}
    for k in sorted(keys):
        vals = [m[k] for m in window if k in m]
        out[k] = sum(vals) / len(vals)
    tokens = sum(m.get("tokens", 0) for m in window) * world  # every worker sees a batch of similar size
    out["tokens_per_s"] = tokens / max(elapsed, 1e-9)
    return out


def fit(loop_cfg: LoopConfig, datasets: dict, *, num_workers: int = 1, use_gpu: bool = False,
        cpus_per_worker: int = 1, storage_path: str | Path, name: str, max_failures: int = 1) -> Path:
    """Run the loop on Ray Train and return the folder of the final checkpoint (``<folder>/model`` holds it)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    storage_path = Path(storage_path).resolve()
    storage_path.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=asdict(loop_cfg),
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name} finished without a checkpoint (see {storage_path / name})")
    return Path(result.checkpoint.path)

