"""The actor: any Hugging Face seq2seq (T5 / CodeT5) or causal LM, or a tiny random one built here."""

from __future__ import annotations

from pathlib import Path

from coderl_ray.config import ModelConfig


def build_tiny_actor(cfg: ModelConfig, tokenizer, seed: int = 0):
    """A small randomly initialised actor of ``cfg.arch`` sized by ``cfg`` (d_model, layers, heads)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    vocab = len(tokenizer)
    if cfg.arch == "seq2seq":
        config = T5Config(
            vocab_size=vocab, d_model=cfg.d_model, d_kv=cfg.d_model // cfg.num_heads, d_ff=cfg.d_ff,
            num_layers=cfg.num_layers, num_decoder_layers=cfg.num_layers, num_heads=cfg.num_heads,
            dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        )
        return T5ForConditionalGeneration(config)
    config = GPT2Config(
        vocab_size=vocab, n_embd=cfg.d_model, n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=cfg.d_ff,
        n_positions=cfg.max_source_tokens + cfg.max_target_tokens, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def is_seq2seq(model_or_config) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, "is_encoder_decoder", False))


def load_actor(name_or_path: str | Path, dtype=None):
    """Load an actor by Hub id or local folder; seq2seq or causal is read from its config."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    name_or_path = str(name_or_path)
    config = AutoConfig.from_pretrained(name_or_path)
    cls = AutoModelForSeq2SeqLM if is_seq2seq(config) else AutoModelForCausalLM
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return cls.from_pretrained(name_or_path, **kwargs)
