"""Admitting a verified bundle into a workspace: every store object checked against its own
address and every result against the step it claims to be (outputs as declared, trees that
stay inside them), the destination's files guarded, then objects, files and state written —
results last. `bundle.import_bundle` calls `admit` once the archive's members match its
manifest (and its signature, docs/bundles.md); nothing is written before every check passes.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from sci import canonical
from sci.errors import UserError, WorkFailed
from sci.evidence.archive import ENVIRONMENT, WS_PREFIX
from sci.store.hashing import UnsafeTree, digest_bytes, digest_file, entries_from_document
from sci.workspace import RESERVED, Workspace, owns

STORE_NAME = re.compile(r"^store/(blobs|trees|actions)/([0-9a-f]{2})/([0-9a-f]{64})$")
NEVER_WRITTEN = (".git", *RESERVED)  # and the store's directory, once it is known (admit)


def check_member_paths(bundle: Path, rows: dict[str, dict]) -> None:
    """Every member is environment.json, a workspace file outside what sci owns, or a store
    object at its sharded address (UserError otherwise): checked before anything is read."""
    for path in rows:
        if path == ENVIRONMENT:
            continue
        if path.startswith(WS_PREFIX):
            top = owns(path[len(WS_PREFIX):], NEVER_WRITTEN)
            if top is not None:
                raise UserError(f"{bundle}: member {path!r} would write into {top}/, which sci owns")
        elif not STORE_NAME.match(path) or path.split("/")[2] != path.split("/")[3][:2]:
            raise UserError(f"{bundle}: member {path!r} is neither a workspace file nor a store object")


def admit(ws: Workspace, bundle: Path, manifest: dict, rows: dict[str, dict], staging: Path, force: bool) -> dict:
    from sci.plan.pipeline import load
    from sci.store.cas import Store

    staged_ws = staging / WS_PREFIX.rstrip("/")
    loaded = load(Workspace(staged_ws))  # validates the bundle's sci.yaml before any file is written
    store_root = _store_root_for(ws, loaded)
    objects, actions = _check_objects(bundle, manifest, rows, staging, loaded.graph)
    reserved = (".git", *ws.owned(str(store_root)))
    files = sorted(p[len(WS_PREFIX):] for p in rows if p.startswith(WS_PREFIX))
    written, unchanged, conflicts = [], 0, []
    for rel in files:
        if owns(rel, reserved):
            raise UserError(f"{bundle}: member workspace/{rel} would write into the store")
        state = _existing(ws.root, rel, rows[WS_PREFIX + rel]["digest"])
        if state == "same":
            unchanged += 1
        else:
            written.append(rel)
            if state == "differs":
                conflicts.append(rel)
    if conflicts and not force:
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise UserError(f"{ws.root}: {', '.join(conflicts[:3])}{more} already exist with other content",
                        hint="import into an empty directory, or pass --force to overwrite them")
    store = Store(store_root)
    admitted = present = 0
    # Blobs and trees first, action results last: a result never precedes its objects.
    for kind in ("blobs", "trees", "actions"):
        for name, staged in objects[kind]:
            if _admit_object(store, kind, name, staged, bundle):
                admitted += 1
            else:
                present += 1
    for rel in written:
        _place(staged_ws / rel, ws.root / rel, rows[WS_PREFIX + rel].get("executable") is True)
    # The bundle's results become this workspace's last results, as after a build: `status`
    # then explains any difference (e.g. another environment) and `repro-check` has a record.
    from sci.records import run as records

    state = records.state_of(ws)
    for node, key in sorted(manifest["nodes"].items()):
        state.put(node, key, actions[key]["outputs"])
    state.save()
    return {"workspace": str(ws.root), "store": str(store.root), "target": manifest["target"],
            "nodes": len(manifest["nodes"]), "files_written": written, "files_unchanged": unchanged,
            "objects_admitted": admitted, "objects_present": present,
            "environment_drift": _drift(ws, staging / ENVIRONMENT)}


def _drift(ws: Workspace, recorded: Path) -> list[str]:
    """How this machine's environment differs from the one the results were built in: any
    difference changes every key, so `sci build` would run the closure again."""
    from sci.build import fingerprint
    from sci.plan.pipeline import environment_records, load
    from sci.store.hashing import StatCache

    try:
        old = canonical.loads(recorded.read_bytes())["cpu"]["components"]
    except (OSError, ValueError, KeyError, TypeError):
        return ["environment.json is missing or unreadable"]
    now = environment_records(load(ws), StatCache(ws.state_dir / "statcache"), [])
    return fingerprint.diff(old, now["cpu"]["components"])


def _check_objects(bundle: Path, manifest: dict, rows: dict[str, dict], staging: Path, graph) -> tuple[dict, dict]:
    """Every staged store object matches its own address; every tree's paths stay inside it;
    every result's outputs are those its key's definition declares, and those of its node in
    the bundle's own sci.yaml; and the bundle is complete: each closure node has its action
    result and every object that result needs (WorkFailed)."""
    from sci.build import keys as keys_mod
    from sci.store.maintenance import needed_objects

    objects: dict[str, list[tuple[str, Path]]] = {"blobs": [], "trees": [], "actions": []}
    trees: dict[str, list] = {}
    actions: dict[str, dict] = {}
    for path in sorted(rows):
        m = STORE_NAME.match(path)
        if not m:
            continue
        kind, name, staged = m.group(1), m.group(3), staging / path
        data = staged.read_bytes() if kind != "blobs" else None
        problem = None
        if kind == "blobs" and rows[path]["digest"] != name:
            problem = "its content does not match its name"
        elif kind == "trees":
            try:
                trees[name] = entries_from_document(canonical.loads(data))
                problem = None if digest_bytes(data) == name else "its content does not match its name"
            except UnsafeTree as exc:
                problem = str(exc)
            except (ValueError, KeyError, TypeError):
                problem = "not a tree listing"
        elif kind == "actions":
            try:
                doc = canonical.loads(data)
                if canonical.dumps(doc) != data or doc.get("key") != name:
                    problem = "it does not name its own key"
                elif keys_mod.key_of(doc["components"]) != name:
                    problem = "its key does not match its components"
                else:
                    problem = keys_mod.outputs_problem(doc)
                actions[name] = doc
            except (ValueError, KeyError, TypeError, AttributeError):
                problem = "not an action result"
        if problem:
            raise WorkFailed(f"{bundle}: member {path!r} is not a valid store object: {problem}")
        objects[kind].append((name, staged))
    have = {("blob", n) for n, _ in objects["blobs"]} | {("tree", n) for n in trees}
    view = _TreeView(trees)
    for node, key in sorted(manifest["nodes"].items()):
        if key not in actions:
            raise WorkFailed(f"{bundle}: the action result of {node} ({key[:12]}) is missing")
        planned = graph.nodes.get(node)
        if planned is None:
            raise WorkFailed(f"{bundle}: it holds a result for {node}, a node its sci.yaml does not have")
        declared = actions[key]["components"]["definition"]["outs"]
        if declared != dict(planned.outs):
            raise WorkFailed(f"{bundle}: the result of {node} records outputs {declared}, but its sci.yaml "
                             f"declares {dict(planned.outs)}")
        for need in needed_objects(view, actions[key]):
            if need not in have:
                raise WorkFailed(f"{bundle}: {need[0]} {need[1][:12]} needed by {node} is missing")
    return objects, actions


class _TreeView:
    """The two Store methods `needed_objects` calls, answered from staged tree listings."""

    def __init__(self, trees: dict[str, list]):
        self._trees = trees

    def has_tree(self, digest: str) -> bool:
        return digest in self._trees

    def get_tree(self, digest: str, *, drop: bool = False) -> list:  # staged listings: nothing to drop
        return self._trees[digest]


def _store_root_for(ws: Workspace, loaded) -> Path:
    """The store the imported pipeline will use; a `store:` outside the workspace is refused
    unless the user chose one with SCI_CAS (a bundle must not pick where we write)."""
    root = ws.store_root(loaded.store_config)
    if loaded.store_config and not os.environ.get("SCI_CAS"):
        try:
            root.resolve().relative_to(ws.root.resolve())
        except ValueError:
            raise UserError(f"the bundle's sci.yaml puts the store outside the workspace ({loaded.store_config})",
                            hint="set SCI_CAS to the store you want, then import again") from None
    return root


def _existing(root: Path, rel: str, digest: str) -> str:
    """'new', 'same' or 'differs' for the workspace path `rel`; never follows a symlinked dir."""
    cur = root
    parts = rel.split("/")
    for part in parts[:-1]:
        cur = cur / part
        if cur.is_symlink():
            raise UserError(f"{root}: {cur.relative_to(root)} is a symbolic link; refusing to write through it")
        if cur.exists() and not cur.is_dir():
            raise UserError(f"{root}: {cur.relative_to(root)} is a file, but the bundle puts {rel} inside it")
    dest = root / rel
    if dest.is_symlink():
        return "differs"
    if dest.is_dir():
        raise UserError(f"{root}: {rel} is a directory, but the bundle holds a file there",
                        hint="move it away, then import again")
    if not dest.exists():
        return "new"
    return "same" if digest_file(dest) == digest else "differs"


def _admit_object(store, kind: str, name: str, staged: Path, bundle: Path) -> bool:
    """Put one verified object into the store (atomic writes); False if it was already there."""
    if kind == "blobs":
        if store.has_blob(name):
            return False
        if digest_file(staged) != name:  # checked again at the door: the staging dir is ours,
            raise WorkFailed(f"{bundle}: blob {name[:12]} changed while it was being imported")  # but disks lie
        store.put_file(staged, name, move=True)
        return True
    data = staged.read_bytes()
    if kind == "trees":
        if store.has_tree(name):
            return False
        if store.put_tree(entries_from_document(canonical.loads(data))) != name:
            raise WorkFailed(f"{bundle}: tree {name[:12]} does not match its digest")
        return True
    if store.has_action(name):
        return False
    store.put_action(name, canonical.loads(data))
    return True


def _place(staged: Path, dest: Path, executable: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.sci-import-{os.getpid()}")
    shutil.copyfile(staged, tmp)
    os.chmod(tmp, 0o755 if executable else 0o644)
    os.replace(tmp, dest)
