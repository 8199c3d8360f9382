"""The critic of CodeRL: a backbone that reads (problem, program) plus an error head on every program token.

Paper, Sec. 3.2: an MLP (d_model -> 128 -> ReLU -> n_classes) on each decoder state gives token-level logits; their
max over the program's tokens is the program's logit vector, trained with cross-entropy against the unit-test
outcome (4 classes: compile error, runtime error, failed, passed; or binary: not passed, passed). We wrap a stock
``transformers`` model instead of forking it (as the original CodeRL did). ``pooling="all_positions"`` max-pools as
the original code did instead: over every position of a target padded to a fixed length, padding included.

The backbone is any seq2seq model (the paper: CodeT5-base; the encoder reads the problem, the decoder the program)
or any causal LM (prompt and program in one sequence). The head reads the backbone's *base* model's last hidden
states, so the vocabulary projection, the largest matmul of a code LM, is never computed for the critic. It reads
them at the scale the backbone's own LM head does: T5 with tied embeddings (CodeT5) multiplies its decoder states
by d_model^-0.5 before the LM head, and the original CodeRL critic's error head read the states after that
rescaling (:func:`head_input_scale`).

A critic folder holds the backbone's ``save_pretrained`` files plus ``critic_head.safetensors`` and
``critic_config.json``; :func:`load_critic` refuses any folder without them.
"""

from __future__ import annotations

import json
import math  # noqa: F401  (the doctests use it)
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from coderl_ray.models.batching import causal_position_ids, program_batch, shift_right

HEAD_WEIGHTS = "critic_head.safetensors"
HEAD_CONFIG = "critic_config.json"


class NotACriticError(ValueError):
    """The folder given as a critic does not hold a critic (no head weights or config)."""


def head_input_scale(config) -> float:
    """The factor the backbone's LM applies to its last hidden states before the LM head, which the critic's head
    applies too: d_model^-0.5 for T5-family models that tie their embeddings (CodeT5, as the original critic read
    them), 1 for untied T5 (v1.1) and for every causal LM.

    transformers 5 records the T5 rule as ``config.scale_decoder_outputs`` (read from ``tie_word_embeddings`` of the
    saved config, which CodeT5's configs leave at its default, True); the original's modified ``modeling_t5.py``
    tested ``tie_word_embeddings`` itself.
    """
    if getattr(config, "scale_decoder_outputs", False):
        return float(config.d_model) ** -0.5
    return 1.0


POOLINGS = ("tokens", "all_positions")


