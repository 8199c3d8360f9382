"""Pre-flight check: what the run's roles ask Ray for all run long, whether they get it, and whether they fit in GPU
memory, alone and together.

    coderl-ray plan --config configs/codet5-large.yaml

A run starts each role once and keeps it to the end (docs/architecture.md, "Roles"): generators, sandbox executors,
the actor and the critic trainer, critic scorers. So the plan is about the roles together:

* **Roles** (:func:`coderl_ray.registry.run_roles`, in the order the run starts them): what each requests (the
  registry's :class:`~coderl_ray.registry.Pool`, exactly what :class:`coderl_ray.roles.setup.Roles` asks Ray for)
  and the memory each worker holds: its largest stage's peak (:class:`RoleEstimate` says why).
* **GPUs** (``plan.cluster_gpus`` > 0): the roles' GPU shares placed on that many GPUs as Ray places them
  (:func:`coderl_ray.registry.place_gpus`: one node, the run's start order, best fit for fractions). A role that
  finds no room is an error (it would wait forever, and the run with it); so is a GPU whose roles hold more memory
  together than ``plan.gpu_memory_gb`` less ``plan.headroom`` (Ray books shares, it does not split memory), naming
  the keys that would make them fit. Without ``plan.cluster_gpus`` each worker must fit in its own share of a GPU,
  which then holds wherever Ray puts it.
* **CPUs** (``plan.cluster_cpus`` > 0, one machine): the roles' CPU reservations, one CPU for Ray Data's tasks and
  what is left for sandbox executors; a warning when a cluster of that size could not start them.
* **Stages** (:func:`coderl_ray.registry.pipeline_stages`; each names its builder here, ``plan_<stage>``): an
  estimate of the peak memory of one worker per stage, item by item, against the GPU (or, without
  ``plan.cluster_gpus``, the worker's share of it). A stage that does not fit names the keys that would make it fit
  (and, for the row budgets, the largest value that does).

One more check: a GPU config (some role asks for a GPU) whose role holding a model would run on CPU (a key left at
its CPU default, e.g. ``cs.critic_gpus_per_worker``). The pipeline runs the plan before any work.

The estimates are arithmetic on the model's shape and the configured sizes, worst case (every row at the configured
maximum lengths): no model is loaded and nothing is allocated.

* **Shape.** ``model.name_or_path`` / ``critic.backbone``: ``tiny`` is built from ``model.*``; a local folder (model,
  checkpoint or run) is read from its ``config.json``; a Hub id is looked up in the Hugging Face cache, then in
  :data:`KNOWN_MODELS` (the paper's CodeT5 models and Qwen2.5-Coder, whose configs are public), so the paper config
  plans offline. The parameter count is exact: the model is instantiated on the ``meta`` device.
* **Training** (per worker): fp32 weights, gradients and AdamW's two moments (sharded over workers under FSDP,
  plus the gathered bf16 blocks), autocast's bf16 weight copies (DDP), and the activations one micro-batch keeps
  for backward, counted tensor by tensor from what the transformers implementations save (fp32 residual stream
  and norms, bf16 matmul inputs under autocast, attention score-sized masks or probabilities, the fp32
  log-softmax over the vocabulary and its gradient), with and without activation checkpointing.
* **Generation** (per generator): weights in the inference dtype, self- and cross-attention caches of the rows of
  one decoder call (``rollout.max_rows_per_generate``; the static decoder keeps two call shapes alive), encoder
  states, and the per-step logits and sampling temporaries.
* **Behaviour log-probabilities** (``rl.clip_ratio`` > 0): after sampling, a generator scores its programs in
  passes of ``rollout.score_batch_size`` rows (a forward with the vocabulary's log-softmax) beside what generation
  keeps (weights, the static decoder's workspaces).
* **Scoring**: a critic scorer's forward pass of ``rollout.score_batch_size`` rows (critic sampling:
  ``cs.critic_batch_size``).
* **Held models**: a trainer keeps its other slot (the actor while the repair model trains, the round's critic
  while the binary one trains) and a scorer the round's critic beside the binary one.
* **Critic sampling**: a generator decodes units of up to ``rollout.batch_size_per_worker`` rows, one prompt each,
  and holds the repair model beside the actor (``repair.enabled``); seq2seq rows with a seed go through
  ``generate`` even with the static decoder, so the larger of the two decoders' estimates counts.

What it leaves out: the CUDA context and NCCL buffers (~1 GB per process, inside ``plan.headroom``; on a shared GPU
each role has its own), fragmentation of the caching allocator (also headroom; a role whose calls change shape may
keep both shapes' blocks cached, and no other process can use them), ``torch.compile``'s workspace, and host
memory. How close the estimates come to measured peaks is recorded in docs/benchmarks.md ("Memory: plan against
measurement").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from coderl_ray import registry
from coderl_ray.config import ConfigError, ModelConfig, PipelineConfig
from coderl_ray.registry import Pool, scorer_pool, trainer_pool

GiB = 2**30
STATIC_PROMPT_BUCKET = 64  # StaticDecoder pads prompts to a multiple of this (its pad_prompts_to default)

# Public configs of the Hub models the shipped configs name, so that a machine without the Hub can plan them.
# Values from each model's config.json (CodeT5-large = the T5-large layout; CodeT5 keeps T5's relu FFN).
_CODET5 = {"model_type": "t5", "vocab_size": 32100, "d_kv": 64, "feed_forward_proj": "relu", "dropout_rate": 0.1,
           "pad_token_id": 0, "eos_token_id": 2, "bos_token_id": 1, "decoder_start_token_id": 0}
_QWEN25 = {"model_type": "qwen2", "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6}
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "Salesforce/codet5-small": {**_CODET5, "d_model": 512, "d_ff": 2048, "num_layers": 6,
                                "num_decoder_layers": 6, "num_heads": 8},
    "Salesforce/codet5-base": {**_CODET5, "d_model": 768, "d_ff": 3072, "num_layers": 12,
                               "num_decoder_layers": 12, "num_heads": 12},
    "Salesforce/codet5-large": {**_CODET5, "d_model": 1024, "d_ff": 4096, "num_layers": 24,
                                "num_decoder_layers": 24, "num_heads": 16},
    "Salesforce/codet5-large-ntp-py": {**_CODET5, "d_model": 1024, "d_ff": 4096, "num_layers": 24,
                                       "num_decoder_layers": 24, "num_heads": 16},
    "Qwen/Qwen2.5-Coder-0.5B": {**_QWEN25, "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
                                "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                                "tie_word_embeddings": True},
    "Qwen/Qwen2.5-Coder-1.5B": {**_QWEN25, "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
                                "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                                "tie_word_embeddings": True},
    "Qwen/Qwen2.5-Coder-7B": {**_QWEN25, "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
                              "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                              "tie_word_embeddings": False},
}


class PlanError(ConfigError):
    """A stage of the config cannot fit in the declared GPU memory (the message names the keys to change)."""


# --- model shapes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimates need to know about a model; ``params`` counts tied matrices once."""

    name: str
    seq2seq: bool
    params: int
    fp32_kept_params: int  # kept in fp32 when the model is loaded in bf16 (T5's `wo`: _keep_in_fp32_modules)
    untied_head_params: int  # an LM head that is not the input embedding (a critic freezes it)
    largest_block_params: int  # the largest transformer block (an FSDP unit)
    root_params: int  # parameters outside every block (embeddings, final norm, LM head): FSDP's root unit
    vocab: int
    d_model: int
    enc_layers: int  # 0 for a causal LM
    dec_layers: int  # decoder layers of a seq2seq model, all layers of a causal one
    heads: int
    kv_heads: int
    head_dim: int
    d_ff: int
    ffn: str  # "relu" (T5), "gated" (SwiGLU / gated-GELU), "gelu" (GPT-2's tanh GELU)
    fused_qkv: bool  # one projection for q, k, v (GPT-2)
    attn: str  # "sdpa" or "eager": what transformers picks for this class by default
    dropout: bool  # dropout layers active in training
    position_bias: bool  # T5's relative position bias (a score-sized additive mask in every layer under sdpa)
    logits_to_keep: bool  # a causal model that projects only the program's positions onto the vocabulary


