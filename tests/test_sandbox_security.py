"""The program is hostile: one program per attack, in every isolation tier available here.

Most attacks are standard-input programs whose expected output is ``SAFE``: they print ``SAFE`` when the attack
fails and something else when it succeeds, so ``passed`` means the sandbox held. Reward hacks are the opposite:
wrong programs that try to be judged right, so anything but ``passed`` means the sandbox held.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from coderl_ray.records import Outcome
from coderl_ray.sandbox import Sandbox, SandboxLimits
from tests.sandbox_tiers import TIERS, expected_tiers, open_sandbox

ROOT = Path(__file__).resolve().parents[1]
SECRET_ENV = "CODERL_TEST_SECRET_TOKEN"
SECRET = "hunter2-do-not-leak"

@pytest.fixture(scope="module", params=TIERS)
def box(request):
    # The worker's environment holds a secret when the zygote starts: no program may see it.
    os.environ[SECRET_ENV] = SECRET
    try:
        sandbox = open_sandbox(request.param)  # fails, not skips, where this machine must provide the tier
        yield sandbox
        sandbox.close()
    finally:
        os.environ.pop(SECRET_ENV, None)


def test_the_default_tier_is_the_strongest_this_machine_provides():
    # tier="auto" falls back to the process tier only where namespaces are refused; where they are expected, a
    # broken namespace tier must not pass unnoticed as a silent fallback.
    if "namespace" not in expected_tiers():
        pytest.skip("the namespace tier is not expected on this machine (tests/sandbox_tiers.py)")
    with Sandbox("auto") as sandbox:
        assert sandbox.info["tier"] == "namespace"


SAFE = {"problem_id": "attack", "tests": {"kind": "stdio", "inputs": [""], "outputs": ["SAFE\n"]}}


def attack(box, code, **limits):
    limits.setdefault("timeout_s", 10.0)
    limits.setdefault("program_timeout_s", 60.0)
    return box.execute(SAFE, textwrap.dedent(code), "attack", SandboxLimits(tier=box.requested_tier, **limits))


def assert_safe(result):
    assert result.outcome is Outcome.PASSED, f"{result.outcome.value}: {result.error}"


@pytest.fixture(scope="module")
def outside():
    """A world-readable secret and a world-writable folder outside any scratch directory."""
    folder = Path(tempfile.mkdtemp(prefix="coderl-outside-"))
    folder.chmod(0o777)
    secret = folder / "secret.txt"
    secret.write_text("TOPSECRET\n")
    secret.chmod(0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# --- resource limits -----------------------------------------------------------------------------------------------

def test_memory_limit(box):
    result = attack(box, "x = bytearray(1 << 30)\nprint('LEAK')", memory_mb=256)
    assert result.outcome is Outcome.RUNTIME_ERROR and "MemoryError" in result.error


def test_cpu_time_limit(box):
    result = attack(box, "while True:\n    pass", timeout_s=1)
    assert result.outcome is Outcome.TIMEOUT and "CPU" in result.error


def test_cpu_time_limit_holds_when_the_program_disarms_its_timer(box):
    # The per-test timer is the program's own to break (ITIMER_PROF, SIGPROF); RLIMIT_CPU just above the process's
    # budget (here 0.5 s + 0.25 s, rounded up to 1 s) is not: SIGXCPU, ignored too, then SIGKILL at 2 s.
    result = attack(box, """
        import signal
        signal.setitimer(signal.ITIMER_PROF, 0)
        for sig in (signal.SIGPROF, signal.SIGXCPU):
            signal.signal(sig, signal.SIG_IGN)
        while True:
            pass
    """, timeout_s=0.5, program_timeout_s=0.5)
    assert result.outcome is Outcome.TIMEOUT and "CPU" in result.error, result.error


def test_wall_time_limit_catches_a_sleeping_program(box):
    result = attack(box, "import time\ntime.sleep(3600)", timeout_s=0.5, wall_factor=1, wall_extra_s=0.5)
    assert result.outcome is Outcome.TIMEOUT and "time limit" in result.error and "asleep" in result.error


def test_a_sleeper_cannot_pass_itself_off_as_starved(box):
    # The wall-clock backstop does not count time a program waited for a CPU (docs/sandbox.md#time). 100 threads
    # woken together keep each other waiting: ~30x the wall time in waits summed over threads, for little CPU. The
    # sandbox counts the longest wait of one thread, which only the program's own CPU time can cause, so the sleeper
    # reaches its backstop (1 x 2 s + 0.5 s) and times out; summed waits would have kept it "starved" until 2 x the
    # backstop and made it an infrastructure error, never a label.
    result = attack(box, """
        import hashlib, threading, time
        threading.stack_size(1 << 18)
        data = b"x" * (1 << 16)
        def worker():
            while True:
                hashlib.sha256(data).digest()  # without the GIL: the threads run, and wait, at once
                time.sleep(0.05)
        for _ in range(100):
            threading.Thread(target=worker, daemon=True).start()
        time.sleep(3600)
    """, timeout_s=2.0, program_timeout_s=2.0, wall_factor=1, wall_extra_s=0.5, starvation_factor=2,
                    infra_retries=0)
    assert result.outcome is Outcome.TIMEOUT, result.error


def test_fork_bomb(box):
    assert_safe(attack(box, """
        import os
        try:
            while True:
                os.fork()
        except OSError:
            print('SAFE')
    """))


def test_threads_are_allowed(box):
    assert_safe(attack(box, """
        import threading
        out = []
        t = threading.Thread(target=lambda: out.append('SAFE'))
        t.start(); t.join()
        print(out[0])
    """))


def test_file_size_limit(box):
    assert_safe(attack(box, """
        try:
            with open('big', 'wb') as f:
                f.write(b'x' * (4 << 20))
            print('LEAK')
        except OSError:
            print('SAFE')
    """, max_file_mb=1))


def test_open_files_limit(box):
    assert_safe(attack(box, """
        files = []
        try:
            for i in range(1000):
                files.append(open(f'f{i}', 'w'))
            print('LEAK')
        except OSError:
            print('SAFE')
    """, max_open_files=32))


@pytest.mark.parametrize("compare", ["strict", "apps"])
def test_printing_gigabytes_is_cut_and_fails_and_the_worker_survives(box, compare):
    result = attack(box, "line = 'x' * (1 << 20)\nwhile True:\n    print(line)", max_output_mb=2,
                    memory_mb=512, compare=compare, timeout_s=30)
    assert result.outcome is Outcome.RUNTIME_ERROR
    assert "output limit" in result.error or "MemoryError" in result.error
    assert_safe(attack(box, "print('SAFE')"))


def test_compile_bomb_is_a_compile_error(box):
    result = attack(box, "x = " + "(" * 5000 + ")" * 5000)
    assert result.outcome is Outcome.COMPILE_ERROR


# --- containment ---------------------------------------------------------------------------------------------------

def test_cannot_read_files_outside_scratch(box, outside):
    assert_safe(attack(box, f"""
        leaked = []
        for path in [{str(outside / 'secret.txt')!r}, {str(ROOT / 'pyproject.toml')!r}, '/etc/shadow']:
            try:
                leaked.append(open(path).read(10))
            except OSError:
                pass
        print('LEAK' if leaked else 'SAFE')
    """))


def test_cannot_list_the_project(box):
    assert_safe(attack(box, f"""
        import os
        try:
            names = os.listdir({str(ROOT)!r})
        except OSError:
            names = []
        print('LEAK' if 'coderl_ray' in names or 'pyproject.toml' in names else 'SAFE')
    """))


def test_cannot_write_outside_scratch(box, outside):
    target = outside / f"pwned-{box.requested_tier}"
    result = attack(box, f"""
        try:
            open({str(target)!r}, 'w').write('x')
            print('LEAK')
        except OSError:
            print('SAFE')
    """)
    assert_safe(result)
    assert not target.exists()


def test_scratch_is_writable_and_private_to_one_program(box):
    assert_safe(attack(box, """
        import os
        open('note.txt', 'w').write('SAFE')
        os.mkdir('d')
        print(open('note.txt').read())
    """))
    # A later program finds none of it.
    assert_safe(attack(box, """
        import os
        print('LEAK' if os.path.exists('note.txt') or os.listdir('.') else 'SAFE')
    """))


def test_no_network(box):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.1)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not accepted:
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        assert_safe(attack(box, f"""
            import socket
            ok = 0
            for target in [('127.0.0.1', {port}), ('8.8.8.8', 53)]:
                try:
                    socket.create_connection(target, timeout=2).send(b'x')
                    ok += 1
                except OSError:
                    pass
            try:
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {port}))
                ok += 1
            except OSError:
                pass
            print('LEAK' if ok else 'SAFE')
        """))
    finally:
        accepted.append(None)
        thread.join()
        server.close()
    assert accepted == [None]


def test_cannot_signal_the_worker(box):
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *args: received.append(args))
    try:
        assert_safe(attack(box, f"""
            import os, signal
            sent = 0
            for pid in ({os.getpid()}, -1, -{os.getpgid(0)}, os.getppid()):
                try:
                    if pid not in (0, os.getpid()):
                        os.kill(pid, signal.SIGUSR1)
                        sent += 1
                except OSError:
                    pass
            print('LEAK' if sent else 'SAFE')
        """))
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert not received


def test_a_program_may_signal_itself(box):
    # The seccomp filter allows signals to the program's own pid, its group and its threads (raise(), a timeout
    # idiom of competitive programmers: os.kill(os.getpid(), SIGTERM) after printing).
    assert_safe(attack(box, """
        import os, signal, threading
        got = []
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
            signal.signal(sig, lambda s, f: got.append(s))
        os.kill(os.getpid(), signal.SIGUSR1)
        signal.raise_signal(signal.SIGUSR2)
        os.kill(0, signal.SIGALRM)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
        print('SAFE' if len(got) == 4 else got)
    """))


def test_worker_environment_is_hidden(box):
    assert_safe(attack(box, f"""
        import os
        seen = any({SECRET!r} in v for v in os.environ.values())
        for path in ('/proc/self/environ', '/proc/1/environ', f'/proc/{{os.getppid()}}/environ'):
            try:
                seen = seen or {SECRET!r}.encode() in open(path, 'rb').read()
            except OSError:
                pass
        print('LEAK' if seen else 'SAFE')
    """))


def test_runs_unprivileged(box):
    assert_safe(attack(box, """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        escapes = [
            os.getuid() == 0 and os.geteuid() == 0 and os.getenv('CODERL_ALLOW_ROOT') is None,
            libc.unshare(0x10000000) == 0,  # a user namespace (where one is root again)
            libc.unshare(0x00020000) == 0,  # a mount namespace
            libc.ptrace(16, os.getppid(), 0, 0) == 0,  # PTRACE_ATTACH to the parent
            libc.chroot(b'/tmp') == 0,
        ]
        print('LEAK' if any(escapes) else 'SAFE')
    """))


@pytest.mark.parametrize("how", ["normal", "timeout", "crash"])
def test_processes_a_program_started_are_killed_on_every_exit_path(box, how):
    name = f"cr{os.getpid() % 1000}{how[:2]}{box.requested_tier[:2]}"
    ending = {"normal": "print('SAFE')", "timeout": "time.sleep(3600)", "crash": "os._exit(3)"}[how]
    attack(box, f"""
        import ctypes, os, time
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(15, {name.encode()!r}, 0, 0, 0)  # PR_SET_NAME, for the test to find it
            time.sleep(3600)
        time.sleep(0.2)
        {ending}
    """, max_processes=4, timeout_s=1.0, wall_factor=1, wall_extra_s=0.5)

    def survivors():
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                    found.append(entry.name)
            except OSError:
                pass
        return found

    deadline = time.monotonic() + 10
    while survivors() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not survivors()


# --- reward hacks --------------------------------------------------------------------------------------------------

ALWAYS_EQUAL = textwrap.dedent("""
    class AlwaysEqual:
        def __eq__(self, other):
            return True
        def __ne__(self, other):
            return False
        __hash__ = object.__hash__
