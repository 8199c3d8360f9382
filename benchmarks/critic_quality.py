"""Can the critic rank? Critics retrained on a finished demo run's replay buffer, each with one setting changed.

    python benchmarks/critic_quality.py --run outputs/tiny                      # round 1's critic, every variant
    python benchmarks/critic_quality.py --run outputs/tiny --variants tiny,epochs2 critic.lr=0.0005
    python benchmarks/critic_quality.py --run outputs/tiny --binary             # the inference critic's options

Round-1 mode retrains the pipeline's first critic (a new head on the SFT actor, round 1's buffer plus the reference
programs) through ``stages.train_critic`` and measures it on the programs it trained on and on held-out programs:
the SFT actor's samples on the test split (``eval/sft/results``), as the pipeline's ``round_1/score`` does.
``--binary`` mode trains the binary inference critic (stage ``critic_binary``: every round's buffer) and measures it
on the last actor's test-split samples (``eval/round_<last>/results``), the programs critic sampling will rank.

For each variant: optimizer steps, wall time of training + scoring and its ratio to the first variant's, then
accuracy (next to the majority-class rate) and the AUC of the "passed" probability over all programs / within
problems (with the number of problems that have both outcomes), held out, on the training programs and, in round-1
mode, on round 2's programs (``coderl_ray.rl.scoring.critic_quality``); and whether the critic reads the program at
all (:func:`program_sensitivity`). Extra ``key=value`` arguments override every variant's config.
Models go to ``<run>/critic_quality/``; the run itself is not changed.
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

# name -> (config overrides, classes of the head, what the new head sits on: "actor" = the SFT actor for round 1,
# "critic" = the run's last critic for --binary).
ROUND1 = {
    "tiny": ([], 4, "actor"),
    "epochs2": (["critic.epochs=2"], 4, "actor"),
    "no_ground_truth": (["critic.include_ground_truth=false"], 4, "actor"),
    "unscaled": (["critic.scale_head_input=false"], 4, "actor"),
    "unscaled_epochs2": (["critic.scale_head_input=false", "critic.epochs=2"], 4, "actor"),
    "binary": ([], 2, "actor"),
    "binary_epochs2": (["critic.epochs=2"], 2, "actor"),
    "binary_no_ground_truth": (["critic.include_ground_truth=false"], 2, "actor"),
    # ~1/4 of the rows (only ~55 of 200 problems are mixed): 2 epochs take about as many steps as "tiny"'s half.
    "mixed_problems_epochs2": (["critic.data=mixed_problems", "critic.epochs=2"], 4, "actor"),
    "binary_mixed_problems_epochs2": (["critic.data=mixed_problems", "critic.epochs=2"], 2, "actor"),
    "mixed_problems_epochs8": (["critic.data=mixed_problems", "critic.epochs=8"], 4, "actor"),
    # The whole backbone trains at critic.lr: 1e-3 (the demo's) may overwrite what the SFT actor knows.
    "lr1e-4": (["critic.lr=0.0001"], 4, "actor"),
    "binary_lr1e-4": (["critic.lr=0.0001"], 2, "actor"),
    "binary_mixed_problems_epochs2_lr1e-4": (["critic.data=mixed_problems", "critic.epochs=2", "critic.lr=0.0001"],
                                             2, "actor"),
}
BINARY = {
    "last_critic_4class": (None, 4, "critic"),  # no training: the run's last 4-class critic, as it is
    "from_critic": ([], 2, "critic"),
    "from_critic_epochs1": (["critic.epochs=1"], 2, "critic"),
    "from_critic_epochs2": (["critic.epochs=2"], 2, "critic"),
    "from_critic_no_ground_truth": (["critic.include_ground_truth=false"], 2, "critic"),
    "from_actor": ([], 2, "actor"),
    "from_critic_mixed_problems_epochs2": (["critic.data=mixed_problems", "critic.epochs=2"], 2, "critic"),
}


def fmt(q: dict | None) -> str:
    if not q:
        return "n/a"
    num = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"{100 * q['accuracy']:.1f}% ({100 * q['majority_rate']:.1f}%) "
            f"{num(q['auc'])}/{num(q.get('auc_within_problems'))} ({q.get('mixed_problems', 0)})")


def program_sensitivity(critic_dir: Path, programs_dir: Path, limit: int = 400) -> dict:
    """Does the critic read the program at all? Over the first ``limit`` programs of ``programs_dir``: the mean
    standard deviation of P(passed) among one problem's programs, that of the problems' mean P(passed), and the mean
    change of P(passed) when each program's tokens are reversed (a program-reading critic moves a lot)."""
    import numpy as np
    import pyarrow.parquet as pq

    from coderl_ray.models.critic import load_critic, score_programs

    rows = pq.read_table(programs_dir, columns=["problem_id", "prompt_ids", "token_ids"]).to_pylist()[:limit]
    critic = load_critic(critic_dir).eval()
    pad = critic.backbone.config.pad_token_id

    def probs(batch_rows):
        return np.array([s.pass_prob for i in range(0, len(batch_rows), 64)
                         for s in score_programs(critic, batch_rows[i:i + 64], pad)])

    real = probs(rows)
    reversed_ = probs([dict(r, token_ids=list(reversed(r["token_ids"]))) for r in rows])
    groups: dict[str, list[float]] = {}
    for r, prob in zip(rows, real):
        groups.setdefault(r["problem_id"], []).append(prob)
    return {"within_std": float(np.mean([np.std(v) for v in groups.values() if len(v) > 1])),
            "between_std": float(np.std([np.mean(v) for v in groups.values()])),
            "reversed_change": float(np.mean(np.abs(real - reversed_)))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="output_dir of a finished (or round-1) demo run")
    parser.add_argument("--binary", action="store_true", help="the inference critic's options (after the last round)")
    parser.add_argument("--variants", default="", help="comma-separated subset of the variants (default: all)")
    parser.add_argument("--reuse", action="store_true",
                        help="score the critics an earlier run of this script trained instead of training them again")
    parser.add_argument("overrides", nargs="*", help="config overrides for every variant, e.g. critic.lr=0.0005")
    args = parser.parse_args()

    from coderl_ray.ray_runtime import init_ray

    run = args.run.resolve()
    base = load_config(run / "config.yaml", ["ray_address=local", *args.overrides])
    init_ray(base.ray_address, base.sandbox.resource)
    table = BINARY if args.binary else ROUND1
    names = [v for v in args.variants.split(",") if v] or list(table)
    last = base.rl.rounds
    rounds = list(range(1, last + 1)) if args.binary else [1]
    heldout = run / "eval" / (f"round_{last}" if args.binary else "sft") / "results"
    train_dir = run / "buffer" / f"round_{rounds[-1]:04d}"
    # Round 1's critic never saw round 2's programs (a later actor's samples on other training problems): a second
    # held-out set with ~3x the mixed problems of the test split's 90, where a within-problem AUC is less noisy.
    later = run / "buffer" / "round_0002"
    later = later if not args.binary and later.is_dir() else None
    work = run / "critic_quality"
    print(f"held out: {heldout}{f' and {later}' if later else ''}; training programs: {train_dir}", flush=True)

    rows, wall0 = [], None
    for name in names:
        overrides, n_classes, on = table[name]
        cfg = load_config(run / "config.yaml", ["ray_address=local", *args.overrides, *(overrides or [])])
        out = work / ("binary" if args.binary else "round_1") / name
        start = time.perf_counter()
        steps = 0
        if overrides is None:
            critic = run / "models" / f"critic_round_{last}"
        elif args.reuse and (out / "critic_config.json").is_file():
            critic = out
        else:
            init = run / "models" / ("actor_sft" if on == "actor" else f"critic_round_{last}")
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(work / "ray_train" / name, ignore_errors=True)
            info = stages.train_critic(cfg, run / "buffer", rounds, run / "data" / "ground_truth", init, True,
                                       out, work / "ray_train", name, n_classes=n_classes)
            steps, critic = info["steps"], out
        held = stages.score_quality(cfg, critic, heldout, n_classes)
        trained = stages.score_quality(cfg, critic, train_dir, n_classes)
        wall = time.perf_counter() - start  # training + the two scorings every variant has
        wall0 = wall0 or wall
        rows.append({"variant": name, "classes": n_classes, "steps": steps, "wall_s": round(wall, 1),
                     "heldout": held, "train": trained})
        if later:
            rows[-1]["later_round"] = stages.score_quality(cfg, critic, later, n_classes)
        rows[-1]["sensitivity"] = program_sensitivity(critic, later or heldout)
        print(json.dumps(rows[-1]), flush=True)

    print("\nvariant                        classes  steps  wall s (x first)  held out: acc (majority) AUC all/within"
          f"  round {rounds[-1]} samples: the same" + ("  round 2 samples (held out): the same" if later else "")
          + "  P(passed) std within/between problems, change on reversed programs")
    for r in rows:
        sens = r["sensitivity"]
        print(f"{r['variant']:<30} {r['classes']:>7}  {r['steps']:>5}  {r['wall_s']:>6.1f} ({r['wall_s'] / wall0:4.2f}x)"
              f"     {fmt(r['heldout']):<32} {fmt(r['train']):<32} {fmt(r.get('later_round')) if later else ''}"
              f"  {sens['within_std']:.3f}/{sens['between_std']:.3f} {sens['reversed_change']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
