"""Properties of canonical JSON: one byte string per value, whatever order or host produced it."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sci import canonical

# Every JSON value sci may hash: str keys only, finite floats, no tuples (they come back as
# lists, so they are covered separately).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(), children, max_size=6),
    max_leaves=40,
)


def strictly_equal(a, b) -> bool:
    """Equality that, unlike `==`, tells 1 from 1.0 from True and 0.0 from -0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(strictly_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strictly_equal(a[k], b[k]) for k in a)
    return a == b


def reshuffled(value, rng: random.Random):
    """A deep copy of `value` whose dicts were built in a random insertion order."""
    if isinstance(value, list):
        return [reshuffled(v, rng) for v in value]
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: reshuffled(v, rng) for k, v in items}
    return value


def dict_key_sequences(data: bytes) -> list[list[str]]:
    """The keys of every object in `data`, in the order the bytes list them."""
    seen: list[list[str]] = []

    def hook(pairs):
        seen.append([k for k, _ in pairs])
        return dict(pairs)

    json.loads(data, object_pairs_hook=hook)
    return seen


@given(json_values)
def test_round_trip(value):
    assert strictly_equal(canonical.loads(canonical.dumps(value)), value)


@given(json_values)
def test_encoding_is_idempotent(value):
    once = canonical.dumps(value)
    assert canonical.dumps(canonical.loads(once)) == once


@given(json_values, st.randoms(use_true_random=False))
def test_dict_insertion_order_never_matters(value, rng):
    assert canonical.dumps(reshuffled(value, rng)) == canonical.dumps(value)


@given(json_values, json_values)
def test_equal_bytes_only_for_strictly_equal_values(a, b):
    assert (canonical.dumps(a) == canonical.dumps(b)) == strictly_equal(a, b)


@given(json_values)
def test_keys_sorted_by_code_point_at_every_level(value):
    for keys in dict_key_sequences(canonical.dumps(value)):
        assert keys == sorted(keys)


def reference_encoding(value) -> str:
    """An independent, slow encoder of the canonical form, used as the oracle."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # only for the escaping of " \\ and controls
    if isinstance(value, list):
        return "[" + ",".join(reference_encoding(v) for v in value) + "]"
    return "{" + ",".join(reference_encoding(k) + ":" + reference_encoding(value[k])
                          for k in sorted(value)) + "}"


@given(json_values)
def test_matches_reference_encoder(value):
    """Sorted keys, no whitespace, shortest floats, strings as UTF-8."""
    data = canonical.dumps(value)
    assert data == reference_encoding(value).encode("utf-8")
    assert canonical.dumps_text(value) == data.decode("utf-8")


@given(st.text())
def test_non_ascii_written_as_itself(text):
    encoded = canonical.dumps(text).decode("utf-8")
    for char in text:
        if ord(char) >= 0x80:
            assert char in encoded  # never as a \\uXXXX escape


def significant_digits(text: str) -> int:
    mantissa = text.lstrip("-").split("e")[0].replace(".", "")
    return len(mantissa.strip("0")) or 1


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_use_shortest_round_trip_form(x):
    text = canonical.dumps(x).decode()
    assert float(text) == x and (math.copysign(1, float(text)) == math.copysign(1, x))
    n = significant_digits(text)
    # No representation with fewer significant digits gives back the same float.
    if n > 1:
        assert float(f"{x:.{n - 2}e}") != x


def test_known_bytes():
    """A pinned example: a change here changes every key sci ever computed."""
    value = {"b": [1, 2.5, None, True], "a": {"é": "ü", "z": -0.0}, "c": 1e-7, "d": 1e22}
    assert canonical.dumps(value) == '{"a":{"z":-0.0,"é":"ü"},"b":[1,2.5,null,true],"c":1e-07,"d":1e+22}'.encode()


def test_tuples_encode_as_lists():
    assert canonical.dumps({"t": (1, "x")}) == canonical.dumps({"t": [1, "x"]})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, [1, {"x": math.nan}], {"x": [math.inf]}])
def test_nan_and_infinity_rejected(bad):
    with pytest.raises(ValueError, match="canonical JSON"):
        canonical.dumps(bad)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"x": -Infinity}', "[1e400]", b"-1E999"])
def test_loads_rejects_nan_and_infinity(text):
    with pytest.raises(ValueError, match="canonical JSON"):
        canonical.loads(text)


def test_lone_surrogate_rejected():
    with pytest.raises(ValueError, match="canonical JSON"):
        canonical.dumps("\ud800")


@settings(max_examples=50)
@given(st.dictionaries(st.text(), st.integers(), min_size=2))
def test_loads_accepts_bytes_and_text(value):
    data = canonical.dumps(value)
    assert canonical.loads(data) == canonical.loads(data.decode()) == value


_keys = st.text(alphabet=st.sampled_from(["a", "p", "l", "n", "z", "é", "P", "_", "\u00ff", "\U0001f600"]),
                min_size=1, max_size=5) | st.sampled_from(["plan", "plam", "plan0", "pla", "plao"])
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(_keys, _json, max_size=6), plan=st.lists(st.dictionaries(_keys, _json, max_size=3),
                                                                       max_size=4))
def test_a_manifest_joined_from_its_plan_entries_is_its_canonical_json(fields, plan):
    from sci.records.run import manifest_pieces, plan_pieces

    def joined(manifest, given):
        return b"".join(manifest_pieces(manifest, given))

    assert b"".join(plan_pieces([canonical.dumps(e) for e in plan])) == canonical.dumps(plan)
    manifest = {**fields, "plan": plan}
    given = {"plan": plan_pieces([canonical.dumps(e) for e in plan])}
    assert joined(manifest, given) == canonical.dumps(manifest)
    # any fields given as their JSON (the parameters as planned), the others encoded around them
    for key in [k for k in fields if k != "plan"][::2]:
        given[key] = [canonical.dumps(fields[key])]
    assert joined(manifest, given) == canonical.dumps(manifest)
    assert joined(manifest, {k: given[k] for k in list(given)[1:]}) == canonical.dumps(manifest)


@pytest.mark.parametrize("short", [False, True])
def test_a_manifest_written_in_pieces_is_its_canonical_json_even_after_short_writes(tmp_path, monkeypatch, short):
    """write_manifest hands the pieces to writev a batch at a time; a writev that writes less
    than it was given (a signal, a nearly full disk) is followed by the rest, in order."""
    import os

    from sci.records.run import plan_pieces, write_manifest

    plan = [{"node": f"n{i:05d}", "key": f"{i:064x}", "outputs": {"o": {"path": f"out/{i}.txt"}}}
            for i in range(2500)]  # 5,000 pieces: five writev batches
    manifest = {"format": 1, "params": {"x": 1}, "plan": plan, "volatile": {"run_id": "r"}}
    calls = []
    if short:
        real = os.writev

        def writev(fd, buffers):  # writes at most ~1,000 bytes, as a short write would
            calls.append(len(buffers))
            data = b"".join(buffers)[:997]
            return real(fd, [data])

        monkeypatch.setattr(os, "writev", writev)
    written = write_manifest(tmp_path, manifest, {"plan": plan_pieces([canonical.dumps(e) for e in plan])})
    assert written.read_bytes() == canonical.dumps(manifest) + b"\n"
    assert not list(tmp_path.glob("*.tmp"))
    if short:
        assert len(calls) == 5
