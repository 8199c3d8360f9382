"""The stage registry: one entry per pipeline stage, so that the pipeline, ``coderl-ray plan``, the CLI and ``jobs/``
cannot drift apart.

Each :class:`StageSpec` names

* ``functions``: what runs it, by name in :mod:`coderl_ray.stages` (the first is the stage's entry point);
* ``runs``: whether the pipeline runs it for a config (``rl.rounds``, ``critic.inference_classes``, ``repair.enabled``,
  ``cs.enabled``, ``critic.mutants_per_program``, and for the rounds' critic whether anything reads it:
  :func:`needs_critic`);
* ``resources``: the run's roles it uses, as :class:`Pool` s (workers x CPUs / GPUs / custom resources per worker,
  the model each worker holds, and which run at the same time), computed from the config, in the order it starts
  them; the helpers (:func:`generator_pool`, :func:`sandbox_pool`, :func:`scorer_pool`, :func:`train_workers`) are
  exactly what :class:`coderl_ray.roles.setup.Roles` asks Ray for;
* ``plan``: its memory estimate, a builder in :mod:`coderl_ray.plan` by name (``plan_<stage>``);
* ``commands`` and ``jobs``: the ``coderl-ray`` subcommands (:data:`coderl_ray.cli.COMMANDS`) and the ``jobs/*.py``
  files that run it on its own (two where a user chains two commands, e.g. ``generate --sampling eval --execute``
  then ``evaluate``).

:data:`STAGES` lists them in pipeline order; :func:`run_roles` gives the roles a run starts (each held to the end),
in the order it starts them, and :func:`place_gpus` where Ray puts their GPU shares. Nothing here imports Ray
(except :meth:`Pool.scaling_config`, when called), torch or the stages: reading the registry is free
(``coderl-ray plan`` reads it without a cluster). ``tests/test_registry.py`` checks that every entry's functions,
plan builder, commands and job files exist, and that :mod:`coderl_ray.pipeline` runs exactly these stages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from coderl_ray.config import PipelineConfig, TrainConfig


@dataclass(frozen=True)
class Pool:
    """One group of Ray workers a stage requests: one of the run's persistent roles (``key``).

    ``workers``: how many (0 = one per unit of the first custom resource in the cluster: the sandbox pool's
    default); ``cpus`` / ``gpus`` / ``resources``: per worker; ``model``: what each worker holds (``""`` = no
    model); ``phase``: pools of the same phase of a stage run at the same time, phases one after the other;
    ``trainer``: a Ray Train worker group (``ScalingConfig``) rather than a pool of Ray actors; ``gpu_key``: the
    config key that sets its GPU share; ``key``: the role (:data:`ROLES`), as :class:`coderl_ray.roles.setup.Roles`
    names it.
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
    key: str = ""

    def describe(self) -> str:
        """e.g. ``generators: 8 x {CPU: 4, GPU: 1} (actor)``."""
        res = [f"CPU: {self.cpus:g}"] + ([f"GPU: {self.gpus:g}"] if self.gpus else []) + \
            [f"{k}: {v:g}" for k, v in self.resources]
        size = str(self.workers) if self.workers else \
            f"one per unit of '{self.resources[0][0] if self.resources else 'CPU'}' in the cluster"
        return f"{self.role}: {size} x {{{', '.join(res)}}}" + (f" ({self.model})" if self.model else "")

    def ray_options(self) -> dict[str, Any]:
        """What each actor of a role pool asks Ray for (``RolePool``'s options): exactly this pool's request."""
        options: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.resources:
            options["resources"] = dict(self.resources)
        return options

    def scaling_config(self):
        """A trainer's ``ray.train.ScalingConfig`` (imports Ray when called): ``workers`` workers of ``cpus`` CPUs
        and, on GPU, ``gpus`` of a GPU each (Ray Train accepts a fraction: ``resources_per_worker={"GPU": 0.5}``)."""
        import ray.train

        per_worker: dict[str, float] = {"CPU": self.cpus, **dict(self.resources)}
        if self.gpus:
            per_worker["GPU"] = self.gpus
        return ray.train.ScalingConfig(num_workers=self.workers, use_gpu=self.gpus > 0,
                                       resources_per_worker=per_worker)


