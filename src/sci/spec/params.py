"""Parameters: loaded from params.yaml or inline, overridden by `--set`, looked up by dotted key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sci.errors import Location, SpecError, UserError
from sci.spec.limits import read_text
from sci.workspace import escape_problem
from sci.spec.load import Positions, load_yaml_text, parse_scalar
from sci.values import Value

_MISSING = object()


def lookup(params: dict, dotted: str, default: Any = _MISSING) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            if default is not _MISSING:
                return default
            raise KeyError(dotted)
    return node


def all_keys(params: Any, prefix: str = "") -> list[str]:
    """Every dotted key in `params` (for did-you-mean hints)."""
    out = []
    if isinstance(params, dict):
        for k, v in params.items():
            key = f"{prefix}{k}"
            out.append(key)
            out.extend(all_keys(v, key + "."))
    return out


def missing_key_hint(params: dict, dotted: str) -> str:
    import difflib  # only when a key is missing

    close = difflib.get_close_matches(dotted, all_keys(params), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else "add it to the parameters, or remove it from the step"


class ParamsSource(Value):
    """What `load` read: the mapping, its file and positions, and — when the simple reader took
    the file whole — its text, kept so the next edit is read by its changed lines. `changed`:
    the keys that differ from `previous`, when it was patched."""

    __slots__ = _FIELDS = ("data", "file", "pos", "text", "changed")

    def __init__(self, data: dict, file: str | None = None, pos: Positions | None = None, text: str | None = None,
                 changed: list[str] | None = None):
        self.data, self.file, self.pos, self.text, self.changed = data, file, pos, text, changed


def load(root: Path, spec_params: Any, spec_pos: Positions,
         previous: tuple[str, dict] | None = None) -> ParamsSource:
    """The parameters: inline, or read from their file.

    `previous` is a text and its mapping from the last plan: after an edit of a few values only
    the changed lines are read again (simple_yaml.patch), not a 10,000-key file."""
    if spec_params is None:
        return ParamsSource({})
    if isinstance(spec_params, dict):
        import copy  # with weakref, ~0.4 ms: only for inline parameters and overrides

        return ParamsSource(copy.deepcopy(spec_params))
    rel = str(spec_params)
    problem = escape_problem(rel)
    if problem:
        raise SpecError(f"parameters file {rel!r} {problem}", location=spec_pos.at(("params",)),
                        hint="name a file inside the workspace, relative to it")
    path = root / rel
    if not path.is_file():
        raise SpecError(f"parameters file {rel} " + ("is not a regular file" if os.path.lexists(path) else "not found"),
                        location=spec_pos.at(("params",)), hint="create it, or give params as an inline mapping")
    read = _read_file(path, rel, previous)
    if read.data is None:
        read.data, read.text = {}, None
    if not isinstance(read.data, dict):
        raise SpecError("the parameters file must hold a mapping", location=Location(rel, 1, 1),
                        hint="write key: value pairs at the top level")
    return read


def _read_file(path: Path, rel: str, previous: tuple[str, dict] | None) -> ParamsSource:
    from sci.spec import simple_yaml

    text = read_text(path, rel, what="parameters file")
    if previous is not None:
        patched = simple_yaml.patch(previous[0], previous[1], text)
        if patched is not None:
            return ParamsSource(patched[0], rel, Positions(rel, text), text, patched[1])
    try:
        return ParamsSource(simple_yaml.load(text), rel, Positions(rel, text), text)
    except simple_yaml.NotSimple:
        data, pos = load_yaml_text(text, rel, simple=False)
        return ParamsSource(data, rel, pos)


def to_json(params: dict, read: ParamsSource, spec_pos: Positions, overrides: list[str]) -> bytes:
    """The parameters' canonical JSON, what keys and records hold. A value it cannot hold — a
    float that is not finite: `.inf`, `.nan`, `1e999` — is refused at its key (exit 2), from
    the params file, sci.yaml's inline `params` or the `--set` that gave it."""
    from sci import canonical

    try:
        return canonical.dumps(params)
    except ValueError:
        found = _not_finite(params, ())
        if found is None:
            raise
        path, value = found
        key = ".".join(map(str, path))
        hint = "keys and records hold finite numbers only: write a finite number, or quote it to make it text"
        if any(item.split("=", 1)[0].strip() == key for item in overrides):
            raise UserError(f"--set {key}: {value!r} is not a finite number", hint=hint) from None
        where = read.pos.at(path) if read.pos is not None else spec_pos.at(("params", *path))
        raise SpecError(f"parameter {key} is {value!r}, not a finite number", location=where, hint=hint) from None


def _not_finite(value: Any, path: tuple) -> tuple[tuple, float] | None:
    """The first float in `value` that is infinite or not a number, with its path."""
    if isinstance(value, float):
        import math

        return None if math.isfinite(value) else (path, value)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _not_finite(v, (*path, k))
        if found is not None:
            return found
    return None


def apply_overrides(params: dict, overrides: list[str]) -> dict:
    """Apply `--set a.b=value` overrides (values parsed as YAML scalars) to a copy of params."""
    if not overrides:
        return params
    import copy

    out = copy.deepcopy(params)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r} is not KEY=VALUE", hint="write e.g. --set fit.degree=4")
        key, raw = item.split("=", 1)
        key = key.strip()
        parent_key, _, leaf = key.rpartition(".")
        try:
            parent = lookup(out, parent_key) if parent_key else out
            exists = isinstance(parent, dict) and leaf in parent
        except KeyError:
            exists = False
        if not exists:
            raise UserError(f"--set {key}: no such parameter", hint=missing_key_hint(params, key))
        parent[leaf] = parse_scalar(raw)
    return out
