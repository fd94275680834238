"""The no-op fast path: prove from file stats alone that a build would run nothing.

After a build in which every selected node succeeded, sci writes `.sci/noop` (marshal): the
plan key (sci.yaml, params, hardware, overrides, store), the environment fingerprint's
digests, the stat signature of every file the nodes read or wrote (sources, code, outputs;
files inside directories included), the glob matches over workspace files, and the manifest
that run would give as a no-op. The next build with the same request first checks that
record: same plan key and targets, same environment digest, every signature unchanged, every
action result still in the store. Then every key is provably the same as last time, and the
build writes its records without loading the plan or hashing anything. Any doubt falls back to
the normal path, which rewrites the record. Signatures come from the stat cache, so they are
exactly what was seen when the files were hashed; a file too fresh to be trusted there
("racily clean") has none, and the fast path waits for the next build.
"""

from __future__ import annotations

import glob as glob_mod
import marshal
import os
import sys
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sci import canonical
from sci.errors import UserError
from sci.store import journal
from sci.store.hashing import stat_signature
from sci.values import NameIndex, Value
from sci.workspace import Workspace

if TYPE_CHECKING:
    from sci.records.report import BuildReport

NOOP_FILE = "noop"
NOOP_FORMAT = "sci-noop-12"  # the journal's and the header's; 12: the params' JSON kept; 11: changes without the params
_COMPACT_AFTER = 8  # changes appended before the next build rewrites the record whole
_READ_END: dict[str, int] = {}  # the record's path -> where it ended when read_record found it sound


_sig = stat_signature  # a file's or directory's stat signature, None when it is gone


def record(state_dir: Path, *, root: Path, plan_key: str, targets: list[str], env_digests: dict[str, str],
           env_spec: dict, paths: list[str], directories: list[str], stat_entries: dict,
           globs: dict[str, list[str]], manifest: dict, store_sigs: dict[str, tuple], env_values: dict[str, str],
           structure: str = "", shape: str = "", params: dict | None = None, params_text: str | None = None,
           plan_json: list[bytes] | None = None, params_json: bytes | None = None) -> bool:
    """Write the record; False (and no record) when some path has no trusted signature."""
    sigs: dict[str, tuple] = {}
    wanted_dirs = []
    for p in paths:
        hit = stat_entries.get(p)
        if hit is not None:
            sigs[p] = hit[0]
        else:
            wanted_dirs.append(p.rstrip("/") + "/")
    if wanted_dirs:  # directories: their files, as the stat cache saw them when hashing
        prefixes = tuple(wanted_dirs)
        found = {d: False for d in wanted_dirs}
        for key, (sig, _digest) in stat_entries.items():
            if key.startswith(prefixes):
                sigs[key] = sig
                for d in wanted_dirs:
                    if key.startswith(d):
                        found[d] = True
        if not all(found.values()):
            discard(state_dir)
            return False
    # Directories too: a file added to a directory dep or output, or a new module beside a code
    # file (it could change an import closure), changes its directory's mtime, not any file's.
    for d in directories:
        sig = _sig(os.path.join(root, d))
        if sig is None:
            discard(state_dir)
            return False
        sigs[d.rstrip("/") + "/"] = sig
    header = {"format": NOOP_FORMAT, "plan": plan_key, "targets": list(targets), "structure": structure,
              "shape": shape}
    doc = {"env": env_digests, "env_spec": env_spec, "sigs": sigs, "globs": globs, "manifest": manifest,
           "actions": store_sigs, "env_values": env_values, "params": params if params is not None else {},
           "params_text": params_text}
    if plan_json is not None:  # each plan entry's canonical JSON: the no-op's manifest joins them
        doc["plan_json"] = plan_json
    if params_json is not None:  # the manifest's parameters' canonical JSON: written as it is
        doc["params_json"] = params_json
    _write(state_dir, header, doc)
    return True


def _frame(value: Any) -> bytes:
    """One frame's body (store/journal.py frames and checks it)."""
    return marshal.dumps(value)


