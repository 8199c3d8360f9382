"""Where and in what precision a model runs: one rule for every inference actor (generator, critic scorer, old
log-probabilities, critic sampling).

The device comes from what Ray *assigned*, not from what the node has. A Ray actor started with ``num_gpus=0`` on
a GPU node still sees every GPU (Ray sets ``CUDA_VISIBLE_DEVICES`` only for workers it gives GPUs to), so
"``cuda`` when available" would pile such actors onto GPU 0, outside Ray's accounting, next to the trainer that
Ray did give that GPU to. Outside a Ray worker (a script, a test, the driver) nobody assigns anything and the first
GPU is used when there is one.

Precision: inference weights are bf16 on GPU and fp32 on CPU (CPUs have no fast bf16 matmul, and the tests compare
against fp32 references); training keeps fp32 master weights and autocasts (:func:`autocast`), and anything that
must reproduce the training step's numbers (the trust region's old log-probabilities) uses the same autocast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch


def choose_device(assigned_gpu_ids: Sequence | None, cuda_available: bool,
                  cuda_visible_devices: str | None = None) -> torch.device:
    """The device of an inference worker; a pure function of what it was given.

    ``assigned_gpu_ids``: ``ray.get_gpu_ids()`` inside a Ray worker (``[]`` when it was given no GPU), or None
    outside Ray. ``cuda_visible_devices``: the worker's ``CUDA_VISIBLE_DEVICES`` (None when unset).

    >>> choose_device([], cuda_available=True)  # a Ray worker without a GPU on a GPU node
    device(type='cpu')
    >>> choose_device(None, cuda_available=True)  # not in a Ray worker
    device(type='cuda', index=0)
    >>> choose_device(["3"], cuda_available=True, cuda_visible_devices="3")  # Ray narrowed the visible devices
    device(type='cuda', index=0)
    """
    if assigned_gpu_ids is None:
        return torch.device("cuda", 0) if cuda_available else torch.device("cpu")
    if not assigned_gpu_ids:
        return torch.device("cpu")
    if not cuda_available:
        raise RuntimeError(f"Ray assigned GPU(s) {list(assigned_gpu_ids)} to this worker but torch sees no CUDA "
                           f"device (torch {torch.__version__}, CUDA_VISIBLE_DEVICES={cuda_visible_devices!r}); "
                           "install a CUDA build of torch on the GPU nodes, or request no GPU (num_gpus=0)")
    if cuda_visible_devices is None:
        # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: every GPU is visible, the assigned id is a physical index.
        return torch.device("cuda", int(assigned_gpu_ids[0]))
    # Ray set CUDA_VISIBLE_DEVICES to the assigned GPUs: the first of them is cuda:0 in this process.
    return torch.device("cuda", 0)


def ray_assigned_gpu_ids() -> list | None:
    """``ray.get_gpu_ids()`` when this process is a Ray worker (task or actor), else None."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return None
    return list(ray.get_gpu_ids())


def inference_device() -> torch.device:
    """The device this process should run a model on: what Ray assigned it, or the first GPU outside Ray."""
    return choose_device(ray_assigned_gpu_ids(), torch.cuda.is_available(), os.environ.get("CUDA_VISIBLE_DEVICES"))


def inference_dtype(device: torch.device | str) -> torch.dtype:
    """Weights' dtype for sampling: bf16 on a GPU that has bf16 arithmetic, fp32 elsewhere."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device | str, precision: str):
    """The training step's autocast (``train.precision``): bf16 on GPU, fp32 (no autocast) on CPU. Everything that
    must compute what the training step computes runs under this context."""
    device = torch.device(device)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
