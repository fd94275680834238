"""Canonical JSON: the one byte encoding of every hashed or recorded structure.

Sorted keys, UTF-8 without escapes, no insignificant whitespace, floats in the shortest form
that round-trips (Python's `repr`), and no NaN or infinity. Two equal structures always encode
to the same bytes, which is what makes keys and manifests comparable across runs and hosts.
"""

from __future__ import annotations

import json
from typing import Any

_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
)


def dumps(value: Any) -> bytes:
    """Encode `value` (dicts with str keys, lists, tuples, str, int, float, bool, None)."""
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except ValueError as exc:  # NaN / infinity
        raise ValueError(f"canonical JSON cannot hold {exc}") from None


def dumps_text(value: Any) -> str:
    """Like `dumps` but returns text, for files meant to be read by people too."""
    return dumps(value).decode("utf-8")


def loads(data: bytes | str) -> Any:
    return json.loads(data)
