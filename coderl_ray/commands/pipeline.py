"""``coderl-ray pipeline --config configs/tiny.yaml [key=value ...] [--fresh]``"""

from __future__ import annotations

import argparse
import sys


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = "configs/tiny.yaml") -> None:
    parser.add_argument("--config", default=default, help="YAML config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. rl.rounds=3 rollout.temperature=0.8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--fresh", action="store_true", help="delete output_dir first instead of resuming")


def run(args: argparse.Namespace) -> int:
    from coderl_ray.config import load_config
    from coderl_ray.pipeline import StageError, format_error, run_pipeline

    cfg = load_config(args.config, args.overrides)
    try:
        run_pipeline(cfg, fresh=args.fresh)
    except StageError as exc:
        print(format_error(exc), file=sys.stderr)
        return 1
    return 0
