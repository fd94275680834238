"""The operations as plain functions returning data: load, build, status, dag.

Nothing here prints or parses arguments: the CLI calls these and renders what they return;
progress leaves through the `emit(event, node, **data)` callback.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import sci
from sci import canonical, records
from sci.errors import SciError, StepFailed
from sci.hashing import StatCache, digest_bytes
from sci.workspace import RESERVED, Workspace

if TYPE_CHECKING:  # for annotations only: the no-op path never imports the planner
    from sci.graph import Graph
    from sci.load import Positions
    from sci.resources import Hardware

PLAN_CACHE = "plan.pickle"
PLAN_CACHE_FORMAT = 2


@dataclass
class Loaded:
    """A validated pipeline, expanded into a graph: everything a build needs before hashing."""

    ws: Workspace
    graph: Graph
    pos: Positions
    params: dict
    params_digest: str
    pipeline_digest: str
    experiment: dict | None
    env_spec: dict
    root_seed: int
    determinism: str
    store_config: str | None
    remotes: dict
    hardware: Hardware


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


PIPELINE_CACHE = "pipeline.pickle"


def _pipeline_doc(ws: Workspace, yaml_bytes: bytes) -> tuple[dict, Positions]:
    """sci.yaml validated into plain data; cached by its bytes so pydantic runs only on edits."""
    from sci.load import load_yaml_text

    key = digest_bytes(sci.__version__.encode() + b"\0" + yaml_bytes)
    cache = ws.state_dir / PIPELINE_CACHE
    try:
        with open(cache, "rb") as fh:
            stored, doc, pos = pickle.load(fh)
        if stored == key:
            return doc, pos
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError, TypeError, ImportError):
        pass
    from sci.errors import Location, SpecError
    from sci.spec import validate_pipeline

    try:
        text = yaml_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", location=Location("sci.yaml"),
                        hint="save sci.yaml as UTF-8") from None
    data, pos = load_yaml_text(text, "sci.yaml")
    pipeline = validate_pipeline(data, pos)
    doc = pipeline.model_dump()
    doc["experiment"] = pipeline.experiment.model_dump(exclude_none=True) if pipeline.experiment else None
    _write_pickle(cache, (key, doc, pos))
    return doc, pos


def _write_pickle(path: Path, value: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        pass


def _parse(ws: Workspace, overrides: list[str], yaml_bytes: bytes, seed: int | None = None) -> Loaded:
    from sci import params as params_mod
    from sci.determinism import derive_seed
    from sci.graph import build_graph, check_code
    from sci.plan import expand, render_commands
    from sci.resources import load_hardware

    if not yaml_bytes and not ws.pipeline_file.exists():
        from sci.errors import SpecError

        raise SpecError("sci.yaml not found", hint="create it (see docs/format.md)")
    doc, pos = _pipeline_doc(ws, yaml_bytes)
    if seed is not None:  # `repro-check --seed N`: replay under another root seed
        doc = dict(doc, defaults=dict(doc["defaults"], seed=seed))
    raw_params, params_file, params_pos = params_mod.load(ws.root, doc["params"], pos)
    params = params_mod.apply_overrides(raw_params, overrides)
    store_cfg = doc["store"]
    reserved = tuple(RESERVED) + _store_reserved(ws, store_cfg)
    nodes = expand(doc, params, pos, reserved=reserved, derive_seed=derive_seed)
    graph = build_graph(nodes, ws.root, pos, reserved=reserved)
    check_code(nodes, ws.root, pos)
    render_commands(list(graph.nodes.values()), params, pos)
    return Loaded(
        ws=ws, graph=graph, pos=pos, params=params,
        params_digest=digest_bytes(canonical.dumps(params)),
        pipeline_digest=digest_bytes(yaml_bytes),
        experiment=doc["experiment"],
        env_spec=doc["env"],
        root_seed=doc["defaults"]["seed"], determinism=doc["defaults"]["determinism"],
        store_config=store_cfg,
        remotes={k: (v if isinstance(v, str) else {a: b for a, b in v.items() if b is not None})
                 for k, v in (doc["remotes"] or {}).items()},
        hardware=load_hardware(ws.root),
    )


def _store_reserved(ws: Workspace, store_cfg: str | None) -> tuple[str, ...]:
    root = ws.store_root(store_cfg)
    try:
        rel = root.resolve().relative_to(ws.root.resolve())
    except ValueError:
        return ()
    return (rel.parts[0],) if rel.parts else ()


def plan_key(ws: Workspace, overrides: list[str], seed: int | None, yaml_bytes: bytes | None = None) -> str:
    """Digest of everything a plan is a function of, besides the filesystem: the bytes of
    sci.yaml, the params file and config/hardware.yaml, the overrides, the store location,
    the seed override and sci's version."""
    yaml_bytes = _read(ws.pipeline_file) if yaml_bytes is None else yaml_bytes
    params_path = _params_path(ws, yaml_bytes)
    parts = [sci.__version__.encode(), str(PLAN_CACHE_FORMAT).encode(), yaml_bytes,
             _read(params_path) if params_path else b"", _read(ws.root / "config" / "hardware.yaml"),
             "\0".join(overrides).encode(), os.environ.get("SCI_CAS", "").encode(), str(seed).encode()]
    return digest_bytes(b"\0sci\0".join(parts))


