"""Output comparison: strict rules, and the APPS harness's verdicts reproduced case by case (no sandbox, no Ray).

Each ``apps`` case names the step of APPS's cascade (hendrycks/apps ``eval/testing_util.py``, ``run_test``) that
decides it; docs/sandbox.md shows the same examples.
"""

from __future__ import annotations

import collections

import pytest

from coderl_ray.sandbox.wire import CandidateIterator, Opaque
from coderl_ray.sandbox.compare import (
    apps_call_inputs, apps_stdout_equal, apps_value_equal, strict_stdout_equal, strict_value_equal,
)

# (program stdout, expected stdout, strict verdict, apps verdict, why)
STDOUT_CASES = [
    ("3\n", "3\n", True, True, "identical"),
    ("3", "3\n", True, True, "missing final newline"),
    ("3 \r\n\r\n", "3\n", True, True, "line endings, trailing spaces and blank lines are normalised by both"),
    ("1\r\n2\r\n", "1\n2\n", True, True, "CRLF"),
    ("  3  \n", "3\n", False, True, "apps step 1 strips the whole text; strict keeps leading spaces"),
    ("2 1\n", "1 2\n", False, True, "apps step 6: per-line token *sets* ignore token order"),
    ("1\n2\n", "2\n1\n", False, True, "apps step 6: the set of lines ignores line order"),
    ("1 1 2\n", "1 2 2\n", False, True, "apps step 6: sets collapse duplicates"),
    ("a  b\n", "a b\n", False, True, "apps step 6: split() ignores how many spaces separate tokens"),
    ("1\n\n2\n", "1\n2\n", False, True, "apps step 4 drops empty output lines; strict keeps inner blank lines"),
    ("1\n   \n2\n", "1\n2\n", False, True, "apps step 6 drops token-less lines; strict keeps inner blank lines"),
    ("0.333\n", "0.3333333\n", False, True, "apps step 6 rounds to 3 decimals; strict tolerance is 1e-6"),
    ("0.3333334\n", "0.3333333\n", True, True, "within 1e-6 (strict) and numpy.allclose (apps step 4)"),
    ("3.0000001\n", "3\n", False, True, "an integer expected token must match exactly in strict; allclose in apps"),
    ("2\n", "2.0\n", True, True, "a decimal expected token accepts any decimal within tolerance"),
    ("1e-3\n", "0.001\n", True, True, "floats written differently"),
    ("1.5 2\n", "1.5000001 2\n", True, True, "tolerance applies token by token"),
    ("YES\n", "yes\n", False, False, "case matters in both"),
    ("1 2 3\n", "1\n2\n3\n", False, False, "line structure matters in both"),
    ("", "", True, True, "empty"),
    ("\n\n", "", True, True, "only blank lines"),
    ("nan\n", "nan\n", True, True, "same text"),
    ("007\n", "7\n", False, True, "apps step 4 reads each line as a float; strict compares integer tokens exactly"),
]


@pytest.mark.parametrize("actual,expected,strict,apps,why", STDOUT_CASES)
def test_stdout_verdicts(actual, expected, strict, apps, why):
    assert strict_stdout_equal(actual, expected) is strict, why
    assert apps_stdout_equal(actual, expected) is apps, why


def test_apps_whitespace_only_expected_line_is_kept_as_an_empty_token_set():
    # Step 3 filters empty lines *before* stripping, so " " survives as "" and becomes set() in step 6, which no
    # output line produces (token-less output lines are dropped): the test fails although the lines match.
    assert apps_stdout_equal("1\n2\n", "1\n \n2\n") is False


def test_apps_expected_as_list_of_lines_is_joined():
    assert apps_stdout_equal("1\n2\n", ["1", "2"])


def test_strict_float_tolerance_is_configurable():
    assert not strict_stdout_equal("0.10001\n", "0.1\n")
    assert strict_stdout_equal("0.10001\n", "0.1\n", tol=1e-3)


# (return value, expected JSON output, strict, apps, why)
VALUE_CASES = [
    (9, 9, True, True, "equal"),
    (9, [9], True, True, "one-element wrapping (Codewars style) accepted by both"),
    (False, [False], True, True, "wrapped bool"),
    ([1, 2], [[1, 2]], True, True, "wrapped list"),
    ((1, 2), [1, 2], True, True, "a tuple is a list (JSON has no tuples; APPS converts)"),
    ([(1, 2), (3, 4)], [[[1, 2], [3, 4]]], True, True, "APPS's list-of-tuples rule; strict: tuples are lists"),
    ({1: "a"}, {"1": "a"}, True, True, "JSON dict keys are strings: APPS converts them to ints"),
    (True, 1, False, True, "Python's True == 1; strict keeps bool apart from numbers"),
    (2.0, 2, True, True, "an integral float equals an integer"),
    (2.0000001, 2, False, False, "no tolerance for an integer expected value"),
    (0.30000000000000004, 0.3, True, False, "float tolerance in strict; exact == in APPS"),
    ("abc", "abc", True, True, "strings"),
    (None, None, True, True, "None"),
    ([1, 2], [2, 1], False, False, "order matters"),
    ({1, 2}, [1, 2], False, False, "a set is not a list"),
    (collections.OrderedDict([("b", 2), ("a", 1)]), {"a": 1, "b": 2}, True, True, "an OrderedDict is a mapping"),
    (collections.Counter("ab"), {"a": 1, "b": 1}, True, True, "a Counter is a mapping"),
    (collections.Counter({"a": 1, "z": 0}), {"a": 1}, False, False, "a zero count is an item (dict == Counter)"),
    (collections.deque([1, 2]), [1, 2], False, False, "a deque is not a list (deque([1]) != [1])"),
]


@pytest.mark.parametrize("value,expected,strict,apps,why", VALUE_CASES)
def test_value_verdicts(value, expected, strict, apps, why):
    assert strict_value_equal(value, expected) is strict, why
    assert apps_value_equal(value, expected) is apps, why


def test_values_that_are_not_plain_data_never_equal():
    opaque = Opaque("solution.AlwaysEqual", "<AlwaysEqual>")
    assert not strict_value_equal(opaque, 1) and not apps_value_equal(opaque, 1)
    gen = CandidateIterator("generator", [1, 2])
    assert not strict_value_equal(gen, [1, 2]) and not apps_value_equal(gen, [1, 2])


def test_apps_comparison_error_propagates_as_in_apps():
    numpy = pytest.importorskip("numpy")
    # output == expected gives an array; `result or ...` then raises: APPS counts the test as a runtime error.
    with pytest.raises(ValueError):
        apps_value_equal(numpy.array([1, 2]), [1, 2])


def test_apps_call_inputs_quirk():
    # APPS converts the first argument's keys to int and then passes only that argument.
    assert apps_call_inputs([{"1": 2, "3": 4}, 5]) == [{1: 2, 3: 4}]
    assert apps_call_inputs([{"a": 1}, 5]) == [{"a": 1}, 5]
    assert apps_call_inputs([1, 2]) == [1, 2]
    assert apps_call_inputs([]) == []
