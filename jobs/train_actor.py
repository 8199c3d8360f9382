"""SFT warm-up or one RL round of the actor with Ray Train, as a Ray job.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python jobs/train_actor.py \\
        --config configs/tiny.yaml --mode sft --out outputs/tiny/models/actor_sft
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python jobs/train_actor.py \\
        --config configs/tiny.yaml --mode rl --actor outputs/tiny/models/actor_sft \\
        --scored outputs/tiny/scored/round_1 --ground-truth outputs/tiny/data/ground_truth \\
        --out outputs/tiny/models/actor_round_1 train.num_workers=2 train.checkpoint_every=20
"""

import sys
from pathlib import Path

# `python jobs/x.py` puts jobs/ on sys.path, not the working directory Ray uploaded: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train-actor", *sys.argv[1:]]))