def load(ws: Workspace, overrides: list[str] | None = None, *, seed: int | None = None) -> Loaded:
    """Parse and plan the pipeline, reusing `.sci/plan.pickle` when its inputs are unchanged.

    The cache is keyed by the bytes of sci.yaml, the params file, config/hardware.yaml, the
    overrides and sci's version; glob matches over workspace files and source deps are
    re-checked on every load, since they depend on the filesystem, not on those bytes.
    """
    overrides = list(overrides or [])
    yaml_bytes = _read(ws.pipeline_file)
    cache_key = plan_key(ws, overrides, seed, yaml_bytes)
    cache_file = ws.state_dir / PLAN_CACHE
    try:
        with open(cache_file, "rb") as fh:
            stored_key, loaded = pickle.load(fh)
        if stored_key == cache_key and _still_valid(loaded):
            loaded.ws = ws
            return loaded
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError, TypeError, ImportError):
        pass
    loaded = _parse(ws, overrides, yaml_bytes, seed)
    _write_pickle(cache_file, (cache_key, loaded))
    return loaded


def _params_path(ws: Workspace, yaml_bytes: bytes) -> Path | None:
    """Find `params: FILE` cheaply (without parsing YAML) so the plan cache key can include it."""
    for line in yaml_bytes.decode("utf-8", "replace").splitlines():
        if line.startswith("params:"):
            value = line.split(":", 1)[1].split("#", 1)[0].strip().strip("'\"")
            if value and not value.startswith("{"):
                return ws.root / value
    return None


def _still_valid(loaded: Loaded) -> bool:
    import glob as glob_mod

    root = loaded.ws.root
    for pattern, matches in loaded.graph.globs.items():
        found = sorted(m for m in glob_mod.glob(pattern, root_dir=root, recursive=True)
                       if m.split("/", 1)[0] not in RESERVED)
        if found != matches:
            return False
    for srcs in loaded.graph.sources.values():
        for s in srcs:
            if s.producer is None and not os.path.exists(root / s.path):
                return False  # re-plan, so the missing dep is reported with its location
    for node in loaded.graph.nodes.values():
        for path in node.code:
            if not os.path.exists(root / path) and not any(c in path for c in "*?["):
                return False
    return True


# -- environment ---------------------------------------------------------------------------
def environment_records(loaded: Loaded, stat_cache: StatCache, nodes) -> dict[str, dict]:
    """{"cpu": {digest, components}} plus "gpu" when a selected node needs a GPU."""
    from sci import fingerprint

    spec = loaded.env_spec
    comps = fingerprint.environment(loaded.ws.root, spec["files"], spec["vars"], spec["tools"],
                                    stat_cache=stat_cache, cache_dir=loaded.ws.state_dir / "cache")
    out = {"cpu": {"digest": fingerprint.digest(comps), "components": comps}}
    if any(n.needs_gpu for n in nodes):
        gcomps = dict(comps, gpu=_gpu_components(loaded.hardware))
        out["gpu"] = {"digest": fingerprint.digest(gcomps), "components": gcomps}
    return out


