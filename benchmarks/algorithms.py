"""CodeRL, GRPO and RLOO side by side on one rollout, one sandbox and one report, against SFT and a CE-only control.

    python benchmarks/algorithms.py --seeds 0 1 2                      # every arm, 3 seeds
    python benchmarks/algorithms.py --seeds 3 --arms control grpo rl.steps_per_round=60   # a subset, an override
    python benchmarks/algorithms.py --report outputs/algorithms/algorithms.json --png docs/algorithms.png
    # end to end in a few minutes (no numbers to keep): the micro test config, one seed, two arms
    python benchmarks/algorithms.py --config tests/configs/micro.yaml --seeds 0 --arms control grpo \
        --out outputs/algorithms_micro data.reference_problems=16 rl.tracked_problems=4

The comparison runs ``--config`` (the demo's ``configs/tiny.yaml`` by default, left as it is) with the settings in
:data:`SETTINGS` on top: the unseen-wording family (``data.suite_unseen_wording=0.3``: 30% of the problems spell a
constant out, and the training ones have tests only, docs/suite.md) and 80 tracked training problems
(``rl.tracked_problems=80``: sampled by every round, scored by every evaluation, docs/training.md). Extra
``key=value`` arguments come after them and win.

Per seed (suite, initialisation and sampling all seeded by it), SFT runs once (``sft-seed<N>``, the pipeline with
``rl.rounds=0``) and every arm starts from its finished SFT stages (``benchmarks/rl_gain.share_sft``), so the arms
leave from the very same model and differ only in their rounds:

* ``control``: every optimizer step is cross-entropy on the reference solutions (``rl.ce_only``);
* ``coderl``: the default (relative return against the greedy program, token weights from the critic);
* ``coderl_nocritic``: the same with the sequence-level relative return (``rl.use_critic=false``);
* ``grpo`` and ``rloo``: group-relative advantages (``rl.algorithm``), no critic;
* ``grpo_critic`` and ``coderl_ranker`` (not run unless named): GRPO's advantages weighted per token by the critic;
  CodeRL with the ranking critic (``critic_quality.RANKER``: the head reads the actor's log-probabilities, a ranking
  term, mutants of the reference programs).

Every arm samples and runs the same number of programs per round (GRPO and RLOO draw one more sample in place of
the greedy program, docs/training.md) and takes the same optimizer steps with the same CE alternation. Evaluation
uses the same sampling keys in every arm: the test split (pass@1, pass@5) and the fixed set of tracked training
problems (``rl.tracked_problems``: pass@1 on all of them, the RL stage's own training problems, and on those without
a reference solution). Critic sampling and the repair model are off (they come after the last round and do not
change these numbers). Extra ``key=value`` arguments override the config of every run, SFT included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from critic_quality import RANKER  # noqa: E402
from rl_gain import run_seed_arm  # noqa: E402

# name: (label, overrides, whether the arm's RL step reads the critic)
ARMS = {
    "control": ("CE-only control", ["rl.ce_only=true"], False),
    "coderl": ("CodeRL", ["rl.algorithm=coderl"], True),
    "coderl_nocritic": ("CodeRL, no critic", ["rl.algorithm=coderl", "rl.use_critic=false"], False),
    "grpo": ("GRPO", ["rl.algorithm=grpo"], False),
    "rloo": ("RLOO", ["rl.algorithm=rloo"], False),
    "grpo_critic": ("GRPO x critic weights", ["rl.algorithm=grpo", "rl.use_critic=true"], True),
    # CodeRL with the critic that reads its programs (docs/benchmarks.md, "A critic that ranks programs within a
    # problem"): what its token weights do to RL.
    "coderl_ranker": ("CodeRL, ranking critic", ["rl.algorithm=coderl", *RANKER], True),
}
DEFAULT_ARMS = ["control", "coderl", "coderl_nocritic", "grpo", "rloo"]
# What the comparison adds to the demo's config (docs/suite.md, docs/training.md "RL algorithms"): a suite family
# only RL can learn, and a fixed set of training problems to measure it on.
SETTINGS = ["data.suite_unseen_wording=0.3", "rl.tracked_problems=80"]
COMMON = [*SETTINGS, "cs.enabled=false", "repair.enabled=false"]
# Columns of the table: (key, header); pass rates in percent.
METRICS = [("test_pass@1", "test pass@1"), ("test_pass@5", "test pass@5"),
           ("tracked_tests_only", "tests-only train pass@1"), ("tracked", "own train problems pass@1"),
           ("tracked_unseen_wording", "tests-only train unseen-wording pass@1"),
           ("unseen_wording", "test unseen-wording pass@1")]


def phase_metrics(state: dict, phase: str) -> dict:
    """The numbers of one evaluation (``eval/<phase>``) in percent: test pass@1/5 and the named groups' pass@1."""
    info = state["stages"][f"eval/{phase}"]["info"]
    out = {"test_pass@1": 100 * info["all"]["pass@1"], "test_pass@5": 100 * info["all"].get("pass@5", float("nan"))}
    for name, group in (info.get("groups") or {}).items():
        out[name] = 100 * group["pass@1"]
    return out


