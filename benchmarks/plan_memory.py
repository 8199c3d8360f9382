"""`coderl-ray plan`'s memory estimates against measured peaks, case by case, printed as measured / planned.

    .venv/bin/python benchmarks/plan_memory.py            # CPU: tiny T5 and GPT-2; GPU: CodeT5-large shapes
    .venv/bin/python benchmarks/plan_memory.py --json out.json

What is measured: on CPU, the peak bytes of live tensors (tests/peak_memory.py watches every tensor torch creates:
what a GPU's caching allocator would be asked for); on GPU, ``torch.cuda.max_memory_allocated``. Cases:

* ``train``: one optimizer step of the training loop (:func:`coderl_ray.train.loop.train_step`, objective sft)
  after a first step (so AdamW's state exists), every row at the given lengths; on GPU under bf16 autocast, with
  both attention implementations (``eager``, ``sdpa``);
* ``generate-static`` / ``generate-hf``: one decoder call of ``prompts x samples`` rows running to
  ``new`` tokens (no EOS), temperature 0.6, top-p 0.95, keyed sampling;

each against the plan's figure for the same shape (:mod:`coderl_ray.plan`). Ratios below 1 are what the plan
over-counts (gradients next to a first micro-batch's activations, transients at their widest), above 1 what it
leaves out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coderl_ray.config import ModelConfig  # noqa: E402
from coderl_ray.plan import (  # noqa: E402
    KNOWN_MODELS,
    TrainShape,
    generation_memory,
    shape_from_config,
    training_memory,
)

TINY = ModelConfig(d_model=128, d_ff=512, num_layers=2, num_heads=4, max_source_tokens=256, max_target_tokens=128,
                   tokenizer_vocab_size=2000)


def build(arch: str, device: torch.device, attn: str | None = None, large: bool = False):
    """(model, shape): the tiny actor of ``arch`` (vocabulary 2,000), or CodeT5-large's layout (random weights)."""
    from transformers import CONFIG_MAPPING, GPT2LMHeadModel, T5ForConditionalGeneration

    from coderl_ray.models.actor import tiny_actor_config

    if large:
        fields = dict(KNOWN_MODELS["Salesforce/codet5-large-ntp-py"])
        config = CONFIG_MAPPING[fields.pop("model_type")](**{**fields, "dropout_rate": 0.0})
    else:
        config = tiny_actor_config(replace(TINY, arch=arch), TINY.tokenizer_vocab_size, eos_token_id=1)
    if attn:
        config._attn_implementation = attn
    torch.manual_seed(0)
    cls = T5ForConditionalGeneration if (large or arch == "seq2seq") else GPT2LMHeadModel
    model = cls(config).to(device)
    return model, shape_from_config(config, "codet5-large" if large else f"tiny {arch}", attn_implementation=attn)


class _Peak:
    """The peak of what is allocated inside the block: CUDA's counter on GPU, a tensor watcher on CPU."""

    def __init__(self, device: torch.device, *existing):
        self.device, self.existing = device, existing

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return self
        from tests.peak_memory import PeakMemory

        self.mem = PeakMemory().track(*self.existing).__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.mem.__exit__(*exc)
            self.peak = self.mem.peak
        return False


def measure_training(arch: str, rows: int, prompt: int, program: int, device: torch.device,
                     attn: str | None = None, large: bool = False) -> tuple[int, float]:
    """(measured peak bytes, planned bytes) of one training step."""
    from coderl_ray.train.loop import LoopConfig, make_optimizer, train_step

    model, shape = build(arch, device, attn, large)
    vocab = shape.vocab
    g = torch.Generator().manual_seed(0)
    data = [{"prompt_ids": torch.randint(3, vocab, (prompt,), generator=g).tolist(),
             "token_ids": torch.randint(3, vocab, (program,), generator=g).tolist()} for _ in range(rows)]
    bf16 = device.type == "cuda"
    cfg = LoopConfig(objective="sft", init_path="", steps=2, batch_size=rows, lr=1e-4,
                     precision="bf16" if bf16 else "fp32")
    opt, sched = make_optimizer(cfg, model, fused=bf16)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    train_step(cfg, model, [("sft", data, 1.0)], 0, device, opt, sched, params)
    with _Peak(device, model, opt) as peak:
        train_step(cfg, model, [("sft", data, 1.0)], 0, device, opt, sched, params)
    planned = sum(b for _, b in training_memory(shape, TrainShape(rows, prompt, program, autocast=bf16))[0])
    return peak.peak, planned


def measure_generation(arch: str, decoder: str, prompts: int, samples: int, prompt: int, new: int,
                       device: torch.device, large: bool = False) -> tuple[int, float]:
    """(measured peak bytes, planned bytes) of one decoder call of ``prompts x samples`` rows."""
    from coderl_ray.models.decoding import StaticDecoder
    from coderl_ray.models.device import inference_dtype

    model, shape = build(arch, device, large=large)
    model = model.to(inference_dtype(device)).eval()
    ids = torch.randint(3, shape.vocab, (prompts, prompt), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    keys = torch.arange(prompts * samples, device=device)
    with _Peak(device, model) as peak, torch.no_grad():
        if decoder == "static":
            StaticDecoder(model).generate(ids, mask, num_samples=samples, max_new_tokens=new, temperature=0.6,
                                          top_p=0.95, eos_id=-1, pad_id=0, row_keys=keys)
        else:
            model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.6, top_p=0.95, top_k=0,
                           num_return_sequences=samples, max_new_tokens=new, min_new_tokens=new, pad_token_id=0,
                           eos_token_id=1)
    items, _ = generation_memory(shape, prompts=prompts, samples=samples, greedy=False, max_rows=0,
                                 prompt_tokens=prompt, new_tokens=new, bf16=device.type == "cuda", decoder=decoder,
                                 kept_shapes=False)
    return peak.peak, sum(b for _, b in items)


def cases(device: torch.device) -> list[tuple[str, callable]]:
    if device.type == "cuda":
        return [(f"train codet5-large 16 x 600/512 bf16 {attn}",
                 lambda attn=attn: measure_training("seq2seq", 16, 600, 512, device, attn=attn, large=True))
                for attn in ("eager", "sdpa")] + [
                (f"generate-{d} codet5-large 16 x 20 rows, 640/512",
                 lambda d=d: measure_generation("seq2seq", d, 16, 20, 640, 512, device, large=True))
                for d in ("static", "hf")]
    return [(f"train tiny {a} 16 x 256/128 fp32", lambda a=a: measure_training(a, 16, 256, 128, device))
            for a in ("seq2seq", "causal")] + [
            (f"generate-{d} tiny {a} 8 x 8 rows, 192/48",
             lambda a=a, d=d: measure_generation(a, d, 8, 8, 192, 48, device))
            for a in ("seq2seq", "causal") for d in ("static", "hf")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    print(f"{'case':48s} {'measured MiB':>13s} {'planned MiB':>12s} {'measured / planned':>19s}")
    results = {}
    for name, run in cases(device):
        measured, planned = run()
        results[name] = {"measured_bytes": measured, "planned_bytes": planned}
        print(f"{name:48s} {measured / 2**20:13,.1f} {planned / 2**20:12,.1f} {measured / planned:19.3f}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"date": datetime.date.today().isoformat(), "device": str(device),
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