def _gpu_components(hw: Hardware) -> dict:
    """The GPU part of the fingerprint: detected, or as declared in config/hardware.yaml.

    A machine whose hardware.yaml declares GPUs that no driver reports (a test rig, a
    container without nvidia-smi) is taken at its word for scheduling; the fingerprint then
    says the GPUs were declared, not detected, so results never pass for detected-GPU ones.
    """
    from sci import fingerprint
    from sci.errors import SciError as _SciError

    try:
        return fingerprint.gpu_components()
    except _SciError:
        if hw.gpus and hw.source != "detected":
            return {"model": [g.name or "declared" for g in hw.gpus], "driver": "undetected",
                    "cuda": "undetected", "declared_in": hw.source}
        raise


# -- build ---------------------------------------------------------------------------------
@dataclass
class BuildReport:
    run_id: str | None
    run_dir: Path | None
    outcomes: dict[str, Any]
    order: list[str]
    manifest: dict | None = None
    remote: dict | None = None  # what the remote cache did: look-ups, hits, objects and bytes fetched

    @property
    def ok(self) -> bool:
        return all(o.status.value in ("cached", "executed") for o in self.outcomes.values())

    def counts(self) -> dict[str, int]:
        out = {"cached": 0, "executed": 0, "failed": 0, "skipped": 0}
        for o in self.outcomes.values():
            out[o.status.value] += 1
        return out

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "counts": self.counts(),
            "nodes": [{"node": n, "status": self.outcomes[n].status.value, "key": self.outcomes[n].key,
                       "error": self.outcomes[n].error} for n in self.order],
            "remote": self.remote,
        }


def _store(loaded: Loaded, override: Path | None = None):
    from sci.store import Store

    return Store(override or loaded.ws.store_root(loaded.store_config))


def build(ws: Workspace, targets: list[str] | None = None, *, jobs: int | None = None,
          keep_going: bool = False, overrides: list[str] | None = None, force: list[str] | None = None,
          wait: bool = True, emit: Callable[..., None] | None = None, argv: list[str] | None = None,
          executor: str = "local", link_mode: str | None = None, store: Path | None = None,
          seed: int | None = None, remote: str | None = None, use_remote: bool = True,
          remote_upload: bool = False, executor_options: dict | None = None) -> BuildReport:
    """Build `targets` (default: every node); raises StepFailed when a node failed."""
    from sci.executors import make_executor
    from sci.inputs import Resolver
    from sci.resources import Pools, check_fits
    from sci.scheduler import Scheduler

    emit = emit or (lambda *a, **k: None)
    started, clock = records.utc_now(), time.perf_counter()
    fast_ok = not force and store is None and not (remote_upload)
    with ws.lock(wait=wait):
        if fast_ok:
            report = _noop_build(ws, list(targets or []), list(overrides or []), seed, argv, emit, started, clock,
                                 executor)
            if report is not None:
                return report
        loaded = load(ws, overrides, seed=seed)
        graph = loaded.graph
        selected = graph.select(list(targets or []), ws.root)
        if executor == "local":  # a distributed executor checks the nodes against its cluster instead
            check_fits([graph.nodes[n] for n in selected], loaded.hardware, loaded.pos)
        forced = _forced(graph, force or [], ws.root)
        store = _store(loaded, store)
        stat_cache = StatCache(ws.state_dir / "statcache")
        env = environment_records(loaded, stat_cache, [graph.nodes[n] for n in selected])
        _clean_scratch(ws, start=True)
        # An unknown executor, or a cluster that cannot run some node, fails before any record.
        ex = make_executor(executor, jobs=jobs or loaded.hardware.cpu or 1, nodes=[graph.nodes[n] for n in selected],
                           pos=loaded.pos, **(executor_options or {}))
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
        state = records.State(ws.state_dir / "state.json")
        mode = link_mode or os.environ.get("SCI_LINK", "copy")
        from sci.store import MATERIALIZE_MODES

        if mode not in MATERIALIZE_MODES:
            from sci.errors import UserError

            raise UserError(f"SCI_LINK={mode!r} is not a materialization mode",
                            hint=f"use one of {', '.join(MATERIALIZE_MODES)} (copy is the safe default)")

        def prepare(node, outcomes):
            if node.kind != "dossier":
                return {}, {}
            from sci import dossier

            return dossier.prepare(node, outcomes, graph, store, loaded.experiment, env["cpu"], ws.root)

        cache = None
        if use_remote and (loaded.remotes or os.environ.get("SCI_REMOTE") or remote):
            from sci.remote_cache import open_remote_cache

            cache = open_remote_cache(store, loaded.remotes, remote, ws.root, emit_all)
        sched = Scheduler(root=ws.root, graph=graph, resolver=resolver, store=store, state=state,
                          remote=cache, requested=graph.requested(list(targets or []), ws.root),
                          stat_cache=stat_cache, executor=ex, pools=Pools(hardware, jobs), emit=emit_all,
                          environment=env, keep_going=keep_going, force=forced, prepare=prepare,
                          link_mode=mode, python=sys.executable)
        try:
            try:
                outcomes = sched.run(selected)
            finally:
                ex.close()
                _clean_scratch(ws, start=False)
            if remote_upload and cache is not None:
                from sci.transfer import push

                built = [o.key for o in outcomes.values() if o.status.value == "executed" and o.key]
                up = push(store, cache.remote, built)
                emit_all("remote_upload", None, **up.to_json())
        finally:
            stat_cache.save()
            state.save()
            plan = [{"node": n, "step": graph.nodes[n].step, "key": o.key, "status": o.status.value,
                     "outputs": o.outputs}
                    for n in selected for o in [sched.outcomes.get(n)] if o is not None]
            durations = {n: round(o.duration_s, 6) for n, o in sched.outcomes.items() if o.duration_s}
            man = records.manifest(
                root=ws.root, pipeline_digest=loaded.pipeline_digest, params_digest=loaded.params_digest,
                environment=env["cpu"], determinism=loaded.determinism, root_seed=loaded.root_seed,
                command=records.without_executor_options(list(argv if argv is not None else sys.argv[1:])),
                targets=list(targets or []),
                plan=plan, run_id=run_id, started=started, started_clock=clock, executor=ex.name,
                durations=durations)
            records.write_manifest(run_dir, man)
            emit_all("build_finished", None, counts={s: sum(1 for o in sched.outcomes.values() if o.status.value == s)
                                                       for s in ("cached", "executed", "failed", "skipped")})
            log.close()
        report = BuildReport(run_id, run_dir, outcomes, selected, man)
        if fast_ok and report.ok:
            _record_noop(ws, loaded, list(targets or []), list(overrides or []), seed, selected, outcomes, resolver,
                         stat_cache, env, man, store)
        else:
            from sci import noop

            noop.discard(ws.state_dir)
        if cache is not None:
            report.remote = {"lookups": cache.looked_up, "hits": cache.hits, **cache.stats.to_json()}
    if not report.ok:
        failed = [n for n in selected if outcomes[n].status.value == "failed"]
        first = outcomes[failed[0]] if failed else None
        msg = (f"{len(failed)} node(s) failed; first: {failed[0]}: {first.error}" if failed
               else "some nodes did not run")
        err = StepFailed(msg, hint=f"see runs/{run_id}/logs.jsonl; fix the step and run sci build again")
        err.report = report  # type: ignore[attr-defined]
        raise err
    return report


