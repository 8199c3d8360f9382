"""The pipeline's stages: each wires pure cores (sandbox, generator, objectives) to Ray Data and Ray Train.

Every stage reads its inputs from folders and writes its outputs to a folder, so the driver
(:mod:`coderl_ray.pipeline`) can checkpoint after each one and a rerun can skip what is finished.
Resources are declared here, where stages are wired, never in decorators.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from coderl_ray.config import DataConfig, PipelineConfig
from coderl_ray.data.parquet import read_parquet
from coderl_ray.data.problems import read_problems, write_jsonl
from coderl_ray.eval.metrics import summarize
from coderl_ray.eval.report import write_report
from coderl_ray.roles.setup import Roles, roles_for
from coderl_ray.roles.workers import ModelRef

# --- data and models -------------------------------------------------------------------------------------------


def load_problems(cfg: DataConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test) problems: the user's canonical files, or the embedded suite."""
    if cfg.train_path:
        train, test = read_problems(cfg.train_path), read_problems(cfg.test_path)
    else:
        from coderl_ray.data.suite import generate_suite

        train, test = generate_suite(cfg.suite_seed, cfg.suite_train_problems, cfg.suite_test_problems,
                                     cfg.suite_unseen_wording)
    # Problems without a reference solution stay: RL learns from their tests.
    if cfg.max_train_problems and len(train) > cfg.max_train_problems:
        train = random.Random(cfg.suite_seed).sample(train, cfg.max_train_problems)
    if cfg.reference_problems:
        train = keep_references(train, cfg.reference_problems, cfg.suite_seed)
    if cfg.max_test_problems and len(test) > cfg.max_test_problems:
        test = random.Random(cfg.suite_seed + 1).sample(test, cfg.max_test_problems)
    overlap = {p["problem_id"] for p in train} & {p["problem_id"] for p in test}
    if overlap:
        raise ValueError(f"{len(overlap)} problem ids are in both the train and test data, e.g. {sorted(overlap)[0]}")
    return train, test


def keep_references(train: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``train`` with reference solutions on ``n`` seeded problems only; the others become RL-only (tests kept)."""
    with_refs = [i for i, p in enumerate(train) if p.get("solutions")]
    if len(with_refs) < n:
        raise ValueError(f"data.reference_problems={n}, but only {len(with_refs)} training problems have a reference "
                         "solution")
    # A stream of its own: an integer seed here would repeat the rollout's per-round problem draws.
    keep = set(random.Random(f"reference-problems/{seed}").sample(with_refs, n))
    return [p if i in keep else {**p, "solutions": []} for i, p in enumerate(train)]


def write_problems(train: list[dict], test: list[dict], out: Path) -> None:
    write_jsonl(train, out / "train.jsonl")
    write_jsonl(test, out / "test.jsonl")


def prepare_actor(cfg: PipelineConfig, train: list[dict[str, Any]], out: Path) -> Path:
    """The initial actor folder (model + tokenizer): a tiny random model, or a pretrained one copied locally."""
    from coderl_ray.data.prompts import build_prompt
    from coderl_ray.data.reindent import reindent
    from coderl_ray.models.actor import build_tiny_actor, load_actor
    from coderl_ray.models.tokenizer import load_tokenizer, train_tokenizer

    m = cfg.model
    if m.name_or_path == "tiny":
        if m.tokenizer:
            tokenizer = load_tokenizer(m.tokenizer)
        else:
            # The references as SFT will read them (data.reindent), so their indentation has tokens.
            texts = [build_prompt(p) for p in train] + [reindent(s, cfg.data.reindent) for p in train
                                                        for s in p.get("solutions") or []]
            tokenizer = train_tokenizer(texts, out / "tokenizer", vocab_size=m.tokenizer_vocab_size)
        model = build_tiny_actor(m, tokenizer, seed=cfg.seed)
    else:
        tokenizer = load_tokenizer(m.tokenizer or m.name_or_path)
        model = load_actor(m.name_or_path, dtype="auto")  # a copy in the stored dtype; training loads it in fp32
    dest = out / "actor_init"
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def ground_truth_dataset(train: list[dict[str, Any]], actor_dir: Path, cfg: PipelineConfig, out: Path) -> Path:
    """Tokenised reference programs, the SFT data and the critic's "passed" examples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from coderl_ray.models.tokenizer import load_tokenizer
    from coderl_ray.rl.replay_buffer import ground_truth_rows

    rows = ground_truth_rows(train, load_tokenizer(actor_dir), cfg.model.max_source_tokens,
                             cfg.model.max_target_tokens, reindent=cfg.data.reindent)
    if not rows:
        raise ValueError("no training problem has a reference solution; SFT needs at least one")
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / "part-0.parquet")
    return out


# --- training (Ray Train) --------------------------------------------------------------------------------------


