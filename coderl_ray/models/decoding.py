"""Fast sampling for the rollout: a decode loop over preallocated (static) caches with a fixed-shape step.

``model.generate`` spends much of a decode step outside the model at rollout shapes: logits processors and stopping
criteria run per step and read a flag back from the GPU, and with ``cache_implementation="static"`` plus
``torch.compile`` in CUDA-graph mode its caches and outputs outlive the graph replay that produced them (the stock
failure "accessing tensor output of CUDAGraphs that has been overwritten"). This loop keeps the model, the caches and
the step stock, and changes what is around them:

* the encoder (seq2seq) runs once per prompt, not once per sample; its states are repeated for the samples;
* every decode step has the same shapes (caches preallocated to ``max_new_tokens``; prompts padded to a multiple of
  ``pad_prompts_to``), so ``torch.compile`` builds one graph per (batch, prompt-length bucket) and, on GPU with
  ``cuda_graphs``, replays it as a CUDA graph; the step's inputs live in buffers that are reused call after call
  (static addresses: no re-recording, no input copies) and its output is consumed before the next replay;
* sampling (temperature, top-k, top-p, then an exponential race instead of ``torch.multinomial``) stays on the
  device;
  the loop reads back from the GPU only every ``stop_check_every`` steps, to stop when every row has finished.

The first decoder step of a seq2seq model fills the cross-attention caches and runs eagerly; every later step is the
compiled one. Greedy decoding here produces exactly ``generate``'s tokens (tests check it); sampling draws from the
same distribution as ``generate(do_sample=True, temperature, top_k, top_p)``.

**Keyed sampling.** Given ``row_keys`` (one integer per row), the race's exponential variates are a hash of (row
key, step, token) instead of draws from torch's global stream (:func:`race_noise`). A row's sample then depends on
its key and its logits only, not on which rows share its call: splitting a batch into chunks (to bound memory),
batching problems differently or switching between this decoder and ``generate`` (through :class:`KeyedSampler`)
gives the same programs. The hash is counter-based, so it needs no generator state and no host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from coderl_ray.models.batching import causal_position_ids


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering as transformers' ``TopPLogitsWarper``: keep the smallest set of tokens whose probability
    reaches ``top_p`` (at least one); others get -inf. [N, V] -> [N, V]."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)
    remove[..., -1:] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """As transformers' ``TopKLogitsWarper``: tokens scoring below the k-th best get -inf (ties with it stay);
    0 = off. [N, V] -> [N, V]."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def warp_logits(logits: torch.Tensor, temperature: float, top_p: float, top_k: int = 0) -> torch.Tensor:
    """Temperature, then top-k, then top-p: the order of ``generate``'s warpers. [N, V] -> [N, V]."""
    return top_p_filter(top_k_filter(logits / temperature, top_k), top_p)


_MASK32 = 0xFFFFFFFF
_MUL = 0x45D9F3B  # T. Mueller's 32-bit integer hash; < 2**27, so a 32-bit value times it never overflows int64


def _mix32(x):
    """A bijective avalanche hash of 32-bit values held in int64 tensors (or Python ints)."""
    x = (((x >> 16) ^ x) * _MUL) & _MASK32
    x = (((x >> 16) ^ x) * _MUL) & _MASK32
    return (x >> 16) ^ x