# The persistent roles of a run (coderl_ray/roles/setup.py:Roles), each started once and held to the end.
ROLES = ("generator", "sandbox", "actor_trainer", "critic_trainer", "scorer")

# The share of a placement resource (rollout.resource, train.resource) each worker requests: small, so that it only
# says where a role may run (a node advertising one unit takes up to 100 workers), never how many.
PLACEMENT_SHARE = 0.01


def _placement(resource: str) -> tuple[tuple[str, float], ...]:
    return ((resource, PLACEMENT_SHARE),) if resource else ()


# --- the pools, as the roles request them -----------------------------------------------------------------------


def generator_pool(cfg: PipelineConfig, model: str = "actor", phase: int = 0) -> Pool:
    r = cfg.rollout
    return Pool("generators", r.num_workers, r.cpus_per_worker, r.gpus_per_worker, _placement(r.resource),
                model=model, phase=phase, gpu_key="rollout.gpus_per_worker", key="generator")


def sandbox_pool(cfg: PipelineConfig, phase: int = 0, resource: str | None = None) -> Pool:
    """``resource``: the custom resource executors ask for, when not ``sandbox.resource`` (Roles passes what
    :func:`coderl_ray.execution.stage.execution_resource` found in the running cluster)."""
    s = cfg.sandbox
    resource = s.resource if resource is None else resource
    return Pool("sandbox executors", s.max_tasks_in_flight, s.cpus_per_task,
                resources=((resource, 1.0),) if resource else (), phase=phase, key="sandbox")


def scorer_pool(cfg: PipelineConfig, model: str = "critic", phase: int = 0) -> Pool:
    """The critic scorers: RL scoring, the held-out quality checks, critic sampling and the online loop."""
    c = cfg.cs
    return Pool("critic scorers", c.critic_num_workers, c.critic_cpus_per_worker, c.critic_gpus_per_worker,
                _placement(cfg.rollout.resource), model=model, phase=phase, gpu_key="cs.critic_gpus_per_worker",
                key="scorer")


def train_workers(t: TrainConfig, trainer: str, model: str = "", phase: int = 0) -> Pool:
    """The Ray Train workers of the ``trainer`` ("actor" or "critic") trainer: both trainers are sized by
    ``train.*`` (docs/training.md, "Running on GPUs", says why one set of keys)."""
    gpus = t.gpus_per_worker if t.use_gpu else 0.0
    return Pool(f"{trainer} trainer (Ray Train, {t.parallel})", t.num_workers, t.cpus_per_worker, gpus,
                _placement(t.resource), model=model or trainer, phase=phase, trainer=True,
                gpu_key="train.gpus_per_worker" if t.use_gpu else "train.use_gpu", key=f"{trainer}_trainer")


def trainer_pool(cfg: PipelineConfig, trainer: str, model: str = "", phase: int = 0) -> Pool:
    return train_workers(cfg.train, trainer, model, phase)


def all_roles(cfg: PipelineConfig) -> list[Pool]:
    """Every role a run may start, as it asks Ray for it (what an in-process Ray must advertise room for)."""
    return [generator_pool(cfg), sandbox_pool(cfg), trainer_pool(cfg, "actor"), trainer_pool(cfg, "critic"),
            scorer_pool(cfg)]


def _cs_pools(cfg: PipelineConfig) -> list[Pool]:
    model = "actor + repair model" if cfg.repair.enabled else "actor"
    critic = "critic_binary" if cfg.critic.inference_classes == 2 else "critic"
    # Each pass streams generation, the example tests and scoring at once; the hidden-test judgement follows.
    return [generator_pool(cfg, model), sandbox_pool(cfg), scorer_pool(cfg, critic), sandbox_pool(cfg, phase=1)]


# --- the stages -------------------------------------------------------------------------------------------------


def _always(cfg: PipelineConfig) -> bool:
    return True


def _rounds(cfg: PipelineConfig) -> bool:
    return cfg.rl.rounds > 0 and cfg.rl.loop == "staged"


