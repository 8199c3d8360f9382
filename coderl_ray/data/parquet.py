"""Reading the pipeline's Parquet folders as Ray Datasets, with the Ray Data reader that suits their size.

Ray Data 2.60 has two Parquet readers. Its default, DataSourceV2, begins every read that runs with a task that reads
the files' footers with actors: about 2 s on 2 cores whatever the size, while the stages read small folders (a
replay-buffer round of a few thousand rows, the reference programs, a scored round) many times per run. The older
reader (V1) has no such start-up cost but is 2-3x slower than V2 at 100,000 rows. Folders on a local disk below
``CODERL_SMALL_PARQUET_BYTES`` (default 4 MiB, ~20,000 buffer rows; the two break even near 6 MiB) are therefore
read with V1, everything else with Ray Data's own choice; measured in ``benchmarks/parquet_reads.py``
(docs/benchmarks.md). Set the variable to 0 to always leave the choice to Ray Data (``RAY_DATA_USE_DATASOURCE_V2``
then decides, as Ray documents).
"""

from __future__ import annotations

import os
from pathlib import Path

SMALL_BYTES_ENV = "CODERL_SMALL_PARQUET_BYTES"
DEFAULT_SMALL_BYTES = 4 * 2**20


def small_bytes() -> int:
    return int(os.environ.get(SMALL_BYTES_ENV, DEFAULT_SMALL_BYTES))


def local_size(paths: str | list[str], limit: int) -> int | None:
    """Bytes of the files under ``paths`` (folders or files), counted up to just past ``limit``; None when a path is
    not on the local disk (a URI, or missing: Ray Data then reports it)."""
    total = 0
    for p in [paths] if isinstance(paths, str) else paths:
        path = Path(p)
        if "://" in str(p) or not path.exists():
            return None
        for f in [path] if path.is_file() else path.rglob("*"):
            if f.is_file():
                total += f.stat().st_size
                if total > limit:
                    return total
    return total


def read_parquet(paths: str | list[str], **kwargs):
    """``ray.data.read_parquet(paths, **kwargs)``, through V1 when the files are small and local."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    limit = small_bytes()
    size = local_size(paths, limit) if ctx.use_datasource_v2 and limit > 0 and "filesystem" not in kwargs else None
    if size is None or size > limit:
        return ray.data.read_parquet(paths, **kwargs)
    # The reader is chosen when the read is planned, so switching for this call alone is enough.
    ctx.use_datasource_v2 = False
    try:
        return ray.data.read_parquet(paths, **kwargs)
    finally:
        ctx.use_datasource_v2 = True
