"""The sandbox's wire format and value codec, shared by the worker and the processes it supervises.

Messages are a 4-byte little-endian length followed by a JSON object. JSON, never pickle: the worker decodes what a
hostile process wrote, and decoding must not be able to run code. Return values cross as tagged JSON (below) and are
rebuilt as builtin Python values, so a comparison never calls code a candidate wrote.

Standard library only: the zygote imports this file as a top-level module (it runs outside the package).
"""

from __future__ import annotations

import base64
import collections
import json
import math
import os
import struct
import types

# --- wire format ---------------------------------------------------------------------------------------------------
# Every message is a 4-byte little-endian length followed by a JSON object. JSON (never pickle) because the
# worker decodes what a hostile process wrote: decoding must not be able to run code.

_HEADER = struct.Struct("<I")


class ProtocolError(Exception):
    """A malformed message on a channel (a frame too large, bad JSON, not an object)."""


_dumps = json.dumps  # bound at import: a program that replaces json.dumps must not garble the harness's messages


def pack(obj) -> bytes:
    data = _dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii")
    return _HEADER.pack(len(data)) + data


def write_msg(fd: int, obj) -> None:
    view = memoryview(pack(obj))
    while view:
        n = os.write(fd, view)
        view = view[n:]


READY_BODY = b'{"t":"ready"}'  # pack({"t": "ready"}) without its header


class MessageReader:
    """Incremental decoder of length-prefixed JSON messages; refuses frames larger than ``limit`` bytes."""

    def __init__(self, limit: int):
        self.limit = limit
        self._buf = bytearray()
        self._ready: list = []

    def feed(self, data: bytes) -> list:
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            (size,) = _HEADER.unpack_from(self._buf)
            if size > self.limit:
                raise ProtocolError(f"message of {size} bytes exceeds the limit of {self.limit}")
            if len(self._buf) < 4 + size:
                break
            raw = bytes(self._buf[4:4 + size])
            del self._buf[:4 + size]
            if raw == READY_BODY:  # every child sends it once: skip the parser
                out.append({"t": "ready"})
                continue
            try:
                msg = json.loads(raw.decode("utf-8"))  # str, not bytes: json would sniff the encoding first
            except (ValueError, RecursionError) as exc:
                raise ProtocolError(f"bad message: {exc}") from None
            if not isinstance(msg, dict):
                raise ProtocolError("message is not an object")
            out.append(msg)
        return out

    def read_blocking(self, fd: int):
        """Next message from a blocking fd, or None at end of file."""
        while not self._ready:
            data = os.read(fd, 1 << 16)
            if not data:
                return None
            self._ready.extend(self.feed(data))
        return self._ready.pop(0)


# --- value codec ---------------------------------------------------------------------------------------------------
# Return values cross from a candidate process as tagged JSON and are rebuilt as *builtin* Python values, so the
# comparison that follows never calls code the candidate wrote (an always-True ``__eq__`` cannot survive the trip).
# Plain JSON types stand for themselves; everything else is a one-key object whose key starts with "$".

MAX_DEPTH = 100
MAX_ITEMS = 1_000_000


class EncodeError(Exception):
    pass


class DecodeError(Exception):
    pass


class Opaque:
    """A candidate value with no plain-data equivalent: equal only to itself, shown by the repr it sent."""

    __slots__ = ("type_name", "text")

    def __init__(self, type_name: str, text: str = ""):
        self.type_name = type_name
        self.text = text

    def __repr__(self) -> str:
        return self.text or f"<{self.type_name} object>"

    __str__ = __repr__

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = object.__hash__


class CandidateIterator:
    """An iterator/generator the candidate returned, materialised; like the original it equals no list."""

    __slots__ = ("type_name", "_items")

    def __init__(self, type_name: str, items: list):
        self.type_name = type_name
        self._items = iter(items)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._items)

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = object.__hash__


def _type_name(value) -> str:
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__


