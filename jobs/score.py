"""Score a replay-buffer round with the critic (token-level logits), as a Ray job.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python jobs/score.py \\
        --config configs/tiny.yaml --samples outputs/tiny/buffer/round_0001 \\
        --critic outputs/tiny/models/critic_round_1 --out outputs/tiny/scored/round_1
    python jobs/score.py ... rollout.num_workers=2
"""

import sys
from pathlib import Path

# `python jobs/x.py` puts jobs/ on sys.path, not the working directory Ray uploaded: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
