"""`sci repro-check`: rebuild a target's closure from scratch and compare it with the record.

    record (workspace store) ──┐
                               ├──▶ verdict per node ──▶ runs/<id>/repro.json
    scratch rebuild ───────────┘      match | mismatch | nondeterministic-declared | env-drift | failed

The rebuild happens in a scratch workspace under `.sci/repro/<id>/` holding only what the
closure reads (its sources, code, the pipeline, params and env files) and an empty store, so
no cached action result can be used. The scratch plans only the closure's nodes
(`Workspace.scope`), so steps outside it need none of their sources; a node's key depends on
nothing outside its own definition and inputs, so the scratch gives each node the key the
workspace gives it. Sources are hard-linked into the scratch where the filesystem allows
(reflinked where it can clone), so a 1 GiB input costs a directory entry, not a copy.

Each node's new outputs are compared with the outputs its recorded StepResult names, and the
recorded objects are re-verified in the workspace's store; differences are explained by
`diffs.py`. A node whose rebuild failed is `failed` with the reason; repro.json is written
whatever happened once the request was understood. The overall verdict is `reproduced`,
`mismatch` (proof that something does not reproduce) or `failed` (the check could not be
completed) — or `sensitivity` for `--seed N`. The scratch is removed unless `--keep`.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from sci import canonical
from sci.errors import SciError, UserError
from sci.evidence import diffs
from sci.records import run as records
from sci.store.cas import Store
from sci.store.hashing import digest_file
from sci.workspace import RUNS_DIR, Workspace

MATCH, MISMATCH, NONDET, DRIFT, FAILED = "match", "mismatch", "nondeterministic-declared", "env-drift", "failed"
REPRODUCED, SENSITIVITY = "reproduced", "sensitivity"
REPORT_FORMAT = 2  # repro.json; the dossier reads format 2 only (evidence/claims.py)
SCRATCH = "repro"  # .sci/repro/<run_id>/{ws,cas,lock}


class NodeVerdict:
    """One node's verdict. `key`: the recorded key; `rebuilt_key`: the scratch's (equal unless
    an input differed); `files`: what differs, file by file (diffs.py); `note`: the reason of
    a `failed` verdict, or what else a reader should know."""

    __slots__ = ("node", "status", "key", "rebuilt_key", "files", "env_drift", "note")

    def __init__(self, node: str, status: str, key: str | None = None, rebuilt_key: str | None = None,
                 files: list[dict] | None = None, env_drift: list[str] | None = None, note: str = ""):
        self.node, self.status, self.key, self.rebuilt_key = node, status, key, rebuilt_key
        self.files = files if files is not None else []
        self.env_drift = env_drift if env_drift is not None else []
        self.note = note

    @property
    def differs(self) -> bool:
        """Proof that the node does not reproduce here (a drifted node only if its bytes differ)."""
        return self.status == MISMATCH or (self.status == DRIFT and bool(self.files))

    def to_json(self) -> dict:
        return {"node": self.node, "status": self.status, "key": self.key, "rebuilt_key": self.rebuilt_key,
                "files": self.files, "env_drift": self.env_drift, "note": self.note}


class ReproReport:
    """The outcome of one `sci repro-check` (written as runs/<run_id>/repro.json)."""

    def __init__(self, target: str, run_id: str, verdicts: list[NodeVerdict], *, seed: int | None = None,
                 checked_at: str = "", duration_s: float = 0.0, environment: str | None = None,
                 scratch: dict | None = None, diffoscope: str | None = None, failure: str | None = None):
        self.target, self.run_id, self.verdicts, self.seed = target, run_id, verdicts, seed
        self.checked_at, self.duration_s, self.environment = checked_at, duration_s, environment
        self.scratch = scratch if scratch is not None else {}
        self.diffoscope, self.failure = diffoscope, failure
        self.kept: str | None = None

    @property
    def verdict(self) -> str:
        """`failed` when any node could not be rebuilt (with --seed too: the report is then
        incomplete); else `sensitivity` for --seed; else `mismatch` when any node differs;
        else `reproduced`. A mismatch outranks a failure: it is a proof, a failure is not."""
        if any(v.differs for v in self.verdicts) and self.seed is None:
            return MISMATCH
        if self.failure or any(v.status == FAILED for v in self.verdicts):
            return FAILED
        return SENSITIVITY if self.seed is not None else REPRODUCED

    @property
    def ok(self) -> bool:
        return self.verdict in (REPRODUCED, SENSITIVITY)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.verdicts:
            out[v.status] = out.get(v.status, 0) + 1
        return out

    def to_json(self) -> dict:
        return {"type": "sci.repro_report", "format": REPORT_FORMAT, "target": self.target, "run_id": self.run_id,
                "verdict": self.verdict, "ok": self.ok, "seed": self.seed, "checked_at": self.checked_at,
                "duration_s": round(self.duration_s, 3), "environment": self.environment, "failure": self.failure,
                "counts": self.counts(), "nodes": [v.to_json() for v in self.verdicts], "scratch": self.scratch,
                "kept": self.kept, "diffoscope": self.diffoscope}


# -- the scratch workspace -----------------------------------------------------------------------

class _Placed:
    """What placing the sources cost: files and bytes linked (no data copied) or copied."""

    def __init__(self) -> None:
        self.linked = self.copied = self.linked_bytes = self.copied_bytes = 0

    def to_json(self) -> dict:
        return {"linked_files": self.linked, "linked_bytes": self.linked_bytes, "copied_files": self.copied,
                "copied_bytes": self.copied_bytes}


def _place_file(src: Path, dst: Path, placed: _Placed, link: bool) -> None:
    """dst gets src's bytes: a reflink (its own blocks on write), else a hard link (same inode:
    the sandbox's check that a step changed no dep covers it as it covers the workspace's own
    files), else a copy. `link` False: always a copy (small files the scratch may rewrite)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    size = src.stat().st_size
    if link:
        from sci.store.cas import _reflink_or_copy  # a clone where the filesystem can, else a copy

        try:
            os.link(src, dst)
            placed.linked += 1
            placed.linked_bytes += size
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
        _reflink_or_copy(str(src), str(dst), src.stat().st_mode & 0o777)
    else:
        shutil.copy2(src, dst)
    placed.copied += 1
    placed.copied_bytes += size


