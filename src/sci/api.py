"""The operations as plain functions returning data: load, build, status, dag.

Nothing here prints or parses arguments: the CLI calls these and renders what they return;
progress leaves through the `emit(event, node, **data)` callback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sci import canonical
from sci.errors import SciError
from sci.plan.pipeline import _pipeline_doc, environment_records, load, read_bytes, store_of as _store  # noqa: F401
from sci.records import run as records
from sci.workspace import Workspace

if TYPE_CHECKING:  # for annotations only
    from sci.build.status import NodeStatus
    from sci.records.report import BuildReport


# -- build and status ------------------------------------------------------------------------
def build(ws: Workspace, targets: list[str] | None = None, *, jobs: int | None = None,
          keep_going: bool = False, overrides: list[str] | None = None, force: list[str] | None = None,
          wait: bool = True, emit: Callable[..., None] | None = None, argv: list[str] | None = None,
          executor: str = "local", link_mode: str | None = None, store: Path | None = None,
          seed: int | None = None, remote: str | None = None, use_remote: bool = True,
          remote_upload: bool = False, executor_options: dict | None = None) -> BuildReport:
    """Build `targets` (default: every node); raises StepFailed when a node failed."""
    from sci.build import session  # here: status, dag and the rest never need it
    from sci.build.session import BuildOptions

    options = BuildOptions(jobs=jobs, keep_going=keep_going, overrides=overrides, force=force, wait=wait, emit=emit,
                           argv=argv, executor=executor, link_mode=link_mode, store=store, seed=seed, remote=remote,
                           use_remote=use_remote, remote_upload=remote_upload, executor_options=executor_options)
    return session.build(ws, list(targets or []), options)


def status(ws: Workspace, targets: list[str] | None = None, *, overrides: list[str] | None = None,
           check_resources: bool = False) -> list[NodeStatus]:
    """For each selected node: up to date, or why it would run (SPEC §7). Runs nothing.
    `check_resources`: refuse nodes this machine cannot run, as a build would (`--dry-run`)."""
    from sci.build.status import status as run

    return run(ws, list(targets or []), overrides=list(overrides or []), check_resources=check_resources)


# -- remotes: push and pull (remote/sync.py; imported when used, not by every build) --------
def push(ws: Workspace, targets: list[str] | None = None, **options) -> dict:
    """Copy the latest action results of the selected nodes, and their objects, to a remote."""
    from sci.remote.sync import push as run

    return run(ws, targets, **options)


def pull(ws: Workspace, targets: list[str] | None = None, **options) -> dict:
    """Fetch the action results of the selected nodes' current keys, and the objects they need."""
    from sci.remote.sync import pull as run

    return run(ws, targets, **options)


# -- dag -----------------------------------------------------------------------------------
def dag(ws: Workspace, targets: list[str] | None = None, fmt: str = "text") -> str:
    loaded = load(ws)
    g = loaded.graph
    selected = g.select(list(targets or []), ws.root)
    sel = set(selected)
    rank = {n: i for i, n in enumerate(selected)}  # the graph's order: a sweep as declared, never string order
    edges = [(u, n) for n in selected for u in sorted((u for u in g.upstream[n] if u in sel), key=rank.__getitem__)]
    if fmt == "json":
        return canonical.dumps_text({"nodes": [{"name": n, "step": g.nodes[n].step, "kind": g.nodes[n].kind,
                                                "outs": g.nodes[n].outs} for n in selected],
                                     "edges": [list(e) for e in edges]})
    if fmt == "dot":
        lines = ["digraph sci {", "  rankdir=LR;", "  node [shape=box];"]
        lines += [f'  "{n}";' for n in selected]
        lines += [f'  "{u}" -> "{d}";' for u, d in edges]
        return "\n".join(lines + ["}"])
    if fmt == "mermaid":
        ids = {n: f"n{i}" for i, n in enumerate(selected)}
        lines = ["graph LR"]
        lines += [f'  {ids[n]}["{n}"]' for n in selected]
        lines += [f"  {ids[u]} --> {ids[d]}" for u, d in edges]
        return "\n".join(lines)
    lines = []
    for n in selected:
        ups = sorted((u for u in g.upstream[n] if u in sel), key=rank.__getitem__)
        lines.append(f"{n}" + (f"  <- {', '.join(ups)}" if ups else ""))
    return "\n".join(lines)


# -- store upkeep ----------------------------------------------------------------------------
def fsck(ws: Workspace, *, repair: bool = False):
    from sci.store.maintenance import fsck as run_fsck

    loaded = load(ws)
    return run_fsck(_store(loaded), repair=repair)


