"""How fast does the critic's head learn with the original's input scale (d_model^-0.5) and without it?

    python benchmarks/critic_head_scale.py                       # 30 steps at lr 3e-3, then 45 at 1e-2
    python benchmarks/critic_head_scale.py --steps 60 --lrs 1e-3

The task of ``tests/test_training_ray.py``'s critic test, in one process: a tiny random T5 (d_model 32, so the scale
is 0.18) reads reference programs of the embedded suite prefixed by one of four marker tokens, and must tell the
four outcome classes apart. Prints the loss and accuracy on 48 of its rows after training, scaled and unscaled, from
the same initial weights and the same batches.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[30, 45])
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-3, 1e-2])
    args = parser.parse_args()

    import torch

    from coderl_ray.models.tokenizer import load_tokenizer
    from coderl_ray.rl.replay_buffer import ground_truth_rows
    from coderl_ray.train.loop import LoopConfig, build_model, run_loop
    from coderl_ray.train.objectives import critic_objective
    from tests.helpers import tiny_actor_dir, tiny_suite

    with tempfile.TemporaryDirectory() as tmp:
        actor = tiny_actor_dir(Path(tmp))
        tok = load_tokenizer(actor)
        outcomes = ["compile_error", "runtime_error", "failed", "passed"]
        data = [{"prompt_ids": r["prompt_ids"], "token_ids": [20 + c] * 2 + r["token_ids"][:10], "outcome": outcomes[c]}
                for r in ground_truth_rows(tiny_suite()[0], tok, 256, 128) for c in range(4)]

        def batches():
            rng = random.Random(0)
            while True:
                yield rng.sample(data, 8)

        print("| steps | lr | head input | scale | loss after | accuracy after |")
        print("| --- | --- | --- | --- | --- | --- |")
        for steps, lr in zip(args.steps, args.lrs):
            for scaled in (True, False):
                cfg = LoopConfig(objective="critic", init_path=str(actor), new_critic=True, head_hidden=32,
                                 steps=steps, batch_size=8, lr=lr, warmup_ratio=0.1, critic_scale_input=scaled)
                critic = build_model(cfg)
                run_loop(cfg, critic, batches(), tok.pad_token_id)
                with torch.no_grad():
                    loss, m = critic_objective(critic.eval(), data[:48], tok.pad_token_id)
                print(f"| {steps} | {lr:g} | {'scaled' if scaled else 'raw'} | {critic.input_scale:.3f} | "
                      f"{loss.item():.3f} | {float(m['critic_acc']):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
