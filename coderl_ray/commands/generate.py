"""``coderl-ray generate``: sample programs from an actor, optionally run them, optionally store a replay-buffer round.

    # samples only (feed them to `coderl-ray execute`)
    coderl-ray generate --config configs/tiny.yaml --actor outputs/tiny/models/actor_sft --out samples.jsonl
    # the pipeline's rollout stage: generate + execute (streaming, overlapped) + returns -> buffer/round_0003
    coderl-ray generate --config configs/tiny.yaml --actor outputs/tiny/models/actor_round_2 \\
        --buffer outputs/tiny/buffer --round 3
    # what the pipeline's evaluation samples, executed, as result records for `coderl-ray evaluate`
    coderl-ray generate --config configs/tiny.yaml --actor outputs/tiny/models/actor_sft --split test \\
        --sampling eval --execute --out results.jsonl

Problems come from ``--problems`` or from the config's data (``--split``). ``--sampling rollout`` uses
``rollout.*`` (N samples + one greedy baseline per problem), ``--sampling eval`` uses ``eval.*`` (no baseline).
Outputs are written atomically: a rerun after an interruption redoes the whole file or round, never half of one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coderl_ray.commands._stage import (
    add_config_arguments, add_problem_arguments, connect, load_stage_config, problems_for, run_stage,
)

SAMPLE_FIELDS = ("problem_id", "sample_id", "round", "policy_version", "is_greedy", "code")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--actor", required=True, help="actor folder (model + tokenizer), e.g. <output_dir>/models/"
                                                       "actor_sft")
    add_problem_arguments(parser, default_split="train")
    dest = parser.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", help="JSON Lines to write: sample records, or result records with --execute")
    dest.add_argument("--buffer", help="replay-buffer root: write round --round (samples + results + returns)")
    parser.add_argument("--round", type=int, default=None,
                        help="RL round the samples belong to (required with --buffer; default 0)")
    parser.add_argument("--sampling", choices=("rollout", "eval"), default="rollout",
                        help="rollout.* settings with a greedy baseline, or eval.* without (default: %(default)s)")
    parser.add_argument("--execute", action="store_true",
                        help="with --out: run every program in the sandbox pool as it is generated")
    parser.add_argument("--example-tests", action="store_true",
                        help="with --execute: run each problem's example tests instead of its hidden tests")


def _check(args: argparse.Namespace) -> None:
    from coderl_ray.config import ConfigError

    if args.buffer and args.round is None:
        raise ConfigError("--buffer needs --round (the buffer holds one folder per round)")
    if args.buffer and args.sampling != "rollout":
        raise ConfigError("--buffer stores rollouts: relative returns need the greedy baseline of --sampling rollout")
    if args.example_tests and not (args.execute or args.buffer):
        raise ConfigError("--example-tests only applies with --execute")
    if not Path(args.actor).is_dir():
        raise FileNotFoundError(f"--actor {args.actor}: no such folder")


def _sample_record(row: dict) -> dict:
    return {k: row[k] for k in SAMPLE_FIELDS if k in row}


def _result_record(row: dict) -> dict:
    from coderl_ray.records import ExecutionResult

    return {**ExecutionResult.from_dict(row).to_dict(),
            **{k: row[k] for k in ("round", "policy_version", "is_greedy") if k in row}}


def generate_file(cfg, args: argparse.Namespace, problems: list[dict]) -> dict:
    from collections import Counter

    from coderl_ray.data.problems import write_jsonl
    from coderl_ray.execution import execute_samples
    from coderl_ray.progress import stage_bar
    from coderl_ray.rollout.stage import generate_samples, sampling_params

    round_ = args.round or 0
    if args.sampling == "eval":
        e = cfg.eval
        params = sampling_params(cfg.rollout, cfg.model.max_source_tokens, num_samples=e.num_samples,
                                 temperature=e.temperature, top_p=e.top_p, greedy_baseline=False)
        seed = cfg.seed + 7  # the pipeline's evaluation seed, so both draw the same programs
    else:
        params, seed = sampling_params(cfg.rollout, cfg.model.max_source_tokens), cfg.seed
    samples = generate_samples(problems, args.actor, cfg.rollout, params, round_=round_,
                               policy_version=max(round_ - 1, 0), seed=seed)
    outcomes: Counter = Counter()
    total = len(problems) * (params.num_samples + params.greedy_baseline)
    with stage_bar("generate", total=total, unit="program") as bar:
        if args.execute:
            rows = execute_samples(samples, problems, cfg.sandbox, example_tests=args.example_tests).iter_rows()

            def records():
                for row in rows:
                    record = _result_record(row)
                    outcomes[record["outcome"]] += 1
                    bar.update(1)
                    yield record
        else:
            def records():
                for row in samples.iter_rows():
                    bar.update(1)
                    yield _sample_record(row)

        n = write_jsonl(records(), args.out)
    info = {"problems": len(problems), "programs": n, "out": str(args.out)}
    if args.execute:
        info["outcomes"] = dict(outcomes)
    return info


def run(args: argparse.Namespace) -> int:
    from coderl_ray import stages

    _check(args)
    cfg = load_stage_config(args)
    problems = problems_for(args, cfg)
    connect(cfg)
    if args.buffer:
        return run_stage("generate", lambda: stages.rollout_round(cfg, problems, Path(args.actor), args.round,
                                                                   Path(args.buffer)))
    return run_stage("generate", lambda: generate_file(cfg, args, problems))
