"""Evaluation metrics as small pure functions (no Ray, no torch)."""

from __future__ import annotations

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021), Eq. 1: 1 - C(n-c, k) / C(n, k), computed as a stable product.

    n samples were drawn, c of them passed; k <= n.

    >>> pass_at_k(5, 1, 1)  # one of five passes: 1/5
    0.2
    >>> round(pass_at_k(5, 2, 2), 4)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    0.7
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))
