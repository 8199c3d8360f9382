"""The pipeline's data and init stages (problems, initial actor, tokenised references) as a Ray job.

    ray job submit --working-dir . -- python jobs/prepare.py --config configs/small-gpu.yaml
    python jobs/prepare.py --config configs/tiny.yaml --out outputs/try data.max_train_problems=100
"""

import sys
from pathlib import Path

# `python jobs/x.py` puts jobs/ on sys.path, not the working directory Ray uploaded: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
