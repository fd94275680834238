"""The operations as plain functions returning data: load, build, status, dag.

Nothing here prints or parses arguments: the CLI calls these and renders what they return;
progress leaves through the `emit(event, node, **data)` callback.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sci import canonical
from sci.records import run as records
from sci.records.key_only import KeyOnly
from sci.errors import SciError, StepFailed
from sci.store.hashing import StatCache
from sci.plan.pipeline import (Loaded, _params_path, _pipeline_doc, _read, environment_records, load,  # noqa: F401
                          plan_key, store_of as _store)
from sci.remote.sync import pull, push  # noqa: F401 - operations of this API, kept in their own module
from sci.values import Value
from sci.workspace import Workspace

if TYPE_CHECKING:  # for annotations only
    from sci.plan.graph import Graph


# -- build ---------------------------------------------------------------------------------
class BuildReport(Value):
    """What a build did: its run, every selected node's outcome (`order`: the selection in plan
    order), its manifest, and what the remote cache did (look-ups, hits, objects and bytes)."""

    __slots__ = _FIELDS = ("run_id", "run_dir", "outcomes", "order", "manifest", "remote")

    def __init__(self, run_id: str | None, run_dir: Path | None, outcomes: Mapping[str, Any], order: list[str],
                 manifest: dict | None = None, remote: dict | None = None):
        self.run_id, self.run_dir, self.outcomes, self.order = run_id, run_dir, outcomes, order
        self.manifest, self.remote = manifest, remote

    @property
    def ok(self) -> bool:
        counts = self.counts()
        return not counts["failed"] and not counts["skipped"]

    def counts(self) -> dict[str, int]:
        outcomes = self.outcomes
        return (outcomes if isinstance(outcomes, records.Outcomes) else records.Outcomes(outcomes)).counts()

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "counts": self.counts(),
            "nodes": [{"node": n, "status": self.outcomes[n].status._value_, "key": self.outcomes[n].key,
                       "error": self.outcomes[n].error} for n in self.order],
            "remote": self.remote,
        }



def build(ws: Workspace, targets: list[str] | None = None, *, jobs: int | None = None,
          keep_going: bool = False, overrides: list[str] | None = None, force: list[str] | None = None,
          wait: bool = True, emit: Callable[..., None] | None = None, argv: list[str] | None = None,
          executor: str = "local", link_mode: str | None = None, store: Path | None = None,
          seed: int | None = None, remote: str | None = None, use_remote: bool = True,
          remote_upload: bool = False, executor_options: dict | None = None) -> BuildReport:
    """Build `targets` (default: every node); raises StepFailed when a node failed."""
    import gc

    # The plan and the last record live until the build ends: frozen once loaded (see _build),
    # the cycle collector's passes during the build skip them (~15 ms at 10,000 nodes). Thawed
    # at the end; a program that froze objects itself keeps its own policy.
    freeze = gc.get_freeze_count() == 0
    try:
        return _build(ws, targets, jobs=jobs, keep_going=keep_going, overrides=overrides, force=force, wait=wait,
                      emit=emit, argv=argv, executor=executor, link_mode=link_mode, store=store, seed=seed,
                      remote=remote, use_remote=use_remote, remote_upload=remote_upload,
                      executor_options=executor_options, freeze=freeze)
    finally:
        if freeze:
            gc.unfreeze()


def _build(ws: Workspace, targets: list[str] | None, *, jobs: int | None, keep_going: bool,
           overrides: list[str] | None, force: list[str] | None, wait: bool, emit: Callable[..., None] | None,
           argv: list[str] | None, executor: str, link_mode: str | None, store: Path | None, seed: int | None,
           remote: str | None, use_remote: bool, remote_upload: bool, executor_options: dict | None,
           freeze: bool) -> BuildReport:
    emit = emit or (lambda *a, **k: None)
    started, clock = records.utc_now(), time.perf_counter()
    fast_ok = not force and store is None and not (remote_upload)
    with ws.lock(wait=wait):
        # Read once, at the start: what is recorded is what this build began from.
        yaml_bytes = _read(ws.pipeline_file)
        key = plan_key(ws, list(overrides or []), seed, yaml_bytes)
        last_record = None  # the last build's no-op record (noop.py)
        if fast_ok:
            from sci.build.noop import fast_build, read_record

            last_record = read_record(ws.state_dir)
            report = fast_build(ws, list(targets or []), argv, emit, started, clock, executor, plan_key=key,
                                record=last_record)
            if report is not None:
                return report
        from sci.executors import make_executor
        from sci.build.inputs import Resolver
        from sci.build.resources import Pools, check_fits
        from sci.build.scheduler import Scheduler

        loaded = load(ws, overrides, seed=seed, yaml_bytes=yaml_bytes, cache_key=key)
        if freeze:
            import gc

            gc.freeze()
        graph = loaded.graph
        selected = graph.select(list(targets or []), ws.root)
        forced = _forced(graph, force or [], ws.root)
        store = _store(loaded, store)
        stat_cache = StatCache(ws.state_dir / "statcache")
        gpu = graph.gpu_nodes
        gpu_nodes = [graph.nodes[n] for n in selected if n in gpu] if gpu else []
        if executor == "local":  # a GPU node on a machine without one: this, not a fingerprint error
            check_fits(gpu_nodes, loaded.hardware, loaded.pos)
        env = environment_records(loaded, stat_cache, gpu_nodes)
        last = None  # after a parameter edit: what the last build's record proves (noop.py)
        if fast_ok and not forced:
            from sci.build.noop import unchanged_nodes

            last = unchanged_nodes(ws, loaded, list(targets or []), {k: v["digest"] for k, v in env.items()}, selected,
                                   last_record)
        # after an edit: the nodes not known unchanged, in any order (the scheduler orders them)
        to_run = selected if last is None else sorted(last.dirty)
        # Nodes not re-planned by a parameter edit fit last time, on the same hardware.yaml.
        new_nodes = [graph.nodes[n] for n in (selected if last is None else sorted(last.touched))]
        if executor == "local":  # a distributed executor checks the nodes against its cluster instead
            check_fits(new_nodes, loaded.hardware, loaded.pos)
        _clean_scratch(ws, start=True)
        # An unknown executor, or a cluster that cannot run some node, fails before any record.
        ex = make_executor(executor, jobs=jobs or loaded.hardware.cpu or 1, pos=loaded.pos, **(executor_options or {}),
                           nodes=[graph.nodes[n] for n in to_run] if executor != "local" else ())
        hardware = ex.hardware() if hasattr(ex, "hardware") else loaded.hardware  # a cluster's, for Ray
        jobs = jobs or hardware.cpu or 1
        run_id = records.new_run_id()
        run_dir = ws.runs_dir / run_id
        log = records.RunLog(run_dir)

        def emit_all(event: str, node: str | None = None, **data: Any) -> None:
            log.write(event, node, level="error" if event == "node_failed" else "info", **data)
            emit(event, node, **data)

        emit_all("build_started", None, targets=list(targets or []), nodes=len(selected), jobs=jobs)
        resolver = Resolver(ws.root, graph, stat_cache, store, env["cpu"]["digest"],
                            env.get("gpu", {}).get("digest"))
        state = records.state_of(ws, hint=last.entries if last is not None else None)
        mode = link_mode or os.environ.get("SCI_LINK", "copy")
        from sci.store.cas import MATERIALIZE_MODES

        if mode not in MATERIALIZE_MODES:
            from sci.errors import UserError

            raise UserError(f"SCI_LINK={mode!r} is not a materialization mode",
                            hint=f"use one of {', '.join(MATERIALIZE_MODES)} (copy is the safe default)")

        def prepare(node, outcomes):
            if node.kind != "dossier":
                return {}, {}
            from sci.evidence import dossier

            return dossier.prepare(node, outcomes, graph, store, loaded.experiment, env["cpu"], ws.root)

        cache = None
        if use_remote and (loaded.remotes or os.environ.get("SCI_REMOTE") or remote):
            from sci.remote.cache import open_remote_cache

            cache = open_remote_cache(store, loaded.remotes, remote, ws.root, emit_all)
        sched = Scheduler(root=ws.root, graph=graph, resolver=resolver, store=store, state=state,
                          remote=cache, requested=graph.requested(list(targets or []), ws.root),
                          stat_cache=stat_cache, executor=ex, pools=Pools(hardware, jobs), emit=emit_all,
                          environment=env, keep_going=keep_going, force=forced, prepare=prepare,
                          link_mode=mode, python=sys.executable)
        if last is not None:  # one event for them all, not a node_cached each
            emit_all("unchanged", None, nodes=len(last.known),
                     reason="only parameters changed, and these nodes read none of them")
            sched.preset(last.known)
            sched.recorded, sched.touched, sched.display = last.entries, last.touched, emit
        try:
            try:
                outcomes = sched.run(to_run)
            finally:
                ex.close()
                _clean_scratch(ws, start=False)
            if remote_upload and cache is not None:
                from sci.remote.transfer import push

                built = [o.key for o in outcomes.values() if o.status._value_ == "executed" and o.key]
                up = push(store, cache.remote, built)
                emit_all("remote_upload", None, **up.to_json())
        finally:
            stat_cache.save()
            state.save()
            if sched.as_recorded:
                log.write("unchanged", None, nodes=sched.as_recorded,
                          reason="their inputs came out of this build as the last build recorded them")
            plan = _plan_entries(selected, sched.outcomes, graph.step_of, last)
            durations = {n: round(o.duration_s, 6) for n, o in sched.outcomes.items() if o.duration_s}
            man = records.manifest(
                root=ws.root, pipeline_digest=loaded.pipeline_digest, params_digest=loaded.params_digest,
                environment=env["cpu"], determinism=loaded.determinism, root_seed=loaded.root_seed,
                command=records.without_executor_options(list(argv if argv is not None else sys.argv[1:])),
                targets=list(targets or []),
                plan=plan, run_id=run_id, started=started, started_clock=clock, executor=ex.name,
                durations=durations)
            plan_json = _plan_json(plan, sched.outcomes, last)
            records.write_manifest(run_dir, man, plan_json)
            emit_all("build_finished", None, counts=sched.all_outcomes.counts())
            log.close()
        report = BuildReport(run_id, run_dir, outcomes, selected, man)
        if fast_ok and report.ok:
            from sci.build.noop import record_build

            record_build(ws, loaded, list(targets or []), key, selected, outcomes, resolver,
                         stat_cache, env, man, store, last, plan_json)
        else:
            from sci.build import noop

            noop.discard(ws.state_dir)
        if cache is not None:
            report.remote = {"lookups": cache.looked_up, "hits": cache.hits, **cache.stats.to_json()}
    if not report.ok:
        failed = [n for n in selected if outcomes[n].status._value_ == "failed"]
        first = outcomes[failed[0]] if failed else None
        msg = (f"{len(failed)} node(s) failed; first: {failed[0]}: {first.error}" if failed
               else "some nodes did not run")
        err = StepFailed(msg, hint=f"see runs/{run_id}/logs.jsonl; fix the step and run sci build again")
        err.report = report  # type: ignore[attr-defined]
        raise err
    return report



def _plan_entries(selected: list[str], decided: dict, step_of, last) -> list[dict]:
    """The manifest's plan: a node this build decided gets a new entry. After a parameter edit
    (`last`: noop.LastBuild) the others keep theirs from the last record: the recorded plan,
    with the decided nodes' entries replaced in place."""
    def entry(n: str, o) -> dict:
        return {"node": n, "step": step_of[n], "key": o.key, "status": o.status._value_, "outputs": o.outputs}

    if last is None:
        return [entry(n, o) for n in selected for o in [decided.get(n)] if o is not None]
    plan = list(last.doc["manifest"]["plan"])
    for n, o in decided.items():
        plan[last.position(n)] = entry(n, o)
    return plan


