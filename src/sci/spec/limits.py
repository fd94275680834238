"""Bounds on what sci reads from a user's files, so hostile or broken input ends in one worded
error (exit 2) within a second and in bounded memory, never in a hang, a crash or exit 3.

The limits are far above any real pipeline (the largest benchmark: 10,000 steps, ~2 MB of
sci.yaml, ~200,000 YAML nodes) and far below what hurts: a "billion laughs" alias bomb expands
to 387 million nodes, `[[[…]]]` 50,000 deep overflows the C stack of the YAML composer, an
integer of 5,000 digits is refused by Python's own int(). docs/security.md lists them.

Both readers of YAML keep them: the fast readers (simple_yaml, and the event reader in
load.py) give up (NotSimple) at the first sign of a deep, aliased, tagged or numeric-heavy
document, and the full reader runs `check_events` over the parser's events before ruamel
constructs anything, so a limit is reported at its line and column before any memory is spent.
"""

from __future__ import annotations

import os
import re
import stat as stat_mod
from pathlib import Path

from sci.errors import Location, SpecError

MAX_FILE_BYTES = 16 * 1024**2  # sci.yaml, a params file, config/hardware.yaml
MAX_DEPTH = 64  # mappings and sequences nested in one another, aliases expanded
MAX_NODES = 1_000_000  # YAML nodes of one document, every alias counted as what it expands to
MAX_INT_DIGITS = 1000  # digits of one integer (Python's int() refuses more than 4,300)
MAX_PLAN_NODES = 200_000  # nodes a pipeline expands to (the sum of its steps' foreach products)

# Both patterns are asked only of rare text (a scalar over MAX_INT_DIGITS long, a `\u` escape):
# compiled on first use (re's own cache), not at every start-up.
_INT = r"[-+]?(?:0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+|[0-9_]+)\Z"
# A double-quoted escape that names a UTF-16 surrogate (\ud800, \U0000DFFF): not a character.
_SURROGATE_ESCAPE = r"\\(?:u|U0000)[dD][89a-fA-F][0-9a-fA-F]{2}"
_SCALAR_TAGS = ("int", "float", "bool", "null", "str", "binary", "timestamp")


