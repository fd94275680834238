"""The plain subset of YAML that parameter files are written in, read without importing ruamel.

Importing ruamel.yaml costs about 30 ms, a sixth of a rebuild after a parameter edit. Most
params files are block mappings of scalars, nested mappings and one-line lists, with comments;
this reader takes exactly that and raises NotSimple for anything else (anchors, tags, flow
mappings, multi-line or escaped strings, unusual numbers, duplicate keys, tabs, documents),
which sends the text to the full loader. Whatever it accepts it reads as ruamel's safe loader
does (YAML 1.2 core schema); tests/test_load.py checks that property on generated documents.
"""

from __future__ import annotations

import re
from typing import Any

from sci.spec.limits import MAX_DEPTH, MAX_INT_DIGITS


class NotSimple(Exception):
    """Outside the subset: the caller uses the full YAML loader."""


_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)\Z")
_WORDS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False,
          "null": None, "Null": None, "NULL": None, "~": None, "": None}
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_PLAIN_START = set("-?:,[]{}#&*!|>'\"%@`")
_FLOW_PLAIN = re.compile(r"(?:[A-Za-z0-9_.+~/]|-(?! ))[A-Za-z0-9_.+\- ~/]*\Z")
# Characters YAML does not allow in a document, which ruamel reports as errors. The full class
# takes ~0.8 ms to compile (its non-ASCII ranges), so ASCII text, the common case, is checked
# against its ASCII part and the full class is compiled when a text is not ASCII.
_FORBIDDEN_CLASS = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\x85\u2028\u2029\ud800-\udfff\ufffe\uffff]"
_FORBIDDEN_ASCII = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FORBIDDEN: list[re.Pattern[str]] = []


def has_forbidden(text: str) -> bool:
    """Whether `text` holds a character YAML does not allow in a document."""
    if text.isascii():
        return _FORBIDDEN_ASCII.search(text) is not None
    if not _FORBIDDEN:
        _FORBIDDEN.append(re.compile(_FORBIDDEN_CLASS))
    return _FORBIDDEN[0].search(text) is not None
_SPACE = " \t"


def plain_scalar(value: str) -> Any:
    """A plain scalar as YAML 1.2's core schema reads it; NotSimple where ruamel should decide."""
    first = value[:1]
    if value in _WORDS:
        return _WORDS[value]
    if first and first in "-+0123456789.":
        if _INT.match(value):
            if len(value) > MAX_INT_DIGITS:
                raise NotSimple("a huge integer")  # the full loader reports the limit with its place
            return int(value)
        if _FLOAT.match(value):
            return float(value)
        if first != "-" or len(value) < 2 or value[1] in "0123456789.":
            raise NotSimple(value)  # octal, hex, .inf, dates, 1_000, times: ruamel decides
    elif first in ("<", "="):
        raise NotSimple(value)
    return value


def _quoted(text: str) -> tuple[str, str]:
    """A quoted string at the start of `text` (no escapes but '') and what follows it."""
    q = text[0]
    if q == "'":
        out, i = [], 1
        while True:
            j = text.find("'", i)
            if j < 0:
                raise NotSimple("unclosed quote")
            out.append(text[i:j])
            if text[j + 1:j + 2] == "'":
                out.append("'")
                i = j + 2
                continue
            return "".join(out), text[j + 1:]
    j = text.find('"', 1)
    if j < 0 or "\\" in text[1:j]:
        raise NotSimple("escapes in a double-quoted string")
    return text[1:j], text[j + 1:]


def _rest_is_comment(rest: str) -> None:
    rest = rest.rstrip(_SPACE)
    if rest and not (rest.startswith(" #") or rest.startswith("\t#")):
        raise NotSimple("text after a quoted string")


def scalar(text: str) -> Any:
    """One value on its own (a `--set` value): a scalar or a one-line list, as YAML reads it."""
    if has_forbidden(text) or "\t" in text or "\n" in text or "\r" in text:
        raise NotSimple("a value over several lines, or with characters YAML does not allow")
    return _value(text.strip(" "))


def _value(text: str) -> Any:
    """A scalar or one-line list value (comment already possible at the end)."""
    if not text:
        return None
    first = text[0]
    if first in "'\"":
        s, rest = _quoted(text)
        _rest_is_comment(rest)
        return s
    if first == "[":
        end = text.find("]")
        if end < 0:
            raise NotSimple("a list over several lines")
        _rest_is_comment(text[end + 1:])
        inner = text[1:end].strip(_SPACE)
        if not inner:
            return []
        items = []
        for raw in inner.split(","):
            item = raw.strip(_SPACE)
            if not item or (not _FLOW_PLAIN.match(item) and item[0] not in "'\""):
                raise NotSimple("an unusual list item")
            if item[0] in "'\"":
                s, rest = _quoted(item)
                if rest.strip(_SPACE):
                    raise NotSimple("text after a quoted item")
                items.append(s)
            else:
                items.append(plain_scalar(item))
        return items
    if first in _PLAIN_START and not (first == "-" and len(text) > 1 and text[1] not in " \t"):
        raise NotSimple("a value starting with an indicator")
    cut = text.find(" #")
    if cut >= 0:
        text = text[:cut]
    text = text.rstrip(_SPACE)
    if ": " in text or text.endswith(":") or "\t" in text or " #" in text:
        raise NotSimple("a colon or comment inside a plain value")
    return plain_scalar(text)