def needs_critic(cfg: PipelineConfig) -> bool:
    """Whether a run trains the rounds' critic: its RL step weights tokens by it (``rl.use_critic``, not under
    ``rl.ce_only``), or critic sampling or the binary critic read it. Without it (GRPO, RLOO, CodeRL without critic,
    the CE-only control, with ``cs.enabled=false``), the staged rounds skip the critic and score stages and the RL
    step reads the buffer's round directly; the online loop starts no critic trainer and no scorers."""
    uses = cfg.rl.use_critic and not cfg.rl.ce_only
    return bool(uses or (cfg.cs.enabled and cfg.rl.rounds > 0) or cfg.critic.inference_classes == 2)


def _rounds_critic(cfg: PipelineConfig) -> bool:
    return _rounds(cfg) and needs_critic(cfg)


def _critic_mutants(cfg: PipelineConfig) -> bool:
    return _rounds_critic(cfg) and cfg.critic.mutants_per_program > 0


def _online(cfg: PipelineConfig) -> bool:
    return cfg.rl.rounds > 0 and cfg.rl.loop == "online"


def _online_pools(cfg: PipelineConfig) -> list[Pool]:
    """Everything at once: generators, sandbox executors, critic scorers and both trainers (in the order the online
    loop starts them: it reads the pools' numbers, starting the scorers, before it starts the critic trainer); the
    actor's side alone when nothing reads the critic."""
    if not needs_critic(cfg):
        return [generator_pool(cfg), sandbox_pool(cfg), trainer_pool(cfg, "actor")]
    return [generator_pool(cfg), sandbox_pool(cfg), scorer_pool(cfg), trainer_pool(cfg, "actor"),
            trainer_pool(cfg, "critic")]


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
    StageSpec("critic_mutants", ("critic_mutants",), _critic_mutants, lambda cfg: [sandbox_pool(cfg)],
              "plan_critic_mutants", ("train-critic",), ("jobs/train_critic.py",),
              "coderl-ray train-critic --problems TRAIN.jsonl ... (critic.mutants_per_program > 0: writes the "
              "mutants next to --ground-truth first)"),
    StageSpec("rollout", ("rollout_round",), _rounds, lambda cfg: [generator_pool(cfg), sandbox_pool(cfg)],
              "plan_rollout", ("generate",), ("jobs/generate.py",),
              "coderl-ray generate --actor A --buffer B --round R", ("round_<r>/rollout",)),
    StageSpec("critic", ("train_critic",), _rounds_critic, lambda cfg: [trainer_pool(cfg, "critic")], "plan_critic",
              ("train-critic",), ("jobs/train_critic.py",),
              "coderl-ray train-critic --buffer B --rounds 1,2 --from-actor A | --from-critic C --out DIR",
              ("round_<r>/critic",)),
    StageSpec("score", ("score_round",), _rounds_critic, lambda cfg: [scorer_pool(cfg)], "plan_score",
              ("score",), ("jobs/score.py",), "coderl-ray score --samples ROUND --critic C --out DIR",
              ("round_<r>/score",)),
    StageSpec("rl", ("train_rl",), _rounds, lambda cfg: [trainer_pool(cfg, "actor")], "plan_rl", ("train-actor",),
              ("jobs/train_actor.py",),
              "coderl-ray train-actor --mode rl --actor A --scored S --out DIR", ("round_<r>/rl",)),
    StageSpec("online", ("online_rounds",), _online, _online_pools, "plan_online", ("pipeline",),
              ("jobs/pipeline.py",), "coderl-ray pipeline --config C rl.loop=online"),
    StageSpec("critic_quality", ("critic_quality",), lambda cfg: _online(cfg) and needs_critic(cfg),
              lambda cfg: [scorer_pool(cfg)], "plan_critic_quality", ("score",), ("jobs/score.py",),
              "coderl-ray score --samples ROUND --critic C --out DIR --heldout EVAL (prints the critic's accuracy and AUC)",
              ("round_<r>/critic_quality",)),
    StageSpec("critic_binary", ("train_critic_binary",), lambda cfg: cfg.critic.inference_classes == 2,
              lambda cfg: [trainer_pool(cfg, "critic", "critic_binary"), scorer_pool(cfg, "critic_binary", 1)],
              "plan_critic_binary", ("train-critic",), ("jobs/train_critic.py",),
              "coderl-ray train-critic --binary --buffer B --rounds 1,2 --from-critic C --out DIR"),
    StageSpec("repair", ("train_repair",), lambda cfg: cfg.repair.enabled,
              lambda cfg: [trainer_pool(cfg, "actor", "repair model")], "plan_repair", ("train-repair",),
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


def run_roles(cfg: PipelineConfig) -> list[Pool]:
    """The roles the pipeline starts for ``cfg``, in the order it starts them (the first stage that uses each),
    each with every model it holds over the run. All of them hold their resources from their start to the end."""
    first: dict[str, Pool] = {}
    models: dict[str, list[str]] = {}
    for s in pipeline_stages(cfg):
        for p in s.resources(cfg):
            first.setdefault(p.key, p)
            held = models.setdefault(p.key, [])
            held += [m for m in p.model.split(" + ") if m and m not in held]
    return [replace(p, model=" + ".join(models[key]), phase=0) for key, p in first.items()]


def uses_gpus(cfg: PipelineConfig) -> bool:
    """A GPU config: some role of the pipeline asks for a GPU."""
    return any(p.gpus > 0 for p in run_roles(cfg))


def cpu_model_pools(cfg: PipelineConfig) -> list[Pool]:
    """Every role that holds a model on CPU while another role of ``cfg`` asks for a GPU: almost always a key left
    at its CPU default (e.g. ``cs.critic_gpus_per_worker``), which would run a model on one CPU per worker."""
    if not uses_gpus(cfg):
        return []
    return [p for p in run_roles(cfg) if p.model and p.gpus == 0]


# Ray counts resources in fixed point, 1/10000 of a unit (ray/common/scheduling/fixed_point.h): shares are compared
# in those units, so that 0.1 + 0.2 + 0.7 fills a GPU exactly, as it does for Ray.
_UNITS = 10_000


@dataclass
class Placement:
    """Where Ray puts GPU requests made one after the other: ``gpus[i]`` lists the (label, share) it gave GPU i;
    ``blocked`` is the first request that found no room (it would wait forever, and with it the run), with
    everything after it left out."""

    gpus: list[list[tuple[str, float]]]
    blocked: tuple[str, float] | None = None

    def used(self, i: int) -> float:
        return sum(share for _, share in self.gpus[i])


def place_gpus(requests: list[tuple[str, float]], gpus: int) -> Placement:
    """Place ``requests`` ((label, share of a GPU) in the order they are made) on ``gpus`` GPUs of one node as Ray
    does (``NodeResourceInstanceSet::TryAllocate`` in src/ray/common/scheduling/resource_instance_set.cc): a whole
    number of GPUs takes that many fully free GPUs, lowest index first; a fraction goes to the GPU it fills most
    (best fit: the least room left after it, lowest index on a tie). So fractions pile onto the GPU already in use:
    three 0.3 requests share GPU 0 while GPU 1 stays empty, and a whole GPU asked for later may then be missing.

    >>> place_gpus([("a", 0.3), ("b", 0.3), ("c", 0.3)], 2).gpus
    [[('a', 0.3), ('b', 0.3), ('c', 0.3)], []]
    """
    free = [_UNITS] * gpus
    out: list[list[tuple[str, float]]] = [[] for _ in range(gpus)]
    for label, share in requests:
        units = round(share * _UNITS)
        if units <= 0:
            continue
        if units >= _UNITS:
            whole = [i for i, f in enumerate(free) if f == _UNITS][: units // _UNITS]
            if len(whole) < units // _UNITS:
                return Placement(out, (label, share))
            for i in whole:
                free[i] = 0
                out[i].append((label, 1.0))
            continue
        fits = [i for i, f in enumerate(free) if f >= units]
        if not fits:
            return Placement(out, (label, share))
        best = min(fits, key=lambda i: (free[i] - units, i))
        free[best] -= units
        out[best].append((label, share))
    return Placement(out)


def gpu_requests(roles: list[Pool]) -> list[tuple[str, float]]:
    """One (role key, share) per worker that asks for a GPU, in the roles' order (a Ray Train group reserves its
    workers' bundles one after the other, as a pool starts its actors)."""
    return [(p.key, p.gpus) for p in roles if p.gpus > 0 for _ in range(p.workers)]


def role_cpus(roles: list[Pool]) -> float:
    """CPUs the roles with a fixed size reserve all run long (the sandbox pool, sized from the cluster, apart)."""
    return sum(p.workers * p.cpus for p in roles if p.key != "sandbox")
