"""Staged vs online CodeRL at an equal number of generated programs and RL steps, same seeds, one run.

    python benchmarks/online_loop.py --seeds 0 1 2                  # configs/tiny.yaml, both loops per seed
    python benchmarks/online_loop.py --seeds 0 --config tests/configs/micro.yaml rl.rounds=2   # a quick look
    python benchmarks/online_loop.py --seeds 0 1 2 --online-overrides train.torch_threads=1   # online arm only

For every seed the staged arm runs the pipeline through its rounds (``rl.loop=staged``); the online arm starts from
the staged arm's finished SFT stages (copied with their records, as benchmarks/rl_gain.py does) and runs the same
rounds as one online stage (``rl.loop=online``): the same problems, sampling keys, programs and optimizer steps.
Critic sampling is off in both (it does not depend on the loop). Per arm it prints the rounds' wall time (the
staged arm's rollout + critic + score + RL stages; the online stage), programs per second over that time, how busy
the actor trainer and the generators were over it, and pass@1 on the test split after the last round; then the
online/staged ratio of programs per second (mean over seeds) and each arm's pass@1 mean and spread. Extra
``key=value`` arguments override both arms' config.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.rl_gain import pass1, share_sft  # noqa: E402
from coderl_ray.config import load_config  # noqa: E402
from coderl_ray.pipeline import run_pipeline  # noqa: E402

ROUND_STAGES = ("rollout", "critic", "score", "rl")


def arm_numbers(state: dict, cfg, loop: str) -> dict:
    """Wall time of the rounds, programs/s, busy shares and pass@1 of one finished arm."""
    stages = state["stages"]
    programs = 0
    if loop == "staged":
        rounds = [f"round_{r}/{s}" for r in range(1, cfg.rl.rounds + 1) for s in ROUND_STAGES]
        wall = sum(stages[name]["wall_s"] for name in rounds if name in stages)
        programs = sum(stages[f"round_{r}/rollout"]["info"]["programs"] for r in range(1, cfg.rl.rounds + 1))
        trainer = sum(stages[f"round_{r}/rl"]["info"].get("train_s", 0.0) for r in range(1, cfg.rl.rounds + 1))
        generator = sum(stages[f"round_{r}/rollout"]["info"].get("generator_busy_s", 0.0)
                        for r in range(1, cfg.rl.rounds + 1))
        trainer_busy, generator_busy = trainer / wall, generator / (wall * cfg.rollout.num_workers)
        extra = {}
    else:
        info = stages["online"]["info"]
        wall, programs = stages["online"]["wall_s"], info["programs"]
        trainer_busy, generator_busy = info["trainer_busy"], info["generator_busy"]
        extra = {k: info[k] for k in ("dropped_stale", "max_staleness_trained", "rl_rows_per_step",
                                      "trainer_startup_s")}
    last = f"round_{cfg.rl.rounds}"
    return {"loop": loop, "rounds_wall_s": round(wall, 1), "programs": programs,
            "programs_per_s": round(programs / wall, 3), "trainer_busy": round(trainer_busy, 3),
            "generator_busy": round(generator_busy, 3), "sft_pass@1": pass1(state, "sft"),
            "pass@1": pass1(state, last), **extra}


def run_arm(args, seed: int, loop: str) -> dict:
    # The online arm's own overrides name its folder, so that a staged arm's finished run serves several of them.
    own = args.online_overrides if loop == "online" else []
    out = args.out / "-".join([loop, *own, f"seed{seed}"])
    if loop == "online":
        share_sft(args.out / f"staged-seed{seed}", out)
    overrides = [f"seed={seed}", f"data.suite_seed={seed}", f"output_dir={out}", "ray_address=local",
                 f"rl.loop={loop}", "cs.enabled=false", "repair.enabled=false", *args.overrides, *own]
    cfg = load_config(args.config, overrides)
    run_pipeline(cfg)
    return {"seed": seed, **arm_numbers(json.loads((out / "state.json").read_text()), cfg, loop)}


def summarize(rows: list[dict]) -> str:
    lines = ["loop    seed  rounds s  programs  prog/s  trainer busy  gen busy  SFT p@1  p@1"]
    for r in rows:
        lines.append(f"{r['loop']:<7} {r['seed']:>4}  {r['rounds_wall_s']:>8.1f}  {r['programs']:>8}  "
                     f"{r['programs_per_s']:>6.2f}  {r['trainer_busy']:>12.3f}  {r['generator_busy']:>8.3f}  "
                     f"{100 * r['sft_pass@1']:>7.1f}  {100 * r['pass@1']:>4.1f}")
    by = {loop: [r for r in rows if r["loop"] == loop] for loop in ("staged", "online")}
    ratios = [o["programs_per_s"] / s["programs_per_s"] for s, o in zip(by["staged"], by["online"])
              if s["seed"] == o["seed"]]
    if ratios:
        lines.append(f"\nprograms/s online / staged: {statistics.mean(ratios):.2f}x "
                     f"(per seed: {', '.join(f'{x:.2f}' for x in ratios)})")
    for loop, arm in by.items():
        p = [100 * r["pass@1"] for r in arm]  # in %
        if p:
            spread = statistics.stdev(p) if len(p) > 1 else 0.0
            lines.append(f"pass@1 {loop}: {statistics.mean(p):.1f}% (std {spread:.1f}, seeds {len(p)})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("outputs/online_loop"))
    parser.add_argument("--online-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for the online arm only (e.g. train.torch_threads=1: where the roles "
                             "share cores, one thread per trainer); a finished staged arm is reused")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for both arms")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        for loop in ("staged", "online"):
            rows.append(run_arm(args, seed, loop))
            (args.out / "results.json").write_text(json.dumps(rows, indent=1))
            print(json.dumps(rows[-1]), flush=True)
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
