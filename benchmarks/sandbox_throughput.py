"""Sandbox throughput: programs per second per core, against a naive baseline measured in the same run.

    .venv/bin/python benchmarks/sandbox_throughput.py              # all scenarios, then Ray Data
    .venv/bin/python benchmarks/sandbox_throughput.py --quick      # fewer programs (a smoke run)
    .venv/bin/python benchmarks/sandbox_throughput.py --scenarios a,e --no-ray

Scenarios (issue 3): (a) a trivial stdio program with 1 test, (b) a stdio program with 10 tests, (c) a call-based
program with 10 tests, (d) MBPP reference solutions with their asserts (``../shared/data/mbpp``), (e) the trivial
program mixed with 10% programs that never end. Both sides run one thread per core and count programs per second
divided by the cores. The baseline is the simplest honest runner: a fresh ``python`` subprocess per program that
runs the tests and prints outputs for the parent to compare (no isolation at all). For (e) the report also gives
the cost of the timeouts against their own limit: (elapsed - time of the fast programs alone) / (limits / cores).

(m) is the command a user runs: ``coderl-ray execute --num-workers 1`` (Ray in-process, one sandbox executor) on
1,000 and on 4,000 programs of (a); the marginal rate, 3,000 / (time of 4,000 - time of 1,000), cancels Ray's
start-up and shutdown. Its CPU rate divides 3,000 by the difference in CPU time of the whole command (driver, Ray's
processes, executor, zygote and programs), read from a cgroup the command runs in (root), else from the command's
reaped children. Its ratio is against the baseline's rate for (a) per core.

Then 10,000 programs of (a) go through the Ray Data execution stage on a local 2-CPU Ray, compared with the
threaded rate of (a) on those cores. Timings on a shared machine are noisy: each number is the best of
``--repeats`` runs, and the ratios (same run, same machine) are what to compare. "Per CPU-second" divides the
programs by the CPU time every process involved consumed (worker, zygote and children; parent and children for the
baseline): on a machine shared with other work it is what one idle core would do, wall-clock aside.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coderl_ray.sandbox import Sandbox, SandboxLimits, execute_many  # noqa: E402
from coderl_ray.sandbox.compare import strict_stdout_equal, strict_value_equal  # noqa: E402

SHARED = Path(os.environ.get("CODERL_SHARED_DATA", ROOT.parent / "shared" / "data"))

TRIVIAL = "a, b = map(int, input().split())\nprint(a + b)"
LOOP = "while True:\n    pass"


def stdio_problem(pid: str, n: int) -> dict:
    inputs = [f"{i} {i * 7}\n" for i in range(n)]
    return {"problem_id": pid, "tests": {"kind": "stdio", "inputs": inputs,
                                         "outputs": [f"{i * 8}\n" for i in range(n)]}}


CALL_PROBLEM = {"problem_id": "call10", "fn_name": "add",
                "tests": {"kind": "call", "inputs": [[i, i * 7] for i in range(10)],
                          "outputs": [i * 8 for i in range(10)]}}
CALL_CODE = "def add(a, b):\n    return a + b"


# --- the naive baseline ----------------------------------------------------------------------------------------------

_BASELINE_HARNESS = r"""
import io, json, sys
spec = json.loads(sys.stdin.read())
real = sys.stdout
out = []
if spec["kind"] == "stdio":
    code = compile(spec["code"], "<solution>", "exec")
    for inp in spec["inputs"]:
        sys.stdin, sys.stdout = io.StringIO(inp), io.StringIO()
        try:
            exec(code, {"__name__": "__main__"})
            out.append(sys.stdout.getvalue())
        except BaseException as exc:
            out.append(None)
elif spec["kind"] == "call":
    g = {}
    exec(spec["code"], g)
    for args in spec["inputs"]:
        try:
            out.append(g[spec["fn_name"]](*args))
        except BaseException:
            out.append(None)
else:
    g = {}
    exec(spec["code"] + "\n" + spec.get("setup_code", ""), g)
    for a in spec["asserts"]:
        try:
            exec(a, g)
            out.append(True)
        except BaseException:
            out.append(False)
