"""``coderl-ray prepare``: the pipeline's first two stages on their own, ``data`` and ``init``.

    coderl-ray prepare --config configs/tiny.yaml                       # into the config's output_dir
    coderl-ray prepare --config configs/small-gpu.yaml --out outputs/try data.max_train_problems=100
    ray job submit --working-dir . -- python jobs/prepare.py --config configs/small-gpu.yaml

Writes what the pipeline's two stages write, where they write it: ``<out>/data/train.jsonl`` and ``test.jsonl`` (the
config's problems, subsampled as ``data.*`` says), ``<out>/models/actor_init`` (the initial actor and its tokenizer:
a tiny random model, or a local copy of ``model.name_or_path``) and ``<out>/data/ground_truth`` (the tokenised
reference programs, SFT's data; ``train-actor --ground-truth`` reads it). Both run on the driver: no Ray.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coderl_ray.commands._stage import add_config_arguments, load_stage_config, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", default=None, help="folder to write into (default: the config's output_dir)")


def run(args: argparse.Namespace) -> int:
    from coderl_ray import stages
    from coderl_ray.pipeline import check_paths

    cfg = load_stage_config(args)
    check_paths(cfg)
    out = Path(args.out or cfg.output_dir)

    def prepare() -> dict:
        train, test = stages.load_problems(cfg.data)
        stages.write_problems(train, test, out / "data")
        actor = stages.prepare_actor(cfg, train, out / "models")
        gt = stages.ground_truth_dataset(train, actor, cfg, out / "data" / "ground_truth")
        return {"train_problems": len(train), "test_problems": len(test), "actor": str(actor),
                "ground_truth": str(gt)}

    return run_stage("prepare", prepare)