def race_noise(row_keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Exp(1) variates [N, V], a pure function of (row key, decode step, token id).

    ``row_keys``: [N] int64 in [0, 2**63). Two rounds of a 32-bit hash over (row, step) and then (that, token)
    give a uniform u in (0, 1) at 24-bit resolution (the resolution of a float32 in [0.5, 1)); -log u is Exp(1).
    ``tests/test_chunked_generation.py`` checks that the race then samples each token at its probability.
    """
    salt = _mix32((step * 0x9E3779B9 + 0x7F4A7C15) & _MASK32)
    lo, hi = row_keys & _MASK32, (row_keys >> 32) & _MASK32
    row = _mix32(_mix32(lo ^ salt) ^ hi)  # [N]
    row2 = _mix32((row + 0x632BE5AB) & _MASK32)
    token = _mix32(torch.arange(vocab, device=row_keys.device, dtype=torch.int64))  # [V]
    h = _mix32(row.unsqueeze(1) ^ token)
    h = _mix32(h ^ row2.unsqueeze(1))
    u = ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))
    return -torch.log(u)


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float, greedy: bool, *, top_k: int = 0,
                  row_keys: torch.Tensor | None = None, step: int = 0) -> torch.Tensor:
    """Next token per row: [N, V] float logits -> [N] long.

    Sampling uses the exponential race (argmax of p / E with E ~ Exp(1) is a draw from p): unlike
    ``torch.multinomial`` it needs no host synchronisation and can be captured in a CUDA graph. With ``row_keys``
    the variates are :func:`race_noise` of (key, ``step``); without, they come from torch's global generator.
    """
    if greedy:
        return logits.argmax(dim=-1)
    probs = warp_logits(logits, temperature, top_p, top_k).softmax(dim=-1)
    if row_keys is None:
        race = torch.empty_like(probs).exponential_(1.0)
    else:
        race = race_noise(row_keys, step, probs.shape[-1])
    return (probs / race).argmax(dim=-1)


class KeyedSampler:
    """A ``generate`` logits processor that makes ``model.generate(do_sample=True)`` draw exactly what
    :func:`sample_tokens` draws with ``row_keys``: it warps the logits itself and leaves only the race's winner,
    so ``generate``'s own multinomial has one token to pick. Pass ``temperature=1.0, top_k=0, top_p=1.0`` to
    ``generate`` (its warpers run after custom processors, and are then no-ops).

    ``row_keys`` [N]: one key per generated row, in ``generate``'s order (prompt-major, ``num_return_sequences``
    rows per prompt). One instance serves one ``generate`` call: it counts the steps.
    """

    def __init__(self, row_keys: torch.Tensor, temperature: float, top_p: float, top_k: int = 0):
        self.row_keys, self.temperature, self.top_p, self.top_k = row_keys, temperature, top_p, top_k
        self.step = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        winner = sample_tokens(scores, self.temperature, self.top_p, greedy=False, top_k=self.top_k,
                               row_keys=self.row_keys, step=self.step)
        self.step += 1
        return torch.full_like(scores, float("-inf")).scatter_(1, winner.unsqueeze(1), 0.0)


@dataclass
class _Workspace:
    """Tensors and caches of one (rows, prompt length) shape, reused by every call of that shape."""

    cache: object
    token: torch.Tensor  # [N, 1] the step's input token
    position: torch.Tensor  # [N, 1] causal: the step's position ids
    memory: torch.Tensor | None = None  # seq2seq: encoder states [N, S, d]
    memory_mask: torch.Tensor | None = None  # [N, S] (seq2seq) or [N, S + max_new] (causal)


def _seq2seq_step(model, token, memory, memory_mask, cache):
    from transformers.modeling_outputs import BaseModelOutput

    out = model(encoder_outputs=BaseModelOutput(last_hidden_state=memory), attention_mask=memory_mask,
                decoder_input_ids=token, cache=cache, use_cache=True)
    return out.logits[:, -1].float()


def _causal_step(model, token, position, mask, cache):
    out = model(input_ids=token, attention_mask=mask, position_ids=position, cache=cache, use_cache=True)
    return out.logits[:, -1].float()


class StaticDecoder:
    """Samples ``num_samples`` continuations per prompt with static caches; optionally compiled / CUDA graphs."""

    def __init__(self, model, *, compile_step: bool = False, cuda_graphs: bool = False, pad_prompts_to: int = 64,
                 stop_check_every: int = 16, max_workspaces: int = 2):
        self.model = model
        # A workspace holds full caches: for CodeT5-large in bf16 (24 decoder layers, keys and values of 16 x 64 per
        # token: 96 KiB per token), 320 rows x 512 new tokens is 15 GiB of self-attention cache, and 320 rows x a
        # 640-token prompt bucket another 19 GiB of cross-attention cache. Callers bound the rows of one call
        # (rollout.max_rows_per_generate); `coderl-ray plan` adds it up. Only the most recently used shapes are kept
        # (sampled rows and the greedy baseline: 2), so up to two workspaces are alive at once.
        self.max_workspaces = max(1, max_workspaces)
        self.seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        self.pad_prompts_to = max(1, pad_prompts_to)
        self.stop_check_every = max(1, stop_check_every)
        self._workspaces: dict[tuple, _Workspace] = {}
        step = _seq2seq_step if self.seq2seq else _causal_step
        if compile_step:
            # One graph per (rows, prompt-length bucket): with 600-token prompts in buckets of 64 and a short last
            # batch that is up to ~20 shapes per process, beyond dynamo's default of 8 (after which it silently
            # runs the step eagerly). The rollout actor compiles nothing else, so the process-wide limit is raised.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            mode = "reduce-overhead" if cuda_graphs else "default"
            step = torch.compile(step, mode=mode, dynamic=False)
        self._step = step
        self.cuda_graphs = compile_step and cuda_graphs

    def _workspace(self, rows: int, prompt_len: int, max_new: int, like: torch.Tensor) -> _Workspace:
        from transformers import EncoderDecoderCache, StaticCache

        key = (rows, prompt_len, max_new)
        ws = self._workspaces.pop(key, None)
        if ws is not None:
            ws.cache.reset()
            self._workspaces[key] = ws  # most recently used last
            return ws
        while len(self._workspaces) >= self.max_workspaces:
            self._workspaces.pop(next(iter(self._workspaces)))
        config = self.model.config
        device = like.device
        if self.seq2seq:
            cache = EncoderDecoderCache(StaticCache(config=config, max_cache_len=max_new),
                                        StaticCache(config=config, max_cache_len=prompt_len))
            d_model = self.model.get_encoder().config.d_model if hasattr(config, "d_model") else config.hidden_size
            dtype = next(self.model.parameters()).dtype
            ws = _Workspace(cache=cache, token=torch.zeros((rows, 1), dtype=torch.long, device=device),
                            position=torch.zeros((rows, 1), dtype=torch.long, device=device),
                            memory=torch.zeros((rows, prompt_len, d_model), dtype=dtype, device=device),
                            memory_mask=torch.zeros((rows, prompt_len), dtype=torch.long, device=device))
        else:
            ws = _Workspace(cache=StaticCache(config=config, max_cache_len=prompt_len + max_new),
                            token=torch.zeros((rows, 1), dtype=torch.long, device=device),
                            position=torch.zeros((rows, 1), dtype=torch.long, device=device),
                            memory_mask=torch.zeros((rows, prompt_len + max_new), dtype=torch.long, device=device))
        # Fixed addresses: a compiled step treats these as constants of the graph, not inputs to copy.
        for t in (ws.token, ws.position, ws.memory, ws.memory_mask):
            if t is not None:
                torch._dynamo.mark_static_address(t)
        self._workspaces[key] = ws
        return ws

    def _pad_prompts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int):
        s = input_ids.shape[1]
        target = -(-s // self.pad_prompts_to) * self.pad_prompts_to
        if target == s:
            return input_ids, attention_mask
        extra = target - s
        # Left padding, as the prompts already are: a causal model continues right after the last prompt token.
        ids = torch.cat([input_ids.new_full((input_ids.shape[0], extra), pad_id), input_ids], dim=1)
        mask = torch.cat([attention_mask.new_zeros((attention_mask.shape[0], extra)), attention_mask], dim=1)
        return ids, mask

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, num_samples: int,
                 max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
                 eos_id: int, pad_id: int, top_k: int = 0, row_keys: torch.Tensor | None = None) -> list[list[int]]:
        """Token ids of ``B * num_samples`` programs (prompt-major), each cut after its first EOS.

        ``input_ids``/``attention_mask``: [B, S] left-padded prompts on the model's device. ``row_keys``:
        [B * num_samples] int64 on the same device, one per row (keyed sampling, see the module docstring); None
        draws from torch's global generator. All ``B * num_samples`` rows are decoded at once: bound them.
        """
        model = self.model
        input_ids, attention_mask = self._pad_prompts(input_ids, attention_mask, pad_id)
        n = num_samples
        rows, s = input_ids.shape[0] * n, input_ids.shape[1]
        ws = self._workspace(rows, s, max_new_tokens, input_ids)
        if self.seq2seq:
            encoded = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            ws.memory.copy_(encoded.repeat_interleave(n, dim=0))
            ws.memory_mask.copy_(attention_mask.repeat_interleave(n, dim=0))
            ws.token.fill_(model.config.decoder_start_token_id)
            # Step 0 computes and caches every layer's cross-attention keys and values: eager, once per call.
            logits = _seq2seq_step(model, ws.token, ws.memory, ws.memory_mask, ws.cache)
        else:
            ids = input_ids.repeat_interleave(n, dim=0)
            mask = attention_mask.repeat_interleave(n, dim=0)
            ws.memory_mask.zero_()
            ws.memory_mask[:, :s] = mask
            positions = causal_position_ids(mask)
            # Prefill the prompts (eager); the mask covers the whole static cache, future slots are causally hidden.
            out = model(input_ids=ids, attention_mask=ws.memory_mask, position_ids=positions, cache=ws.cache,
                        use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1].float()
            ws.position.copy_(positions[:, -1:] + 1)
        tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=input_ids.device)
        finished = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        steps = 0
        for t in range(max_new_tokens):
            nxt = sample_tokens(logits, temperature, top_p, greedy, top_k=top_k, row_keys=row_keys, step=t)
            nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
            tokens[:, t] = nxt
            finished |= nxt == eos_id
            steps = t + 1
            if t == max_new_tokens - 1 or (steps % self.stop_check_every == 0 and bool(finished.all())):
                break
            ws.token.copy_(nxt.unsqueeze(1))
            if self.cuda_graphs:
                # A new replay may overwrite the previous replay's outputs; `logits` was consumed above.
                torch.compiler.cudagraph_mark_step_begin()
            if self.seq2seq:
                logits = self._step(model, ws.token, ws.memory, ws.memory_mask, ws.cache)
            else:
                ws.memory_mask[:, s + t] = 1
                logits = self._step(model, ws.token, ws.position, ws.memory_mask, ws.cache)
                ws.position.add_(1)
        out_rows = []
        for row in tokens[:, :steps].tolist():
            # Finished rows are padded after their EOS; a pad id before any EOS was generated and is kept.
            out_rows.append(row[: row.index(eos_id) + 1] if eos_id in row else row)
        return out_rows
