"""The stage registry: one entry per pipeline stage, so that the pipeline, ``coderl-ray plan``, the CLI and ``jobs/``
cannot drift apart.

Each :class:`StageSpec` names

* ``functions``: what runs it, by name in :mod:`coderl_ray.stages` (the first is the stage's entry point);
* ``runs``: whether the pipeline runs it for a config (``rl.rounds``, ``critic.inference_classes``, ``repair.enabled``,
  ``cs.enabled``);
* ``resources``: what it asks Ray for, as :class:`Pool` s (workers x CPUs / GPUs / custom resources per worker, the
  model each worker holds, and which pools run at the same time), computed from the config; the helpers
  (:func:`generator_pool`, :func:`sandbox_pool`, ...) are what :mod:`coderl_ray.stages` should pass to Ray;
* ``plan``: its memory estimate, a builder in :mod:`coderl_ray.plan` by name (``plan_<stage>``);
* ``commands`` and ``jobs``: the ``coderl-ray`` subcommands (:data:`coderl_ray.cli.COMMANDS`) and the ``jobs/*.py``
  files that run it on its own (two where a user chains two commands, e.g. ``generate --sampling eval --execute``
  then ``evaluate``).

:data:`STAGES` lists them in pipeline order. Nothing here imports Ray, torch or the stages: reading the registry is
free (``coderl-ray plan`` reads it without a cluster). ``tests/test_registry.py`` checks that every entry's functions,
plan builder, commands and job files exist, and that :mod:`coderl_ray.pipeline` runs exactly these stages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coderl_ray.config import PipelineConfig


@dataclass(frozen=True)
class Pool:
    """One group of Ray workers a stage requests.

    ``workers``: how many (0 = one per unit of the first custom resource in the cluster: the sandbox pool's
    default); ``cpus`` / ``gpus`` / ``resources``: per worker; ``model``: what each worker holds (``""`` = no
    model); ``phase``: pools of the same phase of a stage run at the same time, phases one after the other;
    ``trainer``: a Ray Train worker group (``ScalingConfig``) rather than a Ray Data actor pool; ``gpu_key``: the
    config key that sets its GPU share.
    """

    role: str
    workers: int
    cpus: float
    gpus: float = 0.0
    resources: tuple[tuple[str, float], ...] = ()
    model: str = ""
    phase: int = 0
    trainer: bool = False
    gpu_key: str = ""

    def describe(self) -> str:
        """e.g. ``generators: 8 x {CPU: 4, GPU: 1} (actor)``."""
        res = [f"CPU: {self.cpus:g}"] + ([f"GPU: {self.gpus:g}"] if self.gpus else []) + \
            [f"{k}: {v:g}" for k, v in self.resources]
        size = str(self.workers) if self.workers else \
            f"one per unit of '{self.resources[0][0] if self.resources else 'CPU'}' in the cluster"
        return f"{self.role}: {size} x {{{', '.join(res)}}}" + (f" ({self.model})" if self.model else "")

    def map_batches_kwargs(self) -> dict[str, Any]:
        """What ``Dataset.map_batches`` takes for a pool of ``workers`` actors (imports Ray when called). The sandbox
        pool (``workers`` 0: sized from the cluster) is built by :func:`coderl_ray.execution.execute_samples`."""
        import ray

        if self.workers < 1:
            raise ValueError(f"{self.role}: a pool sized from the cluster (workers=0) has no fixed actor pool; "
                             "coderl_ray.execution sizes it")

        kwargs: dict[str, Any] = {"compute": ray.data.ActorPoolStrategy(size=self.workers), "num_cpus": self.cpus,
                                  "num_gpus": self.gpus}
        if self.resources:
            kwargs["resources"] = dict(self.resources)
        return kwargs


# --- the pools, as the stages request them ----------------------------------------------------------------------


def generator_pool(cfg: PipelineConfig, model: str = "actor", phase: int = 0) -> Pool:
    r = cfg.rollout
    return Pool("generators", r.num_workers, r.cpus_per_worker, r.gpus_per_worker, model=model, phase=phase,
                gpu_key="rollout.gpus_per_worker")


def sandbox_pool(cfg: PipelineConfig, phase: int = 0) -> Pool:
    s = cfg.sandbox
    return Pool("sandbox executors", s.max_tasks_in_flight, s.cpus_per_task,
                resources=((s.resource, 1.0),) if s.resource else (), phase=phase)


def rollout_forward_pool(cfg: PipelineConfig, role: str, model: str, phase: int = 0) -> Pool:
    """RL scoring's critic scorers and the old-log-probability pass: the generators' resources (``rollout.*``)."""
    r = cfg.rollout
    return Pool(role, r.num_workers, r.cpus_per_worker, r.gpus_per_worker, model=model, phase=phase,
                gpu_key="rollout.gpus_per_worker")


def cs_scorer_pool(cfg: PipelineConfig, phase: int = 0) -> Pool:
    c = cfg.cs
    return Pool("critic scorers", c.critic_num_workers, c.critic_cpus_per_worker, c.critic_gpus_per_worker,
                model="critic", phase=phase, gpu_key="cs.critic_gpus_per_worker")


def trainer_pool(cfg: PipelineConfig, model: str, phase: int = 0) -> Pool:
    t = cfg.train
    return Pool(f"Ray Train workers ({t.parallel})", t.num_workers, t.cpus_per_worker, 1.0 if t.use_gpu else 0.0,
                model=model, phase=phase, trainer=True, gpu_key="train.use_gpu")


def _rl_pools(cfg: PipelineConfig) -> list[Pool]:
    trust_region = cfg.rl.clip_ratio > 0 and not cfg.rl.ce_only
    pools = [rollout_forward_pool(cfg, "old log-probability pass", "actor")] if trust_region else []
    return pools + [trainer_pool(cfg, "actor", phase=len(pools))]


def _cs_pools(cfg: PipelineConfig) -> list[Pool]:
    model = "actor + repair model" if cfg.repair.enabled else "actor"
    # Each pass streams generation, the example tests and scoring at once; the hidden-test judgement follows.
    return [generator_pool(cfg, model), sandbox_pool(cfg), cs_scorer_pool(cfg), sandbox_pool(cfg, phase=1)]


# --- the stages -------------------------------------------------------------------------------------------------


def _always(cfg: PipelineConfig) -> bool:
    return True


def _rounds(cfg: PipelineConfig) -> bool:
    return cfg.rl.rounds > 0 and cfg.rl.loop == "staged"


def _online(cfg: PipelineConfig) -> bool:
    return cfg.rl.rounds > 0 and cfg.rl.loop == "online"


def _online_pools(cfg: PipelineConfig) -> list[Pool]:
    """Everything at once: generators, sandbox executors, critic scorers and both trainers."""
    return [generator_pool(cfg), sandbox_pool(cfg), rollout_forward_pool(cfg, "critic scorers", "critic"),
            trainer_pool(cfg, "actor"), trainer_pool(cfg, "critic")]


@dataclass(frozen=True)
class StageSpec:
    name: str
    functions: tuple[str, ...]
    runs: Callable[[PipelineConfig], bool]
    resources: Callable[[PipelineConfig], list[Pool]]
    plan: str
    commands: tuple[str, ...]
    jobs: tuple[str, ...]
    usage: str = ""  # how to run it alone, one line
    log_names: tuple[str, ...] = field(default=())  # its names in state.json ("round_<r>/rollout"); default: name

    def names_in_log(self) -> tuple[str, ...]:
        return self.log_names or (self.name,)


STAGES: tuple[StageSpec, ...] = (
    StageSpec("data", ("load_problems", "write_problems"), _always, lambda cfg: [], "plan_data",
              ("prepare",), ("jobs/prepare.py",), "coderl-ray prepare --config C --out DIR"),
    StageSpec("init", ("prepare_actor", "ground_truth_dataset"), _always, lambda cfg: [], "plan_init",
              ("prepare",), ("jobs/prepare.py",), "coderl-ray prepare --config C --out DIR"),
    StageSpec("eval", ("evaluate",), _always, lambda cfg: [generator_pool(cfg), sandbox_pool(cfg)], "plan_eval",
              ("generate", "evaluate"), ("jobs/generate.py", "jobs/evaluate.py"),
              "coderl-ray generate --sampling eval --execute --split test --actor A --out R.jsonl, then "
              "coderl-ray evaluate --results R.jsonl", ("eval/<phase>",)),
    StageSpec("sft", ("train_sft",), _always, lambda cfg: [trainer_pool(cfg, "actor")], "plan_sft",
              ("train-actor",), ("jobs/train_actor.py",), "coderl-ray train-actor --mode sft --out DIR"),
    StageSpec("rollout", ("rollout_round",), _rounds, lambda cfg: [generator_pool(cfg), sandbox_pool(cfg)],
              "plan_rollout", ("generate",), ("jobs/generate.py",),
              "coderl-ray generate --actor A --buffer B --round R", ("round_<r>/rollout",)),
    StageSpec("critic", ("train_critic",), _rounds, lambda cfg: [trainer_pool(cfg, "critic")], "plan_critic",
              ("train-critic",), ("jobs/train_critic.py",),
              "coderl-ray train-critic --buffer B --rounds 1,2 --from-actor A | --from-critic C --out DIR",
              ("round_<r>/critic",)),
    StageSpec("score", ("score_round",), _rounds,
              lambda cfg: [rollout_forward_pool(cfg, "critic scorers", "critic")], "plan_score",
              ("score",), ("jobs/score.py",), "coderl-ray score --samples ROUND --critic C --out DIR",
              ("round_<r>/score",)),
    StageSpec("rl", ("train_rl",), _rounds, _rl_pools, "plan_rl", ("train-actor",), ("jobs/train_actor.py",),
              "coderl-ray train-actor --mode rl --actor A --scored S --out DIR", ("round_<r>/rl",)),
    StageSpec("online", ("online_rounds",), _online, _online_pools, "plan_online", ("pipeline",),
              ("jobs/pipeline.py",), "coderl-ray pipeline --config C rl.loop=online"),
    StageSpec("critic_binary", ("train_critic_binary",), lambda cfg: cfg.critic.inference_classes == 2,
              lambda cfg: [trainer_pool(cfg, "critic"), rollout_forward_pool(cfg, "critic scorers", "critic", 1)],
              "plan_critic_binary", ("train-critic",), ("jobs/train_critic.py",),
              "coderl-ray train-critic --binary --buffer B --rounds 1,2 --from-critic C --out DIR"),
    StageSpec("repair", ("train_repair",), lambda cfg: cfg.repair.enabled,
              lambda cfg: [trainer_pool(cfg, "repair model")], "plan_repair", ("train-repair",),
              ("jobs/train_repair.py",), "coderl-ray train-repair --buffer B --actor A --out DIR"),
    StageSpec("cs", ("critic_sampling",), lambda cfg: cfg.cs.enabled and cfg.rl.rounds > 0, _cs_pools, "plan_cs",
              ("critic-sample",), ("jobs/critic_sample.py",),
              "coderl-ray critic-sample --actor A --critic C [--repair R] --out DIR"),
)

BY_NAME: dict[str, StageSpec] = {s.name: s for s in STAGES}


def stage(name: str) -> StageSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no stage {name!r} in coderl_ray.registry (stages: {', '.join(BY_NAME)})") from None


def pipeline_stages(cfg: PipelineConfig) -> list[StageSpec]:
    """The stages the pipeline runs for ``cfg``, in order (a round's stages once, whatever ``rl.rounds``)."""
    return [s for s in STAGES if s.runs(cfg)]


def uses_gpus(cfg: PipelineConfig) -> bool:
    """A GPU config: some stage of the pipeline asks for a GPU."""
    return any(p.gpus > 0 for s in pipeline_stages(cfg) for p in s.resources(cfg))


def cpu_model_pools(cfg: PipelineConfig) -> list[tuple[str, Pool]]:
    """(stage, pool) of every pool that holds a model on CPU while another stage of ``cfg`` asks for a GPU: almost
    always a key left at its CPU default (e.g. ``cs.critic_gpus_per_worker``), which would run a model stage on one
    CPU per worker."""
    if not uses_gpus(cfg):
        return []
    return [(s.name, p) for s in pipeline_stages(cfg) for p in s.resources(cfg) if p.model and p.gpus == 0]


def pack_gpus(shares: list[float], gpus: int) -> bool:
    """Whether workers asking for ``shares`` of a GPU each fit on ``gpus`` GPUs, as Ray places them: a share of 1
    or more takes whole GPUs, fractions share one GPU while they sum to at most 1 (first fit, largest first)."""
    free = [1.0] * gpus
    for share in sorted(shares, reverse=True):
        if share >= 1:
            whole = int(-(-share // 1))
            empty = [i for i, f in enumerate(free) if f >= 1.0]
            if len(empty) < whole:
                return False
            for i in empty[:whole]:
                free[i] = 0.0
            continue
        slot = next((i for i, f in enumerate(free) if f + 1e-9 >= share), None)
        if slot is None:
            return False
        free[slot] -= share
    return True


def gpu_phases(cfg: PipelineConfig) -> list[tuple[str, int, list[Pool], float]]:
    """(stage, phase, pools, GPUs they ask for together) of every phase of the pipeline that asks for a GPU."""
    out = []
    for s in pipeline_stages(cfg):
        pools = s.resources(cfg)
        for phase in sorted({p.phase for p in pools}):
            members = [p for p in pools if p.phase == phase and p.gpus > 0]
            if members:
                out.append((s.name, phase, members, sum(p.workers * p.gpus for p in members)))
    return out
