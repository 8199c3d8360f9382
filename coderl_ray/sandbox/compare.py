"""Output comparison: ``strict`` (training rewards) and ``apps`` (the original APPS harness's verdicts).

Both run in the worker on plain data: the program's stdout text, or a return value rebuilt from the sandbox's
encoding into builtin Python types. docs/sandbox.md lists examples where the two modes disagree.

``strict``
    stdout: equal after normalising line endings (``\\r\\n``, ``\\r`` -> ``\\n``), trailing whitespace of each line and
    trailing blank lines; where the expected token is a decimal number with a fraction or exponent, the program's
    token may differ by :data:`FLOAT_TOL` (relative or absolute). Nothing else is forgiven: not leading whitespace,
    not blank lines in the middle, not token order, not case.
    return values: equal in JSON's data model (tuples are lists, dict keys are strings), ``bool`` is not a number,
    an integer expected value must be matched exactly (``2.0`` is fine), a float one within :data:`FLOAT_TOL`;
    because APPS stores some call-based outputs wrapped in a one-element list and others not, a value may also equal
    the single element of a one-element expected list.

``apps``
    A re-implementation, case by case, of ``run_test`` in hendrycks/apps ``eval/testing_util.py`` (the version
    CodeRL's ``utils/testing_util.py`` copies), documented on each step below.
"""

from __future__ import annotations

import math
import re
from typing import Any

FLOAT_TOL = 1e-6

_DECIMAL = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_SPLIT_KEEP_SPACE = re.compile(r"(\s+)")


# --- strict --------------------------------------------------------------------------------------------------------

def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _close(a: float, b: float, tol: float) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def _line_equal(actual: str, expected: str, tol: float) -> bool:
    if actual == expected:
        return True
    a_parts, e_parts = _SPLIT_KEEP_SPACE.split(actual), _SPLIT_KEEP_SPACE.split(expected)
    if len(a_parts) != len(e_parts):
        return False
    used_tolerance = False
    for a, e in zip(a_parts, e_parts):
        if a == e:
            continue
        if not (_DECIMAL.fullmatch(e) and _DECIMAL.fullmatch(a)) or not any(c in e for c in ".eE"):
            return False
        if not _close(float(a), float(e), tol):
            return False
        used_tolerance = True
    return used_tolerance


def strict_stdout_equal(actual: str, expected: str, tol: float = FLOAT_TOL) -> bool:
    """Is the program's stdout ``actual`` the expected output under the ``strict`` rules?

    >>> strict_stdout_equal("3 \\r\\n\\n", "3\\n"), strict_stdout_equal("0.3333333", "0.333333")
    (True, True)
    >>> strict_stdout_equal("2 1", "1 2")
    False
    """
    a, e = _lines(actual), _lines(expected)
    return len(a) == len(e) and all(_line_equal(x, y, tol) for x, y in zip(a, e))


def _json_key(key: Any) -> Any:
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return repr(key)
    return object()  # unique: never equal to an expected key


def _json_equal(actual: Any, expected: Any, tol: float) -> bool:
    if expected is None or isinstance(expected, bool):
        return actual is expected
    if isinstance(expected, (int, float)):
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            return False
        if isinstance(expected, int):
            return actual == expected  # an integer answer has no tolerance (2.0 == 2, 2.0000001 != 2)
        try:
            return _close(float(actual), expected, tol)
        except OverflowError:
            return False
    if isinstance(expected, str):
        return type(actual) is str and actual == expected
    if isinstance(expected, list):
        return (type(actual) in (list, tuple) and len(actual) == len(expected)
                and all(_json_equal(a, e, tol) for a, e in zip(actual, expected)))
    if isinstance(expected, dict):
        # Decoded values are trusted builtin types: dict and the stdlib dicts that keep their type on the wire
        # (OrderedDict, Counter) hold exactly the items they show; a deque is not a list, as in Python.
        if not isinstance(actual, dict) or len(actual) != len(expected):
            return False
        keyed = {}
        for k, v in actual.items():
            keyed[_json_key(k)] = v
        if len(keyed) != len(expected):
            return False
        return all(k in keyed and _json_equal(keyed[k], v, tol) for k, v in expected.items())
    return False


def strict_value_equal(actual: Any, expected: Any, tol: float = FLOAT_TOL) -> bool:
    """Is the return value ``actual`` (builtin types) the JSON value ``expected`` under the ``strict`` rules?

    >>> strict_value_equal((1, 2), [1, 2]), strict_value_equal(True, [True]), strict_value_equal(1, True)
    (True, True, False)
    """
    if _json_equal(actual, expected, tol):
        return True
    return isinstance(expected, list) and len(expected) == 1 and _json_equal(actual, expected[0], tol)


