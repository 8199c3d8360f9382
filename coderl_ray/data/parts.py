"""A stage's output folder written one part per work item, so a killed stage resumes with every row once.

    with PartFolder(dest, plan=[item keys and what each holds]) as parts:
        todo = [k for k in keys if not parts.has(k)]       # a rerun skips what a killed run finished
        ... parts.write(key, table) as each item completes ...
    # dest exists only once every item is written (<dest>.tmp is renamed)

Each part is written to a temporary file and moved into place with ``os.replace``, so a part exists whole or not
at all; the folder is renamed when complete, so readers never see a partial stage. ``plan`` (any JSON value that
determines the items, e.g. their problem ids) is stored in the temporary folder: a rerun whose plan differs (other
problems, another config) starts the folder over instead of mixing parts of two runs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

PLAN_FILE = "_plan.json"


class PartFolder:
    def __init__(self, dest: str | Path, plan: Any):
        self.dest = Path(dest)
        self.tmp = self.dest.with_name(self.dest.name + ".tmp")
        text = json.dumps(plan, sort_keys=True, default=str)
        plan_path = self.tmp / PLAN_FILE
        if self.tmp.is_dir() and (not plan_path.is_file() or plan_path.read_text() != text):
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        if not plan_path.is_file():
            plan_path.write_text(text)

    @staticmethod
    def name(key: int) -> str:
        return f"part-{int(key):05d}.parquet"

    def has(self, key: int) -> bool:
        return (self.tmp / self.name(key)).is_file()

    def done_keys(self) -> list[int]:
        return sorted(int(p.name[5:10]) for p in self.tmp.glob("part-*.parquet"))

    def write(self, key: int, table) -> None:
        import pyarrow.parquet as pq

        path = self.tmp / self.name(key)
        partial = path.with_name(path.name + ".partial")
        pq.write_table(table, partial)
        os.replace(partial, path)

    def finish(self) -> Path:
        (self.tmp / PLAN_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.dest, ignore_errors=True)
        self.tmp.rename(self.dest)
        return self.dest

    def __enter__(self) -> PartFolder:
        return self

    def __exit__(self, *exc) -> None:
        pass  # an unfinished folder stays for the rerun to resume
