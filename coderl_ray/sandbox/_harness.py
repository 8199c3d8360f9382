"""The process side of the sandbox: the warm zygote (a fork server) and what each forked child runs.

The worker starts this file as a script (``python -s _harness.py <fd> <options json>``); the zygote isolates itself
once (namespaces, a minimal read-only filesystem, or the weaker process tier), imports what programs commonly use,
and then forks one child per request. A child drops its privileges, applies resource limits and a seccomp filter,
reads its job from a memfd and reports on a result pipe that only the worker reads.

The worker imports this module too, for the APPS source rewrite and prelude. Hence the rules for this file and its
siblings ``wire.py`` (framing, value codec) and ``isolation.py`` (namespaces, capabilities, seccomp, Landlock):
standard library only (numpy is optional), nothing from ``coderl_ray``, no side effects at import time. Run as a
script, it imports the siblings as top-level modules (its folder is ``sys.path[0]``).

Invariants the security model rests on (docs/sandbox.md):

* Expected outputs never enter the zygote or any child that runs candidate code. The zygote only ever sees limits
  and file descriptors; programs, inputs and assert code travel through memfds read by the child itself.
* No verdict is computed in a process that ran candidate code. Children report plain data (stdout bytes, encoded
  return values); the worker or a separate judge process, which never executes candidate code, decides.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import gc
import io
import json
import marshal
import math
import os
import resource
import signal
import socket
import sys
import threading
import time
import types

try:
    from .isolation import (
        AUDIT_ARCH, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS, MNT_DETACH,
        MS_BIND, MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
        MS_RELATIME, MS_REMOUNT, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, _lib, apply_landlock,
        cap_last, drop_bounding_set, drop_capabilities, install_seccomp, landlock_abi, mount, pivot_root, prctl,
        prepare_seccomp, setns, umount2, unshare,
    )
    from .wire import (
        _HEADER, DecodeError, EncodeError, MessageReader, ProtocolError, _type_name, decode, encode, pack, write_msg,
    )
except ImportError:  # run as a script by the zygote's launcher: the siblings are top-level modules
    from isolation import (  # type: ignore[no-redef]
        AUDIT_ARCH, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS, MNT_DETACH,
        MS_BIND, MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
        MS_RELATIME, MS_REMOUNT, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, _lib, apply_landlock,
        cap_last, drop_bounding_set, drop_capabilities, install_seccomp, landlock_abi, mount, pivot_root, prctl,
        prepare_seccomp, setns, umount2, unshare,
    )
    from wire import (  # type: ignore[no-redef]
        _HEADER, DecodeError, EncodeError, MessageReader, ProtocolError, _type_name, decode, encode, pack, write_msg,
    )

# --- the zygote ----------------------------------------------------------------------------------------------------

# Modules imported once in the zygote so that forked programs find them warm: the competitive-programming staples
# and what this file imports lazily (a child running as another uid may not be able to read the installation).
# The "full" flavour adds numpy and unittest.mock (the APPS harness's prelude and stdin emulation); they make every
# fork ~30% dearer (more mappings to copy and tear down), so a sandbox forks from a lean zygote unless needed.
PREIMPORT_LEAN = (
    "array", "bisect", "builtins", "cmath", "collections", "copy", "dataclasses", "datetime", "decimal", "enum",
    "fractions", "functools", "heapq", "io", "itertools", "json", "math", "operator", "queue", "random", "re",
    "statistics", "string", "sys", "threading", "time", "traceback", "types", "typing", "atexit", "ast",
    "numbers", "struct", "textwrap", "importlib", "resource", "fcntl", "select", "errno", "codecs", "linecache",
    "tokenize",
)
PREIMPORT_FULL = PREIMPORT_LEAN + ("unittest.mock", "numpy")

SANDBOX_UID = 65534  # nobody: what a root worker's children become
EXIT_SETUP_FAILED = 70


def _fork_function():
    """``fork()`` called through ``ctypes.PyDLL`` (the GIL stays held) instead of ``os.fork``.

    ``os.fork`` runs CPython's after-fork machinery in the child (thread-state reinitialisation and the Python
    callbacks registered with ``os.register_at_fork``: threading, random's reseed, ...). In a zygote that is
    single-threaded and holds no locks at fork time that work restores nothing, yet its memory writes are the
    largest share of a child's cost here: measured on this project's 2-core VM, a child that exits at once costs
    ~1.0 ms of CPU after ``os.fork`` and ~0.3 ms after the raw call (page faults 224 -> 43). Consequences, all
    documented: the child inherits ``random``'s state (every program sees the same random sequence, which makes
    verdicts reproducible), and builds where this is not known to be safe (free-threaded CPython) use ``os.fork``.
    """
    if getattr(sys, "_is_gil_enabled", lambda: True)() is False or os.environ.get("CODERL_SANDBOX_OS_FORK"):
        return os.fork
    try:
        raw = ctypes.PyDLL(None, use_errno=True).fork
    except (OSError, AttributeError):
        return os.fork
    raw.restype = ctypes.c_int
    raw.argtypes = []

    def fork() -> int:
        pid = raw()
        if pid < 0:
            err = ctypes.get_errno() or 11
            raise OSError(err, f"fork: {os.strerror(err)}")
        return pid

    return fork


class _Zygote:
    def __init__(self, ctl: socket.socket, opts: dict):
        self.ctl = ctl
        self.opts = opts
        self.tier = opts["tier"]
        self.pidns_fd = -1
        self.uid = None  # uid children switch to (root worker only)
        self.child_uid = os.getuid()
        self.scratch_base = ""
        self.landlock = 0
        self.seccomp = AUDIT_ARCH is not None
        self.active = {}  # pid -> scratch dir ('' in the namespace tier); children not yet released by the worker
        self.released = {}
        self.counter = 0
        self.read_paths = [p for p in opts.get("read_paths", []) if os.path.exists(p)]
        # Each program gets a private tmpfs here (namespace tier). Normally /tmp; but a Python installed under
        # /tmp (a venv in /tmp/checkout/.venv) is bound read-only inside /tmp, and a tmpfs over it would hide it.
        under_tmp = any(q == "/tmp" or q.startswith("/tmp/")
                        for p in self.read_paths for q in (p, os.path.realpath(p)))
        self.tmp = "/sandbox-tmp" if under_tmp else "/tmp"
        self.fork = _fork_function()
        self.devnull = -1

    # bootstrap ------------------------------------------------------------------------------------------------
    def bootstrap(self) -> dict:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if self.tier == "namespace":
            self._enter_namespaces()
        else:
            self._prepare_process_tier()
        for name in PREIMPORT_FULL if self.opts.get("flavor") == "full" else PREIMPORT_LEAN:
            try:
                __import__(name)
            except Exception:
                pass
        if self.tier != "namespace" and self.uid is not None:
            self._reroute_unreachable_imports()
        # The process tier's setup asked tempfile for a directory, which caches the zygote's; a child must compute
        # it from its own TMPDIR (its scratch directory), or tempfile.TemporaryFile() fails outside the scratch.
        if "tempfile" in sys.modules:
            sys.modules["tempfile"].tempdir = None
        # Work every child would otherwise repeat (a fork copies memory lazily, so each page a child touches costs
        # a copy): the bounding set is inherited, and in the namespace tier every child is PID 1, so its seccomp
        # filter and environment are the same for all.
        if self.opts.get("flavor") == "full":
            try:
                import unittest.mock

                unittest.mock.mock_open(read_data="")  # computes and caches the file spec once, here
            except Exception:
                pass
        drop_bounding_set()
        if self.seccomp:
            prepare_seccomp()
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp",
                           "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"})
        _FRESH_STREAMS.append((_text_stdio(0, "r"), _text_stdio(1, "w"), _text_stdio(2, "w")))
        _FRESH_MODULES.append(_new_module("__main__", register=False))
        signal.signal(signal.SIGXCPU, _on_sigxcpu)  # inherited by every child; the zygote has no CPU limit
        sys.argv = ["solution.py"]
        import random

        random.seed(0)  # children are raw forks and inherit this state: every program sees the same sequence
        self._reserve_low_fds()
        atexit._clear()
        gc.collect()
        gc.freeze()
        # The zygote must not be ptrace-able or readable through /proc by its (same-uid) children.
        try:
            prctl(PR_SET_DUMPABLE, 0)
        except OSError:
            pass
        return {"ok": True, "tier": self.tier, "pid": os.getpid(), "uid_drop": self.uid is not None,
                "seccomp": self.seccomp, "landlock": self.landlock, "userns": getattr(self, "userns", False),
                "scratch_base": self.scratch_base}

    def _can_setuid(self) -> bool:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("CapEff:"):
                        return bool(int(line.split()[1], 16) & (1 << 7))  # CAP_SETUID
        except OSError:
            pass
        return os.geteuid() == 0

    def _enter_namespaces(self) -> None:
        uid, gid = os.getuid(), os.getgid()
        can_setuid = self._can_setuid()
        flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
        self.userns = False
        try:
            unshare(flags)
        except PermissionError:
            # Not privileged: a user namespace grants the capabilities over the new namespaces (Linux >= 3.8 where
            # unprivileged user namespaces are enabled).
            unshare(flags | CLONE_NEWUSER)
            self.userns = True
            can_setuid = False
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{uid} {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{gid} {gid} 1")
        if can_setuid:
            self.uid = int(self.opts.get("sandbox_uid", SANDBOX_UID))
            self.child_uid = self.uid
        cap_last()
        pid = os.fork()
        if pid:
            # The outer process only waits: the inner one is PID 1 of the new PID namespace, so when it dies the
            # kernel kills every process of every program it started.
            self.ctl.close()
            _, status = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF if hasattr(os, "waitstatus_to_exitcode") else 1)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
        self._build_root()
        try:
            _lib().sethostname(b"sandbox", 7)
        except Exception:
            pass

    def _build_root(self) -> None:
        """A tmpfs root holding read-only binds of the Python installation and system libraries, /dev/null and
        friends, and an empty /tmp; the host's root is unmounted from this mount namespace (bwrap's recipe)."""
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        base = "/tmp"
        mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        os.chdir(base)
        os.mkdir("oldroot")
        os.mkdir("newroot")
        pivot_root(".", "oldroot")
        os.chdir("/")
        mount("tmpfs", "/newroot", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for path in self.opts.get("read_paths", []):
            src = "/oldroot" + os.path.realpath(path)
            dst = "/newroot" + path
            if os.path.islink("/oldroot" + path) and os.path.dirname(path) == "/":
                os.symlink(os.readlink("/oldroot" + path), dst)
                continue
            if not os.path.exists(src):
                continue
            os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
            if os.path.isdir(src):
                os.makedirs(dst, mode=0o755, exist_ok=True)
            elif not os.path.exists(dst):
                open(dst, "w").close()
            mount(src, dst, None, MS_BIND | MS_REC)
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
            st = os.statvfs(dst)
            for st_flag, ms_flag in ((8, MS_NOEXEC), (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
                if st.f_flag & st_flag:
                    flags |= ms_flag
            mount(None, dst, None, flags)
        os.makedirs("/newroot/dev", mode=0o755, exist_ok=True)
        for dev in ("null", "zero", "full", "random", "urandom"):
            if os.path.exists("/oldroot/dev/" + dev):
                open("/newroot/dev/" + dev, "w").close()
                mount("/oldroot/dev/" + dev, "/newroot/dev/" + dev, None, MS_BIND)
        os.makedirs("/newroot" + self.tmp, 0o755, exist_ok=True)
        os.mkdir("/newroot/oldroot")
        pivot_root("/newroot", "/newroot/oldroot")
        os.chdir("/")
        umount2("/oldroot", MNT_DETACH)
        os.rmdir("/oldroot")
        mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        sys.path[:] = [p for p in sys.path if p and os.path.isdir(p)]

    def _prepare_process_tier(self) -> None:
        cap_last()
        self.userns = False
        if self._can_setuid():
            self.uid = int(self.opts.get("sandbox_uid", SANDBOX_UID))
            self.child_uid = self.uid
        # Not tempfile.mkdtemp: tempfile drags shutil, zlib, bz2 and lzma into the zygote, and every mapping makes
        # each fork dearer.
        self.scratch_base = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"coderl-sandbox-{os.urandom(6).hex()}")
        os.mkdir(self.scratch_base, 0o711)
        os.chmod(self.scratch_base, 0o711)
        self.landlock = landlock_abi() if self.opts.get("landlock", True) else 0

    def _reroute_unreachable_imports(self) -> None:
        """Let programs import from an installation their uid cannot reach.

        As root, the process tier runs programs as an unprivileged uid. With the interpreter in a directory other
        users may not traverse (a pyenv under ``/root``, 0700), every module the zygote did not preload would fail
        to import. The zygote opens each such read path once (``O_PATH``), children inherit the descriptor, and
        import paths are rewritten to ``/proc/self/fd/N/...``: a lookup through that link starts at the opened
        directory, so only the permissions below it apply (world-readable in any normal installation). Landlock
        still decides what may be read; the namespace tier needs none of this (it rebuilds the path's parents).
        """
        import fcntl

        routes = []
        for path in self.read_paths:
            real = os.path.realpath(path)
            if not os.path.isdir(real) or _others_can_reach(real):
                continue
            fd = os.open(real, os.O_PATH | os.O_DIRECTORY)
            kept = fcntl.fcntl(fd, fcntl.F_DUPFD, 30)  # clear of the roles 0-6 that _place_fds assigns
            os.close(fd)
            _INHERITED_FDS.append(kept)
            routes.append((real.rstrip("/") + "/", f"/proc/self/fd/{kept}/"))
        if not routes:
            return

        def reroute(entry):
            if not isinstance(entry, str):
                return entry
            real = os.path.realpath(entry) + "/"
            for prefix, via in routes:
                if real.startswith(prefix):
                    return (via + real[len(prefix):]).rstrip("/")
            return entry

        sys.path[:] = [reroute(p) for p in sys.path]
        for module in list(sys.modules.values()):
            paths = getattr(module, "__path__", None)
            if type(paths) is list:
                paths[:] = [reroute(p) for p in paths]
        sys.path_importer_cache.clear()

    def _reserve_low_fds(self) -> None:
        """Keep fds 3..MAX_ROLE occupied, so that every descriptor received with a request is numbered above the
        roles a child gives them: the child then places them with one dup2 each. Also keeps /dev/null open for
        the standard fds a child is not given."""
        self.devnull = fcntl.fcntl(os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC), fcntl.F_DUPFD_CLOEXEC, 10)
        _INHERITED_FDS.append(self.devnull)
        for fd in range(3, MAX_ROLE + 1):
            try:
                fcntl.fcntl(fd, fcntl.F_GETFD)
            except OSError:
                os.dup2(self.devnull, fd, inheritable=False)

    # serving --------------------------------------------------------------------------------------------------
    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        while True:
            self._reap_released()
            try:
                data, fds, _, _ = socket.recv_fds(self.ctl, 1 << 16, 16)
            except InterruptedError:
                continue
            except OSError:
                data, fds = b"", []
            if not data:
                self._shutdown()
            try:
                req = marshal.loads(data)  # only the worker writes here (children never hold this socket)
                op = req.get("op")
                if op == "spawn":
                    reply = self._spawn(req, fds)
                elif op == "release":
                    pids = req["pid"] if isinstance(req["pid"], list) else [req["pid"]]
                    for pid in pids:
                        self._release(int(pid))
                    reply = None
                elif op == "wait":
                    reply = self._wait(int(req["pid"]))
                elif op == "pidfd":
                    reply = self._send_pidfd(int(req["pid"]))
                elif op == "ping":
                    reply = {"pong": True, "active": len(self.active)}
                else:
                    reply = {"error": f"unknown op {op!r}"}
            except Exception as exc:  # a bad request must not kill the zygote; the worker sees the error
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            if reply is not None:
                self.ctl.send(marshal.dumps(reply))

    def _shutdown(self) -> None:
        children = list(self.active) + list(self.released)
        for pid in children:
            self._kill(pid)
        for pid in children:
            # Reaped, not left to the kernel: the CPU time of every program then adds up in the worker's
            # RUSAGE_CHILDREN (benchmarks/verdicts_under_load.py reads it); they were all just sent SIGKILL.
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self._cleanup_scratch()
        os._exit(0)

    def _cleanup_scratch(self) -> None:
        if self.scratch_base:
            _rmtree(self.scratch_base)

    def _kill(self, pid: int) -> None:
        for target in ((-pid,) if self.tier != "namespace" else ()) + (pid,):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass

    def _release(self, pid: int) -> None:
        if pid in self.active:
            self._kill(pid)
            self.released[pid] = self.active.pop(pid)

    def _reap_released(self) -> None:
        for pid in list(self.released):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                scratch = self.released.pop(pid)
                if scratch:
                    _rmtree(scratch)

    def _wait(self, pid: int) -> dict:
        scratch = self.active.pop(pid, None)
        if scratch is None:
            scratch = self.released.pop(pid, None)
        if scratch is None:
            return {"error": f"no child {pid}"}
        self._kill(pid)
        try:
            _, status, usage = os.wait4(pid, 0)
        except ChildProcessError:
            status, usage = 0, None
        if scratch:
            _rmtree(scratch)
        cpu = (usage.ru_utime + usage.ru_stime) if usage else 0.0
        return {"status": status, "cpu": cpu, "maxrss_kb": usage.ru_maxrss if usage else 0}

    def _send_pidfd(self, pid: int) -> dict | None:
        """Hand the worker a pidfd of a child it has not released: the worker reads from it the child's pid in its
        own namespace, to read the child's scheduler statistics (how long it waited for a CPU) in /proc."""
        if pid not in self.active:
            return {"error": f"no child {pid}"}
        fd = os.pidfd_open(pid)
        try:
            socket.send_fds(self.ctl, [marshal.dumps({"ok": True})], [fd])
        finally:
            os.close(fd)
        return None

    def _spawn(self, req: dict, fds: list) -> dict:
        for pid in req.get("release") or ():
            self._release(int(pid))
        roles = [int(r) for r in req["fds"]]
        if len(roles) != len(fds):
            return {"error": f"{len(fds)} fds for {len(roles)} roles"}
        scratch = ""
        if self.tier != "namespace":
            self.counter += 1
            scratch = os.path.join(self.scratch_base, str(self.counter))
            os.mkdir(scratch, 0o700)
            if self.uid is not None:
                os.chown(scratch, self.uid, self.uid)
        # A program allowed to create processes is PID 1 of its own PID namespace: when it exits or is killed, the
        # kernel kills everything it started, whatever process group or session those moved to. Otherwise seccomp
        # refuses fork and the program has nothing to leave behind, so the (small) cost is skipped.
        newpid = self.tier == "namespace" and int(req.get("limits", {}).get("max_processes", 1)) > 1
        if newpid:
            unshare(CLONE_NEWPID)
        try:
            pid = self.fork()
        except BaseException:
            if newpid:
                setns(self.pidns_fd, CLONE_NEWPID)
            raise
        if pid and newpid:
            setns(self.pidns_fd, CLONE_NEWPID)
        if pid == 0:
            code = EXIT_SETUP_FAILED
            try:
                _child_main(self, req, fds, roles, scratch)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                code = EXIT_SETUP_FAILED
            finally:
                os._exit(code)
        self.active[pid] = scratch
        return {"pid": pid}


def _others_can_reach(path: str) -> bool:
    """Whether a user with no relation to the owners may traverse every directory above ``path``."""
    parent = os.path.dirname(path)
    while True:
        try:
            if not os.stat(parent).st_mode & 0o001:
                return False
        except OSError:
            return False
        if parent == "/":
            return True
        parent = os.path.dirname(parent)


def _rmtree(path: str) -> None:
    """Remove a program's scratch folder, whatever modes it left (without shutil: see _prepare_process_tier)."""
    try:
        os.chmod(path, 0o700)
        entries = list(os.scandir(path))
    except OSError:
        entries = []
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                _rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


# --- the child -------------------------------------------------------------------------------------------------------

RESULT_FD, SPEC_FD, REQ_FD, REP_FD = 3, 4, 5, 6


# Descriptors the zygote opened for every child (see _Zygote._reroute_unreachable_imports); kept by _place_fds.
_INHERITED_FDS: list = []


MAX_ROLE = 6  # the highest fd number a child's job uses (RESULT_FD .. REP_FD below)
_FD_CEILING = max(os.sysconf("SC_OPEN_MAX"), 1 << 16)


def _place_fds(fds: list, roles: list, devnull: int) -> None:
    if fds and min(fds) <= MAX_ROLE:  # not with the zygote's reserved fds (see _reserve_low_fds)
        fds = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
    for fd, role in zip(fds, roles):
        os.dup2(fd, role)
    for std in (0, 1, 2):
        if std not in roles:
            os.dup2(devnull, std)
    low = 3
    for fd in sorted({*roles, *_INHERITED_FDS}):
        if fd == devnull:
            continue
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, _FD_CEILING)