def _hidden(config) -> int:
    for name in ("d_model", "hidden_size", "n_embd"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError(f"cannot find the hidden size of a {type(config).__name__}")


def shape_from_config(config, name: str = "", attn_implementation: str | None = None) -> ModelShape:
    """A :class:`ModelShape` from a transformers config: the model is built on the ``meta`` device (no memory),
    so the parameter counts are those of the real class."""
    import inspect

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with torch.device("meta"):
        model = cls.from_config(config, **kwargs)
    unique = {id(p): (n, p) for n, p in model.named_parameters(remove_duplicate=True)}
    params = sum(p.numel() for _, p in unique.values())
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    kept = sum(p.numel() for n, p in unique.values() if any(f".{k}." in f".{n}" for k in keep))
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    untied = out.weight.numel() if out is not None and inp is not None and out.weight is not inp.weight else 0
    block_names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in block_names]
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    largest = max((sum(p.numel() for p in b.parameters()) for b in blocks), default=params)
    root = sum(p.numel() for _, p in unique.values() if id(p) not in in_blocks)
    d = _hidden(config)
    if seq2seq:
        enc, dec = int(config.num_layers), int(getattr(config, "num_decoder_layers", None) or config.num_layers)
        heads = int(config.num_heads)
        head_dim, kv_heads = int(config.d_kv), heads
        d_ff = int(config.d_ff)
        ffn = "gated" if getattr(config, "is_gated_act", False) else "relu"
        dropout = float(getattr(config, "dropout_rate", 0.0)) > 0
    else:
        enc = 0
        dec = int(getattr(config, "num_hidden_layers", None) or config.n_layer)
        heads = int(getattr(config, "num_attention_heads", None) or config.n_head)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or d // heads)
        d_ff = int(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d)
        ffn = "gelu" if getattr(config, "model_type", "") == "gpt2" else "gated"
        dropout = any(float(getattr(config, k, 0.0) or 0.0) > 0
                      for k in ("resid_pdrop", "attn_pdrop", "embd_pdrop", "attention_dropout", "hidden_dropout"))
    try:
        keeps = "logits_to_keep" in inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        keeps = False
    return ModelShape(
        name=name or getattr(config, "_name_or_path", "") or type(model).__name__, seq2seq=seq2seq, params=params,
        fp32_kept_params=kept, untied_head_params=untied, largest_block_params=largest, root_params=root,
        vocab=int(config.vocab_size), d_model=d, enc_layers=enc, dec_layers=dec, heads=heads, kv_heads=kv_heads,
        head_dim=head_dim, d_ff=d_ff, ffn=ffn, fused_qkv=getattr(config, "model_type", "") == "gpt2",
        attn=str(getattr(model.config, "_attn_implementation", None) or "eager"), dropout=dropout,
        position_bias=getattr(config, "model_type", "") == "t5", logits_to_keep=keeps and not seq2seq)


def model_shape(name_or_path: str, model_cfg: ModelConfig | None = None) -> tuple[ModelShape | None, str]:
    """(shape, where it came from) of a model named as the config names it, or (None, why not)."""
    from transformers import AutoConfig

    if name_or_path == "tiny":
        from coderl_ray.models.actor import tiny_actor_config

        m = model_cfg or ModelConfig()
        # The tokenizer trained for the tiny model has at most tokenizer_vocab_size tokens (an upper bound).
        return shape_from_config(tiny_actor_config(m, m.tokenizer_vocab_size), "tiny"), "model.* (tiny)"
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        from coderl_ray.models.actor import resolve_model_path

        try:
            folder = resolve_model_path(path)
            return shape_from_config(AutoConfig.from_pretrained(folder), name_or_path), f"{folder}/config.json"
        except (OSError, ValueError) as exc:
            return None, f"{path}: {exc}"
    try:
        config = AutoConfig.from_pretrained(name_or_path, local_files_only=True)
        return shape_from_config(config, name_or_path), "the Hugging Face cache"
    except (OSError, ValueError):
        pass
    if name_or_path in KNOWN_MODELS:
        from transformers import CONFIG_MAPPING

        fields = dict(KNOWN_MODELS[name_or_path])
        config = CONFIG_MAPPING[fields.pop("model_type")](**fields)
        return shape_from_config(config, name_or_path), "coderl_ray.plan.KNOWN_MODELS"
    return None, (f"{name_or_path} is neither a local folder, nor in the Hugging Face cache, nor in "
                  "coderl_ray.plan.KNOWN_MODELS: download it once, or point the key at a local copy")


# --- memory models ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainShape:
    """One worker's micro-batch and how it is trained."""

    rows: int
    prompt_tokens: int
    program_tokens: int
    autocast: bool  # bf16 autocast on GPU; False = fp32
    parallel: str = "ddp"
    workers: int = 1
    checkpointing: bool = False
    objective: str = "actor"  # "actor" (log-probabilities over the vocabulary) or "critic" (the error head)


def _sublayer_bytes(s: ModelShape, a: int, ac: bool, drop: bool) -> dict[str, float]:
    """Bytes saved for backward per token by each kind of sublayer (see the module docstring); ``a`` is the
    activation dtype's size (2 under autocast, 4 in fp32), the residual stream and norms are fp32 either way."""
    h, q, kv, ff = s.d_model, s.heads * s.head_dim, s.kv_heads * s.head_dim, s.d_ff
    r = 4
    cast = a if ac else 0  # an fp32 input cast to bf16 by autocast is a new tensor; in fp32 the input is shared
    d = 1 if drop else 0  # a dropout mask, one byte per element
    norm = 2 * r * h  # the sublayer's input (residual) and the normalised tensor
    attn_out = a * q * (2 if s.attn == "sdpa" else 1)  # sdpa keeps its output, the out-projection its input copy
    self_attn = norm + (1 if s.fused_qkv else 3) * cast * h + a * (q + 2 * kv) + attn_out + d * h
    cross_q = norm + cast * h + a * q + attn_out + d * h  # per decoder token
    cross_kv = 2 * cast * h + 2 * a * kv  # per encoder token, per decoder layer (k, v of the encoder output)
    if s.ffn == "relu":  # T5: relu output, dropout, then `wo` casts its own copy
        act = (a + d + a) * ff if ac else (4 + d * 5) * ff
    elif s.ffn == "gelu":  # GPT-2's tanh GELU: its input, tanh output and two product operands, then c_proj's input
        act = 5 * a * ff
    else:  # gated (SwiGLU, gated-GELU): gate output, activation output, up output, product
        act = (4 * a + d) * ff
    ffn = norm + (2 if s.ffn == "gated" else 1) * cast * h + act + d * h
    return {"self": self_attn, "cross_q": cross_q, "cross_kv": cross_kv, "ffn": ffn}


