"""What a node reads, as digests: deps from upstream results or the stat cache, code files
(declared paths plus an `fn` step's import closure), then its key pre-image."""

from __future__ import annotations

import glob as glob_mod
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sci.build import keys
from sci.errors import GraphError, StoreError, UserError
from sci.plan.graph import Graph
from sci.store.hashing import StatCache, check_names, tree_digest
from sci.plan.nodes import GLOB_CHARS, Node
from sci.store.cas import Store

from sci.redact import env_value  # secrets never enter a key by value (SPEC §7)
from sci.envs.runtime import record_key


class Resolver:
    """Turns a ready node into its key pre-image; shared by build, status and repro-check.
    (A plain class: a dataclass costs ~0.3 ms of every build's start-up.)"""

    def __init__(self, root: Path, graph: Graph, stat_cache: StatCache, store: Store, environments: dict[str, dict]):
        self.root, self.graph, self.stat_cache, self.store = root, graph, stat_cache, store
        # The fingerprint records (pipeline.environment_records): a node's key takes the digest
        # of the one its environment and GPU need name (envs.runtime.record_key).
        self.environments = environments
        self.outputs: dict[str, dict[str, dict]] = {}  # node -> out name -> record
        # Nodes taken unchanged from the last build's record (Scheduler.preset): node -> plan
        # entry, whose outputs stand in for `outputs` without being copied there.
        self.recorded: Mapping[str, dict] = {}
        self._code_cache: dict[tuple, list[str]] = {}

    def dep_digest(self, node: Node, path: str, producer: str | None, out_path: str | None) -> str:
        if producer is not None:
            recs = self.outputs.get(producer)
            if recs is None:
                entry = self.recorded.get(producer)
                if entry is None:
                    raise KeyError(producer)  # upstream not finished: caller must wait
                recs = entry["outputs"]
            rec = next((r for r in recs.values() if r.get("path") == out_path), None)
            if rec is None:  # a result whose outputs are not the ones its step declares
                raise StoreError(f"{node.name}: the stored result of {producer} has no output at {out_path!r}",
                                 hint="run `sci fsck --repair`, or `sci build --force " + producer + "`")
            if out_path == path:
                return rec["digest"]
            if rec["type"] != "tree":
                raise GraphError(f"{node.name}: dep {path!r} lies under {out_path!r}, which is a file")
            sub = path[len(out_path) + 1:]
            entries = self.store.get_tree(rec["digest"])
            exact = [e for e in entries if e.path == sub]
            if exact:
                return exact[0].digest
            inner = [e for e in entries if e.path.startswith(sub + "/")]
            if not inner:
                raise GraphError(f"{node.name}: dep {path!r} is not inside the output {out_path!r} that {producer} wrote")
            from sci.store.hashing import TreeEntry

            return tree_digest([TreeEntry(e.path[len(sub) + 1:], e.digest, e.size, e.executable) for e in inner])
        try:
            return self.stat_cache.path_digest(f"{self.root}/{path}", path)
        except FileNotFoundError:
            raise GraphError(f"{node.name}: dep {path!r} does not exist",
                             hint="create it, or add the step that writes it") from None

    def code_files(self, node: Node) -> list[str]:
        ck = (tuple(node.code), node.fn if node.kind == "fn" else None)
        hit = self._code_cache.get(ck)
        if hit is not None:
            return hit
        files: set[str] = set()
        for pattern in node.code:
            if GLOB_CHARS.search(pattern):
                found = [m for m in glob_mod.glob(pattern, root_dir=self.root, recursive=True) if (self.root / m).is_file()]
                check_names(found)
                files.update(found)
                continue
            full = self.root / pattern
            if full.is_dir():
                for dirpath, dirnames, filenames in os.walk(full):
                    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                    rel_dir = Path(dirpath).relative_to(self.root).as_posix()
                    check_names(dirnames, f"{rel_dir}/")
                    found = [f"{rel_dir}/{f}" for f in filenames if not f.endswith(".pyc")]
                    check_names(found)
                    files.update(found)
            elif full.is_file():
                files.add(pattern)
            else:
                raise UserError(f"{node.name}: code path {pattern!r} does not exist",
                                hint="fix the path under code:, or create the file")
        if node.kind == "fn":
            from sci.build.imports import closure

            files.update(closure(self.root, node.fn.split(":")[0]))
        out = sorted(files)
        self._code_cache[ck] = out
        return out

    def env_values(self, node: Node) -> dict[str, str | None]:
        return {name: env_value(name) for name in node.env}  # a secret-looking name only as set or not

    def components(self, node: Node, extra: dict[str, str] | None = None) -> dict[str, Any]:
        """The key pre-image; raises KeyError(upstream) if an upstream result is not known yet."""
        deps: dict[str, str] = {}
        for src in self.graph.sources[node.name]:
            deps[src.path] = self.dep_digest(node, src.path, src.producer, src.out_path)
        code = {f: self.stat_cache.file_digest(self.root / f, f) for f in self.code_files(node)}
        env = self.environments[record_key(node)]["digest"]
        return keys.components(node, keys.definition(node, self.env_values(node)), deps, code, env, extra)
