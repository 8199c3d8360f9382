"""A critic that ranks one problem's programs: the ranking term, batches grouped by problem, the head that reads its
tokens' log-probabilities, a frozen backbone, and mutants one token away from a reference (pure, no Ray)."""

import io
import json
import math
import random
import tokenize

import pytest
import torch

from coderl_ray.config import ConfigError, load_config
from coderl_ray.data.prompts import build_prompt
from coderl_ray.models.batching import encode_program, encode_prompt, pad_batch, token_logprobs
from coderl_ray.models.critic import (
    build_critic,
    head_input_scale,
    load_critic,
    pairwise_rank_loss,
    pass_log_odds,
    token_surprise,
)
from coderl_ray.models.tokenizer import load_tokenizer
from coderl_ray.rl.hard_negatives import mutant_samples, mutants, mutation_sites
from coderl_ray.train.batching import group_by_key
from coderl_ray.train.objectives import critic_objective
from tests.helpers import tiny_actor_dir, tiny_suite

# --- the ranking term -------------------------------------------------------------------------------------------


def test_pairwise_rank_loss_pairs_passing_with_failing_programs_of_the_same_problem_only():
    scores = torch.tensor([1.0, -1.0, 0.0, 3.0, 2.0, 9.0], requires_grad=True)
    passed = torch.tensor([True, False, False, True, False, False])
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    # Pairs (i passes, j fails, same problem): (0, 1) margin 2, (0, 2) margin 1, (3, 4) margin 1; problem 2 has no
    # passing program, so its 9.0 is never compared (nor with problem 0's or 1's programs).
    # loss = (softplus(-2) + 2 softplus(-1)) / 3 = (0.126928 + 2 x 0.313262) / 3 = 0.251151
    loss = pairwise_rank_loss(scores, passed, groups)
    assert loss.item() == pytest.approx((math.log1p(math.exp(-2)) + 2 * math.log1p(math.exp(-1))) / 3, abs=1e-6)
    loss.backward()
    # d/ds_i of softplus(s_j - s_i) = -sigmoid(s_j - s_i): passing programs are pushed up, failing ones down.
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [-(s(-2) + s(-1)) / 3, s(-2) / 3, s(-1) / 3, -s(-1) / 3, s(-1) / 3, 0.0]
    assert scores.grad.tolist() == pytest.approx(expected, abs=1e-6)


def test_pairwise_rank_loss_is_zero_without_a_mixed_problem_and_still_backpropagates():
    scores = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = pairwise_rank_loss(scores, torch.tensor([True, True, False]), torch.tensor([0, 0, 1]))
    assert float(loss) == 0.0
    loss.backward()
    assert scores.grad.tolist() == [0.0, 0.0, 0.0]


def test_pass_log_odds_is_the_last_class_against_the_others():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    # log(e^3) - log(e^0 + e^1 + e^2) = 3 - log(11.1073) = 0.592394; equal logits: log(1/3) = -1.098612
    assert pass_log_odds(logits).tolist() == pytest.approx([3 - math.log(1 + math.e + math.e ** 2), -math.log(3)])
    assert pass_log_odds(torch.tensor([[0.5, 2.0]])).tolist() == pytest.approx([1.5])  # binary: z1 - z0


# --- batches grouped by problem ---------------------------------------------------------------------------------


def test_group_by_key_keeps_batch_sizes_and_rows_and_puts_each_problems_rows_side_by_side():
    rows = [{"problem_id": f"p{i % 5}", "i": i} for i in range(20)]  # 5 problems x 4 rows, interleaved
    batches = [rows[k: k + 6] for k in range(0, 20, 6)]  # sizes 6, 6, 6, 2
    out = list(group_by_key(batches, 4, "problem_id", seed=3))
    assert [len(b) for b in out] == [6, 6, 6, 2]
    assert sorted(r["i"] for b in out for r in b) == list(range(20))
    flat = [r["problem_id"] for b in out for r in b]
    # Each problem's 4 rows are contiguous: the sequence changes problem exactly 4 times.
    assert sum(a != b for a, b in zip(flat, flat[1:])) == 4
    assert out == list(group_by_key(batches, 4, "problem_id", seed=3))  # seeded
    assert out != list(group_by_key(batches, 4, "problem_id", seed=4))
    with pytest.raises(ValueError, match="pool >= 1"):
        list(group_by_key(batches, 0, "problem_id", 0))


def test_group_by_key_regroups_only_within_its_pool():
    rows = [{"problem_id": p} for p in "abab" + "cdcd"]
    out = list(group_by_key([rows[:4], rows[4:]], 1, "problem_id", 0))
    assert sorted(r["problem_id"] for r in out[0]) == ["a", "a", "b", "b"]  # the first batch keeps its rows


# --- a head that reads its tokens' log-probabilities ------------------------------------------------------------