def encode(value, on_opaque=None, _state=None, _depth=0):
    """Python value -> tagged JSON. ``on_opaque(value)`` encodes values with no plain form (default: a repr)."""
    if _state is None:
        _state = [0]
    _state[0] += 1
    if _state[0] > MAX_ITEMS:
        raise EncodeError(f"value has more than {MAX_ITEMS} items")
    if _depth > MAX_DEPTH:
        raise EncodeError(f"value is nested more than {MAX_DEPTH} levels deep")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -(1 << 62) < value < (1 << 62) else {"$i": format(value, "x")}
    if t is float:
        return value if math.isfinite(value) else {"$f": repr(value)}

    def enc(v):
        return encode(v, on_opaque, _state, _depth + 1)

    if t is list:
        return [enc(v) for v in value]
    if t is tuple:
        return {"$t": [enc(v) for v in value]}
    if t is dict:
        return {"$d": [[enc(k), enc(v)] for k, v in value.items()]}
    if t is set:
        return {"$s": [enc(v) for v in value]}
    if t is frozenset:
        return {"$fs": [enc(v) for v in value]}
    if t is bytes:
        return {"$b": base64.b64encode(value).decode("ascii")}
    if t is bytearray:
        return {"$ba": base64.b64encode(bytes(value)).decode("ascii")}
    if t is complex:
        return {"$c": [enc(value.real), enc(value.imag)]}
    if t is range:
        return {"$r": [value.start, value.stop, value.step]}
    module = getattr(t, "__module__", "") or ""
    if module == "collections":
        name = t.__name__
        if name == "deque":
            return {"$dq": [enc(v) for v in value]}
        if name == "OrderedDict":
            return {"$od": [[enc(k), enc(v)] for k, v in value.items()]}
        if name == "Counter":
            return {"$ctr": [[enc(k), enc(v)] for k, v in value.items()]}
    if module == "decimal" and t.__name__ == "Decimal":
        return {"$dec": str(value)}
    if module == "fractions" and t.__name__ == "Fraction":
        return {"$fr": [enc(value.numerator), enc(value.denominator)]}
    if module.startswith("numpy"):
        if t.__name__ == "ndarray":
            return {"$nd": [value.dtype.str, list(value.shape), enc(value.tolist())]}
        if hasattr(value, "item") and getattr(value, "shape", None) == ():
            return enc(value.item())
    if t.__name__ in ("dict_keys", "dict_items") and module == "builtins":
        return {"$s": [enc(v) for v in value]}
    # Subclasses of plain types (namedtuple, IntEnum, defaultdict, a user's list subclass) travel as their base:
    # the comparison then uses the builtin type's equality, never the subclass's.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return enc(int(value))
    if isinstance(value, float):
        return enc(float(value))
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, tuple):
        return {"$t": [enc(v) for v in tuple.__iter__(value)]}
    if isinstance(value, list):
        return [enc(v) for v in list.__iter__(value)]
    if isinstance(value, dict):
        return {"$d": [[enc(k), enc(v)] for k, v in dict.items(value)]}
    if isinstance(value, (set, frozenset)):
        return {"$s": [enc(v) for v in set.__iter__(set(value))]}
    # Standard-library containers that Python's == treats as the mapping / list / string they hold (``ChainMap(d) ==
    # d``, ``UserList(x) == x``) travel as that plain value. deque is not among them: ``deque([1]) != [1]``.
    if isinstance(value, _PLAIN_MAPPINGS):
        return {"$d": [[enc(k), enc(v)] for k, v in value.items()]}
    if isinstance(value, collections.UserList):
        return [enc(v) for v in value]
    if isinstance(value, collections.UserString):
        text = str(value)
        return text if type(text) is str else _opaque(value, on_opaque)
    if hasattr(t, "__next__") and hasattr(t, "__iter__"):
        items = []
        for v in value:
            if len(items) >= MAX_ITEMS:
                raise EncodeError(f"iterator yields more than {MAX_ITEMS} items")
            items.append(enc(v))
        return {"$it": [_type_name(value), items]}
    return _opaque(value, on_opaque)


