"""The ``coderl-ray`` console script: one subcommand per stage, each defined in ``coderl_ray/commands/``.

Subcommands are imported only when used, so ``coderl-ray --help`` is fast and a broken optional stage cannot stop
the others from running.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module in coderl_ray.commands, one-line help)
COMMANDS = {
    "pipeline": ("pipeline", "run SFT -> RL rounds (rollout, execute, critic, score, RL) -> evaluation, resumable"),
    "suite": ("suite", "write the embedded task suite as canonical problem JSON Lines"),
    "prepare": ("prepare", "the pipeline's data and init stages: problems, initial actor, tokenised references"),
    "execute": ("execute", "run sample programs against problems' unit tests in the sandbox"),
    "convert": ("convert", "convert APPS / MBPP / HumanEval / JSON Lines into canonical problem records"),
    "evaluate": ("evaluate", "pass@k and APPS metrics from execution results, with a report"),
    "generate": ("generate", "sample programs from an actor checkpoint"),
    "train-actor": ("train_actor", "SFT or RL fine-tuning of the actor with Ray Train"),
    "train-critic": ("train_critic", "train the critic (or, --binary, critic sampling's binary critic) on a replay "
                                     "buffer with Ray Train"),
    "score": ("score", "score samples with the critic (token-level logits)"),
    "plan": ("plan", "per stage: the resources it requests and whether it fits in GPU memory (no GPU needed)"),
    "critic-sample": ("critic_sample", "critic sampling at inference: refine / repair within a budget, n@k"),
    "train-repair": ("train_repair", "train critic sampling's repair model on replay-buffer pairs with Ray Train"),
}


def _user_errors() -> tuple[type[BaseException], ...]:
    from coderl_ray.config import ConfigError
    from coderl_ray.data.problems import ProblemError

    return (ConfigError, ProblemError, FileNotFoundError)


def _load(module: str):
    return importlib.import_module(f"coderl_ray.commands.{module}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="coderl-ray",
        description="CodeRL on Ray: one subcommand per stage (`coderl-ray COMMAND --help` for its options).",
        epilog="Quick start: `make demo` runs `coderl-ray pipeline --config configs/tiny.yaml`; docs/ has the rest.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.print_help() if not argv or argv[0] in ("-h", "--help") else parser.parse_args(argv[:1])
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name = argv[0]
    USER_ERRORS = _user_errors()
    module = _load(COMMANDS[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"coderl-ray {name}", description=COMMANDS[name][1])
    module.add_arguments(cmd_parser)
    cmd_parser.add_argument("--verbose", action="store_true",
                            help="also show Ray's own output: Ray Data's execution plans and progress bars, Ray "
                                 "Train's start-up messages (same as CODERL_VERBOSE=1)")
    args = cmd_parser.parse_args(argv[1:])
    if args.verbose:
        from coderl_ray.ray_runtime import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"
    try:
        return int(module.run(args) or 0)
    except USER_ERRORS as exc:
        # Problems with the user's input get one clear line, not a traceback.
        print(f"coderl-ray {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