def _send(obj) -> None:
    try:
        write_msg(RESULT_FD, obj)
    except OSError:
        pass


def _send_raw(frame: bytes) -> None:
    try:
        os.write(RESULT_FD, frame)
    except OSError:
        pass


# Pre-packed frames: formatting a message is a cold code path in a fresh child.
_READY = pack({"t": "ready"})
_COMPILED = pack({"t": "compiled"})


def _send_end(i: int, code: int, error) -> None:
    if error is None:
        data = b'{"t":"end","i":%d,"code":%d}' % (i, code)
        _send_raw(_HEADER.pack(len(data)) + data)
    else:
        _send({"t": "end", "i": i, "code": code, "error": error})


def _child_main(z: _Zygote, req: dict, fds: list, roles: list, scratch: str) -> None:
    """Runs in the forked child: isolate, limit, then run the job. Any failure before the job starts is reported as
    ``setup_error`` (an infrastructure error); nothing of the job has been read at that point."""
    limits = req.get("limits", {})
    try:
        os.setsid()
    except OSError:
        pass
    try:
        _place_fds(fds, roles, z.devnull)
        if z.tier != "namespace":
            # In the namespace tier the zygote is PID 1 of its namespace: its death kills every child anyway.
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        else:
            # A private /tmp per program: nothing one program writes is visible to another, and it is freed
            # with the program's mount namespace.
            unshare(CLONE_NEWNS)
            uid = z.child_uid
            mount("tmpfs", z.tmp, "tmpfs", MS_NOSUID | MS_NODEV,
                  f"size={int(limits.get('scratch_mb', 64))}m,nr_inodes=4096,mode=0700,uid={uid},gid={uid}")
            scratch = z.tmp
        os.chdir(scratch)
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        if z.tier != "namespace" and z.landlock:
            # Before the uid switch: the rules are made from paths the unprivileged uid may not be able to reach
            # (an interpreter under /root), which it then reads through the zygote's descriptors (see
            # _reroute_unreachable_imports).
            apply_landlock(z.read_paths, [scratch, "/dev/null"], z.landlock)
        if z.uid is not None:
            # A root worker's programs run as an unprivileged uid; switching uids also clears the capabilities
            # (the bounding set was emptied in the zygote, and no_new_privs stops setuid binaries).
            os.setgroups([])
            os.setresgid(z.uid, z.uid, z.uid)
            os.setresuid(z.uid, z.uid, z.uid)
        elif z.userns:
            drop_capabilities()
        _apply_rlimits(limits)
        if scratch != "/tmp":
            os.environ["HOME"] = os.environ["TMPDIR"] = scratch
        if z.seccomp:
            install_seccomp(os.getpid(), int(limits.get("max_processes", 1)) > 1)
    except BaseException as exc:
        _send({"t": "setup_error", "error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(EXIT_SETUP_FAILED)
    try:
        # marshal, not JSON: it is ~10x faster to read in a cold child, and it carries the code object the worker
        # compiled. Only the worker writes specs; nothing a child writes is ever unmarshalled.
        spec = marshal.loads(_read_all(SPEC_FD))
    except BaseException as exc:
        _send({"t": "setup_error", "error": f"cannot read job: {type(exc).__name__}: {exc}"})
        raise SystemExit(EXIT_SETUP_FAILED)
    mode = req.get("mode")
    if mode == "stdio":
        _run_stdio_apps(spec) if spec.get("apps") else _run_stdio(spec)
    elif mode == "server":
        _serve_candidate(spec)
    elif mode == "judge":
        _run_judge(spec)
    else:
        _send({"t": "setup_error", "error": f"unknown mode {mode!r}"})
        raise SystemExit(EXIT_SETUP_FAILED)


def _on_sigxcpu(signum, frame):
    _send({"t": "cpu_limit"})
    os._exit(124)


# The process's CPU budget (seconds), set with its limits: what the per-test timer may never exceed.
_CPU_TOTAL = [0.0]


def _apply_rlimits(limits: dict) -> None:
    def setr(which, value):
        value = int(value)
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            soft, hard = resource.getrlimit(which)
            if hard == resource.RLIM_INFINITY or value <= hard:
                resource.setrlimit(which, (value, hard))

    mb = 1 << 20
    # CPU time decides timeouts (docs/sandbox.md#time). ITIMER_PROF counts the process's user + system time, all
    # threads, to the kernel's tick; its default action kills the process at once, even inside a long C call, and
    # the worker reads the SIGPROF death as a timeout. It is re-armed before each test (_arm_cpu_limit). A program
    # that disarms it or ignores SIGPROF still meets RLIMIT_CPU, whole seconds at least 0.25 s above the process's
    # budget (so the timer always fires first): SIGXCPU (reported as cpu_limit), then SIGKILL a second later.
    total = max(float(limits.get("cpu_total_s", limits.get("cpu_s", 4.0))), 0.001)
    _CPU_TOTAL[0] = total
    soft = math.ceil(total + 0.25)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    signal.setitimer(signal.ITIMER_PROF, max(min(float(limits.get("cpu_s", total)), total), 0.001))
    setr(resource.RLIMIT_AS, int(limits.get("memory_mb", 1024)) * mb)
    file_limit = int(limits.get("max_file_mb", 16)) * mb
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, max(file_limit, int(limits.get("max_input_bytes", 0)))))
    setr(resource.RLIMIT_NOFILE, int(limits.get("max_open_files", 64)))
    setr(resource.RLIMIT_CORE, 0)
    nproc = int(limits.get("max_processes", 1))
    if nproc > 1:
        setr(resource.RLIMIT_NPROC, nproc)