def _steps(epochs: float, rows: int, batch_size: int) -> int:
    return max(1, round(epochs * rows / batch_size))


def train_sft(cfg: PipelineConfig, gt_dir: Path, actor_in: Path, actor_out: Path, storage: Path, *,
              roles: Roles | None = None, version: int = 0) -> dict:
    """SFT warm-up on the reference programs; the actor is saved to ``actor_out`` and published as ``version``."""
    from coderl_ray.train.loop import LoopConfig, train_options

    ds = read_parquet(str(gt_dir))
    n = ds.count()
    loop = LoopConfig(objective="sft", init_path=str(actor_in), steps=_steps(cfg.sft.epochs, n, cfg.sft.batch_size),
                      batch_size=cfg.sft.batch_size, lr=cfg.sft.lr, warmup_ratio=cfg.sft.warmup_ratio,
                      weight_decay=cfg.sft.weight_decay, seed=cfg.seed, report_every=25,
                      **train_options(cfg.train))
    done = _train(cfg, roles, "actor", "actor", loop, {"train": ds}, actor_out, storage, "sft", ("actor", version))
    return {"steps": loop.steps, "rows": n, "train_s": done["train_s"]}


def _named(loop, storage: Path, name: str):
    """``loop`` as run ``name``: its metrics under ``<storage>/<name>/tensorboard``, a bar only in a terminal."""
    import sys
    from dataclasses import replace

    log_dir = str(Path(storage).resolve() / name / "tensorboard") if loop.log_dir == "auto" else loop.log_dir
    return replace(loop, name=name, log_dir=log_dir, progress_bar=loop.progress_bar and sys.stderr.isatty())


def _train(cfg: PipelineConfig, roles: Roles | None, trainer: str, slot: str, loop, datasets: dict, out: Path,
           storage: Path, name: str, publish: tuple[str, int] | None = None) -> dict:
    """A whole training run of ``loop``, saved to ``out``: on the run's persistent trainer ``trainer`` (its ``slot``,
    loaded from ``loop.init_path`` unless it holds that model already; optionally published), or, for a stage run
    on its own (``roles`` None: a one-stage command), a Ray Train ``fit()`` of its own, which checkpoints every
    ``train.checkpoint_every`` steps and resumes a rerun from the last checkpoint."""
    import time
    from dataclasses import asdict

    from coderl_ray.train.loop import fit, load_trained

    loop = _named(loop, storage, name)
    if roles is None:
        start = time.perf_counter()
        load_trained(fit(loop, datasets, **_scaling(cfg), storage_path=storage, name=name), out)
        return {"train_s": round(time.perf_counter() - start, 2)}
    roles.ensure_slot(trainer, slot, loop, loop.init_path)
    result = roles.trainer(trainer).run({
        "op": "train", "slot": slot, "loop": asdict(loop), "data": datasets, "save": str(out),
        "publish": {"name": publish[0], "version": publish[1]} if publish else None})
    roles.saved(trainer, slot, out)
    return result


def mixed_problems(rows) -> set[str]:
    """The problems among ``rows`` (``problem_id``, ``outcome``) with both a passing and a failing program."""
    from coderl_ray.records import Outcome

    seen: dict[str, set[bool]] = {}
    for r in rows:
        if Outcome(r["outcome"]).is_label:
            seen.setdefault(r["problem_id"], set()).add(r["outcome"] == Outcome.PASSED.value)
    return {pid for pid, kinds in seen.items() if len(kinds) == 2}


def critic_mutants_dir(gt_dir: Path, per_program: int) -> Path:
    """Where :func:`critic_mutants` writes ``per_program`` mutants of each reference: ``data/critic_mutants_<n>``
    next to ``data/ground_truth`` (named by the count, so a run with another count never reads stale ones)."""
    return Path(gt_dir).parent / f"critic_mutants_{per_program}"


