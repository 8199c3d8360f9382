"""The training loop without Ray: it learns, and a resumed run reproduces the uninterrupted one."""

import copy
import math
import random

import pytest
import torch

from coderl_ray.models.actor import load_actor
from coderl_ray.models.tokenizer import load_tokenizer
from coderl_ray.rl.replay_buffer import ground_truth_rows
from coderl_ray.train.loop import LoopConfig, make_optimizer, run_loop
from tests.helpers import tiny_actor_dir, tiny_suite


def _batches(rows, size, seed):
    rng = random.Random(seed)
    while True:
        yield rng.sample(rows, size)


def test_sft_loop_learns_and_resume_reproduces_the_losses(tmp_path):
    actor = tiny_actor_dir(tmp_path)
    tok = load_tokenizer(actor)
    rows = ground_truth_rows(tiny_suite()[0], tok, 256, 128)
    cfg = LoopConfig(objective="sft", init_path=str(actor), steps=12, batch_size=4, lr=3e-3, warmup_ratio=0.1)

    torch.manual_seed(0)
    full = run_loop(cfg, load_actor(actor), _batches(rows, 4, 0), tok.pad_token_id)
    assert len(full) == 12
    assert sum(m["loss"] for m in full[-3:]) < sum(m["loss"] for m in full[:3])

    # Stop after 5 steps, keep model + optimizer + scheduler, continue from step 5 with the same data stream.
    torch.manual_seed(0)
    model = load_actor(actor)
    data = _batches(rows, 4, 0)
    saved = {}

    first = []

    class Killed(Exception):
        pass

    def checkpoint_then_die(step, metrics, opt, sched):
        first.append(metrics)
        if step == 5:
            saved.update(model={k: v.clone() for k, v in model.state_dict().items()},
                         opt=copy.deepcopy(opt.state_dict()), sched=sched.state_dict())
            raise Killed

    with pytest.raises(Killed):
        run_loop(cfg, model, data, tok.pad_token_id, on_step=checkpoint_then_die)
    resumed_model = load_actor(actor)
    resumed_model.load_state_dict(saved["model"])
    opt, sched = make_optimizer(cfg, resumed_model, {"optimizer": saved["opt"], "scheduler": saved["sched"]})
    rest = run_loop(cfg, resumed_model, data, tok.pad_token_id, start_step=5, optimizer=opt, scheduler=sched)
    losses = [m["loss"] for m in first + rest]
    assert [m["step"] for m in first + rest] == list(range(1, 13))
    assert torch.allclose(torch.tensor(losses), torch.tensor([m["loss"] for m in full]), atol=1e-5)


def test_rl_loop_alternates_cross_entropy_and_rl_steps(tmp_path):
    actor = tiny_actor_dir(tmp_path)
    tok = load_tokenizer(actor)
    gt = ground_truth_rows(tiny_suite()[0], tok, 256, 128)
    # Sampled programs with returns: reuse reference programs with made-up outcomes; the critic logits say
    # "passed" (class 3) with certainty on every token, so q_t = relative return.
    rl_rows = [{**r, "outcome": "passed", "relative_return": 1.3,
                "critic_logits": [0.0, 0.0, 0.0, 50.0] * len(r["token_ids"])} for r in gt]
    cfg = LoopConfig(objective="rl", init_path=str(actor), steps=4, batch_size=4, lr=1e-3, alternation="step")
    hist = run_loop(cfg, load_actor(actor), _batches(rl_rows, 4, 1), tok.pad_token_id, ce_batches=_batches(gt, 4, 2))
    assert ["ce_loss" in m for m in hist] == [True, False, True, False]
    assert ["rl_loss" in m for m in hist] == [False, True, False, True]
    assert all(m["mean_return"] == pytest.approx(1.3) for m in hist if "rl_loss" in m)


