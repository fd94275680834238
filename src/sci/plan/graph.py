"""Nodes → DAG: producers of outputs, edges from deps, glob expansion, checks, a fixed order.

    source files ──▶ simulate[noise=0.0] ─┐
                     simulate[noise=0.1] ─┼──▶ fit ──▶ dossier
                     simulate[noise=0.2] ─┘

An edge exists when a dep lies at or under another node's output, or contains one. Order among
ready nodes (the dispatch and listing order): longest path to a sink first (the critical path
starts early), then declaration order — steps as sci.yaml lists them, a sweep's nodes in the
order of its items (`noise=0.0` before `noise=0.05` before `noise=0.1`, never string order) —
written down because the scheduler relies on it.
"""

from __future__ import annotations

import bisect
import fnmatch
import glob as glob_mod
import heapq
import os
from collections import namedtuple
from collections.abc import Mapping
from pathlib import Path

from sci.errors import GraphError, TargetError
from sci.spec.load import Positions
from sci.plan.nodes import GLOB_CHARS, Node
from sci.values import Value
from sci.store.hashing import NameNotText, check_names
from sci.workspace import owns


class DepSource(namedtuple("DepSource", "path producer out_path")):
    """Where one dep path's content comes from: a source file (`producer` None), or the output
    `out_path` of the upstream node `producer` (equal to `path`, or a directory holding it)."""

    __slots__ = ()


