"""Rollout sampling throughput: our decoder against stock ``generate`` configurations measured in the same run.

    .venv/bin/python benchmarks/generate_throughput.py                 # GPU: CodeT5-large shape; CPU: tiny shape
    .venv/bin/python benchmarks/generate_throughput.py --batches 8,64,128 --samples-per-prompt 8

Shape (issue 6): random-weight T5 of the chosen size, prompts of ``--prompt`` tokens (600 on GPU), ``--new`` new
tokens (256), temperature 0.6, top-p 0.95, ``batch`` sequences = ``batch / samples-per-prompt`` prompts. EOS is
disabled in the model config, so every configuration generates exactly ``batch x new`` tokens and new tokens per
second compare like for like (early stopping of finished rows is not what is measured).

Configurations:

* ``stock-default``: ``model.generate(do_sample=True, temperature, top_p, top_k=0)``;
* ``stock-static``: the same with ``cache_implementation="static"``;
* ``stock-static-compiled`` (GPU): static cache plus ``torch.compile(mode="reduce-overhead")`` of the forward, the
  combination that failed in stock transformers ("accessing tensor output of CUDAGraphs that has been
  overwritten"); a failure is reported, not fatal;
* ``ours``: :class:`coderl_ray.models.decoding.StaticDecoder` (static caches, encoder once per prompt, sampling on
  the device, one host read every 16 steps), eager;
* ``ours-compiled``: the same with the decode step compiled, replayed as a CUDA graph on GPU.

Each configuration runs once untimed (allocation, compilation, graph capture), then ``--repeats`` timed runs; the
best is kept. CPU numbers only check that every path runs; the throughput targets are GPU targets.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.train_throughput import SHAPES, build_model, sync  # noqa: E402
from coderl_ray.models.decoding import StaticDecoder  # noqa: E402

CONFIGS = ["stock-default", "stock-static", "stock-static-compiled", "ours", "ours-compiled"]


def run_config(name: str, model, input_ids, mask, samples: int, new: int, temperature: float, top_p: float,
               cuda: bool, state: dict):
    """One generation of ``input_ids.shape[0] * samples`` sequences of ``new`` tokens; returns the new tokens."""
    if name.startswith("stock"):
        kwargs = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=new,
                      min_new_tokens=new, num_return_sequences=samples, pad_token_id=0)
        if name != "stock-default":
            kwargs["cache_implementation"] = "static"
        if name == "stock-static-compiled" and "compiled" not in state:
            model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)
            state["compiled"] = True
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        return (out.shape[1] - 1) * out.shape[0]
    if "decoder" not in state:
        compiled = name == "ours-compiled"
        state["decoder"] = StaticDecoder(model, compile_step=compiled, cuda_graphs=compiled and cuda)
    rows = state["decoder"].generate(input_ids, mask, num_samples=samples, max_new_tokens=new,
                                     temperature=temperature, top_p=top_p, eos_id=-1, pad_id=0)
    return sum(len(r) for r in rows)


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="codet5-large" if cuda else "tiny")
    ap.add_argument("--batches", default="8,64" if cuda else "8,32", help="sequences per generate call")
    ap.add_argument("--samples-per-prompt", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=600 if cuda else 64)
    ap.add_argument("--new", type=int, default=256 if cuda else 32)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--configs", default=",".join(c for c in CONFIGS if cuda or c != "stock-static-compiled"))
    ap.add_argument("--repeats", type=int, default=2 if cuda else 3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    shape = SHAPES[args.shape]
    print(f"device: {torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, shape {args.shape}, prompt {args.prompt}, new {args.new}, "
          f"samples/prompt {args.samples_per_prompt}, {dtype}", flush=True)
    results: dict[str, dict] = {}
    for batch in (int(b) for b in args.batches.split(",")):
        prompts = batch // args.samples_per_prompt
        g = torch.Generator().manual_seed(batch)
        input_ids = torch.randint(5, shape["vocab"], (prompts, args.prompt), generator=g).to(device)
        mask = torch.ones_like(input_ids)
        for name in args.configs.split(","):
            model = build_model(shape, device).to(dtype).eval()
            # No EOS: every row runs the full length in every configuration.
            model.config.eos_token_id = None
            model.generation_config.eos_token_id = None
            state: dict = {}
            key = f"{name}@{batch}"
            try:
                run_config(name, model, input_ids, mask, args.samples_per_prompt, args.new, args.temperature,
                           args.top_p, cuda, state)  # untimed: allocation, compilation, graph capture
                rates = []
                for _ in range(args.repeats):
                    sync(device)
                    t0 = time.perf_counter()
                    tokens = run_config(name, model, input_ids, mask, args.samples_per_prompt, args.new,
                                        args.temperature, args.top_p, cuda, state)
                    sync(device)
                    rates.append(tokens / (time.perf_counter() - t0))
            except Exception as exc:  # the stock compiled configuration is expected to fail; report it
                print(f"batch {batch:4d} {name:22s} failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                results[key] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            finally:
                del model
                if cuda:
                    torch.cuda.empty_cache()
            results[key] = {"new_tokens_per_s": max(rates), "runs": rates}
            print(f"batch {batch:4d} {name:22s} {max(rates):12,.0f} new tokens/s   "
                  f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})", flush=True)
        ok = {k.split("@")[0]: v["new_tokens_per_s"] for k, v in results.items()
              if k.endswith(f"@{batch}") and "new_tokens_per_s" in v}
        for ours in ("ours", "ours-compiled"):
            for ref in ("stock-default", "stock-static"):
                if ours in ok and ref in ok:
                    print(f"batch {batch:4d} {ours} / {ref}: {ok[ours] / ok[ref]:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"date": datetime.date.today().isoformat(), "device": str(device),
                                         "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
