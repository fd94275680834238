"""Cache keys: a node's definition + its input digests → one BLAKE3 key, and why two keys differ.

The pre-image is a tagged canonical JSON document (SPEC §3): the key format, the normalized
definition, the digest of every dep and code file, the params' values, the environment
fingerprint's digest and the seed. Deps carry content digests, never upstream keys — that is
what gives early cutoff: an upstream node that re-ran but wrote the same bytes changes nothing.
"""

from __future__ import annotations

import re
from collections import namedtuple
from typing import Any

from sci import KEY_FORMAT, canonical
from sci.store.hashing import digest_bytes, is_digest, path_problem
from sci.plan.nodes import Node
from sci.workspace import RESERVED

KEY_TAG = "sci.key"


def definition(node: Node, env_values: dict[str, str]) -> dict[str, Any]:
    """What the node does, normalized: everything except its inputs' contents.

    `metrics` (the outputs read as metrics files) is there only when the step declares some:
    a result recorded without reading them must not stand in for one that did, and the keys of
    steps without metrics stay what they were before metrics files existed."""
    doc = {
        "kind": node.kind,
        "cmd": node.cmd,
        "fn": node.fn,
        "outs": dict(node.outs),
        "sandbox": node.sandbox,
        "determinism": node.determinism,
        "env": env_values,
        "evidence": list(node.evidence) if node.kind == "dossier" else None,
        # OMP/MKL/torch thread counts follow resources.cpu, and can change floating-point bytes.
        "threads": max(1, int(node.resources["cpu"])),
    }
    if node.metrics:
        doc["metrics"] = dict(node.metrics)
    return doc


