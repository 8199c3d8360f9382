"""How often does the original CodeRL critic's pooling (max over all 512 padded positions) change a program's class
against pooling over the program's own tokens? Read from the critic scores its repository ships.

    git clone https://github.com/salesforce/CodeRL /tmp/CodeRL
    python benchmarks/original_critic_pooling.py /tmp/CodeRL

Each ``data/APPS/train/*/gen_solutions_critic_scores.pkl`` holds, per sampled program, the error head's logits at
every one of the 512 target positions (``error_hidden_states`` [N, 512, 4]), the target ids padded with -100
(``code``) and the class the original predicted (``pred_error_type``). The files are pickles; they are read with an
unpickler that admits numpy arrays and nothing else.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct")}


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays are expected here")
        return super().find_class(module, name)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    files = sorted(Path(sys.argv[1]).glob("data/APPS/train/*/gen_solutions_critic_scores.pkl"))
    if not files:
        print(f"no gen_solutions_critic_scores.pkl under {sys.argv[1]}/data/APPS/train")
        return 1
    total = changed = matches_original = 0
    for path in files:
        with path.open("rb") as f:
            scores = _NumpyOnly(f).load()
        for logits, code, pred in zip(np.asarray(scores["error_hidden_states"]), scores["code"],
                                      scores["pred_error_type"]):
            real = np.asarray(code) != -100
            all_positions, own_tokens = logits.max(0).argmax(), logits[real].max(0).argmax()
            total += 1
            changed += int(all_positions != own_tokens)
            matches_original += int(all_positions == pred)
    print(f"{len(files)} problems, {total} programs: the class from all 512 positions differs from the class from "
          f"the program's own tokens for {changed}; it equals the original's stored prediction for "
          f"{matches_original}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
