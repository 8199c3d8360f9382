"""The critic sampling driver: passes, resumable from disk, then the hidden-test judgement and the report.

    <out>/settings.json        what decides the programs (budget, passes, models, problems...): a rerun must match
    <out>/passes/pass_00/      every program of pass 0 with its example verdict and critic scores (Parquet)
    <out>/passes/pass_01/      ... one folder per pass, each written whole (tmp folder + rename)
    <out>/judged/              every program's result on the hidden tests
    <out>/results.parquet      every program: example verdict, critic score, rank, hidden outcome
    <out>/submissions.jsonl    per problem, the programs submitted, best first
    <out>/report/              metrics.json, report.md, critic_sampling.png

The state of every problem between passes is the pass folders: a killed run, rerun with the same command, skips the
finished passes and redoes the one it was in (its tmp folder is discarded), so no program is lost or duplicated.
The procedure itself never reads a hidden-test result: the judgement starts after the last pass.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from coderl_ray.config import ConfigError, PipelineConfig
from coderl_ray.inference.metrics import PLAIN_STRATEGIES, diagnostics, strategy_metrics
from coderl_ray.inference.procedure import pack_units, pass_budgets, plan_pass, rank_programs

SETTINGS_FILE = "settings.json"
STATE_COLUMNS = ["problem_id", "sample_id", "cs_pass", "origin", "parent_id", "prefix_len", "code", "token_ids",
                 "example_outcome", "example_error", "critic_pass_prob", "seed_len", "seed_value"]


def pass_dir(out: Path, cs_pass: int) -> Path:
    return out / "passes" / f"pass_{cs_pass:02d}"


def run_settings(cfg: PipelineConfig, problems: list[dict[str, Any]], actor: Path, critic: Path,
                 repair: Path | None, seed: int, first_pass_from: Path | None = None) -> dict[str, Any]:
    ids = hashlib.sha256("\n".join(p["problem_id"] for p in problems).encode()).hexdigest()[:16]
    c = cfg.cs
    return {"budget": c.budget, "passes": c.passes, "first_samples": c.first_samples if c.passes > 1 else c.budget,
            "seeds_top_k": c.seeds_top_k, "repair_candidates": c.repair_candidates, "temperature": c.temperature,
            "top_p": c.top_p, "top_k": cfg.rollout.top_k, "max_new_tokens": cfg.rollout.max_new_tokens,
            "max_source_tokens": cfg.model.max_source_tokens,
            # Programs are keyed per row (inference/continuation.cs_sample_key): units and chunks do not matter.
            "sampler": "keyed rows",
            "seed": seed, "actor": str(Path(actor).resolve()), "critic": str(Path(critic).resolve()),
            "repair": str(Path(repair).resolve()) if repair else "", "problems": f"{len(problems)} ids, sha {ids}",
            "first_pass_from": str(Path(first_pass_from).resolve()) if first_pass_from else ""}


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    path = out / SETTINGS_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        changed = [f"{k} ({old.get(k)!r} -> {settings.get(k)!r})" for k in sorted(set(old) | set(settings))
                   if old.get(k) != settings.get(k)]
        if changed:
            raise ConfigError(f"{out} holds a critic sampling run with other settings: {', '.join(changed)}. Its "
                              "passes cannot be continued with these; use another output folder or start over "
                              "(--fresh)")
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2))
    tmp.replace(path)


def read_passes(out: Path, passes: range, columns: list[str] = STATE_COLUMNS) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for p in passes:
        rows += pq.read_table(pass_dir(out, p), columns=columns).to_pylist()
    return rows


def _check_pass(out: Path, cs_pass: int, problems: list[dict[str, Any]], n: int) -> None:
    """Exact budget accounting: every problem has exactly ``n`` programs in the pass, every sample id once."""
    from collections import Counter

    rows = read_passes(out, range(cs_pass, cs_pass + 1), ["problem_id", "sample_id"])
    counts = Counter(r["problem_id"] for r in rows)
    wrong = [(p["problem_id"], counts.get(p["problem_id"], 0)) for p in problems if counts.get(p["problem_id"], 0) != n]
    if wrong or len({r["sample_id"] for r in rows}) != len(rows):
        raise RuntimeError(f"pass {cs_pass} in {pass_dir(out, cs_pass)} should hold {n} programs per problem, each "
                           f"once; it holds {len(rows)} rows ({wrong[:3]} ...)")


def critic_sample(cfg: PipelineConfig, problems: list[dict[str, Any]], actor: Path, critic: Path,
                  repair: Path | None, out: Path, seed: int, first_pass_from: Path | None = None,
                  log=print, *, roles=None, actor_version: int | None = None, critic_name: str = "critic",
                  critic_version: int | None = None) -> dict[str, Any]:
    """Run (or resume) critic sampling on ``problems``; returns the metrics the report holds.

    With ``cs.passes == 1`` this is plain sampling of the whole budget, and the metrics compare its selections
    (random pick, filter by example tests, filter then critic); with more passes it is critic sampling (``cs``).
    ``first_pass_from``: the output folder of a plain run (``cs.passes == 1``, same actor, critic, temperature and
    problems) whose first ``cs.first_samples`` programs per problem become this run's pass 0, instead of sampling
    them again: the same distribution, one pipeline less, and CS is compared with the baseline on shared programs.
    Inputs are assumed checked (:func:`coderl_ray.inference.checks.check_inputs`). ``roles``: the run's roles (a
    pipeline's; else roles of its own), with the actor and critic published as ``actor_version`` /
    ``critic_name`` at ``critic_version`` (None: the folders themselves).
    """
    from coderl_ray.roles.setup import roles_for

    with roles_for(cfg, roles, Path(out) / "ray_train") as r:
        return _critic_sample(cfg, problems, actor, critic, repair, Path(out), seed, first_pass_from, log, r,
                              actor_version, critic_name, critic_version)


def _critic_sample(cfg, problems, actor, critic, repair, out, seed, first_pass_from, log, roles, actor_version,
                   critic_name, critic_version) -> dict[str, Any]:
    from coderl_ray.inference.report import write_cs_report
    from coderl_ray.inference.stage import judge, run_pass
    from coderl_ray.roles.workers import ModelRef

    actor_ref = ModelRef.of_folder("actor", actor, actor_version)
    critic_ref = ModelRef.of_folder(critic_name, critic, critic_version)
    repair_ref = ModelRef.of_folder("repair", repair) if repair else None
    _check_settings(out, run_settings(cfg, problems, actor, critic, repair, seed, first_pass_from))
    budgets = pass_budgets(cfg.cs.budget, cfg.cs.passes, cfg.cs.first_samples)
    wall: dict[str, float] = {}
    for cs_pass, n in enumerate(budgets):
        dest = pass_dir(out, cs_pass)
        if dest.is_dir():
            log(f"    critic sampling pass {cs_pass}: finished in an earlier run, kept")
            continue
        start = time.perf_counter()
        if cs_pass == 0 and first_pass_from is not None:
            _check_plain_run(Path(first_pass_from), run_settings(cfg, problems, actor, critic, repair, seed))
            _copy_first_pass(Path(first_pass_from), problems, n, dest)
            _check_pass(out, cs_pass, problems, n)
            log(f"    critic sampling pass 0: {n} programs per problem taken from {first_pass_from}")
            continue
        programs = read_passes(out, range(cs_pass))
        requests = plan_pass(problems, programs, cs_pass, n, cfg.cs.seeds_top_k, cfg.cs.repair_candidates,
                             repair is not None)
        units = pack_units(requests, cfg.rollout.batch_size_per_worker)
        run_pass(cfg, roles, units, problems, actor_ref, critic_ref, repair_ref, seed, dest)
        _check_pass(out, cs_pass, problems, n)
        wall[f"pass_{cs_pass}"] = round(time.perf_counter() - start, 2)
        kinds = {o: sum(r.n for r in requests if r.origin == o) for o in ("sample", "refine", "repair")}
        log(f"    critic sampling pass {cs_pass}: {sum(kinds.values())} programs ({kinds}) in "
            f"{wall[f'pass_{cs_pass}']:.1f}s")
    judged = out / "judged"
    if not judged.is_dir():
        start = time.perf_counter()
        judge(cfg, roles, [pass_dir(out, p) for p in range(len(budgets))], problems, judged)
        wall["judge"] = round(time.perf_counter() - start, 2)
    programs = _join_hidden(read_passes(out, range(len(budgets))), judged)
    strategies = PLAIN_STRATEGIES if cfg.cs.passes == 1 else ("cs",)
    metrics = {"budget": cfg.cs.budget, "passes": cfg.cs.passes, "submissions": list(cfg.cs.submissions),
               "repair": repair is not None, "problems": len(problems),
               **strategy_metrics(problems, programs, cfg.cs.submissions, strategies),
               "diagnostics": diagnostics(problems, programs), "wall_s": wall}
    _write_outputs(out, problems, programs, max(cfg.cs.submissions))
    write_cs_report(metrics, out / "report", title=f"Critic sampling ({'plain' if cfg.cs.passes == 1 else 'CS'})")
    return metrics


# What must agree for a plain run's programs to be this run's pass 0.
_SHARED_SETTINGS = ("temperature", "top_p", "top_k", "sampler", "max_new_tokens", "max_source_tokens", "actor",
                    "critic", "problems")


def _check_plain_run(plain: Path, settings: dict[str, Any]) -> None:
    path = plain / SETTINGS_FILE
    other = json.loads(path.read_text()) if path.is_file() else {}
    if other.get("passes") != 1:
        raise FileNotFoundError(f"{plain}: not the output folder of a plain run (cs.passes=1)")
    differ = [k for k in _SHARED_SETTINGS if other.get(k) != settings[k]]
    if differ:
        raise ConfigError(f"{plain}: its programs cannot be this run's pass 0: {', '.join(differ)} differ")


def _copy_first_pass(plain: Path, problems: list[dict[str, Any]], n: int, dest: Path) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from coderl_ray.inference.procedure import sample_id

    source = pass_dir(plain, 0)
    if not source.is_dir() or (pass_dir(plain, 1)).is_dir():
        raise FileNotFoundError(f"{plain}: not the output folder of a finished plain run (cs.passes=1): "
                                f"{source} is missing")
    wanted = pa.array([sample_id(p["problem_id"], 0, j) for p in problems for j in range(n)])
    table = pq.read_table(source)
    table = table.filter(pc.is_in(table.column("sample_id"), value_set=wanted))
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pq.write_table(table, tmp / "part-0.parquet")
    tmp.rename(dest)


def _join_hidden(programs: list[dict[str, Any]], judged: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    hidden = {r["sample_id"]: r for r in pq.read_table(
        judged, columns=["sample_id", "outcome", "passed_tests", "total_tests"]).to_pylist()}
    return [{**p, **{k: v for k, v in hidden[p["sample_id"]].items() if k != "sample_id"}} for p in programs]


def _write_outputs(out: Path, problems: list[dict[str, Any]], programs: list[dict[str, Any]], n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from coderl_ray.data.problems import write_jsonl

    by_problem: dict[str, list[dict[str, Any]]] = {p["problem_id"]: [] for p in problems}
    for p in programs:
        by_problem[p["problem_id"]].append(p)
    rows, submissions = [], []
    for pid, group in by_problem.items():
        for rank, p in enumerate(rank_programs(group)):
            rows.append({k: p[k] for k in ("problem_id", "sample_id", "cs_pass", "origin", "parent_id", "prefix_len",
                                           "code", "example_outcome", "example_error", "critic_pass_prob",
                                           "outcome", "passed_tests", "total_tests")} | {"rank": rank})
            if rank < n:
                submissions.append({k: rows[-1][k] for k in ("problem_id", "sample_id", "rank", "code",
                                                             "example_outcome", "critic_pass_prob")})
    tmp = out / "results.parquet.tmp"
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(out / "results.parquet")
    write_jsonl(submissions, out / "submissions.jsonl")