def load(text: str) -> Any:
    """The document in `text`, or NotSimple."""
    if has_forbidden(text) or "\t" in text or "\r" in text.replace("\r\n", "\n"):
        raise NotSimple("tabs, lone carriage returns or characters YAML does not allow")
    lines = []
    for raw in text.split("\n"):
        raw = raw.removesuffix("\r")
        stripped = raw.strip(_SPACE)
        if not stripped or stripped.startswith("#"):
            continue
        body = raw.lstrip(" ")
        if body.startswith("\t") or stripped.startswith(("---", "...", "%")):
            raise NotSimple("tabs or document markers")
        lines.append((len(raw) - len(body), body.rstrip(_SPACE)))
    if not lines:
        return None
    value, end = _block(lines, 0, lines[0][0], 1)
    if end != len(lines):
        raise NotSimple("text after the document")
    return value


def _block(lines: list[tuple[int, str]], i: int, indent: int, depth: int) -> tuple[Any, int]:
    """The mapping or sequence whose entries start at line i, all indented by `indent`, at
    nesting level `depth` (near MAX_DEPTH the full loader decides, and reports the limit)."""
    if depth >= MAX_DEPTH:
        raise NotSimple("deep nesting")
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        return _sequence(lines, i, indent)
    out: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        body = lines[i][1]
        key, sep, rest = body.partition(":")
        if not sep or not _KEY.match(key) or key in _WORDS or (rest and rest[0] not in " \t"):
            raise NotSimple("not a simple `key: value` line")
        if key in out:
            raise NotSimple("a duplicate key")  # ruamel reports it with its line
        rest = rest.strip(_SPACE)
        if rest.startswith("#"):
            rest = ""  # `section:  # a comment`
        i += 1
        if rest:
            out[key] = _value(rest)
        elif i < len(lines) and (lines[i][0] > indent or (lines[i][0] == indent and lines[i][1][:2] in ("- ", "-"))):
            out[key], i = _block(lines, i, lines[i][0], depth + 1)
        else:
            out[key] = None
    if i < len(lines) and lines[i][0] > indent:
        raise NotSimple("unexpected indentation")
    return out, i