def critic_mutants(cfg: PipelineConfig, train: list[dict[str, Any]], gt_dir: Path, tokenizer_dir: Path, *,
                   roles: Roles | None = None) -> dict:
    """Hard negatives for the critic (``critic.mutants_per_program``): mutants of every reference program, one
    integer literal or operator changed (:mod:`coderl_ray.rl.hard_negatives`), run on their problem's tests by the
    sandbox executors for their labels and written, tokenised like the ground truth, to
    :func:`critic_mutants_dir` (``tokenizer_dir``: an actor folder). Rows whose execution failed for infrastructure
    reasons are dropped (no label)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from coderl_ray.data.reindent import reindent
    from coderl_ray.execution.stage import limits_from_config
    from coderl_ray.models.batching import encode_program
    from coderl_ray.models.tokenizer import load_tokenizer
    from coderl_ray.records import Outcome
    from coderl_ray.rl.hard_negatives import mutant_samples
    from coderl_ray.roles.pool import Hop, Item, Stream

    prompts = {r["problem_id"]: r["prompt_ids"]
               for r in pq.read_table(gt_dir, columns=["problem_id", "prompt_ids"]).to_pylist()}
    # The programs as the ground truth holds them (data.reindent), so a mutant differs from its reference by one
    # token of what the critic reads.
    sources = [{"problem_id": p["problem_id"], "sample_id": f"{p['problem_id']}#gt{k}",
                "code": reindent(code, cfg.data.reindent)}
               for p in train if p["problem_id"] in prompts for k, code in enumerate(p.get("solutions") or [])]
    samples = mutant_samples(sources, cfg.critic.mutants_per_program, cfg.seed)
    if not samples:
        raise ValueError(f"critic.mutants_per_program={cfg.critic.mutants_per_program}: none of the "
                         f"{len(sources)} reference programs has an integer literal or operator to mutate")
    table = pa.Table.from_pylist(samples)
    size = cfg.sandbox.batch_size
    done: dict[int, pa.Table] = {}
    limits = limits_from_config(cfg.sandbox)
    with roles_for(cfg, roles, _storage(cfg)) as r:
        problem_set, problem_ref = r.problems([p for p in train if p["problem_id"] in prompts])
        Stream([Hop(r.executors, "execute", lambda item: (problem_set, problem_ref, limits))],
               lambda item, t: done.__setitem__(item.key, t)).run(
            [Item(i, table.slice(s, size)) for i, s in enumerate(range(0, table.num_rows, size))])
    executed = pa.concat_tables([done[k] for k in sorted(done)]).to_pylist()
    tokenizer = load_tokenizer(tokenizer_dir)
    rows = [{"problem_id": e["problem_id"], "sample_id": e["sample_id"], "prompt_ids": prompts[e["problem_id"]],
             "token_ids": encode_program(tokenizer, e["code"], cfg.model.max_target_tokens), "outcome": e["outcome"]}
            for e in executed if Outcome(e["outcome"]).is_label]
    out = critic_mutants_dir(gt_dir, cfg.critic.mutants_per_program)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / "part-0.parquet")
    return {"references": len(sources), "mutants": len(rows), "outcomes": dict(Counter(r["outcome"] for r in rows))}


def critic_parts(cfg: PipelineConfig, buffer, gt_dir: Path) -> list:
    """The critic's training rows, as one dataset per source: the buffer's programs (the greedy baselines too
    unless ``critic.include_greedy`` is off, as in the original), with ``critic.include_ground_truth`` the reference
    programs as "passed", with ``critic.mutants_per_program`` the executed mutants of :func:`critic_mutants`; with
    ``critic.data: mixed_problems``, of the problems whose programs both pass and fail only."""
    # The ranking term pairs the programs of one problem (and critic_order groups them by it).
    cols = ["prompt_ids", "token_ids", "outcome"] + (["problem_id"] if cfg.critic.rank_weight > 0 else [])
    if not cfg.critic.include_greedy:
        buffer = buffer.filter(lambda r: not r["is_greedy"])
    ground_truth = read_parquet(str(gt_dir)) if cfg.critic.include_ground_truth else None
    mutants = None
    if cfg.critic.mutants_per_program > 0:
        folder = critic_mutants_dir(gt_dir, cfg.critic.mutants_per_program)
        if not folder.is_dir():
            raise FileNotFoundError(f"critic.mutants_per_program={cfg.critic.mutants_per_program} but {folder} does "
                                    "not exist: the stage critic_mutants (stages.critic_mutants) writes it")
        mutants = read_parquet(str(folder))
    if cfg.critic.data == "mixed_problems":
        keep = mixed_problems(buffer.select_columns(["problem_id", "outcome"]).take_all())
        if not keep:
            raise ValueError("critic.data=mixed_problems: no problem of the buffer has both a passing and a failing "
                             "program; use critic.data=all")
        buffer = buffer.filter(lambda r: r["problem_id"] in keep)
        ground_truth = ground_truth.filter(lambda r: r["problem_id"] in keep) if ground_truth is not None else None
        mutants = mutants.filter(lambda r: r["problem_id"] in keep) if mutants is not None else None
    return [part.select_columns(cols) for part in (buffer, ground_truth, mutants) if part is not None]


def critic_dataset(cfg: PipelineConfig, buffer, gt_dir: Path):
    """:func:`critic_parts` as one dataset."""
    return _union(critic_parts(cfg, buffer, gt_dir))


# Batches the critic's loop regroups at a time when it ranks (LoopConfig.group_batches): with the data ordered by
# problem, 8 batches of 32 hold ~25 whole problems of ~10 rows, so each epoch pairs different problems in a batch.
CRITIC_GROUP_BATCHES = 8


def critic_order(cfg: PipelineConfig, ds):
    """The critic's rows in training order: shuffled row by row; or, when it ranks (``critic.rank_weight`` > 0),
    one problem's rows together, the problems in a seeded order (the loop then shuffles whole problems among
    :data:`CRITIC_GROUP_BATCHES` batches, so a batch holds several programs of each of its problems)."""
    if cfg.critic.rank_weight <= 0:
        return ds.random_shuffle(seed=cfg.seed)
    import hashlib

    import pyarrow as pa

    seed = cfg.seed

    def key(batch: pa.Table) -> pa.Table:
        keys = [hashlib.sha1(f"{seed}/{p}".encode()).hexdigest() for p in batch.column("problem_id").to_pylist()]
        return batch.append_column("order_key", pa.array(keys, pa.string()))

    return ds.map_batches(key, batch_format="pyarrow").sort("order_key").drop_columns(["order_key"])


def _union(parts: list):
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def train_critic(cfg: PipelineConfig, buffer_root: Path, rounds: list[int], gt_dir: Path, init: Path,
                 new_critic: bool, critic_out: Path, storage: Path, name: str, n_classes: int | None = None, *,
                 roles: Roles | None = None, version: int | None = None, slot: str = "critic") -> dict:
    """A critic of ``n_classes`` (default ``critic.n_classes``) on the buffer's ``rounds`` (plus the ground truth),
    trained in the critic trainer's ``slot``, saved to ``critic_out`` (and published as ``slot`` at ``version``)."""
    from coderl_ray.rl.replay_buffer import read_rounds
    from coderl_ray.train.loop import LoopConfig, train_options

    parts = critic_parts(cfg, read_rounds(buffer_root, rounds), gt_dir)
    # Counted per part: a plain Parquet read counts from its footers, while counting the union runs it (~5 s on
    # 2 cores for 100 rows, measured in benchmarks/parquet_reads.py).
    n = sum(part.count() for part in parts)
    ds = _union(parts)
    loop = LoopConfig(objective="critic", init_path=str(init), new_critic=new_critic,
                      steps=_steps(cfg.critic.epochs, n, cfg.critic.batch_size), batch_size=cfg.critic.batch_size,
                      lr=cfg.critic.lr, n_classes=n_classes or cfg.critic.n_classes, head_hidden=cfg.critic.head_hidden,
                      critic_pooling=cfg.critic.pooling, critic_pool_length=cfg.model.max_target_tokens,
                      critic_scale_input=cfg.critic.scale_head_input, critic_read_logprobs=cfg.critic.read_logprobs,
                      critic_train_backbone=cfg.critic.train_backbone, critic_rank_weight=cfg.critic.rank_weight,
                      group_batches=CRITIC_GROUP_BATCHES if cfg.critic.rank_weight > 0 else 0,
                      seed=cfg.seed, report_every=25, **train_options(cfg.train))
    done = _train(cfg, roles, "critic", slot, loop, {"train": critic_order(cfg, ds)}, critic_out,
                  storage, name, (slot, version) if version is not None else None)
    return {"steps": loop.steps, "rows": n, "train_s": done["train_s"]}