real.write(json.dumps(out))
"""


def baseline_execute(problem: dict, code: str, timeout_s: float) -> bool:
    tests = problem["tests"]
    spec = {"kind": tests["kind"], "code": code, "fn_name": problem.get("fn_name"),
            "inputs": tests.get("inputs", []), "asserts": tests.get("asserts", []),
            "setup_code": tests.get("setup_code", "")}
    try:
        proc = subprocess.run([sys.executable, "-c", _BASELINE_HARNESS], input=json.dumps(spec).encode(),
                              capture_output=True, timeout=timeout_s * max(1, len(spec["inputs"] or spec["asserts"])))
    except subprocess.TimeoutExpired:
        return False
    try:
        got = json.loads(proc.stdout)
    except ValueError:
        return False
    if tests["kind"] == "stdio":
        return all(g is not None and strict_stdout_equal(g, e) for g, e in zip(got, tests["outputs"]))
    if tests["kind"] == "call":
        return all(strict_value_equal(g, e) for g, e in zip(got, tests["outputs"]))
    return all(got)


# --- measurement ---------------------------------------------------------------------------------------------------

def _proc_cpu(pid: int) -> float:
    """CPU seconds of a process and of its reaped children (utime, stime, cutime, cstime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _zygote_cpu(sandbox) -> float:
    total = 0.0
    for outer in sandbox.zygote_pids():
        total += _proc_cpu(outer)
        try:
            inner = Path(f"/proc/{outer}/task/{outer}/children").read_text().split()
        except OSError:
            inner = []
        total += sum(_proc_cpu(int(pid)) for pid in inner)
    return total


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def rate_ours(sandbox, problems, samples, limits, cores) -> tuple[float, float, list, float]:
    cpu0 = _own_cpu() + _zygote_cpu(sandbox)
    start = time.perf_counter()
    results = execute_many(problems, samples, limits, max_workers=cores, sandbox=sandbox)
    elapsed = time.perf_counter() - start
    cpu = _own_cpu() + _zygote_cpu(sandbox) - cpu0
    return len(samples) / elapsed, elapsed, results, len(samples) / max(cpu, 1e-9)


def rate_baseline(problems, samples, timeout_s, cores) -> tuple[float, float, list, float]:
    cpu0 = _own_cpu()
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(cores) as pool:
        ok = list(pool.map(lambda s: baseline_execute(problems[s["problem_id"]], s["code"], timeout_s), samples))
    elapsed = time.perf_counter() - start
    cpu = _own_cpu() - cpu0
    return len(samples) / elapsed, elapsed, ok, len(samples) / max(cpu, 1e-9)


def best_of(repeats, fn):
    runs = [fn() for _ in range(repeats)]
    return max(runs, key=lambda r: r[0])


def mbpp_set(n: int):
    from coderl_ray.data.mbpp import load_mbpp

    path = SHARED / "mbpp" / "mbpp.jsonl"
    if not path.is_file():
        return None
    # Task 123 alone runs for more than 10 s; it measures that program, not the sandbox.
    problems = [p for p in load_mbpp(path) if p["problem_id"] not in ("mbpp/123",)][:n]
    return ({p["problem_id"]: p for p in problems},
            [{"problem_id": p["problem_id"], "sample_id": p["problem_id"], "code": p["solutions"][0]}
             for p in problems])


def scenario_sets(quick: bool):
    k = 0.2 if quick else 1.0
    n = lambda x: max(20, int(x * k))  # noqa: E731
    sets = {}
    p1 = stdio_problem("stdio1", 1)
    sets["a"] = ("trivial stdio program, 1 test", {"stdio1": p1},
                 [{"problem_id": "stdio1", "sample_id": str(i), "code": TRIVIAL} for i in range(n(3000))], n(150))
    p10 = stdio_problem("stdio10", 10)
    sets["b"] = ("stdio program, 10 tests", {"stdio10": p10},
                 [{"problem_id": "stdio10", "sample_id": str(i), "code": TRIVIAL} for i in range(n(1000))], n(100))
    sets["c"] = ("call-based program, 10 tests", {"call10": CALL_PROBLEM},
                 [{"problem_id": "call10", "sample_id": str(i), "code": CALL_CODE} for i in range(n(1500))], n(150))
    mbpp = mbpp_set(n(600))
    if mbpp is not None:
        sets["d"] = ("MBPP reference solutions + asserts", mbpp[0], mbpp[1], n(200))
    mix = [{"problem_id": "stdio1", "sample_id": str(i), "code": LOOP if i % 10 == 9 else TRIVIAL}
           for i in range(n(400))]
    sets["e"] = ("(a) with 10% programs that time out", {"stdio1": p1}, mix, n(100))
    return sets


class _CgroupCPU:
    """CPU seconds of a command and all its descendants, from a cgroup it runs in (v2, or v1's cpuacct); None when
    no cgroup can be created here (not root). Reaped-children accounting would miss Ray's processes, which Ray
    does not wait for."""

    def __init__(self):
        self.path = None
        for base, usage, scale in (("/sys/fs/cgroup", "cpu.stat", None), ("/sys/fs/cgroup/cpuacct", "cpuacct.usage", 1e9)):
            if base == "/sys/fs/cgroup" and not os.path.exists(f"{base}/cgroup.controllers"):
                continue
            path = Path(base) / f"coderl-bench-{os.getpid()}-{time.monotonic_ns()}"
            try:
                path.mkdir()
            except OSError:
                continue
            self.path, self.usage, self.scale = path, path / usage, scale
            break

    def wrap(self, cmd: list[str]) -> list[str]:
        if self.path is None:
            return cmd
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh", *cmd]

    def seconds(self) -> float | None:
        if self.path is None:
            return None
        text = self.usage.read_text()
        if self.scale is None:  # v2: "usage_usec N" in cpu.stat
            return int(text.split("usage_usec")[1].split()[0]) / 1e6
        return int(text) / self.scale

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError, TypeError):
            return []

    def close(self) -> None:
        for _ in range(100):  # Ray's last processes may take a moment to leave
            try:
                if self.path is not None:
                    self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def _role(pid: int, driver: int) -> str:
    """Which part of the command a process is: the driver (the CLI), the sandbox (the executor actor, its zygote and
    the programs), or Ray's own services (GCS, raylet, dashboard, idle workers...)."""
    if pid == driver:
        return "driver"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "ray"
    return "sandbox" if b"ExecuteBatch" in cmdline or b"_harness.py" in cmdline else "ray"


