"""`sci repro-check`: rebuild a target's closure from scratch and compare it with the record.

The rebuild happens in a scratch workspace (copies of the closure's sources, code, pipeline
and params files) with an empty scratch store, so no cached action result can be used. Each
node's new outputs are compared with the outputs its recorded StepResult names, and the
recorded objects are re-verified in the workspace's store. Per node the verdict is one of
`match`, `mismatch`, `nondeterministic-declared` or `env-drift` (SPEC §7).
"""

from __future__ import annotations

import difflib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sci import canonical
from sci.records import run as records
from sci.errors import SciError, UserError
from sci.store.hashing import digest_file
from sci.store.cas import Store
from sci.plan.pipeline import store_of
from sci.workspace import Workspace

MATCH, MISMATCH, NONDET, DRIFT = "match", "mismatch", "nondeterministic-declared", "env-drift"
DIFF_LINES = 12


@dataclass
class NodeVerdict:
    node: str
    status: str
    files: list[dict] = field(default_factory=list)  # what differs, file by file
    env_drift: list[str] = field(default_factory=list)
    note: str = ""

    def to_json(self) -> dict:
        return {"node": self.node, "status": self.status, "files": self.files, "env_drift": self.env_drift,
                "note": self.note}


@dataclass
class ReproReport:
    target: str
    run_id: str
    verdicts: list[NodeVerdict]
    seed: int | None = None
    kept: str | None = None

    @property
    def ok(self) -> bool:
        if self.seed is not None:
            return True  # a sensitivity report: differences are the point
        return not any(v.status == MISMATCH or (v.status == DRIFT and v.files) for v in self.verdicts)

    def to_json(self) -> dict:
        return {"type": "sci.repro_report", "target": self.target, "ok": self.ok, "seed": self.seed,
                "nodes": [v.to_json() for v in self.verdicts], "scratch": self.kept}


def _copy_into(src_root: Path, dst_root: Path, rel: str) -> None:
    src, dst = src_root / rel, dst_root / rel
    if dst.exists() or not os.path.lexists(src):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(src, dst)


def scratch_workspace(ws: Workspace, loaded, selected: list[str], results: dict[str, dict], dest: Path) -> Workspace:
    """A workspace holding only what the closure reads: no outputs, no store, no state."""
    dest.mkdir(parents=True)
    for rel in ("sci.yaml", "config/hardware.yaml"):
        _copy_into(ws.root, dest, rel)
    from sci.plan.pipeline import _params_path

    params = _params_path(ws, (ws.root / "sci.yaml").read_bytes())
    if params is not None:
        _copy_into(ws.root, dest, params.relative_to(ws.root).as_posix())
    for rel in loaded.env_spec.get("files", []):
        _copy_into(ws.root, dest, rel)
    produced = set(loaded.graph.producer_of)
    for name in selected:
        node = loaded.graph.nodes[name]
        for src in loaded.graph.sources[name]:
            if src.producer is None and src.path not in produced:
                _copy_into(ws.root, dest, src.path)
        comp = results.get(name, {}).get("components", {})
        for rel in comp.get("code", {}):
            _copy_into(ws.root, dest, rel)
        for rel in node.code:
            _copy_into(ws.root, dest, rel)
    return Workspace(dest)


def _first_difference(a: bytes, b: bytes) -> int | None:
    n = min(len(a), len(b))
    step = 1 << 16
    for off in range(0, n, step):
        if a[off:off + step] != b[off:off + step]:
            for i in range(off, min(off + step, n)):
                if a[i] != b[i]:
                    return i
    return n if len(a) != len(b) else None


def describe_difference(path: str, old: bytes | None, new: bytes | None, old_digest: str, new_digest: str) -> dict:
    """How two versions of one file differ: sizes, first differing byte, a short text diff."""
    info: dict[str, Any] = {"path": path, "recorded": old_digest, "rebuilt": new_digest}
    if old is None or new is None:
        info["detail"] = "recorded bytes unavailable" if old is None else "rebuilt bytes unavailable"
        return info
    info["recorded_size"], info["rebuilt_size"] = len(old), len(new)
    info["first_difference"] = _first_difference(old, new)
    if len(old) < 1 << 20 and len(new) < 1 << 20:
        try:
            a, b = old.decode("utf-8").splitlines(), new.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            return info
        diff = list(difflib.unified_diff(a, b, "recorded", "rebuilt", lineterm="", n=1))
        info["diff"] = diff[:DIFF_LINES] + (["…"] if len(diff) > DIFF_LINES else [])
    return info


def _read(store: Store, digest: str) -> bytes | None:
    try:
        return store.read_blob(digest)
    except OSError:
        return None


