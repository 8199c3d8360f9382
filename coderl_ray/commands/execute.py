"""``coderl-ray execute``: run sample programs against their problems' tests; one result record per sample.

    coderl-ray execute --problems problems.jsonl --samples samples.jsonl --out results.jsonl
    coderl-ray execute --problems p.jsonl --samples s.jsonl --out r.jsonl --example-tests --compare apps \\
        --timeout 4 --num-workers 8

Problems are canonical problem records, samples ``{problem_id, sample_id, code}`` (extra fields are ignored), results
the result records of docs/design.md, written in the samples' order as they stream out of the execution pool. Without
``--address`` (or ``$RAY_ADDRESS``) a running local cluster is used if there is one, else Ray starts in-process with
``--num-workers`` CPUs that all advertise the ``sandbox`` resource; ``--no-ray`` runs in this process instead.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from coderl_ray.config import SandboxConfig
from coderl_ray.data.problems import ProblemError, loads_line, read_problems
from coderl_ray.progress import stage_bar
from coderl_ray.records import ExecutionResult, Outcome


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--problems", required=True, help="canonical problems JSON Lines")
    parser.add_argument("--samples", required=True, help="samples JSON Lines: {problem_id, sample_id, code}")
    parser.add_argument("--out", required=True, help="results JSON Lines to write (in the samples' order)")
    parser.add_argument("--example-tests", action="store_true",
                        help="run each problem's example_tests instead of its hidden tests")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="CPU time per test (default: sandbox.timeout_s, 4); the wall clock is only a "
                             "backstop against programs that sleep, 3 x this + 5 s (docs/sandbox.md#time)")
    parser.add_argument("--program-timeout", type=float, default=None, metavar="SECONDS",
                        help="CPU time for all tests of one program (default: max(20, 5 x --timeout))")
    parser.add_argument("--compare", choices=("auto", "strict", "apps"), default="auto",
                        help="auto (default: each problem's own mode, e.g. apps for converted APPS problems, else "
                             "strict), strict (training rewards) or apps (the original APPS harness's verdicts)")
    parser.add_argument("--stop-on-first-failure", action="store_true",
                        help="stop a program at its first failing test (CodeRL's speed trick)")
    parser.add_argument("--tier", choices=("auto", "namespace", "process", "bwrap"), default="auto",
                        help="isolation tier (docs/sandbox.md); auto = namespaces where the kernel allows them")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="sandbox executors (default: one per CPU of a local Ray, or per sandbox slot)")
    parser.add_argument("--address", default="", help="Ray cluster address (default: $RAY_ADDRESS, then local)")
    parser.add_argument("--no-ray", action="store_true", help="run in this process (threads) instead of on Ray")


def _read_samples(path: str, problem_ids: set[str]) -> list[dict[str, Any]]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such samples file")
    samples: list[dict[str, Any]] = []
    seen: set[str] = set()
    with file.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{file}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProblemError(f"{where}: not UTF-8 text ({exc})") from None
            record = loads_line(line, where)
            if not isinstance(record, dict):
                raise ProblemError(f"{where}: expected a JSON object")
            for key in ("problem_id", "sample_id", "code"):
                if not isinstance(record.get(key), str):
                    raise ProblemError(f"{where}: {key!r} must be a string, got {type(record.get(key)).__name__}")
            if record["problem_id"] not in problem_ids:
                raise ProblemError(f"{where}: problem_id {record['problem_id']!r} is not in the problems file")
            if record["sample_id"] in seen:
                raise ProblemError(f"{where}: duplicate sample_id {record['sample_id']!r}")
            seen.add(record["sample_id"])
            samples.append({"problem_id": record["problem_id"], "sample_id": record["sample_id"],
                            "code": record["code"]})
    return samples


def _config(args: argparse.Namespace) -> SandboxConfig:
    timeout = args.timeout if args.timeout is not None else SandboxConfig.timeout_s
    program = args.program_timeout if args.program_timeout is not None else max(20.0, 5 * timeout)
    return SandboxConfig(timeout_s=timeout, program_timeout_s=program, compare=args.compare,
                         stop_on_first_failure=args.stop_on_first_failure, tier=args.tier,
                         max_tasks_in_flight=max(args.num_workers, 0))


_RESULT_FIELDS = ("problem_id", "sample_id", "outcome", "passed_tests", "total_tests", "test_results", "error",
                  "duration_s")


def _result_record(row: dict[str, Any]) -> dict[str, Any]:
    """docs/design.md's result record from a result row (the fields of ExecutionResult.to_dict, in its order), built
    directly: dataclasses.asdict per row cost more than the rest of the driver's work per program."""
    record = {k: row[k] for k in _RESULT_FIELDS}
    record["outcome"] = Outcome(record["outcome"]).value
    record["test_results"] = list(record["test_results"] or [])
    record["error"] = record["error"] or ""
    record["apps_result"] = Outcome(record["outcome"]).apps_result
    return record


