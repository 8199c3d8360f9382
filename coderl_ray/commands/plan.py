"""``coderl-ray plan --config C [key=value ...]``: what the run's roles request all run long, whether they get their
GPUs and fit in GPU memory together, and each stage's memory.

    coderl-ray plan --config configs/codet5-large.yaml
    coderl-ray plan --config configs/codet5-large.yaml plan.gpu_memory_gb=40 rollout.max_rows_per_generate=128
    coderl-ray plan --config configs/small-gpu.yaml rl.loop=online

Prints the roles (coderl_ray/registry.py: generators, sandbox executors, the actor and the critic trainer, critic
scorers), in the order the run starts them, each with what it asks Ray for and the memory each worker holds (its
largest stage's peak); with ``plan.cluster_gpus``, every GPU as Ray would fill it and the memory its roles hold
together; with ``plan.cluster_cpus``, the CPUs the roles reserve; then, per stage, its estimated peak memory item by
item. Exits 1, naming the keys to change, when a stage does not fit, when a GPU config would run a model on CPU,
when a role would find no GPU share left (it would wait forever), or when the roles on a GPU do not fit in
``plan.gpu_memory_gb`` together (see coderl_ray/plan.py for what is counted).
Reads configs and model configs only: no Ray, no GPU, nothing downloaded.
"""

from __future__ import annotations

import argparse
import sys

from coderl_ray.commands.pipeline import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from coderl_ray.config import load_config
    from coderl_ray.plan import format_plan, make_plan, plan_problems

    cfg = load_config(args.config, args.overrides)
    plan = make_plan(cfg)
    print(format_plan(cfg, plan), flush=True)
    for st in plan.failing:
        print(f"coderl-ray plan: {st.stage} does not fit ({st.peak / 2**30:.1f} GiB estimated, "
              f"{st.budget / 2**30:.1f} GiB available); change: {'; '.join(st.fixes)}", file=sys.stderr)
    for error in plan.errors:
        print(f"coderl-ray plan: {error}", file=sys.stderr)
    return 1 if plan_problems(cfg, plan) else 0