def compare_outputs(old_store: Store, new_store: Store, old: dict[str, dict], new: dict[str, dict]) -> list[dict]:
    diffs: list[dict] = []
    for name in sorted(set(old) | set(new)):
        o, n = old.get(name), new.get(name)
        if o is None or n is None:
            diffs.append({"path": (o or n)["path"], "detail": "output missing on one side"})
            continue
        if o["digest"] == n["digest"]:
            continue
        if o["type"] == "file" and n["type"] == "file":
            diffs.append(describe_difference(o["path"], _read(old_store, o["digest"]), _read(new_store, n["digest"]),
                                             o["digest"], n["digest"]))
            continue
        if o["type"] != n["type"]:
            diffs.append({"path": o["path"], "detail": f"was a {o['type']}, now a {n['type']}"})
            continue
        try:
            oe = {e.path: e for e in old_store.get_tree(o["digest"])}
        except SciError:
            oe = {}
        ne = {e.path: e for e in new_store.get_tree(n["digest"])}
        for rel in sorted(set(oe) | set(ne)):
            a, b = oe.get(rel), ne.get(rel)
            full = f"{o['path']}/{rel}"
            if a is None or b is None:
                diffs.append({"path": full, "detail": "only in the rebuild" if a is None else "only in the record"})
            elif a.digest != b.digest:
                diffs.append(describe_difference(full, _read(old_store, a.digest), _read(new_store, b.digest),
                                                 a.digest, b.digest))
    return diffs


def verify_recorded(store: Store, outputs: dict[str, dict]) -> list[dict]:
    """Re-verify the stored objects of recorded outputs; a damaged one is a mismatch."""
    bad = []
    for rec in outputs.values():
        digests = [(rec["path"], rec["digest"])]
        if rec["type"] == "tree":
            try:
                digests = [(f"{rec['path']}/{e.path}", e.digest) for e in store.get_tree(rec["digest"])]
            except SciError as exc:
                bad.append({"path": rec["path"], "detail": f"stored tree damaged: {exc.message}"})
                continue
        for path, digest in digests:
            blob = store.blob_path(digest)
            if not blob.exists():
                bad.append({"path": path, "recorded": digest, "detail": "stored object missing"})
            elif digest_file(blob) != digest:
                bad.append({"path": path, "recorded": digest, "detail": "stored object does not match its digest"})
    return bad


def repro_check(ws: Workspace, target: str, *, jobs: int | None = None, seed: int | None = None,
                emit=None, argv: list[str] | None = None, keep: bool = False) -> ReproReport:
    from sci import api
    from sci.build import fingerprint

    # 1. The record. Nodes whose definition or inputs changed since their last build are built
    #    first (their record must describe the current pipeline); a node that differs only by
    #    its environment keeps its last record, so the drift can be named.
    rows = api.status(ws, [target])
    stale = [r for r in rows if r.state == "would run"
             and not all(reason.startswith("env changed") for reason in r.reasons)]
    if stale:
        api.build(ws, [target], jobs=jobs, emit=emit, argv=argv)
    loaded = api.load(ws)
    store = store_of(loaded)
    selected = loaded.graph.select([target], ws.root)
    state = records.state_of(ws)
    results: dict[str, dict] = {}
    for name in selected:
        last = state.get(name)
        rec = store.get_action(last["key"]) if last else None
        if rec is None:
            raise UserError(f"no recorded result for {name}", hint=f"run `sci build {target}` first")
        results[name] = rec
    # 2. The rebuild: a scratch workspace and an empty store, so nothing can come from cache.
    run_id = records.new_run_id()
    scratch_root = ws.state_dir / "repro" / run_id
    scratch = scratch_workspace(ws, loaded, selected, results, scratch_root / "ws")
    scratch_store = scratch_root / "cas"
    try:
        rebuilt = api.build(scratch, [target], jobs=jobs, emit=emit, argv=argv, store=scratch_store, seed=seed,
                            keep_going=True)
    except SciError as exc:
        rebuilt = getattr(exc, "report", None)
        if rebuilt is None:
            raise
    new_store = Store(scratch_store)
    # 3. The verdicts.
    verdicts: list[NodeVerdict] = []
    for name in selected:
        rec = results[name]
        oc = rebuilt.outcomes.get(name)
        if oc is None or oc.status.value not in ("executed", "cached"):
            verdicts.append(NodeVerdict(name, MISMATCH, note=f"rebuild {oc.status.value if oc else 'missing'}: "
                                                            f"{oc.error if oc else ''}".strip()))
            continue
        files = verify_recorded(store, rec["outputs"]) if seed is None else []
        files += compare_outputs(store, new_store, rec["outputs"], oc.outputs)
        new_env = (oc.result or {}).get("environment", {}).get("components")
        old_env = rec.get("environment", {}).get("components")
        drift = fingerprint.diff(old_env, new_env) if old_env and new_env and old_env != new_env else []
        if rec.get("determinism") == "fast":
            status = NONDET
        elif drift:
            status = DRIFT
        elif files:
            status = MISMATCH
        else:
            status = MATCH
        verdicts.append(NodeVerdict(name, status, files, drift))
    report = ReproReport(target, run_id, verdicts, seed)
    run_dir = ws.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    if rebuilt.run_dir and (rebuilt.run_dir / "logs.jsonl").exists():
        shutil.copy2(rebuilt.run_dir / "logs.jsonl", run_dir / "logs.jsonl")
    if rebuilt.manifest:
        records.write_manifest(run_dir, dict(rebuilt.manifest, kind="repro-check"))
    if keep or not report.ok:
        report.kept = str(scratch_root)
    else:
        shutil.rmtree(scratch_root, ignore_errors=True)
    (run_dir / "repro.json").write_bytes(canonical.dumps(report.to_json()) + b"\n")
    return report