@pytest.fixture(scope="module")
def actors(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ranking")
    return {"seq2seq": tiny_actor_dir(tmp), "causal": tiny_actor_dir(tmp, "causal")}


def _batch(tok, n=3):
    problems = tiny_suite()[0][:n]
    prompts = [encode_prompt(tok, build_prompt(p), 256) for p in problems]
    programs = [encode_program(tok, p["solutions"][0], 40 - 8 * i) for i, p in enumerate(problems)]
    return pad_batch(prompts, programs, tok.pad_token_id)


@pytest.mark.parametrize("arch", ["seq2seq", "causal"])
def test_read_logprobs_feeds_the_head_the_backbones_own_token_logprobs(actors, arch):
    """The features are the actor's log p(w_t) (what the RL step computes) and its gap to the top token's."""
    actor = actors[arch]
    tok = load_tokenizer(actor)
    critic = build_critic(actor, n_classes=4, head_hidden=8, read_logprobs=True).eval()
    b = _batch(tok)
    assert critic.head[0].in_features == 32 + 2  # d_model + the two features
    with torch.no_grad():
        states = critic.token_states(b["input_ids"], b["attention_mask"], b["program_ids"], b["program_mask"])
        lm = critic.backbone.get_output_embeddings()(states * head_input_scale(critic.backbone.config))
        feats = token_surprise(lm, b["program_ids"])
        mask = b["program_mask"].bool()
        actor_logp = token_logprobs(critic.backbone, b)
        assert torch.allclose(feats[..., 0][mask], actor_logp[mask], atol=1e-4)
        assert (feats[..., 1] <= 1e-6).all()  # never above the most likely token
        head_in = torch.cat([states * critic.input_scale, feats], dim=-1)
        assert torch.allclose(critic(**b), critic.head(head_in), atol=1e-5)


def test_a_critic_that_reads_logprobs_saves_and_loads_as_it_was(actors, tmp_path):
    tok = load_tokenizer(actors["seq2seq"])
    critic = build_critic(actors["seq2seq"], n_classes=2, head_hidden=8, read_logprobs=True).eval()
    critic.save_pretrained(tmp_path / "c")
    assert json.loads((tmp_path / "c" / "critic_config.json").read_text())["read_logprobs"] is True
    loaded = load_critic(tmp_path / "c").eval()
    b = _batch(tok)
    with torch.no_grad():
        assert torch.allclose(loaded(**b), critic(**b), atol=1e-6)
    # A critic saved before the setting existed (no key) reads the states alone.
    build_critic(actors["seq2seq"], n_classes=2, head_hidden=8).save_pretrained(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "critic_config.json").read_text())
    del meta["read_logprobs"]
    (tmp_path / "old" / "critic_config.json").write_text(json.dumps(meta))
    assert load_critic(tmp_path / "old").read_logprobs is False


def test_critic_objective_adds_the_weighted_ranking_term(actors):
    tok = load_tokenizer(actors["seq2seq"])
    critic = build_critic(actors["seq2seq"], n_classes=4, head_hidden=8, read_logprobs=True).eval()
    problems = tiny_suite()[0][:2]
    rows = []
    for p in problems:
        prompt = encode_prompt(tok, build_prompt(p), 256)
        for k, outcome in enumerate(["passed", "failed", "runtime_error"]):
            rows.append({"problem_id": p["problem_id"], "prompt_ids": prompt, "outcome": outcome,
                         "token_ids": encode_program(tok, p["solutions"][0] + "\n" * k, 64)})
    torch.manual_seed(0)
    with torch.no_grad():
        plain, m0 = critic_objective(critic, rows, tok.pad_token_id)
        ranked, m = critic_objective(critic, rows, tok.pad_token_id, rank_weight=0.5)
    assert "critic_rank_loss" not in m0 and float(m0["critic_loss"]) == pytest.approx(float(plain))
    # 2 problems x (1 passing x 2 failing) = 4 pairs; the loss is the cross-entropy plus half their mean.
    assert float(m["critic_loss"]) == pytest.approx(float(plain), abs=1e-6)
    assert float(ranked) == pytest.approx(float(plain) + 0.5 * float(m["critic_rank_loss"]), abs=1e-6)
    assert float(m["critic_rank_loss"]) > 0


def test_a_critic_with_a_frozen_backbone_trains_its_head_alone(actors):
    from coderl_ray.train.loop import LoopConfig, build_model, run_loop

    tok = load_tokenizer(actors["seq2seq"])
    cfg = LoopConfig(objective="critic", init_path=str(actors["seq2seq"]), new_critic=True, steps=2, batch_size=4,
                     lr=1e-2, critic_read_logprobs=True, critic_train_backbone=False, critic_rank_weight=1.0)
    critic = build_model(cfg)
    before = {n: p.detach().clone() for n, p in critic.named_parameters()}
    p = tiny_suite()[0][0]
    prompt = encode_prompt(tok, build_prompt(p), 256)
    rows = [{"problem_id": "p", "prompt_ids": prompt, "token_ids": encode_program(tok, p["solutions"][0] + " " * k, 64),
             "outcome": o} for k, o in enumerate(["passed", "failed", "passed", "compile_error"])]
    history = run_loop(cfg, critic, iter([rows, rows]), tok.pad_token_id)
    assert len(history) == 2 and history[0]["critic_rank_loss"] > 0
    changed = {n for n, v in critic.named_parameters() if not torch.equal(v, before[n])}
    assert changed == {n for n in before if n.startswith("head.")} and len(changed) == 4  # 2 layers x (W, b)


