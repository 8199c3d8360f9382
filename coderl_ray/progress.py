"""One progress bar per stage, in a terminal only.

Ray Data's own bars are off (see :mod:`coderl_ray.ray_runtime`): they show one bar per operator of every dataset,
read and count included, and a log file would get them as hundreds of lines. A stage opens one bar instead::

    with stage_bar("rollout", total=n_programs, unit="program") as bar:
        write_round(bar.track(results), ...)      # rows counted as Ray Data streams them to the writer
        # or, when the driver iterates the rows itself: bar.update(1) per row

Outside a terminal (a log file, ``ray job logs``), or with ``CODERL_VERBOSE=1``, nothing is drawn and ``track``
returns the dataset unchanged; the stage's start and end lines say what happened.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any


def bars_enabled() -> bool:
    from coderl_ray.ray_runtime import verbose

    return sys.stderr.isatty() and not verbose()


class _NoBar:
    def track(self, ds):
        return ds

    def update(self, n: int = 1) -> None:
        pass


class _Bar:
    """A bar drawn by the driver: Ray's tqdm when Ray runs (worker lines it forwards then print above the bar, not
    through it), else tqdm."""

    def __init__(self, desc: str, total: int | None, unit: str):
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            from ray.experimental.tqdm_ray import tqdm

            self._bar = tqdm(desc=desc, total=total, unit=unit)
        else:
            from tqdm import tqdm

            self._bar = tqdm(desc=desc, total=total, unit=unit, file=sys.stderr)
        self._counter = None
        self._shown = 0
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def track(self, ds):
        """``ds`` with a pass-through step that counts its rows into this bar."""
        import ray

        if self._counter is None:
            self._counter = ray.remote(num_cpus=0)(_RowCounter).remote()
            self._poller = threading.Thread(target=self._poll, daemon=True)
            self._poller.start()
        return ds.map_batches(_count_rows, fn_kwargs={"counter": self._counter}, batch_format="pyarrow",
                              zero_copy_batch=True)

    def _poll(self) -> None:
        import ray

        while not self._stop.wait(0.5):
            self._catch_up(ray)

    def _catch_up(self, ray) -> None:
        try:
            seen = ray.get(self._counter.value.remote(), timeout=5)
        except Exception:  # a bar must never fail a stage; the stage's own errors surface where it runs
            return
        if seen > self._shown:
            self._bar.update(seen - self._shown)
            self._shown = seen

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
            import ray

            # The last counts are fire-and-forget calls from the workers: give them a moment to land.
            for _ in range(20):
                self._catch_up(ray)
                if self._bar.total is not None and self._shown >= self._bar.total:
                    break
                time.sleep(0.1)
            ray.kill(self._counter)
        self._bar.close()


class _RowCounter:
    def __init__(self):
        self.n = 0

    def add(self, n: int) -> None:
        self.n += n

    def value(self) -> int:
        return self.n


def _count_rows(batch: Any, counter) -> Any:
    counter.add.remote(batch.num_rows)
    return batch


@contextlib.contextmanager
def stage_bar(desc: str, total: int | None = None, unit: str = "row") -> Iterator[_Bar | _NoBar]:
    if not bars_enabled():
        yield _NoBar()
        return
    bar = _Bar(desc, total, unit)
    try:
        yield bar
    finally:
        bar.close()
