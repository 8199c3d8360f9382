"""Builders shared by tests: a tiny tokenizer and tiny random actors, saved and loaded like real checkpoints."""

from __future__ import annotations

from pathlib import Path

from coderl_ray.config import ModelConfig
from coderl_ray.data.prompts import build_prompt
from coderl_ray.data.suite import generate_suite


def tiny_suite(n_train: int = 24, n_test: int = 9, seed: int = 0):
    return generate_suite(seed=seed, n_train=n_train, n_test=n_test)


def tiny_actor_dir(tmp: Path, arch: str = "seq2seq", n_train: int = 24, seed: int = 0) -> Path:
    """Train a tokenizer on a small suite, build a random tiny actor of ``arch``, save both to ``tmp/actor``."""
    from coderl_ray.models.actor import build_tiny_actor
    from coderl_ray.models.tokenizer import train_tokenizer

    train, _ = tiny_suite(n_train)
    texts = [build_prompt(p) for p in train] + [p["solutions"][0] for p in train]
    tok = train_tokenizer(texts, tmp / "tokenizer", vocab_size=400)
    cfg = ModelConfig(arch=arch, d_model=32, d_ff=64, num_layers=1, num_heads=2, max_source_tokens=256,
                      max_target_tokens=128)
    model = build_tiny_actor(cfg, tok, seed=seed)
    dest = tmp / f"actor_{arch}"
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


# --- stage drivers that kill themselves mid-write ---------------------------------------------------------------
# A test cannot time a kill from outside reliably on a loaded machine (the results of a small run arrive in one
# burst), so the driver SIGKILLs itself at a chosen point. It joins the test session's Ray cluster (a Ray of its own
# would cost its start-up each time): when the driver dies, Ray ends its job's actors, and their sandbox processes die
# with them (PR_SET_PDEATHSIG).

# The driver SIGKILLs itself when the stage has written its whole `.tmp` folder and is about to rename it: the
# latest a kill can land, and the one that would leave the most rows behind to be counted twice.
DIE_AT_RENAME = """
import os, pathlib, signal, sys
rename = pathlib.Path.rename
def die_at_tmp(self, target):
    if self.name.endswith(".tmp"):
        os.kill(os.getpid(), signal.SIGKILL)
    return rename(self, target)
pathlib.Path.rename = die_at_tmp
from coderl_ray.cli import main
sys.exit(main(sys.argv[1:]))
"""

# The execute command's driver SIGKILLs itself as it is about to write its 150th result row.
DIE_AT_ROW_150 = """
import os, signal, sys
import coderl_ray.commands.execute as execute
to_record, rows = execute._result_record, []
def die_at_150(row):
    rows.append(row["sample_id"])
    if len(rows) == 150:
        os.kill(os.getpid(), signal.SIGKILL)
    return to_record(row)
execute._result_record = die_at_150
from coderl_ray.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_killed(program: str, args: list[str], log: Path, timeout: float = 900) -> None:
    """Run ``program`` (one of the above) with the command line ``args`` in a process session of its own, its output
    in ``log`` (a pipe could stay open as long as Ray's processes), and check that it died of its own SIGKILL; then
    SIGKILL whatever is left in its session (nothing but the driver belongs to it when it joined a cluster)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", program, *args], env=env, cwd=ROOT, start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        assert proc.wait(timeout=timeout) == -signal.SIGKILL, log.read_text()[-3000:]
    finally:
        rows = [tuple(map(int, line.split())) for line in
                subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout.splitlines()]
        for pid, sid in rows:
            if sid == proc.pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        proc.wait(timeout=60)