def _score_bytes(s: ModelShape, a: int, ac: bool, drop: bool) -> float:
    """Bytes saved per (query, key, head) by an attention: eager keeps the fp32 softmax, its bf16 copy and the
    dropout mask; sdpa keeps nothing score-sized except T5's additive bias mask (bf16 after autocast's cast)."""
    if s.attn == "sdpa":
        return (a if ac else 4) if s.position_bias else 0.0
    if drop:
        return 4 + 1 + (a if ac else 4)
    return 4 + (a if ac else 0)


def training_memory(s: ModelShape, t: TrainShape) -> tuple[list[tuple[str, float]], float]:
    """(items, the activations with checkpointing toggled) of one training worker, in bytes."""
    a = 2 if t.autocast else 4
    frozen = s.untied_head_params if t.objective == "critic" else 0
    trainable = s.params - frozen
    w = t.workers if t.parallel == "fsdp" else 1
    items = [("weights fp32" + (f" (1/{w} shard)" if w > 1 else ""), 4 * s.params / w),
             ("gradients fp32" + (" (sharded)" if w > 1 else ""), 4 * trainable / w),
             ("AdamW moments fp32" + (" (sharded)" if w > 1 else ""), 8 * trainable / w)]
    if t.parallel == "fsdp":
        pb = 2 if t.autocast else 4
        # The block being computed and the next one (prefetch), the root unit (embeddings, head) for the whole step,
        # and one block's unsharded fp32 gradient while it is reduce-scattered.
        items.append(("FSDP gathered blocks and root", pb * (2 * s.largest_block_params + s.root_params)
                      + 4 * s.largest_block_params))
    elif t.autocast:
        items.append(("autocast bf16 weight copies", 2 * s.params))
    act, act_other = _activations(s, t, a, t.checkpointing), _activations(s, t, a, not t.checkpointing)
    items.append(("activations" + (" (checkpointed)" if t.checkpointing else ""), act))
    return items, act_other


def _activations(s: ModelShape, t: TrainShape, a: int, checkpointing: bool) -> float:
    drop = s.dropout
    sub = _sublayer_bytes(s, a, t.autocast, drop)
    score = _score_bytes(s, a, t.autocast, drop)
    m, S, T = t.rows, t.prompt_tokens, t.program_tokens
    if s.seq2seq:
        enc_tokens, dec_tokens = m * S, m * T
        enc_layer = enc_tokens * (sub["self"] + sub["ffn"]) + m * s.heads * S * S * score
        # T5's decoder self-attention mask is [1, heads, T, T] (no padding mask on the decoder): shared by rows.
        self_score = score if not (s.attn == "sdpa" and s.position_bias) else 0.0
        dec_layer = (dec_tokens * (sub["self"] + sub["cross_q"] + sub["ffn"]) + enc_tokens * sub["cross_kv"]
                     + m * s.heads * (T * T * self_score + T * S * score))
        layers = [(s.enc_layers, enc_layer, enc_tokens), (s.dec_layers, dec_layer, dec_tokens)]
        embed = (enc_tokens + dec_tokens) * (4 + (1 if drop else 0)) * s.d_model
        final = 2 * 4 * (enc_tokens + dec_tokens) * s.d_model
        shared = 4 * s.heads * (S * S + T * T)  # the position biases, computed once
        scored = dec_tokens
    else:
        L = S + T
        tokens = m * L
        layer = tokens * (sub["self"] + sub["ffn"]) + m * s.heads * L * L * score
        layers = [(s.dec_layers, layer, tokens)]
        embed = tokens * (4 + (1 if drop else 0)) * s.d_model
        final = 2 * 4 * tokens * s.d_model
        shared = m * L * L  # one boolean causal + padding mask for every layer
        scored = m * (T + 1) if s.logits_to_keep else tokens
    if checkpointing:
        # Each block keeps only its input; one block's activations come back while it is recomputed.
        body = sum(n * 4 * tok * s.d_model for n, _, tok in layers) + max(per for _, per, _ in layers)
    else:
        body = sum(n * per for n, per, _ in layers)
    if t.objective == "actor":
        # fp32 log-softmax over the vocabulary (kept), then in backward the dense gradient of the gather, the
        # log-softmax's input gradient and its bf16 cast, all alive at once (+ the tempered copy in forward).
        head = scored * s.vocab * (12 + (2 if t.autocast else 0)) + scored * a * s.d_model
    else:
        head = scored * a * s.d_model
    return body + embed + final + shared + head


def generation_memory(s: ModelShape, *, prompts: int, samples: int, greedy: bool, max_rows: int,
                      prompt_tokens: int, new_tokens: int, bf16: bool, decoder: str,
                      kept_shapes: bool = True) -> tuple[list, int]:
    """(items, rows of the largest decoder call) of one generator worker, in bytes.

    ``kept_shapes``: count the second call shape the static decoder keeps allocated (its two most recent
    workspaces); False gives one call alone."""
    from coderl_ray.rollout.generator import plan_chunks

    c = 2 if bf16 else 4
    S = _round_up(prompt_tokens, STATIC_PROMPT_BUCKET) if decoder == "static" else prompt_tokens
    shapes = sorted({ch.rows for ch in plan_chunks(prompts, samples, max_rows)}, reverse=True)
    greedy_rows = max((ch.rows for ch in plan_chunks(prompts, 1, max_rows)), default=0) if greedy else 0
    largest = max(shapes + [greedy_rows] or [0])
    kv = s.kv_heads * s.head_dim
    self_len = new_tokens if s.seq2seq else S + new_tokens
    per_row = s.dec_layers * 2 * kv * self_len * c
    per_row += s.dec_layers * 2 * kv * S * c if s.seq2seq else 0  # cross-attention keys and values
    per_row += S * s.d_model * c if s.seq2seq else (S + new_tokens) * 8  # encoder states / the static mask
    per_row += new_tokens * 8  # the generated ids
    weights = c * (s.params - s.fp32_kept_params) + 4 * s.fp32_kept_params
    items = [(f"weights {'bf16' if bf16 else 'fp32'}", weights),
             (f"attention caches of one call ({largest} rows x {per_row / 2**20:.1f} MiB)", largest * per_row)]
    if decoder == "static" and kept_shapes:
        # The static decoder keeps its two most recent call shapes allocated: sampled rows and greedy baselines, two
        # chunk shapes of a batch, or (without greedy calls) the same rows in the next batch's prompt bucket.
        others = (shapes[1:2] or []) + ([greedy_rows] if greedy else [])
        second = max(others) if others else largest
        items.append((f"second kept call shape ({second} rows)", second * per_row))
    # Transients, one at a time: a decode step's logits (model dtype and fp32) with top-p's sort (values, int64
    # order), softmax, cumsum and masks and the keyed race's int64 hashes: ~40 bytes per vocabulary entry and row;
    # or the encoder over the batch's prompts (seq2seq) / the prefill's widest layer (causal), T5's fp32 bias mask
    # included.
    step = largest * s.vocab * (c + 40)
    if decoder == "hf":
        step += largest * 2 * kv * self_len * c  # the dynamic cache grows by concatenation: one layer's copy
    # A layer's widest moment in inference: the residual stream, norm, q/k/v and attention output (~6 x d_model),
    # and ~4 FFN-wide tensors (GPT-2's tanh GELU, SwiGLU's gate, up, activation and product; T5's relu and casts).
    width = (6 * s.d_model + 4 * s.d_ff) * c
    if s.seq2seq:
        # generate() encodes before it allocates any cache; the static decoder's workspace exists already.
        first = prompts * S * width + (prompts * s.heads * S * S * 4 if s.position_bias else 0)
        first = first if decoder == "static" else 0
    else:
        first = largest * S * width
    items.append(("largest transient: " + ("a decode step's logits and sampling" if step >= first else
                                           "encoder pass" if s.seq2seq else "prefill"), max(step, first)))
    return items, largest