def _arm_cpu_limit(cpu_s) -> None:
    """Give the next test ``cpu_s`` seconds of CPU, or what is left of the process's budget if that is less."""
    if not cpu_s:
        return
    try:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        left = _CPU_TOTAL[0] - (usage.ru_utime + usage.ru_stime)
        signal.setitimer(signal.ITIMER_PROF, max(min(float(cpu_s), left), 0.001))
    except (ValueError, OSError):
        pass


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _format_exception(exc: BaseException, skip: int = 1, limit: int = 3000) -> str:
    import traceback

    tb = exc.__traceback__
    for _ in range(skip):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:
        text = f"{type(exc).__name__}: {exc!r}"
    if len(text) > limit:
        text = text[:limit // 3] + "\n...\n" + text[-(2 * limit // 3):]
    return text


def _compile(spec: dict, source_key: str = "code"):
    """The program's code object: the one the worker compiled (``code_obj``), else compile() here. A compile error
    is reported before any candidate code runs, so this verdict cannot be forged."""
    if spec.get("code_obj") is not None:
        return marshal.loads(spec["code_obj"])
    _send({"t": "compiling"})
    try:
        code = compile(spec[source_key], "<solution>", "exec", dont_inherit=True)
    except BaseException as exc:
        _send({"t": "compile_error", "error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(0)
    return code


_FRESH_MODULES: list = []


def _new_module(name: str, register: bool = True):
    if name == "__main__" and register and _FRESH_MODULES:
        mod = _FRESH_MODULES.pop()  # made by the zygote: one less allocation in a cold child
    else:
        mod = types.ModuleType(name)
        mod.__dict__["__builtins__"] = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
    if register:
        sys.modules[name] = mod
    return mod


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(f"{code}\n")
    except Exception:
        pass
    return 1


def _next_test(go_fd: int, spec: dict):
    """Wait for the worker's go-ahead (one byte per test: the worker drains stdout between tests); returns the
    test index, or None when the worker closed the pipe."""
    try:
        if not os.read(go_fd, 1):
            return None
    except OSError:
        return None
    spec["next"] += 1
    return spec["next"] - 1


def _stdin_memfd(data: bytes) -> None:
    """A memfd holding one test's input, made fd 0. RLIMIT_FSIZE applies to memfds too: the soft limit is lifted to
    the hard one (sized by the worker to the largest input) while writing. If the previous test closed fd 0 (``with
    open(0) as f``, ``os.close(0)``), the memfd is created as fd 0 itself and must stay open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    fd = os.memfd_create("stdin", 0)
    try:
        if len(data) > soft:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        if len(data) > soft:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    os.lseek(fd, 0, os.SEEK_SET)
    if fd != 0:
        os.dup2(fd, 0)
        os.close(fd)


def _restore_fd(saved: int, fd: int) -> None:
    """Point ``fd`` back at what the harness gave the program (a previous test may have closed or replaced it, e.g.
    ``open(1, "w")`` closes fd 1 when the file object is collected). If the program closed the saved copy too, the
    test runs with what is left and its output decides."""
    try:
        os.dup2(saved, fd)
    except OSError:
        pass


def _text_stdio(fd: int, mode: str):
    if mode == "r":
        return io.TextIOWrapper(io.BufferedReader(io.FileIO(fd, "rb", closefd=False)), encoding="utf-8",
                                errors="surrogateescape", newline="\n")
    return io.TextIOWrapper(io.BufferedWriter(io.FileIO(fd, "wb", closefd=False)), encoding="utf-8",
                            errors="surrogateescape" if fd == 1 else "backslashreplace", newline="\n",
                            line_buffering=fd == 2)


_FRESH_STREAMS: list = []


def _run_stdio(spec: dict) -> None:
    """Strict mode: each test runs the program afresh as ``__main__`` (a new module, new ``sys.std*`` objects),
    stdin is the test's input on fd 0 (a memfd), stdout a pipe the worker reads. Tests run one after the other in
    this process; the worker drains stdout when a test ends and starts a new process after a crash or timeout."""
    code = _compile(spec)
    recursion_limit = sys.getrecursionlimit()
    streams = _FRESH_STREAMS.pop() if _FRESH_STREAMS else None
    # Copies of stdout (the worker's pipe) and stderr, out of the program's way: each test gets them back as fds 1
    # and 2 whatever the previous test did to them, as each test gets its own input as fd 0.
    saved_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 10)
    saved_err = fcntl.fcntl(2, fcntl.F_DUPFD_CLOEXEC, 10)
    spec["next"] = int(spec.get("start", 0))
    _send_raw(_READY)
    first = spec["next"]
    while True:
        i = _next_test(REQ_FD, spec)
        if i is None or i >= len(spec["inputs"]):
            break
        if i != first:  # the first test's CPU limit was set with the process's limits
            _arm_cpu_limit(spec.get("cpu_s"))
            # Finalise what the previous test left behind before this test's fds exist: a file it opened on fd 0
            # (``data = open(0)`` at module level, ``sys.stdin = open(0)``) closes its fd when collected, and a
            # module's functions keep it in a reference cycle, so only a collection frees it at a known time.
            sys.modules.pop("__main__", None)
            sys.stdin = sys.__stdin__ = sys.stdout = sys.__stdout__ = sys.stderr = sys.__stderr__ = None
            mod = None
            gc.collect()
        if i != first or not spec.get("stdin_given"):  # the worker passes the first test's input as fd 0
            _stdin_memfd(spec["inputs"][i])
        if i != first:
            _restore_fd(saved_out, 1)
            _restore_fd(saved_err, 2)
        if streams is None:
            streams = (_text_stdio(0, "r"), _text_stdio(1, "w"), _text_stdio(2, "w"))
        sys.stdin = sys.__stdin__ = streams[0]
        sys.stdout = sys.__stdout__ = streams[1]
        sys.stderr = sys.__stderr__ = streams[2]
        streams = None  # used: the next test gets new ones (no buffered input or output carries over)
        sys.setrecursionlimit(recursion_limit)
        n_threads = threading.active_count()
        threads = set(threading.enumerate()) if n_threads > 1 else ()
        mod = _new_module("__main__")
        status, error = 0, None
        try:
            exec(code, mod.__dict__)
        except SystemExit as exc:
            status = _exit_code(exc)
        except BaseException as exc:
            status, error = 1, _format_exception(exc)
        # What interpreter shutdown would do, in CPython's order: wait for the program's non-daemon threads, run its
        # atexit handlers, flush stdout.
        try:
            if threading.active_count() > n_threads:
                me = threading.current_thread()
                for thread in threading.enumerate():
                    if thread is not me and thread not in threads and not thread.daemon:
                        thread.join()
            if atexit._ncallbacks():
                atexit._run_exitfuncs()
        except SystemExit as exc:
            status = _exit_code(exc)
        except BaseException:
            pass
        if atexit._ncallbacks():
            atexit._clear()
        for stream in (sys.stdout, sys.__stdout__) if sys.stdout is not sys.__stdout__ else (sys.stdout,):
            try:
                stream.flush()
            except BaseException:
                pass
        _send_end(i, status, error)
    os._exit(0)


# The APPS harness (hendrycks/apps eval/testing_util.py) prepends these imports to every program, so programs that
# use e.g. ``sqrt`` or ``Counter`` without importing them pass there. ``apps`` mode reproduces it.
APPS_PRELUDE = (
    "import sys\nimport time\nimport itertools\nfrom itertools import accumulate, product, permutations, "
    "combinations\nimport collections\nfrom collections import Counter, OrderedDict, deque, defaultdict, ChainMap\n"
    "from functools import lru_cache\nimport math\nfrom math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, "
    "exp, log, log2\nimport fractions\nfrom typing import List, Tuple\nimport numpy as np\nimport random\n"
    "import heapq\nfrom heapq import *\n"
)


def apps_stdio_source(code: str) -> str:
    """The APPS harness's rewrite of a standard-input program: lines starting with ``import``/``from`` stay at module
    level until the first other line; everything else becomes the body of ``def code():`` (indented by a tab),
    preceded by ``stdin = sys.stdin`` and ``stdout = sys.stdout``. Module-level state thus becomes local to
    ``code()``, which is why some correct programs (``global x`` in a helper) fail under APPS."""
    out = []
    started = False
    for line in code.split("\n"):
        is_import = line.startswith("from ") or line.startswith("import ")
        if not is_import and not started:
            out.append("stdin = sys.stdin\nstdout = sys.stdout\ndef code():\n")
            started = True
        if is_import and not started:
            out.append(line + "\n")
        else:
            out.append("\t" + line + "\n")
    return APPS_PRELUDE + "".join(out)


class _LazyMockOpen:
    """``unittest.mock.mock_open(read_data=input)``, built on the first ``open()`` call: building it costs ~2.5 ms
    and almost no program opens its input as a file."""

    def __init__(self, mock, data: str):
        self._mock_module = mock
        self._data = data
        self._mock = None

    def __call__(self, *args, **kwargs):
        if self._mock is None:
            self._mock = self._mock_module.mock_open(read_data=self._data)
        return self._mock(*args, **kwargs)


def _run_stdio_apps(spec: dict) -> None:
    """The APPS harness's execution of a standard-input program (``run_test`` and ``call_method`` in hendrycks/apps
    ``eval/testing_util.py``), case by case:

    * the rewritten module (prelude + ``def code()``) is loaded once; any exception then is a compile error (-2). At
      that time ``sys.stdin`` is the harness's own stdin, an empty stream (APPS runs each program in a
      ``multiprocessing`` child, whose stdin is ``/dev/null``; CodeRL's background shell jobs read ``/dev/null``
      too), so ``from sys import stdin`` and the rewrite's own ``stdin = sys.stdin`` bind that object;
    * each test is one call of ``code()`` under APPS's five stacked ``unittest.mock.patch`` decorators. Stacked
      decorators are entered innermost first: ``sys.stdin.read``, ``.readlines`` and ``.readline`` are patched on
      the harness's own stdin (the object bound at import) - ``read()`` returns the input, ``readlines()`` its lines
      *without* line ends, ``readline()`` the next line without its line end and ``StopIteration`` after the last
      one - and only then is ``sys.stdin`` replaced by ``io.StringIO(input)`` (no ``.buffer``) and ``open()`` by
      ``unittest.mock.mock_open`` over the input; all of it is undone after the call;
    * ``sys.stdout`` is a StringIO whose ``close`` takes one argument; only what reaches it counts;
    * ``SystemExit`` ends a test normally; any other exception is a runtime error (-1).
    """
    import builtins
    import io
    from unittest import mock

    if spec.get("code_obj") is None:
        spec["source"] = apps_stdio_source(spec["code"])
    code = _compile(spec, "source")
    # fd 0 is /dev/null here (the worker passes no stdin): the harness's own, empty stdin, as in APPS.
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "rb", closefd=False)),
                                                 encoding="utf-8")
    _send_raw(_COMPILED)
    mod = _new_module("tmp_sol")
    try:
        exec(code, mod.__dict__)
        fn = mod.__dict__["code"]
    except BaseException as exc:
        _send({"t": "compile_error", "error": _format_exception(exc)})
        os._exit(0)
    cap = int(spec.get("output_cap", 8 << 20))
    real_stdout, real_open = sys.stdout, builtins.open
    spec["next"] = first = int(spec.get("start", 0))
    _send_raw(_READY)
    while True:
        i = _next_test(REQ_FD, spec)
        if i is None or i >= len(spec["inputs"]):
            break
        if i != first:
            _arm_cpu_limit(spec.get("cpu_s"))
        inputs = spec["inputs"][i].decode("utf-8", "surrogateescape")
        captured = io.StringIO()
        captured.close = lambda x: 1
        sys.stdout = captured
        error = None
        try:
            _call_with_apps_patches(fn, inputs, builtins, mock, io)
        except BaseException as exc:
            error = _format_exception(exc, skip=2)
        finally:
            sys.stdout, builtins.open = real_stdout, real_open
        text = captured.getvalue() if error is None else ""
        _send({"t": "end", "i": i, "code": 0, "error": error, "text": text[:cap], "truncated": len(text) > cap})
    os._exit(0)


_MISSING = object()


def _call_with_apps_patches(fn, inputs: str, builtins, mock, io) -> None:
    """``call_method(fn, inputs)`` of APPS: its ``patch`` decorators entered in the order Python enters them
    (innermost first) and undone in reverse. A patch that cannot be applied raises, as ``patch`` would."""
    lines = iter(inputs.split("\n"))
    target = sys.stdin  # resolved when the patches are entered: the harness's stdin (restored after every test)
    patches = (("read", lambda *args: inputs), ("readlines", lambda *args: inputs.split("\n")),
               ("readline", lambda *args: next(lines)))
    applied = []
    try:
        for name, replacement in patches:
            own = getattr(target, "__dict__", {}).get(name, _MISSING)
            getattr(target, name)  # patch() requires the attribute to exist
            setattr(target, name, replacement)
            applied.append((name, own))
        sys.stdin = io.StringIO(inputs)
        builtins.open = _LazyMockOpen(mock, inputs)
        try:
            fn()
        except SystemExit:
            pass
    finally:
        sys.stdin = target
        for name, own in reversed(applied):
            try:
                if own is _MISSING:
                    delattr(target, name)
                else:
                    setattr(target, name, own)
            except Exception:
                pass


# Server mode: the candidate's module is loaded once, then requests (call an entry point with arguments, read a
# global, get/set an attribute of an object it returned) are answered with encoded values. The requests hold only
# arguments; expected results never come here.

class _Handles:
    def __init__(self):
        self.objects = []

    def put(self, value):
        self.objects.append(value)
        return {"$h": [len(self.objects) - 1, _type_name(value), _safe_repr(value)]}


def _safe_repr(value) -> str:
    try:
        return repr(value)[:200]
    except BaseException:
        return ""


def _serve_candidate(spec: dict) -> None:
    import builtins
    import io

    apps = bool(spec.get("apps"))
    if spec.get("code_obj") is None:
        spec["source"] = (APPS_PRELUDE + spec["code"]) if apps else spec["code"]
    code = _compile(spec, "source")
    _send_raw(_COMPILED)
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "rb", closefd=False)),
                                                 encoding="utf-8")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "wb", closefd=False), encoding="utf-8",
                                                   errors="backslashreplace")
    sys.stderr = sys.__stderr__ = sys.stdout
    mod = _new_module("tmp_sol" if apps else "solution")
    g = mod.__dict__
    entry = spec.get("entry") or {}
    fn_name = entry.get("name")
    try:
        if entry.get("solution_class") and not apps:
            # LeetCode runs solutions with ``typing``'s names in scope (its starter code says ``List[int]``
            # without importing it); strict mode gives LeetCode-style problems the same namespace.
            exec("from typing import *", g)
        exec(code, g)
        apps_target = None
        if apps and fn_name:
            # APPS: ``tmp_sol.Solution()`` when the text contains "class Solution", else the module; the method is
            # looked up once; a failure anywhere here is a compile error.
            owner = g["Solution"]() if "class Solution" in spec["code"] else mod
            apps_target = getattr(owner, fn_name)
    except BaseException as exc:
        _send({"t": "compile_error" if apps else "load_error", "error": _format_exception(exc)})
        os._exit(0)
    _send_raw(_READY)
    handles = _Handles()

    def resolve(ref):
        if isinstance(ref, dict) and "$ref" in ref:
            name = ref["$ref"]
            if name in g:
                return g[name]
            if hasattr(builtins, name):
                return getattr(builtins, name)
            raise NameError(f"name {name!r} is not defined")
        if isinstance(ref, list) and ref and isinstance(ref[0], int):
            return handles.objects[ref[0]]
        raise ValueError(f"bad reference {ref!r}")

    def entry_callable():
        if apps_target is not None:
            return apps_target
        use_class = entry.get("solution_class")
        if use_class is None:
            use_class = fn_name not in g and "Solution" in g
        if use_class:
            if "Solution" not in g:
                raise NameError("class 'Solution' is not defined")
            return getattr(g["Solution"](), fn_name)
        if fn_name not in g:
            raise NameError(f"function {fn_name!r} is not defined")
        return g[fn_name]

    reply_fd = REP_FD if spec.get("rpc") else RESULT_FD
    reader = MessageReader(1 << 30)
    last_test = None
    while True:
        try:
            req = reader.read_blocking(REQ_FD)
        except (OSError, ProtocolError):
            break
        if req is None:
            break
        rid = req.get("i")
        if rid != last_test:
            if last_test is not None:  # the first test's CPU limit was set with the process's limits
                _arm_cpu_limit(spec.get("cpu_s"))
            last_test = rid
        try:
            op = req.get("op")
            if op == "call":
                target = entry_callable() if req.get("target") == "entry" else resolve(req.get("target"))
                args = [decode(a, resolve) for a in req.get("args", [])]
                kwargs = {k: decode(v, resolve) for k, v in (req.get("kwargs") or {}).items()}
                value = target(*args, **kwargs)
            elif op == "getattr":
                value = getattr(resolve(req["target"]), req["name"])
            elif op == "setattr":
                setattr(resolve(req["target"]), req["name"], decode(req["value"], resolve))
                value = None
            elif op == "describe":
                value = _describe(g, req.get("names", []), handles)
            else:
                raise ValueError(f"unknown op {op!r}")
            if op == "describe":
                reply = {"t": "reply", "i": rid, "ok": value}
            else:
                reply = {"t": "reply", "i": rid, "ok": encode(value, on_opaque=handles.put if spec.get("rpc")
                                                              else None)}
        except BaseException as exc:
            reply = {"t": "reply", "i": rid, "exc": f"{type(exc).__name__}: {exc}"[:1000],
                     "type": type(exc).__name__, "tb": _format_exception(exc)}
        try:
            write_msg(reply_fd, reply)
        except OSError:
            break
    os._exit(0)


def _refuse_opaque(value):
    raise EncodeError(f"{_type_name(value)} is not plain data")


def _describe(g: dict, names: list, handles: _Handles) -> dict:
    import types

    out = {}
    for name in names:
        if name not in g:
            out[name] = {"kind": "missing"}
            continue
        value = g[name]
        if isinstance(value, types.ModuleType):
            out[name] = {"kind": "module", "module": getattr(value, "__name__", "")}
        elif callable(value):
            out[name] = {"kind": "callable", "type": _type_name(value)}
        else:
            try:
                out[name] = {"kind": "value", "value": encode(value, on_opaque=_refuse_opaque)}
            except EncodeError:
                out[name] = {"kind": "object", "type": _type_name(value)}
    return out


# Judge mode: runs the *trusted* test code (setup_code, assert statements) and never candidate code. Names the tests
# use that the candidate defines are proxies whose calls travel to the candidate process as data; what comes back is
# decoded into builtin values, so every comparison and every verdict happens here.

class CandidateGone(BaseException):
    """The candidate process died mid-test. A BaseException so that test code's ``except Exception`` cannot
    swallow it."""


class CandidateError(Exception):
    """The candidate raised; subclasses mirror builtin exception types so ``except ValueError`` in tests works."""


_ERROR_CLASSES: dict = {}


def _candidate_error(type_name: str, message: str) -> CandidateError:
    import builtins

    base = getattr(builtins, type_name, None)
    if isinstance(base, type) and issubclass(base, Exception) and base is not Exception:
        cls = _ERROR_CLASSES.get(type_name)
        if cls is None:
            try:
                cls = type(f"Candidate{type_name}", (CandidateError, base), {})
            except TypeError:
                cls = CandidateError
            _ERROR_CLASSES[type_name] = cls
        return cls(message)
    return CandidateError(message)


class _Channel:
    def __init__(self):
        self.reader = MessageReader(1 << 30)
        self.counter = 0

    def request(self, msg: dict):
        self.counter += 1
        msg["i"] = self.counter
        try:
            write_msg(REQ_FD, msg)
            reply = self.reader.read_blocking(REP_FD)
        except (OSError, ProtocolError) as exc:
            raise CandidateGone(str(exc)) from None
        if reply is None:
            raise CandidateGone("the candidate process exited")
        if "exc" in reply:
            raise _candidate_error(str(reply.get("type", "")), str(reply["exc"]))
        return reply.get("ok")

    def value(self, encoded):
        try:
            return decode(encoded, self.handle)
        except DecodeError as exc:
            raise CandidateError(f"candidate returned malformed data: {exc}") from None

    def handle(self, payload):
        if isinstance(payload, dict):
            return Handle(self, payload, "", "")
        hid, type_name, text = payload
        return Handle(self, [int(hid)], str(type_name), str(text))

    def send_arg(self, value):
        def opaque(v):
            if isinstance(v, Handle):
                ref = object.__getattribute__(v, "_ref")
                return ref if isinstance(ref, dict) else {"$h": ref}
            raise TypeError(f"cannot pass {_type_name(v)} to the candidate program")
        return encode(value, on_opaque=opaque)


class Handle:
    """A candidate function or object, seen from the judge: calls and attribute access go over the channel;
    equality is identity, so candidate code never takes part in a comparison."""

    __slots__ = ("_chan", "_ref", "_type", "_text")

    def __init__(self, chan, ref, type_name, text):
        object.__setattr__(self, "_chan", chan)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_text", text)

    def _wire(self):
        ref = object.__getattribute__(self, "_ref")
        return ref if isinstance(ref, dict) else ref

    def __call__(self, *args, **kwargs):
        chan = object.__getattribute__(self, "_chan")
        msg = {"op": "call", "target": self._wire(), "args": [chan.send_arg(a) for a in args],
               "kwargs": {k: chan.send_arg(v) for k, v in kwargs.items()}}
        return chan.value(chan.request(msg))

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        chan = object.__getattribute__(self, "_chan")
        return chan.value(chan.request({"op": "getattr", "target": self._wire(), "name": name}))

    def __setattr__(self, name, value):
        chan = object.__getattribute__(self, "_chan")
        chan.request({"op": "setattr", "target": self._wire(), "name": name, "value": chan.send_arg(value)})

    def __repr__(self):
        text = object.__getattribute__(self, "_text")
        return text or f"<candidate {object.__getattribute__(self, '_type') or 'object'}>"

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = object.__hash__


def _failing_line(exc: BaseException, sources: dict) -> str:
    """The source line of the innermost frame of the test code where ``exc`` was raised."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name in sources:
            found = (name, tb.tb_lineno)
        tb = tb.tb_next
    if found is None:
        return ""
    lines = sources[found[0]].splitlines()
    return lines[found[1] - 1].strip()[:300] if 0 < found[1] <= len(lines) else ""


def _run_judge(spec: dict) -> None:
    import builtins
    import importlib
    import io

    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "wb", closefd=False), encoding="utf-8",
                                                   errors="backslashreplace")
    chan = _Channel()
    ns = {"__name__": "__judge__", "__builtins__": builtins}
    setup = spec.get("setup_code") or ""
    setup_error = None
    try:
        free = list(spec.get("free_names", []))
        if free:
            described = chan.request({"op": "describe", "names": free})
            stdlib = getattr(sys, "stdlib_module_names", ())
            for name, info in (described or {}).items():
                kind = info.get("kind")
                if kind == "module":
                    modname = str(info.get("module", ""))
                    if modname.split(".")[0] in stdlib or modname.split(".")[0] == "numpy":
                        ns[name] = importlib.import_module(modname)
                    else:
                        ns[name] = Handle(chan, {"$ref": name}, "module", "")
                elif kind == "value":
                    ns[name] = chan.value(info.get("value"))
                elif kind in ("callable", "object"):
                    ns[name] = Handle(chan, {"$ref": name}, str(info.get("type", "")), "")
        if setup.strip():
            exec(compile(setup, "<setup>", "exec", dont_inherit=True), ns)
    except CandidateGone:
        _send({"t": "candidate_gone", "i": spec.get("start", 0)})
        os._exit(0)
    except CandidateError as exc:
        setup_error = ("error", f"setup: {type(exc).__name__}: {exc}")
    except BaseException as exc:
        setup_error = ("fail", f"setup: {_format_exception(exc, skip=1, limit=1000)}")
    asserts = spec.get("asserts", [])
    for i in range(int(spec.get("start", 0)), len(asserts)):
        _send({"t": "begin", "i": i})
        if setup_error is not None:
            _send({"t": "verdict", "i": i, "v": setup_error[0], "error": setup_error[1]})
            continue
        try:
            exec(compile(asserts[i], f"<test {i}>", "exec", dont_inherit=True), ns)
            verdict, error = "pass", ""
        except CandidateGone:
            _send({"t": "candidate_gone", "i": i})
            os._exit(0)
        except CandidateError as exc:
            verdict, error = "error", f"{type(exc).__name__.replace('Candidate', '', 1)}: {exc}"
        except AssertionError as exc:
            where = _failing_line(exc, {"<setup>": setup, f"<test {i}>": asserts[i]}) or asserts[i][:300]
            verdict, error = "fail", f"assertion failed: {where}" + (f" ({exc})" if str(exc) else "")
        except BaseException as exc:
            verdict, error = "fail", f"{type(exc).__name__}: {exc}"[:1000]
        _send({"t": "verdict", "i": i, "v": verdict, "error": error})
    os._exit(0)


def main(argv: list) -> None:
    ctl_fd = int(argv[1])
    opts = json.loads(argv[2])
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    ctl = socket.socket(fileno=ctl_fd)
    zygote = _Zygote(ctl, opts)
    try:
        hello = zygote.bootstrap()
    except BaseException as exc:
        try:
            ctl.send(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}).encode())
        finally:
            os._exit(1)
    ctl.send(json.dumps(hello).encode())
    zygote.serve()


if __name__ == "__main__":
    main(sys.argv)
