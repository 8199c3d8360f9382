"""``coderl-ray evaluate``: pass@k, APPS metrics and n@k from execution results, written as a report.

    coderl-ray execute --problems problems.jsonl --samples samples.jsonl --out results.jsonl
    coderl-ray evaluate --problems problems.jsonl --results results.jsonl --out report/ --k 1,5,10

Add ``--example-results`` (the same samples run with ``coderl-ray execute --example-tests``) for n@k; a
``critic_score`` field in the results ranks the filtered samples. ``--require-all-pass`` makes the command fail
unless every scored sample passed and nothing was left unscored: the reference-solution check.
"""

from __future__ import annotations

import argparse
import sys

from coderl_ray.data.jsonl import load_jsonl
from coderl_ray.eval.metrics import DEFAULT_KS, DEFAULT_SCORE_COLUMN, DEFAULT_SUBMISSIONS, summarize
from coderl_ray.eval.report import write_report
from coderl_ray.eval.results import ResultError, read_results


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--problems", required=True, help="canonical problems JSON Lines")
    parser.add_argument("--results", required=True, help="result records: JSON Lines, Parquet, or a folder of them")
    parser.add_argument("--out", required=True, help="report folder (metrics.json, report.md, PNG figures)")
    parser.add_argument("--k", type=_int_list, default=list(DEFAULT_KS), help="ks for pass@k (default 1,5,10,100)")
    parser.add_argument("--example-results", default=None,
                        help="results of the same samples on the example tests, for n@k")
    parser.add_argument("--submissions", type=_int_list, default=list(DEFAULT_SUBMISSIONS),
                        help="n of n@k: how many filtered samples are submitted (default 1,5)")
    parser.add_argument("--score-column", default=DEFAULT_SCORE_COLUMN,
                        help="numeric result field that ranks samples for n@k (default critic_score)")
    parser.add_argument("--title", default="Evaluation report")
    parser.add_argument("--require-all-pass", action="store_true",
                        help="exit 1 unless every scored sample passed, no infra error and no unscored problem")


def _failures(metrics: dict) -> list[str]:
    out = []
    for p in metrics["per_problem"]:
        if p["n"] == 0:
            out.append(f"{p['problem_id']}: no scored sample ({p['infra_errors']} infra errors)")
        elif p["c"] < p["n"] or p["infra_errors"]:
            bad = {k: v for k, v in p["outcomes"].items() if k != "passed"}
            out.append(f"{p['problem_id']}: {p['c']}/{p['n']} passed {bad} infra={p['infra_errors']}")
    return out


def run(args: argparse.Namespace) -> int:
    problems = load_jsonl(args.problems)
    results = read_results(args.results)
    example_results = read_results(args.example_results) if args.example_results else None
    try:
        metrics = summarize(problems, results, args.k, example_results=example_results,
                            submissions=args.submissions, score_column=args.score_column or None)
    except ValueError as exc:
        raise ResultError(f"{args.results}: {exc}") from None
    paths = write_report(metrics, args.out, title=args.title)
    overall = metrics["overall"]
    shown = ", ".join(f"pass@{k} {100 * v:.2f}%" for k, v in overall["pass@k"].items())
    print(f"{overall['problems_scored']}/{overall['problems']} problems, {overall['samples']} samples "
          f"({overall['infra_errors']} infra errors): {shown}; strict accuracy "
          f"{100 * (overall['strict_accuracy'] or 0):.2f}%, test-case average "
          f"{100 * (overall['test_case_average'] or 0):.2f}%")
    for name, g in metrics["by_difficulty"].items():
        print(f"  {name}: " + ", ".join(f"pass@{k} {100 * v:.2f}%" for k, v in g["pass@k"].items()))
    if "n@k" in overall:
        print("  n@k: " + ", ".join(f"{key} {100 * v:.2f}%" for key, v in overall["n@k"].items())
              + f" ({overall.get('example_infra_errors', 0)} infra errors on the example tests)")
    print(f"report: {paths['report']}")
    if args.require_all_pass:
        failures = _failures(metrics)
        if failures:
            print(f"{len(failures)} problem(s) not fully passing:", file=sys.stderr)
            for line in failures:
                print("  " + line, file=sys.stderr)
            return 1
    return 0
