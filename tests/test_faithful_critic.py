"""The critic's head as the original CodeRL's: decoder states rescaled like the LM head's input, and (as a setting)
max-pooling over every position of a fixed-length target, padding included."""

import json

import pytest
import torch

from coderl_ray.data.prompts import build_prompt
from coderl_ray.models.actor import load_actor
from coderl_ray.models.batching import encode_program, encode_prompt, pad_batch, shift_right
from coderl_ray.models.critic import CodeCritic, build_critic, head_input_scale, load_critic
from coderl_ray.models.tokenizer import load_tokenizer
from tests.helpers import tiny_actor_dir, tiny_suite


@pytest.fixture(scope="module")
def actor(tmp_path_factory):
    return tiny_actor_dir(tmp_path_factory.mktemp("critic"))


def _batch(tok, n=3, max_target=40):
    problems = tiny_suite()[0][:n]
    prompts = [encode_prompt(tok, build_prompt(p), 256) for p in problems]
    programs = [encode_program(tok, p["solutions"][0], max_target - 8 * i) for i, p in enumerate(problems)]
    return pad_batch(prompts, programs, tok.pad_token_id)


def test_tied_t5_head_reads_decoder_states_times_d_model_to_the_minus_half(actor):
    """By hand: the decoder's last states x 32^-0.5 (d_model 32, tied embeddings), through the head's two layers.
    The same rescaled states through the LM head give the actor's own logits: the head reads what the LM head reads."""
    tok = load_tokenizer(actor)
    critic = build_critic(actor, n_classes=4, head_hidden=8).eval()
    t5 = critic.backbone
    assert t5.config.d_model == 32 and t5.config.scale_decoder_outputs
    assert critic.input_scale == pytest.approx(32 ** -0.5)  # = 0.1768
    b = _batch(tok)
    with torch.no_grad():
        enc = t5.get_encoder()(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        states = t5.get_decoder()(input_ids=shift_right(t5.config, b["program_ids"]), encoder_hidden_states=enc,
                                  encoder_attention_mask=b["attention_mask"]).last_hidden_state
        scaled = states / 32 ** 0.5
        w1, b1, w2, b2 = critic.head[0].weight, critic.head[0].bias, critic.head[2].weight, critic.head[2].bias
        by_hand = torch.relu(scaled @ w1.T + b1) @ w2.T + b2
        assert torch.allclose(critic(**b), by_hand, atol=1e-5)
        lm = t5(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                decoder_input_ids=shift_right(t5.config, b["program_ids"])).logits
        assert torch.allclose(lm, scaled @ t5.get_output_embeddings().weight.T, atol=1e-4)
        # Not the same as reading the unscaled states (what this code did before 2026-12-02).
        unscaled = torch.relu(states @ w1.T + b1) @ w2.T + b2
        assert not torch.allclose(critic(**b), unscaled, atol=1e-3)


def test_untied_t5_and_causal_backbones_are_not_rescaled(actor, tmp_path):
    from transformers import GPT2Config, T5Config

    assert head_input_scale(T5Config(d_model=64, num_heads=2, d_kv=32)) == pytest.approx(0.125)  # tied by default
    assert head_input_scale(T5Config(d_model=64, num_heads=2, d_kv=32, tie_word_embeddings=False)) == 1.0
    assert head_input_scale(GPT2Config(n_embd=64)) == 1.0
    untied = tmp_path / "untied"
    t5 = load_actor(actor)
    from transformers import T5ForConditionalGeneration

    cfg = t5.config.to_dict() | {"tie_word_embeddings": False}
    T5ForConditionalGeneration(T5Config(**{k: v for k, v in cfg.items() if k != "scale_decoder_outputs"})) \
        .save_pretrained(untied)
    assert build_critic(untied).input_scale == 1.0
    causal = tiny_actor_dir(tmp_path, "causal")
    assert build_critic(causal).input_scale == 1.0


def test_a_saved_critic_keeps_its_scale_and_an_old_one_loads_unscaled(actor, tmp_path):
    tok = load_tokenizer(actor)
    b = _batch(tok)
    critic = build_critic(actor, n_classes=4, head_hidden=8).eval()
    critic.save_pretrained(tmp_path / "new")
    meta = json.loads((tmp_path / "new" / "critic_config.json").read_text())
    assert meta["input_scale"] == pytest.approx(32 ** -0.5)
    with torch.no_grad():
        assert torch.allclose(load_critic(tmp_path / "new").eval()(**b), critic(**b), atol=1e-6)
        # A folder written before the scale was recorded: trained on unscaled states, so it scores unscaled.
        meta.pop("input_scale")
        (tmp_path / "new" / "critic_config.json").write_text(json.dumps(meta))
        old = load_critic(tmp_path / "new").eval()
        assert old.input_scale == 1.0
        unscaled = CodeCritic(critic.backbone, 4, 8, input_scale=1.0)
        unscaled.head.load_state_dict(critic.head.state_dict())
        assert torch.allclose(old(**b), unscaled(**b), atol=1e-6)


def _twin(critic, pooling, pool_length=0):
    """A critic sharing ``critic``'s backbone and head with another pooling."""
    twin = CodeCritic(critic.backbone, critic.n_classes, critic.head_hidden, input_scale=critic.input_scale,
                      pooling=pooling, pool_length=pool_length)
    twin.head.load_state_dict(critic.head.state_dict())
    return twin.eval()


def test_tokens_pooling_is_the_max_over_each_programs_own_tokens_whatever_the_padding(actor):
    tok = load_tokenizer(actor)
    critic = build_critic(actor, n_classes=4, head_hidden=8).eval()
    assert critic.pooling == "tokens"
    b = _batch(tok)
    lengths = b["program_mask"].sum(-1).tolist()
    assert len(set(lengths)) == 3  # 40, 32 and 24 tokens: two rows are padded
    with torch.no_grad():
        token_logits, pooled = critic.score(**b)
        by_hand = torch.stack([token_logits[i, :n].max(dim=0).values for i, n in enumerate(lengths)])
        assert torch.equal(pooled, by_hand)
        wider = pad_batch([r[m.bool()].tolist() for r, m in zip(b["input_ids"], b["attention_mask"])],
                          [r[:n].tolist() for r, n in zip(b["program_ids"], lengths)], tok.pad_token_id,
                          pad_to_multiple_of=64)
        assert wider["program_ids"].shape[1] == 64
        assert torch.allclose(critic.score(**wider)[1], pooled, atol=1e-5)


def test_all_positions_pooling_is_the_max_over_a_fixed_length_padding_included(actor, tmp_path):
    """The original's pooling: every program is decoded over pool_length positions (after its end the decoder reads
    pad tokens) and the max runs over all of them."""
    from coderl_ray.models.critic import score_programs
    from coderl_ray.train.objectives import critic_objective

    tok = load_tokenizer(actor)
    critic = build_critic(actor, n_classes=4, head_hidden=8, pooling="all_positions", pool_length=48).eval()
    b = _batch(tok)
    lengths = b["program_mask"].sum(-1).tolist()
    with torch.no_grad():
        # An untrained head rarely peaks on padding; point its first layer at what pad positions' states have more
        # of than the programs' (mean difference), so that where the max lands matters.
        ids = torch.nn.functional.pad(b["program_ids"], (0, 48 - b["program_ids"].shape[1]), value=tok.pad_token_id)
        states = critic.token_states(b["input_ids"], b["attention_mask"], ids, None)
        real = torch.arange(48).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
        d = states[~real].mean(0) - states[real].mean(0)
        critic.head[0].weight.copy_(d.repeat(8, 1) / d.norm())
        critic.head[0].bias.zero_()
        critic.head[2].weight.copy_(torch.linspace(0.5, 2.0, 32).reshape(4, 8))
    tokens = _twin(critic, "tokens")
    with torch.no_grad():
        token_logits, pooled = critic.score(**b)
        # By hand: each program alone, padded with pad ids to 48 positions, through the same backbone and head.
        for i, n in enumerate(lengths):
            ids = torch.full((1, 48), tok.pad_token_id)
            ids[0, :n] = b["program_ids"][i, :n]
            mask = (torch.arange(48) < n).long().unsqueeze(0)
            every = tokens(b["input_ids"][i:i + 1], b["attention_mask"][i:i + 1], ids, mask)[0]
            assert every.shape == (48, 4)
            assert torch.allclose(pooled[i], every.max(dim=0).values, atol=1e-5)
            assert torch.allclose(token_logits[i, :n], every[:n], atol=1e-5)  # the program's own positions
        # Padding counts here: at least one program's class scores differ from the tokens-only max.
        assert not torch.allclose(pooled, tokens.score(**b)[1], atol=1e-4)

    rows = [{"prompt_ids": r[m.bool()].tolist(), "token_ids": p[:n].tolist(), "outcome": o}
            for r, m, p, n, o in zip(b["input_ids"], b["attention_mask"], b["program_ids"], lengths,
                                     ["passed", "failed", "compile_error"])]
    scores = score_programs(critic, rows, tok.pad_token_id)
    assert [s.token_logits.shape for s in scores] == [(n, 4) for n in lengths]
    assert all(torch.allclose(torch.from_numpy(s.program_logits), pooled[i], atol=1e-5) for i, s in enumerate(scores))
    with torch.no_grad():
        loss, metrics = critic_objective(critic, rows, tok.pad_token_id)
    labels = torch.tensor([3, 2, 0])
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(pooled, labels).item(), rel=1e-5)

    critic.save_pretrained(tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "critic_config.json").read_text())
    assert (meta["pooling"], meta["pool_length"]) == ("all_positions", 48)
    with torch.no_grad():
        assert torch.allclose(load_critic(tmp_path / "c").eval().score(**b)[1], pooled, atol=1e-6)


