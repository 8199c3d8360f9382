"""Critic sampling's repair model (failed program + error -> a passing program) with Ray Train, as a Ray job.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python jobs/train_repair.py \\
        --config configs/tiny.yaml --buffer outputs/tiny/buffer --actor outputs/tiny/models/actor_round_2 \\
        --problems outputs/tiny/data/train.jsonl --out outputs/tiny/models/repair repair.epochs=4
"""

import sys
from pathlib import Path

# `python jobs/x.py` puts jobs/ on sys.path, not the working directory Ray uploaded: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train-repair", *sys.argv[1:]]))