def _sequence(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[list, int]:
    out = []
    while i < len(lines) and lines[i][0] == indent and (lines[i][1].startswith("- ") or lines[i][1] == "-"):
        item = lines[i][1][1:].strip(_SPACE)
        if item.startswith("[") or ":" in item.split(" #", 1)[0]:
            raise NotSimple("a nested collection in a block sequence")
        out.append(_value(item))
        i += 1
    if i < len(lines) and lines[i][0] > indent:
        raise NotSimple("unexpected indentation")
    return out, i


def patch(old_text: str, old_value: Any, new_text: str) -> tuple[Any, list[str]] | None:
    """`load(new_text)` and the dotted keys whose values changed, from `old_value = load(old_text)`.

    Editing one value in a large params file should not cost a full re-parse (about 30 ms for
    10,000 keys). When the texts differ only in lines that keep their indent and key and change a
    non-empty value (or in blank and comment lines), the document keeps its shape, so only those
    values are read again; their parents are found by searching back for the shallower `KEY:`
    lines. Anything else returns None and the caller loads the new text. Dicts on the way to a
    changed value are copied; everything else is shared with `old_value`, which is not modified.
    """
    if old_text == new_text:
        return old_value, []
    start, old_end, new_end = _changed_lines(old_text, new_text)
    new_region = new_text[start:new_end]
    if has_forbidden(new_region) or "\t" in new_region or "\r" in new_region or "\r" in old_text[start:old_end]:
        return None
    old_lines, new_lines = old_text[start:old_end].split("\n"), new_region.split("\n")
    if len(old_lines) != len(new_lines):
        return None
    edits = []  # (key path, new value) for each changed `key: value` line
    at = start  # where the current line starts in new_text
    try:
        for old_line, new_line in zip(old_lines, new_lines):
            if old_line != new_line:
                old_entry, new_entry = _entry(old_line), _entry(new_line)
                if old_entry is None and new_entry is None:
                    pass  # blank or comment lines on both sides
                elif old_entry is None or new_entry is None or old_entry[:2] != new_entry[:2]:
                    return None  # a line changed kind, indent or key
                elif not old_entry[2] or not new_entry[2]:
                    return None  # `key:` opens a block (or ends one): the shape may change
                else:
                    path = _parents(new_text, at, new_entry[0])
                    if path is None:
                        return None
                    edits.append(((*path, new_entry[1]), _value(new_entry[2])))
            at += len(new_line) + 1
    except NotSimple:
        return None
    return _apply(old_value, edits)


def _changed_lines(old: str, new: str) -> tuple[int, int, int]:
    """Where the whole lines that differ start (the same offset in both) and end in old and in new."""
    prefix = _common(old, new, min(len(old), len(new)), False)
    suffix = _common(old, new, min(len(old), len(new)) - prefix, True)  # not overlapping the prefix
    start = old.rfind("\n", 0, prefix) + 1
    old_end, new_end = old.find("\n", len(old) - suffix), new.find("\n", len(new) - suffix)
    return start, old_end if old_end >= 0 else len(old), new_end if new_end >= 0 else len(new)


def _common(old: str, new: str, limit: int, at_end: bool) -> int:
    """How many characters (at most limit) old and new share at their start, or at their end."""
    def part(text: str, i: int, j: int) -> str:  # characters i to j, counted from the end if at_end
        return text[len(text) - j:len(text) - i] if at_end else text[i:j]

    # Bisection on slices: each comparison runs in C and the slices halve, so about `limit` work.
    lo, hi = 0, limit
    if part(old, lo, hi) == part(new, lo, hi):
        return limit
    while hi - lo > 1:  # the first lo characters agree; somewhere in the first hi they do not
        mid = (lo + hi) // 2
        if part(old, lo, mid) == part(new, lo, mid):
            lo = mid
        else:
            hi = mid
    return lo


def _entry(line: str) -> tuple[int, str, str] | None:
    """(indent, key, value text) of a `key: value` line, None for a blank or comment line, else NotSimple."""
    stripped = line.strip(_SPACE)
    if not stripped or stripped.startswith("#"):
        return None
    body = line.lstrip(" ")
    key, sep, rest = body.rstrip(_SPACE).partition(":")
    if not sep or not _KEY.match(key) or key in _WORDS or (rest and rest[0] not in " \t"):
        raise NotSimple("not a simple `key: value` line")  # also `- item` and document markers
    rest = rest.strip(_SPACE)
    return len(line) - len(body), key, "" if rest.startswith("#") else rest


_SHALLOWER: dict[int, re.Pattern[str]] = {}


def _parents(text: str, end: int, indent: int) -> list[str] | None:
    """Keys of the `KEY:` lines that the entry at offset `end`, indented by `indent`, sits under."""
    path: list[str] = []
    while indent > 0:
        pattern = _SHALLOWER.get(indent)
        if pattern is None:
            # The last content line indented less than `indent`: the greedy `.*` backs off from
            # the end, so this searches backwards from `end`, in C.
            pattern = _SHALLOWER[indent] = re.compile(r"(?:.*\n)?( {0,%d}[^ \n\r#])" % (indent - 1), re.S)
        found = pattern.match(text, 0, end)
        if found is None:
            break  # nothing shallower above: a top-level entry of an indented document
        end = found.start(1)
        line_end = text.find("\n", end)
        entry = _entry(text[end:line_end if line_end >= 0 else len(text)].removesuffix("\r"))
        if entry is None or entry[2]:
            return None  # a parent must be a `KEY:` line
        indent = entry[0]
        path.append(entry[1])
    path.reverse()
    return path


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1, 1.0 and True differ; so do 0.0 and -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return repr(a) == repr(b) if isinstance(a, float) else a == b


def _apply(old_value: Any, edits: list[tuple[tuple[str, ...], Any]]) -> tuple[Any, list[str]] | None:
    """`old_value` with the edits made on copies of the dicts along their paths, and the changed keys."""
    copies: dict[tuple[str, ...], dict] = {}  # key path -> the copy of the dict there
    changed = []
    for path, value in edits:
        node = old_value
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None  # old_value is not load(old_text): the caller broke the contract
            node = node[key]
        if isinstance(node, dict):
            return None
        if _same(node, value):
            continue
        changed.append(".".join(path))
        if () not in copies:
            copies[()] = dict(old_value)
        parent = copies[()]
        for i in range(1, len(path)):
            copy = copies.get(path[:i])
            if copy is None:
                copy = copies[path[:i]] = dict(parent[path[i - 1]])
                parent[path[i - 1]] = copy
            parent = copy
        parent[path[-1]] = value  # an existing key keeps its place
    return copies.get((), old_value), sorted(changed)
