"""Critic sampling on a real local Ray cluster: the command end to end on converted MBPP, refining and repairing from
the state on disk, resuming after a killed pass; and the bad inputs, which fail before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from coderl_ray.cli import main
from coderl_ray.config import load_config
from coderl_ray.data.problems import write_jsonl
from tests.conftest import ROOT
from tests.helpers import tiny_actor_dir, tiny_suite

MICRO = ROOT / "tests" / "configs" / "micro.yaml"


def _critic_dir(actor: Path, dest: Path) -> Path:
    from coderl_ray.models.critic import build_critic
    from coderl_ray.models.tokenizer import load_tokenizer

    build_critic(actor, head_hidden=16).save_pretrained(dest)
    load_tokenizer(actor).save_pretrained(dest)
    return dest


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny actor, a critic on it, and a critic whose tokenizer was trained on other texts. Any actor folder is a
    repair model (one trained on repair prompts is just that), so the actor doubles as one."""
    w = tmp_path_factory.mktemp("cs_models")
    actor = tiny_actor_dir(w)
    other = tiny_actor_dir(w / "other", n_train=6)
    return {"actor": actor, "critic": _critic_dir(actor, w / "critic"), "other_critic": _critic_dir(other, w / "oc")}


def _args(models, problems, out, *extra, actor=None, critic=None):
    return ["critic-sample", "--config", str(MICRO), "--problems", str(problems),
            "--actor", str(actor or models["actor"]), "--critic", str(critic or models["critic"]), "--out", str(out),
            *extra]


def test_bad_inputs_are_one_line_errors_naming_the_flag_before_any_work(models, tmp_path, capsys):
    problems = tmp_path / "p.jsonl"
    write_jsonl(tiny_suite()[1][:3], problems)
    no_tests = tmp_path / "no_tests.jsonl"
    write_jsonl([{**tiny_suite()[1][0], "tests": {"kind": "stdio", "inputs": [], "outputs": []}}], no_tests)
    out = tmp_path / "out"
    cases = [
        (_args(models, problems, out, actor=tmp_path / "nope"), f"--actor {tmp_path / 'nope'}: no such folder"),
        (_args(models, problems, out, actor=models["critic"]), "--actor", "this is a critic folder"),
        (_args(models, problems, out, critic=models["actor"]), "--critic", "not a critic folder"),
        (_args(models, problems, out, critic=models["other_critic"]), "--critic", "tokenizer differs from the actor's"),
        (_args(models, problems, out, "--repair", str(tmp_path)), "--repair", "holds no model"),
        (_args(models, problems, out, "--budget", "2", "--passes", "3", "--first-samples", "1",
               "--submissions", "1"), "cs.budget (--budget) 2 is smaller than the passes need"),
        (_args(models, no_tests, out), "no_tests.jsonl", "has no tests"),
    ]
    for argv, *messages in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert all(m in err for m in messages) and len(err.strip().splitlines()) == 1, (messages, err)
    assert not out.exists()  # nothing ran


@pytest.mark.slow
def test_critic_sample_on_converted_mbpp_end_to_end(ray_cluster, models, shared_data, tmp_path, capsys):
    converted = tmp_path / "mbpp.jsonl"
    assert main(["convert", "mbpp", str(shared_data / "mbpp" / "mbpp.jsonl"), "--split", "test", "--out",
                 str(converted)]) == 0
    rows = [json.loads(line) for line in converted.read_text().splitlines()[:4]]
    problems = tmp_path / "mbpp4.jsonl"
    write_jsonl(rows, problems)
    out = tmp_path / "cs"
    capsys.readouterr()
    argv = _args(models, problems, out, "--repair", str(models["actor"]), "--budget", "3", "--passes", "2",
                 "--first-samples", "2", "--submissions", "1,2")
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stage"] == "critic-sample" and summary["problems"] == 4 and summary["strategy"] == "cs"
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert Counter(r["problem_id"] for r in results) == {r["problem_id"]: 3 for r in rows}
    assert len({r["sample_id"] for r in results}) == 12
    # A random tiny model passes no example: pass 1 repairs the best-rated failed programs of every problem.
    assert {r["origin"] for r in results if r["cs_pass"] == 1} == {"repair"}
    assert all(r["outcome"] in ("passed", "failed", "runtime_error", "timeout", "compile_error") for r in results)
    subs = [json.loads(line) for line in (out / "submissions.jsonl").read_text().splitlines()]
    assert Counter(s["problem_id"] for s in subs) == {r["problem_id"]: 2 for r in rows}
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["budget"] == 3
    assert set(metrics["strategies"]["cs"]["all"]) == {"problems", "unscored", "1@k", "2@k", "pass@k"}
    assert (out / "report" / "critic_sampling.png").stat().st_size > 1000
    # The same command again finds everything done; other settings on the same folder are refused.
    assert main(argv) == 0
    assert main(argv[:-1] + ["1"]) == 0  # --submissions only changes the report
    assert main(_args(models, problems, out, "--repair", str(models["actor"]), "--budget", "4", "--first-samples",
                      "2", "--submissions", "1,2")) == 2
    assert "budget (3 -> 4)" in capsys.readouterr().err


