"""Which sandbox isolation tiers this machine must provide, for the tests that run in every tier.

A tier that cannot start is a skip only where it is not expected to work. It is expected where its requirements are
met: ``process`` everywhere (it needs nothing beyond Linux); ``namespace`` as root with ``CAP_SYS_ADMIN`` (not in a
default Docker container, whose seccomp profile refuses new namespaces); ``bwrap`` there too when ``bwrap`` is
installed (CI installs it). ``CODERL_SANDBOX_TIERS=namespace,process`` states the list explicitly. A non-root user
with unprivileged user namespaces gets ``namespace`` too, but whether the kernel allows them is not checked here.
"""

from __future__ import annotations

import os
import shutil

import pytest

from coderl_ray.sandbox import Sandbox

TIERS = ("namespace", "process", "bwrap")
CAP_SYS_ADMIN = 21


def _root_with_sys_admin() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    except OSError:
        pass
    return False


def expected_tiers() -> set[str]:
    listed = os.environ.get("CODERL_SANDBOX_TIERS")
    if listed is not None:
        return {t.strip() for t in listed.split(",") if t.strip()}
    tiers = {"process"}
    if _root_with_sys_admin():
        tiers.add("namespace")
        if shutil.which("bwrap"):
            tiers.add("bwrap")
    return tiers


def open_sandbox(tier: str) -> Sandbox:
    """A started sandbox of ``tier``; fails the test if this machine must provide the tier, else skips it."""
    sandbox = Sandbox(tier)
    try:
        info = sandbox.info
    except Exception as exc:
        sandbox.close()
        if tier in expected_tiers():
            pytest.fail(f"sandbox tier {tier!r} is expected to work here ({sorted(expected_tiers())}; see "
                        f"tests/sandbox_tiers.py) but did not start: {exc}")
        pytest.skip(f"tier {tier} unavailable here: {exc}")
    assert info["tier"] == tier
    return sandbox
