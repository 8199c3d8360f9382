"""Linux isolation primitives for the zygote and its children: namespaces, mounts, capabilities, seccomp, Landlock.

ctypes wrappers (Python 3.10/3.11 have no ``os.unshare``) and the classic-BPF seccomp filter. Standard library only:
the zygote imports this file as a top-level module (it runs outside the package).
"""

from __future__ import annotations

import ctypes
import os
import struct

# --- Linux primitives (ctypes; Python 3.10/3.11 have no os.unshare) ------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME = 1 << 14, 1 << 18, 1 << 21
MNT_DETACH = 2

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_CAPBSET_DROP = 1, 4, 22, 24
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4

# Syscall numbers that libc does not wrap. Only x86_64 and aarch64 are known; elsewhere the seccomp and capability
# layers are skipped (docs/sandbox.md says so).
_ARCH = os.uname().machine
_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capset": 126},
    "aarch64": {"pivot_root": 41, "capset": 91},
}.get(_ARCH, {})
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446

_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return _libc


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def unshare(flags: int) -> None:
    _check(_lib().unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_lib().setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source, target, fstype, flags: int, data=None) -> None:
    enc = (lambda s: None if s is None else os.fsencode(s))
    _check(_lib().mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def umount2(target: str, flags: int) -> None:
    _check(_lib().umount2(os.fsencode(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYSCALLS.get("pivot_root")
    if nr is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {_ARCH}")
    _check(_lib().syscall(ctypes.c_long(nr), os.fsencode(new_root), os.fsencode(put_old)), "pivot_root")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    return _check(_lib().prctl(option, arg2, arg3, 0, 0), f"prctl({option})")


_CAP_LAST = [None]


def cap_last() -> int:
    if _CAP_LAST[0] is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _CAP_LAST[0] = int(f.read())
        except OSError:
            _CAP_LAST[0] = 40
    return _CAP_LAST[0]


def drop_bounding_set() -> None:
    """Remove every capability from the bounding set, so that nothing this process executes can regain one."""
    for cap in range(cap_last() + 1):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            pass
    try:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass


def drop_capabilities() -> None:
    """Empty the effective, permitted and inheritable capability sets (the zygote already emptied the bounding and
    ambient sets, which children inherit)."""
    nr = _SYSCALLS.get("capset")
    if nr is None:
        return
    header = struct.pack("<Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = ctypes.create_string_buffer(24)  # two zeroed {effective, permitted, inheritable} words
    hdr = ctypes.create_string_buffer(header)
    _check(_lib().syscall(ctypes.c_long(nr), hdr, data), "capset")


# --- seccomp -------------------------------------------------------------------------------------------------------
# A small classic-BPF filter, installed in every child just before it reads its job. It refuses what a program that
# reads stdin and computes never needs and what an escape or an attack on the worker would: sockets (network and
# the worker's Unix sockets), ptrace and cross-process memory access, signals to other processes, new namespaces,
# mounts, keyrings, BPF, io_uring (which bypasses seccomp for its operations), and - unless ``max_processes`` > 1 -
# creating processes (threads stay allowed, since competitive programmers use one to get a bigger stack).

AUDIT_ARCH = {"x86_64": 0xC000003E}.get(_ARCH)
_X86_64 = {
    "socket": 41, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
    "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438,
    "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "setsid": 112, "setpgid": 109, "personality": 135, "syslog": 103, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "kexec_load": 246, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179, "vhangup": 153,
    "iopl": 172, "ioperm": 173, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435,
}

_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_JSET_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_KILL_PROCESS = 0x7FFF0000, 0x80000000


def _ret_errno(err: int) -> int:
    return 0x00050000 | (err & 0xFFFF)


_PID_MARK, _NEG_PID_MARK = 0x7FFFFFF0, 0x7FFFFFF1  # placeholders, patched with the child's pid


def _seccomp_template(allow_fork: bool) -> tuple[bytes, list, list]:
    """Classic BPF for ``seccomp_data`` (nr at 0, arch at 4, args[i] at 16 + 8 i, low word first on x86_64), with
    placeholders where the child's own pid goes; returns (program, offsets of pid, offsets of -pid).

    Every refused syscall jumps to one shared return instruction: half the instructions of a compare-and-return
    pair per syscall, and the kernel's JIT compiles it in about half the time (~100 us less per child here)."""
    if AUDIT_ARCH is None:
        raise OSError(38, f"seccomp filter not available on {_ARCH}")
    sc = _X86_64
    eperm, enosys = _ret_errno(1), _ret_errno(38)
    denied = [n for n in ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_open",
                          "pidfd_send_signal", "pidfd_getfd", "unshare", "setns", "mount", "umount2",
                          "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount",
                          "fspick", "mount_setattr", "keyctl", "add_key", "request_key", "bpf",
                          "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
                          "io_uring_register", "setsid", "setpgid", "personality", "syslog", "name_to_handle_at",
                          "open_by_handle_at", "kexec_load", "init_module", "finit_module", "delete_module",
                          "reboot", "swapon", "swapoff", "acct", "quotactl", "vhangup", "iopl", "ioperm", "socket")]
    if not allow_fork:
        denied += ["fork", "vfork"]
    prog = []  # (code, jt, jf, k); jt/jf are a label (str) or 0 (the next instruction)
    labels = {}

    def ins(code, k, jt=0, jf=0):
        prog.append([code, jt, jf, k])

    ins(_BPF_LD_W_ABS, 4)
    ins(_BPF_JEQ_K, AUDIT_ARCH, 0, "kill_process")
    ins(_BPF_LD_W_ABS, 0)
    ins(_BPF_JGE_K, 0x40000000, "eperm", 0)  # the x32 ABI shares the arch value; refuse all of it
    for name in denied:
        ins(_BPF_JEQ_K, sc[name], "eperm", 0)
    ins(_BPF_JEQ_K, sc["clone3"], "enosys", 0)  # glibc falls back to clone(2), whose flags we can inspect
    if not allow_fork:
        ins(_BPF_JEQ_K, sc["clone"], "clone", 0)
    signals = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
    for name in signals:
        ins(_BPF_JEQ_K, sc[name], name, 0)
    ins(_BPF_RET_K, _RET_ALLOW)
    if not allow_fork:
        # clone: allowed only with CLONE_THREAD (threads, not processes).
        labels["clone"] = len(prog)
        ins(_BPF_LD_W_ABS, 16)
        ins(_BPF_JSET_K, CLONE_THREAD, "allow", "eperm")
    # Signals: only to this process (its pid, its own group 0 or -pid); kill(-1) and other pids are refused. (A
    # program that is PID 1 of its own namespace has -pid == -1, which there reaches only its own processes.)
    for name in signals:
        labels[name] = len(prog)  # a syscall's name: never one of the return labels below
        ins(_BPF_LD_W_ABS, 16)
        for target in [_PID_MARK] + ([0, _NEG_PID_MARK] if name == "kill" else []):
            ins(_BPF_JEQ_K, target, "allow", 0)
        ins(_BPF_RET_K, eperm)
    assert not {"eperm", "enosys", "kill_process", "allow"} & set(labels)
    for label, ret in (("eperm", eperm), ("enosys", enosys), ("kill_process", _RET_KILL_PROCESS), ("allow", _RET_ALLOW)):
        labels[label] = len(prog)
        ins(_BPF_RET_K, ret)
    for i, instruction in enumerate(prog):
        for slot in (1, 2):
            if isinstance(instruction[slot], str):
                offset = labels[instruction[slot]] - i - 1
                if not 0 <= offset <= 255:
                    raise ValueError(f"seccomp filter: jump to {instruction[slot]} out of range ({offset})")
                instruction[slot] = offset
    code = b"".join(struct.pack("<HBBI", c, jt, jf, k) for c, jt, jf, k in prog)
    own = [8 * i + 4 for i, ins_ in enumerate(prog) if ins_[0] == _BPF_JEQ_K and ins_[3] == _PID_MARK]
    neg = [8 * i + 4 for i, ins_ in enumerate(prog) if ins_[0] == _BPF_JEQ_K and ins_[3] == _NEG_PID_MARK]
    return code, own, neg


_TEMPLATES: dict = {}


def build_seccomp_filter(self_pid: int, allow_fork: bool) -> bytes:
    template = _TEMPLATES.get(allow_fork)
    if template is None:
        template = _TEMPLATES[allow_fork] = _seccomp_template(allow_fork)
    code, own, neg = template
    buf = bytearray(code)
    for offset in own:
        struct.pack_into("<I", buf, offset, self_pid & 0xFFFFFFFF)
    for offset in neg:
        struct.pack_into("<I", buf, offset, (-self_pid) & 0xFFFFFFFF)
    return bytes(buf)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PREPARED: dict = {}


def prepare_seccomp() -> None:
    """Build, in the zygote, the filter buffers children install: a child only writes its pid into its copy."""
    for allow_fork in (False, True):
        code = build_seccomp_filter(1, allow_fork)
        buf = ctypes.create_string_buffer(code, len(code))
        fprog = _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
        _PREPARED[allow_fork] = (buf, fprog, ctypes.addressof(fprog))


def install_seccomp(self_pid: int, allow_fork: bool) -> None:
    prepared = _PREPARED.get(allow_fork)
    if prepared is None:
        prepare_seccomp()
        prepared = _PREPARED[allow_fork]
    buf, _, address = prepared
    _, own, neg = _TEMPLATES[allow_fork]
    for offset in own:
        struct.pack_into("<I", buf, offset, self_pid & 0xFFFFFFFF)
    for offset in neg:
        struct.pack_into("<I", buf, offset, (-self_pid) & 0xFFFFFFFF)
    _check(_lib().prctl(PR_SET_SECCOMP, 2, address, 0, 0), "seccomp")


# --- Landlock (process tier): an unprivileged filesystem allow-list ------------------------------------------------

_LL_FS_V1 = (1 << 13) - 1  # execute .. make_sym
_LL_REFER, _LL_TRUNCATE, _LL_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_LL_READ = 1 | (1 << 2) | (1 << 3)  # execute, read_file, read_dir


def landlock_abi() -> int:
    try:
        ret = _lib().syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_long(0), ctypes.c_long(1))
    except Exception:
        return 0
    return max(int(ret), 0)


def apply_landlock(read_paths, write_paths, abi: int) -> None:
    """Allow reading ``read_paths`` and everything under ``write_paths``; deny the rest of the filesystem, TCP
    (ABI >= 4), and signals or abstract Unix sockets that reach outside this domain (ABI >= 6)."""
    handled = _LL_FS_V1
    if abi >= 2:
        handled |= _LL_REFER
    if abi >= 3:
        handled |= _LL_TRUNCATE
    if abi >= 5:
        handled |= _LL_IOCTL_DEV
    fields = [handled]
    if abi >= 4:
        fields.append(3)  # bind_tcp | connect_tcp, with no rule allowing either
    if abi >= 6:
        fields.append(3)  # scope: abstract unix sockets | signals
    attr = ctypes.create_string_buffer(struct.pack("<" + "Q" * len(fields), *fields))
    libc = _lib()
    fd = _check(libc.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), attr, ctypes.c_long(len(attr) - 1),
                             ctypes.c_long(0)), "landlock_create_ruleset")
    try:
        file_ok = 1 | 2 | (1 << 1)  # execute, write_file, read_file
        for paths, access in ((read_paths, _LL_READ), (write_paths, handled)):
            for path in paths:
                try:
                    pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    allowed = access
                    if not os.path.isdir(path):
                        allowed &= file_ok | _LL_READ | (_LL_TRUNCATE if abi >= 3 else 0) | (
                            _LL_IOCTL_DEV if abi >= 5 else 0)
                        allowed &= ~(1 << 3)  # read_dir is only for directories
                    rule = ctypes.create_string_buffer(struct.pack("<Qi", allowed, pfd))
                    _check(libc.syscall(ctypes.c_long(SYS_LANDLOCK_ADD_RULE), ctypes.c_long(fd), ctypes.c_long(1),
                                        rule, ctypes.c_long(0)), f"landlock_add_rule {path}")
                finally:
                    os.close(pfd)
        _check(libc.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_long(fd), ctypes.c_long(0)),
               "landlock_restrict_self")
    finally:
        os.close(fd)