def read_text(path: Path, display: str, *, what: str = "file") -> str:
    """A user's YAML file as text: a regular file (not a directory, device or FIFO — it is
    opened without blocking), at most MAX_FILE_BYTES, UTF-8. SpecError naming `display`."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise SpecError(f"{what} not found: {display}") from None
    except OSError as exc:
        raise SpecError(f"cannot read {what} {display}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise SpecError(f"{what} {display} is not a regular file", location=Location(display),
                            hint="name a YAML file inside the workspace")
        if st.st_size > MAX_FILE_BYTES:
            raise SpecError(f"{what} {display} is {st.st_size} bytes, over sci's limit of {MAX_FILE_BYTES}",
                            location=Location(display), hint="keep large data in deps, not in YAML")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read {what} {display}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:  # grew while being read
        raise SpecError(f"{what} {display} is over sci's limit of {MAX_FILE_BYTES} bytes", location=Location(display))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", location=Location(display),
                        hint="save the file as UTF-8") from None


def check_size(text: str, file: str) -> None:
    if len(text) > MAX_FILE_BYTES:  # characters: at least as many bytes
        raise SpecError(f"{file} is over sci's limit of {MAX_FILE_BYTES} bytes", location=Location(file),
                        hint="keep large data in deps, not in YAML")


def long_int(text: str) -> bool:
    """Whether a plain scalar reads as an integer with more than MAX_INT_DIGITS digits."""
    return len(text) > MAX_INT_DIGITS and re.match(_INT, text) is not None


def surrogate_escape(text: str) -> bool:
    """Whether `text` may escape a surrogate (the fast readers then leave it to the full one,
    whose `check_events` names the place). A `\\\\ud800` (an escaped backslash) also answers
    yes: that only costs the slower reader."""
    return ("\\u" in text or "\\U" in text) and re.search(_SURROGATE_ESCAPE, text) is not None


def _events(text: str, pure: bool):
    if not pure:
        import _ruamel_yaml

        parser = _ruamel_yaml.CParser(text)
        while True:
            ev = parser.get_event()
            yield ev
            if type(ev).__name__ == "StreamEndEvent":
                return
    from ruamel.yaml import YAML

    yield from YAML(typ="safe", pure=True).parse(text)


def check_events(text: str, file: str) -> None:
    """Raise SpecError at the first place where `text` passes a limit: nesting deeper than
    MAX_DEPTH, more than MAX_NODES nodes with aliases expanded, an alias inside the node it
    names (a recursive structure), an integer of more than MAX_INT_DIGITS digits, an
    explicitly tagged scalar its tag cannot read (`!!int abc`), or a string holding a UTF-16
    surrogate (`"\\ud800"`: not a character, and no record could hold it). A YAML syntax
    error is left to the loader, which words it; so is an unknown anchor."""
    from ruamel.yaml.error import YAMLError

    try:
        import _ruamel_yaml  # noqa: F401
        tries = (False, True)
    except ImportError:
        tries = (True,)
    for pure in tries:
        try:
            _walk(_events(text, pure), file)
            return
        except YAMLError:
            continue  # libyaml refuses a few YAML 1.2 constructs: the pure parser decides


def _walk(events, file: str) -> None:
    total = 0
    # Open collections: [anchor id or None, nodes so far, height so far] (aliases expanded; a
    # scalar's height is 0, a collection's one more than its highest child's).
    stack: list[list] = []
    anchors: dict[str, int] = {}  # anchor name -> id of its latest definition
    sizes: dict[int, tuple[int, int]] = {}  # anchor id -> (nodes, height) of what it names
    open_ids: set[int] = set()  # anchors whose collection has not ended yet
    next_id = 0

    def fail(ev, message: str, hint: str) -> SpecError:
        mark = ev.start_mark
        return SpecError(message, location=Location(file, mark.line + 1, mark.column + 1), hint=hint)

    def define(ev) -> int | None:
        nonlocal next_id
        if not ev.anchor:
            return None
        next_id += 1
        anchors[ev.anchor] = next_id
        return next_id

    def add(nodes: int, height: int) -> None:
        nonlocal total
        total += nodes
        if stack:
            top = stack[-1]
            top[1] += nodes
            top[2] = max(top[2], height + 1)

    for ev in events:
        kind = type(ev).__name__
        if kind in ("MappingStartEvent", "SequenceStartEvent"):
            if len(stack) >= MAX_DEPTH:
                raise fail(ev, f"nested more than {MAX_DEPTH} levels deep", "flatten the structure")
            aid = define(ev)
            if aid is not None:
                open_ids.add(aid)
            stack.append([aid, 1, 1])
        elif kind in ("MappingEndEvent", "SequenceEndEvent"):
            aid, nodes, height = stack.pop()
            if aid is not None:
                open_ids.discard(aid)
                sizes[aid] = (nodes, height)
            add(nodes, height)
        elif kind == "ScalarEvent":
            _check_scalar(ev, fail)
            aid = define(ev)
            if aid is not None:
                sizes[aid] = (1, 0)
            add(1, 0)
        elif kind == "AliasEvent":
            aid = anchors.get(ev.anchor)
            if aid is None:
                continue  # an unknown anchor: the loader says so, with its place
            if aid in open_ids:
                raise fail(ev, f"alias *{ev.anchor} refers to a node that contains it (a recursive structure)",
                           "use an anchor only after the node it names has ended")
            nodes, height = sizes[aid]
            if len(stack) + height > MAX_DEPTH:
                raise fail(ev, f"alias *{ev.anchor} nests the document more than {MAX_DEPTH} levels deep",
                           "flatten the structure")
            add(nodes, height)
        else:
            continue
        if total > MAX_NODES:
            raise fail(ev, f"the document expands to more than {MAX_NODES} nodes"
                       + (" (aliases expanded)" if anchors else ""),
                       "an alias repeats everything its anchor names; use fewer or smaller ones")


def _check_scalar(ev, fail) -> None:
    from sci.canonical import not_text

    if not_text(ev.value):
        raise fail(ev, "a string holds a UTF-16 surrogate (\\ud800-\\udfff), which is not a character",
                   "write the character itself, or escape a code point above \\uffff as \\U0001f600")
    plain = not ev.style and ev.implicit[0]
    if plain:
        if long_int(ev.value):
            raise fail(ev, f"an integer of {len(ev.value)} digits; sci reads at most {MAX_INT_DIGITS}",
                       "quote it to keep it as text")
        return
    tag = ev.tag
    if not tag or ev.implicit[0] or ev.implicit[1] or tag == "tag:yaml.org,2002:str":
        return
    name = tag.rsplit(":", 1)[-1]
    if not tag.startswith("tag:yaml.org,2002:") or name not in _SCALAR_TAGS:
        return  # a tag the safe loader has no constructor for: it says so, with its place
    if name == "int" and long_int(ev.value.strip()):
        raise fail(ev, f"an integer of {len(ev.value)} digits; sci reads at most {MAX_INT_DIGITS}",
                   "quote it to keep it as text")
    from ruamel.yaml import YAML
    from ruamel.yaml.nodes import ScalarNode

    try:
        YAML(typ="safe", pure=True).constructor.construct_object(ScalarNode(tag, ev.value))
    except Exception as exc:  # noqa: BLE001 - whatever the tag's constructor objects to
        why = type(exc).__name__ if isinstance(exc, KeyError) or not str(exc) else str(exc).splitlines()[0]
        raise fail(ev, f"!!{name} {ev.value[:40]!r} cannot be read as {name} ({why[:80]})",
                   f"remove the !!{name} tag or fix the value") from None


def check_plan_size(count: int, step: str, location: Location) -> None:
    """A pipeline may expand to at most MAX_PLAN_NODES nodes (SpecError at the step's foreach)."""
    if count > MAX_PLAN_NODES:
        raise SpecError(f"step {step}: the pipeline expands to {count} nodes, over sci's limit of {MAX_PLAN_NODES}",
                        location=location, hint="split the sweep into several pipelines, or sweep fewer values")
