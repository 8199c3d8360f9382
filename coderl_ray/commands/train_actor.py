"""``coderl-ray train-actor``: SFT warm-up or one RL round of the actor on Ray Train.

    # SFT from the config's model (a tiny random one, or a pretrained folder): writes <out> and <out>.init
    coderl-ray train-actor --config configs/tiny.yaml --mode sft --out outputs/tiny/models/actor_sft
    # SFT from a given actor, with the pipeline's ground truth
    coderl-ray train-actor --config configs/tiny.yaml --mode sft --actor outputs/tiny/models/actor_init \\
        --ground-truth outputs/tiny/data/ground_truth --out outputs/tiny/models/actor_sft
    # one RL round on samples scored by `coderl-ray score`
    coderl-ray train-actor --config configs/tiny.yaml --mode rl --actor outputs/tiny/models/actor_sft \\
        --scored outputs/tiny/scored/round_1 --ground-truth outputs/tiny/data/ground_truth \\
        --out outputs/tiny/models/actor_round_1

Checkpoints go to ``--storage`` (default ``<output_dir>/ray_train/<out folder name>``) every
``train.checkpoint_every`` steps. Rerunning an interrupted command resumes from the last checkpoint (``--fresh``
starts over); a killed worker is restarted from it during the run (``train.max_failures`` times).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coderl_ray.commands._stage import (
    add_config_arguments, add_problem_arguments, connect, ground_truth, load_stage_config, problems_for, run_stage,
    training_run,
)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to write the trained model (and tokenizer) to")
    parser.add_argument("--ground-truth", default=None,
                        help="tokenised reference programs (Parquet folder; the pipeline's <output_dir>/data/"
                             "ground_truth); default: built from the training problems")
    add_problem_arguments(parser, default_split="train")
    parser.add_argument("--storage", default=None,
                        help="Ray Train storage for checkpoints (default: <output_dir>/ray_train/<out folder name>); "
                             "on a multi-node cluster it must be shared by every node")
    parser.add_argument("--fresh", action="store_true", help="discard this run's checkpoints instead of resuming")


def storage_for(args: argparse.Namespace, cfg) -> Path:
    return Path(args.storage) if args.storage else Path(cfg.output_dir) / "ray_train" / Path(args.out).name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--mode", choices=("sft", "rl"), required=True,
                        help="sft: cross-entropy on reference programs; rl: CodeRL's actor-critic round")
    parser.add_argument("--actor", default=None,
                        help="actor folder to start from (required for rl; sft default: the config's model)")
    parser.add_argument("--scored", default=None, help="rl: samples scored by the critic (`coderl-ray score --out`)")
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from coderl_ray import stages
    from coderl_ray.config import ConfigError

    if args.mode == "rl" and not (args.actor and args.scored):
        raise ConfigError("--mode rl needs --actor (the policy to improve) and --scored (its scored samples)")
    if args.mode == "sft" and args.scored:
        raise ConfigError("--scored is for --mode rl; SFT trains on the ground truth only")
    for flag, path in (("--actor", args.actor), ("--scored", args.scored)):
        if path and not Path(path).is_dir():
            raise FileNotFoundError(f"{flag} {path}: no such folder")
    cfg = load_stage_config(args)
    out = Path(args.out)
    storage = storage_for(args, cfg)
    connect(cfg)

    def sft() -> dict:
        actor = Path(args.actor) if args.actor else _initial_actor(args, cfg, out)
        gt = ground_truth(args, cfg, actor, storage)
        training_run(storage, "sft", args.fresh)
        return {**stages.train_sft(cfg, gt, actor, out, storage), "out": str(out), "from": str(actor)}

    def rl() -> dict:
        gt = ground_truth(args, cfg, Path(args.actor), storage)
        training_run(storage, "rl", args.fresh)
        return {**stages.train_rl(cfg, Path(args.scored), gt, Path(args.actor), out, storage, "rl"),
                "out": str(out), "from": args.actor}

    return run_stage("train-actor", sft if args.mode == "sft" else rl)


def _initial_actor(args: argparse.Namespace, cfg, out: Path) -> Path:
    """The config's model saved as ``<out>.init``: what the pipeline's ``init`` stage makes (``actor_init``).
    Built once; a rerun reuses it, so a resumed SFT run continues from checkpoints of the same initial model."""
    import shutil

    from coderl_ray import stages

    dest = out.with_name(out.name + ".init")
    if not (dest / "config.json").is_file():
        work = out.with_name(out.name + ".init.tmp")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
        stages.prepare_actor(cfg, problems_for(args, cfg), work).rename(dest)
        shutil.rmtree(work)  # what remains is the tokenizer's build folder; the actor folder has its own copy
    return dest
