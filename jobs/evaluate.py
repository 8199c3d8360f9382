"""pass@k, APPS metrics and n@k from execution results, written as a report, as a Ray job.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python jobs/evaluate.py \\
        --problems problems.jsonl --results results.jsonl --out report/ --k 1,5
    python jobs/evaluate.py --problems p.jsonl --results r.jsonl --out report/ --example-results ex.jsonl

The results come from `jobs/generate.py --sampling eval --execute` or `jobs/execute.py`.
"""

import sys
from pathlib import Path

# `python jobs/x.py` puts jobs/ on sys.path, not the working directory Ray uploaded: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