class Graph(Value):
    """The plan's nodes and edges.

    `producer_of` maps each output path to its node; `globs` each glob pattern to the workspace
    files it matched (for plan-cache checks); `order` lists the nodes in build order and
    `priority` gives each its longest path to a sink. Facts about every node are kept apart, so
    a patched plan answers them without decoding nodes (plan_cache.LazyNodes): its step
    (`step_of`), the steps whose nodes are not just one of the step's own name
    (`multi_node_steps`: foreach steps, with their nodes, for nodes_of_step), the dossier nodes,
    the nodes that need a GPU, and the plain (non-glob) code paths and source (not produced)
    dep paths of all nodes. `shape` is a digest of the order, edges, dep sources and outputs: a
    record of a build is only a guide for a plan of the same shape (a parameter edit that moves
    an output changes it). Given no `step_of`, these facts are computed from the nodes.
    """

    _FIELDS = ("nodes", "upstream", "downstream", "sources", "producer_of", "order", "priority", "globs", "step_of",
               "multi_node_steps", "dossiers", "gpu_nodes", "code_paths", "source_paths", "shape")

    def __init__(self, nodes: Mapping[str, Node], upstream: Mapping[str, tuple[str, ...]],
                 downstream: Mapping[str, tuple[str, ...]], sources: Mapping[str, list[DepSource]],
                 producer_of: dict[str, str], order: list[str], priority: dict[str, int],
                 globs: dict[str, list[str]], step_of: dict[str, str] | None = None,
                 multi_node_steps: dict[str, tuple[str, ...]] | None = None,
                 dossiers: frozenset[str] = frozenset(), gpu_nodes: frozenset[str] = frozenset(),
                 code_paths: frozenset[str] = frozenset(), source_paths: frozenset[str] = frozenset(),
                 shape: str = ""):
        self.nodes, self.upstream, self.downstream, self.sources = nodes, upstream, downstream, sources
        self.producer_of, self.order, self.priority, self.globs = producer_of, order, priority, globs
        self.step_of = step_of if step_of is not None else {}
        self.multi_node_steps = multi_node_steps if multi_node_steps is not None else {}
        self.dossiers, self.gpu_nodes, self.code_paths = dossiers, gpu_nodes, code_paths
        self.source_paths, self.shape = source_paths, shape
        if not self.step_of and self.nodes:
            self.summarize()

    def summarize(self) -> None:
        """Fill the per-node facts above from `nodes` (decodes every node)."""
        nodes = self.nodes.values()
        self.step_of = {n.name: n.step for n in nodes}
        by_step: dict[str, list[str]] = {}
        for name, step in self.step_of.items():
            by_step.setdefault(step, []).append(name)
        self.multi_node_steps = {step: tuple(names) for step, names in by_step.items() if names != [step]}
        self.dossiers = frozenset(n.name for n in nodes if n.kind == "dossier")
        self.gpu_nodes = frozenset(n.name for n in nodes if n.needs_gpu)
        self.code_paths = frozenset(p for n in nodes for p in n.code if not GLOB_CHARS.search(p))
        self.source_paths = frozenset(s.path for srcs in self.sources.values() for s in srcs if s.producer is None)
        from sci.store.hashing import digest_bytes

        # repr, not marshal: marshal's bytes depend on which equal strings are the same object
        self.shape = digest_bytes(repr(
            [(name, self.upstream[name], [(s.path, s.producer, s.out_path) for s in self.sources[name]])
             for name in self.order] + sorted(self.producer_of.items())).encode())

    def nodes_of_step(self, step: str) -> tuple[str, ...]:
        """The nodes of `step`, in declaration order (as graph.nodes lists them)."""
        hit = self.multi_node_steps.get(step)
        if hit is not None:
            return hit
        return (step,) if self.step_of.get(step) == step else ()

    def closure(self, names: set[str]) -> set[str]:
        """`names` and everything they depend on."""
        seen = set()
        stack = list(names)
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            stack.extend(self.upstream[n])
        return seen

    def to_networkx(self):
        import networkx as nx

        g = nx.DiGraph()
        for name in self.order:
            g.add_node(name, step=self.nodes[name].step)
        for name, ups in self.upstream.items():
            for u in ups:
                g.add_edge(u, name)
        return g

    def select(self, targets: list[str], root: Path) -> list[str]:
        """Targets (node names, step names, output paths) → the nodes to build, in order."""
        if not targets:
            return list(self.order)
        keep = self.closure(self.requested(targets, root))
        return [n for n in self.order if n in keep]

    def requested(self, targets: list[str], root: Path) -> set[str]:
        """The nodes the targets name themselves (without what they depend on)."""
        if not targets:
            return set(self.order)
        wanted: set[str] = set()
        by_step: dict[str, list[str]] = {}
        for name, step in self.step_of.items():
            by_step.setdefault(step, []).append(name)
        for t in targets:
            if t in self.nodes:
                wanted.add(t)
                continue
            if t in by_step:
                wanted.update(by_step[t])
                continue
            rel = _rel_target(t, root)
            owner = self._owner_of(rel) if rel is not None else None
            if owner:
                wanted.add(owner)
                continue
            import difflib

            close = difflib.get_close_matches(t, list(self.nodes) + list(by_step), n=1)
            hint = f"did you mean '{close[0]}'?" if close else "run `sci dag` to list the nodes"
            raise TargetError(f"target {t!r} names no node, step or output", hint=hint)
        return wanted

    def _owner_of(self, rel: str) -> str | None:
        p = rel
        while p and p != ".":
            if p in self.producer_of:
                return self.producer_of[p]
            p = os.path.dirname(p)
        return None


def _rel_target(t: str, root: Path) -> str | None:
    p = Path(t)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(root)
        except ValueError:
            return None
    else:
        try:
            p = (Path.cwd() / p).resolve().relative_to(root)
        except ValueError:
            p = Path(os.path.normpath(t))
    return p.as_posix().rstrip("/")