def train_critic_binary(cfg: PipelineConfig, buffer_root: Path, rounds: list[int], gt_dir: Path, last_critic: Path,
                        critic_out: Path, storage: Path, heldout_dir: Path | None, *,
                        roles: Roles | None = None) -> dict:
    """The binary critic (not passed / passed) that critic sampling reads when ``critic.inference_classes`` is 2:
    the last round's critic's backbone with a new 2-class head, trained on every round's buffer (and the ground
    truth); ``heldout``: its quality on the last evaluation's test programs."""
    info = train_critic(cfg, buffer_root, rounds, gt_dir, last_critic, True, critic_out, storage, "critic_binary",
                        n_classes=2, roles=roles, version=0, slot="critic_binary")
    if heldout_dir is not None and heldout_dir.is_dir():
        info |= _quality_stats("heldout", score_quality(cfg, critic_out, heldout_dir, 2, roles=roles,
                                                        critic=ModelRef("critic_binary", str(critic_out), 0, 0)))
    return info


def train_repair(cfg: PipelineConfig, problems: list[dict[str, Any]], buffer_root: Path, rounds: list[int],
                 init: Path, repair_out: Path, storage: Path, name: str = "repair", *,
                 roles: Roles | None = None) -> dict:
    """The repair model: ``init`` (an actor folder) fine-tuned with cross-entropy on repair pairs from the buffer's
    ``rounds`` (:mod:`coderl_ray.inference.repair_data`), saved like an actor (model + tokenizer)."""
    import ray

    from coderl_ray.inference.repair_data import NoRepairPairsError, repair_pairs, repair_rows
    from coderl_ray.models.tokenizer import load_tokenizer
    from coderl_ray.rl.replay_buffer import read_rounds
    from coderl_ray.train.loop import LoopConfig, train_options

    rc = cfg.repair
    buffer = read_rounds(buffer_root, rounds).select_columns(["problem_id", "sample_id", "code", "outcome", "error"])
    pairs = repair_pairs(problems, buffer.take_all(), rc.max_pairs_per_problem, cfg.seed)
    if not pairs:
        raise NoRepairPairsError(f"no repair pairs in rounds {rounds} of {buffer_root}: none of its problems has "
                                 "both a failed program and a passing one (a reference solution or a passing sample)")
    rows = repair_rows(pairs, problems, load_tokenizer(init), cfg.model.max_source_tokens,
                       cfg.model.max_target_tokens)
    loop = LoopConfig(objective="sft", init_path=str(init), steps=_steps(rc.epochs, len(rows), rc.batch_size),
                      batch_size=rc.batch_size, lr=rc.lr, warmup_ratio=rc.warmup_ratio, seed=cfg.seed,
                      report_every=25, **train_options(cfg.train))
    # A slot of its own in the actor's trainer, freed once saved: the actor's slot stays as it is.
    _train(cfg, roles, "actor", "repair", loop, {"train": ray.data.from_items(rows)}, repair_out, storage, name)
    if roles is not None:
        roles.trainer("actor").run({"op": "drop", "slot": "repair"})
        roles.slots.pop(("actor", "repair"), None)
    return {"steps": loop.steps, "pairs": len(pairs), "problems": len({p["problem_id"] for p in pairs}),
            "outcomes": dict(Counter(p["outcome"] for p in pairs))}