def _iter_results_ray(samples, problems, cfg: SandboxConfig, args):
    import ray

    from coderl_ray.execution import execute_samples
    from coderl_ray.ray_runtime import init_ray

    init_ray(args.address, cfg.resource, num_cpus=args.num_workers or None)
    ctx = ray.data.DataContext.get_current()
    previous = ctx.execution_options.preserve_order, ctx.enable_progress_bars
    ctx.execution_options.preserve_order = True  # stream results out in the samples' order
    ctx.enable_progress_bars = False
    try:
        indexed = [{**s, "_row": i} for i, s in enumerate(samples)]
        blocks = max(1, min(len(indexed) // cfg.batch_size + 1, 1000))
        ds = ray.data.from_items(indexed, override_num_blocks=blocks)
        expected = 0
        results = execute_samples(ds, problems, cfg, example_tests=args.example_tests)
        # Whole batches, converted once each: Ray Data's per-row iteration costs more than a trivial program.
        for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                if row["_row"] != expected:
                    raise RuntimeError(f"result {row['_row']} arrived in place of {expected}: order was not preserved")
                expected += 1
                yield row
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = previous


def _iter_results_local(samples, problems, cfg: SandboxConfig, args):
    from coderl_ray.execution.stage import limits_from_config
    from coderl_ray.sandbox import Sandbox, execute_many

    limits = limits_from_config(cfg, args.example_tests)
    workers = args.num_workers or os.cpu_count() or 1
    with Sandbox(limits.tier) as sandbox:
        chunk = max(workers * 8, 1)
        for start in range(0, len(samples), chunk):
            part = samples[start:start + chunk]
            for result in execute_many(problems, part, limits, max_workers=workers, sandbox=sandbox):
                yield result.to_dict()


def run(args: argparse.Namespace) -> int:
    problems = {p["problem_id"]: p for p in read_problems(args.problems)}
    samples = _read_samples(args.samples, set(problems))
    cfg = _config(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    counts: collections.Counter = collections.Counter()
    start = time.monotonic()
    rows = (_iter_results_local if args.no_ray else _iter_results_ray)(samples, problems, cfg, args)
    n = 0
    with tmp.open("w", encoding="utf-8") as f, stage_bar("execute", total=len(samples), unit="program") as bar:
        for row in rows:
            record = _result_record(row)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            counts[record["outcome"]] += 1
            n += 1
            bar.update(1)
    tmp.replace(out)
    elapsed = time.monotonic() - start
    print(f"coderl-ray execute: {n} results -> {out} in {elapsed:.1f}s ({outcome_summary(counts)})", file=sys.stderr)
    return 0


def outcome_summary(counts: collections.Counter) -> str:
    """The outcome counts of a run, infrastructure errors always among them (0 included): those results are no
    verdict on the program (the sandbox failed, or the machine starved it, even after retries)."""
    shown = [f"{counts[o.value]} {o.value}" for o in Outcome if o is not Outcome.INFRA_ERROR and counts[o.value]]
    infra = counts[Outcome.INFRA_ERROR.value]
    shown.append(f"{infra} infra_error" + (" - not verdicts on the programs: the sandbox failed or the machine "
                                            "starved them (docs/sandbox.md#time); rerun them" if infra else ""))
    return ", ".join(shown)