def _clean_scratch(ws: Workspace, *, start: bool) -> None:
    """Sandboxes live in .sci/scratch. At the start of a build (under the workspace lock, so no
    other build uses them) whatever a killed build left is removed; at the end, the empty
    boxes the workers kept for reuse. SCI_KEEP_SCRATCH=1 keeps boxes for inspection."""
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
            if start:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                os.rmdir(entry.path)
        except OSError:
            pass


def _record_noop(ws, loaded, targets, overrides, seed, selected, outcomes, resolver, stat_cache, env, man, store) -> None:
    from sci import noop

    graph = loaded.graph
    paths: set[str] = set(loaded.env_spec.get("files", []))
    for name in selected:
        node = graph.nodes[name]
        paths.update(node.all_dep_paths())
        paths.update(resolver.code_files(node))
        paths.update(node.outs.values())
    base = {k: v for k, v in man.items() if k not in ("volatile", "command")}
    base["plan"] = [dict(p, status="cached") for p in man["plan"]]
    noop.record(ws.state_dir, plan_key=plan_key(ws, overrides, seed), targets=targets,
                env_digests={k: v["digest"] for k, v in env.items()}, env_spec=loaded.env_spec,
                paths=sorted(paths), stat_entries=stat_cache.entries, globs=dict(loaded.graph.globs),
                manifest=base, action_paths=[f"{store.actions}/{outcomes[n].key[:2]}/{outcomes[n].key}" for n in selected])


