"""Cache keys: a node's definition + its input digests → one BLAKE3 key, and why two keys differ.

The pre-image is a tagged canonical JSON document (SPEC §3): the key format, the normalized
definition, the digest of every dep and code file, the params' values, the environment
fingerprint's digest and the seed. Deps carry content digests, never upstream keys — that is
what gives early cutoff: an upstream node that re-ran but wrote the same bytes changes nothing.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from sci import KEY_FORMAT, canonical
from sci.store.hashing import digest_bytes
from sci.plan.nodes import Node

KEY_TAG = "sci.key"


def definition(node: Node, env_values: dict[str, str]) -> dict[str, Any]:
    """What the node does, normalized: everything except its inputs' contents."""
    return {
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


class Reason(namedtuple("Reason", "kind detail", defaults=("",))):
    """Why a node would run. `kind` is one of the REASONS below; `detail` names the change."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


# The reasons `sci status` gives, in the order it reports them.
REASONS = ("never built", "forced", "definition changed", "dep changed", "code changed",
           "params changed", "env changed", "seed changed", "key format changed", "outputs missing")


def _short(value: Any) -> str:
    text = canonical.dumps_text(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


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
    op, np_ = old.get("params", {}), new.get("params", {})
    for k in sorted(set(op) | set(np_)):
        if op.get(k) != np_.get(k):
            before = _short(op[k]) if k in op else "(none)"
            after = _short(np_[k]) if k in np_ else "(none)"
            out.append(Reason("params changed", f"{k}: {before} → {after}"))
    if old.get("environment") != new.get("environment"):
        if env_diff:
            out.extend(Reason("env changed", d) for d in env_diff)
        else:
            out.append(Reason("env changed", "fingerprint"))
    if old.get("seed") != new.get("seed"):
        out.append(Reason("seed changed", f"{old.get('seed')} → {new.get('seed')}"))
    return out
