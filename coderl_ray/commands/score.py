"""``coderl-ray score``: token-level critic scores for a replay-buffer round (the input of an RL round).

    coderl-ray score --config configs/tiny.yaml --samples outputs/tiny/buffer/round_0001 \\
        --critic outputs/tiny/models/critic_round_1 --out outputs/tiny/scored/round_1
    # also the critic's accuracy on programs of other problems (e.g. the last evaluation's results)
    coderl-ray score ... --heldout outputs/tiny/eval/sft/results

Writes ``--out`` atomically (Parquet: the samples plus ``critic_logits``, ``critic_pred``, ``critic_pass_prob``)
and prints the critic's accuracy against the real outcomes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coderl_ray.commands._stage import add_config_arguments, connect, load_stage_config, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--samples", required=True,
                        help="Parquet folder of executed samples with token ids (a replay-buffer round)")
    parser.add_argument("--critic", required=True, help="critic folder (`coderl-ray train-critic --out`)")
    parser.add_argument("--out", required=True, help="Parquet folder to write the scored samples to")
    parser.add_argument("--heldout", default=None,
                        help="Parquet folder of executed programs of other problems, for a held-out accuracy")


def run(args: argparse.Namespace) -> int:
    from coderl_ray import stages

    for flag, path in (("--samples", args.samples), ("--critic", args.critic), ("--heldout", args.heldout)):
        if path and not Path(path).is_dir():
            raise FileNotFoundError(f"{flag} {path}: no such folder")
    cfg = load_stage_config(args)
    connect(cfg)
    heldout = Path(args.heldout) if args.heldout else None
    return run_stage("score", lambda: {**stages.score_round(cfg, Path(args.samples), Path(args.critic),
                                                            Path(args.out), heldout), "out": args.out})