def _plan_json(plan: list[dict], decided: dict, last) -> list[bytes]:
    """Each plan entry's canonical JSON: after a parameter edit the last record's, with the
    decided nodes' entries encoded again; else every entry's (records.write_manifest)."""
    recorded = last.doc.get("plan_json") if last is not None else None
    if recorded is None:
        return [canonical.dumps(entry) for entry in plan]
    parts = list(recorded)
    for name in decided:
        i = last.position(name)
        parts[i] = canonical.dumps(plan[i])
    return parts


def _clean_scratch(ws: Workspace, *, start: bool) -> None:
    """Sandboxes live in .sci/scratch. At the start of a build (under the workspace lock, so no
    other build uses them) whatever a killed build left is removed; at the end, the boxes the
    workers kept for reuse (their kept links and directories with them). SCI_KEEP_SCRATCH=1
    keeps boxes for inspection."""
    root = ws.scratch_dir
    if not root.is_dir():
        return
    if os.environ.get("SCI_KEEP_SCRATCH") == "1":
        return
    import shutil

    for entry in os.scandir(root):
        if not entry.name.startswith("n-"):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)  # never follows the links inside
            elif start:
                os.unlink(entry.path)
        except OSError:
            pass



def _forced(graph: Graph, force: list[str], root: Path) -> set[str]:
    out: set[str] = set()
    for f in force:
        if f in graph.nodes:
            out.add(f)
            continue
        step_nodes = [n for n, m in graph.nodes.items() if m.step == f]
        if step_nodes:
            out.update(step_nodes)
            continue
        from sci.plan.graph import _rel_target

        rel = _rel_target(f, root)
        owner = graph._owner_of(rel) if rel is not None else None
        if owner is None:
            from sci.errors import TargetError

            raise TargetError(f"--force {f!r} names no node, step or output", hint="run `sci dag` to list the nodes")
        out.add(owner)  # an output path forces its own node, not the nodes upstream of it
    return out


