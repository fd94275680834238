"""YAML files → plain data, remembering where every key and value came from (line, column)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sci.errors import Location, SpecError

Path_ = tuple  # a path into the document: ("steps", "fit", "cmd")


class Positions:
    """Maps a path into a loaded document to the Location of its value (or its key)."""

    def __init__(self, file: str):
        self.file = file
        self.values: dict[tuple, tuple[int, int]] = {}
        self.keys: dict[tuple, tuple[int, int]] = {}

    def at(self, path: tuple, *, key: bool = False) -> Location:
        """The location of `path`, or of its nearest ancestor that has one."""
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


def _yaml():
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def _plain(node: Any, path: tuple, pos: Positions) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        out = {}
        for k, v in node.items():
            child = path + (str(k),)
            try:
                kl, kc = node.lc.key(k)
                pos.keys[child] = (kl + 1, kc + 1)
                vl, vc = node.lc.value(k)
                pos.values[child] = (vl + 1, vc + 1)
            except (KeyError, TypeError, AttributeError):
                pass
            out[str(k)] = _plain(v, child, pos)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for i, v in enumerate(node):
            child = path + (i,)
            try:
                line, col = node.lc.item(i)
                pos.values[child] = (line + 1, col + 1)
            except (KeyError, TypeError, AttributeError, IndexError):
                pass
            out_list.append(_plain(v, child, pos))
        return out_list
    # Scalars: ruamel's subclasses of str/int/float → the plain types.
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def load_yaml_text(text: str, file: str) -> tuple[Any, Positions]:
    """Parse YAML text; syntax errors become SpecError at file:line:col."""
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    pos = Positions(file)
    try:
        doc = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        hint = "check the indentation and quoting here; a value with ': ' or braces needs quotes"
        if "duplicate key" in problem or "found duplicate key" in str(exc):
            hint = "each key may appear once per mapping"
        raise SpecError(f"YAML syntax error: {problem}", location=loc, hint=hint) from None
    except YAMLError as exc:
        raise SpecError(f"YAML error: {exc}", location=Location(file)) from None
    return _plain(doc, (), pos), pos


def load_yaml(path: Path, display: str | None = None) -> tuple[Any, Positions]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"file not found: {display or path}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                        location=Location(display or str(path)), hint="save the file as UTF-8") from None
    return load_yaml_text(text, display or str(path))


def parse_scalar(text: str) -> Any:
    """A `--set K=V` value, read as a YAML scalar (so 4 is an int, 0.5 a float, x a string)."""
    from ruamel.yaml import YAML

    try:
        value = YAML(typ="safe", pure=True).load(text)
    except Exception:  # noqa: BLE001 - any parse problem means: take it as a string
        return text
    return text if value is None and text.strip() not in ("null", "~") else value