@pytest.mark.slow
def test_refining_and_repairing_start_from_the_state_on_disk(ray_cluster, models, tmp_path):
    """Pass 0 written by hand - reference programs (pass the examples) for two problems, a wrong one for two - then
    pass 1 planned from it: seeds from the critic's own token values for the first two, repairs for the others."""
    import pyarrow as pa

    from coderl_ray.inference.procedure import best_prefix, token_pass_probs
    from coderl_ray.inference.run import critic_sample, pass_dir
    from coderl_ray.inference.stage import SAMPLE_SCHEMA, examine
    from coderl_ray.roles.setup import Roles
    from coderl_ray.roles.workers import ModelRef
    from coderl_ray.models.batching import encode_program, encode_prompt
    from coderl_ray.models.critic import load_critic, score_programs
    from coderl_ray.models.tokenizer import load_tokenizer
    from coderl_ray.data.prompts import build_prompt

    cfg = load_config(MICRO, ["cs.budget=4", "cs.passes=2", "cs.first_samples=2", "cs.submissions=[1]",
                              "cs.seeds_top_k=1", "rollout.max_new_tokens=96"])
    problems = tiny_suite()[1][:4]
    tok = load_tokenizer(models["actor"])
    rows = []
    for i, p in enumerate(problems):
        for j in range(2):
            code = p["solutions"][0] if i < 2 else "print('wrong')"
            rows.append({"problem_id": p["problem_id"], "sample_id": f"{p['problem_id']}#p0s{j}", "cs_pass": 0,
                         "origin": "sample", "parent_id": "", "prefix_len": 0, "code": code,
                         "token_ids": encode_program(tok, code, 96),
                         "prompt_ids": encode_prompt(tok, build_prompt(p), 256)})
    out = tmp_path / "cs"
    with Roles(cfg, tmp_path / "st") as roles:
        examine(cfg, roles, pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), problems,
                ModelRef.of_folder("critic", models["critic"]), pass_dir(out, 0))
    state = {r["sample_id"]: r for r in pq.read_table(pass_dir(out, 0)).to_pylist()}
    verdicts = [state[r["sample_id"]]["example_outcome"] for r in rows]
    assert verdicts[:4] == ["passed"] * 4 and all(v in ("failed", "runtime_error") for v in verdicts[4:])
    # The stored seed is the argmax prefix of the critic's token-level "passed" probability, computed here again.
    critic = load_critic(models["critic"]).eval()
    for r, score in zip(rows, score_programs(critic, rows, tok.pad_token_id)):
        assert state[r["sample_id"]]["seed_len"] == best_prefix(token_pass_probs(score.token_logits))[0]

    metrics = critic_sample(cfg, problems, models["actor"], models["critic"], models["actor"], out, seed=0)
    second = pq.read_table(pass_dir(out, 1)).to_pylist()
    for i, p in enumerate(problems):
        mine = [r for r in second if r["problem_id"] == p["problem_id"]]
        assert len(mine) == 2
        if i < 2:
            # Both references are the same program: one seed, continued twice.
            parent = state[mine[0]["parent_id"]]
            seed = parent["token_ids"][: parent["seed_len"]]
            assert all(r["origin"] == "refine" and r["token_ids"][: len(seed)] == seed and r["prefix_len"] == len(seed)
                       for r in mine)
        else:
            assert all(r["origin"] == "repair" and r["parent_id"].startswith(p["problem_id"]) for r in mine)
    diag = metrics["diagnostics"]
    assert diag["problems_by_plan"] == {"pass_0": {"sample": 4}, "pass_1": {"refine": 2, "repair": 2}}
    assert diag["by_origin"]["refine"]["programs"] == 4 and diag["by_origin"]["repair"]["programs"] == 4


@pytest.mark.slow
def test_a_run_killed_mid_pass_resumes_without_losing_or_duplicating_a_program(ray_cluster, models, tmp_path,
                                                                                capsys):
    problems = tmp_path / "p.jsonl"
    write_jsonl(tiny_suite()[1][:6], problems)
    out = tmp_path / "cs"
    address = ray_cluster.get_runtime_context().gcs_address
    # Units of 2 programs, so a pass is many generate() calls and the kill lands while its tmp folder is open.
    argv = _args(models, problems, out, "--budget", "6", "--passes", "3", "--first-samples", "2", "--submissions",
                 "1", f"ray_address={address}", "rollout.batch_size_per_worker=2")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([sys.executable, "-m", "coderl_ray.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    tmp_pass = out / "passes" / "pass_01.tmp"
    deadline = time.monotonic() + 600
    while not tmp_pass.is_dir() and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    assert driver.wait() == -signal.SIGKILL
    assert tmp_pass.is_dir() and not (out / "passes" / "pass_01").exists()
    first = {f.name: f.read_bytes() for f in (out / "passes" / "pass_00").iterdir()}

    assert main(argv) == 0
    assert "pass 0: finished in an earlier run" in capsys.readouterr().out
    assert {f.name: f.read_bytes() for f in (out / "passes" / "pass_00").iterdir()} == first
    assert not tmp_pass.exists()
    results = pq.read_table(out / "results.parquet").to_pylist()
    ids = [r["sample_id"] for r in results]
    assert len(ids) == len(set(ids)) == 6 * 6
    assert Counter((r["problem_id"], r["cs_pass"]) for r in results) == {
        (p["problem_id"], k): n for p in tiny_suite()[1][:6] for k, n in enumerate([2, 2, 2])}
