"""Does CodeRL's RL improve over SFT? The demo pipeline over several seeds, with a cross-entropy-only control.

    python benchmarks/rl_gain.py --seeds 0 1 2                 # RL arm only
    python benchmarks/rl_gain.py --seeds 0 1 2 --control       # plus the control: the same rounds, CE steps only
    # the other CE/RL alternation, from the SFT models of the run above (no second SFT):
    python benchmarks/rl_gain.py --seeds 0 1 2 --control --out outputs/rl_gain_step --sft-from outputs/rl_gain \
        rl.alternation=step rl.steps_per_round=60

Each seed changes the suite (problems, constants, inputs), the model initialisation and the sampling. The control
arm runs the same number of optimizer steps per round with every step a cross-entropy step on ground truth, so the
difference between the arms is what the RL steps add beyond continued supervised training. The control arm starts
from the RL arm's finished SFT stages (copied, with their records), so both arms leave from the very same model and
the control costs only its rounds (``--sft-from`` does the same for both arms from an earlier run's folder). Prints
pass@1 after SFT and after the last round for every seed, the mean gain and its standard deviation; extra
``key=value`` arguments override the config of both arms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.config import load_config  # noqa: E402
from coderl_ray.pipeline import run_pipeline  # noqa: E402


def pass1(state: dict, phase: str, group: str = "all") -> float:
    return state["stages"][f"eval/{phase}"]["info"][group]["pass@1"]


# Everything the pipeline does before its first RL round: the control arm reuses it from the RL arm.
SHARED_STAGES = ("data", "init", "eval/untrained", "sft", "eval/sft")
SHARED_PATHS = ("data", "models/actor_init", "models/actor_sft", "eval/untrained", "eval/sft")


def share_sft(src: Path, dst: Path) -> None:
    """Start run folder ``dst`` from the finished SFT stages of ``src`` (copied, with their records), so an arm
    leaves from the very same model and costs only its rounds."""
    if (dst / "state.json").exists():
        return  # a rerun resumes the arm where it stopped
    state = json.loads((src / "state.json").read_text())
    for rel in SHARED_PATHS:
        shutil.copytree(src / rel, dst / rel)
    state["stages"] = {k: v for k, v in state["stages"].items() if k in SHARED_STAGES}
    (dst / "state.json").write_text(json.dumps(state, indent=2))


def run_seed_arm(config: str, out: Path, seed: int, overrides: list[str], sft_from: Path | None = None):
    """Run the pipeline of one seed into ``out`` (suite, initialisation and sampling all seeded by ``seed``), from
    ``sft_from``'s SFT stages when given; returns the finished config and ``state.json``."""
    if sft_from is not None:
        share_sft(sft_from, out)
    cfg = load_config(config, [f"seed={seed}", f"data.suite_seed={seed}", f"output_dir={out}", "ray_address=local",
                               *overrides])
    run_pipeline(cfg)
    return cfg, json.loads((out / "state.json").read_text())


def run_arm(args, seed: int, control: bool) -> dict:
    name = f"{'control' if control else 'rl'}-seed{seed}"
    sft_from = None
    if args.sft_from is not None:
        sft_from = args.sft_from / f"rl-seed{seed}"
    elif control:
        sft_from = args.out / f"rl-seed{seed}"
    overrides = list(args.overrides)
    if control:
        # What follows the last round (repair model, critic sampling) does not change the arm's pass@1.
        overrides += ["rl.ce_only=true", "repair.enabled=false", "cs.enabled=false"]
    cfg, state = run_seed_arm(args.config, args.out / name, seed, overrides, sft_from)
    last = f"round_{cfg.rl.rounds}"
    return {"seed": seed, "arm": "control" if control else "rl", "alternation": cfg.rl.alternation,
            "steps_per_round": cfg.rl.steps_per_round, "sft": pass1(state, "sft"),
            "final": pass1(state, last),
            "by_difficulty": {d: (pass1(state, "sft", d), pass1(state, last, d))
                              for d in ("introductory", "interview", "competition")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--control", action="store_true", help="also run the cross-entropy-only control arm")
    parser.add_argument("--out", type=Path, default=Path("outputs/rl_gain"))
    parser.add_argument("--sft-from", type=Path, default=None,
                        help="start every arm from the finished SFT stages of <dir>/rl-seed<N> (an earlier --out)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    rows = []
    for seed in args.seeds:
        rows.append(run_arm(args, seed, control=False))
        if args.control:
            rows.append(run_arm(args, seed, control=True))

    if rows:
        print(f"\nRL arm: rl.alternation={rows[0]['alternation']}, rl.steps_per_round={rows[0]['steps_per_round']}")
    print("\n| seed | arm | pass@1 after SFT | pass@1 after last round | gain (points) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['seed']} | {r['arm']} | {100 * r['sft']:.1f} | {100 * r['final']:.1f} | "
              f"{100 * (r['final'] - r['sft']):+.1f} |")
    for arm in ("rl", "control"):
        gains = [100 * (r["final"] - r["sft"]) for r in rows if r["arm"] == arm]
        if gains:
            spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
            print(f"\n{arm}: mean gain {statistics.mean(gains):+.1f} points of pass@1 (std {spread:.1f}, "
                  f"{len(gains)} seeds)")
    if args.control:
        diffs = [100 * (a["final"] - b["final"]) for a, b in zip(rows[::2], rows[1::2])]
        spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        print(f"RL arm minus control arm after the last round: {statistics.mean(diffs):+.1f} points "
              f"(std {spread:.1f})")
    (args.out / "rl_gain.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