def _parts_key(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


def glob_match(pattern: str, path: str) -> bool:
    """Shell-style glob where `*`, `?` and `[...]` never cross '/', and `**` spans directories."""
    pp = pattern.split("/")
    tp = path.split("/")

    def rec(i: int, j: int) -> bool:
        if i == len(pp):
            return j == len(tp)
        if pp[i] == "**":
            return any(rec(i + 1, k) for k in range(j, len(tp) + 1))
        return j < len(tp) and fnmatch.fnmatchcase(tp[j], pp[i]) and rec(i + 1, j + 1)

    return rec(0, 0)


def build_graph(nodes: list[Node], root: Path, pos: Positions, *, reserved: tuple[str, ...],
                missing: dict[str, GraphError] | None = None) -> Graph:
    """The graph of `nodes`. A dep that exists nowhere is an error; given `missing`, it is
    recorded there (node → its first such error) instead, for a caller that plans only part
    of the pipeline and needs only that part's inputs (pipeline.scoped_nodes)."""
    by_name: dict[str, Node] = {}
    for n in nodes:
        by_name[n.name] = n
    # -- outputs: one producer each, no overlaps ------------------------------------------
    producer_of: dict[str, str] = {}
    for n in nodes:
        for oname, path in n.outs.items():
            producer_of.setdefault(path, n.name)
    outs_sorted = sorted(producer_of, key=_parts_key)
    all_outs = [(p, n.name, o) for n in nodes for o, p in n.outs.items()]
    seen: dict[str, tuple[str, str]] = {}
    for path, name, oname in all_outs:
        if path in seen and seen[path][0] != name:
            other = seen[path][0]
            raise GraphError(f"steps {by_name[other].step} and {by_name[name].step} both declare output {path!r}",
                             location=pos.at(by_name[name].origin + ("outs",)),
                             hint="two steps may not write the same file; rename one output")
        seen[path] = (name, oname)
    keys = [_parts_key(p) for p in outs_sorted]
    for a, b, ka, kb in zip(outs_sorted, outs_sorted[1:], keys, keys[1:]):
        if kb[:len(ka)] == ka:
            na, nb = by_name[producer_of[a]], by_name[producer_of[b]]
            raise GraphError(f"output {b!r} of {nb.name} lies inside output {a!r} of {na.name}",
                             location=pos.at(nb.origin + ("outs",)),
                             hint="outputs may not overlap; declare separate paths")

    # -- deps: resolve globs, find producers ----------------------------------------------
    upstream: dict[str, set[str]] = {n.name: set() for n in nodes}
    sources: dict[str, list[DepSource]] = {}
    globs: dict[str, list[str]] = {}
    for n in nodes:
        if n.kind == "dossier":
            _dossier_deps(n, nodes)
        n.dep_paths = {}
        srcs: list[DepSource] = []
        for dname, pattern in n.deps.items():
            where = n.origin + ("deps", dname if n.deps_named else list(n.deps).index(dname))
            if GLOB_CHARS.search(pattern):
                produced = [p for p in outs_sorted if producer_of[p] != n.name and glob_match(pattern, p)]
                if produced:
                    matches = sorted(produced)
                else:
                    found = sorted(glob_mod.glob(pattern, root_dir=root, recursive=True))
                    matches = [m for m in found if not owns(m, reserved)]
                    try:
                        check_names(matches)
                    except NameNotText as exc:
                        raise GraphError(f"{n.name}: dep {pattern!r} matches {exc.message}", location=pos.at(where),
                                         hint=exc.hint) from None
                    globs[pattern] = matches
                if not matches:
                    err = GraphError(f"{n.name}: dep {pattern!r} matches no file and no step output",
                                     location=pos.at(where), hint="check the pattern, or add the step that makes these files")
                    if missing is None:
                        raise err
                    missing.setdefault(n.name, err)
            else:
                matches = [pattern]
            n.dep_paths[dname] = matches
            for path in matches:
                src = _source_of(path, producer_of, outs_sorted)
                if src is not None and src[0] == n.name:
                    raise GraphError(f"{n.name} depends on its own output {path!r}", location=pos.at(where),
                                     hint="a step cannot read what it writes; remove the dep")
                if src is not None:
                    upstream[n.name].add(src[0])
                    srcs.append(DepSource(path, src[0], src[1]))
                else:
                    inner = _outputs_under(path, outs_sorted, keys)
                    for p in inner:
                        if producer_of[p] != n.name:
                            upstream[n.name].add(producer_of[p])
                    if not inner and not (root / path).exists():
                        err = GraphError(f"{n.name}: dep {path!r} does not exist and no step produces it",
                                         location=pos.at(where),
                                         hint="create the file, fix the path, or add the step that writes it")
                        if missing is None:
                            raise err
                        missing.setdefault(n.name, err)
                    srcs.append(DepSource(path, None, None))
        sources[n.name] = srcs

    # Tuples, sorted: most nodes of a big fan-out have none, and the empty tuple is one object
    # (the plan cache unpickles 10,000 of them in a fraction of the time of 10,000 lists).
    up = {k: tuple(sorted(v)) for k, v in upstream.items()}
    down_sets: dict[str, list[str]] = {n.name: [] for n in nodes}
    for k, vs in up.items():
        for v in vs:
            down_sets[v].append(k)
    down = {k: tuple(sorted(v)) for k, v in down_sets.items()}
    order, priority = _order(by_name, up, down, pos)
    return Graph(by_name, up, down, sources, producer_of, order, priority, globs)


def _dossier_deps(n: Node, nodes: list[Node]) -> None:
    """A dossier node depends on every output of the nodes of the steps it indexes."""
    deps: dict[str, str] = {}
    for m in nodes:
        if m.step in n.dossier_steps:
            for oname, path in m.outs.items():
                deps[f"{m.name}:{oname}"] = path
    for path in n.evidence:
        if path not in deps.values():
            deps[f"evidence:{path}"] = path
    n.deps = deps
    n.deps_named = True


def _source_of(path: str, producer_of: dict[str, str], outs_sorted: list[str]) -> tuple[str, str] | None:
    p = path
    while p and p != ".":
        if p in producer_of:
            return producer_of[p], p
        p = os.path.dirname(p)
    return None


def _outputs_under(path: str, outs_sorted: list[str], keys: list[tuple[str, ...]]) -> list[str]:
    """Declared outputs strictly inside directory `path` (`keys`: outs_sorted split into parts)."""
    key = _parts_key(path)
    i = bisect.bisect_right(keys, key)
    out = []
    while i < len(keys) and keys[i][:len(key)] == key:
        out.append(outs_sorted[i])
        i += 1
    return out


def _order(nodes: dict[str, Node], up: dict[str, tuple[str, ...]], down: dict[str, tuple[str, ...]], pos: Positions):
    indeg = {n: len(v) for n, v in up.items()}
    ready = sorted(n for n, d in indeg.items() if d == 0)
    topo: list[str] = []
    heapq.heapify(ready)
    while ready:
        n = heapq.heappop(ready)
        topo.append(n)
        for m in down[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                heapq.heappush(ready, m)
    if len(topo) != len(nodes):
        import networkx as nx

        g = nx.DiGraph()
        for k, vs in up.items():
            for v in vs:
                g.add_edge(v, k)
        cycle = nx.find_cycle(g)
        names = [a for a, _ in cycle]
        start = names.index(min(names))  # report the cycle from its smallest name: stable text
        names = names[start:] + names[:start] + [min(names)]
        first = nodes[names[0]]
        raise GraphError(f"cycle: {' -> '.join(names)}", location=pos.at(first.origin, key=True),
                         hint="a step may not depend, directly or through others, on its own outputs")
    priority: dict[str, int] = {}
    for n in reversed(topo):
        priority[n] = 1 + max((priority[m] for m in down[n]), default=0)
    indeg = {n: len(v) for n, v in up.items()}
    declared = {n: i for i, n in enumerate(nodes)}  # `nodes` is in declaration order (plan.expand)
    heap = [(-priority[n], declared[n]) for n, d in indeg.items() if d == 0]
    heapq.heapify(heap)
    names = list(nodes)
    order: list[str] = []
    while heap:
        _, i = heapq.heappop(heap)
        n = names[i]
        order.append(n)
        for m in down[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                heapq.heappush(heap, (-priority[m], declared[m]))
    return order, priority


def check_code(nodes: list[Node], root: Path, pos: Positions) -> None:
    """Every declared code path and every `fn` module exists, else a located error (exit 2)."""
    from sci.errors import SpecError

    seen: set[tuple] = set()
    for n in nodes:
        if n.step in seen:
            continue
        seen.add(n.step)
        for i, path in enumerate(n.code):
            if not GLOB_CHARS.search(path) and not (root / path).exists():
                raise SpecError(f"step {n.step}: code path {path!r} does not exist", location=pos.at(n.origin + ("code", i)),
                                hint="fix the path under code:, or create the file")
        if n.kind == "fn":
            module = n.fn.split(":")[0]
            base = root.joinpath(*module.split("."))
            if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
                raise SpecError(f"step {n.step}: module {module!r} is not a file in the workspace",
                                location=pos.at(n.origin + ("fn",)),
                                hint=f"create {module.replace('.', '/')}.py, or fix the module name in fn:")