def test_pooling_settings_that_cannot_hold_are_refused(actor, tmp_path):
    from coderl_ray.train.loop import LoopConfig, build_model

    with pytest.raises(ValueError, match="seq2seq"):
        build_critic(tiny_actor_dir(tmp_path, "causal"), pooling="all_positions", pool_length=16)
    with pytest.raises(ValueError, match="pool_length"):
        build_critic(actor, pooling="all_positions")
    build_critic(actor, head_hidden=8).save_pretrained(tmp_path / "tokens_critic")
    cfg = LoopConfig(objective="critic", init_path=str(tmp_path / "tokens_critic"), steps=1, batch_size=1, lr=1e-3,
                     head_hidden=8, critic_pooling="all_positions", critic_pool_length=48)
    with pytest.raises(ValueError, match="start a new critic"):
        build_model(cfg)


def test_scale_head_input_off_builds_an_unscaled_critic_and_a_continued_critic_must_match(actor, tmp_path):
    from coderl_ray.train.loop import LoopConfig, build_model

    base = dict(objective="critic", init_path=str(actor), steps=1, batch_size=1, lr=1e-3, head_hidden=8)
    assert build_model(LoopConfig(**base, new_critic=True)).input_scale == pytest.approx(32 ** -0.5)
    raw = build_model(LoopConfig(**base, new_critic=True, critic_scale_input=False))
    assert raw.input_scale == 1.0
    raw.save_pretrained(tmp_path / "raw")
    cont = dict(base, init_path=str(tmp_path / "raw"))
    assert build_model(LoopConfig(**cont, critic_scale_input=False)).input_scale == 1.0
    with pytest.raises(ValueError, match="scale_head_input"):
        build_model(LoopConfig(**cont))