def rl_logprob_temperature(cfg: PipelineConfig) -> float:
    """The temperature the RL step scores programs at: the sampling one when on-policy (``rl.on_policy_logprobs``)."""
    return cfg.rollout.temperature if cfg.rl.on_policy_logprobs else 1.0


def train_rl(cfg: PipelineConfig, scored_dir: Path, gt_dir: Path, actor_in: Path, actor_out: Path, storage: Path,
             name: str, *, roles: Roles | None = None, version: int | None = None) -> dict:
    """One round of RL on the scored programs (alternating with cross-entropy on the ground truth), from the actor
    that sampled them; saved to ``actor_out`` and published as ``version``.

    The trust region's reference point (``rl.clip_ratio``) is each program's behaviour log-probabilities, recorded
    by the generator that sampled it (``old_logprobs``); programs scored without them (a folder from elsewhere) get
    them from a pass of the starting actor first."""
    import pyarrow.parquet as pq

    from coderl_ray.train.loop import LoopConfig, train_options

    temperature = rl_logprob_temperature(cfg)
    # A row with no advantage (a greedy program, a group too small) or a zero one has no gradient to give. A folder
    # written before advantages existed has CodeRL's relative return, which is the same number under rl.algorithm
    # coderl.
    # The rule is the online loop's (one definition): trains_on.
    from coderl_ray.online.loop import trains_on

    columns = pq.read_schema(next(iter(sorted(Path(scored_dir).glob("*.parquet"))))).names
    rule = ["advantage"] if "advantage" in columns else ["is_greedy", "relative_return"]
    n = sum(map(trains_on, pq.read_table(scored_dir, columns=rule).to_pylist()))
    rl = read_parquet(str(scored_dir)).filter(trains_on)
    if cfg.rl.clip_ratio > 0 and not cfg.rl.ce_only and "old_logprobs" not in columns:
        from coderl_ray.rl.scoring import add_old_logprobs

        rl = add_old_logprobs(rl, str(actor_in), temperature, batch_size=cfg.rollout.score_batch_size,
                              num_workers=cfg.rollout.num_workers, num_cpus=cfg.rollout.cpus_per_worker,
                              num_gpus=cfg.rollout.gpus_per_worker, precision=cfg.train.precision).materialize()
    workers = _scaling(cfg)["num_workers"]
    use_rl = n >= workers and not cfg.rl.ce_only
    loop = LoopConfig(objective="rl" if use_rl else "sft", init_path=str(actor_in), steps=cfg.rl.steps_per_round,
                      batch_size=cfg.rl.batch_size, lr=cfg.rl.lr, n_classes=cfg.critic.n_classes,
                      use_critic=cfg.rl.use_critic, alternate_ce=cfg.rl.alternate_ce,
                      alternation=cfg.rl.alternation, seed=cfg.seed,
                      rl_temperature=temperature, rl_clip=cfg.rl.clip_ratio, report_every=10, warmup_ratio=0.0,
                      **train_options(cfg.train))
    gt = read_parquet(str(gt_dir))
    # Without a single program whose return differs from its baseline there is nothing for RL to learn from; the
    # round then falls back to its cross-entropy half rather than failing. (`rl.ce_only` asks for that on purpose.)
    datasets = {"train": rl, "ce": gt} if use_rl else {"train": gt}
    done = _train(cfg, roles, "actor", "actor", loop, datasets, actor_out, storage, name,
                  ("actor", version) if version is not None else None)
    return {"steps": loop.steps, "rl_rows": n, "rl_used": use_rl, "train_s": done["train_s"]}