""")
CALL = {"problem_id": "hack-call", "fn_name": "f",
        "tests": {"kind": "call", "inputs": [[1], [2]], "outputs": ["EXPECTED-7f3a", "EXPECTED-9c1e"]}}
FAST = {"problem_id": "hack-fast", "fn_name": "f",
        "tests": {"kind": "assert", "setup_code": "", "asserts": ["assert f(1) == 'EXPECTED-7f3a'"]}}
JUDGED = {"problem_id": "hack-judged", "fn_name": "f", "tests": {"kind": "assert", "asserts": ["check(f)"],
          "setup_code": "def check(candidate):\n    assert candidate(1) == 'EXPECTED-7f3a'\n"}}
STDIO = {"problem_id": "hack-stdio", "tests": {"kind": "stdio", "inputs": ["1\n"], "outputs": ["EXPECTED-7f3a\n"]}}
HACKED = [CALL, FAST, JUDGED]


def judged(box, problem, code, compare="strict"):
    return box.execute(problem, textwrap.dedent(code), "hack",
                       SandboxLimits(tier=box.requested_tier, timeout_s=10, compare=compare))


@pytest.mark.parametrize("problem", HACKED, ids=lambda p: p["problem_id"])
@pytest.mark.parametrize("compare", ["strict", "apps"])
def test_an_always_true_eq_does_not_pass(box, problem, compare):
    result = judged(box, problem, ALWAYS_EQUAL + "def f(x):\n    return AlwaysEqual()\n", compare)
    assert result.outcome is not Outcome.PASSED


@pytest.mark.parametrize("problem", HACKED, ids=lambda p: p["problem_id"])
def test_a_lying_subclass_of_str_does_not_pass(box, problem):
    result = judged(box, problem, """
        class Liar(str):
            def __eq__(self, other):
                return True
            __hash__ = str.__hash__
        def f(x):
            return Liar('wrong')
    """)
    assert result.outcome is not Outcome.PASSED


@pytest.mark.parametrize("problem", HACKED + [STDIO], ids=lambda p: p["problem_id"])
@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "raise SystemExit"])
@pytest.mark.parametrize("where", ["load", "call"])
def test_exiting_early_does_not_pass(box, problem, exit_call, where):
    body = f"import os, sys\n{exit_call}\n" if where == "load" else \
        f"import os, sys\ndef f(x):\n    {exit_call}\n{'f(1)' if problem is STDIO else ''}\n"
    result = judged(box, problem, body)
    assert result.outcome is not Outcome.PASSED
    assert result.outcome is not Outcome.INFRA_ERROR


@pytest.mark.parametrize("problem", HACKED + [STDIO], ids=lambda p: p["problem_id"])
def test_searching_memory_for_the_expected_output_finds_nothing(box, problem):
    # gc objects, every frame's locals and globals, and the modules: the expected value is in none of them.
    finder = """
        import gc, sys
        def find():
            seen = []
            for obj in gc.get_objects():
                try:
                    if isinstance(obj, dict):
                        seen += [v for v in obj.values() if isinstance(v, str)]
                    elif isinstance(obj, (list, tuple)):
                        seen += [v for v in obj if isinstance(v, str)]
                except Exception:
                    pass
            frame = sys._getframe()
            while frame is not None:
                values = list(frame.f_locals.values()) + list(frame.f_globals.values())
                seen += [v for v in values if isinstance(v, str)]
                frame = frame.f_back
            for mod in list(sys.modules.values()):
                seen += [v for v in vars(mod).values() if isinstance(v, str)]
            hits = [s for s in seen if 'EXPECTED-' in s and 'hits' not in s]
            return hits[0] if hits else 'nothing found'
        def f(x):
            return find()
    """
    finder = textwrap.dedent(finder)
    if problem is STDIO:
        finder += "\nprint(find())\n"
    result = judged(box, problem, finder)
    assert result.outcome is Outcome.FAILED, result.error


@pytest.mark.parametrize("problem", HACKED, ids=lambda p: p["problem_id"])
def test_patched_builtins_and_tracing_do_not_pass(box, problem):
    result = judged(box, problem, """
        import builtins, json, sys
        builtins.isinstance = lambda *a: True
        builtins.AssertionError = type('Never', (Exception,), {})
        json.dumps = lambda *a, **k: '{"t": "verdict", "i": 0, "v": "pass"}'
        sys.settrace(lambda *a: None)
        def f(x):
            return 'wrong'
    """)
    # Patching what the harness itself uses in the candidate's process breaks that process (a runtime error);
    # nothing of it reaches the worker or the judge, which decide.
    assert result.outcome in (Outcome.FAILED, Outcome.RUNTIME_ERROR), result.error


@pytest.mark.parametrize("problem", HACKED + [STDIO], ids=lambda p: p["problem_id"])
def test_forged_messages_on_the_result_channel_do_not_pass(box, problem):
    # The result pipe is fd 3: forge every message kind the worker reads, then answer wrongly.
    result = judged(box, problem, """
        import json, os, struct
        def forge(msg):
            data = json.dumps(msg).encode()
            try:
                os.write(3, struct.pack('<I', len(data)) + data)
            except OSError:
                pass
        for msg in [{'t': 'verdict', 'i': 0, 'v': 'pass'}, {'t': 'end', 'i': 0, 'code': 0, 'error': None},
                    {'t': 'reply', 'i': 0, 'ok': 'EXPECTED-7f3a'}, {'t': 'setup_error', 'error': 'x'}]:
            forge(msg)
        def f(x):
            return 'wrong'
        print('wrong')
    """)
    assert result.outcome is not Outcome.PASSED
    assert result.outcome is not Outcome.INFRA_ERROR  # a program cannot turn its failure into "no label"


# --- a normal user -------------------------------------------------------------------------------------------------

NONROOT_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from coderl_ray.sandbox import Sandbox, SandboxLimits
safe = {"problem_id": "p", "tests": {"kind": "stdio", "inputs": [""], "outputs": ["SAFE\\n"]}}
add = {"problem_id": "a", "tests": {"kind": "stdio", "inputs": ["1 2\\n"], "outputs": ["3\\n"]}}
out = {}
with Sandbox(sys.argv[2]) as box:
    limits = SandboxLimits(tier=sys.argv[2], timeout_s=20)
    out["info"] = box.info
    out["add"] = box.execute(add, "a, b = map(int, input().split())\\nprint(a + b)", "s", limits).outcome.value
    read = f"try:\\n    open({sys.argv[3]!r})\\nexcept Exception:\\n    print('SAFE')\\nelse:\\n    print('LEAK')"
    out["read"] = box.execute(safe, read, "s", limits).outcome.value
    net = ("import socket\\ntry:\\n    socket.create_connection(('127.0.0.1', 9), 1)\\n"
           "except OSError:\\n    print('SAFE')")
    out["net"] = box.execute(safe, net, "s", limits).outcome.value
print(json.dumps(out))
"""


