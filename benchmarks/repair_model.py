"""Does the repair model repair? Repaired-program pass rate on held-out failures, for the ways to get one.

    python benchmarks/repair_model.py --run outputs/tiny
    python benchmarks/repair_model.py --run outputs/tiny --arms separate,joint repair.epochs=4

Held-out failures: up to ``--per-problem`` distinct failed programs per test problem (a seeded draw) among the last
actor's evaluation samples (``eval/round_<last>/results``): problems and programs no model here trained on. For
each failure every arm samples ``--samples`` programs (temperature and top-p of ``eval``), which run on the
problem's hidden tests. Arms, at that equal budget:

* ``resample``: the last actor on the plain prompt: what a fresh sample gives without the failure (the baseline);
* ``actor``: the last actor reading the repair prompt (an untrained repair model);
* ``separate``: the pipeline's repair model, ``stages.train_repair`` from the last actor (the default);
* ``joint``: the last actor fine-tuned on the repair pairs and the reference programs together (one model for both
  tasks), for as many passes over the pairs; its pass@k on the plain test split is reported too, to show what the
  second task costs the first.

Prints per arm: programs generated, share that pass, share of failures with at least one passing repair, and wall
time (training + sampling + execution) with its ratio to the first arm's. Extra ``key=value`` arguments override the
run's config. Models and results go to ``<run>/repair_model/``; the run itself is not changed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray import stages  # noqa: E402
from coderl_ray.config import load_config  # noqa: E402
from coderl_ray.data.problems import read_problems  # noqa: E402
from coderl_ray.data.prompts import build_prompt, build_repair_prompt  # noqa: E402
from coderl_ray.inference.repair_data import REPAIRABLE_OUTCOMES  # noqa: E402

ARMS = ("resample", "actor", "separate", "joint")


def heldout_failures(results: list[dict], per_problem: int, seed: int) -> list[dict]:
    by_problem: dict[str, dict[str, dict]] = {}
    for r in sorted(results, key=lambda r: r["sample_id"]):
        if r["outcome"] in REPAIRABLE_OUTCOMES:
            by_problem.setdefault(r["problem_id"], {}).setdefault(r["code"].strip(), r)
    out = []
    for pid in sorted(by_problem):
        rows = list(by_problem[pid].values())
        out += random.Random(f"{seed}/{pid}").sample(rows, min(per_problem, len(rows)))
    return out


def sample(model_dir: Path, prompts: list[str], n: int, cfg, seed: int, batch: int = 16) -> list[list[str]]:
    """``n`` programs per prompt from the model at ``model_dir`` (Hugging Face ``generate``, the rollout's sampling
    settings), prompts encoded like the actor's (cut from the left)."""
    import torch

    from coderl_ray.models.actor import is_seq2seq, load_actor
    from coderl_ray.models.batching import encode_prompt
    from coderl_ray.models.tokenizer import load_tokenizer

    model, tok = load_actor(model_dir).eval(), load_tokenizer(model_dir)
    seq2seq, pad, eos = is_seq2seq(model), tok.pad_token_id, tok.eos_token_id
    torch.manual_seed(seed)
    out = []
    for i in range(0, len(prompts), batch):
        ids = [encode_prompt(tok, p, cfg.model.max_source_tokens) for p in prompts[i: i + batch]]
        s = max(map(len, ids))
        enc = {"input_ids": torch.tensor([[pad] * (s - len(x)) + x for x in ids]),
               "attention_mask": torch.tensor([[0] * (s - len(x)) + [1] * len(x) for x in ids])}
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=cfg.eval.temperature, top_p=cfg.eval.top_p,
                                 top_k=0, max_new_tokens=cfg.rollout.max_new_tokens, num_return_sequences=n,
                                 pad_token_id=pad, eos_token_id=eos)
        gen = gen if seq2seq else gen[:, s:]
        texts = tok.batch_decode(gen, skip_special_tokens=True)
        out += [texts[k * n:(k + 1) * n] for k in range(len(ids))]
    return out


