"""A parameter edit → the previous plan with only the steps that read a changed value re-expanded.

Parameters reach a plan in two ways only: the values a step declares under `params:`, and
`{params.…}` placeholders in its cmd, deps, outs and code. So when sci.yaml, hardware.yaml and
the store location are what they were, and only params.yaml or the `--set` overrides changed,
the steps that read none of the changed keys expand exactly as before. This module re-expands
the others, and keeps the old graph when their paths are unchanged (so edges, order and globs
are too). When in doubt — a path moved, a dossier step is touched, the cache is from another
plan — it returns None and the caller plans from scratch.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

from sci import canonical
from sci.store.hashing import digest_bytes

if TYPE_CHECKING:
    from sci.plan.loaded import Loaded


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two parameter mappings (a list counts as one value)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in old.keys() | new.keys():
            a, b = old.get(k, _MISSING), new.get(k, _MISSING)
            if a is _MISSING or b is _MISSING:
                out.append(f"{prefix}{k}")
            elif a is b or (type(a) is type(b) and type(a) in _SCALARS and a == b):
                continue  # the common case, decided without a call: 10,000 keys in 2 ms
            else:
                out.extend(changed_keys(a, b, f"{prefix}{k}."))
        return out
    if type(old) is type(new) and (old == new if not isinstance(old, list)
                                   else canonical.dumps(old) == canonical.dumps(new)):
        return []  # 1, 1.0 and True are different values, also inside a list
    return [prefix[:-1]] if prefix else [""]


_MISSING = object()
_SCALARS = frozenset({str, int, float, bool, type(None)})


class ReadIndex:
    """Which steps read which parameter keys, indexed by key: the steps a change touches are
    found by look-ups and one bisection per changed key, not by visiting every step (a loop over
    10,000 steps took ~5 ms, twice per edit). Kept in the plan (Loaded.reads)."""

    def __init__(self, step_reads: dict[str, list[str]]):
        readers: dict[str, Any] = {}  # key -> its one reading step, or a list of them
        for step, reads in step_reads.items():
            for r in dict.fromkeys(reads):  # a key read twice (params: and a placeholder) once
                had = readers.get(r)
                readers[r] = step if had is None else (had + [step] if type(had) is list else [had, step])
        self.readers = readers  # a plain string for one reader: 10,000 of them unpickle in a third of the time
        self.keys = sorted(readers)  # a key's descendants follow it: bisect for "key." .. "key/"

    def affected(self, changed: list[str]) -> set[str]:
        """Steps with a read that touches a changed key: the read is the key, lies under it or
        above it ("" — the whole document — touches every read)."""
        if not changed:
            return set()
        if "" in changed:  # the whole parameter document changed type: every reader is touched
            found = list(self.readers)
        else:
            found = [key for c in changed for key in self._touching(c)]
        out: set[str] = set()
        for key in found:
            steps = self.readers.get(key)
            if type(steps) is str:
                out.add(steps)
            elif steps is not None:
                out.update(steps)
        return out

    def _touching(self, c: str) -> list[str]:
        """The keys a read of which touches a change of `c`: itself, its parents, and the read
        keys under it."""
        found = [c]
        parent = c
        while "." in parent:  # a read of a key above the change
            parent = parent.rsplit(".", 1)[0]
            found.append(parent)
        lo = bisect.bisect_left(self.keys, c + ".")  # reads under the change ("/" follows ".")
        found.extend(self.keys[lo:bisect.bisect_left(self.keys, c + "/", lo)])
        return found


def affected_steps(step_reads: dict[str, list[str]], changed: list[str]) -> set[str]:
    """Steps with a read that touches a changed key (see ReadIndex.affected)."""
    return ReadIndex(step_reads).affected(changed)


def patch(old: Loaded, params: dict, *, derive_seed, changed: list[str] | None = None) -> Loaded | None:
    """`old` re-planned for `params`, or None when only a full plan can be trusted. `changed`:
    the keys that differ from old.params, when the caller knows them (simple_yaml.patch)."""
    import pickle

    from sci.plan.nodes import expand, owned_files, render_commands

    changed = changed_keys(old.params, params) if changed is None else changed
    steps = old.reads.affected(changed)
    graph = old.graph
    names = [n for step in sorted(steps) for n in graph.nodes_of_step(step)]  # without decoding a node
    if any(n in graph.dossiers for n in names):
        return None  # a dossier's deps are filled in by graph building: plan it whole
    doc = {"defaults": old.doc_head["defaults"],
           "steps": {name: pickle.loads(old.step_docs[name]) for name in sorted(steps) if name in old.step_docs}}
    new_nodes = expand(doc, params, old.pos, reserved=old.reserved, derive_seed=derive_seed,
                       owned=owned_files(old.doc_head["params"]))
    if sorted(n.name for n in new_nodes) != sorted(names):
        return None
    for node in new_nodes:
        before = graph.nodes[node.name]
        if node.kind == "dossier" or node.deps != before.deps or node.outs != before.outs or node.code != before.code:
            return None
        node.dep_paths = before.dep_paths
    render_commands(new_nodes, params, old.pos)
    replaced = {n.name: n for n in new_nodes}
    nodes = (graph.nodes.with_replaced(replaced) if hasattr(graph.nodes, "with_replaced")
             else {**graph.nodes, **replaced})
    gpu = {n.name for n in new_nodes if n.needs_gpu}
    gpu_nodes = (graph.gpu_nodes - set(replaced)) | gpu
    params_json = canonical.dumps(params)
    return old.replace(graph=graph.replace(nodes=nodes, gpu_nodes=frozenset(gpu_nodes)),
                       params=params, params_digest=digest_bytes(params_json), params_json=params_json)
