"""Deliberate CPU oversubscription, for the tests and the benchmark that check verdicts do not depend on load."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def cpu_burners(per_core: int = 4) -> Iterator[list[int]]:
    """``per_core`` x the machine's cores busy-looping Python processes for the duration of the block.

    Each burner is a session of its own: with the kernel's autogroup scheduling on (most desktop and cloud images),
    CPU time is shared fairly between sessions first, and every sandboxed program runs in a session of its own
    too; burners sharing one session would together get no more CPU than a single program.
    """
    procs = [subprocess.Popen([sys.executable, "-c", "while True:\n    pass"], start_new_session=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(per_core * (os.cpu_count() or 1))]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait()
