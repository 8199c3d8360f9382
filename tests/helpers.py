"""Builders shared by tests: a tiny tokenizer and tiny random actors, saved and loaded like real checkpoints."""

from __future__ import annotations

from pathlib import Path

from coderl_ray.config import ModelConfig
from coderl_ray.data.prompts import build_prompt
from coderl_ray.data.suite import generate_suite


def tiny_suite(n_train: int = 24, n_test: int = 9, seed: int = 0):
    return generate_suite(seed=seed, n_train=n_train, n_test=n_test)


def tiny_actor_dir(tmp: Path, arch: str = "seq2seq", n_train: int = 24, seed: int = 0) -> Path:
    """Train a tokenizer on a small suite, build a random tiny actor of ``arch``, save both to ``tmp/actor``."""
    from coderl_ray.models.actor import build_tiny_actor
    from coderl_ray.models.tokenizer import train_tokenizer

    train, _ = tiny_suite(n_train)
    texts = [build_prompt(p) for p in train] + [p["solutions"][0] for p in train]
    tok = train_tokenizer(texts, tmp / "tokenizer", vocab_size=400)
    cfg = ModelConfig(arch=arch, d_model=32, d_ff=64, num_layers=1, num_heads=2, max_source_tokens=256,
                      max_target_tokens=128)
    model = build_tiny_actor(cfg, tok, seed=seed)
    dest = tmp / f"actor_{arch}"
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest
