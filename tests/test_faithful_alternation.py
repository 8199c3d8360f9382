"""CE/RL alternation as the original CodeRL did it (every update sums a cross-entropy and an RL batch), the step-wise
alternative, and exact resumption of both data cursors."""

import random

import pytest
import torch

from coderl_ray.models.actor import load_actor
from coderl_ray.models.tokenizer import load_tokenizer
from coderl_ray.rl.replay_buffer import ground_truth_rows
from coderl_ray.train.batching import BatchCursor
from coderl_ray.train.loop import LoopConfig, make_optimizer, run_loop, step_plan, train_step
from coderl_ray.train.objectives import rl_objective, sft_loss
from tests.helpers import tiny_actor_dir, tiny_suite


@pytest.fixture(scope="module")
def actor(tmp_path_factory):
    return tiny_actor_dir(tmp_path_factory.mktemp("alternation"))


def _data(actor):
    tok = load_tokenizer(actor)
    gt = ground_truth_rows(tiny_suite()[0], tok, 256, 128)
    # "Sampled" programs: other reference programs with made-up outcomes, returns and critic logits.
    outcomes = ["passed", "failed", "runtime_error", "compile_error"]
    rl = [{**r, "outcome": outcomes[i % 4], "relative_return": [1.3, -0.3, 0.7, -1.0][i % 4],
           "critic_logits": [float((i + t) % 3) for t in range(4 * len(r["token_ids"]))]}
          for i, r in enumerate(gt[::-1])]
    return tok, gt, rl


def test_step_plan_of_both_schemes():
    rl = LoopConfig(objective="rl", init_path="x", steps=4, batch_size=2, lr=1e-3)
    assert rl.alternation == "micro_batch"  # the original's scheme is the default
    assert [step_plan(rl, s, has_ce=True) for s in range(2)] == [[("ce", 0.5), ("rl", 0.5)]] * 2
    assert step_plan(rl, 0, has_ce=False) == [("rl", 1.0)]  # no ground truth: RL alone, at full weight
    step = LoopConfig(objective="rl", init_path="x", steps=4, batch_size=2, lr=1e-3, alternation="step")
    assert [step_plan(step, s, has_ce=True) for s in range(3)] == [[("ce", 1.0)], [("rl", 1.0)], [("ce", 1.0)]]
    assert step_plan(LoopConfig(objective="sft", init_path="x", steps=1, batch_size=1, lr=1e-3), 1, True) == \
        [("sft", 1.0)]
    with pytest.raises(ValueError, match="alternation"):
        LoopConfig(objective="rl", init_path="x", steps=1, batch_size=1, lr=1e-3, alternation="epoch")


def test_a_micro_batch_update_is_half_the_ce_gradient_plus_half_the_rl_gradient(actor):
    """One optimizer step of the original scheme, micro-batched, against the two losses differentiated by hand."""
    tok, gt, rl = _data(actor)
    ce_rows, rl_rows = gt[:6], rl[:6]
    pad = tok.pad_token_id

    # By hand: d/dθ (CE(ce_rows) / 2 + RL(rl_rows) / 2), each loss over its whole batch in one forward.
    model = load_actor(actor)
    ce, _ = sft_loss(model, ce_rows, pad)
    rl_loss, _ = rl_objective(model, rl_rows, pad, n_classes=4, use_critic=True)
    (0.5 * ce + 0.5 * rl_loss).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    # The loop's step: micro-batches of at most 2 rows (3 + 3 backward passes), no clipping so grads stay raw.
    cfg = LoopConfig(objective="rl", init_path=str(actor), steps=1, batch_size=6, lr=1e-3, grad_clip=0.0,
                     micro_batch_size=2)
    model = load_actor(actor)
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = make_optimizer(cfg, model)
    parts = [(kind, ce_rows if kind == "ce" else rl_rows, share) for kind, share in step_plan(cfg, 0, True)]
    metrics = train_step(cfg, model, parts, pad, torch.device("cpu"), opt, sched, params)
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    assert metrics["micro_batches"] == 6
    assert metrics["ce_loss"] == pytest.approx(ce.item(), rel=1e-5)  # each half's own loss, unscaled
    assert metrics["rl_loss"] == pytest.approx(rl_loss.item(), rel=1e-5)
    assert metrics["loss"] == pytest.approx(0.5 * ce.item() + 0.5 * rl_loss.item(), rel=1e-5)
    assert metrics["tokens"] == sum(len(r["token_ids"]) for r in ce_rows + rl_rows)
    assert expected.keys() == got.keys() and len(got) > 10
    assert [n for n in got if not torch.allclose(got[n], expected[n], rtol=1e-4, atol=1e-7)] == []
    # Not a tautology: the CE half alone (or the RL half alone) is a different gradient.
    model = load_actor(actor)
    (0.5 * sft_loss(model, ce_rows, pad)[0]).backward()
    assert any(not torch.allclose(p.grad, expected[n], rtol=1e-3, atol=1e-6)
               for n, p in model.named_parameters() if p.grad is not None)