def _scaling(cfg: PipelineConfig) -> dict:
    t = cfg.train
    return {"num_workers": t.num_workers, "use_gpu": t.use_gpu, "cpus_per_worker": t.cpus_per_worker,
            "max_failures": t.max_failures}


def online_rounds(cfg: PipelineConfig, train: list[dict[str, Any]], out: Path, *, roles: Roles | None = None) -> dict:
    """Every round's programs and RL steps as one online stage (``rl.loop: online``; :mod:`coderl_ray.online.loop`):
    generation, execution, scoring, critic and RL training overlap on the run's roles."""
    from coderl_ray.online.loop import run_online

    with roles_for(cfg, roles, _storage(cfg)) as r:
        return run_online(cfg, r, train, out)


# --- rollout, execution, scoring (on the run's roles) ----------------------------------------------------------


def round_problems(train: list[dict[str, Any]], per_round: int, seed: int, round_: int,
                   tracked: int = 0) -> list[dict[str, Any]]:
    """The problems a round samples: all of them, or a fresh seeded subset of ``per_round`` each round that always
    includes the ``tracked`` problems (``rl.tracked_problems``, :mod:`coderl_ray.rl.tracked`)."""
    from coderl_ray.rl.tracked import draw_round, tracked_problems

    always = tracked_problems(train, tracked, seed) if tracked else []
    return draw_round(train, per_round, seed, round_, always)


def round_params(cfg: PipelineConfig):
    """The rollout's sampling parameters: ``rollout.num_samples`` samples plus the greedy baseline (CodeRL), or one
    more sample in its place (GRPO, RLOO; :func:`coderl_ray.rl.returns.group_shape`)."""
    from coderl_ray.rl.returns import group_shape
    from coderl_ray.rollout.stage import sampling_params

    num_samples, greedy = group_shape(cfg.rl.algorithm, cfg.rollout.num_samples)
    return sampling_params(cfg.rollout, cfg.model.max_source_tokens, num_samples=num_samples, greedy_baseline=greedy)


def rollout_round(cfg: PipelineConfig, train: list[dict[str, Any]], actor_dir: Path, round_: int,
                  buffer_root: Path, *, roles: Roles | None = None, version: int | None = None) -> dict:
    """Sample, execute (streaming, overlapped) and store one round of programs with their returns. ``version``: the
    actor's published version (the pipeline's); the rows record ``policy_version`` = ``round_ - 1`` either way."""
    import functools

    import pyarrow.parquet as pq

    from coderl_ray.execution.stage import limits_from_config
    from coderl_ray.rl.replay_buffer import returns_by_problem, round_dir
    from coderl_ray.roles.flows import generate_and_execute

    problems = round_problems(train, cfg.rollout.problems_per_round, cfg.seed, round_, cfg.rl.tracked_problems)
    params = round_params(cfg)
    # Behaviour log-probabilities are the RL step's trust-region reference: recorded while sampling, not recomputed.
    temperature = rl_logprob_temperature(cfg) if cfg.rl.clip_ratio > 0 and not cfg.rl.ce_only else None
    with roles_for(cfg, roles, _storage(cfg)) as r:
        dest, busy = generate_and_execute(r, problems, ModelRef.of_folder("actor", actor_dir, version), params, round_,
                                    cfg.seed, limits_from_config(cfg.sandbox), round_dir(buffer_root, round_),
                                    batch_size=cfg.rollout.batch_size_per_worker, logprob_temperature=temperature,
                                    policy_version=round_ - 1, label="rollout",
                                    transform=functools.partial(returns_by_problem, algorithm=cfg.rl.algorithm),
                                    execute_rows=cfg.sandbox.batch_size)
    # Read on the driver with pyarrow: a few columns of a small folder (a Ray Data read costs seconds of start-up).
    stats = pq.read_table(dest, columns=["outcome", "is_greedy", "relative_return", "advantage"]).to_pandas()
    counts = stats["outcome"].value_counts().to_dict()
    sampled = stats[~stats["is_greedy"]]
    return {"problems": len(problems), "programs": int(len(stats)), "outcomes": counts,
            "sample_pass_rate": float((sampled["outcome"] == "passed").mean()) if len(sampled) else 0.0,
            "greedy_pass_rate": float((stats[stats["is_greedy"]]["outcome"] == "passed").mean())
            if stats["is_greedy"].any() else None,  # GRPO and RLOO draw no greedy program
            "nonzero_returns": int((sampled["relative_return"].fillna(0) != 0).sum()),
            "nonzero_advantages": int((sampled["advantage"].fillna(0) != 0).sum()), **busy}