def _sample_roles(meter: "_CgroupCPU", driver: int, seen: dict, stop) -> None:
    """Poll the cgroup's processes; keep each one's latest CPU (its reaped children's included: a zygote's
    programs) and role. A process's last fraction of a poll interval is missed, equally for both sizes of (m)."""
    while not stop.wait(0.2):
        for pid in meter.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
            role = seen[pid][1] if pid in seen else _role(pid, driver)
            seen[pid] = (cpu, role)


def run_cli(n: int, folder: Path, attempts: int = 3) -> tuple[float, float | None, dict]:
    """Wall seconds, CPU seconds (None without a cgroup) and CPU seconds by role (empty without a cgroup) of
    `coderl-ray execute --num-workers 1` on n programs of (a). On a machine loaded enough that Ray's own start-up
    times out, the command is run again (up to ``attempts`` times)."""
    for attempt in range(attempts):
        try:
            return _run_cli_once(n, folder)
        except RuntimeError as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _run_cli_once(n: int, folder: Path) -> tuple[float, float | None, dict]:
    problem = {**stdio_problem("stdio1", 1), "question": "add two numbers"}
    (folder / "problems.jsonl").write_text(json.dumps(problem) + "\n")
    with open(folder / f"samples{n}.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"problem_id": "stdio1", "sample_id": str(i), "code": TRIVIAL}) + "\n")
    cmd = [sys.executable, "-m", "coderl_ray.cli", "execute", "--problems", str(folder / "problems.jsonl"),
           "--samples", str(folder / f"samples{n}.jsonl"), "--out", str(folder / "results.jsonl"),
           "--num-workers", "1", "--address", "local"]
    import threading

    meter = _CgroupCPU()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    seen: dict = {}
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(meter.wrap(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_roles, args=(meter, proc.pid, seen, stop), daemon=True)
        if meter.path is not None:
            sampler.start()
        _, stderr = proc.communicate()
        proc.stderr_text = stderr
        elapsed = time.perf_counter() - start
        stop.set()
        if sampler.is_alive():
            sampler.join()
        cpu = meter.seconds()
    finally:
        meter.close()
    roles: dict = {}
    for pid_cpu, role in seen.values():
        roles[role] = roles.get(role, 0.0) + pid_cpu
    if proc.returncode != 0:
        raise RuntimeError(f"coderl-ray execute failed: {proc.stderr_text[-2000:]}")
    if f"({n} passed)" not in proc.stderr_text:
        raise RuntimeError(f"not every program passed: {proc.stderr_text.strip().splitlines()[-1]}")
    if cpu is None:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return elapsed, cpu, roles


def cli_marginal(small: int, large: int, repeats: int) -> tuple[float, float, dict]:
    """(wall programs/s, programs per CPU-second of the whole command, {role: marginal CPU ms per program}) of
    `coderl-ray execute --num-workers 1`, marginal between `small` and `large` programs; the best of `repeats`
    pairs (by wall rate)."""
    import tempfile

    best = (float("nan"), float("nan"), {})
    with tempfile.TemporaryDirectory(prefix="coderl-bench-cli-") as tmp:
        for _ in range(repeats):
            (t_small, c_small, r_small), (t_large, c_large, r_large) = (run_cli(small, Path(tmp)),
                                                                        run_cli(large, Path(tmp)))
            # On a loaded machine the start-up's variance can exceed the difference: such a pair measures nothing.
            if t_large <= t_small:
                continue
            rate = (large - small) / (t_large - t_small)
            cpu_rate = (large - small) / (c_large - c_small) if c_large > c_small else float("nan")
            by_role = {role: 1000 * (r_large.get(role, 0.0) - r_small.get(role, 0.0)) / (large - small)
                       for role in sorted(set(r_small) | set(r_large))}
            if not rate <= best[0]:
                best = (rate, cpu_rate, by_role)
    return best


def run_ray(n: int, cores: int, limits: SandboxLimits) -> float:
    import ray

    from coderl_ray.config import SandboxConfig
    from coderl_ray.execution import execute_samples

    ray.init(num_cpus=cores, resources={"sandbox": cores}, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        problem = stdio_problem("stdio1", 1)
        rows = [{"problem_id": "stdio1", "sample_id": str(i), "code": TRIVIAL} for i in range(n)]
        cfg = SandboxConfig(batch_size=256, timeout_s=limits.timeout_s)
        # Warm the executors (actor start, zygote start) so the rate is the steady state a pipeline sees.
        execute_samples(ray.data.from_items(rows[:cores * 256]), [problem], cfg).materialize()
        ds = ray.data.from_items(rows, override_num_blocks=max(cores * 4, n // 1000))
        start = time.perf_counter()
        count = 0
        for batch in execute_samples(ds, [problem], cfg).iter_batches(batch_size=1024, batch_format="pyarrow"):
            count += batch.num_rows
        elapsed = time.perf_counter() - start
        assert count == n
        return n / elapsed
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer programs per scenario")
    parser.add_argument("--scenarios", default="a,b,c,d,e,m")
    parser.add_argument("--cli-programs", default="1000,4000", help="(m): the two sizes whose difference is timed")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1.0, help="per-test limit (the never-ending programs')")
    parser.add_argument("--ray-programs", type=int, default=10_000)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--tier", default="auto")
    args = parser.parse_args()
    cores = args.cores
    limits = SandboxLimits(timeout_s=args.timeout, program_timeout_s=max(20.0, 10 * args.timeout), tier=args.tier)
    sandbox = Sandbox(args.tier)
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},"
          f" tier {sandbox.info['tier']}, {cores} threads per side, load average {os.getloadavg()[0]:.1f}")
    rows = []
    sets = scenario_sets(args.quick)
    single = None
    for key in args.scenarios.split(","):
        if key == "m":
            continue
        if key not in sets:
            print(f"({key}) skipped: data not available")
            continue
        title, problems, samples, n_base = sets[key]
        execute_many(problems, samples[:4], limits, sandbox=sandbox)  # warm the zygotes this scenario uses
        ours, ours_t, results, ours_cpu = best_of(args.repeats,
                                                  lambda: rate_ours(sandbox, problems, samples, limits, cores))
        base, base_t, _, base_cpu = best_of(args.repeats, lambda: rate_baseline(problems, samples[:n_base],
                                                                                args.timeout, cores))
        if key == "a":
            single = best_of(args.repeats, lambda: rate_ours(sandbox, problems, samples, limits, 1))[0]
        outcomes = {}
        for r in results:
            outcomes[r.outcome.value] = outcomes.get(r.outcome.value, 0) + 1
        extra = ""
        if key == "e":
            n_loop = sum(1 for s in samples if s["code"] == LOOP)
            fast_rate = next((r[2] for r in rows if r[0] == "a"), None)
            if fast_rate:
                fast_time = (len(samples) - n_loop) / (fast_rate * cores)
                timeout_cost = (ours_t - fast_time) / (n_loop * args.timeout / cores)
                extra = f"; timeouts cost {timeout_cost:.2f}x their limit"
        rows.append((key, title, ours / cores, base / cores, ours / base, outcomes, extra))
        cpu_note = "" if key == "e" else (f"; per CPU-second {ours_cpu:.0f} vs {base_cpu:.1f} "
                                          f"-> {ours_cpu / base_cpu:.1f}x")
        print(f"({key}) {title}: {ours / cores:8.1f} programs/s/core vs baseline {base / cores:6.1f} "
              f"-> {ours / base:5.1f}x{cpu_note}   outcomes {outcomes}{extra}", flush=True)
    if single is not None:
        print(f"(a) one thread: {single:.1f} programs/s (uses more than one core: the worker, the zygote and the "
              f"program run in parallel)")
    sandbox.close()
    if "m" in args.scenarios.split(","):
        small, large = (int(x) for x in args.cli_programs.split(","))
        if args.quick:
            small, large = small // 5, large // 5
        base = next((r[3] for r in rows if r[0] == "a"), None)
        if base is None:  # the baseline's rate of (a), measured here if (a) was not run
            p1 = stdio_problem("stdio1", 1)
            samples = [{"problem_id": "stdio1", "sample_id": str(i), "code": TRIVIAL} for i in range(60)]
            base = best_of(args.repeats, lambda: rate_baseline({"stdio1": p1}, samples, args.timeout, cores))[0] / cores
        rate, cpu_rate, by_role = cli_marginal(small, large, args.repeats)
        roles = ", ".join(f"{role} {ms:.2f}" for role, ms in by_role.items())
        sandbox_rate = 1000 / by_role["sandbox"] if by_role.get("sandbox") else float("nan")
        print(f"(m) coderl-ray execute --num-workers 1, marginal between {small} and {large} programs of (a): "
              f"{rate:.1f} programs/s ({rate / base:.1f}x the baseline's {base:.1f}/s per core); "
              f"{cpu_rate:.0f} programs per CPU-second of the whole command; CPU ms per program by part: {roles} "
              f"(sandbox alone: {sandbox_rate:.0f} programs per CPU-second)", flush=True)
    if not args.no_ray and "a" in [r[0] for r in rows]:
        a_rate = next(r[2] for r in rows if r[0] == "a") * cores
        n = args.ray_programs if not args.quick else min(args.ray_programs, 2000)
        ray_rate = run_ray(n, cores, limits)
        print(f"Ray Data, {n} programs of (a) on {cores} CPUs: {ray_rate:.1f} programs/s = "
              f"{ray_rate / a_rate:.0%} of the threaded rate of (a) on {cores} cores ({a_rate:.1f}/s)")


if __name__ == "__main__":
    main()
