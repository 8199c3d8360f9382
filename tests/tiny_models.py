"""Tiny random models of the real classes with the real tokenizers from shared data, saved like real checkpoints.

* ``codet5_dir``: a ``T5ForConditionalGeneration`` with the CodeT5 tokenizer and CodeT5's special-token layout
  (pad 0 = decoder start, eos 2, tied embeddings, vocabulary 32,100), the shape family of
  ``Salesforce/codet5-large-ntp-py`` (actor) and ``Salesforce/codet5-base`` (critic backbone);
* ``gpt2_dir`` / ``qwen2_dir``: causal LMs with the GPT-2 tokenizer (which has no pad token); the Qwen2 one has an
  untied LM head, like the larger Qwen2.5-Coder models;
* ``hub_cache``: lays a folder out as the Hugging Face cache does, so ``from_pretrained("<org>/<name>")`` resolves
  a Hub id offline (``HF_HUB_OFFLINE=1``), exactly as it would on a machine that downloaded it once.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def _tokenizer(shared_data: Path, name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(shared_data / "tokenizers" / name))


def codet5_dir(tmp: Path, shared_data: Path, d_model: int = 32, layers: int = 1, seed: int = 0) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tok = _tokenizer(shared_data, "codet5")
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tok), d_model=d_model, d_kv=d_model // 2, d_ff=2 * d_model, num_layers=layers,
                      num_decoder_layers=layers, num_heads=2, dropout_rate=0.1, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                      decoder_start_token_id=tok.pad_token_id, tie_word_embeddings=True)
    dest = tmp / "codet5-tiny"
    T5ForConditionalGeneration(config).save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def gpt2_dir(tmp: Path, shared_data: Path, d_model: int = 32, layers: int = 1, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _tokenizer(shared_data, "gpt2")
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tok), n_embd=d_model, n_layer=layers, n_head=2, n_positions=1024,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    dest = tmp / "gpt2-tiny"
    GPT2LMHeadModel(config).save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def qwen2_dir(tmp: Path, shared_data: Path, d_model: int = 32, layers: int = 1, seed: int = 0) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = _tokenizer(shared_data, "gpt2")
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=d_model, intermediate_size=2 * d_model,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=False,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    dest = tmp / "qwen2-tiny"
    Qwen2ForCausalLM(config).save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = "0" * 40) -> Path:
    """Copy ``folder`` into ``cache`` in the Hub cache layout (``models--org--name/snapshots/<commit>``)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return cache