# -- status --------------------------------------------------------------------------------
class NodeStatus(Value):
    """One node's row of `sci status`: `state` is "up to date", "restore", "would run" or "waits"."""

    __slots__ = _FIELDS = ("node", "state", "key", "reasons", "waits_on")

    def __init__(self, node: str, state: str, key: str | None = None, reasons: list[str] | None = None,
                 waits_on: list[str] | None = None):
        self.node, self.state, self.key = node, state, key
        self.reasons = reasons if reasons is not None else []
        self.waits_on = waits_on if waits_on is not None else []

    def to_json(self) -> dict:
        return {"node": self.node, "state": self.state, "key": self.key, "reasons": self.reasons,
                "waits_on": self.waits_on}


def status(ws: Workspace, targets: list[str] | None = None, *, overrides: list[str] | None = None) -> list[NodeStatus]:
    """For each selected node: up to date, or why it would run (SPEC §7). Runs nothing."""
    from sci.build import fingerprint
    from sci.build import keys
    from sci.build.inputs import Resolver
    from sci.store.cas import OutputRecord

    loaded = load(ws, overrides)
    graph = loaded.graph
    selected = graph.select(list(targets or []), ws.root)
    store = _store(loaded)
    stat_cache = StatCache(ws.state_dir / "statcache")
    env = environment_records(loaded, stat_cache, [])
    resolver = Resolver(ws.root, graph, stat_cache, store, env["cpu"]["digest"], None)
    state = records.state_of(ws)
    out: list[NodeStatus] = []
    unknown: set[str] = set()
    known_keys: dict[str, Any] = {}
    for name in selected:
        node = graph.nodes[name]
        blocked = [u for u in graph.upstream[name] if u in unknown]
        if blocked:
            unknown.add(name)
            out.append(NodeStatus(name, "waits", waits_on=blocked))
            continue
        if node.needs_gpu:
            try:
                env.setdefault("gpu", environment_records(loaded, stat_cache, [node])["gpu"])
                resolver.gpu_env_digest = env["gpu"]["digest"]
            except SciError as exc:
                unknown.add(name)
                out.append(NodeStatus(name, "would run", reasons=[f"env changed: {exc.message}"]))
                continue
        extra = None
        if node.kind == "dossier":
            from sci.evidence import dossier

            extra, _ = dossier.prepare(node, known_keys, graph, store, loaded.experiment, env["cpu"], ws.root)
        comp = resolver.components(node, extra)
        key = keys.key_of(comp)
        known_keys[name] = KeyOnly(key)
        action = store.get_action(key)
        prev = state.get(name)
        if action is not None and all(store.has_output(OutputRecord.from_json(r)) for r in action["outputs"].values()):
            resolver.outputs[name] = action["outputs"]
            restore = []
            for r in action["outputs"].values():
                p = ws.root / r["path"]
                if not p.exists() or stat_cache.path_digest(p, r["path"]) != r["digest"]:
                    restore.append(r["path"])
            out.append(NodeStatus(name, "restore" if restore else "up to date", key,
                                  [f"outputs missing or edited: {p} (restored from the store, nothing runs)" for p in restore]))
            continue
        unknown.add(name)
        reasons: list[str]
        old = store.get_action(prev["key"]) if prev else None
        if old is None:
            reasons = ["never built"]
        else:
            env_diff = None
            old_env = old.get("environment", {}).get("components")
            if old_env is not None and old["components"].get("environment") != comp["environment"]:
                env_diff = fingerprint.diff(old_env, env["cpu"]["components"])
            reasons = [str(r) for r in keys.explain(old["components"], comp, env_diff)] or ["never built"]
        out.append(NodeStatus(name, "would run", key, reasons))
    stat_cache.save()
    return out