def _noop_build(ws, targets, overrides, seed, argv, emit, started, clock, executor) -> BuildReport | None:
    """The fast path of noop.py: a build that provably runs nothing, decided from stats alone."""
    from sci import fingerprint, noop
    from sci.scheduler import Outcome, Status

    doc = noop.check(ws.state_dir, ws.root, plan_key=plan_key(ws, overrides, seed), targets=targets)
    if doc is None or set(doc["env"]) != {"cpu"}:
        return None  # GPU nodes re-detect their GPUs on the normal path
    spec = doc["env_spec"]
    stat_cache = StatCache(ws.state_dir / "statcache")
    comps = fingerprint.environment(ws.root, spec["files"], spec["vars"], spec["tools"], stat_cache=stat_cache,
                                    cache_dir=ws.state_dir / "cache")
    if fingerprint.digest(comps) != doc["env"]["cpu"]:
        return None
    stat_cache.save()
    run_id = records.new_run_id()
    run_dir = ws.runs_dir / run_id
    log = records.RunLog(run_dir)
    plan = doc["manifest"]["plan"]
    selected = [p["node"] for p in plan]
    log.write("build_started", None, targets=targets, nodes=len(selected), jobs=0)
    emit("build_started", None, targets=targets, nodes=len(selected), jobs=0)
    log.write("noop", None, nodes=len(selected), reason="no stat signature, environment or plan input changed")
    outcomes = {p["node"]: Outcome(p["node"], Status.CACHED, key=p["key"], outputs=p["outputs"]) for p in plan}
    man = dict(doc["manifest"])
    man["git_commit"] = records.git_commit(ws.root)
    man["command"] = records.redact_argv(records.without_executor_options(list(argv if argv is not None else sys.argv[1:])))
    man["volatile"] = records.manifest(
        root=ws.root, pipeline_digest="", params_digest="", environment={}, determinism="strict", root_seed=0,
        command=[], targets=[], plan=[], run_id=run_id, started=started, started_clock=clock, executor=executor,
        durations={}, with_git=False)["volatile"]
    records.write_manifest(run_dir, man)
    counts = {"cached": len(selected), "executed": 0, "failed": 0, "skipped": 0}
    log.write("build_finished", None, counts=counts)
    emit("build_finished", None, counts=counts)
    log.close()
    return BuildReport(run_id, run_dir, outcomes, selected, man)


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
        from sci.graph import _rel_target

        rel = _rel_target(f, root)
        owner = graph._owner_of(rel) if rel is not None else None
        if owner is None:
            from sci.errors import TargetError

            raise TargetError(f"--force {f!r} names no node, step or output", hint="run `sci dag` to list the nodes")
        out.add(owner)  # an output path forces its own node, not the nodes upstream of it
    return out


@dataclass
class _KeyOnly:
    key: str


# -- status --------------------------------------------------------------------------------
@dataclass
class NodeStatus:
    node: str
    state: str  # "up to date" | "restore" | "would run" | "waits"
    key: str | None = None
    reasons: list[str] = field(default_factory=list)
    waits_on: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"node": self.node, "state": self.state, "key": self.key, "reasons": self.reasons,
                "waits_on": self.waits_on}


def status(ws: Workspace, targets: list[str] | None = None, *, overrides: list[str] | None = None) -> list[NodeStatus]:
    """For each selected node: up to date, or why it would run (SPEC §7). Runs nothing."""
    from sci import fingerprint, keys
    from sci.inputs import Resolver
    from sci.store import OutputRecord

    loaded = load(ws, overrides)
    graph = loaded.graph
    selected = graph.select(list(targets or []), ws.root)
    store = _store(loaded)
    stat_cache = StatCache(ws.state_dir / "statcache")
    env = environment_records(loaded, stat_cache, [])
    resolver = Resolver(ws.root, graph, stat_cache, store, env["cpu"]["digest"], None)
    state = records.State(ws.state_dir / "state.json")
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
            from sci import dossier

            extra, _ = dossier.prepare(node, known_keys, graph, store, loaded.experiment, env["cpu"], ws.root)
        comp = resolver.components(node, extra)
        key = keys.key_of(comp)
        known_keys[name] = _KeyOnly(key)
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
    from sci.maintenance import fsck as run_fsck

    loaded = load(ws)
    return run_fsck(_store(loaded), repair=repair)


