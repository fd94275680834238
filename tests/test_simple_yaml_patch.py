"""simple_yaml.patch: re-reading only the edited lines must give exactly what load gives."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import same
from sci.spec import simple_yaml
from sci.spec.simple_yaml import NotSimple


def leaves(value, path=()) -> dict[tuple[str, ...], object]:
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            out.update(leaves(sub, (*path, key)))
        return out
    return {path: value}


def changed_paths(old, new) -> set[tuple[str, ...]]:
    a, b = leaves(old), leaves(new)
    return {p for p in a.keys() | b.keys() if p not in a or p not in b or not same(a[p], b[p])}


def load_or_none(text):
    try:
        return True, simple_yaml.load(text)
    except NotSimple:
        return False, None


def check(old_text, new_text):
    """patch's answer, after checking it against load; old_value must come out untouched."""
    old_value = simple_yaml.load(old_text)
    snapshot = copy.deepcopy(old_value)
    result = simple_yaml.patch(old_text, old_value, new_text)
    assert same(old_value, snapshot), "patch modified old_value"
    if result is None:
        return None
    value, changed = result
    ok, expected = load_or_none(new_text)
    assert ok, f"patch returned a value for a text load rejects: {new_text!r}"
    assert same(value, expected), (new_text, value, expected)
    paths = changed_paths(old_value, expected)
    assert changed == sorted(".".join(p) for p in paths)
    assert_shared(old_value, value, paths)
    return result


def assert_shared(old, new, changed_paths, path=()):
    """Every dict with no changed entry below it is the old object itself."""
    if not isinstance(old, dict):
        return
    if not any(p[:len(path)] == path for p in changed_paths):
        assert new is old, path
        return
    assert new is not old  # copied, not modified in place
    for key in old:
        assert_shared(old[key], new[key], changed_paths, (*path, key))


# -- generated documents and edits ----------------------------------------------------------

ints = st.integers(-10**6, 10**6).map(str)
floats = st.floats(allow_nan=False, allow_infinity=False).map(repr)
words = st.sampled_from(["true", "True", "FALSE", "false", "null", "Null", "NULL", "~"])
plain_strings = st.one_of(st.sampled_from(["abc", "a b", "x_y", "café", "-x", "a#b", "it's", "v/2"]),
                          st.from_regex(r"[a-z][a-z0-9_ ]{0,6}[a-z0-9]", fullmatch=True))
single_quoted = plain_strings.map(lambda s: "'" + s.replace("'", "''") + "'")
quoted = st.one_of(single_quoted,
                   st.sampled_from(['"d q"', '""', "''", "'a: b'", "'# not a comment'", '"1"']))
list_items = st.one_of(ints, words, st.from_regex(r"[a-z][a-z0-9_]{0,4}", fullmatch=True), st.just("'q'"), st.just("1.5"))
lists = st.lists(list_items, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]")
# Values load accepts.
good_values = st.one_of(ints, floats, words, plain_strings, quoted, lists)
# Values it may not: load decides, patch must agree or give up.
odd_values = st.sampled_from(["a: b", "1:2", "12:30", "007", "0x1F", ".inf", "&x", "*x", "!t", "|", ">", "[1, 2",
                              "{a: 1}", "- x", "x:", "'open", '"e\\n"', "2024-01-31", "1_000", "a\tb", "x #y", "<<", "1a", "0.1.2"])
comments = st.sampled_from(["", "", " # note", " #", " # other: note"])
# load refuses `'quoted'  # two spaces` (the full loader reads it): fine in an edit, where load decides.
edited_comments = st.sampled_from(["", " # note", " # changed", "  # two spaces", "\t# tab", " #: colon"])
names = st.one_of(st.sampled_from(["a", "b_c", "d-e", "f.g", "key", "node"]), st.from_regex(r"[a-z][a-z0-9_]{0,4}", fullmatch=True))


