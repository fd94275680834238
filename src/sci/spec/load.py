"""YAML files → plain data, remembering where every key and value came from (line, column)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sci.errors import Location, SpecError
from sci.spec import limits, simple_yaml
from sci.spec.simple_yaml import NotSimple, plain_scalar


class Positions:
    """Maps a path into a loaded document to the Location of its value (or its key).

    Positions are only needed when something is wrong, so they are computed lazily: the fast
    loader reads the data, and the first call to `at()` re-reads the text with ruamel's
    round-trip loader, which keeps line and column marks.
    """

    def __init__(self, file: str, text: str | None = None):
        self.file = file
        self._text = text
        self.source = text  # kept to point inside a value (at_char)
        self.values: dict[tuple, tuple[int, int]] = {}
        self.keys: dict[tuple, tuple[int, int]] = {}

    def _ensure(self) -> None:
        if self._text is None:
            return
        text, self._text = self._text, None
        try:
            _mark(_yaml_rt().load(text), (), self)
        except Exception:  # noqa: BLE001 - positions are a courtesy; the data already loaded
            pass

    def at(self, path: tuple, *, key: bool = False) -> Location:
        """The location of `path`, or of its nearest ancestor that has one."""
        self._ensure()
        table = self.keys if key else self.values
        p = tuple(path)
        while p:
            if p in table:
                line, col = table[p]
                return Location(self.file, line, col)
            if not key and p in self.keys:
                line, col = self.keys[p]
                return Location(self.file, line, col)
            p = p[:-1]
        return Location(self.file, 1, 1)

    def at_char(self, path: tuple, value: str, index: int) -> Location:
        """The location of character `index` of the string `value` found at `path`.

        Quoting, escapes and folding keep a brace a brace, so the n-th `{` of the value is the
        n-th `{` of the source from where the value starts; where that cannot be found, the
        value's own location.
        """
        start = self.at(path)
        source = getattr(self, "source", None)
        if source is None or start.line is None or path not in self.values:
            return start
        lines = source.splitlines(keepends=True)
        if start.line > len(lines):
            return start
        offset = sum(len(line) for line in lines[:start.line - 1]) + start.column - 1
        ch = value[index]
        for _ in range(value.count(ch, 0, index) + 1):
            offset = source.find(ch, offset) + 1
            if offset == 0:
                return start
        before = source[:offset - 1]
        line = before.count("\n") + 1
        return Location(self.file, line, offset - 1 - (before.rfind("\n") + 1) + 1)


def _yaml_rt():
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def _yaml_safe(pure: bool):
    from ruamel.yaml import YAML

    y = YAML(typ="safe", pure=pure)
    y.allow_duplicate_keys = False
    return y


def _has_c_parser() -> bool:
    try:
        import _ruamel_yaml  # noqa: F401 - ruamel.yaml.clib's C scanner/parser, several times faster
    except ImportError:
        return False
    return True


def _mark(node: Any, path: tuple, pos: Positions) -> None:
    """Record the line/column of every key and value below a round-trip-loaded node."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        for k, v in node.items():
            child = path + (str(k),)
            try:
                kl, kc = node.lc.key(k)
                pos.keys[child] = (kl + 1, kc + 1)
                vl, vc = node.lc.value(k)
                pos.values[child] = (vl + 1, vc + 1)
            except (KeyError, TypeError, AttributeError):
                pass
            _mark(v, child, pos)
    elif isinstance(node, CommentedSeq):
        for i, v in enumerate(node):
            child = path + (i,)
            try:
                line, col = node.lc.item(i)
                pos.values[child] = (line + 1, col + 1)
            except (KeyError, TypeError, AttributeError, IndexError):
                pass
            _mark(v, child, pos)