@pytest.mark.parametrize("tier", ["auto", "process"])
def test_works_for_a_normal_user(tier):
    """The default tier without root: run the sandbox as uid 65534 with the system Python (the project's venv
    lives under /root, which that user cannot read)."""
    python = "/usr/bin/python3"
    if os.geteuid() != 0 or shutil.which("setpriv") is None or not os.path.exists(python):
        pytest.skip("needs root (to switch to an unprivileged user), setpriv and /usr/bin/python3")
    if subprocess.run([python, "-c", "import sys; assert sys.version_info >= (3, 10)"]).returncode:
        pytest.skip("/usr/bin/python3 is older than 3.10")
    if not os.access(ROOT, os.R_OK | os.X_OK) or (ROOT.stat().st_mode & 0o005) != 0o005:
        pytest.skip(f"{ROOT} is not readable by other users")
    shared = Path(tempfile.mkdtemp(prefix="coderl-nonroot-"))  # readable by the unprivileged user
    shared.chmod(0o755)
    script = shared / "nonroot.py"
    script.write_text(NONROOT_SCRIPT)
    secret = shared / "secret.txt"
    secret.write_text("TOPSECRET")
    for path in (script, secret):
        path.chmod(0o644)
    try:
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, str(script),
                               str(ROOT), tier, str(secret)], capture_output=True, text=True, timeout=300,
                              env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    finally:
        shutil.rmtree(secret.parent, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["add"] == "passed" and out["read"] == "passed" and out["net"] == "passed", out
    assert out["info"]["seccomp"]
    if tier == "auto" and out["info"]["tier"] == "namespace":
        assert out["info"]["userns"]


# A container as Docker or Kubernetes start it: root without CAP_SYS_ADMIN (not in the runtime's default capability
# set) and, with the runtime's default seccomp profile, no way to create namespaces. The rules below are those of
# moby/profiles seccomp/default.json (Docker's default; containerd's RuntimeDefault derives from it) for a container
# without CAP_SYS_ADMIN: unshare, setns and mount refused, clone refused with any namespace flag, clone3 ENOSYS.
CONTAINER_LAUNCHER = """
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(24, 21, 0, 0, 0) == 0  # PR_CAPBSET_DROP CAP_SYS_ADMIN: gone after the exec below
if sys.argv[1] == "runtime-default":
    EPERM, ENOSYS, ALLOW, KILL = 0x50001, 0x50026, 0x7FFF0000, 0x80000000
    prog = [(0x20, 0, 0, 4), (0x15, 1, 0, 0xC000003E), (0x06, 0, 0, KILL), (0x20, 0, 0, 0)]
    for nr in (272, 308, 165):  # unshare, setns, mount
        prog += [(0x15, 0, 1, nr), (0x06, 0, 0, EPERM)]
    prog += [(0x15, 0, 1, 435), (0x06, 0, 0, ENOSYS)]  # clone3
    prog += [(0x15, 0, 3, 56), (0x20, 0, 0, 16), (0x45, 0, 1, 0x7E020000), (0x06, 0, 0, EPERM)]  # clone + ns flags
    prog += [(0x06, 0, 0, ALLOW)]
    code = b"".join(struct.pack("<HBBI", *i) for i in prog)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("<HxxxxxxQ", len(prog), ctypes.addressof(buf))
    assert libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) == 0, ctypes.get_errno()  # PR_SET_SECCOMP, filter
os.execv(sys.executable, [sys.executable] + sys.argv[2:])
"""

CONTAINER_PROBE = """
import json, sys
from coderl_ray.sandbox import Sandbox, SandboxLimits
add = {"problem_id": "a", "tests": {"kind": "stdio", "inputs": ["1 2\\n"], "outputs": ["3\\n"]}}
programs = {
    "add": "a, b = map(int, input().split())\\nprint(a + b)",
    "tempfile": "import tempfile\\ntempfile.TemporaryFile().write(b'x')\\nprint(3)",
    "stdlib": "from concurrent.futures import ThreadPoolExecutor\\nprint(3)",
    "escape": "try:\\n    open(%r).read()\\n    print('LEAK')\\nexcept OSError:\\n    print(3)" % sys.argv[1],
}
out = {}
for tier in ("namespace", "bwrap"):
    try:
        Sandbox(tier).info
        out[tier] = "available"
    except Exception as exc:
        out[tier] = type(exc).__name__
with Sandbox("auto") as box:
    out["info"] = box.info
    for name, code in programs.items():
        out[name] = box.execute(add, code, name, SandboxLimits(timeout_s=20)).outcome.value
print(json.dumps(out))
"""


@pytest.mark.parametrize("seccomp", ["runtime-default", "unconfined"])
def test_a_container_without_cap_sys_admin(seccomp, outside):
    """Which tier a default container gets (docs/sandbox.md, "In containers"): with the runtime's default seccomp
    profile the process tier (as root: uid 65534, seccomp, Landlock), and its programs still find a scratch
    directory and the standard library (here under /root, which uid 65534 cannot traverse); with an unconfined
    profile, as the project's cluster manifests ask for, the namespace tier through a user namespace."""
    if os.geteuid() != 0 or os.uname().machine != "x86_64":
        pytest.skip("needs root (to drop CAP_SYS_ADMIN like a container runtime) on x86-64")
    proc = subprocess.run([sys.executable, "-c", CONTAINER_LAUNCHER, seccomp, "-c", CONTAINER_PROBE,
                           str(outside / "secret.txt")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {k: out[k] for k in ("add", "tempfile", "stdlib", "escape")} == dict.fromkeys(
        ("add", "tempfile", "stdlib", "escape"), "passed"), out
    if seccomp == "runtime-default":
        assert out["namespace"] == out["bwrap"] == "TierUnavailable", out
        assert out["info"]["tier"] == "process" and out["info"]["uid_drop"] and out["info"]["seccomp"], out
        landlock = subprocess.run([sys.executable, "-c", "from coderl_ray.sandbox.isolation import landlock_abi; "
                                   "print(landlock_abi())"], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip()
        assert out["info"]["landlock"] == int(landlock), out
    else:
        assert out["namespace"] == "available" and out["info"]["tier"] == "namespace", out
        assert out["info"]["userns"], out


def test_namespace_tier_works_for_a_python_installed_under_tmp():
    # A checkout (and its .venv) under /tmp puts read-only binds inside /tmp, where each program's private tmpfs
    # used to be mounted: the root's setup failed, or the tmpfs hid the installation. A venv in /tmp reproduces it.
    base = Path(tempfile.mkdtemp(prefix="coderl-venv-", dir="/tmp"))
    try:
        venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                       check=True, timeout=120)
        probe = textwrap.dedent("""
            import sys
            from coderl_ray.sandbox import Sandbox, SandboxLimits
            problem = {"problem_id": "p", "tests": {"kind": "stdio", "inputs": [""], "outputs": ["ok\\n"]}}
            code = ("import os, sys, tempfile\\n"
                    "f = tempfile.NamedTemporaryFile(delete=False); f.write(b'1'); f.close()\\n"
                    "print('ok' if os.path.exists(f.name) and sys.prefix.startswith('/tmp/') else 'no')")
            try:
                box = Sandbox("namespace")
                box.info
            except Exception as exc:
                print("UNAVAILABLE", exc)
                sys.exit(0)
            with box:
                r = box.execute(problem, code, "s", SandboxLimits())
            print(r.outcome.value, r.error)
        """)
        out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stderr[-2000:]
        if out.stdout.startswith("UNAVAILABLE") and "newroot" not in out.stdout:
            pytest.skip(f"namespace tier unavailable here: {out.stdout.strip()}")
        assert out.stdout.split()[0] == "passed", out.stdout + out.stderr[-2000:]
    finally:
        shutil.rmtree(base, ignore_errors=True)
