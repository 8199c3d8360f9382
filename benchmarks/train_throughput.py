"""Actor training throughput: our training step against stock transformers loops measured in the same run.

    .venv/bin/python benchmarks/train_throughput.py                      # GPU: CodeT5-large shape; CPU: tiny shape
    .venv/bin/python benchmarks/train_throughput.py --shape tiny --steps 6
    .venv/bin/python benchmarks/train_throughput.py --shape codet5-large --lengths varied --batch 16

What runs (random weights, a T5ForConditionalGeneration of the chosen shape, the same rows for every config):

* ``stock-eager``: ``model(input_ids, attention_mask, labels).loss`` padded to the batch's longest row, then
  backward, clipping and AdamW (on GPU: bf16 autocast and fused AdamW, the issue's "best stock configuration");
* ``stock-compiled``: the same loop with ``torch.compile(model)``;
* ``ours``: :func:`coderl_ray.train.loop.run_loop`, the loop every Ray Train worker runs (objective ``sft``), with
  ``--ours`` options (default on GPU: compile, bucketing, lengths padded to multiples of 64, bf16; on CPU: bucketing).

Throughput counts real tokens (prompt + program, no padding) per second, as the issue's MFU does:
MFU = 6 x parameters x tokens/s / peak, with the peak measured here by a large matmul (bf16 on GPU, fp32 on CPU).
``--lengths fixed`` gives every row 600/512 tokens (the issue's measurement); ``varied`` draws APPS-like lengths
(prompts 150-600, programs 30-512), where bucketing and dynamic padding matter. The first ``--warmup`` steps (and
compilation) are not timed. CPU numbers only check that every path runs; throughput targets are GPU targets.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coderl_ray.train.loop import LoopConfig, run_loop  # noqa: E402

SHAPES = {
    # Salesforce/codet5-large(-ntp-py): 770M parameters.
    "codet5-large": dict(d_model=1024, d_ff=4096, num_layers=24, num_heads=16, d_kv=64, vocab=32100,
                         src=600, tgt=512),
    "codet5-base": dict(d_model=768, d_ff=3072, num_layers=12, num_heads=12, d_kv=64, vocab=32100, src=600, tgt=512),
    "tiny": dict(d_model=128, d_ff=512, num_layers=2, num_heads=4, d_kv=32, vocab=32100, src=96, tgt=64),
    "micro": dict(d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, vocab=512, src=24, tgt=16),  # tests
}


def build_model(shape: dict, device: torch.device, seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=shape["vocab"], d_model=shape["d_model"], d_ff=shape["d_ff"], d_kv=shape["d_kv"],
                      num_layers=shape["num_layers"], num_decoder_layers=shape["num_layers"],
                      num_heads=shape["num_heads"], dropout_rate=0.0, pad_token_id=0, eos_token_id=2,
                      decoder_start_token_id=0, tie_word_embeddings=True)
    return T5ForConditionalGeneration(config).to(device)


def make_rows(shape: dict, n: int, lengths: str, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        if lengths == "fixed":
            p, q = shape["src"], shape["tgt"]
        else:
            p = rng.randint(shape["src"] // 4, shape["src"])
            q = rng.randint(max(2, shape["tgt"] // 16), shape["tgt"])
        rows.append({"prompt_ids": [rng.randrange(5, shape["vocab"]) for _ in range(p)],
                     "token_ids": [rng.randrange(5, shape["vocab"]) for _ in range(q - 1)] + [2]})
    return rows


def real_tokens(rows: list[dict]) -> int:
    return sum(len(r["prompt_ids"]) + len(r["token_ids"]) for r in rows)


def measured_peak_tflops(device: torch.device) -> float:
    """Dense matmul throughput of this device (bf16 on GPU, fp32 on CPU), the MFU denominator."""
    n = 8192 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 20 if device.type == "cuda" else 5
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def stock_loop(model, batches: list[list[dict]], device: torch.device, bf16: bool, warmup: int) -> tuple[float, int]:
    """Seconds and real tokens of the timed steps of a plain Hugging Face training loop."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    model.train()
    t0, tokens = None, 0
    for i, rows in enumerate(batches):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        s = max(len(r["prompt_ids"]) for r in rows)
        t = max(len(r["token_ids"]) for r in rows)
        ids = torch.zeros((len(rows), s), dtype=torch.long)
        mask = torch.zeros((len(rows), s), dtype=torch.long)
        labels = torch.full((len(rows), t), -100, dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r["prompt_ids"])] = torch.tensor(r["prompt_ids"])
            mask[j, : len(r["prompt_ids"])] = 1
            labels[j, : len(r["token_ids"])] = torch.tensor(r["token_ids"])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            tokens += real_tokens(rows)
    sync(device)
    return time.perf_counter() - t0, tokens