def _place(src_root: Path, dst_root: Path, rel: str, placed: _Placed, *, link: bool = True) -> None:
    src, dst = src_root / rel, dst_root / rel
    if os.path.lexists(dst) or not os.path.lexists(src):
        return
    if src.is_dir():
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            here = Path(dirpath).relative_to(src_root)
            (dst_root / here).mkdir(parents=True, exist_ok=True)
            for name in sorted(filenames):
                if not os.path.lexists(dst_root / here / name):
                    _place_file(Path(dirpath) / name, dst_root / here / name, placed, link)
    else:
        _place_file(src, dst, placed, link)


def scratch_workspace(ws: Workspace, loaded, selected: list[str], results: dict[str, dict], dest: Path,
                      placed: _Placed) -> Workspace:
    """A workspace holding only what the closure reads: no outputs, no store, no state; it
    plans `selected` only (Workspace.scope)."""
    from sci.plan.pipeline import _params_path

    dest.mkdir(parents=True)
    for rel in ("sci.yaml", "config/hardware.yaml"):
        _place(ws.root, dest, rel, placed, link=False)
    params = _params_path(ws, (ws.root / "sci.yaml").read_bytes())
    if params is not None:
        _place(ws.root, dest, params.relative_to(ws.root).as_posix(), placed, link=False)
    from sci.envs.declared import workspace_files

    for rel in workspace_files(loaded.env_spec, ws.root):  # env.files, declared environments' locks
        _place(ws.root, dest, rel, placed, link=False)
    produced = set(loaded.graph.producer_of)
    for name in selected:
        node = loaded.graph.nodes[name]
        for src in loaded.graph.sources[name]:
            if src.producer is None and src.path not in produced:
                _place(ws.root, dest, src.path, placed)
        for rel in results.get(name, {}).get("components", {}).get("code", {}):
            _place(ws.root, dest, rel, placed, link=False)
        for rel in node.code:
            _place(ws.root, dest, rel, placed, link=False)
    return Workspace(dest, scope=tuple(selected))


