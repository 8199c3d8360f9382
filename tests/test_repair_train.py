"""`coderl-ray train-repair`: its argument checks (no Ray), and a real Ray Train run on a hand-made buffer."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coderl_ray.cli import main
from coderl_ray.data.problems import write_jsonl
from tests.conftest import ROOT
from tests.helpers import tiny_actor_dir, tiny_suite

MICRO = ["--config", str(ROOT / "tests" / "configs" / "micro.yaml")]


def _write_buffer(root, rows):
    dest = root / "round_0001"
    dest.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), dest / "part-0.parquet")


def _failed_and_passing(problems):
    """Per problem: its reference with the last line dropped (a failed program) and the reference (passing)."""
    rows = []
    for p in problems:
        ref = p["solutions"][0]
        broken = "\n".join(ref.rstrip().splitlines()[:-1])
        rows.append({"problem_id": p["problem_id"], "sample_id": f"{p['problem_id']}#r1s0", "code": broken,
                     "outcome": "failed", "error": "test 0: expected 3, got None"})
        rows.append({"problem_id": p["problem_id"], "sample_id": f"{p['problem_id']}#r1s1", "code": ref,
                     "outcome": "passed", "error": ""})
    return rows


def test_bad_arguments_are_one_line_errors_naming_the_flag(tmp_path, capsys):
    actor = tmp_path / "actor"
    actor.mkdir()
    (actor / "config.json").write_text("{}")
    empty = tmp_path / "empty_buffer"
    empty.mkdir()
    buffer = tmp_path / "buffer"
    _write_buffer(buffer, [])
    base = ["train-repair", *MICRO, "--out", str(tmp_path / "o")]
    cases = [
        ([*base, "--buffer", str(tmp_path / "nope"), "--actor", str(actor)], "--buffer", "no such folder"),
        ([*base, "--buffer", str(empty), "--actor", str(actor)], "--buffer", "no round folder"),
        ([*base, "--buffer", str(buffer), "--rounds", "1,3", "--actor", str(actor)], "--rounds", "round_0003"),
        ([*base, "--buffer", str(buffer), "--actor", str(tmp_path)], "--actor", "not a model folder"),
    ]
    for argv, flag, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert flag in err and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow  # 108 s on the 2-core machine under load (Ray Train's start, two Parquet reads)
def test_train_repair_end_to_end_on_ray_train(ray_cluster, tmp_path, capsys):
    from coderl_ray.data.prompts import build_repair_prompt
    from coderl_ray.models.actor import load_actor
    from coderl_ray.models.batching import encode_prompt
    from coderl_ray.models.tokenizer import load_tokenizer

    train, _ = tiny_suite()
    problems = tmp_path / "train.jsonl"
    write_jsonl(train, problems)
    actor = tiny_actor_dir(tmp_path)
    buffer = tmp_path / "buffer"
    # 10 problems with a failed and a passing program; 2 more whose only program failed and that have no reference
    # solution in --problems: no pair from them.
    rows = _failed_and_passing(train[:10])
    rows += [r for r in _failed_and_passing(train[10:12]) if r["outcome"] == "failed"]
    write_jsonl([{**p, "solutions": []} if i in (10, 11) else p for i, p in enumerate(train)], problems)
    _write_buffer(buffer, rows)
    out = tmp_path / "repair"
    argv = ["train-repair", *MICRO, f"output_dir={tmp_path}", "repair.epochs=1", "repair.batch_size=4",
            "--actor", str(actor), "--problems", str(problems)]
    assert main([*argv, "--buffer", str(buffer), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    info = json.loads(text[text.rindex('{"stage": '):].splitlines()[0])
    # 10 pairs (one failed program per problem); steps = round(1 epoch * 10 pairs / 4) = round(2.5) = 2.
    assert info["pairs"] == 10 and info["problems"] == 10 and info["outcomes"] == {"failed": 10}
    assert info["steps"] == 2 and info["rounds"] == [1]

    # A model folder like an actor's: weights and tokenizer, and it writes a program from a repair prompt.
    model, tok = load_actor(out), load_tokenizer(out)
    init = load_actor(actor)
    changed = [n for n, p in model.named_parameters() if not (p == dict(init.named_parameters())[n]).all()]
    assert changed, "training changed no parameter"
    ids = encode_prompt(tok, build_repair_prompt(train[0], rows[0]["code"], "failed", rows[0]["error"]), 256)
    import torch

    generated = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > 1

    # No problem with both a failed and a passing program: one line naming the inputs.
    lone = tmp_path / "lone_buffer"
    _write_buffer(lone, rows[-2:])  # the failed programs of the two problems without a reference
    capsys.readouterr()
    assert main([*argv, "--buffer", str(lone), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "--buffer" in err and "no repair pairs" in err and len(err.strip().splitlines()) == 1, err