@st.composite
def documents(draw):
    """A list of line records: [kind, indent, key, value, comment]; kinds leaf, section, item, comment, blank."""
    step = draw(st.sampled_from([2, 4]))
    lines = []

    def emit(indent: int, level: int) -> None:
        for n in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["leaf", "leaf", "leaf", "map", "seq", "comment", "blank"]))
            key = draw(names) + str(n)  # unique within the mapping, never a YAML word
            if kind == "comment":
                lines.append(["comment", indent, "", draw(plain_strings), ""])
            elif kind == "blank":
                lines.append(["blank", draw(st.sampled_from([0, indent])), "", "", ""])
            elif kind == "map" and level < 3:
                lines.append(["section", indent, key, "", draw(st.sampled_from(["", "  # section"]))])
                emit(indent + step, level + 1)
            elif kind == "seq":
                lines.append(["section", indent, key, "", ""])
                item_indent = indent + draw(st.sampled_from([0, step]))
                for value in draw(st.lists(st.one_of(ints, plain_strings, single_quoted), min_size=1, max_size=3)):
                    lines.append(["item", item_indent, "", value, ""])
            else:
                lines.append(["leaf", indent, key, draw(good_values), draw(comments)])

    emit(draw(st.sampled_from([0, 0, 0, 2])), 0)
    return lines, draw(st.sampled_from(["\n", "", "\n\n"]))


def render_line(rec) -> str:
    kind, indent, key, value, comment = rec
    pad = " " * indent
    if kind == "leaf":
        return f"{pad}{key}: {value}{comment}"
    if kind == "section":
        return f"{pad}{key}:{comment}"
    if kind == "item":
        return f"{pad}- {value}"
    if kind == "comment":
        return f"{pad}# {value}"
    if kind == "raw":
        return value
    return pad


def render(lines, end) -> str:
    return "\n".join(render_line(r) for r in lines) + end


# The edits that fit each kind of line; "value" (the fast path) weighs most.
EDITS = {
    "leaf": ["value", "value", "value", "value", "comment", "key", "indent", "empty", "colon", "tab", "add", "remove"],
    "section": ["key", "indent", "tab", "add", "remove"],
    "item": ["value", "indent", "tab", "add", "remove"],
    "comment": ["text", "text", "indent", "tab", "add", "remove"],
    "blank": ["text", "indent", "tab", "add", "remove"],
    "raw": ["tab", "add", "remove"],
}


@st.composite
def edited(draw, lines):
    """The records after 1-3 edits, each of a kind a user might make (some that patch must refuse)."""
    lines = [list(r) for r in lines]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        rec = lines[i]
        op = draw(st.sampled_from(EDITS[rec[0]]))
        if op == "add":
            lines.insert(i, draw(st.sampled_from([["blank", 0, "", "", ""], ["comment", 0, "", "new", ""], list(rec)])))
        elif op == "remove":
            if len(lines) > 1:  # (an empty list renders as many lines as a blank line)
                del lines[i]
        elif op == "tab":
            text = render_line(rec)
            at = draw(st.integers(0, len(text)))
            char = draw(st.sampled_from(["\t", "\t", "\r", "\x85", "\u2028"]))
            lines[i] = ["raw", 0, "", text[:at] + char + text[at:], ""]
        elif op == "indent":
            rec[1] = max(0, rec[1] + draw(st.sampled_from([-2, -1, 1, 2])))
        elif op == "text":  # a comment line's text, or a blank line becoming a comment
            lines[i] = ["comment", rec[1], "", draw(plain_strings), ""]
        elif op == "key":
            rec[2] = draw(names) + draw(st.sampled_from(["", "0", "9"]))
        elif op == "value" and rec[0] == "item":
            rec[3] = draw(st.one_of(good_values, odd_values))
        elif op == "value":
            rec[3] = draw(st.one_of(good_values, good_values, good_values, odd_values))
        elif op == "comment":
            rec[4] = draw(edited_comments)
        elif op == "empty":
            lines[i] = ["section", rec[1], rec[2], "", draw(st.sampled_from(["", "  # now a section"]))]
        elif op == "colon":
            rec[3] = rec[3] + draw(st.sampled_from([": x", ": ", ":"]))
    return lines


def must_refuse(old, new) -> bool:
    """The edits the brief says patch must return None for (beyond what load rejects)."""
    if len(old) != len(new):
        return True
    for a, b in zip(old, new):
        if render_line(a) == render_line(b) or {a[0], b[0]} <= {"comment", "blank"}:
            continue
        if b[0] == "raw" or a[0] != b[0] or a[0] in ("section", "item"):
            return True  # tab / \r / forbidden character, a line changing kind, `key:` lines, sequence items
        if a[0] == "leaf" and (a[1] != b[1] or a[2] != b[2]):
            return True
    return False