# --- apps ----------------------------------------------------------------------------------------------------------

def apps_call_inputs(inputs: list) -> list:
    """APPS undoes JSON's string dict keys on the *first* argument, and then passes only that argument:
    ``inputs = [{int(k): v for k, v in inputs[0].items()}]`` when ``inputs[0]`` is a dict whose keys all convert."""
    try:
        if isinstance(inputs[0], dict):
            return [{int(k): v for k, v in inputs[0].items()}]
    except (IndexError, ValueError, TypeError):
        pass
    return inputs


def apps_value_equal(output: Any, expected: Any) -> bool:
    """The APPS verdict for a call-based test (``output``: the rebuilt return value; ``expected``: the JSON output).

    Step by step, as APPS does it: a dict expected output becomes ``[{int(k): v}]`` (and a list whose first element
    is a dict has that element's keys converted), a tuple return value becomes a list, then the test passes if
    ``output == expected``, or ``output == expected[0]`` for a non-empty list, or the output is a list of tuples
    equal, as lists, to ``expected[0]``. Comparisons are Python's ``==`` (so ``1 == 1.0 == True``). An exception
    while comparing (e.g. a numpy array's ambiguous truth value) propagates: APPS counts it as a runtime error.
    """
    for convert_first in (False, True):
        try:
            source = expected[0] if convert_first else expected
            if isinstance(source, dict):
                expected = [{int(k): v for k, v in source.items()}]
        except (IndexError, KeyError, ValueError, TypeError):
            pass
    if isinstance(output, tuple):
        output = list(output)
    result = output == expected
    if isinstance(expected, list) and expected:
        result = result or (output == expected[0])
    try:
        if isinstance(output[0], tuple):
            result = result or ([list(x) for x in output] == expected[0])
    except Exception:
        pass
    return bool(result)


def _np_allclose(actual: list[float], expected: list[float]) -> bool:
    """``numpy.allclose`` with its defaults: |a - b| <= 1e-8 + 1e-5 |b|, infinities equal only to themselves,
    NaN equal to nothing."""
    for a, b in zip(actual, expected):
        if math.isinf(a) or math.isinf(b):
            if a != b:
                return False
        elif math.isnan(a) or math.isnan(b) or abs(a - b) > 1e-8 + 1e-5 * abs(b):
            return False
    return True


def apps_stdout_equal(captured: str, expected: str | list[str]) -> bool:
    """The APPS verdict for a standard-input test. ``captured`` is what the program wrote to ``sys.stdout`` (APPS
    captures it with a StringIO and splits it with ``str.splitlines``). The cascade, each step tried only if the
    previous ones failed:

    1. the output lines joined by ``\\n`` equal the expected text, both stripped at the ends; then the same with
       each output line stripped first;
    2. the output is a single line equal to the whole expected text;
    3. the expected text split on ``\\n``, empty lines dropped *before* stripping each line, equals the output lines;
    4. the same against the output lines with empty lines dropped (not stripped); or every line of both parses as
       one float and the lists are ``numpy.allclose`` (rtol 1e-5, atol 1e-8);
    5. (a no-op kept for fidelity) the output lines equal the expected lines turned into token sets;
    6. the *set* of per-line token *sets* is equal on both sides (line order, token order and duplicates are
       ignored), or equal after rounding every token, read as a float, to 3 decimals.
    """
    if isinstance(expected, list):
        expected = "\n".join(expected)
    output = captured.splitlines()
    if "\n".join(output).strip() == expected.strip():
        return True
    if "\n".join(o.strip() for o in output).strip() == expected.strip():
        return True
    if output == [expected]:
        return True
    exp_lines = [x.strip() for x in expected.split("\n") if x]
    if output == exp_lines:
        return True
    out_lines = [x for x in output if x]
    result = out_lines == exp_lines
    try:
        out_f = [float(x) for x in out_lines]
        exp_f = [float(x) for x in exp_lines]
        result = result or (len(out_f) == len(exp_f) and _np_allclose(out_f, exp_f))
    except (ValueError, OverflowError):
        pass
    if result:
        return True
    exp_sets = [set(line.split()) for line in exp_lines]
    if out_lines == exp_sets:
        return True
    out_sets = [set(tokens) for tokens in (line.split() for line in out_lines) if tokens]
    result = {frozenset(s) for s in out_sets} == {frozenset(s) for s in exp_sets}
    try:
        result = result or ({frozenset(round(float(t), 3) for t in s) for s in out_sets}
                            == {frozenset(round(float(t), 3) for t in s) for s in exp_sets})
    except (ValueError, OverflowError):
        pass
    return bool(result)
