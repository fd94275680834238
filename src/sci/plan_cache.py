"""The plan cache (`.sci/plan.pickle`): a planned pipeline kept between builds, readable in part.

    [4-byte length][marshal header: format, key][marshal body: plan, nodes]

`plan` is the `Loaded` without its nodes (pickled); `nodes` holds each node with its dep sources
on its own (marshal, which decodes plain data several times faster than pickle). A build that
uses every node decodes them all at once (`read(..., lazy=False)`, as quick as one pickle of
the whole plan was); a parameter edit reads the plan lazily and decodes only the nodes it
re-plans or must key again (`LazyNodes`): at 10,000 nodes, a few instead of all.
"""

from __future__ import annotations

import dataclasses
import marshal
import os
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sci.graph import DepSource
from sci.plan import _NODE_FIELDS, Node

if TYPE_CHECKING:
    from sci.pipeline import Loaded

CACHE_FORMAT = "sci-plan-6"
_MARSHAL, _PICKLE = b"m", b"p"


def encode_node(node: Node, sources: list[DepSource]) -> bytes:
    value = (tuple(getattr(node, f) for f in _NODE_FIELDS), [(s.path, s.producer, s.out_path) for s in sources])
    try:
        return _MARSHAL + marshal.dumps(value)
    except ValueError:  # a parameter value marshal cannot hold (a YAML date, say)
        return _PICKLE + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def decode_node(raw: bytes) -> tuple[Node, list[DepSource]]:
    fields, sources = marshal.loads(raw[1:]) if raw[:1] == _MARSHAL else pickle.loads(raw[1:])
    return Node(*fields), [DepSource(*s) for s in sources]


class _Table:
    """Encoded nodes, decoded on first use and kept."""

    __slots__ = ("raw", "nodes", "sources")

    def __init__(self, raw: dict[str, bytes]):
        self.raw = raw
        self.nodes: dict[str, Node] = {}
        self.sources: dict[str, list[DepSource]] = {}

    def node(self, name: str) -> Node:
        hit = self.nodes.get(name)
        if hit is None:
            hit, self.sources[name] = decode_node(self.raw[name])
            self.nodes[name] = hit
        return hit

    def source(self, name: str) -> list[DepSource]:
        hit = self.sources.get(name)
        if hit is None:
            self.node(name)
            hit = self.sources[name]
        return hit


class _TableView(Mapping):
    """A read-only mapping over a table's node names, in plan order."""

    def __init__(self, table: _Table):
        self._table = table

    def __contains__(self, name: object) -> bool:
        return name in self._table.raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.raw)

    def __len__(self) -> int:
        return len(self._table.raw)


class LazyNodes(_TableView):
    """graph.nodes of a lazily read plan: name -> Node, decoding a node when first asked for.
    `replaced` nodes (re-planned after a parameter edit) shadow the stored ones."""

    def __init__(self, table: _Table, replaced: dict[str, Node] | None = None):
        super().__init__(table)
        self._replaced = replaced or {}

    def __getitem__(self, name: str) -> Node:
        hit = self._replaced.get(name)
        return hit if hit is not None else self._table.node(name)

    def with_replaced(self, nodes: dict[str, Node]) -> LazyNodes:
        return LazyNodes(self._table, {**self._replaced, **nodes})

    def decoded(self) -> int:
        """How many stored nodes were decoded so far (for tests and benchmarks)."""
        return len(self._table.nodes)


class LazySources(_TableView):
    """graph.sources of a lazily read plan (dep sources are stored with their node)."""

    def __getitem__(self, name: str) -> list[DepSource]:
        return self._table.source(name)


def write(path: Path, key: str, loaded: Loaded) -> None:
    """Write the cache (atomically); a failure only costs the next build a re-plan."""
    graph = loaded.graph
    nodes = {name: encode_node(node, graph.sources[name]) for name, node in graph.nodes.items()}
    bare = dataclasses.replace(loaded, graph=dataclasses.replace(graph, nodes={}, sources={}))
    head = marshal.dumps({"format": CACHE_FORMAT, "key": key})
    body = marshal.dumps({"plan": pickle.dumps(bare, protocol=pickle.HIGHEST_PROTOCOL), "nodes": nodes})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(len(head).to_bytes(4, "little") + head + body)
        os.replace(tmp, path)
    except OSError:
        pass


def read(path: Path, key: str) -> tuple[str, Loaded] | None:
    """(stored key, plan), or None when there is no readable cache. A plan stored under `key`
    is what the build will use whole: all its nodes are decoded now. Under another key it can
    only be patched (replan.py): its graph decodes nodes when they are asked for."""
    try:
        with open(path, "rb") as fh:
            head = marshal.loads(fh.read(int.from_bytes(fh.read(4), "little")))
            if not isinstance(head, dict) or head.get("format") != CACHE_FORMAT:
                return None
            body = marshal.loads(fh.read())
        loaded: Any = pickle.loads(body["plan"])
        table = _Table(body["nodes"])
    except (OSError, EOFError, ValueError, TypeError, KeyError, pickle.UnpicklingError, AttributeError, ImportError):
        return None
    if head["key"] != key:
        nodes: Mapping = LazyNodes(table)
        sources: Mapping = LazySources(table)
    else:
        try:
            for name in table.raw:
                table.node(name)
        except (EOFError, ValueError, TypeError, pickle.UnpicklingError):
            return None
        nodes, sources = table.nodes, table.sources  # decoded in plan order
    loaded.graph = dataclasses.replace(loaded.graph, nodes=nodes, sources=sources)
    return head["key"], loaded
