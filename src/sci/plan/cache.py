"""The plan cache (`.sci/plan.pickle`): a planned pipeline kept between builds, readable in part.

A journal (store/journal.py) of eight frames: a marshal header {key, has_steps}, then one
frame per section in a fixed order. Sections: `plan`, the `Loaded` without its nodes, positions
and step mappings (pickled); `pos`, sci.yaml's positions (pickled; read only when a message
needs a line number); `producer_of`, the graph's output path → node (pickled; read only to
resolve a target given as a path); and two tables, `nodes` (each node with its dep sources,
marshalled on its own) and `steps` (each step's validated mapping, for replan.py). A table is
a list of names, their end offsets and one blob. The file is mapped, not read, and its checksums checked: a build that uses every node decodes
them all (as quick as one pickle of the whole plan was), while a parameter edit decodes the plan
section and the bytes of the few nodes and steps it re-plans or keys — at 10,000 nodes ~1 MB of
a 9 MB file.
"""

from __future__ import annotations

import marshal
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sci.plan.graph import DepSource
from sci.spec.load import Positions
from sci.store import journal
from sci.plan.nodes import _NODE_FIELDS, Node
from sci.values import NameIndex

if TYPE_CHECKING:
    from sci.plan.loaded import Loaded

# The file's format (store/journal.py frames it). Bump whenever a pickled class or a section
# changes, and PLAN_CACHE_FORMAT in plan/pipeline.py with it (it enters the structure key).
CACHE_FORMAT = "sci-plan-18"
_MARSHAL, _PICKLE = b"m", b"p"
_ERRORS = (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, pickle.UnpicklingError, AttributeError,
           ImportError)


def encode_node(node: Node, sources: list[DepSource]) -> bytes:
    value = (tuple(getattr(node, f) for f in _NODE_FIELDS), [(s.path, s.producer, s.out_path) for s in sources])
    try:
        return _MARSHAL + marshal.dumps(value)
    except ValueError:  # a parameter value marshal cannot hold (a YAML date, say)
        return _PICKLE + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def decode_node(raw) -> tuple[Node, list[DepSource]]:
    fields, sources = marshal.loads(raw[1:]) if raw[:1] == _MARSHAL else pickle.loads(raw[1:])
    return Node(*fields), [DepSource(*s) for s in sources]


class _Blobs:
    """A table section: name -> its bytes in the mapped file, found by offset, never copied whole."""

    __slots__ = ("names", "find", "ends", "view", "base")

    def __init__(self, names: list[str], ends: list[int], view: memoryview, base: int):
        self.names, self.ends, self.view, self.base = names, ends, view, base
        self.find = NameIndex(names).find  # name -> its place in the table

    def get(self, name: str) -> memoryview:
        i = self.find(name)
        if i is None:
            raise KeyError(name)
        start = self.base + (self.ends[i - 1] if i else 0)
        return self.view[start:self.base + self.ends[i]]


class _Table:
    """Encoded nodes, decoded on first use and kept."""

    __slots__ = ("raw", "nodes", "sources")

    def __init__(self, raw: _Blobs):
        self.raw = raw
        self.nodes: dict[str, Node] = {}
        self.sources: dict[str, list[DepSource]] = {}

    def node(self, name: str) -> Node:
        hit = self.nodes.get(name)
        if hit is None:
            hit, self.sources[name] = decode_node(self.raw.get(name))
            self.nodes[name] = hit
        return hit

    def source(self, name: str) -> list[DepSource]:
        hit = self.sources.get(name)
        if hit is None:
            self.node(name)
            hit = self.sources[name]
        return hit


class _Names(Mapping):
    """A read-only mapping over a table section's names, in their stored order."""

    def __init__(self, blobs: _Blobs):
        self._blobs = blobs

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._blobs.find(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._blobs.names)

    def __len__(self) -> int:
        return len(self._blobs.names)


class _TableView(_Names):
    """A mapping over a node table's names, in plan order."""

    def __init__(self, table: _Table):
        super().__init__(table.raw)
        self._table = table


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


class LazySteps(_Names):
    """Loaded.step_docs of a read plan: step -> its pickled mapping, copied out when asked for."""

    def __getitem__(self, name: str) -> bytes:
        return bytes(self._blobs.get(name))


