"""What the stages after the last round cost: critic_binary and repair, against the last round's critic stage.

    python benchmarks/post_round_cost.py --run outputs/tiny
    python benchmarks/post_round_cost.py --run outputs/tiny repair.epochs=4

On a finished run, reruns in one process, one after the other: the last round's critic stage exactly as the
pipeline ran it (the baseline), then ``stages.train_critic_binary`` and ``stages.train_repair`` with the run's
config (plus overrides). Prints each one's wall time and its ratio to the baseline: on a shared machine the seconds
move with the load, the ratios much less, so a ratio times the baseline's time in an undisturbed ``make demo``
estimates the stage's cost there. Writes under ``<run>/post_round_cost/``; the run itself is not changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray import stages  # noqa: E402
from coderl_ray.config import load_config  # noqa: E402
from coderl_ray.data.problems import read_problems  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="output_dir of a finished demo run")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. repair.epochs=4")
    args = parser.parse_args()

    from coderl_ray.ray_runtime import init_ray

    run = args.run.resolve()
    cfg = load_config(run / "config.yaml", ["ray_address=local", *args.overrides])
    init_ray(cfg.ray_address, cfg.sandbox.resource)
    last = cfg.rl.rounds
    rounds = list(range(1, last + 1))
    models, work = run / "models", run / "post_round_cost"
    shutil.rmtree(work, ignore_errors=True)
    gt = run / "data" / "ground_truth"
    previous = models / (f"critic_round_{last - 1}" if last > 1 else "actor_sft")
    jobs = {
        f"round_{last}/critic": lambda: stages.train_critic(cfg, run / "buffer", rounds, gt, previous, last == 1,
                                                            work / "critic", work / "ray_train", "critic"),
        "critic_binary": lambda: stages.train_critic_binary(cfg, run / "buffer", rounds, gt,
                                                            models / f"critic_round_{last}", work / "critic_binary",
                                                            work / "ray_train", run / "eval" / f"round_{last}" /
                                                            "results"),
        "repair": lambda: stages.train_repair(cfg, read_problems(run / "data" / "train.jsonl"), run / "buffer",
                                              rounds, models / f"actor_round_{last}", work / "repair",
                                              work / "ray_train"),
    }
    times = {}
    for name, job in jobs.items():
        start = time.perf_counter()
        info = job()
        times[name] = time.perf_counter() - start
        print(json.dumps({"stage": name, "wall_s": round(times[name], 1), "steps": info.get("steps")}), flush=True)
    base = next(iter(times.values()))
    print(f"\n{'stage':<16} wall s  x {next(iter(times))}")
    for name, t in times.items():
        print(f"{name:<16} {t:6.1f}  {t / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
