"""Fixed cost per round, before and after the persistent roles: where a round's wall time goes, stage by stage.

    python benchmarks/round_cost.py --before outputs/before/tiny --after outputs/tiny [--online outputs/online/tiny]

Reads the ``state.json`` of finished pipeline runs of the same config (run them back to back on one machine: the
``before`` run from a checkout of the code before the roles, ef8edac, the others from this one). For every stage of
the rounds it prints each run's wall time and, for the runs on persistent roles, the part that was work: the
trainer's training loop (``train_s``: steps and the batches they read), the generators' and sandbox executors'
busy seconds (rollout); the rest of a stage's wall time is its fixed cost (starting workers, loading models,
reading and splitting data, waiting between roles). The roles' own start-up (once per run) is printed apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STAGES = ("rollout", "critic", "score", "rl")


def _load(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


def work_seconds(stage: str, info: dict) -> float | None:
    """The part of a stage's wall time spent on its work, from what the stage recorded (None: not recorded)."""
    if stage in ("critic", "rl", "sft"):
        return info.get("train_s")
    if stage == "rollout" and "generator_busy_s" in info:
        # Generation is the rollout's critical path (execution overlaps it): the generators' busy seconds (summed
        # over generators; the demo has one).
        return info["generator_busy_s"]
    return None


def table(runs: dict[str, dict]) -> str:
    names = list(runs)
    rounds = max(int(k.split("/")[0].split("_")[1]) for s in runs.values() for k in s["stages"]
                 if k.startswith("round_"))
    lines = ["stage            " + "".join(f"{n + ' wall':>14}{n + ' work':>14}" for n in names)]
    totals = {n: [0.0, 0.0] for n in names}
    for r in range(1, rounds + 1):
        for stage in STAGES:
            key = f"round_{r}/{stage}"
            row = f"{key:<17}"
            for n in names:
                entry = runs[n]["stages"].get(key)
                if entry is None:
                    row += f"{'-':>14}{'-':>14}"
                    continue
                work = work_seconds(stage, entry["info"])
                totals[n][0] += entry["wall_s"]
                totals[n][1] += work or 0.0
                row += f"{entry['wall_s']:>14.1f}{(f'{work:.1f}' if work is not None else '-'):>14}"
            lines.append(row)
    online = {n: s["stages"]["online"] for n, s in runs.items() if "online" in s["stages"]}
    for n, entry in online.items():
        totals[n][0] += entry["wall_s"]
    lines.append(f"{'rounds total':<17}" + "".join(f"{totals[n][0]:>14.1f}{totals[n][1] or float('nan'):>14.1f}"
                                                   for n in names))
    for n, s in runs.items():
        roles = s.get("roles", {})
        if roles.get("startup_s"):
            lines.append(f"{n}: roles started once: " + ", ".join(f"{k} {v:.1f}s" for k, v in
                                                                   roles["startup_s"].items()))
    base = names[0]
    for n in names[1:]:
        if totals[n][0]:
            lines.append(f"rounds' wall time, {base} / {n}: {totals[base][0] / totals[n][0]:.2f}x")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a run of the code before the persistent roles")
    parser.add_argument("--after", type=Path, required=True, help="the same config on the persistent roles")
    parser.add_argument("--online", type=Path, default=None, help="optionally, the same config with rl.loop=online")
    args = parser.parse_args()
    runs = {"before": _load(args.before), "after": _load(args.after)}
    if args.online is not None:
        runs["online"] = _load(args.online)
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
