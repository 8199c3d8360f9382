"""Sample programs from an actor as a Ray job: samples, executed results, or a replay-buffer round.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python jobs/generate.py \\
        --config configs/tiny.yaml --actor outputs/tiny/models/actor_sft --buffer outputs/tiny/buffer --round 1
    python jobs/generate.py --config configs/tiny.yaml --actor outputs/tiny/models/actor_sft --split test \\
        --sampling eval --execute --out results.jsonl rollout.num_workers=2
"""

import sys
from pathlib import Path

# `python jobs/x.py` puts jobs/ on sys.path, not the working directory Ray uploaded: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