# -- dag -----------------------------------------------------------------------------------
def dag(ws: Workspace, targets: list[str] | None = None, fmt: str = "text") -> str:
    loaded = load(ws)
    g = loaded.graph
    selected = g.select(list(targets or []), ws.root)
    sel = set(selected)
    edges = [(u, n) for n in selected for u in g.upstream[n] if u in sel]
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
        ups = [u for u in g.upstream[n] if u in sel]
        lines.append(f"{n}" + (f"  <- {', '.join(ups)}" if ups else ""))
    return "\n".join(lines)


# -- store upkeep ----------------------------------------------------------------------------
def fsck(ws: Workspace, *, repair: bool = False):
    from sci.store.maintenance import fsck as run_fsck

    loaded = load(ws)
    return run_fsck(_store(loaded), repair=repair)


def gc(ws: Workspace, *, keep_runs: int = 5, dry_run: bool = False):
    from sci.store.maintenance import gc as run_gc, keys_to_keep

    with ws.lock():
        loaded = load(ws)
        state = records.state_of(ws)
        keep = keys_to_keep(ws.root, ws.runs_dir, state.nodes, set(loaded.graph.nodes), keep_runs)
        return run_gc(_store(loaded), keep, dry_run=dry_run)


def repro_check(ws: Workspace, target: str, **kw):
    from sci.evidence.repro import repro_check as run

    return run(ws, target, **kw)


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
        doc, _ = _pipeline_doc(ws, _read(ws.pipeline_file))
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

