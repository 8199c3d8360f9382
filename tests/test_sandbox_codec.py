"""The data that crosses from a candidate process: framing, the value codec, and where asserts are evaluated.

The codec is what makes an always-True ``__eq__`` harmless: a value is rebuilt from JSON into builtin types, and
anything that is not plain data becomes an :class:`Opaque` that equals only itself.
"""

from __future__ import annotations

import collections
import decimal
import enum
import fractions
import math

import pytest

from coderl_ray.sandbox.isolation import build_seccomp_filter
from coderl_ray.sandbox.wire import (
    CandidateIterator, DecodeError, EncodeError, MessageReader, Opaque, ProtocolError, decode, encode, pack,
)
from coderl_ray.sandbox.asserts import fast_verdict, free_names, plan_asserts


def roundtrip(value):
    return decode(encode(value))


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2 ** 100, -(3 ** 200), 1.5, -0.0, "text", "", "\ud800 lone surrogate",
    b"\x00bytes", bytearray(b"ba"), (1, (2, 3)), [1, [2, [3]]], {1: "a", (1, 2): [3], "k": {"n": None}},
    {1, 2, 3}, frozenset({"a"}), 3 + 4j, range(2, 10, 3), collections.deque([1, 2]),
    collections.OrderedDict([("b", 1), ("a", 2)]), collections.Counter("abca"), decimal.Decimal("1.10"),
    fractions.Fraction(3, 7), float("inf"),
])
def test_plain_values_roundtrip_with_their_types(value):
    back = roundtrip(value)
    assert back == value
    assert type(back) is type(value)


def test_nan_roundtrips():
    assert math.isnan(roundtrip(float("nan")))