# --- mutants ------------------------------------------------------------------------------------------------------


def _tokens(code):
    return [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline)]


def test_every_mutant_differs_from_its_program_in_exactly_one_literal_or_operator():
    code = "def f(a):\n    a = [x for x in a if x % 7 == 0]\n    return [x + 12 for x in a]\n"
    out = mutants(code, 30, random.Random(1))
    assert len(out) == 30 and len(set(out)) == 30 and code not in out
    for m in out:
        diff = [(a, b) for a, b in zip(_tokens(code), _tokens(m)) if a != b]
        assert len(diff) == 1 and len(_tokens(m)) == len(_tokens(code)), m
        old, new = diff[0]
        assert (old.isdigit() and new.isdigit()) or {old, new} <= {"+", "-", "*", "//", "%", "<", ">", "<=", ">=",
                                                                   "==", "!="}
    assert mutants(code, 30, random.Random(1)) == out  # seeded


def test_mutation_sites_skip_floats_and_strings_and_a_program_that_does_not_tokenize_has_none():
    sites = mutation_sites('s = "7" + 2.5 * y\n')
    assert [(c, sorted(r)) for _, c, _, r in sites] == [(8, ["%", "*", "-", "//"]), (14, ["%", "+", "-", "//"])]
    assert mutation_sites("x = (1,\n") == [] and mutants("x = (1,\n", 3, random.Random(0)) == []
    # "x = 0" has 10 distinct mutants of its literal (1..10): asking for 50 gives those 10 and stops.
    assert sorted(mutants("x = 0\n", 50, random.Random(0))) == sorted(f"x = {v}\n" for v in range(1, 11))


def test_mutant_samples_are_seeded_per_source_and_name_their_source():
    a = {"problem_id": "p", "sample_id": "p#gt0", "code": "y = x * 3\n"}
    b = {"problem_id": "q", "sample_id": "q#gt0", "code": "y = x + 4\n"}
    both = mutant_samples([a, b], 3, seed=5)
    assert [s["sample_id"] for s in both] == ["p#gt0~m0", "p#gt0~m1", "p#gt0~m2", "q#gt0~m0", "q#gt0~m1", "q#gt0~m2"]
    assert {s["source_id"] for s in both} == {"p#gt0", "q#gt0"}
    assert mutant_samples([b], 3, seed=5) == both[3:]  # adding a source does not change the others' mutants
    assert mutant_samples([a], 3, seed=6) != both[:3]


# --- config -------------------------------------------------------------------------------------------------------


def test_ranking_and_mutants_are_checked_against_the_online_loop_and_length_buckets():
    load_config(None, ["critic.rank_weight=1", "critic.mutants_per_program=4", "critic.read_logprobs=true",
                       "critic.train_backbone=false"])
    with pytest.raises(ConfigError, match="critic.rank_weight .* must be >= 0"):
        load_config(None, ["critic.rank_weight=-1"])
    with pytest.raises(ConfigError, match=r"critic.mutants_per_program=2 needs rl.loop=staged"):
        load_config(None, ["critic.mutants_per_program=2", "rl.loop=online"])
    with pytest.raises(ConfigError, match=r"critic.rank_weight=0.5 needs rl.loop=staged"):
        load_config(None, ["critic.rank_weight=0.5", "rl.loop=online"])
    with pytest.raises(ConfigError, match="train.bucket_batches"):
        load_config(None, ["critic.rank_weight=1", "train.bucket_batches=4"])
    # What the head reads and what trains do not depend on the order of the data: the online critic takes them.
    online = load_config(None, ["rl.loop=online", "critic.read_logprobs=true", "critic.train_backbone=false"])
    assert online.critic.read_logprobs is True and online.critic.train_backbone is False
    # The paper's critic stays the default.
    c = load_config(None).critic
    assert (c.read_logprobs, c.train_backbone, c.rank_weight, c.mutants_per_program) == (False, True, 0.0, 0)


def test_the_mutants_stage_runs_only_when_asked_for_in_the_staged_loop_with_a_critic():
    from coderl_ray import registry
    from coderl_ray.plan import make_plan

    def runs(*overrides):
        return "critic_mutants" in {s.name for s in registry.pipeline_stages(load_config(None, list(overrides)))}

    assert not runs()
    assert runs("critic.mutants_per_program=4")
    # Nothing reads a critic (GRPO without critic sampling): no critic, no mutants for it.
    assert not runs("critic.mutants_per_program=4", "rl.algorithm=grpo", "cs.enabled=false")
    assert not runs("critic.mutants_per_program=4", "rl.rounds=0", "cs.enabled=false")
    planned = [e.stage for e in make_plan(load_config(None, ["critic.mutants_per_program=4"])).stages]
    assert planned.index("critic_mutants") < planned.index("rollout")