def ours_loop(model, batches: list[list[dict]], device: torch.device, options: dict, warmup: int) -> tuple[float, int]:
    from coderl_ray.train.parallel import prepare_model

    cfg = LoopConfig(objective="sft", init_path="", steps=len(batches), batch_size=len(batches[0]), lr=1e-4,
                     warmup_ratio=0.0, **options)
    model = prepare_model(model, parallel="ddp", device=device, precision=cfg.precision,
                          gradient_checkpointing=cfg.gradient_checkpointing, compile_model=cfg.compile)
    from coderl_ray.train.batching import bucket_by_length

    stream = iter(bucket_by_length(batches, cfg.bucket_batches, seed=0))
    marks: dict[int, float] = {}
    counted: list[int] = []

    def on_step(step, metrics, opt, sched):
        marks[step] = time.perf_counter()  # run_loop's metrics are floats: the step has synchronised already
        if step > warmup:
            counted.append(metrics["real_tokens"])

    run_loop(cfg, model, stream, pad_id=0, device=device, on_step=on_step)
    return marks[len(batches)] - marks[warmup], sum(counted)


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="codet5-large" if cuda else "tiny")
    ap.add_argument("--batch", type=int, default=16 if cuda else 8)
    ap.add_argument("--steps", type=int, default=20 if cuda else 6, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5 if cuda else 2)
    ap.add_argument("--lengths", choices=["fixed", "varied"], default="fixed")
    ap.add_argument("--configs", default="stock-eager,stock-compiled,ours")
    ap.add_argument("--ours", default="", help="LoopConfig overrides as JSON, e.g. '{\"compile\": false}'")
    ap.add_argument("--repeats", type=int, default=1 if cuda else 3,
                    help="runs per config, best kept (a shared CPU is noisy)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    device = torch.device("cuda" if cuda else "cpu")
    shape = SHAPES[args.shape]
    total = args.warmup + args.steps
    rows = make_rows(shape, total * args.batch, args.lengths)
    batches = [rows[i * args.batch: (i + 1) * args.batch] for i in range(total)]
    ours = {"precision": "bf16", "compile": True, "bucket_batches": 8, "pad_to_multiple_of": 64} if cuda else \
        {"bucket_batches": 4}
    ours.update(json.loads(args.ours or "{}"))
    params = sum(p.numel() for p in build_model(shape, torch.device("meta")).parameters())
    peak = measured_peak_tflops(device)
    print(f"device: {torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, shape {args.shape} ({params / 1e6:.0f}M parameters), batch {args.batch}, "
          f"lengths {args.lengths}, measured peak {peak:.3g} TFLOP/s", flush=True)

    results = {}
    for name in args.configs.split(","):
        runs = []
        for _ in range(args.repeats):
            model = build_model(shape, device)
            t_start = time.perf_counter()
            try:
                if name == "stock-eager":
                    seconds, tokens = stock_loop(model, batches, device, cuda, args.warmup)
                elif name == "stock-compiled":
                    seconds, tokens = stock_loop(torch.compile(model), batches, device, cuda, args.warmup)
                elif name == "ours":
                    seconds, tokens = ours_loop(model, batches, device, ours, args.warmup)
                else:
                    raise ValueError(f"unknown config {name}")
            except Exception as exc:  # a stock configuration that fails is a result to report, not a crash
                print(f"{name:15s} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                break
            runs.append((tokens / seconds, time.perf_counter() - t_start))
            del model
            if cuda:
                torch.cuda.empty_cache()
        if not runs:
            continue
        rate = max(r for r, _ in runs)
        mfu = 6 * params * rate / (peak * 1e12)
        results[name] = {"tokens_per_s": rate, "mfu": mfu, "timed_steps": args.steps,
                         "all_runs_tokens_per_s": [r for r, _ in runs], "wall_s_incl_warmup": runs[-1][1]}
        # 6 x parameters x tokens overcounts tiny models (the embedding is most of them and costs no FLOPs), and a
        # CPU's matmul peak under shared load means little: MFU is printed for GPU runs only.
        shown = f"   MFU {100 * mfu:5.1f}%" if cuda else ""
        print(f"{name:15s} {rate:12,.0f} tokens/s{shown}   (runs: {', '.join(f'{r:,.0f}' for r, _ in runs)})",
              flush=True)
    base = {k: v["tokens_per_s"] for k, v in results.items() if "tokens_per_s" in v}
    if "ours" in base:
        for ref in ("stock-eager", "stock-compiled"):
            if ref in base:
                print(f"ours / {ref}: {base['ours'] / base[ref]:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"date": datetime.date.today().isoformat(), "device": str(device),
                                         "shape": args.shape, "batch": args.batch, "lengths": args.lengths,
                                         "ours_options": ours, "peak_tflops": peak, "results": results}, indent=2))


if __name__ == "__main__":
    main()