def _cursor(rows, seed):
    def epoch(e):  # a seeded shuffle per epoch, like a dataset shard
        order = random.Random(seed * 100 + e).sample(rows, len(rows))
        return (order[i: i + 4] for i in range(0, len(order), 4))

    return epoch


@pytest.mark.parametrize("alternation, consumed", [("micro_batch", {"train": 3, "ce": 3}),
                                                   ("step", {"train": 1, "ce": 2})])
def test_a_checkpoint_of_an_rl_run_resumes_both_data_cursors_exactly(actor, tmp_path, alternation, consumed):
    from coderl_ray.train.loop import MODEL_SUBDIR, STATE_FILE, write_checkpoint

    tok, gt, rl = _data(actor)
    cfg = LoopConfig(objective="rl", init_path=str(actor), steps=6, batch_size=4, lr=3e-3, warmup_ratio=0.2,
                     alternation=alternation, micro_batch_size=2)
    full = run_loop(cfg, load_actor(actor), BatchCursor(_cursor(rl, 1)), tok.pad_token_id,
                    ce_batches=BatchCursor(_cursor(gt, 2)))
    if alternation == "micro_batch":
        assert all("ce_loss" in m and "rl_loss" in m for m in full)
    else:
        assert [("ce_loss" in m, "rl_loss" in m) for m in full] == [(True, False), (False, True)] * 3

    model, rl_cursor, ce_cursor = load_actor(actor), BatchCursor(_cursor(rl, 1)), BatchCursor(_cursor(gt, 2))
    ckpt = tmp_path / "ckpt"

    def save_at_3(step, metrics, opt, sched):
        if step == 3:
            ckpt.mkdir()
            write_checkpoint(ckpt, cfg, model, opt, sched, tok, step,
                             {"train": rl_cursor.position, "ce": ce_cursor.position}, rank=0)

    run_loop(cfg, model, rl_cursor, tok.pad_token_id, ce_batches=ce_cursor, on_step=save_at_3)
    state = torch.load(ckpt / STATE_FILE, weights_only=False)
    # Each cursor is at its own position: 3 steps took 3 batches of each (micro_batch), or 2 CE and 1 RL (step).
    assert {k: v[1] for k, v in state["data_position"].items()} == consumed
    resumed = load_actor(ckpt / MODEL_SUBDIR)
    opt, sched = make_optimizer(cfg, resumed, state)
    pos = state["data_position"]
    rest = run_loop(cfg, resumed, BatchCursor(_cursor(rl, 1), tuple(pos["train"])), tok.pad_token_id,
                    ce_batches=BatchCursor(_cursor(gt, 2), tuple(pos["ce"])), start_step=3, optimizer=opt,
                    scheduler=sched)
    for key in ("loss", "ce_loss", "rl_loss"):
        assert [m.get(key, 0.0) for m in rest] == pytest.approx([m.get(key, 0.0) for m in full[3:]], rel=1e-5)


def record_step(path: str, step: int, metrics: dict, rank: int) -> None:
    import json

    with open(path, "a") as f:
        f.write(json.dumps({"rank": rank, "step": step, **{k: metrics.get(k) for k in
                                                           ("micro_batches", "ce_loss", "rl_loss")}}) + "\n")


@pytest.mark.slow
def test_fsdp_rl_run_sums_both_halves_with_uneven_micro_batches_on_two_workers(ray_cluster, tmp_path):
    """Under FSDP every worker must run as many forwards as the others, half by half; with a token budget the
    workers' CE and RL rows split into different numbers of micro-batches, and the run must still finish."""
    import functools
    import json

    import ray

    from coderl_ray.train.loop import fit

    actor = tiny_actor_dir(tmp_path, "causal")
    tok, gt, rl = _data(actor)
    # Short and long rows mixed: 4 short rows share one micro-batch of the budget, a long row needs one of its own.
    for rows in (gt, rl):
        for i, r in enumerate(rows):
            r["prompt_ids"], n = r["prompt_ids"][-40:], 3 if i % 3 else 90
            r["token_ids"] = (r["token_ids"] * 10)[:n]
            r["critic_logits"] = [0.0] * (4 * n)
    log = tmp_path / "steps.jsonl"
    cfg = LoopConfig(objective="rl", init_path=str(actor), steps=4, batch_size=8, lr=1e-3, parallel="fsdp",
                     max_tokens_per_micro_batch=200, report_every=2)
    fit(cfg, {"train": ray.data.from_items(rl), "ce": ray.data.from_items(gt)}, num_workers=2, cpus_per_worker=0.5,
        storage_path=tmp_path / "runs", name="fsdp-rl", step_callback=functools.partial(record_step, str(log)))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted((r["rank"], r["step"]) for r in rows) == [(k, s) for k in (0, 1) for s in (1, 2, 3, 4)]
    assert all(r["ce_loss"] is not None and r["rl_loss"] is not None for r in rows)
    by_step = {}
    for r in rows:
        by_step.setdefault(r["step"], set()).add(r["micro_batches"])
    assert any(len(counts) > 1 for counts in by_step.values()), by_step  # the padding path was exercised