def forward_memory(s: ModelShape, *, rows: int, prompt_tokens: int, program_tokens: int, autocast: bool,
                   logprobs: bool) -> list[tuple[str, float]]:
    """One no-grad forward of ``rows`` (prompt, program) pairs: the critic scorer, or the old log-probabilities."""
    a = 2 if autocast else 4
    m, S, T = rows, prompt_tokens, program_tokens
    tokens = m * (S + T)
    # Layer by layer nothing is kept: the residual stream plus one layer's intermediates at a time.
    layer = tokens * ((4 + a) * s.d_model + a * (s.heads + 2 * s.kv_heads) * s.head_dim + 4 * a * s.d_ff)
    if s.position_bias:
        layer += m * s.heads * max(S * S, T * S) * (4 + a)  # T5's fp32 bias mask and its bf16 cast
    elif s.attn == "eager":
        layer += m * s.heads * (S + T) ** 2 * (4 + a)
    items = [("weights fp32", 4 * s.params)]
    if autocast:
        items.append(("autocast bf16 weight copies", 2 * s.params))
    items.append(("activations, one layer at a time", layer + tokens * 4 * s.d_model))
    if logprobs:
        scored = m * (T + 1) if (s.logits_to_keep or s.seq2seq) else tokens
        items.append(("logits: bf16, fp32, log-softmax", scored * s.vocab * (a + 8)))
    return items


# --- the plan of a config --------------------------------------------------------------------------------------


@dataclass
class StageEstimate:
    stage: str
    workers: str  # what the stage's pools request, e.g. "generators: 8 x {CPU: 4, GPU: 0.75} (actor)"
    device: str  # "GPU" or "CPU"
    budget: float | None  # bytes one worker may use (see _on; None on CPU: not checked)
    items: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)  # keys (with a value where one can be computed) that would fit
    role: str = ""  # the run's role (registry.ROLES) whose worker this is
    # The keys (with values) that would bring the peak under a given budget: the per-GPU check asks it for the room
    # the other roles on a GPU leave.
    refit: Callable[[float], list[str]] | None = field(default=None, repr=False, compare=False)

    @property
    def peak(self) -> float:
        return sum(b for _, b in self.items)

    @property
    def fits(self) -> bool:
        return self.budget is None or self.peak <= self.budget


@dataclass
class RoleEstimate:
    """One role of the run (:func:`coderl_ray.registry.run_roles`) and the memory each of its workers holds.

    Every role is a process that lives for the whole run, and PyTorch's caching allocator keeps what a process
    reserved at its peak (nothing here calls ``torch.cuda.empty_cache``, and a process never frees another's cache),
    so a worker holds its largest stage's peak from then on: ``memory`` is the largest peak of its ``stages``."""

    pool: Pool
    stages: list[StageEstimate]

    @property
    def memory(self) -> float:
        return max((s.peak for s in self.stages), default=0.0)

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=lambda s: s.peak).stage if self.stages else ""


@dataclass
class GpuLoad:
    """What one GPU holds once every role is placed: (role key, share) per worker, and their memory summed."""

    index: int
    members: list[tuple[str, float]]
    memory: float
    budget: float

    @property
    def fits(self) -> bool:
        return self.memory <= self.budget

    def describe(self) -> str:
        counts = Counter(key for key, _ in self.members)
        return " + ".join(f"{n} x {key}" if n > 1 else key for key, n in counts.items()) or "nothing"


@dataclass
class Plan:
    stages: list[StageEstimate]
    warnings: list[str]
    # Problems other than a stage's memory: a model role on CPU in a GPU config, a role that finds no GPU, a GPU
    # whose roles together do not fit.
    errors: list[str] = field(default_factory=list)
    roles: list[RoleEstimate] = field(default_factory=list)
    gpus: list[GpuLoad] = field(default_factory=list)  # with plan.cluster_gpus: every GPU, as Ray would fill it
    cpus: str = ""  # with plan.cluster_cpus: what the roles reserve against it

    @property
    def failing(self) -> list[StageEstimate]:
        return [s for s in self.stages if not s.fits]


@dataclass(frozen=True)
class Shapes:
    """The shapes of the models a config trains and runs (None where unknown: the plan then warns)."""

    actor: ModelShape | None
    critic: ModelShape | None
    repair: ModelShape | None