def plain_edit(old, new) -> bool:
    """Only leaf values, trailing comments and comment/blank lines changed: patch must take the fast path."""
    if len(old) != len(new):
        return False
    for a, b in zip(old, new):
        if render_line(a) == render_line(b):
            continue
        if a[0] in ("comment", "blank") and b[0] in ("comment", "blank"):
            continue
        if not (a[0] == b[0] == "leaf" and a[1] == b[1] and a[2] == b[2]):
            return False
    return True


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_patch_agrees_with_load(data):
    lines, end = data.draw(documents())
    old_text = render(lines, end)
    assert load_or_none(old_text)[0], old_text  # the generator writes documents load accepts
    new_lines = data.draw(edited(lines))
    new_text = render(new_lines, end)
    result = check(old_text, new_text)
    event("patch answered" if result is not None else "patch gave up")
    if new_text == old_text:
        assert result is not None and result[1] == []
    elif must_refuse(lines, new_lines):
        assert result is None, (old_text, new_text)
    elif plain_edit(lines, new_lines) and load_or_none(new_text)[0]:
        assert result is not None, (old_text, new_text)


@settings(max_examples=200, deadline=None)
@given(documents(), st.data())
def test_value_edits_take_the_fast_path(doc, data):
    """Several leaf values changed to other values load reads: patch answers, and answers right."""
    lines, end = doc
    leaf_lines = [i for i, r in enumerate(lines) if r[0] == "leaf"]
    if not leaf_lines:
        return
    new_lines = [list(r) for r in lines]
    for i in data.draw(st.lists(st.sampled_from(leaf_lines), min_size=1, max_size=4, unique=True)):
        new_lines[i][3] = data.draw(good_values)
    old_text, new_text = render(lines, end), render(new_lines, end)
    result = check(old_text, new_text)
    assert result is not None, (old_text, new_text)


# -- explicit cases -------------------------------------------------------------------------

def big_text(n: int = 10_000) -> str:
    return "p:\n" + "".join(f"  node{i}: 0\n" for i in range(n))


def test_one_value_in_the_middle_of_ten_thousand_keys():
    old = big_text()
    new = old.replace("  node5000: 0\n", "  node5000: 0.5\n")
    old_value = simple_yaml.load(old)
    value, changed = check(old, new)
    assert changed == ["p.node5000"]
    assert value["p"]["node5000"] == 0.5 and type(value["p"]["node5000"]) is float
    assert list(value["p"]) == list(old_value["p"])  # key order kept



NESTED = "# params\na:\n  b:\n    c: 1   # the c\n    d: x\n  e: [1, 2]\nf: 'it''s'\ng:\n  - 1\n  - 2\nh: 3\n"


@pytest.mark.parametrize("new,changed", [
    (NESTED.replace("c: 1 ", "c: 2 "), ["a.b.c"]),
    (NESTED.replace("c: 1 ", "c: 1.0 "), ["a.b.c"]),       # 1 and 1.0 differ
    (NESTED.replace("c: 1 ", "c: true "), ["a.b.c"]),      # and so do 1 and True
    (NESTED.replace("d: x", "d: 'x'"), []),                # same string, other style
    (NESTED.replace("e: [1, 2]", "e: [1, 2.0, z]"), ["a.e"]),
    (NESTED.replace("e: [1, 2]", "e: [1, true]"), ["a.e"]),
    (NESTED.replace("f: 'it''s'", 'f: "its"'), ["f"]),
    (NESTED.replace("c: 1 ", "c: 5 ").replace("h: 3", "h: ~"), ["a.b.c", "h"]),
    (NESTED.replace("# the c", "# changed"), []),
    (NESTED.replace("# params", "# other"), []),
])
def test_nested_edits(new, changed):
    result = check(NESTED, new)
    assert result is not None and result[1] == changed


def test_comment_only_change_returns_the_old_value():
    old_value = simple_yaml.load(NESTED)
    value, changed = simple_yaml.patch(NESTED, old_value, NESTED.replace("# params", "#   params, edited"))
    assert value is old_value and changed == []


