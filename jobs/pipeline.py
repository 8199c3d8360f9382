"""Run the whole CodeRL pipeline as a Ray job (or locally, starting Ray in-process when no cluster runs).

    ray job submit --working-dir . -- python jobs/pipeline.py --config configs/tiny.yaml rl.rounds=3
    python jobs/pipeline.py --config configs/tiny.yaml output_dir=outputs/try
"""

import sys
from pathlib import Path

# `python jobs/x.py` puts jobs/ on sys.path, not the working directory Ray uploaded: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
