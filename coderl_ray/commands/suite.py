"""``coderl-ray suite --out DIR [--seed N] [--train N] [--test N] [--unseen-wording SHARE]``: the embedded suite as
canonical JSON Lines."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=400, help="number of training problems")
    parser.add_argument("--test", type=int, default=90, help="number of test problems")
    parser.add_argument("--unseen-wording", type=float, default=0.0,
                        help="share of the problems in the unseen-wording family (docs/suite.md)")


def run(args: argparse.Namespace) -> int:
    from coderl_ray.data.problems import write_jsonl
    from coderl_ray.data.suite import generate_suite

    train, test = generate_suite(args.seed, args.train, args.test, args.unseen_wording)
    for name, problems in (("train", train), ("test", test)):
        n = write_jsonl(problems, args.out / f"{name}.jsonl")
        print(f"wrote {n} {name} problems to {args.out / f'{name}.jsonl'}")
    return 0
