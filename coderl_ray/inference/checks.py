"""Critic sampling's inputs, checked before any work: model folders of the right kind, one tokenizer, problems with
tests.

Each error names the flag (or pipeline folder) it is about. Only configs and tokenizers are loaded here, no weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coderl_ray.config import ConfigError
from coderl_ray.data.problems import ProblemError
from coderl_ray.data.prompts import build_prompt

_PROBE_PROGRAM = "def f(xs):\n    return sorted(set(xs))[::-1]  # 0123 'quote' \"dq\" \\t\n"


def check_problems(problems: list[dict[str, Any]], where: str) -> None:
    """Every problem has hidden tests (the judgement needs them); example tests are optional (critic ranking)."""
    if not problems:
        raise ProblemError(f"{where}: no problems")
    for p in problems:
        tests = p.get("tests") or {}
        cases = tests.get("asserts") if tests.get("kind") == "assert" else tests.get("inputs")
        if not cases:
            raise ProblemError(f"{where} ({p['problem_id']}): the problem has no tests; critic sampling judges its "
                               "programs on the hidden tests (example tests alone are not enough)")


def _model_folder(path: str | Path, label: str) -> str:
    from coderl_ray.models.actor import resolve_model_path

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{label} {folder}: no such folder")
    try:
        return resolve_model_path(folder)
    except FileNotFoundError as exc:  # "<folder> holds no model: expected ..."
        raise FileNotFoundError(f"{label} {exc}") from None


def check_generator(path: str | Path, label: str) -> str:
    """An actor-like model folder (the actor, or a repair model): a seq2seq or causal LM with its tokenizer, and not
    a critic. Returns the resolved model folder."""
    from transformers import AutoConfig

    from coderl_ray.models.critic import is_critic_folder

    folder = _model_folder(path, label)
    if is_critic_folder(folder):
        raise ConfigError(f"{label} {path}: this is a critic folder (it holds a critic head), not a model that "
                          "generates programs")
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{label} {path}: not a Hugging Face model folder ({exc})") from None
    archs = " ".join(getattr(config, "architectures", None) or [])
    if not (getattr(config, "is_encoder_decoder", False) or "CausalLM" in archs or "LMHead" in archs):
        raise ConfigError(f"{label} {path}: a {archs or type(config).__name__} is neither a seq2seq nor a causal "
                          "language model")
    return folder


def check_critic(path: str | Path, label: str) -> str:
    from coderl_ray.models.critic import HEAD_CONFIG, HEAD_WEIGHTS, is_critic_folder

    folder = _model_folder(path, label)
    if not is_critic_folder(folder):
        missing = [n for n in (HEAD_CONFIG, HEAD_WEIGHTS) if not (Path(folder) / n).is_file()]
        raise ConfigError(f"{label} {path}: not a critic folder (it lacks {' and '.join(missing)}; critics are "
                          "written by `coderl-ray train-critic` or the pipeline's models/critic_*)")
    return folder


def tokenizer_difference(a, b, texts: list[str]) -> str | None:
    """How two tokenizers differ (vocabulary size, special tokens, the encoding of ``texts``), or None."""
    if len(a) != len(b):
        return f"vocabulary sizes {len(a)} and {len(b)}"
    for name in ("pad_token_id", "eos_token_id"):
        if getattr(a, name) != getattr(b, name):
            return f"{name} {getattr(a, name)} and {getattr(b, name)}"
    for text in texts:
        x, y = a(text).input_ids, b(text).input_ids
        if x != y:
            return f"encodings of {text[:40]!r}... ({x[:8]}... and {y[:8]}...)"
    return None


def check_inputs(problems: list[dict[str, Any]], problems_where: str, actor: str | Path, critic: str | Path,
                 repair: str | Path | None, labels: dict[str, str] | None = None) -> None:
    """Every check of the module docstring; ``labels`` names the inputs in errors (flags by default)."""
    from coderl_ray.models.tokenizer import load_tokenizer

    labels = {"actor": "--actor", "critic": "--critic", "repair": "--repair", **(labels or {})}
    check_problems(problems, problems_where)
    folders = {"actor": check_generator(actor, labels["actor"]), "critic": check_critic(critic, labels["critic"])}
    if repair:
        folders["repair"] = check_generator(repair, labels["repair"])
    actor_tok = load_tokenizer(folders["actor"])
    probes = [build_prompt(p) for p in problems[:3]] + [_PROBE_PROGRAM]
    for name in ("critic", "repair"):
        if name in folders:
            diff = tokenizer_difference(actor_tok, load_tokenizer(folders[name]), probes)
            if diff:
                raise ConfigError(f"{labels[name]} {folders[name]}: its tokenizer differs from the actor's "
                                  f"({labels['actor']} {actor}): {diff}. The critic reads the actor's token ids and "
                                  "the repair model writes them; both must share the actor's tokenizer")