def _storage(cfg: PipelineConfig) -> Path:
    return Path(cfg.output_dir) / "ray_train"


def score_round(cfg: PipelineConfig, round_dir: Path, critic_dir: Path, scored_out: Path,
                heldout_dir: Path | None, *, roles: Roles | None = None, version: int | None = None) -> dict:
    """Score the round's samples with the critic; measure how well it reads them and held-out (test-problem)
    programs: ``train`` / ``heldout`` hold :func:`coderl_ray.rl.scoring.critic_quality` (accuracy next to the
    majority-class rate, AUC of the "passed" probability); ``*_accuracy`` repeat the accuracies."""
    import pyarrow.parquet as pq

    from coderl_ray.rl.scoring import critic_quality
    from coderl_ray.roles.flows import score_folder

    critic = ModelRef.of_folder("critic", critic_dir, version)
    with roles_for(cfg, roles, _storage(cfg)) as r:
        score_folder(r, round_dir, critic, scored_out, cfg.rollout.score_batch_size)
        n = cfg.critic.n_classes
        train = pq.read_table(scored_out, columns=_QUALITY_COLUMNS).to_pylist()
        stats = _quality_stats("train", critic_quality(train, n))
        if heldout_dir is not None and heldout_dir.is_dir():
            stats |= _quality_stats("heldout", score_quality(cfg, critic_dir, heldout_dir, n, roles=r, critic=critic))
    return stats


_QUALITY_COLUMNS = ["problem_id", "outcome", "critic_pred", "critic_pass_prob"]


def critic_quality(cfg: PipelineConfig, round_dir: Path, critic_dir: Path, heldout_dir: Path | None, *,
                   roles: Roles | None = None) -> dict:
    """What :func:`score_round` measures, for the online loop, whose scorers score each program with the critic of
    its moment: the round's critic (``critic_dir``) on the round's programs and on held-out (test-problem) programs,
    in the same keys, so the summary's critic lines read both loops alike."""
    n = cfg.critic.n_classes
    with roles_for(cfg, roles, _storage(cfg)) as r:
        stats = _quality_stats("train", score_quality(cfg, critic_dir, round_dir, n, roles=r))
        if heldout_dir is not None and heldout_dir.is_dir():
            stats |= _quality_stats("heldout", score_quality(cfg, critic_dir, heldout_dir, n, roles=r))
    return stats


def _quality_stats(name: str, quality: dict | None) -> dict:
    return {f"{name}_accuracy": quality["accuracy"] if quality else None, name: quality}


def score_quality(cfg: PipelineConfig, critic_dir: Path, programs_dir: Path, n_classes: int, *,
                  roles: Roles | None = None, critic: ModelRef | None = None) -> dict | None:
    """:func:`coderl_ray.rl.scoring.critic_quality` of the critic on the executed programs in ``programs_dir`` (a
    buffer round, or an evaluation's results on the test split), scored without writing them anywhere."""
    import pyarrow.parquet as pq

    from coderl_ray.rl.scoring import critic_quality
    from coderl_ray.roles.flows import score_rows

    table = pq.read_table(programs_dir)
    with roles_for(cfg, roles, _storage(cfg)) as r:
        scored = score_rows(r, table, critic or ModelRef.of_folder("critic", critic_dir),
                            cfg.rollout.score_batch_size)
    return critic_quality(scored.select(_QUALITY_COLUMNS).to_pylist(), n_classes)


# --- evaluation ------------------------------------------------------------------------------------------------


