"""The worker's handle on its zygote: start it in an isolation tier, ask it to fork children, release them.

One zygote per :class:`~coderl_ray.sandbox.runner.Sandbox` (so one per Ray actor). It is started with an
environment built here from scratch - none of the worker's variables (tokens, keys) reach it or its children -
and dies with the worker (``PR_SET_PDEATHSIG`` and end-of-file on its control socket).
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HARNESS = Path(__file__).with_name("_harness.py")
TIERS = ("namespace", "process", "bwrap")
# "lean" preimports the standard library staples; "full" adds numpy and unittest.mock (APPS's prelude needs them).
FLAVORS = ("lean", "full")

# System directories a Python interpreter needs to import modules and load extension libraries.
_SYSTEM_READ_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/etc/ld.so.cache",
                      "/etc/localtime")


class ZygoteError(RuntimeError):
    """The sandbox machinery failed (not the program): the result is an ``infra_error`` and the run is retried."""


class TierUnavailable(ZygoteError):
    """The requested isolation tier cannot run here (e.g. ``bwrap`` is not installed)."""


def read_paths() -> list[str]:
    """What children may read: system libraries and the interpreter's installation, nothing of the project."""
    paths: list[str] = []
    candidates = list(_SYSTEM_READ_PATHS)
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        candidates.append(os.path.realpath(prefix))
    for entry in sys.path:
        if entry.endswith(("site-packages", "dist-packages")) and os.path.isdir(entry):
            candidates.append(os.path.realpath(entry))
    for path in candidates:
        if not os.path.lexists(path) or path in paths:
            continue
        paths.append(path)
    # Drop paths inside another (a bind into a read-only bind would fail); top-level symlinks (/lib -> usr/lib) stay,
    # the namespace tier recreates them as symlinks.
    def covered(p: str) -> bool:
        return any(q != p and not os.path.islink(q) and p.startswith(q.rstrip("/") + "/") for q in paths)

    return [p for p in paths if not covered(p)]


def _zygote_env() -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",  # set iteration order of strings is the same in every run
        "PYTHONUTF8": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        # A forked child must not inherit a BLAS thread pool (fork copies only the calling thread).
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    for key in ("LD_LIBRARY_PATH", "PYTHONHOME"):  # needed by some interpreter installations, never secrets
        if key in os.environ:
            env[key] = os.environ[key]
    return env


_STARTERS: dict[int, "concurrent.futures.ThreadPoolExecutor"] = {}
_STARTERS_LOCK = threading.Lock()


