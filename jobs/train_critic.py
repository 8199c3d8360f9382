"""Train the critic on replay-buffer rounds with Ray Train, as a Ray job.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python jobs/train_critic.py \\
        --config configs/tiny.yaml --buffer outputs/tiny/buffer --rounds 1 --from-actor outputs/tiny/models/actor_sft \\
        --ground-truth outputs/tiny/data/ground_truth --out outputs/tiny/models/critic_round_1
    python jobs/train_critic.py ... critic.epochs=2 train.num_workers=2
"""

import sys
from pathlib import Path

# `python jobs/x.py` puts jobs/ on sys.path, not the working directory Ray uploaded: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train-critic", *sys.argv[1:]]))
