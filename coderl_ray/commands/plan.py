"""``coderl-ray plan --config C [key=value ...]``: what each stage will request and whether it fits in GPU memory.

    coderl-ray plan --config configs/codet5-large.yaml
    coderl-ray plan --config configs/codet5-large.yaml plan.gpu_memory_gb=40 rollout.max_rows_per_generate=128

Prints, per stage of the pipeline (coderl_ray/registry.py), the Ray resources it requests and its estimated peak
memory item by item; exits 1, naming the keys to change, when a stage does not fit in ``plan.gpu_memory_gb`` (see
coderl_ray/plan.py for what is counted), when a GPU config would run a model stage on CPU, or when pools that run
at once need more than ``plan.cluster_gpus`` GPUs.
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
