"""The actor: any Hugging Face seq2seq (T5 / CodeT5) or causal LM, or a tiny random one built here.

Where a model can come from (:func:`resolve_model_path`):

* a Hub id (``Salesforce/codet5-large-ntp-py``, ``Qwen/Qwen2.5-Coder-1.5B``), or a local copy of one
  (``huggingface-cli download`` / ``save_pretrained`` output): loaded as it is;
* a training checkpoint folder written by :mod:`coderl_ray.train.loop` (the model lives in its ``model/``);
* a training run folder (``<storage>/<run name>``): its latest checkpoint, so the rollout stage can sample from
  the newest policy while training is still going.
"""

from __future__ import annotations

import json
from pathlib import Path

from coderl_ray.config import ModelConfig

CHECKPOINT_MODEL = "model"  # a checkpoint's Hugging Face model subfolder (train.loop writes it)
CHECKPOINT_INFO = "trainer_state.json"  # small, human-readable: step, objective, data position


def tiny_actor_config(cfg: ModelConfig, vocab_size: int, pad_token_id: int = 0, eos_token_id: int = 2,
                      bos_token_id: int | None = 1):
    """The transformers config of the tiny random actor of ``cfg.arch`` sized by ``cfg`` (d_model, layers, heads)."""
    from transformers import GPT2Config, T5Config

    if cfg.arch == "seq2seq":
        return T5Config(
            vocab_size=vocab_size, d_model=cfg.d_model, d_kv=cfg.d_model // cfg.num_heads, d_ff=cfg.d_ff,
            num_layers=cfg.num_layers, num_decoder_layers=cfg.num_layers, num_heads=cfg.num_heads,
            dropout_rate=0.0, pad_token_id=pad_token_id, eos_token_id=eos_token_id,
            decoder_start_token_id=pad_token_id, tie_word_embeddings=True,
        )
    return GPT2Config(
        vocab_size=vocab_size, n_embd=cfg.d_model, n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=cfg.d_ff,
        n_positions=cfg.max_source_tokens + cfg.max_target_tokens, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )


def build_tiny_actor(cfg: ModelConfig, tokenizer, seed: int = 0):
    """A small randomly initialised actor of ``cfg.arch`` sized by ``cfg`` (d_model, layers, heads)."""
    import torch
    from transformers import GPT2LMHeadModel, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = tiny_actor_config(cfg, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id,
                               tokenizer.bos_token_id)
    return (T5ForConditionalGeneration if cfg.arch == "seq2seq" else GPT2LMHeadModel)(config)


def is_seq2seq(model_or_config) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, "is_encoder_decoder", False))


def _checkpoint_step(folder: Path) -> int:
    try:
        return int(json.loads((folder / CHECKPOINT_INFO).read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def resolve_model_path(name_or_path: str | Path) -> str:
    """A Hugging Face model folder or Hub id for any of the forms in the module docstring."""
    path = Path(name_or_path)
    if not path.is_dir():
        return str(name_or_path)  # a Hub id (or a typo, which from_pretrained reports with the name)
    if any((path / f).is_file() for f in ("config.json", "tokenizer_config.json", "tokenizer.json")):
        return str(path)  # a model folder (or a bare tokenizer folder, for load_tokenizer)
    if (path / CHECKPOINT_MODEL / "config.json").is_file():
        return str(path / CHECKPOINT_MODEL)
    checkpoints = [d for d in path.iterdir() if (d / CHECKPOINT_MODEL / "config.json").is_file()]
    if checkpoints:
        # Highest step first; Ray Train names checkpoints by time, so the name breaks ties between runs.
        latest = max(checkpoints, key=lambda d: (_checkpoint_step(d), d.name))
        return str(latest / CHECKPOINT_MODEL)
    raise FileNotFoundError(f"{path} holds no model: expected a Hugging Face model folder (config.json), a training "
                            f"checkpoint ({CHECKPOINT_MODEL}/config.json) or a training run folder of checkpoints")


def load_actor(name_or_path: str | Path, dtype=None, attn_implementation: str | None = None):
    """Load an actor by Hub id, local folder or checkpoint; seq2seq or causal is read from its config.

    ``dtype``: None = fp32, whatever dtype the checkpoint was stored in. transformers 5 loads with
    ``dtype="auto"`` by default, so a checkpoint saved in bf16 (Qwen2.5-Coder on the Hub, or any re-saved bf16
    model) would train with pure-bf16 weights and AdamW state, where updates at RL learning rates (lr x update
    ~1e-6 against weights ~1e-2, below bf16's 8-bit mantissa) round away. Training therefore always loads fp32
    master weights and autocasts; inference passes ``coderl_ray.models.device.inference_dtype(device)``;
    ``"auto"`` keeps the stored dtype (copying a checkpoint).
    ``attn_implementation``: "sdpa", "eager", "flash_attention_2", ...; None lets transformers choose.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    path = resolve_model_path(name_or_path)
    config = AutoConfig.from_pretrained(path)
    cls = AutoModelForSeq2SeqLM if is_seq2seq(config) else AutoModelForCausalLM
    kwargs = {"dtype": torch.float32 if dtype is None else dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return cls.from_pretrained(path, **kwargs)
