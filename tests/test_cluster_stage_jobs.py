"""The stage commands behind jobs/ (generate, train-critic, score, train-actor, evaluate) chained by hand as a user
would submit them one by one, on the in-process test cluster, with the generate and score drivers killed mid-write
and rerun; and their argument checks, without Ray.

SFT through ``train-actor`` and ``execute`` run as cluster jobs in test_cluster_local.py; ``execute`` killed
mid-write in test_pipeline.py.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from coderl_ray.cli import main
from tests.conftest import ROOT
from tests.helpers import DIE_AT_RENAME, run_killed, tiny_actor_dir

MICRO = ["--config", str(ROOT / "tests" / "configs" / "micro.yaml")]


def _summary(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.rindex('{"stage": '):].splitlines()[0])


def test_bad_stage_arguments_are_one_line_errors(tmp_path, capsys):
    actor = tmp_path / "actor"
    actor.mkdir()
    cases = [
        (["generate", *MICRO, "--actor", str(actor), "--buffer", str(tmp_path / "b")], "--buffer needs --round"),
        (["generate", *MICRO, "--actor", str(tmp_path / "nope"), "--out", "x.jsonl"], "no such folder"),
        (["generate", *MICRO, "--actor", str(actor), "--out", "x.jsonl", "--example-tests"], "--execute"),
        (["train-actor", *MICRO, "--mode", "rl", "--actor", str(actor), "--out", "o"], "--scored"),
        (["train-critic", *MICRO, "--buffer", "b", "--rounds", "1", "--from-actor", str(tmp_path / "nope"),
          "--out", "o"], "--from-actor"),
        (["score", *MICRO, "--samples", str(tmp_path / "nope"), "--critic", str(actor), "--out", "o"], "--samples"),
        (["generate", *MICRO, "--actor", str(actor), "--out", "x.jsonl", "rollout.temperature=0"], "temperature"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit):
        main(["train-critic", *MICRO, "--buffer", "b", "--rounds", "0", "--from-actor", str(actor), "--out", "o"])


@pytest.mark.slow
def test_stage_commands_chain_into_an_rl_round_and_an_evaluation(ray_cluster, tmp_path, capsys, monkeypatch):
    """The chain, with two of its drivers SIGKILLed mid-write: a stage killed as it renames its complete `.tmp`
    folder (rollout: generated and executed parts; score: scored parts) leaves it behind, and rerunning the same
    command gives every sample exactly one row (the parts the dead driver wrote are kept, not written twice)."""
    # Ray Data starts 32 actors to read the footers of every Parquet read; on 2 cores that alone took ~15-40 s
    # per read of a round. The setting is read where the read is planned, in this process.
    monkeypatch.setenv("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "1")
    w = tmp_path
    actor = tiny_actor_dir(w)  # random weights: the chain's plumbing is under test, not learning
    common = [*MICRO, f"output_dir={w}"]
    # The killed drivers join this session's cluster (a config override, after the command's others).
    joined = f"ray_address={ray_cluster.get_runtime_context().gcs_address}"
    log = w / "killed.log"

    generate = ["generate", *common, "--actor", str(actor), "--buffer", str(w / "buffer"), "--round", "1"]
    run_killed(DIE_AT_RENAME, [*generate[:4], joined, *generate[4:]], log)
    leftover = w / "buffer" / "round_0001.tmp"
    assert list(leftover.glob("*.parquet")) and not (w / "buffer" / "round_0001").exists()
    assert main(generate) == 0  # the same command, on the test session's cluster
    rollout = _summary(capsys)
    # micro.yaml: 24 training problems, 2 samples each plus the greedy baseline, each once.
    assert rollout["problems"] == 24 and rollout["programs"] == 24 * 3
    buffer = pq.read_table(w / "buffer" / "round_0001").to_pylist()
    assert len({r["sample_id"] for r in buffer}) == len(buffer) == 72
    assert all(r["round"] == 1 and r["reward"] is not None for r in buffer)
    assert not leftover.exists()

    assert main(["train-critic", *common, "--buffer", str(w / "buffer"), "--rounds", "1", "--from-actor",
                 str(actor), "--out", str(w / "critic")]) == 0
    critic = _summary(capsys)
    assert critic["rows"] == 72 + 24  # the round's programs plus one reference program per problem
    assert (w / "critic" / "config.json").is_file()

    score = ["score", *common, "--samples", str(w / "buffer" / "round_0001"), "--critic", str(w / "critic"),
             "--out", str(w / "scored")]
    run_killed(DIE_AT_RENAME, [*score[:4], joined, *score[4:]], log)
    left = w / "scored.tmp"
    assert list(left.glob("*.parquet")) and not (w / "scored").exists()
    capsys.readouterr()
    assert main(score) == 0
    assert not left.exists()
    accuracy = _summary(capsys)["train_accuracy"]
    scored = {r["sample_id"]: r for r in pq.read_table(
        w / "scored", columns=["sample_id", "critic_logits", "critic_pred", "critic_pass_prob"]).to_pylist()}
    scored_ids = pq.read_table(w / "scored", columns=["sample_id"]).column("sample_id").to_pylist()
    assert sorted(scored_ids) == sorted(scored) == sorted(r["sample_id"] for r in buffer)
    # The scores are the trained critic's, run directly on the buffer's rows without Ray.
    from coderl_ray.models.critic import load_critic, score_programs
    from coderl_ray.models.tokenizer import load_tokenizer
    from coderl_ray.records import critic_class

    direct = score_programs(load_critic(w / "critic").eval(), buffer, load_tokenizer(w / "critic").pad_token_id)
    for row, want in zip(buffer, direct):
        got = scored[row["sample_id"]]
        assert np.asarray(got["critic_logits"]).reshape(-1, 4) == pytest.approx(want.token_logits, abs=1e-4)
        assert (got["critic_pred"], got["critic_pass_prob"]) == (want.pred, pytest.approx(want.pass_prob, abs=1e-5))
    # The reported accuracy: the share of the 72 programs whose predicted class is their outcome's class.
    hits = sum(scored[r["sample_id"]]["critic_pred"] == critic_class(r["outcome"], 4) for r in buffer)
    assert accuracy == pytest.approx(hits / 72)

    assert main(["train-actor", *common, "--mode", "rl", "--actor", str(actor), "--scored", str(w / "scored"),
                 "--out", str(w / "actor_rl")]) == 0
    rl = _summary(capsys)
    assert rl["steps"] == 4 and (w / "actor_rl" / "config.json").is_file()

    results = w / "results.jsonl"
    assert main(["generate", *common, "--actor", str(w / "actor_rl"), "--split", "test", "--sampling", "eval",
                 "--execute", "--out", str(results)]) == 0
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 9 * 2 and all("outcome" in r and "apps_result" in r for r in records)  # eval: 2 each

    problems = w / "test.jsonl"
    from coderl_ray import stages
    from coderl_ray.config import load_config
    from coderl_ray.data.problems import write_jsonl

    write_jsonl(stages.load_problems(load_config(MICRO[1]).data)[1], problems)
    assert main(["evaluate", "--problems", str(problems), "--results", str(results), "--out", str(w / "report"),
                 "--k", "1,2"]) == 0
    assert (w / "report" / "metrics.json").is_file()
