"""``coderl-ray train-repair``: train critic sampling's repair model on replay-buffer pairs with Ray Train.

    # the pipeline's repair stage: from the last actor, on every round's buffer
    coderl-ray train-repair --config configs/tiny.yaml --buffer outputs/tiny/buffer \\
        --actor outputs/tiny/models/actor_round_2 --problems outputs/tiny/data/train.jsonl \\
        --out outputs/tiny/models/repair
    # only rounds 1-2, more pairs per problem
    coderl-ray train-repair ... --rounds 1,2 repair.max_pairs_per_problem=8 repair.epochs=4

A pair is a failed program of a training problem with its error (input) and a passing program of the same problem
(target): docs/repair.md. ``--problems`` gives the problems' statements and reference solutions (default: the
config's training data). Checkpoints and resuming work as for ``coderl-ray train-actor``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coderl_ray.commands._stage import (
    add_config_arguments, add_problem_arguments, connect, load_stage_config, problems_for, run_stage, training_run,
)
from coderl_ray.commands.train_critic import _rounds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--buffer", required=True, help="replay-buffer root (holds round_0001/, round_0002/, ...)")
    parser.add_argument("--rounds", type=_rounds, default=None,
                        help="rounds to build pairs from, e.g. 1 or 1,2,3 (default: every round in --buffer)")
    parser.add_argument("--actor", required=True,
                        help="model to start from (the pipeline starts from its last actor), with its tokenizer")
    parser.add_argument("--out", required=True, help="folder to write the repair model (and tokenizer) to")
    add_problem_arguments(parser, default_split="train")
    parser.add_argument("--storage", default=None,
                        help="Ray Train storage for checkpoints (default: <output_dir>/ray_train/<out folder name>)")
    parser.add_argument("--fresh", action="store_true", help="discard this run's checkpoints instead of resuming")


def buffer_rounds(buffer: Path, wanted: list[int] | None) -> list[int]:
    """The rounds to read: ``wanted``, each of which must exist, or every round folder in ``buffer``."""
    from coderl_ray.rl.replay_buffer import round_dir

    if not buffer.is_dir():
        raise FileNotFoundError(f"--buffer {buffer}: no such folder (the pipeline's <output_dir>/buffer)")
    present = sorted(int(p.name.split("_")[1]) for p in buffer.glob("round_[0-9]*") if p.is_dir()
                     and p.name.split("_")[1].isdigit())
    if not present:
        raise FileNotFoundError(f"--buffer {buffer}: holds no round folder (round_0001/, ...)")
    missing = [r for r in wanted or [] if not round_dir(buffer, r).is_dir()]
    if missing:
        raise FileNotFoundError(f"--rounds: {round_dir(buffer, missing[0])} does not exist (rounds in --buffer: "
                                f"{', '.join(map(str, present))})")
    return wanted or present


def run(args: argparse.Namespace) -> int:
    from coderl_ray import stages
    from coderl_ray.config import ConfigError
    from coderl_ray.inference.repair_data import NoRepairPairsError

    actor, buffer = Path(args.actor), Path(args.buffer)
    if not (actor / "config.json").is_file():
        raise FileNotFoundError(f"--actor {actor}: not a model folder (no config.json)")
    rounds = buffer_rounds(buffer, args.rounds)
    cfg = load_stage_config(args)
    out = Path(args.out)
    storage = Path(args.storage) if args.storage else Path(cfg.output_dir) / "ray_train" / out.name
    problems = problems_for(args, cfg)
    connect(cfg)

    def train() -> dict:
        training_run(storage, "repair", args.fresh)
        try:
            info = stages.train_repair(cfg, problems, buffer, rounds, actor, out, storage)
        except NoRepairPairsError as exc:
            source = f"--problems {args.problems}" if args.problems else f"the config's {args.split} split"
            raise ConfigError(f"--buffer {buffer} --rounds {','.join(map(str, rounds))} with {source}: {exc}") \
                from None
        return {**info, "rounds": rounds, "out": str(out), "from": str(actor)}

    return run_stage("train-repair", train)
