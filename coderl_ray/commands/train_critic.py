"""``coderl-ray train-critic``: train the critic on replay-buffer rounds (plus the ground truth) with Ray Train.

    # a new critic on the SFT actor's backbone, from round 1 (the pipeline's first critic)
    coderl-ray train-critic --config configs/tiny.yaml --buffer outputs/tiny/buffer --rounds 1 \\
        --from-actor outputs/tiny/models/actor_sft --ground-truth outputs/tiny/data/ground_truth \\
        --out outputs/tiny/models/critic_round_1
    # continue that critic on rounds 1-2
    coderl-ray train-critic --config configs/tiny.yaml --buffer outputs/tiny/buffer --rounds 1,2 \\
        --from-critic outputs/tiny/models/critic_round_1 --ground-truth outputs/tiny/data/ground_truth \\
        --out outputs/tiny/models/critic_round_2
    # the binary critic critic sampling reads (the pipeline's critic_binary stage, critic.inference_classes=2):
    # the last critic's backbone with a new 2-class head, on every round; --heldout adds a held-out accuracy
    coderl-ray train-critic --config configs/tiny.yaml --binary --buffer outputs/tiny/buffer --rounds 1,2 \\
        --from-critic outputs/tiny/models/critic_round_2 --ground-truth outputs/tiny/data/ground_truth \\
        --heldout outputs/tiny/eval/round_2/results --out outputs/tiny/models/critic_binary

Reference programs join the data as "passed" when ``critic.include_ground_truth`` is set (the paper's recipe).
With ``critic.mutants_per_program`` > 0 the command first writes the mutants of the training problems' reference
programs (the pipeline's critic_mutants stage, run by the sandbox) next to the ground truth, unless they are there:

    coderl-ray train-critic --config configs/tiny.yaml --buffer outputs/tiny/buffer --rounds 1 \\
        --from-actor outputs/tiny/models/actor_sft --ground-truth outputs/tiny/data/ground_truth \\
        --problems outputs/tiny/data/train.jsonl --out outputs/tiny/models/critic_round_1 \\
        critic.mutants_per_program=4 critic.rank_weight=1

Checkpoints and resuming work as for ``coderl-ray train-actor``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coderl_ray.commands._stage import (
    add_config_arguments, connect, ground_truth, load_stage_config, problems_for, run_stage, training_run,
)
from coderl_ray.commands.train_actor import add_training_arguments, storage_for


def _rounds(text: str) -> list[int]:
    try:
        rounds = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated round numbers, got {text!r}") from None
    if not rounds or rounds[0] < 1:
        raise argparse.ArgumentTypeError(f"round numbers start at 1, got {text!r}")
    return rounds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--buffer", required=True, help="replay-buffer root (holds round_0001/, round_0002/, ...)")
    parser.add_argument("--rounds", type=_rounds, required=True, help="rounds to train on, e.g. 1 or 1,2,3")
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-actor", help="a new critic: this actor's backbone plus a fresh error head")
    start.add_argument("--from-critic", help="continue training this critic")
    parser.add_argument("--binary", action="store_true",
                        help="train critic sampling's binary critic (not passed / passed) from --from-critic's "
                             "backbone with a new 2-class head: the pipeline's critic_binary stage")
    parser.add_argument("--heldout", default=None,
                        help="with --binary: executed programs of other problems (e.g. <output_dir>/eval/round_2/"
                             "results) for a held-out accuracy")
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from coderl_ray import stages

    from coderl_ray.config import ConfigError

    if args.binary and not args.from_critic:
        raise ConfigError("--binary starts from the last critic's backbone: give --from-critic")
    if args.heldout and not args.binary:
        raise ConfigError("--heldout applies with --binary")
    init = Path(args.from_actor or args.from_critic)
    if not init.is_dir():
        raise FileNotFoundError(f"{'--from-actor' if args.from_actor else '--from-critic'} {init}: no such folder")
    if args.heldout and not Path(args.heldout).is_dir():
        raise FileNotFoundError(f"--heldout {args.heldout}: no such folder")
    cfg = load_stage_config(args)
    out, storage = Path(args.out), storage_for(args, cfg)
    connect(cfg)

    def train() -> dict:
        gt = ground_truth(args, cfg, init, storage)
        m = cfg.critic.mutants_per_program
        if m > 0 and not stages.critic_mutants_dir(gt, m).is_dir():
            print(f"critic_mutants: {stages.critic_mutants(cfg, problems_for(args, cfg), gt, init)}", flush=True)
        if args.binary:
            training_run(storage, "critic_binary", args.fresh)
            info = stages.train_critic_binary(cfg, Path(args.buffer), args.rounds, gt, init, out, storage,
                                              Path(args.heldout) if args.heldout else None)
            return {**info, "rounds": args.rounds, "out": str(out), "from": str(init), "classes": 2}
        training_run(storage, "critic", args.fresh)
        info = stages.train_critic(cfg, Path(args.buffer), args.rounds, gt, init, bool(args.from_actor), out,
                                   storage, "critic")
        return {**info, "rounds": args.rounds, "out": str(out), "from": str(init)}

    return run_stage("train-critic", train)