def run_arm(arm: str, args, cfg, run: Path, work: Path, failures: list[dict], test: dict, train: list) -> dict:
    import ray

    from coderl_ray.execution import execute_samples

    actor = run / "models" / f"actor_round_{cfg.rl.rounds}"
    rounds = list(range(1, cfg.rl.rounds + 1))
    info: dict = {"arm": arm}
    start = time.perf_counter()
    if arm in ("resample", "actor"):
        model = actor
    elif arm == "separate":
        model = work / "separate"
        shutil.rmtree(work / "ray_train" / "separate", ignore_errors=True)
        info["train"] = stages.train_repair(cfg, train, run / "buffer", rounds, actor, model, work / "ray_train",
                                            "separate")
    else:
        model = work / "joint"
        info["train"] = train_joint(cfg, train, run, rounds, actor, model, work)
    info["train_s"] = round(time.perf_counter() - start, 1)
    prompts = [build_prompt(test[f["problem_id"]]) if arm == "resample" else
               build_repair_prompt(test[f["problem_id"]], f["code"], f["outcome"], f.get("error") or "")
               for f in failures]
    programs = sample(model, prompts, args.samples, cfg, cfg.seed + 11)
    samples = [{"problem_id": f["problem_id"], "sample_id": f"{f['sample_id']}>{k}", "code": code}
               for f, codes in zip(failures, programs) for k, code in enumerate(codes)]
    results = execute_samples(ray.data.from_items(samples), list(test.values()), cfg.sandbox).take_all()
    passed = {r["sample_id"] for r in results if r["outcome"] == "passed"}
    fixed = sum(any(f"{f['sample_id']}>{k}" in passed for k in range(args.samples)) for f in failures)
    info.update(programs=len(samples), pass_rate=len(passed) / len(samples), fixed=fixed / len(failures),
                wall_s=round(time.perf_counter() - start, 1))
    if arm == "joint":
        info["joint_plain_eval"] = stages.evaluate(cfg, list(test.values()), model, work / "joint_eval", "joint")["all"]
    return info


def train_joint(cfg, train: list, run: Path, rounds: list[int], actor: Path, out: Path, work: Path) -> dict:
    """The actor fine-tuned on repair pairs and reference programs mixed: one model for both tasks."""
    import ray

    from coderl_ray.inference.repair_data import repair_pairs, repair_rows
    from coderl_ray.models.tokenizer import load_tokenizer
    from coderl_ray.rl.replay_buffer import read_rounds
    from coderl_ray.train.loop import LoopConfig, fit, load_trained, train_options

    rc = cfg.repair
    buffer = read_rounds(run / "buffer", rounds).select_columns(["problem_id", "sample_id", "code", "outcome",
                                                                  "error"]).take_all()
    pairs = repair_pairs(train, buffer, rc.max_pairs_per_problem, cfg.seed)
    rows = repair_rows(pairs, train, load_tokenizer(actor), cfg.model.max_source_tokens, cfg.model.max_target_tokens)
    cols = ["problem_id", "sample_id", "prompt_ids", "token_ids", "outcome"]
    gt = ray.data.read_parquet(str(run / "data" / "ground_truth")).select_columns(cols)
    n_gt = gt.count()
    ds = ray.data.from_items(rows).select_columns(cols).union(gt)
    # As many passes over the pairs as the separate model makes; the reference programs ride along.
    steps = max(1, round(rc.epochs * (len(rows) + n_gt) / rc.batch_size))
    loop = LoopConfig(objective="sft", init_path=str(actor), steps=steps, batch_size=rc.batch_size, lr=rc.lr,
                      warmup_ratio=rc.warmup_ratio, seed=cfg.seed, report_every=25, **train_options(cfg.train))
    shutil.rmtree(work / "ray_train" / "joint", ignore_errors=True)
    ckpt = fit(loop, {"train": ds.random_shuffle(seed=cfg.seed)}, num_workers=cfg.train.num_workers,
               use_gpu=cfg.train.use_gpu, cpus_per_worker=cfg.train.cpus_per_worker,
               storage_path=work / "ray_train", name="joint")
    load_trained(ckpt, out)
    return {"steps": steps, "pairs": len(rows), "ground_truth_rows": n_gt}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="output_dir of a finished demo run")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    parser.add_argument("--per-problem", type=int, default=2, help="held-out failures per test problem")
    parser.add_argument("--samples", type=int, default=4, help="programs sampled per failure and arm")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. repair.epochs=4")
    args = parser.parse_args()

    import pyarrow.parquet as pq

    from coderl_ray.ray_runtime import init_ray

    run = args.run.resolve()
    cfg = load_config(run / "config.yaml", ["ray_address=local", *args.overrides])
    init_ray(cfg.ray_address, cfg.sandbox.resource)
    test = {p["problem_id"]: p for p in read_problems(run / "data" / "test.jsonl")}
    train = read_problems(run / "data" / "train.jsonl")
    results = pq.read_table(run / "eval" / f"round_{cfg.rl.rounds}" / "results",
                            columns=["problem_id", "sample_id", "code", "outcome", "error"]).to_pylist()
    failures = heldout_failures(results, args.per_problem, cfg.seed)
    print(f"{len(failures)} held-out failures from {len({f['problem_id'] for f in failures})} test problems",
          flush=True)
    work = run / "repair_model"
    rows = []
    for arm in args.arms.split(","):
        rows.append(run_arm(arm, args, cfg, run, work, failures, test, train))
        print(json.dumps(rows[-1], default=str), flush=True)
    first = rows[0]["wall_s"]
    print(f"\n{'arm':<10} programs  pass rate  failures fixed (>=1 of {args.samples})  wall s (x first)")
    for r in rows:
        print(f"{r['arm']:<10} {r['programs']:>8}  {100 * r['pass_rate']:8.1f}%  {100 * r['fixed']:24.1f}%  "
              f"{r['wall_s']:6.1f} ({r['wall_s'] / first:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