def test_identical_text():
    old_value = simple_yaml.load(NESTED)
    assert simple_yaml.patch(NESTED, old_value, NESTED) == (old_value, [])
    assert simple_yaml.patch(NESTED, old_value, NESTED)[0] is old_value


@pytest.mark.parametrize("new", [
    NESTED.replace("h: 3\n", "h: 3\ni: 4\n"),               # a line added
    NESTED.replace("    d: x\n", ""),                       # a line removed
    NESTED.replace("h: 3", "hh: 3"),                       # a key renamed
    NESTED.replace("    d: x", "   d: x"),                 # indent changed
    NESTED.replace("  - 2", "  - 3"),                      # a sequence item
    NESTED.replace("h: 3", "h:"),                          # a value becomes empty: would open a block
    NESTED.replace("h: 3", "h:   # gone"),
    NESTED.replace("h: 3", "h: 3\t"),                      # a tab
    NESTED.replace("h: 3", "h: 3\r"),                      # a carriage return
    NESTED.replace("h: 3", "h: 3\x85"),                    # a character YAML does not allow
    NESTED.replace("h: 3", "---"),                         # a document marker
    NESTED.replace("# params", "a: 1"),                    # a comment becomes an entry
    NESTED.replace("c: 1 ", "c: &x 1 "),                   # load rejects the value
    NESTED.replace("c: 1 ", "c: [1, 2 "),
])
def test_refused(new):
    assert simple_yaml.patch(NESTED, simple_yaml.load(NESTED), new) is None


@pytest.mark.parametrize("value", ["1:2", "a: b", "x:", "12:30", "a #b", "'a': b", "[1]: x", "007", "-1"])
def test_colons_and_odd_values_follow_load(value):
    """What load rejects patch refuses (check() would fail otherwise); what load reads patch reads too."""
    new = NESTED.replace("d: x", f"d: {value}")
    result = check(NESTED, new)
    assert (result is not None) == load_or_none(new)[0]


def test_old_value_is_not_mutated_and_unchanged_parts_are_shared():
    text = "a:\n  b:\n    c: 1\n  d:\n    e: 2\nf:\n  g: 3\nl: [1, 2]\n"
    old_value = simple_yaml.load(text)
    snapshot = copy.deepcopy(old_value)
    value, changed = simple_yaml.patch(text, old_value, text.replace("c: 1", "c: 10"))
    assert changed == ["a.b.c"]
    assert same(old_value, snapshot)
    assert value is not old_value and value["a"] is not old_value["a"] and value["a"]["b"] is not old_value["a"]["b"]
    assert value["a"]["d"] is old_value["a"]["d"]
    assert value["f"] is old_value["f"]
    assert value["l"] is old_value["l"]
    assert old_value["a"]["b"]["c"] == 1 and value["a"]["b"]["c"] == 10


@pytest.mark.parametrize("old,new,changed", [
    ("  a: 1\n  b: 2\n", "  a: 1\n  b: 3\n", ["b"]),                       # an indented document
    ("p:  # section\n  x:\n  - 1\n  y: 2\n", "p:  # section\n  x:\n  - 1\n  y: 3\n", ["p.y"]),
    ("p:\n  q:\n    r: 1\n  s: 2\nt: 3\n", "p:\n  q:\n    r: 1\n  s: 2\nt: 4", None),  # the last line break went too
    ("a: 1\r\nb: 2\r\n", "a: 1\r\nb: 3\r\n", None),                  # CRLF files: load decides
    ("a: 0.0\n", "a: -0.0\n", ["a"]),
    ("a: 1\nb: 2\nc: 3\n", "a: x\nb: 2\nc: y\n", ["a", "c"]),
])
def test_more_shapes(old, new, changed):
    result = check(old, new)
    if changed is None:
        assert result is None
    else:
        assert result is not None and result[1] == changed


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters() | st.sampled_from(["\ud800", "\udfff", "\x85", "\u2028", "\ufffe", "\x7f",
                                                              "\x84", "\x86", "\x9f", "\xa0", "\t", "é"]), max_size=30)
       | st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=30))
def test_the_ascii_shortcut_for_forbidden_characters_agrees_with_the_full_class(text):
    import re

    assert simple_yaml.has_forbidden(text) == bool(re.search(simple_yaml._FORBIDDEN_CLASS, text))
