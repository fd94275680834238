"""Canonical JSON: the one byte encoding of every hashed or recorded structure.

Sorted keys, UTF-8 without escapes, no insignificant whitespace, floats in the shortest form
that round-trips (Python's `repr`), and no NaN or infinity. Two equal structures always encode
to the same bytes, which is what makes keys and manifests comparable across runs and hosts.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
)


def dumps(value: Any) -> bytes:
    """Encode `value` (dicts with str keys, lists, tuples, str, int, float, bool, None).

    Keys sort by code point (not by UTF-16 unit as RFC 8785 does; the two differ only between
    astral characters and U+E000..U+FFFF). Keys must be str: the encoder would turn `1` into
    `"1"`, so `{1: x}` and `{"1": x}` would collide; checking that here would cost a walk of
    every structure, so it is the caller's contract.
    """
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except ValueError as exc:  # NaN / infinity
        raise ValueError(f"canonical JSON cannot hold {exc}") from None


def not_text(s: str) -> bool:
    """Whether `s` holds a lone UTF-16 surrogate: what Python makes of bytes that are not UTF-8
    (a file name, an argument, an environment value) or of a YAML `\\ud800` escape. No record
    can hold one (canonical JSON is UTF-8), so sci refuses it where it comes in, naming it.
    A surrogate is the one code point strict UTF-8 cannot encode: asking the codec needs no
    pattern compiled at every start-up (a surrogate range costs ~0.5 ms to compile)."""
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def shown(s: str) -> str:
    """`s` for a message, its undecodable bytes escaped (b'\\xff.csv' shows as '\\xff.csv', a
    surrogate from an escape as '\\ud800')."""
    if not not_text(s):
        return s
    try:
        return os.fsencode(s).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def dumps_text(value: Any) -> str:
    """Like `dumps` but returns text, for files meant to be read by people too."""
    return dumps(value).decode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"canonical JSON cannot hold {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # e.g. 1e400: finite text, infinite value
        raise ValueError(f"canonical JSON cannot hold {text} (out of float range)")
    return value


# The decoder refuses NaN and ±Infinity, which Python's json accepts by default: a document
# holding them was not written by `dumps`, and reading it back must not make one up.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def loads(data: bytes | str) -> Any:
    """Decode canonical JSON (UTF-8 bytes or text); NaN and infinity are refused."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    return _DECODER.decode(data)
