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