def components(node: Node, definition_doc: dict, deps: dict[str, str], code: dict[str, str],
               environment: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    doc = {
        "format": KEY_FORMAT,
        "definition": definition_doc,
        "deps": deps,
        "code": code,
        "params": node.params,
        "environment": environment,
        "seed": node.seed,
    }
    if extra:
        doc["inputs"] = extra
    return doc


def key_of(comp: dict[str, Any]) -> str:
    return digest_bytes(canonical.dumps({"type": KEY_TAG, "components": comp}))


_KINDS = ("file", "tree")
_NEVER_OUTPUTS = frozenset((*RESERVED, ".git"))


def outputs_problem(action: Any) -> str | None:
    """What is wrong with an action result's outputs, or None: they must be exactly the
    outputs its key's definition declares (same names, same paths), each a well-formed record
    at a relative workspace path outside sci's own directories. A result from elsewhere (a
    bundle, a remote) whose outputs were edited would otherwise be served at a path nobody
    declared — or crash the build that looks for the declared one. (Checked at every cache
    hit, as the result is read: a few µs an output.)"""
    try:
        declared = action["components"]["definition"]["outs"]
        outputs = action["outputs"]
    except (KeyError, TypeError):
        return "it has no outputs or no definition"
    if type(outputs) is not dict or type(declared) is not dict:
        return "its outputs are malformed"
    if outputs.keys() != declared.keys():
        extra = sorted(set(outputs) ^ set(declared))
        return f"its outputs are not the ones its step declares ({', '.join(map(str, extra[:3]))})"
    for name, rec in outputs.items():
        if not (type(rec) is dict and rec.get("type") in _KINDS and is_digest(rec.get("digest"))
                and type(rec.get("size")) is int and rec["size"] >= 0 and type(rec.get("path")) is str):
            return f"its output {name!r} is malformed"
        path = rec["path"]
        if path != declared[name]:
            return f"its output {name!r} is at {path!r}, but its step declares {declared[name]!r}"
        if path_problem(path) or path.split("/", 1)[0] in _NEVER_OUTPUTS:
            return f"its output {name!r} has an unsafe path {path!r}"
    return None


class Reason(namedtuple("Reason", "kind detail", defaults=("",))):
    """Why a node would run. `kind` is one of the REASONS below; `detail` names the change."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


# The reasons `sci status` gives, in the order it reports them.
REASONS = ("never built", "forced", "definition changed", "dep changed", "code changed",
           "params changed", "env changed", "seed changed", "key format changed", "outputs missing")


ABSENT = "(absent)"
# At most this many changed parameter leaves are named one by one; the rest are counted.
MAX_PARAM_REASONS = 20
_WIDTH = 40  # a shown value longer than this is cut, keeping the part that differs
_CONTEXT = 10  # characters kept on each side of the difference
# Used only to explain a change (status, build -n), so compiled on first use (re's own cache).
_PLAIN_KEY = r"[A-Za-z0-9_-]+"
_EXPONENT = r"e([+-]?)0+(\d)"


def _leaves(value: Any, path: tuple, out: dict[tuple, Any]) -> None:
    """Every leaf under `value`: a scalar or an empty mapping or list, by its path."""
    if type(value) is dict and value:
        for k, v in value.items():
            _leaves(v, path + (k,), out)
    elif type(value) is list and value:
        for i, v in enumerate(value):
            _leaves(v, path + (i,), out)
    else:
        out[path] = value


def _path_text(path: tuple) -> str:
    """`fit.grid[2]`: `.name` per mapping key, `[i]` per list index (a key that is not plain
    letters, digits, _ or - is written `["a.b"]`, so two paths never read the same)."""
    parts = []
    for p in path:
        if type(p) is int:
            parts.append(f"[{p}]")
        elif re.fullmatch(_PLAIN_KEY, p):
            parts.append(f".{p}" if parts else p)
        else:
            parts.append(f"[{canonical.dumps_text(p)}]")
    return "".join(parts)


def _path_order(path: tuple) -> tuple:
    # mapping keys before list indices where one path holds a mapping and the other a list
    return tuple((1, p, "") if type(p) is int else (0, 0, p) for p in path)


def _text(value: Any) -> str:
    text = canonical.dumps_text(value)
    # 1e-09 → 1e-9: a float's exponent as people write it (display only; equality is on the JSON)
    return re.sub(_EXPONENT, r"e\1\2", text) if type(value) is float else text


def _cut(text: str, start: int, end: int) -> str:
    return ("…" if start > 0 else "") + text[start:end] + ("…" if end < len(text) else "")


def _shown(before: str, after: str) -> tuple[str, str]:
    """Both values short enough to read, each cut around where they differ (never cut away)."""
    if len(before) <= _WIDTH and len(after) <= _WIDTH:
        return before, after
    if before == ABSENT or after == ABSENT:
        return tuple(t if len(t) <= _WIDTH else _cut(t, 0, _WIDTH - 1) for t in (before, after))
    prefix = 0
    limit = min(len(before), len(after))
    while prefix < limit and before[prefix] == after[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and before[-1 - suffix] == after[-1 - suffix]:
        suffix += 1
    start = max(0, prefix - _CONTEXT)
    out = []
    for t in (before, after):
        end = min(len(t), len(t) - suffix + _CONTEXT, start + _WIDTH)
        out.append(_cut(t, start, end))
    return out[0], out[1]


def param_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Reason]:
    """One reason per changed parameter leaf: `fit.tol: 1e-10 → 1e-9`, `fit.new: (absent) → 3`.

    Leaves compare by their canonical JSON, as the key does (so 1 and 1.0 differ). Values are
    shown as JSON, strings quoted, so no value reads like another or like `(absent)`.
    """
    before: dict[tuple, Any] = {}
    after: dict[tuple, Any] = {}
    # a declared key `simulate.n` is the path simulate → n, whether a step declares it or `simulate`
    for k, v in old.items():
        _leaves(v, tuple(k.split(".")), before)
    for k, v in new.items():
        _leaves(v, tuple(k.split(".")), after)
    out: list[Reason] = []
    changed = 0
    for path in sorted(before.keys() | after.keys(), key=_path_order):
        b = _text(before[path]) if path in before else ABSENT
        a = _text(after[path]) if path in after else ABSENT
        if a == b:
            continue
        changed += 1
        if changed <= MAX_PARAM_REASONS:
            b, a = _shown(b, a)
            out.append(Reason("params changed", f"{_path_text(path)}: {b} → {a}"))
    if changed > MAX_PARAM_REASONS:
        out.append(Reason("params changed", f"{changed - MAX_PARAM_REASONS} more changed values not shown"))
    if not out and old != new:  # the same values, read through other declared keys
        out.append(Reason("params changed", f"declared keys: {', '.join(old) or '(none)'} → {', '.join(new) or '(none)'}"))
    return out


def explain(old: dict[str, Any], new: dict[str, Any], env_diff: list[str] | None = None) -> list[Reason]:
    """Typed reasons for the difference between two key pre-images (old may be from another run)."""
    out: list[Reason] = []
    if old.get("format") != new.get("format"):
        return [Reason("key format changed", f"{old.get('format')} → {new.get('format')}")]
    od, nd = old.get("definition", {}), new.get("definition", {})
    for field in sorted(set(od) | set(nd)):
        if od.get(field) != nd.get(field):
            out.append(Reason("definition changed", field))
    for kind, comp in (("dep changed", "deps"), ("code changed", "code")):
        o, n = old.get(comp, {}), new.get(comp, {})
        for path in sorted(set(o) | set(n)):
            if path not in o:
                out.append(Reason(kind, f"{path} (added)"))
            elif path not in n:
                out.append(Reason(kind, f"{path} (removed)"))
            elif o[path] != n[path]:
                out.append(Reason(kind, path))
    oi, ni = old.get("inputs") or {}, new.get("inputs") or {}
    for name in sorted(set(oi) | set(ni)):
        if oi.get(name) != ni.get(name):
            if name == "implementation":  # sci's own dossier code (a new sci version or a patched one)
                out.append(Reason("code changed", "sci's dossier implementation"))
            else:
                out.append(Reason("dep changed", "the indexed nodes' results" if name == "dossier_input" else name))
    out.extend(param_changes(old.get("params") or {}, new.get("params") or {}))
    if old.get("environment") != new.get("environment"):
        if env_diff:
            out.extend(Reason("env changed", d) for d in env_diff)
        else:
            out.append(Reason("env changed", "fingerprint"))
    if old.get("seed") != new.get("seed"):
        out.append(Reason("seed changed", f"{old.get('seed')} → {new.get('seed')}"))
    return out