def _popen_from_a_lasting_thread(*args, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` run on a thread that lives as long as this process.

    The zygote asks the kernel to kill it when its parent dies (``PR_SET_PDEATHSIG``), and Linux takes the parent to
    be the *thread* that forked it: a zygote started by a pool thread (``execute_many(max_workers=2)``) died when
    the pool shut down, and the next program paid for a new one. One starter thread per process (per pid: a forked
    worker gets its own)."""
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(*args, **kwargs)
    import concurrent.futures

    with _STARTERS_LOCK:
        starter = _STARTERS.get(os.getpid())
        if starter is None:
            starter = _STARTERS[os.getpid()] = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="coderl-zygote-starter")
    return starter.submit(subprocess.Popen, *args, **kwargs).result()


class Zygote:
    """A running zygote. Thread-safe: requests are serialised, children run concurrently."""

    def __init__(self, tier: str = "namespace", sandbox_uid: int = 65534, start_timeout_s: float = 60.0,
                 flavor: str = "lean"):
        if tier not in TIERS:
            raise ValueError(f"unknown sandbox tier {tier!r}; expected one of {', '.join(TIERS)}")
        if flavor not in FLAVORS:
            raise ValueError(f"unknown zygote flavor {flavor!r}; expected one of {', '.join(FLAVORS)}")
        self.tier = tier
        self.flavor = flavor
        self.sandbox_uid = sandbox_uid
        self.start_timeout_s = start_timeout_s
        self.info: dict = {}
        self._lock = threading.Lock()
        self._finished: list[int] = []  # children to release with the next spawn request
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._stderr = None
        self._start()

    # lifecycle --------------------------------------------------------------------------------------------------
    def _command(self, ctl_fd: int, paths: list[str]) -> list[str]:
        inner_tier = "process" if self.tier == "bwrap" else self.tier
        opts = {"tier": inner_tier, "read_paths": paths, "sandbox_uid": self.sandbox_uid, "flavor": self.flavor}
        cmd = [sys.executable, "-s", "-B", str(HARNESS), str(ctl_fd), json.dumps(opts)]
        if self.tier != "bwrap":
            return cmd
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise TierUnavailable("sandbox tier 'bwrap' needs bubblewrap (`apt-get install bubblewrap`)")
        args = [bwrap, "--die-with-parent", "--new-session", "--unshare-all", "--cap-drop", "ALL",
                "--hostname", "sandbox", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        if os.geteuid() == 0:
            # Run as root, bwrap keeps uid 0 inside. Without a user namespace (where only uid 0 would be mapped) and
            # with the capabilities to switch uids and manage scratch directories, the zygote runs each program as
            # an unprivileged uid (which drops every capability), so no program runs as root.
            args[3:4] = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
            keep = ["CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL"]
            at = args.index("ALL") + 1
            args[at:at] = [x for cap in keep for x in ("--cap-add", cap)]
        for path in paths + [str(HARNESS.parent)]:
            if os.path.islink(path) and os.path.dirname(path) == "/":
                args += ["--symlink", os.readlink(path), path]
            else:
                args += ["--ro-bind", os.path.realpath(path), path]
        return args + ["--chdir", "/", "--"] + cmd

    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._stderr = tempfile.TemporaryFile()
        try:
            cmd = self._command(child.fileno(), read_paths())
            self._proc = _popen_from_a_lasting_thread(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
                pass_fds=(child.fileno(),), env=_zygote_env(), cwd="/", start_new_session=True,
            )
        except OSError as exc:
            parent.close()
            raise ZygoteError(f"cannot start the sandbox zygote: {exc}") from None
        finally:
            child.close()
        self._sock = parent
        parent.settimeout(self.start_timeout_s)
        try:
            hello = parent.recv(1 << 16)
        except OSError as exc:
            hello = b""
            reason = str(exc)
        else:
            reason = "it exited"
        if not hello:
            tail = self._stderr_tail()
            self.close()
            if self.tier == "bwrap" and tail.startswith("bwrap:"):
                # bubblewrap itself refused (no namespaces here, e.g. a container's default seccomp profile)
                raise TierUnavailable(f"sandbox tier 'bwrap' is unavailable here: {tail}")
            raise ZygoteError(f"sandbox zygote ({self.tier}) did not start: {reason}; {tail}")
        info = json.loads(hello)
        if not info.get("ok"):
            self.close()
            raise TierUnavailable(f"sandbox tier {self.tier!r} is unavailable here: {info.get('error')}")
        info["tier"] = self.tier
        self.info = info
        parent.settimeout(30.0)

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            return self._stderr.read()[-2000:].decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._sock is not None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        sock, proc = self._sock, self._proc
        self._sock = self._proc = None
        if sock is not None:
            sock.close()  # end of file: the zygote kills its children, removes its scratch folders and exits
        if proc is not None:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, 9)
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # A zygote that died without cleaning up (killed, or the tier's host folder outlived it) leaves its scratch
        # base behind; the process tier's lives on the host's /tmp.
        base = self.info.get("scratch_base") if self.info and self.tier == "process" else ""
        if base and os.path.isdir(base):
            shutil.rmtree(base, ignore_errors=True)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # requests ---------------------------------------------------------------------------------------------------
    def _request(self, req: dict, fds: list[int] = (), reply: bool = True) -> dict | None:
        with self._lock:
            sock = self._sock
            if sock is None:
                raise ZygoteError("the sandbox zygote is not running")
            try:
                data = marshal.dumps(req)  # the control channel carries only the worker's and the zygote's data
                if fds:
                    socket.send_fds(sock, [data], list(fds))
                else:
                    sock.send(data)
                if not reply:
                    return None
                answer = sock.recv(1 << 16)
            except OSError as exc:
                raise ZygoteError(f"lost the sandbox zygote: {exc}") from None
        if not answer:
            raise ZygoteError(f"the sandbox zygote exited; {self._stderr_tail()}")
        out = marshal.loads(answer)
        if "error" in out:
            raise ZygoteError(f"sandbox zygote: {out['error']}")
        return out

    def spawn(self, mode: str, limits: dict, fds: dict[int, int]) -> int:
        """Fork a child running ``mode`` with ``fds`` ({fd number in the child: fd here}); returns its pid."""
        with self._lock:
            finished, self._finished = self._finished, []
        req = {"op": "spawn", "mode": mode, "limits": limits, "fds": list(fds), "release": finished}
        reply = self._request(req, list(fds.values()))
        return int(reply["pid"])

    def release(self, pid: int, finished: bool = False) -> None:
        """Kill the child (and, by its PID namespace or process group, all it started); reaped in the background.

        ``finished``: the child has delivered everything and is exiting by itself, so the kill is only cleanup; it
        then rides on the next spawn request (one wake-up of the zygote per program instead of two)."""
        if finished:
            with self._lock:
                self._finished.append(pid)
                if len(self._finished) < 32:
                    return
                pid, self._finished = self._finished, []
            self._request({"op": "release", "pid": pid}, reply=False)
            return
        self._request({"op": "release", "pid": pid}, reply=False)

    def wait(self, pid: int) -> tuple[int, float]:
        """Kill the child if it still runs and return its wait status and CPU seconds."""
        reply = self._request({"op": "wait", "pid": pid})
        return int(reply["status"]), float(reply["cpu"])

    def host_pid(self, pid: int) -> int | None:
        """The pid of child ``pid`` (a pid in the zygote's namespace) in this process's ``/proc``, or None where the
        kernel cannot say (no ``pidfd_open`` before Linux 5.3, or no ``Pid:`` line in a pidfd's fdinfo). The zygote
        sends a pidfd; the kernel shows its pid in the namespace of the ``/proc`` instance that is read."""
        with self._lock:
            sock = self._sock
            if sock is None:
                raise ZygoteError("the sandbox zygote is not running")
            try:
                sock.send(marshal.dumps({"op": "pidfd", "pid": pid}))
                answer, fds, _, _ = socket.recv_fds(sock, 1 << 16, 1)
            except OSError as exc:
                raise ZygoteError(f"lost the sandbox zygote: {exc}") from None
        if not answer:
            raise ZygoteError(f"the sandbox zygote exited; {self._stderr_tail()}")
        try:
            if not fds or "error" in marshal.loads(answer):
                return None
            with open(f"/proc/self/fdinfo/{fds[0]}") as f:
                for line in f:
                    if line.startswith("Pid:"):
                        found = int(line.split()[1])
                        return found if found > 0 else None
            return None
        except (OSError, ValueError):
            return None
        finally:
            for fd in fds:
                os.close(fd)

    def ping(self) -> dict:
        return self._request({"op": "ping"})
