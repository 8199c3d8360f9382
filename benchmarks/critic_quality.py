"""Can the critic rank? Critics retrained on a finished demo run's replay buffer, each with one setting changed.

    python benchmarks/critic_quality.py --run outputs/tiny                      # round 1's critic, every variant
    python benchmarks/critic_quality.py --run outputs/tiny --variants paper,ranker --rounds 2 --loglik
    python benchmarks/critic_quality.py --run outputs/tiny --variants paper,epochs2 critic.lr=0.0005
    python benchmarks/critic_quality.py --run outputs/tiny --binary             # the inference critic's options

Round mode trains the pipeline's critics again, as its staged loop does: round 1's (a new head on the SFT actor,
round 1's buffer plus the reference programs, and their mutants when the variant asks for them) and, with
``--rounds 2``, round 2's (round 1's critic trained on on rounds 1-2), through ``stages.train_critic`` on one set
of persistent roles. Each round's critic is measured on programs it never trained on: the previous actor's samples
on the test split (``eval/sft/results`` for round 1, as the pipeline's ``round_1/score`` does;
``eval/round_1/results`` for round 2) and the next round's programs (round 2's buffer for round 1's critic, a later
actor's samples on other training problems, with more mixed problems than the test split; the last actor's test
samples ``eval/round_2/results`` for round 2's); and on its own round's samples, the programs RL then reads.
``--binary`` mode trains the binary inference critic (stage ``critic_binary``: every round's buffer) and measures it
on the last actor's test-split samples (``eval/round_<last>/results``), the programs critic sampling will rank.

For each variant and round: optimizer steps, wall time of training + scoring and its ratio to the first row's,
then accuracy (next to the majority-class rate) and the AUC of the "passed" probability over all programs / within
problems (with the number of problems that have both outcomes) on each set (``coderl_ray.rl.scoring
.critic_quality``); whether the critic reads the program at all (:func:`program_sensitivity`); and what RL gets
from it (:func:`token_weights`, on the round's samples that RL trains on). ``--loglik`` adds, per round, the
reference ranking no critic has to learn: the sum of the actor's own token log-probabilities of each program.
Extra ``key=value`` arguments override every variant's config. Models go to ``--out`` (default
``<run>/critic_quality/``); the run itself is not changed (mutants are written under ``<out>/data``).
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

# The critic as the paper trains it (the defaults before 2026-12-05): the head reads the decoder states, the whole
# critic trains on the cross-entropy of its max-pooled logits, on sampled and reference programs only.
PAPER = ["critic.read_logprobs=false", "critic.train_backbone=true", "critic.rank_weight=0",
         "critic.mutants_per_program=0", "critic.pooling=tokens"]
# The critic that ranks (docs/benchmarks.md, "A critic that ranks programs"): the head also reads its tokens'
# log-probabilities, only the head trains, a ranking term over each problem's (passing, failing) pairs, 4 mutants
# of every reference program.
RANKER = ["critic.read_logprobs=true", "critic.train_backbone=false", "critic.rank_weight=1",
          "critic.mutants_per_program=4", "critic.pooling=tokens"]

# name -> (config overrides, classes of the head, what the new head sits on: "actor" = the SFT actor for round 1,
# "critic" = the run's last critic for --binary).
ROUNDS = {
    "paper": (PAPER, 4, "actor"),
    "epochs2": (PAPER + ["critic.epochs=2"], 4, "actor"),
    "no_ground_truth": (PAPER + ["critic.include_ground_truth=false"], 4, "actor"),
    "unscaled": (PAPER + ["critic.scale_head_input=false"], 4, "actor"),
    "unscaled_epochs2": (PAPER + ["critic.scale_head_input=false", "critic.epochs=2"], 4, "actor"),
    "binary": (PAPER, 2, "actor"),
    "binary_epochs2": (PAPER + ["critic.epochs=2"], 2, "actor"),
    "binary_no_ground_truth": (PAPER + ["critic.include_ground_truth=false"], 2, "actor"),
    # ~1/4 of the rows (only ~55 of 200 problems are mixed): 2 epochs take about as many steps as "paper"'s half.
    "mixed_problems_epochs2": (PAPER + ["critic.data=mixed_problems", "critic.epochs=2"], 4, "actor"),
    "binary_mixed_problems_epochs2": (PAPER + ["critic.data=mixed_problems", "critic.epochs=2"], 2, "actor"),
    "mixed_problems_epochs8": (PAPER + ["critic.data=mixed_problems", "critic.epochs=8"], 4, "actor"),
    # The whole backbone trains at critic.lr: 1e-3 (the demo's) may overwrite what the SFT actor knows.
    "lr1e-4": (PAPER + ["critic.lr=0.0001"], 4, "actor"),
    "binary_lr1e-4": (PAPER + ["critic.lr=0.0001"], 2, "actor"),
    "binary_mixed_problems_epochs2_lr1e-4": (PAPER + ["critic.data=mixed_problems", "critic.epochs=2",
                                                      "critic.lr=0.0001"], 2, "actor"),
    # The ranking critic and one ablation per ingredient.
    "ranker": (RANKER, 4, "actor"),
    "ranker_no_logprobs": (RANKER + ["critic.read_logprobs=false"], 4, "actor"),
    "ranker_no_rank": (RANKER + ["critic.rank_weight=0"], 4, "actor"),
    "ranker_no_mutants": (RANKER + ["critic.mutants_per_program=0"], 4, "actor"),
    "ranker_train_backbone": (RANKER + ["critic.train_backbone=true"], 4, "actor"),
    "ranker_binary": (RANKER, 2, "actor"),
}
BINARY = {
    "last_critic_4class": (None, 4, "critic"),  # no training: the run's last 4-class critic, as it is
    "from_critic": (PAPER, 2, "critic"),
    "from_critic_epochs1": (PAPER + ["critic.epochs=1"], 2, "critic"),
    "from_critic_epochs2": (PAPER + ["critic.epochs=2"], 2, "critic"),
    "from_critic_no_ground_truth": (PAPER + ["critic.include_ground_truth=false"], 2, "critic"),
    "from_actor": (PAPER, 2, "actor"),
    "from_critic_mixed_problems_epochs2": (PAPER + ["critic.data=mixed_problems", "critic.epochs=2"], 2, "critic"),
}


def fmt(q: dict | None) -> str:
    if not q:
        return "n/a"
    num = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    acc = f"{100 * q['accuracy']:.1f}% ({100 * q['majority_rate']:.1f}%) " if "accuracy" in q else ""
    return f"{acc}{num(q['auc'])}/{num(q.get('auc_within_problems'))} ({q.get('mixed_problems', 0)})"


def program_sensitivity(scored: list[dict], reversed_probs: list[float]) -> dict:
    """Does the critic read the program at all? The mean standard deviation of P(passed) among one problem's
    programs, that of the problems' mean P(passed), and the mean change of P(passed) when each program's tokens are
    reversed (a program-reading critic moves a lot). ``scored``: rows with ``problem_id`` and ``critic_pass_prob``;
    ``reversed_probs``: the same rows' P(passed) with their tokens reversed."""
    import numpy as np

    real = np.array([r["critic_pass_prob"] for r in scored])
    groups: dict[str, list[float]] = {}
    for r, prob in zip(scored, real):
        groups.setdefault(r["problem_id"], []).append(prob)
    return {"within_std": float(np.mean([np.std(v) for v in groups.values() if len(v) > 1])),
            "between_std": float(np.std([np.mean(v) for v in groups.values()])),
            "reversed_change": float(np.mean(np.abs(real - np.array(reversed_probs))))}


