"""The online loop (``rl.loop: online``): generation, execution, critic scoring, critic training and RL overlap.

    problems --> generators --> sandbox executors --> critic scorers --> replay buffer (Parquet parts)
                     ^ actor weights by version                ^ critic weights      |
                     |                                         |                     v
               actor trainer  <------ RL rows (window of recent versions) ---- driver's window
               critic trainer <------ critic rows (the growing buffer) ---------'

The same programs as the staged loop are generated (the same problems, round by round, the same sampling keys) and
the same number of RL optimizer steps is taken; what changes is that nothing waits for a whole round. Each work item
(a batch of problems) is sampled by the newest actor the admission rule allows, flows through the sandbox and the
critic scorers as soon as it is generated, and lands in the buffer and in the RL window; the actor trainer takes a
step whenever the items due by then have arrived, on rows at most ``rl.max_staleness`` versions old, and publishes
its weights after every step; the critic trains on the growing buffer alongside and its scorers refresh every
``critic.refresh_steps`` critic steps. The rules are pure functions in :mod:`coderl_ray.online.schedule`.

Every ``rl.algorithm`` runs here as in the staged loop: a work item holds whole problems, so each problem's group
(its samples, and the greedy program for CodeRL) gets its advantages (:func:`coderl_ray.rl.returns.group_advantages`)
the moment the item completes. A run that reads no critic (:func:`coderl_ray.registry.needs_critic`: GRPO, RLOO, CodeRL
without critic, the CE-only control, with critic sampling off) starts no critic trainer and no scorers: items go from
the sandbox straight to the buffer, and no ``critic_round_N`` folders are written.

What is written, and how a killed run resumes: every finished item is a part of ``buffer/round_NNNN`` (written once),
and at each round boundary (every ``rl.steps_per_round`` steps) the actor is checkpointed whole to
``models/actor_round_N`` (weights, optimizer, schedule, step; the critic likewise to ``models/critic_round_N``). A
rerun skips the stored items, restores both trainers from their last checkpoints, and refills the window and the
critic's pool from the stored parts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from coderl_ray.config import PipelineConfig
from coderl_ray.online.schedule import Window, critic_due, may_generate, may_step, sample_rows

# Columns a trainer reads from a stored row (the rest stays in the buffer).
RL_COLUMNS = ["sample_id", "policy_version", "prompt_ids", "token_ids", "outcome", "relative_return", "advantage",
              "critic_logits", "old_logprobs"]
CRITIC_COLUMNS = ["prompt_ids", "token_ids", "outcome"]

# Test seam: callables ``hook(event, info)`` run by the driver at "item" (an item stored) and "step" (an RL step
# done) events; the failure tests use it to kill a role's process at a known point. Empty in normal runs.
HOOKS: list = []


@dataclass
class OnlinePlan:
    """What the online loop will do, fixed before it starts (and recorded, so a rerun can check it)."""

    rounds: int
    items: list[dict[str, Any]]  # {"round", "batch", "problems": [...]} in generation order
    rl_steps: int
    critic_steps: int
    critic_round_ends: list[int] = field(default_factory=list)  # critic steps done at the end of each round


def make_plan(cfg: PipelineConfig, train: list[dict[str, Any]], gt_rows: int) -> OnlinePlan:
    """The staged loop's problems and step counts: round ``r`` samples ``round_problems(..., r)`` in batches of
    ``rollout.batch_size_per_worker``; the RL trainer takes ``rl.rounds x rl.steps_per_round`` steps; the critic as
    many as the staged critic would over its rounds (``critic.epochs`` passes over rounds 1..r plus the ground truth,
    per round; none when nothing reads the critic, :func:`coderl_ray.registry.needs_critic`)."""
    from coderl_ray.registry import needs_critic
    from coderl_ray.rl.returns import group_shape
    from coderl_ray.roles.flows import problem_batches
    from coderl_ray.stages import _steps, round_problems

    items, critic_steps, ends = [], 0, []
    # Samples per problem, and the greedy baseline (CodeRL) or one more sample in its place (GRPO, RLOO).
    num_samples, greedy = group_shape(cfg.rl.algorithm, cfg.rollout.num_samples)
    with_critic = needs_critic(cfg)
    stored = stored_samples = 0
    for r in range(1, cfg.rl.rounds + 1):
        problems = round_problems(train, cfg.rollout.problems_per_round, cfg.seed, r, cfg.rl.tracked_problems)
        for b, batch in enumerate(problem_batches(problems, cfg.rollout.batch_size_per_worker)):
            items.append({"round": r, "batch": b, "problems": batch})
        stored += len(problems) * (num_samples + int(greedy))
        stored_samples += len(problems) * num_samples
        if with_critic:
            critic_rows = (stored if cfg.critic.include_greedy else stored_samples) + \
                (gt_rows if cfg.critic.include_ground_truth else 0)
            critic_steps += _steps(cfg.critic.epochs, critic_rows, cfg.critic.batch_size)
        ends.append(critic_steps)
    return OnlinePlan(cfg.rl.rounds, items, cfg.rl.rounds * cfg.rl.steps_per_round, critic_steps, ends)


def trains_on(row: dict[str, Any]) -> bool:
    """The rows an RL step learns from: sampled programs with a nonzero advantage (``rl.algorithm``; a greedy program
    has none). A row stored before advantages existed has CodeRL's relative return, the same number under coderl.

    >>> trains_on({"is_greedy": False, "advantage": -0.65}), trains_on({"is_greedy": False, "advantage": 0.0})
    (True, False)
    >>> trains_on({"is_greedy": True, "advantage": None}), trains_on({"is_greedy": False, "relative_return": 1.3})
    (False, True)
    """
    if "advantage" in row:
        return row["advantage"] is not None and row["advantage"] != 0.0
    return not row["is_greedy"] and row.get("relative_return") is not None and row["relative_return"] != 0.0


class OnlineLoop:
    """One run of the online loop on a run's :class:`~coderl_ray.roles.setup.Roles`."""

    def __init__(self, cfg: PipelineConfig, roles, train: list[dict[str, Any]], out: Path):
        self.cfg, self.roles, self.train, self.out = cfg, roles, train, Path(out)
        self.models, self.buffer = self.out / "models", self.out / "buffer"
        self.storage = self.out / "ray_train"
        gt = pa.Table.from_pylist([]) if not (self.out / "data" / "ground_truth").is_dir() else \
            _read_table(self.out / "data" / "ground_truth")
        self.gt_rows = gt.select(["prompt_ids", "token_ids", "outcome"]).to_pylist()
        self.plan = make_plan(cfg, train, len(self.gt_rows))
        self.window = Window(cfg.rl.max_staleness, seed=cfg.seed)
        from coderl_ray.registry import needs_critic

        self.with_critic = needs_critic(cfg)
        self.critic_pool: list[dict[str, Any]] = \
            list(self.gt_rows) if self.with_critic and cfg.critic.include_ground_truth else []
        self.arrived: set[int] = set()
        self.actor_version = 0  # RL steps applied
        self.critic_version = 0  # critic steps applied
        self.critic_published = 0
        self.stats: dict[str, Any] = {"rl_rows_per_step": [], "step_s": 0.0, "critic_step_s": 0.0,
                                      "ce_only_steps": 0, "regenerated": 0}
        self.metrics_window: list[dict] = []

    # --- set-up ----------------------------------------------------------------------------------------------------

    def _loops(self):
        """The two trainers' LoopConfigs (one schedule each over the whole run); the critic's None without one."""
        from coderl_ray.stages import _named, rl_logprob_temperature
        from coderl_ray.train.loop import LoopConfig, concurrent_torch_threads, train_options

        cfg = self.cfg
        # Both trainers compute beside the generators, executors and scorers: no borrowing of their cores.
        options = {**train_options(cfg.train), "torch_threads": concurrent_torch_threads(cfg.train)}
        objective = "sft" if cfg.rl.ce_only else "rl"
        actor = LoopConfig(objective=objective, init_path=str(self.models / "actor_sft"), steps=self.plan.rl_steps,
                           batch_size=cfg.rl.batch_size, lr=cfg.rl.lr, n_classes=cfg.critic.n_classes,
                           use_critic=cfg.rl.use_critic, alternate_ce=cfg.rl.alternate_ce,
                           alternation=cfg.rl.alternation, seed=cfg.seed, rl_temperature=rl_logprob_temperature(cfg),
                           rl_clip=cfg.rl.clip_ratio, warmup_ratio=0.0, report_every=10, **options)
        if not self.with_critic:
            return _named(actor, self.storage, "rl_online"), None
        backbone = self.models / "actor_sft" if cfg.critic.backbone == "actor" else Path(cfg.critic.backbone)
        critic = LoopConfig(objective="critic", init_path=str(backbone), new_critic=True,
                            steps=max(1, self.plan.critic_steps), batch_size=cfg.critic.batch_size, lr=cfg.critic.lr,
                            n_classes=cfg.critic.n_classes, head_hidden=cfg.critic.head_hidden,
                            critic_pooling=cfg.critic.pooling, critic_pool_length=cfg.model.max_target_tokens,
                            critic_scale_input=cfg.critic.scale_head_input,
                            critic_read_logprobs=cfg.critic.read_logprobs,
                            critic_train_backbone=cfg.critic.train_backbone, seed=cfg.seed, report_every=25,
                            **options)
        return _named(actor, self.storage, "rl_online"), _named(critic, self.storage, "critic_online")

    def _start_trainers(self) -> tuple[int, int]:
        """Load (or restore) both trainers (the actor's alone when the run reads no critic); returns the steps each
        has already taken."""
        import ray

        actor_loop, critic_loop = self._loops()
        actor_t = self.roles.trainer("actor")
        critic_t = self.roles.trainer("critic") if self.with_critic else None
        ce = ray.put(self.gt_rows)
        actor_begin = {"op": "begin", "slot": "actor", "loop": asdict(actor_loop), "ce_rows": ce}
        critic_begin = {"op": "begin", "slot": "critic", "loop": asdict(critic_loop)} if self.with_critic else None
        from coderl_ray.roles.trainer import ONLINE_STATE

        done_rounds = [r for r in range(1, self.plan.rounds + 1)
                       if (self.models / f"actor_round_{r}" / ONLINE_STATE).is_file()
                       and (not self.with_critic or (self.models / f"critic_round_{r}" / ONLINE_STATE).is_file())]
        self.critic_init = self.models / "critic_online_init"
        c = 0
        if done_rounds:
            r = done_rounds[-1]
            actor_load = {"op": "load", "slot": "actor", "loop": asdict(replace(actor_loop, init_path=str(
                self.models / f"actor_round_{r}")))}
            a = actor_t.run({"op": "resume", "slot": "actor", "path": str(self.models / f"actor_round_{r}"),
                             "load": actor_load, "begin": actor_begin})["step"]
            if self.with_critic:
                critic_load = {"op": "load", "slot": "critic", "loop": asdict(replace(
                    critic_loop, init_path=str(self.models / f"critic_round_{r}"), new_critic=False))}
                c = critic_t.run({"op": "resume", "slot": "critic", "path": str(self.models / f"critic_round_{r}"),
                                  "load": critic_load, "begin": critic_begin})["step"]
            print(f"    online: resuming after round {r} (actor step {a}, critic step {c})", flush=True)
        else:
            self.roles.ensure_slot("actor", "actor", actor_loop, actor_loop.init_path)
            actor_t.run(actor_begin)
            if self.with_critic:
                critic_t.run({"op": "load", "slot": "critic", "loop": asdict(critic_loop)})
                critic_t.run(critic_begin)
            a = 0
        self.roles.slots.pop(("actor", "actor"), None)  # the slot now follows the online run, not a folder
        if self.with_critic:
            # The scorers build the critic from a folder when they do not hold it yet (first call, or after a
            # restart).
            critic_t.run({"op": "save", "slot": "critic", "path": str(self.critic_init)})
            critic_t.run({"op": "publish", "slot": "critic", "name": "critic", "version": c})
        actor_t.run({"op": "publish", "slot": "actor", "name": "actor", "version": a})
        self.critic_published = c
        return a, c

    # --- the loop --------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        import ray

        from coderl_ray.data.parts import PartFolder
        from coderl_ray.execution.stage import limits_from_config
        from coderl_ray.progress import stage_bar
        from coderl_ray.rl.replay_buffer import returns_by_problem, round_dir
        from coderl_ray.roles.pool import Hop, Item, Stream
        from coderl_ray.roles.workers import ModelRef
        from coderl_ray.rollout.stage import prompt_rows
        from coderl_ray.stages import rl_logprob_temperature, round_params

        cfg, plan = self.cfg, self.plan
        started = time.perf_counter()
        self.busy0 = {name: pool.stats.busy_s for name, pool in self._pools()}
        self.actor_version, self.critic_version = self._start_trainers()
        startup_s = time.perf_counter() - started
        params = round_params(cfg)
        actor = ModelRef("actor", str(self.models / "actor_sft"), 0, 0)
        critic = ModelRef("critic", str(self.critic_init), self.critic_published, self.critic_published)
        limits = limits_from_config(cfg.sandbox)
        problem_set, problem_ref = self.roles.problems(self.train)
        temperature = rl_logprob_temperature(cfg)
        keys = {i: (it["round"], it["batch"]) for i, it in enumerate(plan.items)}
        left = {r: sum(1 for it in plan.items if it["round"] == r) for r in range(1, plan.rounds + 1)}
        n_items, per_problem = len(plan.items), params.num_samples + int(params.greedy_baseline)
        total_programs = sum(len(it["problems"]) for it in plan.items) * per_problem
        # Items a killed run stored already go back into the window and the critic's pool: a finished round's
        # folder whole, an unfinished one's parts.
        folders: dict[int, PartFolder] = {}
        for r in left:
            dest = round_dir(self.buffer, r)
            if dest.is_dir():
                for i, (rr, b) in keys.items():
                    if rr == r:
                        self._arrive(i, _read_table(dest / PartFolder.name(b)), stored=True)
                left[r] = 0
                continue
            folders[r] = PartFolder(dest, {"online": True, "items": [
                [p["problem_id"] for p in it["problems"]] for it in plan.items if it["round"] == r],
                "params": repr(params), "seed": cfg.seed})
            for i, (rr, b) in keys.items():
                if rr == r and folders[r].has(b):
                    self._arrive(i, _read_table(folders[r].tmp / folders[r].name(b)), stored=True)
                    left[r] -= 1
            if left[r] == 0:
                folders[r].finish()

        def sink(item: Item, table: pa.Table) -> None:
            r, b = keys[item.key]
            table = returns_by_problem(table, cfg.rl.algorithm)
            folders[r].write(b, table)
            self._arrive(item.key, table)
            left[r] -= 1
            if left[r] == 0:
                folders[r].finish()
            bar.update(table.num_rows)
            for hook in HOOKS:
                hook("item", {"item": item.key, "stored": len(self.arrived), "roles": self.roles})

        hops = [
            Hop(self.roles.generators, "generate",
                lambda item: (actor.at(item.meta["version"]), params, item.meta["round"], cfg.seed, temperature,
                              item.meta["version"])),
            Hop(self.roles.executors, "execute", lambda item: (problem_set, problem_ref, limits),
                rows=cfg.sandbox.batch_size),
        ]
        if self.with_critic:
            hops.append(Hop(self.roles.scorers, "score", lambda item: (critic.at(self.critic_published),),
                            rows=cfg.rollout.score_batch_size))
        stream = Stream(hops, sink)
        pending = [i for i in range(n_items) if i not in self.arrived]
        actor_t = self.roles.trainer("actor")
        critic_t = self.roles.trainer("critic") if self.with_critic else None
        rl_ref = critic_ref = None
        checkpoints: list[tuple[Any, int]] = []  # (trainer, seq) of checkpoint commands to wait for at the end
        k = cfg.rl.max_staleness
        round_ends = {r * cfg.rl.steps_per_round: r for r in range(1, plan.rounds + 1)}
        critic_ends = {c: r + 1 for r, c in enumerate(plan.critic_round_ends)}
        with stage_bar("online", total=total_programs, unit="program") as bar:
            bar.update(sum(len(plan.items[i]["problems"]) for i in self.arrived) * per_problem)
            while True:
                while pending and stream.has_room and may_generate(pending[0], n_items, plan.rl_steps,
                                                                   self.actor_version, k):
                    i = pending.pop(0)
                    stream.add(Item(i, pa.Table.from_pylist(prompt_rows(plan.items[i]["problems"])),
                                    {"round": plan.items[i]["round"], "version": self.actor_version}))
                if rl_ref is None and self.actor_version < plan.rl_steps and \
                        may_step(self.actor_version, self.arrived, n_items, plan.rl_steps):
                    rl_ref = self._submit_rl_step(actor_t)
                if critic_ref is None and self.critic_version < plan.critic_steps and \
                        critic_due(self.critic_version, plan.critic_steps, len(self.arrived), n_items):
                    critic_ref = self._submit_critic_step(critic_t)
                done = (not pending and not stream.busy and rl_ref is None and critic_ref is None
                        and self.actor_version >= plan.rl_steps and self.critic_version >= plan.critic_steps)
                if done:
                    break
                extra = [ref for ref in (rl_ref, critic_ref) if ref is not None]
                for ref in stream.poll(extra, timeout=5.0):
                    if ref is rl_ref:
                        rl_ref = None
                        self._rl_done(actor_t.unwrap(ray.get(ref)))
                        if self.actor_version in round_ends:
                            r = round_ends[self.actor_version]
                            checkpoints.append((actor_t, actor_t.submit({
                                "op": "checkpoint", "slot": "actor", "path": str(self.models / f"actor_round_{r}")})))
                        for hook in HOOKS:
                            hook("step", {"step": self.actor_version, "roles": self.roles})
                    elif ref is critic_ref:
                        critic_ref = None
                        self._critic_done(critic_t.unwrap(ray.get(ref)), critic_t)
                        if self.critic_version in critic_ends:
                            r = critic_ends[self.critic_version]
                            checkpoints.append((critic_t, critic_t.submit({
                                "op": "checkpoint", "slot": "critic", "path": str(self.models / f"critic_round_{r}")})))
        for trainer, seq in checkpoints:
            trainer.wait(seq)
        # Rounds the critic ended early or late (its step count is the staged critic's) still get a critic folder.
        for r in range(1, plan.rounds + 1 if self.with_critic else 1):
            if not (self.models / f"critic_round_{r}").is_dir():
                critic_t.run({"op": "save", "slot": "critic", "path": str(self.models / f"critic_round_{r}")})
        wall = time.perf_counter() - started
        return self._summary(wall, startup_s, total_programs)

    def _arrive(self, index: int, table: pa.Table, stored: bool = False) -> None:
        rows = table.to_pylist()
        self.window.add([{k: r.get(k) for k in RL_COLUMNS} for r in rows if trains_on(r)])
        if not self.with_critic:
            self.arrived.add(index)
            return
        critic_rows = [r for r in rows if r["outcome"] != "infra_error" and (self.cfg.critic.include_greedy or
                                                                           not r["is_greedy"])]
        self.critic_pool.extend({k: r[k] for k in CRITIC_COLUMNS} for r in critic_rows)
        self.arrived.add(index)

    def _submit_rl_step(self, trainer):
        import ray

        step = self.actor_version
        rows = [] if self.cfg.rl.ce_only else self.window.batch(step, self.cfg.rl.batch_size)
        if not rows:
            self.stats["ce_only_steps"] += 1
        self.stats["rl_rows_per_step"].append(len(rows))
        seq = trainer.submit({"op": "step", "slot": "actor", "rows": ray.put(rows),
                              "publish": {"name": "actor", "version": step + 1}})
        return trainer.result_ref(seq)

    def _rl_done(self, metrics: dict) -> None:
        self.actor_version = int(metrics["step"])
        self.stats["step_s"] += metrics.get("step_s", 0.0)
        self.stats["torch_threads"] = metrics.get("torch_threads")
        self.metrics_window.append(metrics)
        total = self.plan.rl_steps
        if self.actor_version % 10 == 0 or self.actor_version == total:
            keys = ("loss", "rl_loss", "ce_loss", "mean_return", "logprob_shift", "rows")
            mean = {k: sum(m[k] for m in self.metrics_window if k in m) / max(1, sum(k in m for m in
                                                                                      self.metrics_window))
                    for k in keys if any(k in m for m in self.metrics_window)}
            line = " ".join(f"{k}={v:.4g}" for k, v in mean.items())
            print(f"[rl online] step {self.actor_version}/{total} {line} window={len(self.window.rows)} "
                  f"dropped={self.window.dropped} stored={len(self.arrived)}/{len(self.plan.items)}", flush=True)
            self.metrics_window.clear()

    def _submit_critic_step(self, trainer):
        import ray

        c = self.critic_version
        rows = sample_rows(self.critic_pool, self.cfg.critic.batch_size, f"{self.cfg.seed}/critic/{c}")
        refresh = (c + 1) % self.cfg.critic.refresh_steps == 0 or c + 1 == self.plan.critic_steps
        seq = trainer.submit({"op": "step", "slot": "critic", "kind": "critic", "rows": ray.put(rows),
                              "publish": {"name": "critic", "version": c + 1} if refresh else None})
        return trainer.result_ref(seq)

    def _critic_done(self, metrics: dict, trainer) -> None:
        self.critic_version = int(metrics["step"])
        self.stats["critic_step_s"] += metrics.get("step_s", 0.0)
        if self.critic_version % self.cfg.critic.refresh_steps == 0 or self.critic_version == self.plan.critic_steps:
            self.critic_published = self.critic_version

    def _pools(self):
        # Reading a pool starts it: the scorers only when the run reads a critic.
        pools = [("generator", self.roles.generators), ("sandbox", self.roles.executors)]
        return tuple(pools + ([("scorer", self.roles.scorers)] if self.with_critic else []))

    def _summary(self, wall: float, startup_s: float, programs: int) -> dict[str, Any]:
        rows = self.stats["rl_rows_per_step"]
        busy = {f"{name}_busy": round((pool.stats.busy_s - self.busy0[name]) / (wall * pool.size), 3)
                for name, pool in self._pools()}
        return {**busy, "programs": programs, "rl_steps": self.plan.rl_steps, "critic_steps": self.plan.critic_steps,
                "wall_s": round(wall, 2), "trainer_startup_s": round(startup_s, 2),
                "programs_per_s": round(programs / wall, 3) if wall else 0.0,
                "trainer_busy": round(self.stats["step_s"] / wall, 3) if wall else 0.0,
                "trainer_torch_threads": self.stats.get("torch_threads"),
                "critic_trainer_busy": round(self.stats["critic_step_s"] / wall, 3) if wall else 0.0,
                "rl_rows_per_step": round(sum(rows) / len(rows), 2) if rows else 0.0,
                # Per step, in order: which steps found the window empty (ce_only_steps counts them), and when.
                "rl_rows_each_step": list(rows),
                "ce_only_steps": self.stats["ce_only_steps"], "dropped_stale": self.window.dropped,
                "trained_rows": len(self.window.trained_ids),
                "max_staleness_trained": self.window.max_seen_staleness,
                "max_staleness": self.cfg.rl.max_staleness}


def _read_table(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def run_online(cfg: PipelineConfig, roles, train: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """The online stage of a pipeline: every round's programs and steps, overlapped; writes the buffer's rounds and
    ``models/actor_round_N`` / ``critic_round_N``; returns its numbers (also in ``<out>/online.json``)."""
    info = OnlineLoop(cfg, roles, train, out).run()
    (Path(out) / "online.json").write_text(json.dumps(info, indent=1))
    return info
