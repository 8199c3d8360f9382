"""Run sample programs against their problems' unit tests on the sandbox nodes, as a Ray job.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python jobs/execute.py \\
        --problems problems.jsonl --samples samples.jsonl --out results.jsonl
    python jobs/execute.py --problems p.jsonl --samples s.jsonl --out r.jsonl --example-tests --timeout 2
"""

import sys
from pathlib import Path

# `python jobs/x.py` puts jobs/ on sys.path, not the working directory Ray uploaded: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coderl_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["execute", *sys.argv[1:]]))