_PLAIN_MAPPINGS = (collections.ChainMap, collections.UserDict, types.MappingProxyType)


def _opaque(value, on_opaque):
    if on_opaque is not None:
        return on_opaque(value)
    try:
        text = repr(value)[:300]
    except Exception:
        text = ""
    return {"$o": [_type_name(value), text]}


def _tagged_list(payload):
    if not isinstance(payload, list):
        raise DecodeError("tag payload is not a list")
    return payload


def decode(obj, on_handle=None, _depth=0):
    """Tagged JSON -> a builtin Python value (or :class:`Opaque`). Raises :class:`DecodeError` on bad input."""
    if _depth > MAX_DEPTH + 5:
        raise DecodeError("value is nested too deeply")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj

    def dec(v):
        return decode(v, on_handle, _depth + 1)

    if isinstance(obj, list):
        return [dec(v) for v in obj]
    if not isinstance(obj, dict) or len(obj) != 1:
        raise DecodeError(f"not a tagged value: {str(obj)[:80]}")
    ((tag, payload),) = obj.items()
    try:
        if tag == "$t":
            return tuple(dec(v) for v in _tagged_list(payload))
        if tag in ("$d", "$od", "$ctr"):
            pairs = [(dec(k), dec(v)) for k, v in _tagged_list(payload)]
            if tag == "$d":
                return dict(pairs)
            import collections
            return collections.OrderedDict(pairs) if tag == "$od" else collections.Counter(dict(pairs))
        if tag == "$s":
            return set(dec(v) for v in _tagged_list(payload))
        if tag == "$fs":
            return frozenset(dec(v) for v in _tagged_list(payload))
        if tag == "$i":
            return int(payload, 16)
        if tag == "$f":
            if payload not in ("inf", "-inf", "nan"):
                raise DecodeError(f"bad float {payload!r}")
            return float(payload)
        if tag == "$b":
            return base64.b64decode(payload.encode("ascii"), validate=True)
        if tag == "$ba":
            return bytearray(base64.b64decode(payload.encode("ascii"), validate=True))
        if tag == "$c":
            re_, im = _tagged_list(payload)
            return complex(float(dec(re_)), float(dec(im)))
        if tag == "$r":
            start, stop, step = (int(x) for x in _tagged_list(payload))
            return range(start, stop, step)
        if tag == "$dq":
            import collections
            return collections.deque(dec(v) for v in _tagged_list(payload))
        if tag == "$dec":
            import decimal
            return decimal.Decimal(str(payload))
        if tag == "$fr":
            import fractions
            num, den = _tagged_list(payload)
            return fractions.Fraction(int(dec(num)), int(dec(den)))
        if tag == "$nd":
            dtype, shape, data = _tagged_list(payload)
            try:
                import numpy
            except ImportError:
                return dec(data)
            if not isinstance(dtype, str) or "O" in dtype or "V" in dtype:
                raise DecodeError(f"unsupported array dtype {dtype!r}")
            return numpy.array(dec(data), dtype=numpy.dtype(dtype)).reshape([int(s) for s in shape])
        if tag == "$it":
            name, items = _tagged_list(payload)
            return CandidateIterator(str(name), [dec(v) for v in _tagged_list(items)])
        if tag == "$o":
            name, text = _tagged_list(payload)
            return Opaque(str(name), str(text))
        if tag == "$h":
            if on_handle is None:
                hid, name, text = _tagged_list(payload)
                return Opaque(str(name), str(text))
            return on_handle(payload)
        if tag == "$ref":
            if on_handle is None:
                raise DecodeError("a reference cannot be decoded here")
            return on_handle(obj)
    except DecodeError:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
        raise DecodeError(f"bad {tag} value: {type(exc).__name__}: {exc}") from None
    raise DecodeError(f"unknown tag {tag!r}")