def token_weights(scored: list[dict], n_classes: int) -> dict:
    """What RL reads from the critic on the rows it trains on (sampled, return != 0): each token's weight
    w_t = softmax(critic logits_t)[class of the program's outcome] (q_t = w_t x the return, paper Eq. 7).
    ``mean``: the mean weight; ``within_std``: the mean over programs of the standard deviation of w_t across the
    program's tokens (0 = the weight is the same on every token: no token-level credit); ``range``: the mean over
    programs of max_t w_t - min_t w_t."""
    import numpy as np

    from coderl_ray.records import critic_class

    means, stds, ranges = [], [], []
    for r in scored:
        if r.get("is_greedy") or not r.get("relative_return"):
            continue
        logits = np.asarray(r["critic_logits"], dtype=np.float64).reshape(-1, n_classes)
        if not len(logits):
            continue
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        w = (p / p.sum(axis=1, keepdims=True))[:, critic_class(r["outcome"], n_classes)]
        means.append(w.mean())
        stds.append(w.std())
        ranges.append(w.max() - w.min())
    if not means:
        return {"programs": 0}
    return {"programs": len(means), "mean": float(np.mean(means)), "within_std": float(np.mean(stds)),
            "range": float(np.mean(ranges))}


def actor_loglik(actor: Path, programs_dir: Path) -> dict:
    """The ranking no critic has to learn: AUC (all / within problems) of the sum of ``actor``'s token
    log-probabilities of each program (computed here, on this process's CPU threads)."""
    import pyarrow.parquet as pq
    import torch

    from coderl_ray.models.actor import load_actor
    from coderl_ray.models.batching import program_batch, token_logprobs
    from coderl_ray.records import Outcome
    from coderl_ray.rl.scoring import roc_auc

    model = load_actor(actor).eval()
    rows = [r for r in pq.read_table(programs_dir, columns=["problem_id", "prompt_ids", "token_ids", "outcome"])
            .to_pylist() if Outcome(r["outcome"]).is_label]
    scores: list[float] = []
    with torch.no_grad():
        for i in range(0, len(rows), 64):
            batch = program_batch(rows[i:i + 64], model.config.pad_token_id)
            scores += token_logprobs(model, batch).sum(dim=1).tolist()
    passed = [r["outcome"] == "passed" for r in rows]
    groups: dict[str, tuple[list, list]] = {}
    for r, s, ok in zip(rows, scores, passed):
        groups.setdefault(r["problem_id"], ([], []))[0].append(s)
        groups[r["problem_id"]][1].append(ok)
    within = [a for a in (roc_auc(*g) for g in groups.values()) if a is not None]
    return {"auc": roc_auc(scores, passed), "auc_within_problems": sum(within) / len(within) if within else None,
            "mixed_problems": len(within)}


