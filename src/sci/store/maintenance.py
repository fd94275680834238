"""Store upkeep: `fsck` (verify every object, find dangling action results) and `gc`
(delete what neither the current pipeline's latest results nor the last N runs need)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sci.errors import StoreError
from sci.store.cas import Store
from sci.values import Value

# A tmp file younger than this may belong to a writer still at work: gc leaves it alone.
TMP_GRACE_S = 3600


class FsckReport(Value):
    __slots__ = _FIELDS = ("checked", "bad", "dangling", "repaired")

    def __init__(self, checked: int = 0, bad: list[tuple[str, str, str]] | None = None,
                 dangling: list[tuple[str, str]] | None = None, repaired: int = 0):
        self.checked = checked
        self.bad = bad if bad is not None else []  # (kind, name, problem)
        self.dangling = dangling if dangling is not None else []  # (action key, missing object)
        self.repaired = repaired

    @property
    def ok(self) -> bool:
        return not self.bad and not self.dangling

    def to_json(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "repaired": self.repaired,
                "bad": [{"kind": k, "object": n, "problem": p} for k, n, p in self.bad],
                "dangling": [{"action": a, "missing": m} for a, m in self.dangling]}


def needed_objects(store: Store, action: dict) -> list[tuple[str, str]]:
    """(kind, digest) of every object an action result needs: outputs, tree members, logs."""
    out: list[tuple[str, str]] = []
    for rec in action.get("outputs", {}).values():
        if rec["type"] == "tree":
            out.append(("tree", rec["digest"]))
            if store.has_tree(rec["digest"]):
                try:  # a damaged tree is reported by fsck, not dropped here
                    out.extend(("blob", e.digest) for e in store.get_tree(rec["digest"], drop=False))
                except StoreError:
                    pass
        else:
            out.append(("blob", rec["digest"]))
    for log in ("stdout", "stderr"):
        if action.get(log):
            out.append(("blob", action[log]))
    return out


def fsck(store: Store, *, repair: bool = False) -> FsckReport:
    rep = FsckReport()
    bad_paths = []
    for kind, path in store.iter_objects():
        rep.checked += 1
        problem = store.verify_object(kind, path)
        if problem:
            rep.bad.append((kind, path.name, problem))
            bad_paths.append((kind, path))
    if repair:
        for kind, p in bad_paths:
            if kind != "pack":
                store.drop(p)  # a file, or a directory where an object should be
            rep.repaired += 1
        if any(kind == "pack" for kind, _ in bad_paths):  # the packs' sound records go into a new one
            store.rewrite_packs(lambda key: True)
    dangling_packed: set[str] = set()
    for key, data, where in store.iter_actions():
        try:
            action = json.loads(data)
        except ValueError:
            continue
        try:
            needed = needed_objects(store, action)
        except Exception:  # noqa: BLE001 - a damaged tree was reported above
            needed = []
        for okind, digest in needed:
            present = store.has_tree(digest) if okind == "tree" else store.has_blob(digest)
            if not present:
                rep.dangling.append((key, digest))
                if repair:
                    if where.endswith(".pack"):
                        dangling_packed.add(key)
                    else:
                        _unlink(Path(where))
                    rep.repaired += 1
                break
    if dangling_packed:
        store.rewrite_packs(lambda key: key not in dangling_packed)
    return rep


def _unlink(path: Path) -> None:
    try:
        os.chmod(path, 0o644)
        path.unlink()
    except FileNotFoundError:
        pass


class GcReport(Value):
    __slots__ = _FIELDS = ("kept_actions", "deleted", "dry_run", "scratch")

    def __init__(self, kept_actions: int = 0, deleted: list[tuple[str, str, int]] | None = None,
                 dry_run: bool = False, scratch: list[tuple[str, int]] | None = None):
        self.kept_actions = kept_actions
        self.deleted = deleted if deleted is not None else []  # (kind, name, bytes)
        self.dry_run = dry_run
        self.scratch = scratch if scratch is not None else []  # repro-check scratch left over: (path, bytes)

    @property
    def bytes(self) -> int:
        return sum(b for _, _, b in self.deleted)

    def to_json(self) -> dict:
        return {"dry_run": self.dry_run, "kept_actions": self.kept_actions, "deleted_objects": len(self.deleted),
                "deleted_bytes": self.bytes, "objects": [{"kind": k, "object": n, "bytes": b} for k, n, b in self.deleted],
                "scratch": [{"path": p, "bytes": b} for p, b in self.scratch]}


def gc(store: Store, keep_keys: set[str], *, dry_run: bool = False) -> GcReport:
    """Delete every object not needed by the action results in `keep_keys`."""
    rep = GcReport(dry_run=dry_run)
    keep_blobs: set[str] = set()
    keep_trees: set[str] = set()
    kept_actions: set[str] = set()
    for key in keep_keys:
        action = store.get_action(key)
        if action is None:
            continue
        kept_actions.add(key)
        for kind, digest in needed_objects(store, action):
            (keep_trees if kind == "tree" else keep_blobs).add(digest)
    rep.kept_actions = len(kept_actions)
    for kind, path in store.iter_objects():
        if kind == "pack":
            continue  # packed results: rewritten below, keeping the kept ones
        name = path.name
        keep = (name in kept_actions if kind == "action" else name in keep_trees if kind == "tree"
                else name in keep_blobs)
        if keep:
            continue
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        rep.deleted.append((kind, name, size))
        if not dry_run:
            store.drop(path)
    for key, size in store.rewrite_packs(lambda key: key in kept_actions, dry_run=dry_run):
        rep.deleted.append(("action", key, size))
    now = time.time()
    if store.tmp.is_dir():
        for p in store.tmp.iterdir():
            try:
                if now - p.stat().st_mtime > TMP_GRACE_S:
                    rep.deleted.append(("tmp", p.name, p.stat().st_size))
                    if not dry_run:
                        _unlink(p)
            except FileNotFoundError:
                pass
    if not dry_run:  # empty shard directories
        for base in (store.blobs, store.trees, store.actions):
            for shard in base.iterdir() if base.is_dir() else []:
                if shard.name == "packs" and base == store.actions:
                    continue
                try:
                    shard.rmdir()
                except OSError:
                    pass
    return rep


def keys_to_keep(ws_root: Path, runs_dir: Path, state_nodes: dict, current_nodes: set[str], keep_runs: int) -> set[str]:
    """Latest results of the current pipeline's nodes, plus every key the last N runs used."""
    keep = {v["key"] for n, v in state_nodes.items() if n in current_nodes and v.get("key")}
    if runs_dir.is_dir() and keep_runs > 0:
        runs = sorted((p for p in runs_dir.iterdir() if (p / "manifest.json").is_file()), key=lambda p: p.name)
        for run in runs[-keep_runs:]:
            try:
                man = json.loads((run / "manifest.json").read_bytes())
            except (OSError, ValueError):
                continue
            keep.update(p["key"] for p in man.get("plan", []) if p.get("key") and p.get("status") in ("cached", "executed"))
    return keep