def test_rl_step_weights_each_token_by_the_critics_probability_of_the_real_outcome(tmp_path):
    """The loop's first RL step (before any update) against CodeRL's loss computed by hand from the same rows:
    q_t = softmax(critic logits_t)[class of the outcome] * relative return, loss = -mean_programs(mean_t q_t log p_t).
    """
    from coderl_ray.models.batching import program_batch, token_logprobs

    actor = tiny_actor_dir(tmp_path)
    tok = load_tokenizer(actor)
    gt = ground_truth_rows(tiny_suite()[0][:4], tok, 256, 128)
    ln = math.log
    # 4-class critic (compile error, runtime error, failed, passed). The logits below give the outcome's class
    # probability p: [0, 0, 0, ln 3] -> 3 / (3 + 1 + 1 + 1) = 0.5 for "passed"; [0, 0, ln 7, 0] -> 7 / 10 = 0.7 for
    # "failed"; all zeros -> 1/4; 50 on the class -> 1 (to 1e-21). Row 0 alternates 0.5 and 1 token by token.
    passed_half, passed_sure = [0.0, 0.0, 0.0, ln(3)], [0.0, 0.0, 0.0, 50.0]
    spec = [("passed", 1.3, None), ("failed", -0.3, [0.0, 0.0, ln(7), 0.0]),
            ("runtime_error", 0.7, [0.0, 0.0, 0.0, 0.0]), ("compile_error", -1.0, [50.0, 0.0, 0.0, 0.0])]
    rows, p_outcome = [], []
    for r, (outcome, ret, logits) in zip(gt, spec):
        n = len(r["token_ids"])
        if logits is None:
            per_token = [passed_half if t % 2 == 0 else passed_sure for t in range(n)]
            p_outcome.append([0.5 if t % 2 == 0 else 1.0 for t in range(n)])
        else:
            per_token = [logits] * n
            p_outcome.append([{"failed": 0.7, "runtime_error": 0.25, "compile_error": 1.0}[outcome]] * n)
        rows.append({**r, "outcome": outcome, "relative_return": ret, "critic_logits": sum(per_token, [])})

    def same_rows():
        while True:
            yield rows

    with torch.no_grad():  # log p of the untrained actor (no dropout), the policy the first step sees
        logp = token_logprobs(load_actor(actor), program_batch(rows, tok.pad_token_id))
    by_hand = []
    for i, (r, p) in enumerate(zip(rows, p_outcome)):
        q = torch.tensor(p) * r["relative_return"]
        by_hand.append(float((q * logp[i, : len(p)]).sum()) / len(p))
    expected = -sum(by_hand) / len(by_hand)

    cfg = LoopConfig(objective="rl", init_path=str(actor), steps=1, batch_size=4, lr=1e-3, alternate_ce=False,
                     warmup_ratio=0.0)
    step = run_loop(cfg, load_actor(actor), same_rows(), tok.pad_token_id)[0]
    assert step["rl_loss"] == pytest.approx(expected, rel=1e-4)
    assert step["mean_return"] == pytest.approx((1.3 - 0.3 + 0.7 - 1.0) / 4)  # = 0.175
    # Without the critic every token carries the program's whole return: a different loss on the same rows.
    no_critic = run_loop(LoopConfig(**{**cfg.__dict__, "use_critic": False}), load_actor(actor), same_rows(),
                         tok.pad_token_id)[0]
    seq = -sum(float(logp[i, : len(r["token_ids"])].mean()) * r["relative_return"] for i, r in enumerate(rows)) / 4
    assert no_critic["rl_loss"] == pytest.approx(seq, rel=1e-4)
    assert abs(no_critic["rl_loss"] - step["rl_loss"]) > 1e-3


def _blamed_programs(actor, tok):
    """Fixed 'sampled' programs that all failed where the greedy baseline passed (return -1.3), with the log-probs
    of the actor that produced them: the situation of a round's RL steps, which reuse one set of samples."""
    from coderl_ray.models.batching import token_logprobs
    from coderl_ray.models.batching import program_batch

    rows = [{**r, "outcome": "failed", "relative_return": -1.3,
             "critic_logits": [0.0, 0.0, 50.0, 0.0] * len(r["token_ids"])}
            for r in ground_truth_rows(tiny_suite()[0][:8], tok, 256, 128)]
    with torch.no_grad():
        b = program_batch(rows, tok.pad_token_id)
        logp = token_logprobs(load_actor(actor).eval(), b)
    for i, r in enumerate(rows):
        r["old_logprobs"] = logp[i, : len(r["token_ids"])].tolist()
    return rows, b