def gc(ws: Workspace, *, keep_runs: int = 5, dry_run: bool = False):
    """Store objects nothing keeps, repro-check scratch left behind, and prepared environments
    no declared environment has now."""
    from sci.envs.prepare import remove_unused
    from sci.evidence.repro import leftovers
    from sci.store.maintenance import gc as run_gc, keys_to_keep

    with ws.lock():  # no build runs meanwhile; a running repro-check holds its scratch's own lock
        scratch = leftovers(ws, remove=not dry_run)  # first: they need no plan (the pipeline may not load)
        loaded = load(ws)
        state = records.state_of(ws)
        keep = keys_to_keep(ws.root, ws.runs_dir, state.nodes, set(loaded.graph.nodes), keep_runs)
        rep = run_gc(_store(loaded), keep, dry_run=dry_run)
        rep.scratch = scratch
        for where, size in remove_unused(ws.state_dir, _environments_in_use(ws, loaded), dry_run=dry_run):
            rep.deleted.append(("environment", where.name, size))
        return rep


def _environments_in_use(ws: Workspace, loaded) -> set[str]:
    """The directory names (.sci/envs/) of the environments the pipeline declares now; for one
    whose identity cannot be read now (a lock being edited), every one of its name."""
    from sci.envs.prepare import location, prepared_dirs
    from sci.plan.pipeline import environments_of
    from sci.store.hashing import StatCache

    envs = environments_of(loaded, StatCache(ws.state_dir / "statcache"))
    keep = set()
    for name in envs.declared:
        try:
            keep.add(location(ws.state_dir, envs.resolved(name)).name)
        except SciError:
            keep.update(p.name for p in prepared_dirs(ws.state_dir) if p.name.startswith(f"{name}-"))
    return keep


# -- software environments (SPEC §10) -----------------------------------------------------------
def environments(ws: Workspace) -> list[dict]:
    """Each declared environment: its kind and source, its identity, where it is prepared."""
    from sci.envs.prepare import identity_digest, location, ready
    from sci.plan.pipeline import environments_of
    from sci.store.hashing import StatCache

    loaded = load(ws)
    envs = environments_of(loaded, StatCache(ws.state_dir / "statcache"))
    out = []
    for name, decl in envs.declared.items():
        resolved = envs.resolved(name)
        found = ready(ws.state_dir, resolved)
        out.append({"name": name, "kind": decl.kind, "source": decl.image or decl.path,
                    "identity": identity_digest(resolved.identity), "python": resolved.identity.get("python"),
                    "packages": resolved.identity.get("packages", {}),
                    "requirements": resolved.identity.get("requirements", []),
                    "prepared": found.directory if found else None,
                    "directory": str(location(ws.state_dir, resolved))})
    return out


def prepare_environments(ws: Workspace, names: list[str] | None = None) -> list[dict]:
    """Prepare the declared environments (all, or `names`) now, ahead of a build."""
    import time

    from sci.errors import UserError
    from sci.envs.prepare import prepare
    from sci.plan.pipeline import environments_of
    from sci.store.hashing import StatCache

    loaded = load(ws)
    envs = environments_of(loaded, StatCache(ws.state_dir / "statcache"))
    for name in names or []:
        if name not in envs.declared:
            raise UserError(f"no environment named {name!r}",
                            hint=f"declared: {', '.join(envs.declared) or 'none (see environments: in docs/format.md)'}")
    out = []
    for name in names or list(envs.declared):
        t0 = time.perf_counter()
        prepared, made = prepare(ws.state_dir, ws.root, envs.resolved(name))
        out.append({"name": name, "directory": prepared.directory, "prepared": made,
                    "seconds": round(time.perf_counter() - t0, 3)})
    return out


def repro_check(ws: Workspace, target: str, **kw):
    from sci.evidence.repro import repro_check as run

    return run(ws, target, **kw)


def export_provenance(ws: Workspace, target: str, fmt: str, out: Path | None = None) -> dict:
    """`sci export --format ro-crate|prov`: the target's run in a standard form (evidence/export.py)."""
    from sci.evidence.export import export

    return export(ws, target, fmt, out)


def schema(out_dir: Path | None = None) -> dict:
    from sci.records import models

    if out_dir is not None:
        return {"written": [str(p) for p in models.write_schemas(out_dir)]}
    return models.schemas()


def doctor(ws: Workspace | None) -> dict:
    from sci import doctor as doc

    store_root = None
    if ws is not None:
        try:
            store_root = _store_root_only(ws)
        except SciError:
            store_root = ws.store_root()
    return doc.report(ws.root if ws else None, store_root)


def _store_root_only(ws: Workspace) -> Path:
    """The store path without creating a store (doctor must not write)."""
    try:
        doc, _ = _pipeline_doc(ws, read_bytes(ws.pipeline_file))
        return ws.store_root(doc.get("store"))
    except SciError:
        return ws.store_root()


# -- remotes ---------------------------------------------------------------------------------

# -- citations -------------------------------------------------------------------------------
CITE_FORMATS = ("bibtex", "csl-json", "cff", "markdown")


