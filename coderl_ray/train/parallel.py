"""Data parallelism for the training loop: DDP by default, FSDP (torch's ``fully_shard``) for large models.

Why FSDP and not DeepSpeed ZeRO: FSDP2 ships with torch (no extra build, no CUDA extension to compile on the
cluster image), runs on CPU with gloo (so the CPU test suite exercises the same code path as the GPU cluster),
composes with ``torch.compile`` per transformer block, and its ``torch.distributed.checkpoint.state_dict`` API
gathers a full, Hugging Face-loadable state dict without a conversion step. ZeRO-3 and FSDP shard the same things
(parameters, gradients, optimizer state); DeepSpeed's extra features (ZeRO-Infinity NVMe offload, its own fused
optimizers) are not needed for models of the sizes this project trains (up to ~7B on 8 x 80 GB; docs/training.md
says what that takes, and ``coderl-ray plan`` adds it up for a config).

The wrapping rules:

* ``ddp``: every worker holds the full model; gradients are all-reduced in the last micro-batch's backward, and
  live in DDP's buckets (``gradient_as_bucket_view``), not in a second copy.
* ``fsdp``: every transformer block (the classes the model lists in ``_no_split_modules``: ``T5Block``,
  ``GPT2Block``, ``Qwen2DecoderLayer``...) is its own shard unit, then the root; parameters are gathered per block
  for forward and backward. With bf16 on GPU, parameters are gathered and computed in bf16 while gradients are
  reduced and optimizer state kept in fp32 (``MixedPrecisionPolicy``). Gradients are reduce-scattered in every
  micro-batch's backward, so they stay sharded (see :func:`no_sync`).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist

from coderl_ray.models.batching import unwrap


def hf_model_of(model):
    """The Hugging Face model inside: the model itself, or a critic's backbone."""
    core = unwrap(model)
    return getattr(core, "backbone", core)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def transformer_blocks(model) -> list[torch.nn.Module]:
    names = set(getattr(hf_model_of(model), "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def enable_activation_checkpointing(hf_model) -> None:
    """Recompute each block's activations in backward (non-reentrant, so frozen inputs and DDP work).

    transformers 5.x renamed ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable``; the old
    name warns and goes away in 6, the new one is absent from early 5.x releases.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(hf_model, "activation_checkpointing_enable"):
        hf_model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def prepare_model(model, *, parallel: str, device: torch.device, precision: str = "fp32",
                  gradient_checkpointing: bool = False, compile_model: bool = False):
    """Move ``model`` to ``device`` and wrap it for the process group (if any). Returns the module to train."""
    if gradient_checkpointing:
        enable_activation_checkpointing(hf_model_of(model))
    model.to(device)
    distributed = world_size() > 1
    if parallel == "fsdp":
        if not dist.is_initialized():
            raise RuntimeError("parallel='fsdp' needs a torch.distributed process group (Ray Train sets one up)")
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if precision == "bf16" and device.type == "cuda" else MixedPrecisionPolicy()
        blocks = transformer_blocks(model)
        if not blocks:
            raise ValueError(f"parallel='fsdp': {type(hf_model_of(model)).__name__} lists no _no_split_modules, so "
                             "there is no transformer block to shard by; use parallel='ddp'")
        # FSDP2 warns that a block returned a view (T5 blocks return their shared position bias): harmless here,
        # since no caller modifies block outputs in place, and it would print once per block per step.
        warnings.filterwarnings("ignore", message=".*returned a view tensor.*")
        for block in blocks:
            if compile_model:
                block.compile()  # per block, before sharding, as torch's FSDP2 + compile recipes do
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    if parallel != "ddp":
        raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {parallel!r}")
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        # Gradients as views into the all-reduce buckets: without it DDP keeps a second full copy (4 B/param).
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        gradient_as_bucket_view=True)
    if compile_model:
        model.compile()  # compiling the DDP module lets dynamo split graphs at gradient buckets (overlap)
    return model


def no_sync(model, enabled: bool):
    """Context in which backward does not reduce gradients (every micro-batch but the last), under DDP.

    Under FSDP it does nothing: every micro-batch's backward reduce-scatters its gradients, which then accumulate
    in the sharded ``.grad``. Skipping that reduction (FSDP2's ``set_requires_gradient_sync(False)``, FSDP1's
    ``no_sync``) keeps each worker's *unsharded* gradients, in fp32, until the last micro-batch: 4 bytes per
    parameter of the whole model on every GPU (28 GB for a 7B model, twice what its sharded weights, gradients and
    AdamW state take on each of 8 workers: 16 B x 7B / 8 = 14 GB). The price is one reduce-scatter per
    micro-batch instead of per step, overlapped with the backward of the next block.
    """
    import contextlib

    if not enabled or is_fsdp(model):
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    return contextlib.nullcontext()


def is_fsdp(model) -> bool:
    return hasattr(model, "set_requires_gradient_sync")


def max_over_workers(value: int, device: torch.device) -> int:
    """The largest ``value`` of all workers (1 collective); the value itself without a process group."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def sum_over_workers(value: float, device: torch.device) -> float:
    if world_size() == 1:
        return value
    t = torch.tensor([float(value)], device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def mean_over_workers(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average every value over workers (1 collective). Every worker must pass the same keys."""
    if world_size() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, (t / world_size()).tolist()))


def full_state_dicts(model, optimizer, rank: int) -> tuple[dict | None, dict | None]:
    """(model state dict, optimizer state dict), full and on CPU, on rank 0; (None, None) elsewhere.

    Under FSDP every rank must call this (it gathers shards); under DDP only rank 0 does any work. The optimizer
    state is keyed by parameter names, so a checkpoint written under DDP resumes under FSDP and vice versa.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    if is_fsdp(model):
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd = get_model_state_dict(model, options=options)
        optim_sd = get_optimizer_state_dict(model, optimizer, options=options)
        return (model_sd, optim_sd) if rank == 0 else (None, None)
    if rank != 0:
        return None, None
    core = unwrap(model)
    model_sd = {k: v.detach().cpu() for k, v in core.state_dict().items()}
    optim_sd = get_optimizer_state_dict(core, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                                    cpu_offload=True))
    return model_sd, optim_sd


def load_optimizer_state(model, optimizer, state: dict) -> None:
    """Restore an optimizer from :func:`full_state_dicts`'s output (names) or a plain ``state_dict()`` (indices)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    keys = list(state.get("state", {}))
    if keys and isinstance(keys[0], int):
        optimizer.load_state_dict(state)
        return
    target = model if is_fsdp(model) else unwrap(model)
    set_optimizer_state_dict(target, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))
