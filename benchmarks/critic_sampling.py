"""Does critic sampling beat plain sampling at equal budget? Five strategies on a finished run's held-out problems.

    python benchmarks/critic_sampling.py --run outputs/tiny                       # 3 seeds, 10 programs per problem
    python benchmarks/critic_sampling.py --run outputs/tiny --seeds 0 1 2 --budget 10 --passes 2 --first-samples 5 \\
        --json outputs/cs_bench.json

From the run folder of a finished pipeline (``make demo``: ``outputs/tiny``) it takes the last round's actor, the
critic critic sampling would use (``models/critic_binary`` when the run trained one, else the last round's), the
repair model ``models/repair`` when there is one, and the held-out problems ``data/test.jsonl``. Every strategy
generates exactly ``--budget`` programs per problem (k), and submits n of them (n@k, judged on the hidden tests):

    (a) random         plain sampling, n picked at random
    (b) filter         plain sampling, example-test passers first (random order)
    (c) filter+critic  plain sampling, example-test passers first, then by the critic's "passed" probability
    (d) cs-refine      critic sampling, refining only (no repair model)
    (e) cs-repair      critic sampling, refining and repairing

(a)-(c) select from one set of plain samples (one run, one wall time). Each seed redraws every program; the table
shows the mean and standard deviation over seeds of 1@k, 5@k and pass@k (any of the k correct), the wall time of
each run (generation, example tests and critic scores; the hidden-test judgement is not part of a strategy), and
what refining and repairing contributed (new programs that pass the examples / the hidden tests, problems they
solved that no plain sample of the run solved). Critic sampling keys every program by (seed, pass, problem, index)
(``inference/continuation.cs_sample_key``), so within a seed the CS arms' pass 0 draws the same programs as the
first ``--first-samples`` of the plain run (common random numbers); ``--paired`` reuses those programs instead of
generating them again (then CS's wall time leaves out pass 0).
Extra ``key=value`` arguments override the run's config (e.g. ``rollout.num_workers=2``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.config import load_config  # noqa: E402
from coderl_ray.data.problems import read_problems  # noqa: E402

STRATEGIES = ("random", "filter", "filter+critic", "cs-refine", "cs-repair")


def _models(run: Path, cfg, args) -> dict:
    models = run / "models"
    rounds = cfg.rl.rounds
    binary = getattr(cfg.critic, "inference_classes", 4) == 2
    repair = Path(args.repair) if args.repair else models / "repair"
    return {"actor": Path(args.actor) if args.actor else models / f"actor_round_{rounds}",
            "critic": Path(args.critic) if args.critic else
            models / ("critic_binary" if binary else f"critic_round_{rounds}"),
            "repair": repair if repair.is_dir() else None}


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def run_seed(cfg, problems, models, work: Path, seed: int, paired: bool, log, roles=None) -> dict:
    from coderl_ray.inference.run import critic_sample

    out: dict = {}
    plain_cfg = dataclasses.replace(cfg, cs=dataclasses.replace(cfg.cs, passes=1))
    start = time.perf_counter()
    plain = critic_sample(plain_cfg, problems, models["actor"], models["critic"], None, work / "plain", seed, log=log,
                          roles=roles)
    wall = _procedure_s(plain, time.perf_counter() - start)
    for name in ("random", "filter", "filter+critic"):
        out[name] = {"metrics": plain["strategies"][name]["all"], "wall_s": wall}
    arms = [("cs-refine", None)] + ([("cs-repair", models["repair"])] if models["repair"] else [])
    for name, repair in arms:
        start = time.perf_counter()
        m = critic_sample(cfg, problems, models["actor"], models["critic"], repair, work / name, seed,
                          first_pass_from=work / "plain" if paired else None, log=log, roles=roles)
        out[name] = {"metrics": m["strategies"]["cs"]["all"], "wall_s": _procedure_s(m, time.perf_counter() - start),
                     "diagnostics": m["diagnostics"]}
    return out


def _procedure_s(metrics: dict, total: float) -> float:
    # The passes' own time; a resumed run that did nothing reports the full call (near 0) instead.
    passes = [v for k, v in metrics["wall_s"].items() if k.startswith("pass_")]
    return round(sum(passes), 2) if passes else round(total, 2)


def summarize(per_seed: list[dict], submissions: list[int]) -> dict:
    keys = [f"{n}@k" for n in submissions] + ["pass@k"]
    table = {}
    for name in STRATEGIES:
        runs = [s[name] for s in per_seed if name in s]
        if not runs:
            continue
        table[name] = {**{k: _spread([r["metrics"][k] for r in runs]) for k in keys},
                       "wall_s": _spread([r["wall_s"] for r in runs])}
        if "diagnostics" in runs[0]:
            origins = {}
            for origin in ("refine", "repair"):
                stats = [r["diagnostics"]["by_origin"][origin] for r in runs]
                if any(stats):
                    origins[origin] = {c: statistics.fmean(s.get(c, 0) for s in stats) for c in (
                        "programs", "new_programs", "new_pass_examples", "new_pass_hidden", "problems",
                        "newly_solved")}
            table[name]["contributions"] = origins
    return table


def format_table(table: dict, submissions: list[int], budget: int, problems: int, seeds: int) -> str:
    keys = [f"{n}@k" for n in submissions] + ["pass@k"]
    lines = [f"{problems} problems, k = {budget} programs per problem for every strategy, {seeds} seed(s); "
             "mean ± std over seeds (%)",
             f"{'strategy':<15}" + "".join(f"{k:>16}" for k in keys) + f"{'wall s':>14}"]
    for name, row in table.items():
        cells = "".join(f"{100 * row[k]['mean']:>9.1f} ± {100 * row[k]['std']:<4.1f}" for k in keys)
        lines.append(f"{name:<15}{cells}{row['wall_s']['mean']:>10.1f} ± {row['wall_s']['std']:<4.1f}")
    base = table.get("filter+critic")
    for name in ("cs-refine", "cs-repair"):
        if name in table and base and base["1@k"]["mean"] > 0:
            lines.append(f"{name} / filter+critic (1@k): {table[name]['1@k']['mean'] / base['1@k']['mean']:.2f}")
    for name in ("cs-refine", "cs-repair"):
        for origin, c in table.get(name, {}).get("contributions", {}).items():
            lines.append(f"{name}, {origin} (mean per seed): {c['programs']:.0f} programs on {c['problems']:.0f} "
                         f"problems, {c['new_programs']:.0f} new; new passing examples {c['new_pass_examples']:.0f}, "
                         f"new passing hidden {c['new_pass_hidden']:.0f}; problems newly solved "
                         f"{c['newly_solved']:.0f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished pipeline's output_dir (make demo: "
                                                                 "outputs/tiny)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=10, help="programs per problem for every strategy (k)")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--first-samples", type=int, default=5)
    parser.add_argument("--submissions", default="1,5", help="n of n@k")
    parser.add_argument("--problems", type=Path, default=None, help="default: <run>/data/test.jsonl")
    parser.add_argument("--actor", default=None)
    parser.add_argument("--critic", default=None)
    parser.add_argument("--repair", default=None)
    parser.add_argument("--paired", action="store_true", help="CS starts from the plain run's first programs")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: <run>/cs_benchmark)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from coderl_ray.inference.checks import check_inputs
    from coderl_ray.ray_runtime import init_ray
    from coderl_ray.roles.setup import Roles

    submissions = [int(x) for x in args.submissions.split(",")]
    cfg = load_config(args.run / "config.yaml", [
        f"cs.budget={args.budget}", f"cs.passes={args.passes}", f"cs.first_samples={args.first_samples}",
        f"cs.submissions={submissions}", *args.overrides])
    problems_path = args.problems or args.run / "data" / "test.jsonl"
    problems = read_problems(problems_path)
    models = _models(args.run, cfg, args)
    check_inputs(problems, str(problems_path), models["actor"], models["critic"], models["repair"],
                 {"actor": "actor", "critic": "critic", "repair": "repair model"})
    init_ray(cfg.ray_address, cfg.sandbox.resource)
    work = args.out or args.run / "cs_benchmark"
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    per_seed = []
    # One set of roles (generators, critic scorers, sandboxes) serves every strategy and seed, as in a pipeline: the
    # strategies' times are their passes' own (_procedure_s), so sharing them changes no number, only start-ups.
    with Roles(cfg, work / "ray_train") as roles:
        for seed in args.seeds:
            log(f"== seed {seed}")
            per_seed.append(run_seed(cfg, problems, models, work / f"seed_{seed}", seed, args.paired, log, roles))
    table = summarize(per_seed, submissions)
    print(format_table(table, submissions, args.budget, len(problems), len(args.seeds)))
    if not models["repair"]:
        print("(no repair model in the run: strategy cs-repair skipped)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "run": str(args.run), "problems": len(problems), "budget": args.budget, "passes": args.passes,
            "first_samples": args.first_samples, "seeds": args.seeds, "paired": args.paired,
            "models": {k: str(v) if v else None for k, v in models.items()}, "strategies": table,
            "per_seed": per_seed}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
