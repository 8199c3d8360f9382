"""Correct programs judged right: the idioms that once got false verdicts, in every isolation tier and both modes.

* ``strict``: what the program does when run as a script with the test's input on stdin, test after test.
* ``apps``: what APPS's own harness decides. The expected ``apps`` verdicts below were produced by the real harness
  (hendrycks/apps ``eval/testing_util.run_test`` at 362aedc, in a ``multiprocessing`` child as its
  ``test_one_solution.py`` runs it, with pyext 0.7; and salesforce/CodeRL's copy, ``utils/testing_util.py``, which
  agreed on every test it ran), on 2026-12-02. CI cannot fetch that code, so
  :func:`test_a_reproduction_of_the_apps_harness_gives_the_recorded_verdicts` re-derives them from a self-contained
  reproduction of the mechanism that decides them: the program rewritten into ``def code():`` and called under
  APPS's five stacked ``unittest.mock.patch`` decorators, with the process's stdin at ``/dev/null``.

Per-test results: ``True`` passed, ``False`` wrong answer, ``None`` runtime error (APPS's -1).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from coderl_ray.records import Outcome
from coderl_ray.sandbox import SandboxLimits
from tests.sandbox_tiers import TIERS, open_sandbox

ADD3 = {"problem_id": "add3", "tests": {"kind": "stdio", "inputs": ["1 2\n", "3 4\n", "5 6\n"],
                                        "outputs": ["3\n", "7\n", "11\n"]}}
P, F, E = [True] * 3, [False] * 3, [None] * 3

# (name, program, strict results, apps results as APPS's harness gives them)
STDIN_CASES = [
    # Each test sees its own stdin, whatever the program does with fd 0 (and fds 1, 2) in earlier tests.
    ("open(0).read()", "data = open(0).read().split()\nprint(int(data[0]) + int(data[1]))", P, P),
    ("open(0).readlines()", "l = open(0).readlines()\na, b = map(int, l[0].split())\nprint(a + b)", P, P),
    ("with open(0)", "with open(0) as f:\n    a, b = map(int, f.read().split())\nprint(a + b)", P, P),
    ("open(0) kept by a module global",
     "f = open(0)\na, b = map(int, f.read().split())\ndef g():\n    return a + b\nprint(g())", P, P),
    ("sys.stdin = open(0)", "import sys\nsys.stdin = open(0)\na, b = map(int, input().split())\nprint(a + b)", P, P),
    # APPS runs every test in one process: the second os.close(0) fails there.
    ("os.close(0)", "import os\ns = input()\nos.close(0)\na, b = map(int, s.split())\nprint(a + b)",
     P, [True, None, None]),
    ("sys.stdin.close()", "import sys\ns = input()\nsys.stdin.close()\na, b = map(int, s.split())\nprint(a + b)",
     P, P),
    ("os.fdopen(0)", "import os\nd = os.fdopen(0, 'rb').read().split()\nprint(int(d[0]) + int(d[1]))", P, E),
    ("os.read(0)", "import os\nd = os.read(0, 100).split()\nprint(int(d[0]) + int(d[1]))", P, E),
    ("sys.stdout = open(1)", "import sys\nsys.stdout = open(1, 'w')\na, b = map(int, input().split())\nprint(a + b)",
     P, F),
    ("with open(1)", "a, b = map(int, input().split())\nwith open(1, 'w') as f:\n    f.write(str(a + b) + '\\n')",
     P, F),
    ("os.close(1) after printing",
     "import os\na, b = map(int, input().split())\nprint(a + b, flush=True)\nos.close(1)", P, [True, None, None]),
    ("os.close(2) at the end",
     "import os, sys\na, b = map(int, input().split())\nprint('note', file=sys.stderr)\nprint(a + b)\n"
     "sys.stderr.flush()\nos.close(2)", P, [True, None, None]),
    # stdin bound at import: APPS patches read/readline/readlines on exactly that object.
    ("from sys import stdin; readline",
     "from sys import stdin\na, b = map(int, stdin.readline().split())\nprint(a + b)", P, P),
    ("from sys import stdin; readlines",
     "from sys import stdin\nl = stdin.readlines()\na, b = map(int, l[0].split())\nprint(a + b)", P, P),
    ("from sys import stdin; read", "from sys import stdin\nl = stdin.read().split()\nprint(int(l[0]) + int(l[1]))",
     P, P),
    ("input = stdin.readline",
     "from sys import stdin\ninput = stdin.readline\na, b = map(int, input().split())\nprint(a + b)", P, P),
    ("readline past the input's end",  # APPS's patched readline raises StopIteration after the last line
     "from sys import stdin\na, b = map(int, stdin.readline().split())\nstdin.readline()\nstdin.readline()\n"
     "print(a + b)", P, E),
    ("readline keeps no line end in APPS", "from sys import stdin\nline = stdin.readline()\nprint(len(line))",
     F, [True, False, False]),
    ("for line in stdin (not patched)",
     "from sys import stdin\nfor line in stdin:\n    a, b = map(int, line.split())\n    print(a + b)", P, F),
    ("stdin.buffer", "from sys import stdin\nl = stdin.buffer.read().split()\nprint(int(l[0]) + int(l[1]))", P, E),
    ("sys.stdin.buffer", "import sys\nl = sys.stdin.buffer.read().split()\nprint(int(l[0]) + int(l[1]))", P, E),
    ("bare stdin (APPS's rewrite binds it)", "a, b = map(int, stdin.readline().split())\nprint(a + b)",
     E, P),
    ("from sys import stdin after code (inside code())",
     "x = 1\nfrom sys import stdin\na, b = map(int, stdin.readline().split())\nprint(a + b)", P, P),
    ("sys.stdin.readline", "import sys\na, b = map(int, sys.stdin.readline().split())\nprint(a + b)", P, P),
]
IDS = [c[0] for c in STDIN_CASES]


@pytest.fixture(scope="module", params=TIERS)
def box(request):
    sandbox = open_sandbox(request.param)
    yield sandbox
    sandbox.close()


def run(box, problem, code, compare, **limits):
    limits.setdefault("timeout_s", 10.0)
    limits.setdefault("program_timeout_s", 60.0)
    return box.execute(problem, code, "s", SandboxLimits(tier=box.requested_tier, compare=compare, **limits))


@pytest.mark.parametrize("compare", ["strict", "apps"])
@pytest.mark.parametrize("name,code,strict,apps", STDIN_CASES, ids=IDS)
def test_stdin_idioms(box, compare, name, code, strict, apps):
    result = run(box, ADD3, code, compare)
    assert result.test_results == (strict if compare == "strict" else apps), result.error


# A reproduction of how APPS's harness runs a standard-input program (hendrycks/apps eval/testing_util.py: the
# rewrite in run_test, and call_method), written for this test. Each case prints its per-test results.
APPS_REPRODUCTION = textwrap.dedent('''
    import json, os, sys, types
    from io import StringIO
    from unittest.mock import mock_open, patch

    def rewrite(program):
        # Lines starting with "import "/"from " stay at module level until the first other line; the rest becomes
        # the body of code(), after two module-level bindings of the harness's streams.
        lines = [x + "\\n" if x.startswith(("from ", "import ")) else "\\t" + x + "\\n" for x in program.split("\\n")]
        out, started = "import sys\\n", False
        for x in lines:
            if x.startswith("\\t") and not started:
                out += "stdin = sys.stdin\\nstdout = sys.stdout\\ndef code():\\n"
                started = True
            elif started and x.startswith(("from ", "import ")):
                x = "\\t" + x
            out += x
        return out

    def call_method(method, text):
        lines = iter(text.split("\\n"))

        # APPS's five decorators, in its order. Python enters stacked decorators' patches innermost first: the
        # three method patches land on the object that is sys.stdin before sys.stdin itself is replaced.
        @patch("builtins.open", mock_open(read_data=text))
        @patch("sys.stdin", StringIO(text))
        @patch("sys.stdin.readline", lambda *args: next(lines))
        @patch("sys.stdin.readlines", lambda *args: text.split("\\n"))
        @patch("sys.stdin.read", lambda *args: text)
        def inner(m):
            try:
                return m()
            except SystemExit:
                pass
        return inner(method)

    def run(program, tests):
        module = types.ModuleType("tmp_sol")
        exec(rewrite(program), module.__dict__)
        results = []
        for text, expected in tests:
            real_stdout, sys.stdout = sys.stdout, StringIO()
            try:
                call_method(module.code, text)
                ok = True
            except Exception:
                ok = False
            captured, sys.stdout = sys.stdout.getvalue(), real_stdout
            # APPS's first comparison step decides every case here (the outputs are single numbers).
            results.append(captured.strip() == expected.strip() if ok else None)
        return results

    programs, tests = json.load(open(sys.argv[1]))
    for i, program in enumerate(programs):
        # A fresh process per program, as APPS's multiprocessing child (whose stdin is /dev/null, as here).
        pid = os.fork()
        if pid == 0:
            results = run(program, tests)
            with open(f"{sys.argv[2]}.{i}", "w") as out:  # a new descriptor: the program may have closed 0-2
                json.dump(results, out)
            os._exit(0)
        os.waitpid(pid, 0)
''')


def test_a_reproduction_of_the_apps_harness_gives_the_recorded_verdicts(tmp_path):
    tests = list(zip(ADD3["tests"]["inputs"], ADD3["tests"]["outputs"]))
    spec, out = tmp_path / "cases.json", tmp_path / "results"
    spec.write_text(json.dumps([[code for _, code, _, _ in STDIN_CASES], tests]))
    proc = subprocess.run([sys.executable, "-c", APPS_REPRODUCTION, str(spec), str(out)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = [json.loads(out.with_name(f"results.{i}").read_text()) for i in range(len(STDIN_CASES))]
    assert dict(zip(IDS, got)) == {name: apps for name, _, _, apps in STDIN_CASES}


# --- what a program may use: a scratch directory, the standard library -------------------------------------------

@pytest.mark.parametrize("compare", ["strict", "apps"])
@pytest.mark.parametrize("code", [
    "import tempfile\nf = tempfile.TemporaryFile()\nf.write(b'x')\nf.close()\n"
    "with tempfile.NamedTemporaryFile('w') as g:\n    g.write('y')\na, b = map(int, input().split())\nprint(a + b)",
    # Not preloaded by the zygote: imported from the installation, which the program's uid may not reach by path.
    "from concurrent.futures import ThreadPoolExecutor\nimport xml.dom.minidom, email.mime.text\n"
    "a, b = map(int, input().split())\nwith ThreadPoolExecutor(1) as pool:\n    print(pool.submit(sum, (a, b)).result())",
], ids=["tempfile", "stdlib-import"])
def test_scratch_files_and_standard_library_imports(box, compare, code):
    result = run(box, ADD3, code, compare)
    assert result.outcome is Outcome.PASSED, result.error


# --- mappings and sequences that Python compares equal -----------------------------------------------------------

MAP = {"problem_id": "map", "fn_name": "f",
       "tests": {"kind": "call", "inputs": [["a"], ["b"]], "outputs": [{"a": 1}, {"b": 1}]}}
LIST = {"problem_id": "list", "fn_name": "f", "tests": {"kind": "call", "inputs": [[1], [2]],
                                                       "outputs": [[1, 2], [2, 3]]}}
# (problem, program, passes in both modes): the apps column is what APPS's harness gave for the same programs.
VALUE_CASES = [
    (MAP, "from collections import ChainMap\ndef f(k):\n    return ChainMap({k: 1}, {k: 2})", True),
    (MAP, "from collections import OrderedDict\ndef f(k):\n    return OrderedDict([(k, 1)])", True),
    (MAP, "from collections import Counter\ndef f(k):\n    return Counter(k)", True),
    (MAP, "from collections import Counter\ndef f(k):\n    c = Counter(k)\n    c['z'] = 0\n    return c", False),
    (MAP, "from collections import defaultdict\ndef f(k):\n    d = defaultdict(int)\n    d[k] += 1\n    return d",
     True),
    (MAP, "from collections import UserDict\ndef f(k):\n    return UserDict({k: 1})", True),
    (MAP, "import types\ndef f(k):\n    return types.MappingProxyType({k: 1})", True),
    (MAP, "class Always:\n    def __eq__(self, other):\n        return True\ndef f(k):\n    return Always()", False),
    (MAP, "from collections import ChainMap\nclass Liar(ChainMap):\n    def __eq__(self, other):\n        return True\n"
          "def f(k):\n    return Liar({'wrong': 1})", False),
    (LIST, "from collections import UserList\ndef f(x):\n    return UserList([x, x + 1])", True),
    (LIST, "from collections import deque\ndef f(x):\n    return deque([x, x + 1])", False),  # deque != list
]


@pytest.mark.parametrize("compare", ["strict", "apps"])
@pytest.mark.parametrize("problem,code,passes", VALUE_CASES, ids=[c[1].split("return ")[-1] for c in VALUE_CASES])
def test_standard_library_containers_equal_to_the_expected_value(box, compare, problem, code, passes):
    result = run(box, problem, code, compare)
    assert (result.outcome is Outcome.PASSED) is passes, result.error
    if not passes:
        assert result.outcome is Outcome.FAILED, result.error


def test_mbpp_87_written_with_chainmap_directly(box):
    # MBPP 87's reference wraps ChainMap in dict(); returning the ChainMap is as correct, as Python's == says.
    problem = {"problem_id": "mbpp/87", "fn_name": "merge_dictionaries_three", "tests": {
        "kind": "assert", "setup_code": "",
        "asserts": ["assert merge_dictionaries_three({'R': 'Red', 'B': 'Black'}, {'G': 'Green'}, {'B': 'Blue'})"
                    " == {'B': 'Black', 'R': 'Red', 'G': 'Green'}",
                    "import collections\nassert merge_dictionaries_three({1: 2}, {}, {3: 4}) == "
                    "collections.ChainMap({1: 2}, {3: 4})"]}}
    code = "import collections as ct\ndef merge_dictionaries_three(a, b, c):\n    return ct.ChainMap({}, a, b, c)"
    result = run(box, problem, code, "strict")
    assert result.outcome is Outcome.PASSED, result.error
