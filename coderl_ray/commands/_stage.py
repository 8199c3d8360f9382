"""What the stage commands (generate, train-actor, train-critic, score) share.

Each stage command runs one stage of :mod:`coderl_ray.pipeline` on its own, with the same config and the same
functions of :mod:`coderl_ray.stages`, so a stage can be submitted as its own Ray job (``jobs/<stage>.py``) and
rerun alone. Inputs and outputs are folders and files named on the command line; nothing is inferred from a
previous run except a training run's checkpoints (see :func:`training_run`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coderl_ray.commands.pipeline import add_config_arguments

__all__ = ["add_config_arguments", "add_problem_arguments", "connect", "ground_truth", "load_stage_config",
           "problems_for", "run_stage", "training_run"]


def load_stage_config(args: argparse.Namespace):
    from coderl_ray.config import load_config

    return load_config(args.config, args.overrides)


def connect(cfg) -> None:
    """The cluster of ``ray job submit`` ($RAY_ADDRESS), ``cfg.ray_address``, a local ``ray start``, or in-process."""
    import os

    from coderl_ray.ray_runtime import init_ray
    from coderl_ray.roles.setup import local_cpus

    init_ray(cfg.ray_address, cfg.sandbox.resource, logical_cpus=local_cpus(cfg, os.cpu_count() or 1))


def add_problem_arguments(parser: argparse.ArgumentParser, default_split: str) -> None:
    parser.add_argument("--problems", default=None,
                        help="canonical problems JSON Lines (default: the config's data, split --split)")
    parser.add_argument("--split", choices=("train", "test"), default=default_split,
                        help="which split of the config's data when --problems is not given (default: %(default)s)")


def problems_for(args: argparse.Namespace, cfg) -> list[dict[str, Any]]:
    from coderl_ray import stages
    from coderl_ray.data.problems import read_problems

    if args.problems:
        return read_problems(args.problems)
    train, test = stages.load_problems(cfg.data)
    return train if args.split == "train" else test


def ground_truth(args: argparse.Namespace, cfg, tokenizer_dir: Path, work: Path) -> Path:
    """``--ground-truth`` if given (the pipeline writes it to ``<output_dir>/data/ground_truth``), else the
    reference programs of the training problems, tokenised with ``tokenizer_dir``'s tokenizer into ``work``."""
    from coderl_ray import stages

    if args.ground_truth:
        path = Path(args.ground_truth)
        if not path.is_dir():
            raise FileNotFoundError(f"--ground-truth {path}: no such folder (the pipeline's "
                                    "<output_dir>/data/ground_truth, or omit it to build one from --problems)")
        return path
    dest = work / "ground_truth"
    if not dest.is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        stages.ground_truth_dataset(problems_for(args, cfg), tokenizer_dir, cfg, tmp)
        tmp.rename(dest)
    return dest


def training_run(storage: Path, name: str, fresh: bool) -> None:
    """Say whether a training run will resume, or clear it with ``fresh``.

    Ray Train keeps a snapshot of the checkpoints a run registered in ``<storage>/<name>``; a new run with the same
    storage and name starts from the latest of them, so rerunning an interrupted training command resumes it.
    """
    run = storage / name
    if fresh:
        shutil.rmtree(run, ignore_errors=True)
        return
    snapshot = run / "checkpoint_manager_snapshot.json"
    if not snapshot.is_file():
        return
    try:
        latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]
        where = f"step {latest['metrics']['step']} ({latest['checkpoint_dir_name']})"
    except (ValueError, KeyError, TypeError):
        # Ray's snapshot format is its own; not knowing the step does not stop the resume.
        where = "its latest checkpoint"
    print(f"resuming training run {run} from {where}; pass --fresh to start over", flush=True)


def run_stage(name: str, fn: Callable[[], dict | None]) -> int:
    """Run a stage and print one JSON line ``{"stage": ..., "wall_s": ..., **info}``; a failure is one clear line
    (the root cause, not Ray's wrappers) plus the traceback, and exit status 1. Bad input (config, paths, records)
    is left to the ``coderl-ray`` entry point, which reports it in one line."""
    from coderl_ray.config import ConfigError
    from coderl_ray.data.problems import ProblemError
    from coderl_ray.pipeline import root_cause

    start = time.perf_counter()
    try:
        info = fn() or {}
    except (ConfigError, ProblemError, FileNotFoundError):
        raise
    except Exception as exc:
        traceback.print_exc()
        print(f"coderl-ray {name}: failed: {root_cause(exc)}", file=sys.stderr)
        return 1
    print(json.dumps({"stage": name, "wall_s": round(time.perf_counter() - start, 2), **info}, default=str),
          flush=True)
    return 0
