"""Run untrusted programs against a problem's unit tests, safely and fast; no Ray here.

    from coderl_ray.sandbox import execute, SandboxLimits
    result = execute(problem, code, sample_id="p1-s0", limits=SandboxLimits(timeout_s=2))

Programs are forked from a warm zygote (a fork server that has already imported what programs commonly use) into
an isolated child: its own PID, mount and network namespaces where the kernel allows them, an unprivileged uid,
resource limits and a seccomp filter. Verdicts are decided outside any process that ran candidate code.
docs/sandbox.md has the threat model, the isolation tiers and the two comparison modes.
"""

from coderl_ray.sandbox.compare import apps_stdout_equal, apps_value_equal, strict_stdout_equal, strict_value_equal
from coderl_ray.sandbox.limits import SandboxLimits
from coderl_ray.sandbox.runner import Sandbox, default_sandbox, execute, execute_many
from coderl_ray.sandbox.zygote import TierUnavailable, ZygoteError

__all__ = [
    "Sandbox", "SandboxLimits", "TierUnavailable", "ZygoteError", "apps_stdout_equal", "apps_value_equal",
    "default_sandbox", "execute", "execute_many", "strict_stdout_equal", "strict_value_equal",
]
