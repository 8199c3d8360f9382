"""The critic of CodeRL: a backbone that reads (problem, program) plus an error head on every program token.

Paper, Sec. 3.2: an MLP (d_model -> 128 -> ReLU -> n_classes) on each decoder state gives token-level logits; their
max over the program's tokens is the program's logit vector, trained with cross-entropy against the unit-test
outcome. We wrap a stock ``transformers`` model instead of forking it (as the original CodeRL did).

A critic folder holds the backbone's ``save_pretrained`` files plus ``critic_head.safetensors`` and
``critic_config.json``; :func:`load_critic` refuses any folder without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

HEAD_WEIGHTS = "critic_head.safetensors"
HEAD_CONFIG = "critic_config.json"


class NotACriticError(ValueError):
    """The folder given as a critic does not hold a critic (no head weights or config)."""


class CodeCritic(nn.Module):
    def __init__(self, backbone: nn.Module, n_classes: int = 4, head_hidden: int = 128):
        super().__init__()
        self.backbone = backbone
        self.n_classes = n_classes
        self.head_hidden = head_hidden
        d_model = _hidden_size(backbone.config)
        self.head = nn.Sequential(nn.Linear(d_model, head_hidden), nn.ReLU(), nn.Linear(head_hidden, n_classes))

    @property
    def is_seq2seq(self) -> bool:
        return bool(getattr(self.backbone.config, "is_encoder_decoder", False))

    def forward(self, input_ids, attention_mask, program_ids, program_mask):
        """Token-level logits over the program tokens.

        Shapes: ``input_ids``/``attention_mask`` [B, S] (the prompt), ``program_ids``/``program_mask`` [B, T]
        (the program's tokens, right-padded). Returns ``token_logits`` [B, T, C] where position t has read the
        prompt and the program tokens before t (the decoder input is the program shifted right, as in CodeRL's
        implementation, so the value at t is aligned with the actor's log p(w_t)).
        """
        if self.is_seq2seq:
            decoder_input_ids = self.backbone._shift_right(program_ids)
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                decoder_input_ids=decoder_input_ids, decoder_attention_mask=program_mask,
                                output_hidden_states=True)
            states = out.decoder_hidden_states[-1]
        else:
            # Causal backbone: prompt and program in one sequence; the state before program token t predicts t.
            ids = torch.cat([input_ids, program_ids], dim=1)
            mask = torch.cat([attention_mask, program_mask], dim=1)
            out = self.backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            s = input_ids.shape[1]
            states = out.hidden_states[-1][:, s - 1: s - 1 + program_ids.shape[1]]
        return self.head(states)

    def save_pretrained(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        self.backbone.save_pretrained(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(folder / HEAD_WEIGHTS))
        (folder / HEAD_CONFIG).write_text(json.dumps({"n_classes": self.n_classes, "head_hidden": self.head_hidden,
                                                      "seq2seq": self.is_seq2seq}))


def program_logits(token_logits: torch.Tensor, program_mask: torch.Tensor) -> torch.Tensor:
    """Max over valid tokens: [B, T, C], [B, T] -> [B, C] (paper: the program's prediction is the max-pool)."""
    masked = token_logits.masked_fill(~program_mask.bool().unsqueeze(-1), float("-inf"))
    return masked.max(dim=1).values


def critic_loss(token_logits: torch.Tensor, program_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the max-pooled logits against the outcome class; labels [B] in 0..C-1."""
    return nn.functional.cross_entropy(program_logits(token_logits, program_mask), labels)


def _hidden_size(config) -> int:
    for name in ("d_model", "hidden_size", "n_embd"):
        if hasattr(config, name):
            return int(getattr(config, name))
    raise ValueError(f"cannot find the hidden size of a {type(config).__name__}")


def build_critic(backbone_path: str | Path, n_classes: int = 4, head_hidden: int = 128, seed: int = 0) -> CodeCritic:
    """A new critic: the backbone's weights from ``backbone_path`` (an actor checkpoint or a Hub id), a fresh head."""
    from coderl_ray.models.actor import load_actor

    torch.manual_seed(seed)
    return CodeCritic(load_actor(backbone_path), n_classes=n_classes, head_hidden=head_hidden)


def load_critic(folder: str | Path) -> CodeCritic:
    from safetensors.torch import load_file

    from coderl_ray.models.actor import load_actor

    folder = Path(folder)
    if not (folder / HEAD_CONFIG).is_file() or not (folder / HEAD_WEIGHTS).is_file():
        raise NotACriticError(f"{folder} is not a critic folder: it lacks {HEAD_CONFIG} and {HEAD_WEIGHTS} "
                              "(a critic is saved with CodeCritic.save_pretrained)")
    meta = json.loads((folder / HEAD_CONFIG).read_text())
    critic = CodeCritic(load_actor(folder), n_classes=meta["n_classes"], head_hidden=meta["head_hidden"])
    critic.head.load_state_dict(load_file(str(folder / HEAD_WEIGHTS)))
    return critic
