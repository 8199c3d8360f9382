"""The CodeRL pipeline, top to bottom, with a checkpoint after every stage.

    SFT warm-up -> for each round: rollout+execute -> critic -> score -> RL -> evaluate (no critic, no score when
    nothing reads the critic: registry.needs_critic); or, rl.loop=online, all rounds as one stage -> evaluate each
    round's actor -> each round's critic quality
    -> binary critic (critic.inference_classes=2) -> repair model (repair.enabled) -> critic sampling (test)

Every stage writes a folder under ``output_dir`` and is recorded in ``output_dir/state.json`` when it finishes; a
rerun of the same command skips finished stages and resumes with the first unfinished one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from coderl_ray import stages
from coderl_ray.config import ConfigError, PipelineConfig, config_to_dict, diff_configs, save_config
from coderl_ray.data.problems import read_problems
from coderl_ray.registry import needs_critic
from coderl_ray.roles.setup import Roles, local_cpus


class StageError(RuntimeError):
    """A pipeline stage failed; finished stages are kept and a rerun resumes here."""


class StageLog:
    """Which stages are finished, with their wall time and summary, persisted after each one."""

    def __init__(self, path: Path):
        self.path = path
        self.state: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"stages": {}}

    def done(self, name: str) -> bool:
        return name in self.state["stages"]

    def info(self, name: str) -> dict[str, Any]:
        return self.state["stages"][name]["info"]

    def run(self, name: str, fn: Callable[[], dict | None]) -> dict[str, Any]:
        if self.done(name):
            print(f"==> {name}: finished in an earlier run, skipped", flush=True)
            return self.info(name)
        print(f"==> {name}", flush=True)
        start = time.perf_counter()
        try:
            info = fn() or {}
        except Exception as exc:
            raise StageError(f"stage '{name}' failed: {root_cause(exc)}\n"
                             f"Finished stages are kept in {self.path.parent}; rerun the same command to resume "
                             f"from '{name}'.") from exc
        wall = time.perf_counter() - start
        self.state["stages"][name] = {"wall_s": round(wall, 2), "info": info}
        self.save()
        print(f"    {name} done in {wall:.1f}s{_brief(info)}", flush=True)
        return info


    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, default=str))
        tmp.replace(self.path)


def _brief(info: dict[str, Any]) -> str:
    """A stage's numbers for its end line: top-level counts and rates, and an evaluation's overall pass@k."""
    shown = {k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    shown.update({k: v for k, v in (info.get("all") or {}).items() if k.startswith("pass@")})
    if not shown:
        return ""
    return ": " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())


# Keys that decide what the RL rounds are: a folder whose rounds ran under other values cannot be resumed into a
# coherent run (its finished rounds would be kept and the rest done the new way, one report mixing both).
ROUND_KEYS = ("rl.loop", "rl.algorithm", "rl.use_critic", "rl.ce_only")


def check_resume(cfg: PipelineConfig, out: Path, fresh: bool) -> None:
    saved = out / "config.yaml"
    if fresh and out.exists():
        shutil.rmtree(out)
    if saved.is_file() and not fresh:
        import yaml

        changed = diff_configs(yaml.safe_load(saved.read_text()) or {}, config_to_dict(cfg))
        state = out / "state.json"
        finished = json.loads(state.read_text()).get("stages", {}) if state.is_file() else {}
        rounds = [name for name in finished if name.startswith("round_") or name == "online"]
        clash = [key for key in changed if key in ROUND_KEYS]
        if clash and rounds:
            raise ConfigError(f"{out} holds RL rounds ({', '.join(rounds[:3])}{', ...' if len(rounds) > 3 else ''}) "
                             f"run with other {', '.join(clash)} (see {saved}): resuming would mix the two in one "
                             f"report. Give this run a folder of its own (output_dir=...) or pass --fresh to "
                             "start over.")
        if changed:
            print(f"WARNING: resuming {out} with changed config keys: {', '.join(changed)}. Finished stages are "
                  "not redone; pass --fresh to start over.", flush=True)
    save_config(cfg, saved)


def check_paths(cfg: PipelineConfig) -> None:
    """Fail before any work when a configured local path does not exist (Hub ids are checked when loaded)."""
    refs = {"data.train_path": cfg.data.train_path, "data.test_path": cfg.data.test_path,
            "model.tokenizer": cfg.model.tokenizer,
            "model.name_or_path": "" if cfg.model.name_or_path == "tiny" else cfg.model.name_or_path,
            "critic.backbone": "" if cfg.critic.backbone == "actor" else cfg.critic.backbone,
            "repair.init": "" if cfg.repair.init == "actor" or not cfg.repair.enabled else cfg.repair.init}
    for key, ref in refs.items():
        if ref and _looks_local(ref) and not Path(ref).expanduser().exists():
            raise FileNotFoundError(f"{key}: {ref} does not exist")


def _looks_local(ref: str) -> bool:
    # "Salesforce/codet5-base" is a Hub id; "/data/x", "./x", "~/x" and "x.jsonl" are paths.
    return ref.startswith(("/", ".", "~")) or ref.endswith((".jsonl", ".json", ".parquet")) or Path(ref).exists()


def run_pipeline(cfg: PipelineConfig, fresh: bool = False) -> dict[str, Any]:
    from coderl_ray.ray_runtime import init_ray
    from coderl_ray.summary import write_summary

    check_paths(cfg)
    # Fail before any work when a stage cannot fit in the GPUs' memory (coderl-ray plan shows the estimate).
    from coderl_ray.plan import check_plan

    check_plan(cfg)
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    check_resume(cfg, out, fresh)
    log = StageLog(out / "state.json")
    init_ray(cfg.ray_address, cfg.sandbox.resource, logical_cpus=local_cpus(cfg, os.cpu_count() or 1))
    started = time.perf_counter()

    def data() -> dict:
        train, test = stages.load_problems(cfg.data)
        stages.write_problems(train, test, out / "data")
        return {"train_problems": len(train), "test_problems": len(test)}

    log.run("data", data)
    train, test = read_problems(out / "data" / "train.jsonl"), read_problems(out / "data" / "test.jsonl")

    def init() -> dict:
        actor = stages.prepare_actor(cfg, train, out / "models")
        stages.ground_truth_dataset(train, actor, cfg, out / "data" / "ground_truth")
        return {"actor": str(actor)}

    log.run("init", init)

    # Every role starts once, on first use, and serves every later stage: the models stay in memory and the trainers
    # publish new weights to the generators and scorers by version (actor: -1 untrained, 0 after SFT, r after round
    # r; critic: r after round r).
    roles = Roles(cfg, out / "ray_train")
    try:
        _staged_loop(cfg, log, roles, train, test, out)
    finally:
        # Calls, retries (a call whose actor died and was sent again), busy share and start-up of every role. A rerun
        # that found every stage done started none: it keeps the record of the run that did the work.
        if roles.started or "roles" not in log.state:
            log.state["roles"] = roles.stats(time.perf_counter() - started)
        log.save()
        roles.close()

    summary = write_summary(log.state, out / "report")
    print(summary["table"], flush=True)
    print(f"\nReport: {out / 'report' / 'summary.md'}", flush=True)
    return summary


def _staged_loop(cfg: PipelineConfig, log: StageLog, roles: Roles, train: list[dict], test: list[dict],
                 out: Path) -> None:
    """SFT, then the rounds - staged (the original CodeRL's: sample -> execute -> critic -> score -> RL, one after
    the other) or online (:mod:`coderl_ray.online.loop`) - then what critic sampling needs, every stage on the run's
    persistent roles."""
    models, evals, buffer, storage = out / "models", out / "eval", out / "buffer", out / "ray_train"
    gt = out / "data" / "ground_truth"

    def evaluation(phase: str, actor: Path, version: int) -> None:
        # The tracked training problems (rl.tracked_problems) are scored from SFT on; the untrained model fails them.
        tracked_from = None if phase == "untrained" else train
        log.run(f"eval/{phase}", lambda: stages.evaluate(cfg, test, actor, evals / phase, phase, roles=roles,
                                                         version=version, tracked_from=tracked_from))

    evaluation("untrained", models / "actor_init", -1)
    log.run("sft", lambda: stages.train_sft(cfg, gt, models / "actor_init", models / "actor_sft", storage,
                                            roles=roles, version=0))
    evaluation("sft", models / "actor_sft", 0)

    actor, critic = models / "actor_sft", None
    with_critic = needs_critic(cfg)
    if with_critic and cfg.critic.mutants_per_program > 0 and cfg.rl.rounds > 0:
        # Hard negatives for every round's critic (PipelineConfig rejects them with the online loop).
        log.run("critic_mutants", lambda: stages.critic_mutants(cfg, train, gt, models / "actor_init", roles=roles))
    if cfg.rl.loop == "online":
        log.run("online", lambda: stages.online_rounds(cfg, train, out, roles=roles))
        steps = cfg.rl.steps_per_round
        for r in range(1, cfg.rl.rounds + 1):
            if cfg.eval.every_round or r == cfg.rl.rounds:
                evaluation(f"round_{r}", models / f"actor_round_{r}", r * steps)
        for r in range(1, cfg.rl.rounds + 1 if with_critic else 1):
            # The staged loop's score stage measures each round's critic; here it is measured after the fact, on the
            # same programs (the round's, and the evaluation's before it), so both loops report the critic alike.
            tag, heldout = f"round_{r}", evals / ("sft" if r == 1 else f"round_{r - 1}") / "results"
            log.run(f"{tag}/critic_quality", lambda: stages.critic_quality(
                cfg, buffer / f"round_{r:04d}", models / f"critic_{tag}", heldout, roles=roles))
        actor = models / f"actor_round_{cfg.rl.rounds}"
        critic = models / f"critic_round_{cfg.rl.rounds}" if with_critic else None
    for r in range(1, cfg.rl.rounds + 1 if cfg.rl.loop == "staged" else 1):
        tag = f"round_{r}"
        log.run(f"{tag}/rollout", lambda: stages.rollout_round(cfg, train, actor, r, buffer, roles=roles,
                                                               version=r - 1))
        rl_rows = buffer / f"round_{r:04d}"
        if with_critic:
            critic_out = models / f"critic_{tag}"
            init_from, new = (critic, False) if critic else (_critic_backbone(cfg, models), True)
            log.run(f"{tag}/critic", lambda: stages.train_critic(cfg, buffer, list(range(1, r + 1)), gt, init_from,
                                                                  new, critic_out, storage, f"critic_{tag}",
                                                                  roles=roles, version=r))
            previous_eval = evals / ("sft" if r == 1 else f"round_{r - 1}") / "results"
            log.run(f"{tag}/score", lambda: stages.score_round(cfg, buffer / f"round_{r:04d}", critic_out,
                                                                out / "scored" / tag, previous_eval, roles=roles,
                                                                version=r))
            rl_rows, critic = out / "scored" / tag, critic_out
        actor_out = models / f"actor_{tag}"
        log.run(f"{tag}/rl", lambda: stages.train_rl(cfg, rl_rows, gt, actor, actor_out, storage, f"rl_{tag}",
                                                      roles=roles, version=r))
        actor = actor_out
        if cfg.eval.every_round or r == cfg.rl.rounds:
            evaluation(tag, actor, r)

    # What critic sampling reads besides the last actor and critic (docs/repair.md), from every round's buffer.
    rounds = list(range(1, cfg.rl.rounds + 1))
    if cfg.critic.inference_classes == 2:
        log.run("critic_binary", lambda: stages.train_critic_binary(
            cfg, buffer, rounds, gt, critic, models / "critic_binary", storage,
            evals / f"round_{cfg.rl.rounds}" / "results", roles=roles))
    if cfg.repair.enabled:
        repair_init = actor if cfg.repair.init == "actor" else Path(cfg.repair.init)
        log.run("repair", lambda: stages.train_repair(cfg, train, buffer, rounds, repair_init, models / "repair",
                                                      storage, roles=roles))
    if cfg.cs.enabled and critic is not None:
        # The paper samples with a binary critic; the pipeline trained one above when critic.inference_classes is 2.
        binary = cfg.critic.inference_classes == 2
        cs_critic = models / "critic_binary" if binary else critic
        repair = models / "repair" if cfg.repair.enabled else None
        last = cfg.rl.rounds * (cfg.rl.steps_per_round if cfg.rl.loop == "online" else 1)
        log.run("cs", lambda: stages.critic_sampling(
            cfg, test, actor, cs_critic, repair, evals / "cs", f"round_{cfg.rl.rounds}", roles=roles,
            actor_version=last, critic_name="critic_binary" if binary else "critic",
            critic_version=0 if binary else (None if cfg.rl.loop == "online" else cfg.rl.rounds)))


def _critic_backbone(cfg: PipelineConfig, models: Path) -> Path:
    # The paper starts the critic from a pretrained code LM; here the warm-started actor is the best code LM we have.
    return models / "actor_sft" if cfg.critic.backbone == "actor" else Path(cfg.critic.backbone)


def root_cause(exc: BaseException) -> str:
    """The original error of a chain, as one line.

    Ray delivers a worker's exception as text inside wrapper exceptions (RayTaskError, UserCodeException), so the
    first "SomethingError: message" line of that text, not the wrapper, names what went wrong.
    """
    text = "\n".join(str(e) for e in _chain(exc))
    for line in text.splitlines():
        m = _ERROR_LINE.match(line.strip())
        if m and m.group(1).split(".")[-1] not in _WRAPPERS:
            return line.strip()
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)):\s")
_WRAPPERS = {"RayTaskError", "UserCodeException", "RayActorError", "TrainingFailedError", "WorkerGroupError"}


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while isinstance(exc, BaseException) and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = getattr(exc, "cause", None) or exc.__cause__
    return out


def format_error(exc: BaseException) -> str:
    cause = exc.__cause__
    tb = "".join(traceback.format_exception(cause)) if cause else ""
    return f"{tb}\n{exc}"
