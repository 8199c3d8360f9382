"""Tokenizers: train a small byte-level BPE on the problems, or load any Hugging Face tokenizer folder / Hub id."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIALS = {"pad_token": "<pad>", "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 2000):
    """Train a byte-level BPE tokenizer and save it in Hugging Face format; returns the loaded tokenizer.

    Digits are split one by one before BPE so that a constant in the question ("greater than 17") and in the code
    (``x > 17``) are the same tokens, which is what lets a tiny model copy numbers it never saw in that position.
    """
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIALS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIALS["pad_token"], SPECIALS["eos_token"], SPECIALS["bos_token"], SPECIALS["unk_token"]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return load_tokenizer(out_dir)


def load_tokenizer(name_or_path: str | Path):
    """Load a tokenizer from a local folder, a Hub id or a training checkpoint (see ``resolve_model_path``).

    Makes sure it has a pad token: GPT-2's has none, and its EOS serves (padding is always masked out).
    """
    from transformers import AutoTokenizer

    from coderl_ray.models.actor import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
