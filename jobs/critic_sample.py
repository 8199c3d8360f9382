"""Critic sampling (refine / repair within a budget of programs per problem, n@k) as a Ray job.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python jobs/critic_sample.py \\
        --config configs/tiny.yaml --problems outputs/tiny/data/test.jsonl \\
        --actor outputs/tiny/models/actor_round_2 --critic outputs/tiny/models/critic_round_2 --out outputs/cs_run
    python jobs/critic_sample.py ... --repair outputs/tiny/models/repair --budget 20 --passes 3 rollout.num_workers=2
"""

import sys
from pathlib import Path

# `python jobs/x.py` puts jobs/ on sys.path, not the working directory Ray uploaded: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["critic-sample", *sys.argv[1:]]))