class LazyMapping(Mapping):
    """A mapping pickled in a section of its own, unpickled the first time anything asks:
    graph.producer_of (output path -> node; 10,000 entries cost ~1 ms) is needed to resolve
    targets given as paths, not by a parameter edit."""

    def __init__(self, raw: memoryview):
        self._raw: memoryview | None = raw
        self._value: dict = {}

    def _data(self) -> dict:
        if self._raw is not None:
            self._value, self._raw = pickle.loads(self._raw), None
        return self._value

    def __getitem__(self, key):
        return self._data()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data()

    def __iter__(self) -> Iterator:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __reduce__(self):  # pickled as the plain dict it stands for
        return dict, (self._data(),)


class LazyPositions(Positions):
    """Loaded.pos of a read plan: unpickled from its section the first time anything asks."""

    def __init__(self, raw: memoryview):  # no super().__init__: every attribute comes from `raw`
        self.__dict__["_raw"] = raw

    def __getattr__(self, name: str) -> Any:  # called only for attributes not yet set
        raw = self.__dict__.pop("_raw", None)
        if raw is None:
            raise AttributeError(name)
        self.__dict__.update(pickle.loads(raw).__dict__)
        return getattr(self, name)

    def __reduce__(self):  # pickled as the plain Positions it stands for
        self.file  # noqa: B018 - loads the real attributes
        return _plain_positions, (dict(self.__dict__),)


def _plain_positions(state: dict) -> Positions:
    pos = Positions.__new__(Positions)
    pos.__dict__.update(state)
    return pos


def _table(mapping: Mapping[str, bytes]) -> tuple[bytes, bytes]:
    """(marshalled names and end offsets, the blob) of one table section."""
    ends, at = [], 0
    for blob in mapping.values():
        at += len(blob)
        ends.append(at)
    return marshal.dumps((list(mapping), ends)), b"".join(mapping.values())


_SECTIONS = ("plan", "pos", "producer_of", "node_index", "nodes", "step_index", "steps")


def write(path: Path, key: str, loaded: Loaded) -> None:
    """Write the cache (atomically); a failure only costs the next build a re-plan."""
    graph = loaded.graph
    nodes = {name: encode_node(node, graph.sources[name]) for name, node in graph.nodes.items()}
    bare = loaded.replace(graph=graph.replace(nodes={}, sources={}, producer_of={}), pos=None, step_docs=None,
                          params_json=None)
    node_index, node_blob = _table(nodes)
    step_index, step_blob = _table(loaded.step_docs or {})
    parts = {"plan": pickle.dumps(bare, protocol=pickle.HIGHEST_PROTOCOL),
             "pos": pickle.dumps(loaded.pos, protocol=pickle.HIGHEST_PROTOCOL),
             "producer_of": pickle.dumps(dict(graph.producer_of), protocol=pickle.HIGHEST_PROTOCOL),
             "node_index": node_index, "nodes": node_blob, "step_index": step_index, "steps": step_blob}
    head = marshal.dumps({"key": key, "has_steps": loaded.step_docs is not None})
    journal.write(path, CACHE_FORMAT, [head, *(parts[name] for name in _SECTIONS)])


def read(path: Path, key: str) -> tuple[str, Loaded] | None:
    """(stored key, plan), or None when there is no sound cache. A plan stored under `key`
    is what the build will use whole: all its nodes are decoded now. Under another key it can
    only be patched (replan.py): its graph decodes nodes when they are asked for."""
    # Every frame's checksum is checked (~2 ms for the 9.7 MB of 10,000 nodes): a damaged
    # section must never become a plan, even one that is only patched. The file is mapped, and
    # a later write replaces it, not these pages.
    found = journal.read(path, CACHE_FORMAT)
    if found is None or not found.whole or len(found.bodies) != 1 + len(_SECTIONS):
        return None
    section = dict(zip(_SECTIONS, found.bodies[1:]))
    try:
        head = marshal.loads(found.bodies[0])
        loaded: Any = pickle.loads(section["plan"])
        table = _Table(_Blobs(*marshal.loads(section["node_index"]), section["nodes"], 0))
        loaded.pos = LazyPositions(section["pos"])
        producer_of: Mapping = LazyMapping(section["producer_of"])
        if head["has_steps"]:
            loaded.step_docs = LazySteps(_Blobs(*marshal.loads(section["step_index"]), section["steps"], 0))
    except _ERRORS:
        return None
    if head["key"] != key:
        nodes: Mapping = LazyNodes(table)
        sources: Mapping = LazySources(table)
    else:
        try:
            for name in table.raw.names:
                table.node(name)
        except _ERRORS:
            return None
        nodes, sources = table.nodes, table.sources  # decoded in plan order
    loaded.graph = loaded.graph.replace(nodes=nodes, sources=sources, producer_of=producer_of)
    return head["key"], loaded