def _hold(path: Path) -> int:
    """An exclusive flock on `path`, held while the check runs: `sci gc` skips a held scratch."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def leftovers(ws: Workspace, *, remove: bool) -> list[tuple[str, int]]:
    """Scratch workspaces of checks that are not running (kept with --keep, or left by a killed
    check), as (path relative to the workspace, bytes its removal frees); removed when `remove`.
    A running check holds its scratch's lock and is skipped."""
    import fcntl

    root = ws.state_dir / SCRATCH
    out: list[tuple[str, int]] = []
    if not root.is_dir():
        return out
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir(follow_symlinks=False):
            continue
        lock = Path(entry.path) / "lock"
        fd = None
        try:
            if lock.exists():
                fd = os.open(lock, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a check is running in it
            out.append((Path(entry.path).relative_to(ws.root).as_posix(), _freed_bytes(entry.path)))
            if remove:
                _remove_tree(Path(entry.path))
        finally:
            if fd is not None:
                os.close(fd)
    return out


def _freed_bytes(path: str) -> int:
    """What removing the tree at `path` frees: a file counts once, and only when every link to
    it is inside the tree (a source hard-linked from the workspace frees nothing)."""
    seen: dict[tuple[int, int], list] = {}
    for d, dirs, names in os.walk(path):
        # a link to a directory is listed with the directories (and never followed): it is a file here
        for name in names + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            st = os.lstat(os.path.join(d, name))
            entry = seen.setdefault((st.st_dev, st.st_ino), [st.st_nlink, st.st_size, 0])
            entry[2] += 1
    return sum(size for nlink, size, inside in seen.values() if inside >= nlink)


def _remove_tree(path: Path) -> None:
    """Remove a scratch tree; the store inside it is read-only, so make directories writable."""
    def onerror(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o755)
            func(p)
        except OSError:
            pass

    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            try:
                os.chmod(os.path.join(dirpath, d), 0o755)
            except OSError:
                pass
    shutil.rmtree(path, onerror=onerror)


# -- comparing -----------------------------------------------------------------------------------

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


def _verdict(name: str, rec: dict, oc, store: Store, new_store: Store, seed: int | None) -> NodeVerdict:
    from sci.build import fingerprint

    status = oc.status.value if oc is not None else "missing"
    if status not in ("executed", "cached"):
        if status == "skipped":
            note = "not rebuilt: a node it depends on failed"
        elif status == "missing":
            note = "not rebuilt: the scratch build stopped before it"
        else:
            note = f"rebuild failed: {oc.error}" if oc.error else "rebuild failed"
            tail = (oc.stderr_tail or "").strip().splitlines()
            if tail:
                note += f" (stderr: {tail[-1][:200]})"
        return NodeVerdict(name, FAILED, rec.get("key"), oc.key if oc else None, note=note)
    files = verify_recorded(store, rec["outputs"]) if seed is None else []
    files += diffs.compare_outputs(store, new_store, rec["outputs"], oc.outputs)
    new_env = (oc.result or {}).get("environment", {}).get("components")
    old_env = rec.get("environment", {}).get("components")
    drift = fingerprint.diff(old_env, new_env) if old_env and new_env and old_env != new_env else []
    if rec.get("determinism") == "fast":
        verdict = NONDET
    elif drift:
        verdict = DRIFT
    elif files:
        verdict = MISMATCH
    else:
        verdict = MATCH
    return NodeVerdict(name, verdict, rec.get("key"), oc.key, files, drift)


# -- the check -----------------------------------------------------------------------------------

def _record(ws: Workspace, target: str, jobs, emit, argv) -> tuple[Workspace, Any, list[str], dict[str, dict]]:
    """The record to check against: the closure's latest StepResults. Nodes whose definition or
    inputs changed since their last build are built first (their record must describe the
    current pipeline); a node that differs only by its environment keeps its last record, so
    the drift can be named. When the whole pipeline does not plan (a step outside the closure
    lost a source), the workspace is planned scoped to the target (Workspace.scope); the plain
    plan is tried first, so the plan cache of an ordinary build is not displaced."""
    from sci.build import session
    from sci.build.status import status
    from sci.errors import TargetError
    from sci.plan.pipeline import load, store_of

    try:
        rows = status(ws, [target], overrides=[])
    except UserError as exc:
        if isinstance(exc, TargetError):
            raise
        ws = Workspace(ws.root, scope=(target,))
        rows = status(ws, [target], overrides=[])
    stale = [r for r in rows if r.state == "would run"
             and not all(reason.startswith("env changed") for reason in r.reasons)]
    if stale:
        session.build(ws, [target], session.BuildOptions(jobs=jobs, emit=emit, argv=argv))
    loaded = load(ws)
    store = store_of(loaded)
    closure = set(loaded.graph.select([target], ws.root))
    selected = [n for n in loaded.graph.step_of if n in closure]  # declaration order, as every listing
    state = records.state_of(ws)
    results: dict[str, dict] = {}
    for name in selected:
        last = state.get(name)
        rec = store.get_action(last["key"]) if last else None
        if rec is None:
            raise UserError(f"no recorded result for {name}", hint=f"run `sci build {target}` first")
        results[name] = rec
    return ws, loaded, selected, results


def repro_check(ws: Workspace, target: str, *, jobs: int | None = None, seed: int | None = None,
                emit: Callable[..., None] | None = None, argv: list[str] | None = None, keep: bool = False,
                diffoscope: bool = False) -> ReproReport:
    """Rebuild `target`'s closure in a scratch workspace and compare (see the module docstring).

    Raises only when the request is wrong (an unknown target, nothing recorded) or the
    workspace's own build of stale nodes fails; every other outcome is a report."""
    from sci.build import session
    from sci.plan.pipeline import store_of

    started, clock = records.utc_now(), time.perf_counter()
    ws, loaded, selected, results = _record(ws, target, jobs, emit, argv)
    store = store_of(loaded)
    run_id = records.new_run_id()
    run_dir = ws.runs_dir / run_id
    scratch_root = ws.state_dir / SCRATCH / run_id
    scratch_root.mkdir(parents=True)
    lock = _hold(scratch_root / "lock")
    placed = _Placed()
    failure = None
    rebuilt = None
    try:
        try:
            scratch = scratch_workspace(ws, loaded, selected, results, scratch_root / "ws", placed)
            _carry_checks(ws, scratch, loaded, selected, results)
            scratch_started = time.perf_counter()
            try:
                options = session.BuildOptions(jobs=jobs, emit=emit, argv=argv, store=scratch_root / "cas",
                                               seed=seed, keep_going=True)
                rebuilt = session.build(scratch, [target], options)
            except SciError as exc:
                rebuilt = getattr(exc, "report", None)
                if rebuilt is None:
                    raise
            rebuild_s = time.perf_counter() - scratch_started
        except (SciError, OSError) as exc:  # the scratch could not be made or planned
            failure = exc.one_line() if isinstance(exc, SciError) else f"{exc.strerror or exc}: {exc.filename or ''}"
            rebuild_s = 0.0
        new_store = Store(scratch_root / "cas")
        if rebuilt is None:
            verdicts = [NodeVerdict(n, FAILED, results[n].get("key"), note=f"not rebuilt: {failure}") for n in selected]
        else:
            verdicts = [_verdict(n, results[n], rebuilt.outcomes.get(n), store, new_store, seed) for n in selected]
        env_digest = (rebuilt.manifest or {}).get("environment", {}).get("digest") if rebuilt else None
        report = ReproReport(target, run_id, verdicts, seed=seed, checked_at=started,
                             duration_s=time.perf_counter() - clock, environment=env_digest,
                             scratch=dict(placed.to_json(), rebuild_s=round(rebuild_s, 3)), failure=failure)
        run_dir.mkdir(parents=True, exist_ok=True)
        if diffoscope:
            differing = [f for v in verdicts for f in diffs.files_of(v.files)]
            if differing:
                report.diffoscope = diffs.run_diffoscope(differing, store, new_store, run_dir / "diffoscope",
                                                         ws.root) or "ran"
            else:
                report.diffoscope = "nothing differs"
        if rebuilt is not None and rebuilt.run_dir and (rebuilt.run_dir / "logs.jsonl").exists():
            shutil.copy2(rebuilt.run_dir / "logs.jsonl", run_dir / "logs.jsonl")
        if rebuilt is not None and rebuilt.manifest:
            records.write_manifest(run_dir, dict(rebuilt.manifest, kind="repro-check"))
        if keep:
            report.kept = scratch_root.relative_to(ws.root).as_posix()
    finally:
        os.close(lock)
        if not keep:
            _remove_tree(scratch_root)
    report.duration_s = time.perf_counter() - clock
    _write_report(run_dir, report)
    if seed is None:
        # A new record can change what a dossier may claim (claims.py), i.e. a dossier's key:
        # the next build must plan, not replay the last build's no-op record.
        from sci.build import noop

        noop.discard(ws.state_dir)
    return report


def _write_report(run_dir: Path, report: ReproReport) -> None:
    path = run_dir / "repro.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(canonical.dumps(report.to_json()) + b"\n")
    os.replace(tmp, path)


def _carry_checks(ws: Workspace, scratch: Workspace, loaded, selected: list[str], results: dict[str, dict]) -> None:
    """A dossier's input includes the repro-check records of its nodes (claims.py): the scratch
    gets exactly the records the workspace's dossier was built from, so it rebuilds the same
    bytes."""
    from sci.evidence import claims

    graph = loaded.graph
    for name in selected:
        node = graph.nodes[name]
        if node.kind != "dossier":
            continue
        keys = {n: results[n]["key"] for n in selected if graph.nodes[n].step in node.dossier_steps}
        for run in claims.records_used(ws.root / RUNS_DIR, keys):
            src = ws.root / RUNS_DIR / run / "repro.json"
            dst = scratch.root / RUNS_DIR / run / "repro.json"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