def heldout_sets(run: Path, round_: int, last: int, binary: bool) -> list[tuple[str, Path]]:
    """The programs a critic of ``round_`` never trained on (see the module docstring), that exist in ``run``."""
    if binary:
        sets = [(f"eval/round_{last}", run / "eval" / f"round_{last}" / "results")]
    else:
        previous = "sft" if round_ == 1 else f"round_{round_ - 1}"
        later = run / "buffer" / f"round_{round_ + 1:04d}"
        sets = [(f"eval/{previous}", run / "eval" / previous / "results"),
                (f"buffer/round_{round_ + 1}", later) if later.is_dir()
                else (f"eval/round_{round_}", run / "eval" / f"round_{round_}" / "results")]
    return [(name, path) for name, path in sets if path.is_dir()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="output_dir of a finished (or round-1) demo run")
    parser.add_argument("--binary", action="store_true", help="the inference critic's options (after the last round)")
    parser.add_argument("--rounds", type=int, default=1, help="round mode: train the critics of rounds 1..N")
    parser.add_argument("--variants", default="", help="comma-separated subset of the variants (default: all)")
    parser.add_argument("--loglik", action="store_true", help="also rank by the actor's own log-likelihood")
    parser.add_argument("--reuse", action="store_true",
                        help="score the critics an earlier run of this script trained instead of training them again")
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the models, the mutants and Ray Train's files (default: <run>/critic_quality)"
                             "; the run itself is only read")
    parser.add_argument("overrides", nargs="*", help="config overrides for every variant, e.g. critic.lr=0.0005")
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from coderl_ray.data.problems import read_problems
    from coderl_ray.ray_runtime import init_ray
    from coderl_ray.roles.flows import score_rows
    from coderl_ray.roles.setup import Roles
    from coderl_ray.roles.workers import ModelRef
    from coderl_ray.rl.scoring import critic_quality

    run = args.run.resolve()
    base = load_config(run / "config.yaml", ["ray_address=local", *args.overrides])
    init_ray(base.ray_address, base.sandbox.resource)
    table = BINARY if args.binary else ROUNDS
    names = [v for v in args.variants.split(",") if v] or list(table)
    last = base.rl.rounds
    rounds = [last] if args.binary else list(range(1, args.rounds + 1))
    work = args.out.resolve() if args.out else run / "critic_quality"
    # The ground truth and the mutants the variants read, outside the run's own folder.
    gt = work / "data" / "ground_truth"
    if not gt.is_dir():
        shutil.copytree(run / "data" / "ground_truth", gt)
    train_problems = read_problems(run / "data" / "train.jsonl")

    def scored_rows(critic_ref, programs: Path, roles, columns=None) -> list[dict]:
        table = pq.read_table(programs, columns=columns)
        # An online run's buffer holds the run's own critic's scores: replaced by this critic's.
        table = table.drop_columns([c for c in table.column_names if c.startswith("critic_")])
        return score_rows(roles, table, critic_ref, base.rollout.score_batch_size).to_pylist()

    rows, wall0 = [], None
    with Roles(base, work / "ray_train") as roles:
        for name in names:
            overrides, n_classes, on = table[name]
            cfg = load_config(run / "config.yaml", ["ray_address=local", *args.overrides, *(overrides or [])])
            m = cfg.critic.mutants_per_program
            if m > 0 and not stages.critic_mutants_dir(gt, m).is_dir():
                info = stages.critic_mutants(cfg, train_problems, gt, run / "models" / "actor_init", roles=roles)
                print(f"mutants: {json.dumps(info)}", flush=True)
            previous = None
            for r in rounds:
                out = work / ("binary" if args.binary else f"round_{r}") / name
                start = time.perf_counter()
                steps = 0
                if overrides is None:
                    critic = run / "models" / f"critic_round_{last}"
                elif args.reuse and (out / "critic_config.json").is_file():
                    critic = out
                else:
                    shutil.rmtree(out, ignore_errors=True)
                    if args.binary:
                        init, new = run / "models" / ("actor_sft" if on == "actor" else f"critic_round_{last}"), True
                    else:
                        init, new = (previous, False) if previous else (run / "models" / "actor_sft", True)
                    info = stages.train_critic(cfg, run / "buffer", list(range(1, r + 1)), gt, init, new, out,
                                               work / "ray_train", f"{name}_round_{r}", n_classes=n_classes,
                                               roles=roles)
                    steps, critic = info["steps"], out
                previous = critic
                ref = ModelRef.of_folder("critic", critic)
                row = {"variant": name, "round": r, "classes": n_classes, "steps": steps}
                for set_name, path in heldout_sets(run, r, last, args.binary):
                    row[set_name] = critic_quality(scored_rows(ref, path, roles), n_classes)
                own = run / "buffer" / f"round_{r:04d}"
                own_rows = scored_rows(ref, own, roles)
                row[f"buffer/round_{r} (trained on)"] = critic_quality(own_rows, n_classes)
                row["wall_s"] = round(time.perf_counter() - start, 1)  # training + the scorings every row has
                row["token_weights"] = token_weights(own_rows, n_classes)
                sens_dir = heldout_sets(run, r, last, args.binary)[-1][1]
                sens = scored_rows(ref, sens_dir, roles, ["problem_id", "prompt_ids", "token_ids", "outcome"])[:400]
                flipped = pq.read_table(sens_dir, columns=["problem_id", "prompt_ids", "token_ids"]).slice(0, 400)
                tokens = flipped.column("token_ids")
                flipped = flipped.set_column(2, "token_ids", pa.array([list(reversed(t)) for t in tokens.to_pylist()],
                                                                      type=tokens.type))
                rev = score_rows(roles, flipped, ref, base.rollout.score_batch_size).column("critic_pass_prob")
                row["sensitivity"] = program_sensitivity(sens, rev.to_pylist())
                wall0 = wall0 or row["wall_s"]
                rows.append(row)
                print(json.dumps(row), flush=True)

    if args.loglik and not args.binary:
        for r in rounds:
            actor = run / "models" / ("actor_sft" if r == 1 else f"actor_round_{r - 1}")
            row = {"variant": f"actor log-likelihood ({actor.name})", "round": r, "classes": "-", "steps": 0,
                   "wall_s": 0.0}
            for set_name, path in heldout_sets(run, r, last, False):
                row[set_name] = actor_loglik(actor, path)
            row[f"buffer/round_{r} (trained on)"] = actor_loglik(actor, run / "buffer" / f"round_{r:04d}")
            rows.append(row)
            print(json.dumps(row), flush=True)

    sets = list(dict.fromkeys(k for row in rows for k in row if "/" in k))
    print("\nvariant | round | classes | steps | wall s (x first) | "
          + " | ".join(f"{s}: acc (majority) AUC all/within (mixed)" for s in sets)
          + " | P(passed) std within/between, reversed | token weight mean, std across tokens, range")
    for row in rows:
        sens, tw = row.get("sensitivity"), row.get("token_weights") or {}
        print(f"{row['variant']} | {row['round']} | {row['classes']} | {row['steps']} | "
              f"{row['wall_s']:.1f} ({row['wall_s'] / wall0 if wall0 else 0:.2f}x) | "
              + " | ".join(fmt(row.get(s)) for s in sets)
              + (f" | {sens['within_std']:.3f}/{sens['between_std']:.3f}, {sens['reversed_change']:.3f}" if sens
                 else " | -")
              + (f" | {tw['mean']:.3f}, {tw['within_std']:.3f}, {tw['range']:.3f}" if tw.get("programs") else " | -"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
