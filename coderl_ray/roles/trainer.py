"""A Ray Train worker group that lives for the whole run and trains on command.

    trainer = TrainerGroup("actor", cfg.train, storage, store)       # one Ray Train fit(), started once
    trainer.run({"op": "load", "slot": "actor", "path": "models/actor_init"})
    trainer.run({"op": "train", "slot": "actor", "loop": loop_cfg, "data": {"train": ds}, "save": "models/actor_sft",
                 "publish": {"name": "actor", "version": 0}})
    ...
    trainer.close()

Before, every training stage was a ``TorchTrainer.fit()`` of its own: a worker group started, the model loaded from
the folder the previous stage wrote, ~10-60 s of fixed cost per stage whatever its length. Here one ``fit()`` runs
for the whole pipeline (in a thread of the driver) and its workers serve commands from a :class:`TrainerChannel`
actor; models stay in the workers' memory between stages (a *slot* per model), and new weights reach generators and
critic scorers through the weight store (:mod:`coderl_ray.roles.weights`), not through a folder.

Commands (plain dicts; every rank executes every command):

* ``load``: build a slot's model from a folder (an actor, a critic, or a new critic head on a backbone: ``new_critic``);
* ``train``: a whole training run on a slot (:class:`~coderl_ray.train.loop.LoopConfig`, fresh optimizer and
  schedule, as a stage's own ``fit()`` had), on Ray Datasets split across the workers as Ray Train splits them
  (``streaming_split``, the same execution options), then optionally ``save`` (a Hugging Face folder: the stage's
  output, the source of truth a rerun resumes from) and ``publish`` (a version in the weight store);
* ``begin`` / ``step`` / ``checkpoint``: the online loop's incremental training - an optimizer that lives across
  commands, one optimizer step per ``step`` command on rows the driver sends, a full checkpoint (model, optimizer,
  schedule, cursors) on ``checkpoint``;
* ``save`` / ``publish`` / ``drop`` a slot, ``stop``.

Failures. A worker that dies takes the group with it; Ray Train starts a new group (``train.max_failures``), whose
workers ``attach`` to the channel and get the *restore point*: the folders of the last saved state of every slot
and the first command after it. They load those and replay the later commands (all deterministic: seeded steps,
the same rows), so the driver sees each command's result once, as if nothing had happened; the channel counts the
restarts. A command that raises (bad input, not a lost worker) is answered with its error and the group serves on.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any


class TrainerError(RuntimeError):
    """A training command failed in the workers, or the worker group itself is gone."""


class TrainerChannel:
    """Commands for a trainer group and their results (an async Ray actor, no CPU).

    ``restore``: per slot, the folder of its last saved state and the command that saved it; replay starts after
    the oldest of those (commands are kept from there on)."""

    def __init__(self):
        self.commands: dict[int, dict] = {}
        self.next_seq = 0
        self.results: dict[int, dict] = {}
        self.answered: set[int] = set()  # a replayed command's second answer is dropped
        self.restore: dict[str, dict] = {}  # slot -> {"seq", "path", "load": the load command to rebuild it}
        self.attaches = 0
        self.pids: list[int] = []  # worker processes, in the order they attached
        self.cond = asyncio.Condition()

    async def put(self, command: dict) -> int:
        async with self.cond:
            seq = self.next_seq
            self.commands[seq] = command
            self.next_seq += 1
            self.cond.notify_all()
            return seq

    async def next(self, seq: int) -> dict:
        async with self.cond:
            await self.cond.wait_for(lambda: seq in self.commands)
            return self.commands[seq]

    async def done(self, seq: int, result: dict, restore: dict | None = None) -> None:
        async with self.cond:
            if seq not in self.answered:
                self.answered.add(seq)
                self.results[seq] = result
            for slot, point in (restore or {}).items():
                if point is None:
                    self.restore.pop(slot, None)
                else:
                    self.restore[slot] = {**point, "seq": seq}
            oldest = min((p["seq"] for p in self.restore.values()), default=seq)
            for old in [s for s in self.commands if s <= min(oldest, seq)]:
                del self.commands[old]  # never replayed again
            self.cond.notify_all()

    async def result(self, seq: int) -> dict:
        async with self.cond:
            await self.cond.wait_for(lambda: seq in self.results)
            return self.results.pop(seq)

    async def attach(self, pid: int = 0) -> dict:
        """Where a (re)started worker begins: the slots to rebuild and the first command to run."""
        async with self.cond:
            self.attaches += 1
            self.pids.append(pid)
            start = min(self.commands, default=self.next_seq)
            return {"restore": dict(self.restore), "next_seq": start, "attaches": self.attaches}

    async def stats(self) -> dict:
        return {"attaches": self.attaches, "pending": len(self.commands), "pids": list(self.pids)}


class _Slot:
    def __init__(self, model, tokenizer, load: dict):
        self.model, self.tokenizer, self.load = model, tokenizer, load
        self.online: dict[str, Any] | None = None  # begin: optimizer, schedule, cfg, step, CE cursor
        self.begin: dict | None = None  # the begin command (its ground-truth rows rebuild the CE cursor)


class _Worker:
    """One rank's side: the slots and how each command changes them."""

    def __init__(self, config: dict[str, Any]):
        import ray.train
        import ray.train.torch
        import torch

        self.channel, self.store = config["channel"], config["store"]
        if config.get("torch_threads"):
            torch.set_num_threads(int(config["torch_threads"]))
        self.default_threads = torch.get_num_threads()
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.slots: dict[str, _Slot] = {}

    # --- commands ------------------------------------------------------------------------------------------------

    def load(self, cmd: dict) -> dict:
        from coderl_ray.models.tokenizer import load_tokenizer
        from coderl_ray.train.loop import build_model
        from coderl_ray.train.parallel import prepare_model

        cfg = _loop_config(cmd["loop"])
        model = build_model(cfg)
        model = prepare_model(model, parallel=cfg.parallel, device=self.device, precision=cfg.precision,
                              gradient_checkpointing=cfg.gradient_checkpointing, compile_model=cfg.compile)
        self.slots[cmd["slot"]] = _Slot(model, load_tokenizer(cfg.init_path), cmd)
        return {"slot": cmd["slot"], "params": sum(p.numel() for p in model.parameters())}

    def train(self, cmd: dict) -> dict:
        import torch

        from coderl_ray.train.loop import StepLog, data_cursors, run_loop

        slot = self._slot(cmd)
        slot.online = slot.begin = None  # a whole run starts its own optimizer
        cfg = _loop_config(cmd["loop"])
        self._use_threads(cfg)
        shards = self._shards(cmd["data"])
        cursors = data_cursors(cfg, shards, self.rank, self.world)
        torch.manual_seed(cfg.seed)
        log = StepLog(cfg, self.rank, self.device)
        last: dict = {}

        def on_step(step, metrics, opt, sched):
            summary = log.step(step, metrics)
            if summary is not None:
                last.update(summary)

        start = time.perf_counter()
        try:
            run_loop(cfg, slot.model, cursors["train"], slot.tokenizer.pad_token_id, ce_batches=cursors.get("ce"),
                     device=self.device, rank=self.rank, on_step=on_step)
        finally:
            log.close()
        return {"steps": cfg.steps, "train_s": round(time.perf_counter() - start, 2), "last": last}

    def begin(self, cmd: dict) -> dict:
        """Start incremental training on a slot: an optimizer and schedule for ``loop.steps`` steps, and (for RL
        with alternation) a cursor over the ground truth rows sent with the command."""
        from coderl_ray.train.loop import make_optimizer

        slot = self._slot(cmd)
        cfg = _loop_config(cmd["loop"])
        optimizer, scheduler = make_optimizer(cfg, slot.model, fused=self.device.type == "cuda")
        slot.online = {"cfg": cfg, "optimizer": optimizer, "scheduler": scheduler, "step": 0,
                       "ce": self._ce_cursor(cmd, cfg)}
        slot.begin = cmd
        return {"slot": cmd["slot"], "steps": cfg.steps}

    def _ce_cursor(self, begin: dict, cfg, position=(0, 0)):
        from coderl_ray.train.batching import BatchCursor

        if begin.get("ce_rows") is None:
            return None
        rows = _rank_rows(begin["ce_rows"], self.rank, self.world)
        per_worker = max(1, cfg.batch_size // self.world)
        seed = cfg.seed + 7 + 1000 * self.rank
        return BatchCursor(lambda e: _shuffled_batches(rows, per_worker, seed + e), position)

    def step(self, cmd: dict) -> dict:
        """One optimizer step on the rows sent (each rank takes its share), plus a CE batch when alternating."""
        import torch

        from coderl_ray.train.loop import step_plan, step_seed, train_step

        slot = self._slot(cmd)
        state = slot.online
        if state is None:
            raise ValueError(f"slot {cmd['slot']!r}: 'step' before 'begin'")
        cfg = state["cfg"]
        self._use_threads(cfg)
        rows = _rank_rows(cmd["rows"], self.rank, self.world)
        kind = cmd.get("kind", cfg.objective)
        step = state["step"]
        torch.manual_seed(step_seed(cfg.seed, self.rank, step))
        if kind == "critic":
            plan = [("critic", 1.0)]
        elif kind == "rl" and rows:
            plan = step_plan(cfg, step, state["ce"] is not None)
        else:
            plan = [("ce", 1.0)]  # no RL rows this step (or the CE-only control): cross-entropy on the ground truth
        parts = []
        for part, share in plan:
            if part == "ce":
                if state["ce"] is None:
                    raise ValueError("a cross-entropy step needs ground-truth rows ('ce_rows' in 'begin')")
                parts.append((part, next(state["ce"]), share))
            else:
                parts.append((part, rows, share))
        params = [p for p in slot.model.parameters() if p.requires_grad]
        slot.model.train()
        metrics = train_step(cfg, slot.model, parts, slot.tokenizer.pad_token_id, self.device, state["optimizer"],
                             state["scheduler"], params)
        state["step"] = step + 1
        metrics["step"] = step + 1
        metrics["rows"] = len(rows)
        metrics["torch_threads"] = torch.get_num_threads()
        return metrics

    def _use_threads(self, cfg) -> None:
        """Compute with the threads the command's run asks for (``torch_threads``; 0: the group's own): the staged
        loop's runs may borrow idle cores, the online loop's may not (``concurrent_torch_threads``)."""
        import torch

        threads = cfg.torch_threads or self.default_threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def save(self, cmd: dict) -> dict:
        from coderl_ray.train.loop import save_model
        from coderl_ray.train.parallel import is_fsdp

        slot = self._slot(cmd)
        dest = Path(cmd["path"])
        state = None
        if is_fsdp(slot.model):
            state = _full_model_state(slot.model, self.rank)
        if self.rank == 0:
            tmp = dest.with_name(dest.name + ".tmp")
            _rmtree(tmp)
            save_model(slot.model, tmp, slot.tokenizer, state_dict=state)
            _rmtree(dest)
            tmp.rename(dest)
        return {"slot": cmd["slot"], "path": str(dest)}

    def checkpoint(self, cmd: dict) -> dict:
        """Model, optimizer, schedule, step and CE cursor of an online slot, so a restarted group resumes there."""
        import torch

        from coderl_ray.train.parallel import full_state_dicts

        slot = self._slot(cmd)
        state = slot.online
        self.save(cmd)
        model_sd, optim_sd = full_state_dicts(slot.model, state["optimizer"], self.rank)
        del model_sd
        if self.rank == 0:
            torch.save({"optimizer": optim_sd, "scheduler": state["scheduler"].state_dict(), "step": state["step"],
                        "ce": state["ce"].position if state["ce"] is not None else None,
                        "loop": asdict(state["cfg"])}, Path(cmd["path"]) / ONLINE_STATE)
        return {"slot": cmd["slot"], "path": cmd["path"], "step": state["step"]}

    def publish(self, cmd: dict) -> dict:
        from coderl_ray.roles.weights import cpu_state_dict, publish_state
        from coderl_ray.train.parallel import is_fsdp

        slot = self._slot(cmd)
        state = _full_model_state(slot.model, self.rank) if is_fsdp(slot.model) else None
        if self.rank == 0:
            publish_state(self.store, cmd["name"], cmd["version"],
                          state if state is not None else cpu_state_dict(slot.model))
        return {"name": cmd["name"], "version": cmd["version"]}

    def resume(self, cmd: dict) -> dict:
        """Rebuild a slot from an online checkpoint (a driver that restarts a killed run): model, optimizer,
        schedule, step and CE cursor, as a restarted worker group does from its restore point."""
        self.restore(cmd["slot"], {"path": cmd["path"], "load": cmd["load"], "begin": cmd["begin"]})
        return {"slot": cmd["slot"], "step": self.slots[cmd["slot"]].online["step"]}

    def drop(self, cmd: dict) -> dict:
        self.slots.pop(cmd["slot"], None)
        return {"slot": cmd["slot"]}

    # --- helpers -------------------------------------------------------------------------------------------------

    def _slot(self, cmd: dict) -> _Slot:
        if cmd["slot"] not in self.slots:
            raise ValueError(f"no model in slot {cmd['slot']!r} (held: {sorted(self.slots) or 'none'}); 'load' it "
                             "first")
        return self.slots[cmd["slot"]]

    def _shards(self, data: dict[str, Any]) -> dict[str, Any]:
        """Each dataset split across the ranks as Ray Train splits it: rank 0 splits (one coordinator per split),
        every rank receives its iterator over the process group."""
        import torch.distributed as dist

        splits = None
        if self.rank == 0:
            splits = {name: _split(ds, self.world) for name, ds in data.items()}
        if self.world > 1:
            box = [splits]
            dist.broadcast_object_list(box, src=0)
            splits = box[0]
        return {name: its[self.rank] for name, its in splits.items()}

    def restore(self, slot: str, point: dict) -> None:
        """Rebuild a slot from its last saved state (after a restart of the group)."""
        import torch

        from coderl_ray.train.loop import make_optimizer

        load = dict(point["load"])
        if not point.get("from_load"):
            load["loop"] = {**load["loop"], "init_path": point["path"], "new_critic": False}
        self.load(load)
        s = self.slots[slot]
        s.load = point["load"]
        if point.get("begin") is not None:
            saved = torch.load(Path(point["path"]) / ONLINE_STATE, map_location="cpu", weights_only=False)
            cfg = _loop_config(point["begin"]["loop"])
            optimizer, scheduler = make_optimizer(cfg, s.model, {"optimizer": saved["optimizer"],
                                                                 "scheduler": saved["scheduler"]},
                                                  fused=self.device.type == "cuda")
            s.online = {"cfg": cfg, "optimizer": optimizer, "scheduler": scheduler, "step": saved["step"],
                        "ce": self._ce_cursor(point["begin"], cfg, tuple(saved["ce"] or (0, 0)))}
            s.begin = point["begin"]


ONLINE_STATE = "online_state.pt"


def _loop_config(values: dict):
    from coderl_ray.train.loop import LoopConfig

    return values if not isinstance(values, dict) else LoopConfig(**values)


def _split(ds, world: int) -> list:
    from coderl_ray.train.loop import _ordered_execution

    ds = ds.copy(ds)
    ds.context.execution_options = _ordered_execution()
    return ds.streaming_split(world, equal=True)


def _rank_rows(rows, rank: int, world: int) -> list[dict]:
    """This rank's rows of a step: a list, an Arrow table or an ObjectRef of either, dealt round-robin."""
    import pyarrow as pa
    import ray

    if isinstance(rows, ray.ObjectRef):
        rows = ray.get(rows)
    if isinstance(rows, list) and rows and isinstance(rows[0], ray.ObjectRef):
        rows = ray.get(rows)
        rows = [r for part in rows for r in (part.to_pylist() if isinstance(part, pa.Table) else part)]
    if isinstance(rows, pa.Table):
        rows = rows.to_pylist()
    return list(rows[rank::world])


def _shuffled_batches(rows: list[dict], size: int, seed: int):
    import random

    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    for start in range(0, len(order), size):
        yield [rows[i] for i in order[start: start + size]]


def _full_model_state(model, rank: int):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if rank == 0 else None


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


_COMMANDS = ("load", "train", "begin", "step", "save", "checkpoint", "publish", "resume", "drop")


def serve_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point of a :class:`TrainerGroup`: attach, restore, then serve commands until ``stop``."""
    import ray

    worker = _Worker(config)
    channel = worker.channel
    import os

    start = ray.get(channel.attach.remote(os.getpid()))
    for slot, point in start["restore"].items():
        worker.restore(slot, point)
    if start["attaches"] > worker.world and worker.rank == 0:
        print(f"[{config['name']}] trainer restarted: resuming at command {start['next_seq']} from "
              f"{ {s: p['path'] for s, p in start['restore'].items()} or 'the first command'}", flush=True)
    seq = start["next_seq"]
    restored_at = {slot: point["seq"] for slot, point in start["restore"].items()}
    while True:
        cmd = ray.get(channel.next.remote(seq))
        op = cmd["op"]
        if op == "stop":
            break
        if seq <= restored_at.get(cmd.get("slot"), -1):
            seq += 1  # its effect is in the state the slot was restored from
            continue
        restore = None
        try:
            if op not in _COMMANDS:
                raise ValueError(f"unknown trainer command {op!r} (known: {', '.join(_COMMANDS)})")
            result = getattr(worker, op)(cmd)
            if op == "train" and cmd.get("save"):
                result["save"] = worker.save({"slot": cmd["slot"], "path": cmd["save"]})
            if op in ("train", "step") and cmd.get("publish"):
                worker.publish({"slot": cmd["slot"], **cmd["publish"]})
            restore = _restore_point(worker, cmd)
            reply = {"ok": True, "result": result}
        except Exception as exc:  # answered to the driver, which raises it; the group serves on
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        if worker.rank == 0:
            ray.get(channel.done.remote(seq, reply, restore))
        seq += 1


def _restore_point(worker: _Worker, cmd: dict) -> dict | None:
    """How a restarted group rebuilds the slot ``cmd`` touched, when after ``cmd`` it is whole in a folder: a
    freshly loaded model (its source folder), a saved one, or an online slot's full checkpoint (model, optimizer
    and schedule; a plain save of an online slot lacks them, so its last checkpoint stays the restore point)."""
    slot, op = cmd.get("slot"), cmd["op"]
    if op == "drop":
        return {slot: None}
    s = worker.slots.get(slot)
    if s is None:
        return None
    if op == "load":
        return {slot: {"path": s.load["loop"]["init_path"], "load": s.load, "begin": None, "from_load": True}}
    if op in ("checkpoint", "resume"):
        return {slot: {"path": str(cmd["path"]), "load": s.load, "begin": s.begin}}
    path = cmd.get("path") if op == "save" else cmd.get("save") if op == "train" else None
    if path and s.online is None:
        return {slot: {"path": str(path), "load": s.load, "begin": None}}
    return None


class TrainerGroup:
    """The driver's handle on a persistent trainer: one Ray Train ``fit()`` in a background thread, and the channel.

    ``scaling``: the run's :class:`~coderl_ray.config.TrainConfig` (workers, GPU share, CPUs per worker, failures).
    """

    def __init__(self, name: str, scaling, storage_path: str | Path, store, torch_threads: int = 0):
        import ray
        import ray.train
        from ray.train.torch import TorchTrainer

        from coderl_ray.ray_runtime import train_logging_config
        from coderl_ray.registry import train_workers

        self.name = name
        self.channel = ray.remote(TrainerChannel).options(num_cpus=0, max_concurrency=64).remote()
        storage_path = Path(storage_path).resolve()
        storage_path.mkdir(parents=True, exist_ok=True)
        self._trainer = TorchTrainer(
            serve_per_worker,
            train_loop_config={"channel": self.channel, "store": store, "name": name,
                               "torch_threads": torch_threads},
            # What the registry says this trainer requests (coderl-ray plan reads the same): train.num_workers
            # workers, each train.cpus_per_worker CPUs and with use_gpu train.gpus_per_worker of a GPU.
            scaling_config=train_workers(scaling, name).scaling_config(),
            run_config=ray.train.RunConfig(name=f"{name}_trainer_{int(time.time())}", storage_path=str(storage_path),
                                           failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
                                           logging_config=train_logging_config()),
        )
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fit, name=f"{name}-trainer", daemon=True)
        self._thread.start()
        self.commands = 0

    def _fit(self) -> None:
        try:
            self._trainer.fit()
        except BaseException as exc:  # surfaced by the next wait
            self._error = exc

    def submit(self, command: dict) -> int:
        import ray

        self._check_alive()
        self.commands += 1
        return ray.get(self.channel.put.remote(command))

    def result_ref(self, seq: int):
        """An ObjectRef of command ``seq``'s reply (for ``ray.wait`` next to other work); read it with
        :meth:`unwrap`."""
        return self.channel.result.remote(seq)

    def wait(self, seq: int) -> dict:
        import ray

        ref = self.result_ref(seq)
        while True:
            ready, _ = ray.wait([ref], timeout=2.0)
            if ready:
                return self.unwrap(ray.get(ready[0]))
            self._check_alive()

    def unwrap(self, reply: dict) -> dict:
        if not reply["ok"]:
            raise TrainerError(f"{self.name} trainer: {reply['error']}\n{reply['traceback']}")
        return reply["result"]

    def run(self, command: dict) -> dict:
        return self.wait(self.submit(command))

    def worker_pids(self) -> list[int]:
        """The processes of the current worker group (the last ones to attach)."""
        import ray

        return ray.get(self.channel.stats.remote())["pids"][-self._workers:]

    def restarts(self) -> int:
        """How many times the worker group was started again after losing a worker."""
        import ray

        stats = ray.get(self.channel.stats.remote())
        return max(0, stats["attaches"] // max(1, self._workers) - 1)

    @property
    def _workers(self) -> int:
        return self._trainer.scaling_config.num_workers

    def _check_alive(self) -> None:
        if self._error is not None:
            raise TrainerError(f"{self.name} trainer's worker group failed: {self._error}") from self._error
        if not self._thread.is_alive():
            raise TrainerError(f"{self.name} trainer's worker group has stopped")

    def close(self) -> None:
        import ray

        if self._thread.is_alive():
            ray.get(self.channel.put.remote({"op": "stop"}))
            self._thread.join(timeout=60)