def test_trust_region_keeps_pure_rl_on_fixed_negative_samples_from_collapsing(tmp_path):
    """Without the trust region, -q log p with q < 0 has no floor: steps on the same failed programs drive their
    probability towards 0 without end. With rl_clip a token stops being pushed once its ratio passes 1 - clip
    (not a hard bound: shared weights and Adam's momentum carry it on a little)."""
    from coderl_ray.models.batching import token_logprobs

    actor = tiny_actor_dir(tmp_path)
    tok = load_tokenizer(actor)
    rows, batch = _blamed_programs(actor, tok)
    mask = batch["program_mask"].float()
    old = torch.zeros_like(mask)
    for i, r in enumerate(rows):
        old[i, : len(r["old_logprobs"])] = torch.tensor(r["old_logprobs"])
    shift = {}
    for clip in (0.0, 0.2):
        cfg = LoopConfig(objective="rl", init_path=str(actor), steps=40, batch_size=8, lr=3e-3, alternate_ce=False,
                         warmup_ratio=0.0, rl_clip=clip)
        model = load_actor(actor)
        run_loop(cfg, model, _batches(rows, 8, 1), tok.pad_token_id)
        with torch.no_grad():
            logp = token_logprobs(model.eval(), batch)
        shift[clip] = (((logp - old) * mask).sum() / mask.sum()).item()  # mean log-ratio per token
    assert shift[0.0] < math.log(0.05)
    assert shift[0.2] > shift[0.0] / 2


def test_a_written_checkpoint_resumes_exactly_with_model_optimizer_schedule_and_data_position(tmp_path):
    """The checkpoint files Ray Train workers write (model/, trainer_state.pt) bring back the whole run: weights,
    AdamW moments, schedule, data position and random state."""
    from coderl_ray.train.batching import BatchCursor
    from coderl_ray.train.loop import MODEL_SUBDIR, STATE_FILE, write_checkpoint

    from transformers import T5ForConditionalGeneration

    actor = tiny_actor_dir(tmp_path)
    # With dropout, the resumed steps match only if the random state is restored too (seeded per step).
    T5ForConditionalGeneration.from_pretrained(actor, dropout_rate=0.2).save_pretrained(actor)
    tok = load_tokenizer(actor)
    rows = ground_truth_rows(tiny_suite()[0], tok, 256, 128)
    cfg = LoopConfig(objective="sft", init_path=str(actor), steps=8, batch_size=4, lr=3e-3, warmup_ratio=0.25,
                     weight_decay=0.01, micro_batch_size=2)

    def epoch(e):  # a seeded shuffle per epoch, like a dataset shard
        order = random.Random(e).sample(rows, len(rows))
        return (order[i: i + 4] for i in range(0, len(order), 4))

    full = run_loop(cfg, load_actor(actor), BatchCursor(epoch), tok.pad_token_id)

    model, cursor = load_actor(actor), BatchCursor(epoch)
    ckpt = tmp_path / "ckpt"

    def save_at_3(step, metrics, opt, sched):
        if step == 3:
            ckpt.mkdir()
            write_checkpoint(ckpt, cfg, model, opt, sched, tok, step, {"train": cursor.position}, rank=0)

    run_loop(cfg, model, cursor, tok.pad_token_id, on_step=save_at_3)
    state = torch.load(ckpt / STATE_FILE, weights_only=False)
    resumed = load_actor(ckpt / MODEL_SUBDIR)
    opt, sched = make_optimizer(cfg, resumed, state)
    rest = run_loop(cfg, resumed, BatchCursor(epoch, tuple(state["data_position"]["train"])), tok.pad_token_id,
                    start_step=state["step"], optimizer=opt, scheduler=sched)
    assert [m["step"] for m in rest] == list(range(4, 9))
    assert [m["loss"] for m in rest] == pytest.approx([m["loss"] for m in full[3:]], rel=1e-5)
    assert [m["lr"] for m in rest] == pytest.approx([m["lr"] for m in full[3:]])