def built_dossier(ws: Workspace, target: str | None = None) -> dict:
    """The current dossier.json of a dossier node, read from the store (not the editable copy)."""
    from sci.errors import TargetError, UserError

    loaded = load(ws)
    g = loaded.graph
    dossiers = [n for n, m in g.nodes.items() if m.kind == "dossier"]
    if target is None:
        if not dossiers:
            raise UserError("this pipeline has no dossier step", hint="add a step with kind: dossier (docs/dossier.md)")
        name = dossiers[0]
    else:
        matches = [n for n in dossiers if n == target or g.nodes[n].step == target]
        if not matches:
            raise TargetError(f"{target!r} is not a dossier node", hint=f"dossier nodes: {', '.join(dossiers) or 'none'}")
        name = matches[0]
    rows = {r.node: r for r in status(ws, [name])}
    row = rows.get(name)
    if row is None or row.state not in ("up to date", "restore"):
        raise UserError(f"the dossier {name} is not built for the current pipeline", hint=f"run `sci build {name}` first")
    store = _store(loaded)
    action = store.get_action(row.key)
    tree = next(iter(action["outputs"].values()))
    entry = next(e for e in store.get_tree(tree["digest"]) if e.path == "dossier.json")
    import json as _json

    return _json.loads(store.read_blob(entry.digest))


def cite(ws: Workspace, target: str | None = None, fmt: str = "bibtex") -> str:
    from sci.evidence import citation
    from sci.evidence.dossier import evidence_works

    dossier = built_dossier(ws, target)
    exp, version, parents = dossier["experiment"], dossier["citation"]["version"], evidence_works(dossier)
    if fmt == "bibtex":
        return citation.bibtex(exp, version, parents)
    if fmt == "csl-json":
        return canonical.dumps_text(citation.csl_json(exp, version, parents))
    if fmt == "cff":
        return citation.cff(exp, version, parents)
    return citation.markdown(exp, version, parents)



# -- logs ------------------------------------------------------------------------------------
def log(ws: Workspace, node: str, *, run: str | None = None) -> dict:
    """The captured stdout and stderr of `node`'s latest execution (SPEC §7), or of its
    execution in run `run`: {"node", "run", "status", "key", "stdout", "stderr"} (bytes).

    The runs are read newest first for the node's `node_executed` or `node_failed` event (a
    failed node has no action result; its event holds the digests). Without a run that ran it
    (the runs were removed, or a restored store), the action result of the node's last key
    (`.sci/state`) answers."""
    import json

    from sci.errors import TargetError, UserError

    loaded = load(ws)
    if node not in loaded.graph.nodes:
        from difflib import get_close_matches

        close = get_close_matches(node, list(loaded.graph.nodes), n=1)
        raise TargetError(f"no node named {node!r}",
                          hint=f"did you mean {close[0]!r}?" if close else "run `sci dag` to list the nodes")
    store = _store(loaded)
    runs_dir = ws.runs_dir
    if run is not None and not (runs_dir / run).is_dir():
        raise UserError(f"no run {run!r} in {runs_dir}", hint="`ls runs/` lists the runs, newest last")
    candidates = [run] if run is not None else sorted((p.name for p in runs_dir.iterdir() if p.is_dir()),
                                                       reverse=True) if runs_dir.is_dir() else []
    for run_id in candidates:
        try:
            lines = (runs_dir / run_id / "logs.jsonl").read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a torn last line
            if event.get("node") != node or event.get("event") not in ("node_executed", "node_failed"):
                continue
            data = event.get("data") or {}
            if event["event"] == "node_failed":
                return _log_of(store, node, run_id, "failed", data.get("key"), data.get("stdout"),
                               data.get("stderr"))
            action = store.get_action(data.get("key", ""))
            if action is not None:
                return _log_of(store, node, run_id, "executed", data["key"], action.get("stdout"),
                               action.get("stderr"))
    if run is not None:
        raise UserError(f"{node} did not run in run {run}", hint="without --run: its latest execution")
    entry = records.state_of(ws).get(node)
    action = store.get_action(entry["key"]) if entry else None
    if action is None:
        raise UserError(f"{node} has no recorded execution", hint=f"run `sci build {node}`")
    return _log_of(store, node, None, "executed", entry["key"], action.get("stdout"), action.get("stderr"))


def _log_of(store, node: str, run: str | None, status: str, key: str | None, out: str | None,
            err: str | None) -> dict:
    def read(digest: str | None) -> bytes:
        if not digest:
            return b""
        try:
            return store.read_blob(digest)
        except (OSError, SciError):
            return f"<the log {digest[:12]} is not in the store any more (sci gc?)>\n".encode()

    return {"node": node, "run": run, "status": status, "key": key, "stdout": read(out), "stderr": read(err)}