def gc(ws: Workspace, *, keep_runs: int = 5, dry_run: bool = False):
    from sci.maintenance import gc as run_gc, keys_to_keep

    with ws.lock():
        loaded = load(ws)
        state = records.State(ws.state_dir / "state.json")
        keep = keys_to_keep(ws.root, ws.runs_dir, state.nodes, set(loaded.graph.nodes), keep_runs)
        return run_gc(_store(loaded), keep, dry_run=dry_run)


def repro_check(ws: Workspace, target: str, **kw):
    from sci.repro import repro_check as run

    return run(ws, target, **kw)


def schema(out_dir: Path | None = None) -> dict:
    from sci import models

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
def _remote(loaded: Loaded, name: str | None):
    from sci.errors import UserError
    from sci.remote import open_remote, select_remote

    chosen = select_remote(loaded.remotes, name)
    if chosen is None:
        raise UserError("no remote store is configured",
                        hint="set SCI_REMOTE, or add `remotes: {default: URL}` to sci.yaml (docs/remotes.md)")
    return open_remote(chosen[1], name=chosen[0], base_dir=loaded.ws.root)


def push(ws: Workspace, targets: list[str] | None = None, *, remote: str | None = None, jobs: int = 8,
         progress=None) -> dict:
    """Copy the latest action results of the selected nodes, and the objects they need, to a remote."""
    from sci.transfer import push as run_push

    loaded = load(ws)
    selected = loaded.graph.select(list(targets or []), ws.root)
    store = _store(loaded)
    state = records.State(ws.state_dir / "state.json")
    keys, missing = [], []
    for name in selected:
        last = state.get(name)
        if last and store.get_action(last["key"]) is not None:
            keys.append(last["key"])
        else:
            missing.append(name)
    stats = run_push(store, _remote(loaded, remote), keys, jobs=jobs, progress=progress)
    return {"pushed_actions": len(keys), "not_built": missing, **stats.to_json()}


def pull(ws: Workspace, targets: list[str] | None = None, *, remote: str | None = None, jobs: int = 8,
         progress=None) -> dict:
    """Fetch the action results of the selected nodes' current keys, and every object they need.

    Keys are computed as a build would (a node's key needs its upstream's outputs), so a node
    the remote lacks leaves its dependants unknown: they are reported, not guessed.
    """
    from sci.inputs import Resolver
    from sci import keys as keys_mod
    from sci.transfer import TransferStats, fetch_action, pull as run_pull

    loaded = load(ws)
    graph = loaded.graph
    selected = graph.select(list(targets or []), ws.root)
    store = _store(loaded)
    stat_cache = StatCache(ws.state_dir / "statcache")
    env = environment_records(loaded, stat_cache, [graph.nodes[n] for n in selected])
    resolver = Resolver(ws.root, graph, stat_cache, store, env["cpu"]["digest"], env.get("gpu", {}).get("digest"))
    rem = _remote(loaded, remote)
    total = TransferStats()
    fetched, absent, unknown = [], [], []
    known_keys: dict[str, Any] = {}
    for name in selected:
        node = graph.nodes[name]
        if any(u not in resolver.outputs for u in graph.upstream[name]):
            unknown.append(name)
            continue
        extra = None
        if node.kind == "dossier":
            from sci import dossier

            extra, _ = dossier.prepare(node, known_keys, graph, store, loaded.experiment, env["cpu"], ws.root)
        key = keys_mod.key_of(resolver.components(node, extra))
        action = fetch_action(store, rem, key)
        if action is None:
            absent.append(name)
            continue
        stats = run_pull(store, rem, [key], outputs=True, jobs=jobs, progress=progress)
        for k, v in stats.to_json().items():
            if isinstance(v, int):
                setattr(total, k, getattr(total, k) + v)
        resolver.outputs[name] = action["outputs"]
        known_keys[name] = _KeyOnly(key)
        fetched.append(name)
    stat_cache.save()
    return {"pulled_nodes": fetched, "not_on_remote": absent, "unknown": unknown, **total.to_json()}


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
    from sci import citation
    from sci.dossier import evidence_works

    dossier = built_dossier(ws, target)
    exp, version, parents = dossier["experiment"], dossier["citation"]["version"], evidence_works(dossier)
    if fmt == "bibtex":
        return citation.bibtex(exp, version, parents)
    if fmt == "csl-json":
        return canonical.dumps_text(citation.csl_json(exp, version, parents))
    if fmt == "cff":
        return citation.cff(exp, version, parents)
    return citation.markdown(exp, version, parents)