def _plain(node: Any) -> Any:
    """Loaded YAML → JSON-able plain data (str keys; dates and times as ISO text)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if hasattr(node, "isoformat"):
        return node.isoformat()
    return str(node)


def _fast_load(text: str) -> Any:
    """Plain data from libyaml's events, for the documents sci reads every time (params.yaml):
    mappings, sequences and untagged scalars. Anything else (tags, anchors, merge keys,
    duplicate keys, a %YAML directive, unusual numbers) raises NotSimple, and ruamel's own
    constructor reads the document instead, so both paths give the same data."""
    import _ruamel_yaml

    parser = _ruamel_yaml.CParser(text)
    get = parser.get_event
    stack: list[Any] = []  # containers being filled; a mapping's pending key follows it
    keys: list[Any] = []
    root: Any = None
    have_root = False
    while True:
        ev = get()
        kind = type(ev).__name__
        if kind == "ScalarEvent":
            if ev.anchor is not None or (ev.tag is not None and not (ev.implicit[0] or ev.implicit[1])):
                raise NotSimple("tag or anchor")
            value = plain_scalar(ev.value) if ev.implicit[0] and not ev.style else ev.value
        elif kind == "MappingStartEvent" or kind == "SequenceStartEvent":
            if ev.anchor is not None or (ev.tag is not None and not ev.implicit):
                raise NotSimple("tag or anchor")
            if len(stack) >= limits.MAX_DEPTH:
                raise NotSimple("deep nesting")  # the full loader reports the limit with its place
            container: Any = {} if kind == "MappingStartEvent" else []
            _put(stack, keys, container)
            if not stack and not have_root:
                root, have_root = container, True
            stack.append(container)
            keys.append(_NO_KEY)
            continue
        elif kind == "MappingEndEvent" or kind == "SequenceEndEvent":
            stack.pop()
            keys.pop()
            continue
        elif kind == "StreamEndEvent":
            return root
        elif kind == "DocumentStartEvent":
            if have_root or getattr(ev, "version", None) is not None:
                raise NotSimple("several documents or a %YAML directive")
            continue
        elif kind in ("StreamStartEvent", "DocumentEndEvent"):
            continue
        else:  # AliasEvent
            raise NotSimple(kind)
        if not stack:
            root, have_root = value, True
        else:
            _put(stack, keys, value)


_NO_KEY = object()


def _put(stack: list, keys: list, value: Any) -> None:
    if not stack:
        return
    top = stack[-1]
    if type(top) is list:
        top.append(value)
    elif keys[-1] is _NO_KEY:
        if type(value) is not str or value in top:
            raise NotSimple("a key that is not text, or a duplicate")  # ruamel names it with its line
        keys[-1] = value
    else:
        top[keys[-1]] = value
        keys[-1] = _NO_KEY


def load_yaml_text(text: str, file: str, simple: bool = True) -> tuple[Any, Positions]:
    """Parse YAML text; syntax errors become SpecError at file:line:col, and so does text past
    one of sci's limits (spec/limits.py). `simple=False`: the caller already knows the simple
    reader refuses it."""
    limits.check_size(text, file)
    if simple:
        try:
            return simple_yaml.load(text), Positions(file, text)  # no ruamel import at all
        except NotSimple:
            pass
    if _has_c_parser() and not limits.surrogate_escape(text):
        try:
            return _fast_load(text), Positions(file, text)
        except Exception:  # noqa: BLE001 - not simple, or not valid: the full loader decides and explains
            pass
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    limits.check_events(text, file)  # before ruamel builds anything: bombs, depth, huge numbers
    try:
        # The C parser (libyaml) is several times faster; scalars resolve the same either way
        # (ruamel's YAML 1.2 resolver), but libyaml rejects a few 1.2 constructs, so a syntax
        # error from it is only believed once the pure-Python parser agrees.
        try:
            # ruamel's C path ignores a `%YAML 1.1` directive; the pure parser honours it.
            doc = _yaml_safe(pure=not _has_c_parser() or "%YAML" in text).load(text)
        except YAMLError:
            doc = _yaml_safe(pure=True).load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        hint = "check the indentation and quoting here; a value with ': ' or braces needs quotes"
        if "duplicate key" in problem or "found duplicate key" in str(exc):
            hint = "each key may appear once per mapping"
        raise SpecError(f"YAML syntax error: {problem}", location=loc, hint=hint) from None
    except YAMLError as exc:
        raise SpecError(f"YAML error: {str(exc).splitlines()[0]}", location=Location(file),
                        hint="check the file's YAML syntax") from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        # A constructor's own objection that check_events did not foresee: still the user's file.
        raise SpecError(f"YAML value cannot be read: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}",
                        location=Location(file), hint="check tags (!!…) and numbers in the file") from None
    return _plain(doc), Positions(file, text)


def load_yaml(path: Path, display: str | None = None) -> tuple[Any, Positions]:
    """A YAML file: a regular file within sci's size limit (limits.read_text), parsed."""
    display = display or str(path)
    return load_yaml_text(limits.read_text(path, display), display)


def parse_scalar(text: str) -> Any:
    """A `--set K=V` value, read as a YAML scalar (so 4 is an int, 0.5 a float, x a string)."""
    try:
        value = simple_yaml.scalar(text)  # the common case, without importing ruamel
    except NotSimple:
        pass
    else:
        return text if value is None and text.strip() not in ("null", "~") else value
    from ruamel.yaml import YAML

    limits.check_size(text, "--set value")
    limits.check_events(text, "--set value")

    try:
        value = YAML(typ="safe", pure=True).load(text)
    except Exception:  # noqa: BLE001 - any parse problem means: take it as a string
        return text
    return text if value is None and text.strip() not in ("null", "~") else value