def test_subclasses_travel_as_their_builtin_base():
    class Liar(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    class Colour(enum.IntEnum):
        RED = 1

    point = collections.namedtuple("Point", "x y")(1, 2)
    assert type(roundtrip(Liar(5))) is int and roundtrip(Liar(5)) != 6
    assert roundtrip(Colour.RED) == 1 and type(roundtrip(Colour.RED)) is int
    assert roundtrip(point) == (1, 2) and type(roundtrip(point)) is tuple
    assert type(roundtrip(collections.defaultdict(list, {1: [2]}))) is dict


def test_standard_library_containers_travel_as_the_plain_value_python_compares_them_as():
    # ChainMap(d) == d, UserDict(d) == d, mappingproxy(d) == d, UserList(x) == x, UserString(s) == s in Python.
    chain = roundtrip(collections.ChainMap({1: "a"}, {1: "b", 2: "c"}))
    assert type(chain) is dict and chain == {1: "a", 2: "c"}
    assert type(roundtrip(collections.UserDict({"k": 1}))) is dict
    import types

    assert roundtrip(types.MappingProxyType({"k": (1,)})) == {"k": (1,)}
    assert roundtrip(collections.UserList([1, (2,)])) == [1, (2,)]
    assert roundtrip(collections.UserString("ab")) == "ab"

    class Liar(collections.ChainMap):  # its __eq__ never travels: only the items it holds
        def __eq__(self, other):
            return True

    assert roundtrip(Liar({"wrong": 1})) == {"wrong": 1} and roundtrip(Liar({"wrong": 1})) != {"right": 1}
    # deque keeps its type: deque([1]) != [1] in Python, and in APPS's harness.
    assert type(roundtrip(collections.deque([1]))) is collections.deque


def test_objects_without_a_plain_form_become_opaque():
    class AlwaysEqual:
        def __eq__(self, other):
            return True

        def __repr__(self):
            return "<AlwaysEqual>"

    value = roundtrip(AlwaysEqual())
    assert isinstance(value, Opaque)
    assert value != 1 and not (value == [1, 2]) and value == value
    assert repr(value) == "<AlwaysEqual>"


def test_iterators_are_materialised_but_equal_no_list():
    value = roundtrip(x * x for x in range(3))
    assert isinstance(value, CandidateIterator)
    assert value != [0, 1, 4]
    assert list(value) == [0, 1, 4]
    assert roundtrip(map(str, [1])).type_name == "map"
    assert roundtrip({1: 2}.keys()) == {1}


def test_numpy_values():
    numpy = pytest.importorskip("numpy")
    array = roundtrip(numpy.arange(6, dtype=numpy.int32).reshape(2, 3))
    assert isinstance(array, numpy.ndarray) and array.dtype == numpy.int32 and array.shape == (2, 3)
    assert type(roundtrip(numpy.int64(7))) is int


def test_limits_on_what_can_be_encoded():
    cycle = []
    cycle.append(cycle)
    with pytest.raises(EncodeError):
        encode(cycle)
    deep = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(EncodeError):
        encode(deep)


@pytest.mark.parametrize("bad", [
    {"$t": 5}, {"$d": [[[1], 2]]}, {"$nope": 1}, {"a": 1, "b": 2}, {"$f": "1e999"}, {"$i": "zz"},
    {"$nd": ["|O8", [1], [1]]}, {"$b": "not base64!"}, {"$ref": "x"},
])
def test_malformed_values_are_decode_errors(bad):
    with pytest.raises(DecodeError):
        decode(bad)


def test_framing_across_chunks_and_limits():
    data = pack({"t": "a", "i": 1}) + pack({"t": "b"})
    reader = MessageReader(1 << 10)
    out = []
    for i in range(len(data)):
        out += reader.feed(data[i:i + 1])
    assert out == [{"t": "a", "i": 1}, {"t": "b"}]
    with pytest.raises(ProtocolError):
        MessageReader(10).feed(pack({"t": "x" * 100}))
    with pytest.raises(ProtocolError):
        MessageReader(100).feed(b"\x03\x00\x00\x00}{]")
    with pytest.raises(ProtocolError):
        MessageReader(100).feed(b"\x02\x00\x00\x00[]")


def test_seccomp_filter_is_well_formed():
    code = build_seccomp_filter(1234, allow_fork=False)
    assert len(code) % 8 == 0 and len(code) // 8 < 4096
    # The last instruction allows everything the filter did not refuse.
    assert code[-8:] == bytes.fromhex("0600000000") + b"\x00\xff\x7f"


# --- where asserts are evaluated ----------------------------------------------------------------------------------

def test_mbpp_shaped_asserts_are_judged_in_the_worker():
    plan = plan_asserts("", ("assert f([1, 2], k=3) == (3, 'x')", "assert not f([])", "assert f(x) is None",
                             "assert f(1)"), "f")
    assert plan.fast is not None
    ops = [check.op for check in plan.fast]
    assert ops == ["==", "falsy", "is", "truthy"]
    assert plan.fast[0].request == {"op": "call", "target": {"$ref": "f"},
                                    "args": [[1, 2]], "kwargs": {"k": 3}}
    assert plan.fast[2].request["args"] == [{"$ref": "x"}]  # a bare name is resolved by the candidate
    assert fast_verdict((3, "x"), plan.fast[0]) and not fast_verdict([3, "x"], plan.fast[0])


@pytest.mark.parametrize("asserts,setup", [
    (("assert math.isclose(f(1), 2.0)",), ""),  # a call around the candidate's value
    (("assert f(1) == sys.getsizeof(())",), ""),  # a non-literal expected side
    (("assert all(f(x) == x for x in range(3))",), ""),  # a comprehension
    (("check(f)",), "def check(candidate):\n    assert candidate(1) == 1\n"),  # HumanEval
    (("assert depth(root) == 2",), "root = Node(1)\n"),  # setup building candidate objects (MBPP)
    (("assert len(f(1)) == 2",), ""),  # a builtin around the call
])
def test_everything_else_needs_a_judge(asserts, setup):
    assert plan_asserts(setup, asserts, "f").fast is None


def test_free_names_are_what_the_candidate_must_provide():
    setup = ("import math\nMETA = {}\ndef check(candidate):\n    for i in range(2):\n"
             "        assert candidate(i) == helper(i)\n")
    assert free_names([setup, "check(add)"], "add") == ("add", "helper")
    assert free_names(["assert depth(root) == 2"], None) == ("depth", "root")


@pytest.mark.parametrize("name", ["coderl_ray.sandbox.compare", "coderl_ray.sandbox.asserts"])
def test_module_doctests(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