class CodeCritic(nn.Module):
    def __init__(self, backbone: nn.Module, n_classes: int = 4, head_hidden: int = 128,
                 input_scale: float | None = None, pooling: str = "tokens", pool_length: int = 0,
                 read_logprobs: bool = False):
        """``input_scale``: the factor on the backbone's states before the head; None = :func:`head_input_scale`
        of the backbone (a critic loaded from a folder keeps the one it was trained with).

        ``pooling``: how token logits become the program's: "tokens" = max over the program's own tokens;
        "all_positions" = max over ``pool_length`` decoder positions, those after the program reading pad tokens (the
        original critic's targets were padded to 512 and pooled whole). Seq2seq backbones only, as in the original.

        ``read_logprobs``: the head also reads, at each position, the program token's log-probability under the
        backbone's own LM head and its gap to the most likely token's (:func:`token_surprise`): how unexpected the
        token is given the problem. Not in the paper, whose head reads the states alone. A state at position t has
        not read token t (it predicts it), and a backbone that has learnt to write programs knows which constant a
        statement calls for: on the demo the SFT actor's log-likelihood of a program ranks one problem's programs at
        within-problem AUC 0.63-0.70 on the rounds' buffers, and a head-only critic that reads it ranks them about as
        well, where the same critic on states alone stays at chance (docs/benchmarks.md, "A critic that ranks
        programs within a problem").
        It costs the LM-head projection of every program position, as the actor's forward does.
        """
        super().__init__()
        if n_classes not in (2, 4):
            raise ValueError(f"a critic has 4 classes (compile error, runtime error, failed, passed) or 2 "
                             f"(not passed, passed), not {n_classes}")
        if pooling not in POOLINGS:
            raise ValueError(f"critic pooling must be one of {POOLINGS}, got {pooling!r}")
        if pooling == "all_positions":
            if not getattr(backbone.config, "is_encoder_decoder", False):
                raise ValueError("critic pooling 'all_positions' (the original CodeRL's) is defined for seq2seq "
                                 "backbones only; use 'tokens' with a causal one")
            if pool_length < 1 or backbone.config.pad_token_id is None:
                raise ValueError("critic pooling 'all_positions' needs pool_length >= 1 (the target limit, "
                                 f"got {pool_length}) and a backbone with a pad_token_id")
        self.backbone = backbone
        self.n_classes = n_classes
        self.head_hidden = head_hidden
        self.input_scale = head_input_scale(backbone.config) if input_scale is None else float(input_scale)
        self.pooling = pooling
        self.pool_length = int(pool_length) if pooling == "all_positions" else 0
        self.read_logprobs = bool(read_logprobs)
        if read_logprobs and backbone.get_output_embeddings() is None:
            raise ValueError(f"critic read_logprobs needs a backbone with an LM head; {type(backbone).__name__} has "
                             "none")
        d_model = _hidden_size(backbone.config)
        n_in = d_model + (SURPRISE_FEATURES if read_logprobs else 0)
        self.head = nn.Sequential(nn.Linear(n_in, head_hidden), nn.ReLU(), nn.Linear(head_hidden, n_classes))
        # The LM head is unused unless read_logprobs. When it is a separate matrix (untied embeddings, e.g.
        # Qwen2.5-7B), DDP would wait forever for its gradient, so it is frozen (read_logprobs then reads the
        # likelihood of the backbone as it was loaded); a tied one is the input embedding and trains.
        out, inp = backbone.get_output_embeddings(), backbone.get_input_embeddings()
        if out is not None and inp is not None and out.weight is not inp.weight:
            out.weight.requires_grad_(False)

    @property
    def is_seq2seq(self) -> bool:
        return bool(getattr(self.backbone.config, "is_encoder_decoder", False))

    def token_states(self, input_ids, attention_mask, program_ids, program_mask) -> torch.Tensor:
        """Last hidden state at every program position: [B, T, d_model]; position t has read the prompt and w_<t."""
        if self.is_seq2seq:
            encoded = self.backbone.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
            # The decoder reads the program shifted right, as in CodeRL, so the value at t is aligned with the
            # actor's log p(w_t). Right padding needs no decoder mask: causal attention never lets a real position
            # see a later pad, and pads are masked out of the max-pool (unless pooling="all_positions" asks for
            # them, as the original did).
            decoded = self.backbone.get_decoder()(
                input_ids=shift_right(self.backbone.config, program_ids),
                encoder_hidden_states=encoded.last_hidden_state, encoder_attention_mask=attention_mask,
                use_cache=False)
            return decoded.last_hidden_state
        ids = torch.cat([input_ids, program_ids], dim=1)
        mask = torch.cat([attention_mask, program_mask], dim=1)
        out = self.backbone.base_model(input_ids=ids, attention_mask=mask, position_ids=causal_position_ids(mask),
                                       use_cache=False)
        s = input_ids.shape[1]
        # The state after the last prompt token predicts program token 0, and so on.
        return out.last_hidden_state[:, s - 1: s - 1 + program_ids.shape[1]]

    def forward(self, input_ids, attention_mask, program_ids, program_mask) -> torch.Tensor:
        """Token-level logits over the program tokens.

        Shapes: ``input_ids``/``attention_mask`` [B, S] (the prompt, left-padded), ``program_ids``/``program_mask``
        [B, T] (the program's tokens, right-padded). Returns ``token_logits`` [B, T', C]: T' = T, or with
        ``pooling="all_positions"`` max(T, pool_length), the programs padded to ``pool_length`` first so every
        program is pooled over the same positions whatever else is in its batch. :meth:`pool` reduces them.
        """
        if self.pooling == "all_positions" and program_ids.shape[1] < self.pool_length:
            pad = self.pool_length - program_ids.shape[1]
            program_ids = nn.functional.pad(program_ids, (0, pad), value=self.backbone.config.pad_token_id)
            program_mask = nn.functional.pad(program_mask, (0, pad), value=0)
        states = self.token_states(input_ids, attention_mask, program_ids, program_mask)
        inputs = states * self.input_scale if self.input_scale != 1.0 else states
        if self.read_logprobs:
            lm_logits = self.backbone.get_output_embeddings()(states * head_input_scale(self.backbone.config))
            inputs = torch.cat([inputs, token_surprise(lm_logits, program_ids).to(inputs.dtype)], dim=-1)
        return self.head(inputs)

    def pool(self, token_logits: torch.Tensor, program_mask: torch.Tensor) -> torch.Tensor:
        """The program's logits from :meth:`forward`'s token logits: [B, T', C], [B, T] -> [B, C]."""
        if self.pooling == "all_positions":
            return token_logits.max(dim=1).values
        return program_logits(token_logits, program_mask)

    @torch.no_grad()
    def score(self, input_ids, attention_mask, program_ids, program_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(token logits of the program's positions [B, T, C], pooled program logits [B, C]) for inference."""
        token_logits = self(input_ids, attention_mask, program_ids, program_mask)
        return token_logits[:, : program_ids.shape[1]], self.pool(token_logits, program_mask)

    def save_pretrained(self, folder: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Backbone in Hugging Face format plus the head. ``state_dict``: a full state dict of this module (FSDP
        gathers one on rank 0 instead of saving its shard)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        if state_dict is None:
            state_dict = self.state_dict()
        backbone_sd = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        head_sd = {k[len("head."):]: v.detach().cpu().contiguous() for k, v in state_dict.items()
                   if k.startswith("head.")}
        self.backbone.save_pretrained(folder, state_dict=backbone_sd)
        save_file(head_sd, str(folder / HEAD_WEIGHTS))
        (folder / HEAD_CONFIG).write_text(json.dumps({"n_classes": self.n_classes, "head_hidden": self.head_hidden,
                                                      "seq2seq": self.is_seq2seq, "input_scale": self.input_scale,
                                                      "pooling": self.pooling, "pool_length": self.pool_length,
                                                      "read_logprobs": self.read_logprobs}))


SURPRISE_FEATURES = 2


def token_surprise(lm_logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Per position, how unexpected the program's token is: [log p(w_t), log p(w_t) - max_v log p(v)], from the
    LM logits at the positions that predict each token. Shapes: [B, T, V], [B, T] -> [B, T, 2] (float32).

    >>> lm = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    >>> (token_surprise(lm, torch.tensor([[0, 2]])) / math.log(2)).double().round(decimals=3).tolist()  # in bits
    [[[-1.0, 0.0], [-3.322, -3.0]]]
    """
    logp = torch.log_softmax(lm_logits.float(), dim=-1)
    chosen = logp.gather(-1, token_ids.unsqueeze(-1))
    return torch.cat([chosen, chosen - logp.max(dim=-1, keepdim=True).values], dim=-1)


def program_logits(token_logits: torch.Tensor, program_mask: torch.Tensor) -> torch.Tensor:
    """Max over valid tokens: [B, T, C], [B, T] -> [B, C] (paper: the program's prediction is the max-pool)."""
    masked = token_logits.masked_fill(~program_mask.bool().unsqueeze(-1), float("-inf"))
    return masked.max(dim=1).values


def critic_loss(token_logits: torch.Tensor, program_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the max-pooled logits against the outcome class; labels [B] in 0..C-1."""
    return nn.functional.cross_entropy(program_logits(token_logits, program_mask).float(), labels)


def pass_log_odds(program_logits: torch.Tensor) -> torch.Tensor:
    """log P(passed) - log P(not passed) of pooled logits [B, C] -> [B]: the last class against the others, the
    same order as the "passed" probability critic sampling ranks by (a monotone function of it)."""
    logits = program_logits.float()
    return logits[:, -1] - torch.logsumexp(logits[:, :-1], dim=-1)


def pairwise_rank_loss(scores: torch.Tensor, passed: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean over the (passing i, failing j) pairs of one group (problem) of softplus(s_j - s_i) = -log sigmoid(s_i -
    s_j): the logistic (RankNet) loss that asks each passing program to score above each failing program of its own
    problem. Shapes: ``scores`` [B] float, ``passed`` [B] bool, ``groups`` [B] int; a 0-d tensor, 0 (with a gradient
    of zeros) when no group of the batch holds both a passing and a failing program.

    Not in the paper, whose critic learns from the per-program cross-entropy alone (:func:`critic_loss`): that loss
    is lowered most by predicting each problem's pass rate from its statement, which ranks no two programs of one
    problem; this term is zero for a critic that scores a problem's programs alike only if none of them differ.

    >>> s = torch.tensor([2.0, 0.0, 1.0, 5.0]); ok = torch.tensor([True, False, False, True])
    >>> round(float(pairwise_rank_loss(s, ok, torch.tensor([0, 0, 1, 1]))), 4)  # (softplus(-2) + softplus(-4)) / 2
    0.0725
    """
    same = groups.unsqueeze(1) == groups.unsqueeze(0)
    pairs = same & passed.unsqueeze(1) & ~passed.unsqueeze(0)  # [i, j]: i passes, j fails, same group
    if not bool(pairs.any()):
        return scores.sum() * 0.0
    margins = scores.unsqueeze(1) - scores.unsqueeze(0)
    return torch.nn.functional.softplus(-margins[pairs]).mean()


@dataclass
class ProgramScore:
    """The critic's reading of one program: ``token_logits`` [T, C] (float32), the max-pooled ``program_logits``
    [C], the predicted class and the softmax probability of "passed" (the last class in both heads)."""

    token_logits: np.ndarray
    program_logits: np.ndarray
    pred: int
    pass_prob: float


@torch.no_grad()
def score_programs(critic: CodeCritic, rows: Sequence[dict[str, Any]], pad_id: int,
                   device: torch.device | str = "cpu") -> list[ProgramScore]:
    """Critic scores of rows holding ``prompt_ids`` and ``token_ids``: the one scorer of RL scoring and of critic
    sampling. With token pooling an empty program (no tokens at all) gets zero logits, a uniform prediction."""
    batch = program_batch(rows, pad_id, device)
    logits = critic(batch["input_ids"], batch["attention_mask"], batch["program_ids"], batch["program_mask"])
    pooled_all = critic.pool(logits, batch["program_mask"]).float().cpu().numpy()  # as in training
    lengths = batch["program_mask"].sum(-1).tolist()
    out = []
    for i, n in enumerate(lengths):
        tokens = logits[i, :n].float().cpu().numpy()
        pooled = pooled_all[i] if n or critic.pooling == "all_positions" else np.zeros(critic.n_classes, np.float32)
        probs = np.exp(pooled - pooled.max())
        probs /= probs.sum()
        out.append(ProgramScore(tokens, pooled, int(pooled.argmax()), float(probs[-1])))
    return out


def _hidden_size(config) -> int:
    for name in ("d_model", "hidden_size", "n_embd"):
        if hasattr(config, name):
            return int(getattr(config, name))
    raise ValueError(f"cannot find the hidden size of a {type(config).__name__}")


def is_critic_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / HEAD_CONFIG).is_file() and (folder / HEAD_WEIGHTS).is_file()


def build_critic(backbone_path: str | Path, n_classes: int = 4, head_hidden: int = 128, seed: int = 0,
                 dtype=None, pooling: str = "tokens", pool_length: int = 0,
                 input_scale: float | None = None, read_logprobs: bool = False) -> CodeCritic:
    """A new critic: the backbone's weights from ``backbone_path`` (an actor folder, a Hub id such as
    ``Salesforce/codet5-base``, or a local copy of one), and a freshly initialised head. ``dtype``: of backbone and
    head alike (None = fp32, whatever the backbone was stored in; see ``load_actor``)."""
    from coderl_ray.models.actor import load_actor

    torch.manual_seed(seed)
    critic = CodeCritic(load_actor(backbone_path, dtype=dtype), n_classes=n_classes, head_hidden=head_hidden,
                        input_scale=input_scale, pooling=pooling, pool_length=pool_length,
                        read_logprobs=read_logprobs)
    return _one_dtype(critic)


def _one_dtype(critic: CodeCritic) -> CodeCritic:
    # The head reads the backbone's hidden states: an fp32 head on a bf16 backbone fails in its first matmul.
    # Only the head is cast: the backbone's loader knows which of its modules stay fp32 (T5 keeps `wo`).
    critic.head.to(critic.backbone.dtype)
    return critic


def load_critic(folder: str | Path, dtype=None) -> CodeCritic:
    """A critic saved with ``CodeCritic.save_pretrained`` (or a training checkpoint / run folder of one), backbone
    and head in ``dtype`` (None = fp32, whatever they were stored in)."""
    from safetensors.torch import load_file

    from coderl_ray.models.actor import load_actor, resolve_model_path

    folder = Path(folder)
    if folder.is_dir() and not is_critic_folder(folder):
        folder = Path(resolve_model_path(folder))  # a training checkpoint or run folder: its latest model
    if not is_critic_folder(folder):
        missing = [n for n in (HEAD_CONFIG, HEAD_WEIGHTS) if not (folder / n).is_file()]
        raise NotACriticError(f"{folder} is not a critic folder: it lacks {' and '.join(missing)} "
                              "(a critic is saved with CodeCritic.save_pretrained; to start a critic from an actor "
                              "or a pretrained backbone use build_critic)")
    meta = json.loads((folder / HEAD_CONFIG).read_text())
    # Critics saved before the scale was recorded (2026-12-02) were trained on unscaled states.
    critic = CodeCritic(load_actor(folder, dtype=dtype), n_classes=meta["n_classes"], head_hidden=meta["head_hidden"],
                        input_scale=meta.get("input_scale", 1.0), pooling=meta.get("pooling", "tokens"),
                        pool_length=meta.get("pool_length", 0), read_logprobs=meta.get("read_logprobs", False))
    head = load_file(str(folder / HEAD_WEIGHTS))
    try:
        critic.head.load_state_dict(head)
    except RuntimeError as exc:
        raise NotACriticError(f"{folder / HEAD_WEIGHTS} does not fit the backbone in {folder}: {exc}") from None
    return _one_dtype(critic)