def evaluate(cfg: PipelineConfig, test: list[dict[str, Any]], actor_dir: Path, out: Path, phase: str, *,
             roles: Roles | None = None, version: int | None = None,
             tracked_from: list[dict[str, Any]] | None = None) -> dict:
    """pass@k on the test split: sample, execute, write results and metrics under ``out``.

    With ``tracked_from`` (the training problems) and ``rl.tracked_problems``, the tracked training problems
    (:mod:`coderl_ray.rl.tracked`) are sampled and run too, with the test split's sampling keys (the same programs'
    worth of chances in every run of a seed), into ``out/tracked_results``, apart from the test split's
    ``out/results`` (which the next round's critic reads as held-out programs). ``groups`` in the returned info holds
    pass@k of :func:`coderl_ray.rl.tracked.eval_groups` (absent when there is no group to report)."""
    import pandas as pd

    from coderl_ray.execution.stage import limits_from_config
    from coderl_ray.rl.tracked import eval_groups, group_pass_at_k, tracked_problems
    from coderl_ray.roles.flows import generate_and_execute
    from coderl_ray.rollout.stage import sampling_params

    e = cfg.eval
    tracked = tracked_problems(tracked_from, cfg.rl.tracked_problems, cfg.seed) \
        if tracked_from and cfg.rl.tracked_problems else []
    params = sampling_params(cfg.rollout, cfg.model.max_source_tokens, num_samples=e.num_samples,
                             temperature=e.temperature, top_p=e.top_p, greedy_baseline=False)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(test, out / "results", f"evaluate {phase}")]
    if tracked:
        runs.append((tracked, out / "tracked_results", f"evaluate {phase} (tracked)"))
    with roles_for(cfg, roles, _storage(cfg)) as r:
        for problems, dest, label in runs:
            generate_and_execute(r, problems, ModelRef.of_folder("actor", actor_dir, version), params, 0,
                                 cfg.seed + 7, limits_from_config(cfg.sandbox), dest,
                                 batch_size=cfg.rollout.batch_size_per_worker, policy_version=0, label=label,
                                 execute_rows=cfg.sandbox.batch_size)
    columns = ["problem_id", "sample_id", "outcome", "passed_tests", "total_tests"]
    rows = pd.read_parquet(out / "results", columns=columns).to_dict("records")
    metrics = summarize(test, rows, e.ks, submissions=())
    write_report(metrics, out / "report", title=f"Evaluation after {phase}")
    info = compact_metrics(metrics)
    groups = eval_groups(test, tracked)
    if groups:
        if tracked:
            rows += pd.read_parquet(out / "tracked_results", columns=columns).to_dict("records")
        info["groups"] = group_pass_at_k(test + tracked, rows, e.ks, groups)
    return info


def compact_metrics(metrics: dict) -> dict:
    """The few numbers the pipeline's state log and summary table keep: pass@k per difficulty and overall."""
    groups = {"all": metrics["overall"], **metrics["by_difficulty"]}
    return {name: {**{f"pass@{k}": v for k, v in g["pass@k"].items()}, "problems": g["problems"],
                   "strict_accuracy": g["strict_accuracy"], "infra_errors": g["infra_errors"]}
            for name, g in groups.items()} | {"outcomes": metrics["overall"]["outcomes"]}


# --- critic sampling (inference) -------------------------------------------------------------------------------


def critic_sampling(cfg: PipelineConfig, test: list[dict[str, Any]], actor_dir: Path, critic_dir: Path,
                    repair_dir: Path | None, out: Path, phase: str, *, roles: Roles | None = None,
                    actor_version: int | None = None, critic_name: str = "critic",
                    critic_version: int | None = None) -> dict:
    """Critic sampling on the test split with the final actor, next to plain sampling at the same budget.

    ``out/plain`` (``cs.baseline``): the budget sampled plainly, then picked at random, filtered by the example
    tests, and filtered then ranked by the critic; ``out/cs``: critic sampling, whose pass 0 is the plain run's first
    ``cs.first_samples`` programs per problem (so both are compared on shared programs). ``out/metrics.json``,
    ``report.md`` and the PNG hold every strategy.
    """
    import dataclasses

    from coderl_ray.inference.checks import check_inputs
    from coderl_ray.inference.report import write_cs_report
    from coderl_ray.inference.run import critic_sample

    labels = {"actor": f"{phase} actor", "critic": "CS critic", "repair": "repair model"}
    check_inputs(test, "the test split", actor_dir, critic_dir, repair_dir, labels)
    seed = cfg.seed + 11
    strategies, runs, plain_dir = {}, {}, None
    models = {"roles": roles, "actor_version": actor_version, "critic_name": critic_name,
              "critic_version": critic_version}
    if cfg.cs.baseline or cfg.cs.passes == 1:
        plain_cfg = dataclasses.replace(cfg, cs=dataclasses.replace(cfg.cs, passes=1))
        plain_dir = out / "plain"
        runs["plain"] = critic_sample(plain_cfg, test, actor_dir, critic_dir, None, plain_dir, seed, **models)
        strategies.update(runs["plain"]["strategies"])
    if cfg.cs.passes > 1:
        runs["cs"] = critic_sample(cfg, test, actor_dir, critic_dir, repair_dir, out / "cs", seed, **models,
                                   first_pass_from=plain_dir)
        strategies.update(runs["cs"]["strategies"])
    main = runs.get("cs") or runs["plain"]
    metrics = {**{k: v for k, v in main.items() if k != "per_problem"}, "strategies": strategies,
               "wall_s": {name: run["wall_s"] for name, run in runs.items()}, "critic": str(critic_dir),
               "repair_model": str(repair_dir or "")}
    write_cs_report(metrics, out, title=f"Critic sampling after {phase}")
    return {"phase": phase, "budget": cfg.cs.budget, "submissions": list(cfg.cs.submissions),
            "repair": repair_dir is not None, "critic": Path(critic_dir).name,
            "no_example_problems": main["diagnostics"]["problems_without_example_tests"],
            "strategies": strategies}