def _round_up(n: int, multiple: int) -> int:
    return n if multiple <= 1 else -(-n // multiple) * multiple


def _budget(cfg: PipelineConfig, share: float) -> float:
    return cfg.plan.gpu_memory_gb * min(share, 1.0) * (1 - cfg.plan.headroom) * GiB


def _on(cfg: PipelineConfig, pool: Pool) -> tuple[str, float | None]:
    """(device, memory budget of one worker) of a pool. Without ``plan.cluster_gpus`` a worker must fit in its
    own share of a GPU: then the roles fit wherever Ray puts them (shares on a GPU sum to at most 1). With it, a
    worker may use the whole GPU, and :func:`_gpu_loads` checks what the roles Ray puts on each GPU hold together."""
    if pool.gpus <= 0:
        return "CPU", None
    return "GPU", _budget(cfg, 1.0 if cfg.plan.cluster_gpus else pool.gpus)


def _share_fix(cfg: PipelineConfig, key: str) -> list[str]:
    # A larger share is more memory only while each role must fit in its share (no plan.cluster_gpus).
    return [] if cfg.plan.cluster_gpus else [f"{key} (a larger GPU share)"]


def _requests(pools: list[Pool]) -> str:
    return "; ".join(p.describe() for p in pools)


def _train_rows(cfg: PipelineConfig, batch_size: int, S: int, T: int) -> int:
    t = cfg.train
    rows = max(1, batch_size // t.num_workers)
    if t.micro_batch_size_per_worker:
        rows = min(rows, t.micro_batch_size_per_worker)
    if t.max_tokens_per_micro_batch:
        rows = min(rows, max(1, t.max_tokens_per_micro_batch // (S + T)))
    return rows


def _largest(fits, upper: int) -> int:
    """The largest n in 1..upper with fits(n), or 0 (fits is monotone: smaller never needs more memory)."""
    if upper < 1 or not fits(1):
        return 0
    lo, hi = 1, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def _finish(est: StageEstimate, refit: Callable[[float], list[str]]) -> StageEstimate:
    est.refit = refit
    if est.budget is not None and not est.fits:
        est.fixes = refit(est.budget)
    return est


def _held_slot(name: str, shape: ModelShape, cfg: PipelineConfig) -> tuple[str, float]:
    """A trained model a trainer keeps in another slot meanwhile: fp32 weights and its gradients, which stay in
    DDP's buckets (``gradient_as_bucket_view``) or on the parameters after the last step (sharded under FSDP)."""
    w = cfg.train.num_workers if cfg.train.parallel == "fsdp" else 1
    return f"{name} slot, held meanwhile (fp32 weights and gradients)", 8 * shape.params / w


def _train_stage(cfg: PipelineConfig, name: str, shape: ModelShape, batch_size: int, T: int,
                 objective: str, pool: Pool, batch_key: str, S: int | None = None,
                 extra: list[tuple[str, float]] = ()) -> StageEstimate:
    t = cfg.train
    S = _round_up(cfg.model.max_source_tokens if S is None else S, t.pad_to_multiple_of)
    T = _round_up(T, t.pad_to_multiple_of)
    gpu = t.use_gpu
    device, budget = _on(cfg, pool)
    est = StageEstimate(name, _requests([pool]), device, budget, role=pool.key)
    held = sum(b for _, b in extra)

    def shape_for(rows: int, ckpt: bool = t.gradient_checkpointing, parallel: str = t.parallel,
                  workers: int = t.num_workers) -> TrainShape:
        return TrainShape(rows=rows, prompt_tokens=S, program_tokens=T, autocast=gpu and t.precision == "bf16",
                          parallel=parallel, workers=workers, checkpointing=ckpt, objective=objective)

    rows = _train_rows(cfg, batch_size, S, T)
    est.items, other = training_memory(shape, shape_for(rows))
    est.items += list(extra)
    est.notes.append(f"{rows} row(s) per micro-batch of {S} + {T} tokens ({batch_key}={batch_size}; {shape.name}, "
                     f"{shape.params / 1e6:,.0f}M parameters, {shape.attn} attention); activations "
                     f"{'without' if t.gradient_checkpointing else 'with'} checkpointing: {other / GiB:.1f} GiB")

    def refit(budget: float) -> list[str]:
        def peak(ts: TrainShape) -> float:
            return sum(b for _, b in training_memory(shape, ts)[0]) + held

        fixes = []
        fit_rows = _largest(lambda r: peak(shape_for(r)) <= budget, rows)
        if fit_rows:
            fixes.append(f"train.max_tokens_per_micro_batch={fit_rows * (S + T)} ({fit_rows} row(s) of {S} + {T} "
                         "tokens)")
        if not t.gradient_checkpointing:
            ckpt_rows = _largest(lambda r: peak(shape_for(r, True)) <= budget, rows)
            if ckpt_rows == rows:
                fixes.append("train.gradient_checkpointing=true")
            elif ckpt_rows > fit_rows:
                fixes.append(f"train.gradient_checkpointing=true with train.max_tokens_per_micro_batch="
                             f"{ckpt_rows * (S + T)} ({ckpt_rows} row(s))")
        if t.parallel == "ddp" and t.num_workers > 1 and peak(shape_for(1, True, "fsdp")) <= budget:
            fixes.append("train.parallel=fsdp")
        return fixes + _share_fix(cfg, pool.gpu_key) + ["model.max_source_tokens / model.max_target_tokens",
                                                        "plan.gpu_memory_gb (if the GPUs have more memory)"]

    return _finish(est, refit)


def _generation_stage(cfg: PipelineConfig, name: str, shape: ModelShape, pools: list[Pool], prompts: int,
                      samples: int, greedy: bool, decoder: str | None = None,
                      extra: list[tuple[str, float]] = ()) -> StageEstimate:
    """A generator worker of ``pools[0]``: ``prompts`` x ``samples`` rows per batch (+ greedy rows), decoded in
    calls of at most ``rollout.max_rows_per_generate`` rows; ``extra``: more memory the worker holds meanwhile."""
    r = cfg.rollout
    decoder = decoder or r.decoder
    device, budget = _on(cfg, pools[0])
    est = StageEstimate(name, _requests(pools), device, budget, role=pools[0].key)

    def items(max_rows: int):
        found, largest = generation_memory(shape, prompts=prompts, samples=samples, greedy=greedy,
                                           max_rows=max_rows, prompt_tokens=cfg.model.max_source_tokens,
                                           new_tokens=r.max_new_tokens, bf16=device == "GPU", decoder=decoder)
        return found + list(extra), largest

    est.items, largest = items(r.max_rows_per_generate)
    est.notes.append(f"{prompts} prompts x {samples} samples{' + greedy' if greedy else ''} per batch, largest "
                     f"decoder call {largest} rows of {cfg.model.max_source_tokens} + {r.max_new_tokens} tokens "
                     f"({decoder} decoder)")

    def refit(budget: float) -> list[str]:
        fixes = []
        fit = _largest(lambda n: sum(b for _, b in items(n)[0]) <= budget, largest)
        if fit:
            # The largest call that budget allows is what to configure (any value up to `fit` chunks alike).
            fixes.append(f"rollout.max_rows_per_generate={items(fit)[1]}")
        return fixes + ["rollout.max_new_tokens"] + _share_fix(cfg, "rollout.gpus_per_worker") + [
            "plan.gpu_memory_gb (if the GPUs have more memory)"]

    return _finish(est, refit)


def _forward_stage(cfg: PipelineConfig, name: str, shape: ModelShape, logprobs: bool, pool: Pool, rows: int,
                   rows_key: str, extra: list[tuple[str, float]] = (),
                   rows_fix: Callable[[int], str] | None = None) -> StageEstimate:
    """One no-grad forward of ``rows`` rows on a worker of ``pool``; ``rows_fix(n)``: the setting that makes a
    call ``n`` rows (default ``rows_key=n``)."""
    r = cfg.rollout
    device, budget = _on(cfg, pool)
    est = StageEstimate(name, _requests([pool]), device, budget, role=pool.key)
    autocast = device == "GPU" and cfg.train.precision == "bf16"
    T = max(r.max_new_tokens, cfg.model.max_target_tokens)

    def items(n: int):
        return forward_memory(shape, rows=n, prompt_tokens=cfg.model.max_source_tokens, program_tokens=T,
                              autocast=autocast, logprobs=logprobs) + list(extra)

    est.items = items(rows)
    est.notes.append(f"{rows} rows of {cfg.model.max_source_tokens} + {T} tokens ({rows_key}; {shape.name})")

    def refit(budget: float) -> list[str]:
        fit = _largest(lambda n: sum(b for _, b in items(n)) <= budget, rows)
        fixes = [rows_fix(fit) if rows_fix else f"{rows_key}={fit}"] if fit else []
        return fixes + _share_fix(cfg, pool.gpu_key) + ["plan.gpu_memory_gb"]

    return _finish(est, refit)


def _behaviour_logprob_stage(cfg: PipelineConfig, name: str, shape: ModelShape, pools: list[Pool], prompts: int,
                             samples: int) -> StageEstimate:
    """A generator after sampling a batch: the log-probabilities of its programs under the sampling policy
    (``rl.clip_ratio`` > 0: the trust region's reference point), one forward of ``rollout.score_batch_size`` rows at
    a time in the generator's own dtype, beside what generation keeps (weights; the static decoder's workspaces)."""
    r = cfg.rollout
    device, budget = _on(cfg, pools[0])
    est = StageEstimate(name, _requests(pools[:1]), device, budget, role=pools[0].key)
    forward = forward_memory(shape, rows=r.score_batch_size, prompt_tokens=cfg.model.max_source_tokens,
                             program_tokens=r.max_new_tokens, autocast=device == "GPU", logprobs=True)
    # The generator's weights are counted with generation's (bf16 on GPU), not a scorer's fp32 + autocast copies.
    forward = [(n, b) for n, b in forward if not n.startswith(("weights", "autocast"))]

    def items(max_rows: int) -> tuple[list[tuple[str, float]], int]:
        found, largest = generation_memory(shape, prompts=prompts, samples=samples, greedy=True, max_rows=max_rows,
                                     prompt_tokens=cfg.model.max_source_tokens, new_tokens=r.max_new_tokens,
                                     bf16=device == "GPU", decoder=r.decoder)
        # What generation keeps: the weights, and the static decoder's workspaces (generate()'s caches are gone).
        kept = [(n, b) for n, b in found if n.startswith("weights") or (r.decoder == "static" and not
                                                                        n.startswith("largest transient"))]
        return kept + forward, largest

    est.items = items(r.max_rows_per_generate)[0]
    est.notes.append(f"{r.score_batch_size} rows of {cfg.model.max_source_tokens} + {r.max_new_tokens} tokens "
                     "per pass (rollout.score_batch_size; rl.clip_ratio > 0: the RL step's trust-region reference, "
                     "recorded while sampling)")

    def refit(budget: float) -> list[str]:
        fixes = []
        if r.decoder == "static":
            rows = prompts * samples
            fit = _largest(lambda n: sum(b for _, b in items(n)[0]) <= budget, rows)
            if fit:
                fixes.append(f"rollout.max_rows_per_generate={items(fit)[1]}")
        return fixes + ["rollout.max_new_tokens", "rl.clip_ratio=0 (no trust region: nothing recorded)"] \
            + _share_fix(cfg, "rollout.gpus_per_worker") + ["plan.gpu_memory_gb"]

    return _finish(est, refit)


def _driver_stage(name: str, note: str, items: list[tuple[str, float]] = ()) -> StageEstimate:
    return StageEstimate(name, "the driver (no Ray workers)", "CPU", None, list(items), [note])


# --- one builder per stage of coderl_ray.registry (its `plan` names it) ------------------------------------------


def _program_tokens(cfg: PipelineConfig) -> int:
    return max(cfg.model.max_target_tokens, cfg.rollout.max_new_tokens)


def _trust_region(cfg: PipelineConfig) -> bool:
    return cfg.rl.clip_ratio > 0 and not cfg.rl.ce_only


def plan_data(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    return [_driver_stage("data", "reads the problems and writes <output_dir>/data/{train,test}.jsonl")]


def plan_init(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    if shapes.actor is None:
        return []
    return [_driver_stage("init", "copies the initial actor (host memory, stored dtype; fp32 counted) and tokenises "
                                  "the reference programs", [("actor weights (host)", 4 * shapes.actor.params)])]


def plan_sft(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    if shapes.actor is None:
        return []
    return [_train_stage(cfg, "sft", shapes.actor, cfg.sft.batch_size, cfg.model.max_target_tokens, "actor",
                         trainer_pool(cfg, "actor"), "sft.batch_size")]


def plan_critic_mutants(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    """No model: the driver writes mutants of the reference programs, the sandbox executors run them."""
    return [_driver_stage("critic_mutants", f"{cfg.critic.mutants_per_program} mutants of every reference program, "
                                            "run by the sandbox executors (no model)")]


def plan_rollout(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    """Sampling, and with a trust region the behaviour log-probabilities the generators record meanwhile (the RL
    stage reads them: no old-log-probability pass of its own in a pipeline)."""
    if shapes.actor is None:
        return []
    pools = registry.stage("rollout").resources(cfg)
    gen = _generation_stage(cfg, "rollout", shapes.actor, pools, cfg.rollout.batch_size_per_worker,
                            cfg.rollout.num_samples, True)
    if not _trust_region(cfg):
        return [gen]
    return [gen, _behaviour_logprob_stage(cfg, "rollout/behaviour logprobs", shapes.actor, pools,
                                          cfg.rollout.batch_size_per_worker, cfg.rollout.num_samples)]


def plan_critic(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    if shapes.critic is None:
        return []
    return [_train_stage(cfg, "critic", shapes.critic, cfg.critic.batch_size, _program_tokens(cfg), "critic",
                         trainer_pool(cfg, "critic"), "critic.batch_size")]


def plan_score(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    if shapes.critic is None:
        return []
    return [_forward_stage(cfg, "score", shapes.critic, False, scorer_pool(cfg), cfg.rollout.score_batch_size,
                           "rollout.score_batch_size")]


def plan_rl(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    if shapes.actor is None:
        return []
    return [_train_stage(cfg, "rl", shapes.actor, cfg.rl.batch_size, _program_tokens(cfg), "actor",
                         trainer_pool(cfg, "actor"), "rl.batch_size")]


def plan_online(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    """The online loop runs the rounds' four stages at once (rl.loop=online): generation (with behaviour
    log-probabilities), critic training, scoring and RL as in the staged loop (the scorers take a generated item in
    calls of ``rollout.score_batch_size`` rows, as the score stage does); no critic and no scoring when nothing
    reads the critic (:func:`coderl_ray.registry.needs_critic`)."""
    critic = [*plan_critic(cfg, shapes), *plan_score(cfg, shapes)] if registry.needs_critic(cfg) else []
    parts = [*plan_rollout(cfg, shapes), *critic, *plan_rl(cfg, shapes)]
    return [replace(e, stage=f"online/{e.stage}") for e in parts]


def plan_critic_quality(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    """After the online loop, each round's critic scores the round's programs again (the score stage's pass)."""
    return [replace(e, stage="critic_quality") for e in plan_score(cfg, shapes)]


def plan_eval(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    if shapes.actor is None:
        return []
    return [_generation_stage(cfg, "eval", shapes.actor, registry.stage("eval").resources(cfg),
                              cfg.rollout.batch_size_per_worker, cfg.eval.num_samples, False)]


def plan_critic_binary(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    """The last critic's backbone with a new 2-class head, trained on every round in a slot of its own (the
    round's critic stays in its slot), then scored on held-out programs by the critic scorers, which hold the
    round's critic too."""
    if shapes.critic is None:
        return []
    held = [_held_slot("critic", shapes.critic, cfg)]
    kept = [("the round's critic, held meanwhile (fp32 weights)", 4 * shapes.critic.params)]
    return [_train_stage(cfg, "critic_binary", shapes.critic, cfg.critic.batch_size, _program_tokens(cfg), "critic",
                         trainer_pool(cfg, "critic", "critic_binary"), "critic.batch_size", extra=held),
            _forward_stage(cfg, "critic_binary/heldout", shapes.critic, False, scorer_pool(cfg, "critic_binary", 1),
                           cfg.rollout.score_batch_size, "rollout.score_batch_size", extra=kept)]


def plan_repair(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    """Cross-entropy on (repair prompt, passing program) pairs: the prompt (problem, failed program, error) is cut
    to ``model.max_source_tokens``, the target to ``model.max_target_tokens``; in a slot of the actor's trainer,
    whose actor slot stays loaded meanwhile."""
    if shapes.repair is None:
        return []
    held = [_held_slot("actor", shapes.actor, cfg)] if shapes.actor is not None else []
    return [_train_stage(cfg, "repair", shapes.repair, cfg.repair.batch_size, cfg.model.max_target_tokens, "actor",
                         trainer_pool(cfg, "actor", "repair model"), "repair.batch_size", extra=held)]


def plan_cs(cfg: PipelineConfig, shapes: Shapes) -> list[StageEstimate]:
    """A pass: the generators (the actor and, with ``repair.enabled``, the repair model in every worker) decode
    units of up to ``rollout.batch_size_per_worker`` rows (one prompt each), while the critic scorers
    (``cs.critic_*``) score what the example tests return."""
    if shapes.actor is None:
        return []
    r, pools = cfg.rollout, registry.stage("cs").resources(cfg)
    rows = max(r.batch_size_per_worker, cfg.cs.budget)  # a request larger than a unit is a unit of its own
    extra: list[tuple[str, float]] = []
    if cfg.repair.enabled and shapes.repair is not None:
        # The repair model's generator keeps its own weights and (static decoder) workspaces; transients are not
        # simultaneous with the actor's.
        kept, _ = generation_memory(shapes.repair, prompts=rows, samples=1, greedy=False,
                                    max_rows=r.max_rows_per_generate, prompt_tokens=cfg.model.max_source_tokens,
                                    new_tokens=r.max_new_tokens, bf16=pools[0].gpus > 0, decoder=r.decoder)
        extra = [(f"repair model: {name}", b) for name, b in kept if not name.startswith("largest transient")]
    decoders = [r.decoder] + (["hf"] if r.decoder == "static" and shapes.actor.seq2seq else [])
    # Seq2seq rows that continue a seed go through generate() (the static decoder has no decoder-prefix input).
    gen = max((_generation_stage(cfg, "cs", shapes.actor, [p for p in pools if p.phase == 0], rows, 1, False, d,
                                 extra) for d in decoders), key=lambda e: e.peak)
    out = [gen]
    if shapes.critic is not None:
        binary = cfg.critic.inference_classes == 2
        kept = [("the round's critic, held meanwhile (fp32 weights)", 4 * shapes.critic.params)] if binary else []
        out.append(_forward_stage(cfg, "cs/critic scorers", shapes.critic, False,
                                  scorer_pool(cfg, "critic_binary" if binary else "critic"), cfg.cs.critic_batch_size,
                                  "cs.critic_batch_size", extra=kept))
    return out


# --- the roles together: GPUs, memory per GPU, CPUs ---------------------------------------------------------------


_SHARE_KEYS = "train.gpus_per_worker, rollout.gpus_per_worker, cs.critic_gpus_per_worker"


def _gpu_loads(cfg: PipelineConfig, roles: list[RoleEstimate]) -> tuple[list[GpuLoad], list[str]]:
    """Every GPU of ``plan.cluster_gpus`` once the roles are placed as Ray places them, in the order the run starts
    them (:func:`coderl_ray.registry.place_gpus`), and the errors: a role that finds no room, a GPU whose roles
    together hold more than ``plan.gpu_memory_gb`` less headroom (with the keys that would make them fit)."""
    n = cfg.plan.cluster_gpus
    pools = [r.pool for r in roles]
    requests = registry.gpu_requests(pools)
    if not n or not requests:
        return [], []
    by_key = {r.pool.key: r for r in roles}
    placement = registry.place_gpus(requests, n)
    budget = _budget(cfg, 1.0)
    loads = [GpuLoad(i, members, sum(by_key[k].memory for k, _ in members), budget)
             for i, members in enumerate(placement.gpus)]
    errors = []
    if placement.blocked:
        key, share = placement.blocked
        order = ", then ".join(f"{p.role} ({p.workers} x {p.gpus:g})" for p in pools if p.gpus > 0)
        taken = "; ".join(f"GPU {g.index}: {g.describe()} ({placement.used(g.index):g})" for g in loads)
        errors.append(f"the roles cannot all get their GPUs on plan.cluster_gpus={n}: started in the run's order "
                      f"({order}) and placed as Ray places them (a fraction on the GPU it fills most), a worker of "
                      f"{by_key[key].pool.role} finds no GPU with {share:g} free ({taken}) and would wait forever; "
                      f"change the GPU shares ({_SHARE_KEYS}) or worker counts, or plan.cluster_gpus")
    for group in _same_gpus(loads):
        load = group[0]
        if load.fits:
            continue
        ways: list[str] = []
        for key, k in Counter(key for key, _ in load.members).items():
            role = by_key[key]
            # What this role may hold if the others stay as they are (k workers of it on this GPU share the rest).
            room = (load.budget - (load.memory - k * role.memory)) / k
            over = [st for st in role.stages if st.peak > room and st.refit is not None]
            if room <= 0 or not over:
                continue
            per_stage = []
            for st in over:
                fixes = [f for f in st.refit(room) if "=" in f] or st.refit(room)[:1]
                per_stage.append(f"{st.stage}: {', '.join(fixes)}")
            ways.append(f"{key} within {room / GiB:.1f} GiB ({'; '.join(per_stage)})")
        shares = " + ".join(f"{s:g}" for _, s in load.members)
        which = f"GPU {load.index} holds" if len(group) == 1 else \
            f"GPUs {load.index}-{group[-1].index} each hold"
        errors.append(f"{which} {load.describe()} ({shares} of a GPU) for the whole run: ~{load.memory / GiB:.1f} "
                      f"GiB together, over the {load.budget / GiB:.1f} GiB of plan.gpu_memory_gb="
                      f"{cfg.plan.gpu_memory_gb:g} less headroom; to fit, change "
                      + "".join(f"{w}; or " for w in ways)
                      + f"the GPU shares ({_SHARE_KEYS}) or worker counts, to put fewer roles on one GPU; or "
                      "plan.gpu_memory_gb (if the GPUs have more memory)")
    return loads, errors


def _cpu_report(cfg: PipelineConfig, roles: list[RoleEstimate]) -> tuple[str, str | None]:
    """(what the roles reserve against ``plan.cluster_cpus``, a warning when a run cannot be scheduled there)."""
    from coderl_ray.roles.setup import local_cpus

    cores, s = cfg.plan.cluster_cpus, cfg.sandbox
    if not cores:
        return "", None
    pools = [r.pool for r in roles]
    fixed = registry.role_cpus(pools)
    executors = s.max_tasks_in_flight * s.cpus_per_task if s.max_tasks_in_flight else s.cpus_per_task
    left = cores - fixed - 1
    parts = " + ".join(f"{p.key} {p.workers * p.cpus:g}" for p in pools if p.key != "sandbox")
    line = f"roles {fixed:g} ({parts}) + Ray Data 1 of plan.cluster_cpus={cores}: "
    if s.max_tasks_in_flight:
        line += f"{left:g} left for the {s.max_tasks_in_flight} sandbox executors' {executors:g}"
    else:
        units = max(0, int(left // s.cpus_per_task))
        line += f"{left:g} left for sandbox executors ({s.cpus_per_task:g} CPU each, one per unit of " \
                f"'{s.resource or 'CPU'}': a one-machine cluster should advertise {units})"
    if left >= executors:
        return line, None
    return line, (f"on a one-machine Ray cluster of plan.cluster_cpus={cores} CPUs the roles ({fixed:g} CPUs), Ray "
                  f"Data (1) and the sandbox executors ({executors:g}) would wait for CPUs; lower "
                  "train.cpus_per_worker, rollout.cpus_per_worker, cs.critic_cpus_per_worker or "
                  f"sandbox.cpus_per_task. (An in-process Ray, ray_address=local, advertises "
                  f"{local_cpus(cfg, cores):g} logical CPUs instead and the roles share the cores.)")


def _device_errors(cfg: PipelineConfig) -> list[str]:
    """A role that holds a model on CPU in a GPU config."""
    cpu = registry.cpu_model_pools(cfg)
    if not cpu:
        return []
    named = "; ".join(f"{pool.role} ({pool.model}; {pool.gpu_key})" for pool in cpu)
    return [f"a GPU config runs models on CPU: {named}; give them a GPU share"]


def make_plan(cfg: PipelineConfig) -> Plan:
    """The plan of ``cfg``: the estimates of every stage the pipeline runs (:func:`coderl_ray.registry.
    pipeline_stages`), in pipeline order, and the run's roles, which hold their resources all at once: each with its
    largest stage's memory, placed on ``plan.cluster_gpus`` GPUs (pure: reads configs, allocates nothing)."""
    warnings: list[str] = []
    actor, where = model_shape(cfg.model.name_or_path, cfg.model)
    if actor is None:
        warnings.append(f"model.name_or_path: memory not estimated: {where}")
    critic_name = cfg.model.name_or_path if cfg.critic.backbone == "actor" else cfg.critic.backbone
    critic, where_c = (actor, where) if cfg.critic.backbone == "actor" else model_shape(critic_name, cfg.model)
    if critic is None:
        warnings.append(f"critic.backbone: memory not estimated: {where_c}")
    repair = actor
    if cfg.repair.enabled and cfg.repair.init != "actor":
        repair, where_r = model_shape(cfg.repair.init, cfg.model)
        if repair is None:
            warnings.append(f"repair.init: memory not estimated: {where_r}")
    shapes = Shapes(actor, critic, repair)
    stages: list[StageEstimate] = []
    for spec in registry.pipeline_stages(cfg):
        stages += globals()[spec.plan](cfg, shapes)
    roles = [RoleEstimate(p, [s for s in stages if s.role == p.key]) for p in registry.run_roles(cfg)]
    gpus, gpu_errors = _gpu_loads(cfg, roles)
    cpus, cpu_warning = _cpu_report(cfg, roles)
    return Plan(stages, warnings + ([cpu_warning] if cpu_warning else []), _device_errors(cfg) + gpu_errors, roles,
                gpus, cpus)


def _size(n: float) -> str:
    return f"{n / GiB:8.2f} GiB" if n >= GiB / 10 else f"{n / 2**20:8.1f} MiB"


def _same_gpus(loads: list[GpuLoad]) -> list[list[GpuLoad]]:
    """Consecutive GPUs that hold the same roles, grouped (the display and the errors name them once)."""
    groups: list[list[GpuLoad]] = []
    for g in loads:
        if groups and groups[-1][0].members == g.members:
            groups[-1].append(g)
        else:
            groups.append([g])
    return groups


def _gpu_lines(plan: Plan) -> list[str]:
    lines = []
    for group in _same_gpus(plan.gpus):
        g = group[0]
        which = f"GPU {g.index}" if len(group) == 1 else f"GPUs {g.index}-{group[-1].index}"
        if not g.members:
            lines.append(f"  {which:9s} free")
            continue
        used = sum(s for _, s in g.members)
        lines.append(f"  {which:9s} {g.describe()} ({used:g} of a GPU): {'fits' if g.fits else 'DOES NOT FIT'}: "
                     f"{g.memory / GiB:.1f} of {g.budget / GiB:.1f} GiB")
    return lines


def format_plan(cfg: PipelineConfig, plan: Plan) -> str:
    gpu = f"{cfg.plan.gpu_memory_gb:g} GiB per GPU, {cfg.plan.headroom:.0%} kept free"
    lines = [f"Plan ({gpu}; estimates are worst case: every row at the configured maximum lengths)"]
    for w in plan.warnings:
        lines.append(f"  warning: {w}")
    for e in plan.errors:
        lines.append(f"  ERROR: {e}")
    lines.append("\nRoles, in the order the run starts them; each holds its resources to the end of the run, and each "
                 "worker its largest stage's memory:")
    for r in plan.roles:
        memory = f"~{_size(r.memory).strip()} per worker (peak: {r.peak_stage})" if r.stages else "no model"
        lines.append(f"  {r.pool.describe()}: {memory}")
    if plan.gpus:
        lines.append(f"GPUs (plan.cluster_gpus={cfg.plan.cluster_gpus}), as Ray fills them:")
        lines += _gpu_lines(plan)
    elif any(r.pool.gpus for r in plan.roles):
        lines.append("GPUs: plan.cluster_gpus is 0 (unknown): each worker must fit in its own share of a GPU")
    if plan.cpus:
        lines.append(f"CPUs: {plan.cpus}")
    lines.append("\nStages, one at a time (the online loop: its four parts at once):")
    for st in plan.stages:
        verdict = f"on CPU, not checked: ~{_size(st.peak).strip()} per worker" if st.budget is None else \
            f"{'fits' if st.fits else 'DOES NOT FIT'}: {st.peak / GiB:.1f} of {st.budget / GiB:.1f} GiB"
        lines.append(f"\n{st.stage:16s} {verdict}")
        lines.append(f"  requests: {st.workers}")
        for note in st.notes:
            lines.append(f"  {note}")
        for name, b in st.items:
            lines.append(f"    {_size(b)}  {name}")
        if st.fixes:
            lines.append("  to fit, change: " + "; ".join(st.fixes))
    return "\n".join(lines)


def plan_problems(cfg: PipelineConfig, plan: Plan) -> list[str]:
    """One line per problem of the plan: a stage that does not fit, a model role on CPU in a GPU config, a role
    that finds no GPU, a GPU whose roles together do not fit."""
    bad = plan.failing
    out = list(plan.errors)
    if bad:
        summary = "; ".join(f"{s.stage} needs ~{s.peak / GiB:.1f} GiB of {s.budget / GiB:.1f} "
                            f"({', '.join(s.fixes[:2]) or 'no key helps'})" for s in bad)
        out.insert(0, f"{len(bad)} stage(s) do not fit in plan.gpu_memory_gb={cfg.plan.gpu_memory_gb:g} GiB: "
                      f"{summary}")
    return out


def check_plan(cfg: PipelineConfig, echo=print) -> Plan:
    """Make the plan and raise :class:`PlanError` (naming the stages and keys) when a stage does not fit, a GPU
    config runs a model on CPU, a role cannot get its GPU share, or the roles on a GPU together do not fit, unless
    ``plan.check`` is off (then it only warns)."""
    plan = make_plan(cfg)
    for w in plan.warnings:
        echo(f"plan: warning: {w}")
    problems = plan_problems(cfg, plan)
    if not problems:
        return plan
    message = (". ".join(problems) + ". `coderl-ray plan --config ...` shows the estimate item by item; "
               "plan.check=false runs anyway.")
    if cfg.plan.check:
        raise PlanError(message)
    echo(f"plan: warning: {message}")
    return plan
