"""Run one untrusted program against a problem's unit tests; no Ray here.

    from coderl_ray.sandbox import execute, SandboxLimits
    result = execute(problem, code, sample_id="p1-s0", limits=SandboxLimits(timeout_s=2))

This is the skeleton's runner: one fresh Python subprocess per program, with a wall-clock timeout and its process
group killed on exit. The hardened sandbox (resource limits, containment, warm forkserver) replaces it behind this
same function signature.
"""

from coderl_ray.sandbox.limits import SandboxLimits
from coderl_ray.sandbox.runner import execute, execute_many

__all__ = ["SandboxLimits", "execute", "execute_many"]