def _write(state_dir: Path, header: dict, doc: dict) -> None:
    _READ_END.pop(str(state_dir / NOOP_FILE), None)
    if not journal.write(state_dir / NOOP_FILE, NOOP_FORMAT, [_frame(header), _frame(doc)]):
        discard(state_dir)  # an older record must not outlive a build it does not describe


def _append(state_dir: Path, change: dict, params: dict, params_text: str | None, params_json: bytes | None) -> None:
    """One build's changes and parameters after the record (see record_build), in one write;
    when the file is not the sound record this build read, the record is dropped instead."""
    path = state_dir / NOOP_FILE
    if not journal.append(path, NOOP_FORMAT, [_frame(change), _frame((params, params_text, params_json))],
                          end=_READ_END.pop(str(path), None)):
        discard(state_dir)


def discard(state_dir: Path) -> None:
    journal.remove(state_dir / NOOP_FILE)


class Record(Value):
    """The record as read: header and document with the appended changes applied."""

    __slots__ = _FIELDS = ("header", "doc", "appended")

    def __init__(self, header: dict, doc: dict, appended: int):
        self.header, self.doc = header, doc
        self.appended = appended  # how many builds' changes followed the document


def read_record(state_dir: Path) -> Record | None:
    """The record, read once per build: a no-op checks it, and after a parameter edit it says
    which nodes are unchanged (`unchanged_nodes`). Anything unreadable: no record.

    The file: a header frame, the document frame, then two frames per appended build — its
    changes, and its whole parameters (only the last of which is decoded)."""
    path = state_dir / NOOP_FILE
    found = journal.read(path, NOOP_FORMAT)
    # A cut-short file is no record either: this build's append would follow the torn bytes.
    if found is None or not found.whole:
        return None
    _READ_END[str(path)] = found.end  # this build's append checks the file still ends there
    frames = found.bodies
    try:
        header = marshal.loads(frames[0])
        if not isinstance(header, dict) or header.get("format") != NOOP_FORMAT or len(frames) % 2:
            return None
        doc = marshal.loads(frames[1])
        if not isinstance(doc, dict):
            return None
        appended = frames[2:]
        last = None
        for raw in appended[::2]:
            last = marshal.loads(raw)
            header = last["header"]
            _apply(doc, last)
        if last is not None:  # the parameters after the last change: its frame's (only that one decoded)
            _set_params(doc, last, *marshal.loads(appended[-1]))
        return Record(header, doc, len(appended) // 2)
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def _apply(doc: dict, change: dict) -> None:
    doc["sigs"].update(change["sigs"])
    doc["actions"] = change["actions"]  # the whole store proof: it changes as the store does
    manifest = doc["manifest"]
    plan = manifest["plan"]
    for i, entry in change["plan"].items():
        plan[i] = entry
    plan_json = doc.get("plan_json")
    if plan_json is not None:
        for i, text in change["plan_json"].items():
            plan_json[i] = text
    manifest.update(change["manifest"])


def _set_params(doc: dict, change: dict, params: dict, params_text: str | None, params_json: bytes | None) -> None:
    """The parameters after `change` (the frame that follows it), and the manifest's own when
    they are the same (nothing hidden): a change leaves them out of its manifest fields rather
    than repeat them (150 KB at 10,000 parameters, decoded at every read). `params_json`: their
    canonical JSON, which a no-op writes into its manifest as it is (encoding 10,000 parameters
    takes ~7 ms); kept only while the manifest's parameters are these."""
    doc["params"], doc["params_text"] = params, params_text
    if change["params_in_frame"]:
        doc["manifest"]["params"] = params
    if change["params_in_frame"] and params_json is not None:
        doc["params_json"] = params_json
    else:
        doc.pop("params_json", None)


def check(record: Record | None, root: Path, *, plan_key: str, targets: list[str]) -> dict | None:
    """The recorded document if nothing that could change a key has changed, else None.

    The caller still compares the environment digests (they need the fingerprint)."""
    if record is None or record.header.get("plan") != plan_key or record.header.get("targets") != list(targets):
        return None
    return record.doc if _files_unchanged(record.doc, root) else None


def _files_unchanged(doc: dict, root: Path) -> bool:
    prefix = str(root) + os.sep
    for path, sig in doc["sigs"].items():
        if _sig(prefix + path.rstrip("/")) != sig:
            return False
    for pattern, matches in doc["globs"].items():
        found = sorted(Workspace(root).unowned(glob_mod.glob(pattern, root_dir=root, recursive=True)))
        if found != matches:
            return False
    for path, sig in doc["actions"].items():  # action results, and the store's shards of output objects
        if _sig(path) != sig:
            return False
    try:
        return _env_values(doc["env_values"]) == doc["env_values"]
    except UserError:  # a value that is not text: the full path fails the node that reads it, naming it
        return False


def _env_values(recorded: dict[str, str]) -> dict[str, str]:
    """The values of the steps' `env` variables as they enter the keys (SPEC §2), by name."""
    from sci.redact import env_value  # the rule keys use (build/inputs.py), without importing the keys

    return {name: env_value(name) for name in recorded}


def store_proof(store, outputs: Iterator[dict], keys: Iterator[str]) -> dict[str, tuple]:
    """The stat signatures that prove the store still holds these action results and output
    objects: each result's file (a pack or a loose file: rewritten or removed, its signature
    changes), and each shard directory an output object lies in (removing an object from it
    changes the directory's). Damage in place is not seen here, nor by the full path while the
    workspace holds the output; it is found whenever the object is copied (SPEC §3)."""
    paths: set[str] = set()
    for key in keys:
        paths.add(store.action_file(key) or "")
    for rec in outputs:
        digest = rec["digest"]
        if rec["type"] == "file":
            paths.add(str(store.blob_path(digest).parent))
            continue
        paths.add(str(store.tree_path(digest).parent))
        try:
            entries = store.get_tree(digest)
        except Exception:  # noqa: BLE001 - a tree that cannot be read proves nothing: no record
            paths.add("")
            continue
        for e in entries:
            paths.add(str(store.blob_path(e.digest).parent))
    return {p: _sig(p) for p in sorted(paths)}


class LastBuild(Value):
    """What the last build's record tells a build after a parameter edit (`unchanged_nodes`):
    the record itself (`doc`), each node's plan entry last time (`entries`: key, outputs), the
    selected nodes whose step reads a changed parameter (`touched`), the nodes upstream of none
    of them (`known`: unchanged for certain, never keyed), how many builds' changes follow the
    record's document in its file (`appended`), the selection in the recorded plan's order, and
    the selected nodes that are not known unchanged (`dirty`: the touched ones and their
    dependants, which the build decides)."""

    _FIELDS = ("doc", "entries", "touched", "known", "appended", "selected", "dirty")
    __slots__ = (*_FIELDS, "_places")

    def __init__(self, doc: dict, entries: dict[str, dict], touched: set[str], known: dict[str, dict],
                 appended: int = 0, selected: list[str] | None = None, dirty: set[str] | None = None):
        self.doc, self.entries, self.touched, self.known = doc, entries, touched, known
        self.appended = appended
        self.selected = selected if selected is not None else []
        self.dirty = dirty if dirty is not None else set()  # the selected nodes not in `known`
        self._places = NameIndex(self.selected)

    def position(self, name: str) -> int:
        """`name`'s place in the recorded plan, which is `selected` node for node."""
        at = self._places.find(name)
        if at is None:
            raise KeyError(name)
        return at


def unchanged_nodes(ws, loaded, targets: list[str], env_digests: dict[str, str],
                    selected: list[str], record: Record | None) -> LastBuild | None:
    """After a parameter edit: which selected nodes provably keep last build's key.

    The record must come from the same sci.yaml, hardware and targets (same structure key),
    the same environment, and no recorded file may have changed. Then a node whose step reads
    none of the parameters that differ from the recorded ones, and none of whose upstream
    nodes is such a step's, has the same definition and the same inputs as last time: its
    recorded plan entry (key, outputs) is `known`, and the build neither keys nor checks it.
    The nodes downstream of a touched one are decided while building (Scheduler._as_recorded):
    as soon as their inputs come out as recorded, they are taken from the record too.

    Nothing here visits every node in Python: the same plan shape (a digest of the plan's
    order, edges and outputs) and the same targets make `selected` the recorded plan's nodes in
    the recorded order, so the entries are paired with them by position.
    """
    if record is None:
        return None
    header, doc, appended = record.header, record.doc, record.appended
    if (header.get("structure") != loaded.structure_key or header.get("shape") != loaded.graph.shape
            or header.get("targets") != list(targets) or doc["env"] != env_digests or loaded.reads is None):
        return None
    plan = doc["manifest"]["plan"]
    if len(plan) != len(selected) or not plan or plan[0]["node"] != selected[0] \
            or plan[-1]["node"] != selected[-1] or not _files_unchanged(doc, ws.root):
        return None
    entries = dict(zip(selected, plan))
    graph = loaded.graph
    every = len(selected) == len(graph.order)
    chosen = None if every else set(selected)
    steps = loaded.reads.affected(_changed_params(doc, loaded))
    touched = {n for step in steps for n in graph.nodes_of_step(step) if every or n in chosen}
    dirty = set(touched)
    stack = list(dirty)
    while stack:
        for m in graph.downstream[stack.pop()]:
            if m not in dirty and (every or m in chosen):
                dirty.add(m)
                stack.append(m)
    if any(entries[n]["node"] != n for n in touched):
        return None  # not the recorded plan after all (a check: the shape says it is)
    known = entries.copy()
    for n in dirty:
        del known[n]
    return LastBuild(doc, entries, touched, known, appended, selected, dirty)


def _changed_params(doc: dict, loaded) -> list[str]:
    """The parameter keys that differ from the recorded ones: from the changed lines of the
    params file when both texts are known (simple_yaml.patch), else by comparing the mappings."""
    from sci.plan import replan
    from sci.spec import simple_yaml

    if doc.get("params_text") is not None and loaded.params_text is not None:
        patched = simple_yaml.patch(doc["params_text"], doc["params"], loaded.params_text)
        if patched is not None:
            return patched[1]
    return replan.changed_keys(doc["params"], loaded.params)


def record_build(ws, loaded, targets, plan_key: str, selected, outcomes, resolver, stat_cache, env, man, store,
                 last: LastBuild | None = None, plan_json: list[bytes] | None = None,
                 params_json: bytes | None = None) -> None:
    """After a build whose every node succeeded: the record `fast_build` checks next time.

    After a parameter edit (`last` came from unchanged_nodes), only what this build changed is
    appended to the record: the nodes whose key changed (their outputs' stat signatures, action
    results and plan entries), the parameters, the manifest's other fields. Every other recorded
    fact was checked unchanged at the start of this build. After a few appends the record is
    written whole again. `plan_key` is the one the build began with; `plan_json` and
    `params_json` are the manifest's plan entries and parameters as the build encoded them."""
    header = {"format": NOOP_FORMAT, "plan": plan_key, "targets": list(targets),
              "structure": loaded.structure_key, "shape": loaded.graph.shape}
    root = ws.root
    if last is not None:
        change = _changes(last, root, selected, outcomes.decided, stat_cache.entries, store, man, loaded.params)
        if change is not None:
            change["header"] = header
            if last.appended < _COMPACT_AFTER:
                _append(ws.state_dir, change, loaded.params, loaded.params_text, params_json)
            else:
                _apply(last.doc, change)
                _set_params(last.doc, change, loaded.params, loaded.params_text, params_json)
                _write(ws.state_dir, header, last.doc)
            return
    base = _recorded_fields(man)
    base["plan"] = [p if p["status"] == "cached" else dict(p, status="cached") for p in man["plan"]]
    if plan_json is not None:  # the entries whose status changed to "cached" encoded again
        plan_json = [text if was is now else canonical.dumps(now)
                     for text, was, now in zip(plan_json, man["plan"], base["plan"])]
    graph = loaded.graph
    paths: set[str] = set(loaded.env_spec.get("files", []))
    directories: set[str] = set()
    for name in selected:
        node = graph.nodes[name]
        paths.update(node.all_dep_paths())
        paths.update(node.outs.values())
        for code in resolver.code_files(node):
            paths.add(code)
            directories.add(os.path.dirname(code) or ".")
    hashed_files = stat_cache.entries  # what the stat cache holds is a file
    for p in list(paths):
        if p not in hashed_files and os.path.isdir(root / p):
            for dirpath, _dirs, _files in os.walk(root / p):
                directories.add(os.path.relpath(dirpath, root))
    record(ws.state_dir, root=root, plan_key=header["plan"], targets=targets,
           env_digests={k: v["digest"] for k, v in env.items()}, env_spec=loaded.env_spec,
           paths=sorted(paths), directories=sorted(directories), stat_entries=stat_cache.entries,
           globs=dict(graph.globs), manifest=base,
           store_sigs=store_proof(store, (r for p in base["plan"] for r in p["outputs"].values()),
                                  (p["key"] for p in base["plan"])),
           env_values=_env_values(dict.fromkeys(sorted({v for n in selected for v in graph.nodes[n].env}))),
           structure=loaded.structure_key, shape=loaded.graph.shape, params=loaded.params,
           params_text=loaded.params_text, plan_json=plan_json, params_json=params_json)


def _recorded_fields(man: dict) -> dict:
    """The manifest's fields a no-op repeats (all but the run's own: volatile and command)."""
    return {k: v for k, v in man.items() if k not in ("volatile", "command")}


def _changes(last: LastBuild, root: Path, selected: list[str], decided: dict, stat_entries: dict, store,
             man: dict, params: dict) -> dict | None:
    """What this build changed in the last record: the stat signatures and action results of
    the nodes whose key changed, the directories' signatures, the plan entries that differ and
    the manifest's other fields (its `params` only when they are not `params` themselves: the
    parameters frame after the change holds those; _set_params). Only the nodes this build
    `decided` are visited: the others were taken from the record unchanged. The plan is the
    recorded one node for node (the same plan shape and targets: unchanged_nodes), so a node's
    entry sits at its place in `selected`. None when an output is no single file with a trusted
    signature (the caller then records from scratch)."""
    doc = last.doc
    sigs: dict[str, tuple] = {}
    proof = set(doc["actions"])
    old_plan, new_plan = doc["manifest"]["plan"], man["plan"]
    if len(old_plan) != len(new_plan) or len(selected) != len(new_plan):
        return None
    plan, plan_json = {}, {}
    for name, outcome in decided.items():
        i = last.position(name)
        was, now = old_plan[i], new_plan[i]
        if was["node"] != name or now["node"] != name:
            return None
        if now["status"] != "cached":
            now = dict(now, status="cached")
        if now != was:
            plan[i] = now
            plan_json[i] = canonical.dumps(now)
        if outcome.key == last.entries[name]["key"]:
            continue  # same key, same outputs: the recorded files, checked at the start
        for rec in outcome.outputs.values():
            hit = stat_entries.get(rec["path"]) if rec["type"] == "file" else None
            if hit is None:
                return None
            sigs[rec["path"]] = hit[0]
            proof.add(str(store.blob_path(rec["digest"]).parent))
        proof.add(store.action_file(outcome.key) or "")
    prefix = f"{root}{os.sep}"
    for path in doc["sigs"]:
        if path.endswith("/"):  # a directory: writing an output into it changed its signature
            sig = _sig(prefix + path.rstrip("/"))
            if sig is None:
                return None
            sigs[path] = sig
    manifest = _recorded_fields(man)
    del manifest["plan"]
    in_frame = manifest.get("params") is params  # nothing in them hidden (records.manifest)
    if in_frame:
        del manifest["params"]
    # The store's signatures again: this build added objects and results (the rest of the store
    # was checked unchanged at its start; see store_proof for what else may change it).
    actions = {path: _sig(path) for path in sorted(proof)}
    return {"sigs": sigs, "actions": actions, "plan": plan, "plan_json": plan_json, "manifest": manifest,
            "params_in_frame": in_frame}


def fast_answer(ws, targets, *, plan_key: str, record: Record | None, stat_cache=None) -> dict | None:
    """The no-op shortcut's answer: the last record's document when it proves that every
    selected node keeps its recorded key and outputs — the same plan inputs and targets, no
    recorded stat signature changed (sources, code, outputs, directories, glob matches), the
    same values of the steps' env variables, the store's results and output objects still
    there, and the same environment fingerprint. Else None (the full path decides)."""
    from sci.build import fingerprint
    from sci.store.hashing import StatCache

    doc = check(record, ws.root, plan_key=plan_key, targets=targets)
    if doc is None or "cpu" not in doc["env"] or any(k == "gpu" or k.endswith("+gpu") for k in doc["env"]):
        return None  # GPU nodes re-detect their GPUs on the normal path
    spec = doc["env_spec"]
    if stat_cache is None:
        stat_cache = StatCache(ws.state_dir / "statcache")
    comps = fingerprint.environment(ws.root, spec["files"], spec["vars"], spec["tools"], stat_cache=stat_cache,
                                    cache_dir=ws.state_dir / "cache")
    if fingerprint.digest(comps) != doc["env"]["cpu"]:
        return None
    if len(doc["env"]) > 1:  # declared environments: their identities, from their locks (no uv when warm)
        from sci.envs.runtime import Environments

        records = Environments(ws.root, ws.state_dir, spec, stat_cache).records()
        if any(records.get(k, {}).get("digest") != v for k, v in doc["env"].items() if k != "cpu"):
            return None
    stat_cache.save()
    return doc


def fast_build(ws, targets, argv, emit, started, clock, executor, *, plan_key: str,
               record: Record | None, stat_cache=None) -> BuildReport | None:
    """A build that provably runs nothing (`fast_answer`), recorded as such; else None."""
    from sci.records import run as records
    from sci.records.report import BuildReport
    from sci.records.run import Outcomes

    doc = fast_answer(ws, targets, plan_key=plan_key, record=record, stat_cache=stat_cache)
    if doc is None:
        return None
    run_id = records.new_run_id()
    run_dir = ws.runs_dir / run_id
    log = records.RunLog(run_dir)
    plan = doc["manifest"]["plan"]
    selected = [p["node"] for p in plan]
    log.write("build_started", None, targets=targets, nodes=len(selected), jobs=0)
    emit("build_started", None, targets=targets, nodes=len(selected), jobs=0)
    log.write("noop", None, nodes=len(selected), reason="no stat signature, environment or plan input changed")
    outcomes = Outcomes({}, {p["node"]: p for p in plan})  # made into Outcome objects when asked for
    man = dict(doc["manifest"])
    man["git_commit"] = records.git_commit(ws.root)
    man["command"] = records.redact_argv(records.without_executor_options(list(argv if argv is not None else sys.argv[1:])))
    man["volatile"] = records.manifest(
        root=ws.root, pipeline_digest="", params_digest="", environment={}, determinism="strict", root_seed=0,
        command=[], targets=[], plan=[], run_id=run_id, started=started, started_clock=clock, executor=executor,
        durations={}, with_git=False)["volatile"]
    encoded = {}  # what the record keeps encoded: written as it is
    if doc.get("plan_json") is not None:
        encoded["plan"] = records.plan_pieces(doc["plan_json"])
    if doc.get("params_json") is not None and "params" in man:
        encoded["params"] = [doc["params_json"]]
    records.write_manifest(run_dir, man, encoded or None)
    counts = {"cached": len(selected), "executed": 0, "failed": 0, "skipped": 0}
    log.write("build_finished", None, counts=counts)
    emit("build_finished", None, counts=counts)
    log.close()
    return BuildReport(run_id, run_dir, outcomes, selected, man)
