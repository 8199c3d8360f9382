"""``coderl-ray critic-sample``: critic sampling (CodeRL Sec. 3.3) on a problems file, judged on the hidden tests.

    coderl-ray critic-sample --problems mbpp_test.jsonl --actor outputs/tiny/models/actor_round_2 \\
        --critic outputs/tiny/models/critic_round_2 [--repair outputs/tiny/models/repair] --out cs_run/
    coderl-ray critic-sample ... --budget 20 --passes 3 --first-samples 8 --top-k 2 --submissions 1,5
    coderl-ray critic-sample ... --passes 1   # the baseline: plain sampling of the budget, filtered, critic-ranked

Every problem gets exactly ``--budget`` programs (k of n@k). Settings not given as flags come from ``--config``
(``cs.*``, ``rollout.*`` for the generator pool and lengths, ``sandbox.*``); ``key=value`` overrides work as for
every command. The output folder holds each pass as Parquet, ``results.parquet``, ``submissions.jsonl`` and
``report/`` (docs/inference.md); rerunning the same command resumes at the pass a killed run was in.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from coderl_ray.commands._stage import (
    add_config_arguments, add_problem_arguments, connect, load_stage_config, problems_for, run_stage,
)

# flag -> cs config key
FLAGS = {"budget": "budget", "passes": "passes", "first_samples": "first_samples", "top_k": "seeds_top_k",
         "repair_candidates": "repair_candidates", "temperature": "temperature", "top_p": "top_p"}


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_problem_arguments(parser, default_split="test")
    parser.add_argument("--actor", required=True, help="actor folder, e.g. <output_dir>/models/actor_round_2")
    parser.add_argument("--critic", required=True, help="critic folder, e.g. <output_dir>/models/critic_round_2")
    parser.add_argument("--repair", default=None,
                        help="repair model folder (e.g. <output_dir>/models/repair); without it, problems none of "
                             "whose programs passes the examples are sampled plainly")
    parser.add_argument("--out", required=True, help="output folder (resumed when it holds the same run)")
    parser.add_argument("--budget", type=int, help="programs per problem, k of n@k (cs.budget)")
    parser.add_argument("--passes", type=int, help="generation passes (cs.passes; 1 = plain sampling)")
    parser.add_argument("--first-samples", type=int, help="plain samples per problem in pass 0 (cs.first_samples)")
    parser.add_argument("--top-k", type=int, help="seeds continued per problem when refining (cs.seeds_top_k)")
    parser.add_argument("--repair-candidates", type=int,
                        help="failed programs repaired per problem (cs.repair_candidates)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (cs.temperature)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling (cs.top_p)")
    parser.add_argument("--submissions", type=_int_list, help="n of n@k, e.g. 1,5 (cs.submissions)")
    parser.add_argument("--seed", type=int, help="sampling seed (default: the config's seed)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first instead of resuming")


def _overrides(args: argparse.Namespace) -> list[str]:
    out = [f"cs.{key}={getattr(args, flag)}" for flag, key in FLAGS.items() if getattr(args, flag) is not None]
    if args.submissions is not None:
        out.append(f"cs.submissions=[{','.join(map(str, args.submissions))}]")
    if args.seed is not None:
        out.append(f"seed={args.seed}")
    return out


def run(args: argparse.Namespace) -> int:
    from coderl_ray.inference.checks import check_inputs
    from coderl_ray.inference.run import critic_sample

    args.overrides = [*args.overrides, *_overrides(args)]
    cfg = load_stage_config(args)
    problems = problems_for(args, cfg)
    where = args.problems or f"{args.config} (data, split {args.split})"
    check_inputs(problems, where, args.actor, args.critic, args.repair)
    out = Path(args.out)
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    connect(cfg)

    def stage() -> dict:
        metrics = critic_sample(cfg, problems, Path(args.actor), Path(args.critic),
                                Path(args.repair) if args.repair else None, out, cfg.seed)
        name = "cs" if "cs" in metrics["strategies"] else "filter+critic"
        return {"problems": len(problems), "budget": cfg.cs.budget, "strategy": name,
                **metrics["strategies"][name]["all"],
                "no_example_problems": metrics["diagnostics"]["problems_without_example_tests"],
                "report": str(out / "report" / "report.md")}

    return run_stage("critic-sample", stage)