def arm_row(state: dict, seed: int, arm: str, rounds: int) -> dict:
    """One arm's row: its last evaluation, the critic's held-out within-problem AUC per round, its rollouts, and
    the wall time of its rounds (the shared SFT excluded), with the critic stages' share."""
    stages = state["stages"]
    row = {"seed": seed, "arm": arm, **phase_metrics(state, f"round_{rounds}" if arm != "sft" else "sft")}
    if arm == "sft":
        row["wall_s"] = stages["sft"]["wall_s"]
        return row
    auc = []
    for r in range(1, rounds + 1):
        held = (stages.get(f"round_{r}/score", {}).get("info") or {}).get("heldout") or {}
        auc.append(held.get("auc_within_problems"))
    row["critic_auc_within"] = auc
    # The staged loop's rollout stages (rl.loop=online runs every round as one "online" stage).
    row["rollouts"] = [{k: (stages.get(f"round_{r}/rollout") or {}).get("info", {}).get(k)
                        for k in ("sample_pass_rate", "greedy_pass_rate", "nonzero_advantages", "programs")}
                       for r in range(1, rounds + 1)]
    mine = {k: v["wall_s"] for k, v in stages.items() if k.startswith(("round_", "eval/round_", "online"))}
    row["wall_s"] = sum(mine.values())
    row["critic_wall_s"] = sum(v for k, v in mine.items() if k.endswith(("/critic", "/score")))
    return row


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with ``new`` added, a new row replacing the old row of its (arm, seed): a later run of more arms or
    seeds into the same ``--out`` adds to its table instead of replacing it. Arms keep their table order."""
    rows = {(r["arm"], r["seed"]): r for r in old}
    rows.update({(r["arm"], r["seed"]): r for r in new})
    order = ["sft", *ARMS]
    return sorted(rows.values(), key=lambda r: (order.index(r["arm"]), r["seed"]))


def run(args) -> list[dict]:
    path = args.out / "algorithms.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    for seed in args.seeds:
        sft_dir = args.out / f"sft-seed{seed}"
        _, state = run_seed_arm(args.config, sft_dir, seed, [*COMMON, "rl.rounds=0", *args.overrides])
        mine = [arm_row(state, seed, "sft", 0)]
        for arm in args.arms:
            cfg, state = run_seed_arm(args.config, args.out / f"{arm}-seed{seed}", seed,
                                      [*COMMON, *ARMS[arm][1], *args.overrides], sft_from=sft_dir)
            mine.append(arm_row(state, seed, arm, cfg.rl.rounds))
        rows = merge_rows(rows, mine)
        path.write_text(json.dumps(rows, indent=2))  # after every seed: partial results
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows: list[dict]) -> dict:
    """Per arm: mean and std over seeds of every metric; for RL arms, the paired difference to the control
    (same seed) on the two headline metrics, and whether it clears the goal: more than twice its std over seeds on
    the tests-only training problems, more than its std on the test split."""
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    by = {(r["arm"], r["seed"]): r for r in rows}
    out = {}
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        stats = {key: _mean_std([r.get(key) for r in mine]) for key, _ in METRICS}
        stats["wall_s"] = _mean_std([r.get("wall_s") for r in mine])
        stats["critic_wall_s"] = _mean_std([r.get("critic_wall_s") for r in mine])
        stats["critic_auc_within"] = _mean_std([(r.get("critic_auc_within") or [None])[-1] for r in mine])
        stats["seeds"] = [r["seed"] for r in mine]
        if arm not in ("sft", "control") and any(r["arm"] == "control" for r in rows):
            for key in ("tracked_tests_only", "test_pass@1"):
                diffs = [by[(arm, s)][key] - by[("control", s)][key] for s in stats["seeds"]
                         if ("control", s) in by and key in by[(arm, s)] and key in by[("control", s)]]
                stats[f"vs_control_{key}"] = (*_mean_std(diffs), diffs)
            d_tr, s_tr, per_tr = stats["vs_control_tracked_tests_only"]
            d_te, s_te, per_te = stats["vs_control_test_pass@1"]
            # A spread needs two seeds at least: with one, the goal is not decided (None).
            stats["goal_tracked"] = d_tr > 2 * s_tr if len(per_tr) > 1 else None
            stats["goal_test"] = d_te > s_te if len(per_te) > 1 else None
        out[arm] = stats
    return out


def format_table(rows: list[dict]) -> str:
    stats = summarize(rows)
    seeds = sorted({r["seed"] for r in rows})
    head = ["arm"] + [h for _, h in METRICS] + ["critic AUC within (held-out, last round)",
                                            "wall time of the rounds (s)"]
    lines = [f"Seeds {seeds}; mean ± std over seeds, pass rates in %.", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    fmt = lambda ms, d=1: "-" if ms[0] != ms[0] else f"{ms[0]:.{d}f} ± {ms[1]:.{d}f}"  # nan: not measured
    for arm, st in stats.items():
        label = "SFT" if arm == "sft" else ARMS[arm][0]
        auc = fmt(st["critic_auc_within"], 2) if arm in ARMS and ARMS[arm][2] else "-"
        wall = fmt(st["wall_s"], 0) if arm != "sft" else f"SFT: {st['wall_s'][0]:.0f}"
        if arm in ARMS and ARMS[arm][2]:
            wall += f" (critic + scoring {st['critic_wall_s'][0]:.0f})"
        lines.append("| " + " | ".join([label] + [fmt(st[k]) for k, _ in METRICS] + [auc, wall]) + " |")
    lines += ["", "Paired difference to the CE-only control (same seed), points of pass@1, mean ± std over seeds; "
              "goal: > 2 std on the tests-only training problems, > 1 std on the test split:", "",
              "| arm | tests-only train: arm - control | per seed | goal (> 2 std) | test: arm - control | per seed | "
              "goal (> 1 std) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for arm, st in stats.items():
        if "goal_tracked" not in st:
            continue
        a, b = st["vs_control_tracked_tests_only"], st["vs_control_test_pass@1"]
        per = lambda d: ", ".join(f"{x:+.1f}" for x in d[2])
        goal = lambda met: "n/a (one seed)" if met is None else "yes" if met else "no"
        lines.append(f"| {ARMS[arm][0]} | {a[0]:+.1f} ± {a[1]:.1f} | {per(a)} | {goal(st['goal_tracked'])}"
                     f" | {b[0]:+.1f} ± {b[1]:.1f} | {per(b)} | {goal(st['goal_test'])} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summarize(rows)
    arms = list(stats)
    labels = ["SFT" if a == "sft" else textwrap.fill(ARMS[a][0], 12) for a in arms]
    panels = [("test_pass@1", "test split pass@1 (%)"), ("tracked_tests_only", "tests-only training problems pass@1 (%)")]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2))
    for ax, (key, title) in zip(axes, panels):
        means = [stats[a][key][0] for a in arms]
        stds = [stats[a][key][1] for a in arms]
        ax.bar(range(len(arms)), means, yerr=stds, capsize=4, color=["#999999" if a in ("sft", "control") else
                                                                      "#4c72b0" for a in arms])
        for i, a in enumerate(arms):
            ys = [r[key] for r in rows if r["arm"] == a and key in r]
            ax.scatter([i] * len(ys), ys, color="black", s=10, zorder=3)
        ax.set_xticks(range(len(arms)), labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    # The seeds' suites differ in difficulty (the spread of the absolute numbers); the paired difference to the
    # control of the same seed is what the goal reads.
    ax, rl = axes[2], [a for a in arms if f"vs_control_{panels[0][0]}" in stats[a]]
    for j, ((key, _), color) in enumerate(zip(panels, ("#4c72b0", "#dd8452"))):
        x = [i + (j - 0.5) * 0.38 for i in range(len(rl))]
        ax.bar(x, [stats[a][f"vs_control_{key}"][0] for a in rl], width=0.38, color=color, capsize=3,
               yerr=[stats[a][f"vs_control_{key}"][1] for a in rl], label=key.replace("tracked_", "train ").replace("_", " "))
        for xi, a in zip(x, rl):
            ys = stats[a][f"vs_control_{key}"][2]
            ax.scatter([xi] * len(ys), ys, color="black", s=8, zorder=3)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rl)), [labels[arms.index(a)] for a in rl], fontsize=8)
    ax.set_title("arm - CE-only control, same seed (points of pass@1)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"RL algorithms on one infrastructure: mean ± std over seeds {sorted({r['seed'] for r in rows})}, "
                 "dots = seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS))
    parser.add_argument("--out", type=Path, default=Path("outputs/algorithms"))
    parser.add_argument("--report", type=Path, default=None, help="print the table of a finished run's JSON, no runs")
    parser.add_argument("--png", type=Path, default=None, help="also draw the figure here")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    if args.report is not None:
        rows = json.loads(args.report.read_text())
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        rows = run(args)
    print(format_table(rows))
    if args.png is not None:
        plot(rows, args.png)
        print(f"\nfigure: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
