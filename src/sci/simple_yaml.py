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


class NotSimple(Exception):
    """Outside the subset: the caller uses the full YAML loader."""


_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)\Z")
_WORDS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False,
          "null": None, "Null": None, "NULL": None, "~": None, "": None}
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_PLAIN_START = set("-?:,[]{}#&*!|>'\"%@`")
_FLOW_PLAIN = re.compile(r"(?:[A-Za-z0-9_.+~/]|-(?! ))[A-Za-z0-9_.+\- ~/]*\Z")
# Characters YAML does not allow in a document, which ruamel reports as errors.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\x85\u2028\u2029\ud800-\udfff\ufffe\uffff]")
_SPACE = " \t"


def plain_scalar(value: str) -> Any:
    """A plain scalar as YAML 1.2's core schema reads it; NotSimple where ruamel should decide."""
    first = value[:1]
    if value in _WORDS:
        return _WORDS[value]
    if first and first in "-+0123456789.":
        if _INT.match(value):
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
    if _FORBIDDEN.search(text) or "\t" in text or "\n" in text or "\r" in text:
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
    if _FORBIDDEN.search(text) or "\t" in text or "\r" in text.replace("\r\n", "\n"):
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
    value, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise NotSimple("text after the document")
    return value


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    """The mapping or sequence whose entries start at line i, all indented by `indent`."""
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
            out[key], i = _block(lines, i, lines[i][0])
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
