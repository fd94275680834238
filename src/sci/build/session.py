"""One build, phase by phase: read the request, try the no-op shortcut, plan, decide and run
(the scheduler), write the records.

    BuildOptions ──▶ BuildSession.run()
                       ├─ shortcut: noop.fast_build (a build that provably runs nothing)
                       ├─ plan: pipeline.load → graph.select → environment fingerprint
                       ├─ shortcut: noop.unchanged_nodes (after a parameter edit)
                       ├─ decide and run: Scheduler (build/decision.py decides each node)
                       └─ records: manifest.json, logs.jsonl, the no-op record

`SCI_SHORTCUTS` (docs/concepts.md): `on` (default) takes the shortcuts; `off` takes the full
path only; `verify` computes both the shortcuts' answers and the full path's, builds by the
full path, and fails with exit 3 naming every difference.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from sci import canonical
from sci.build import fingerprint
from sci.errors import SciError, StepFailed, UserError
from sci.plan.pipeline import load, plan_key, read_bytes, store_of
from sci.records import run as records
from sci.records.report import BuildReport
from sci.store.hashing import StatCache
from sci.values import Value
from sci.workspace import Workspace

SHORTCUT_MODES = ("on", "off", "verify")


class ShortcutMismatch(SciError):
    """SCI_SHORTCUTS=verify found a shortcut whose answer the full path contradicts: a bug in sci."""

    exit_code = 3


class BuildOptions(Value):
    """What one `sci build` is asked to do, besides its targets."""

    __slots__ = _FIELDS = ("jobs", "keep_going", "overrides", "force", "wait", "emit", "argv", "executor",
                           "link_mode", "store", "seed", "remote", "use_remote", "remote_upload",
                           "executor_options", "shortcuts")

    def __init__(self, *, jobs: int | None = None, keep_going: bool = False, overrides: list[str] | None = None,
                 force: list[str] | None = None, wait: bool = True, emit: Callable[..., None] | None = None,
                 argv: list[str] | None = None, executor: str = "local", link_mode: str | None = None,
                 store: Path | None = None, seed: int | None = None, remote: str | None = None,
                 use_remote: bool = True, remote_upload: bool = False, executor_options: dict | None = None,
                 shortcuts: str | None = None):
        self.jobs, self.keep_going = jobs, keep_going
        self.overrides, self.force = list(overrides or []), list(force or [])
        self.wait, self.emit = wait, emit or (lambda *a, **k: None)
        self.argv = list(argv if argv is not None else sys.argv[1:])
        self.executor, self.link_mode, self.store, self.seed = executor, link_mode, store, seed
        self.remote, self.use_remote, self.remote_upload = remote, use_remote, remote_upload
        self.executor_options = dict(executor_options or {})
        self.shortcuts = shortcuts if shortcuts is not None else shortcut_mode()


def shortcut_mode() -> str:
    mode = os.environ.get("SCI_SHORTCUTS", "on") or "on"
    if mode not in SHORTCUT_MODES:
        raise UserError(f"SCI_SHORTCUTS={mode!r} is not a shortcut mode",
                        hint="use on (the default), off (full path only) or verify (both, compared)")
    return mode


def build(ws: Workspace, targets: list[str], options: BuildOptions) -> BuildReport:
    """Build `targets` (every node when empty); raises StepFailed when a node failed."""
    import gc

    # The plan and the last record live until the build ends: frozen once loaded, the cycle
    # collector's passes during the build skip them (~15 ms at 10,000 nodes). Until then the
    # collector is off: decoding the state files (the no-op record, the plan, the stat cache)
    # makes ~100,000 acyclic objects it would walk for nothing (~3 ms at 10,000 nodes). Both are
    # undone at the end; a program that froze objects or turned the collector off keeps its policy.
    freeze = gc.get_freeze_count() == 0 and gc.isenabled()
    if freeze:
        gc.disable()
    try:
        return BuildSession(ws, list(targets), options, freeze).run()
    finally:
        if freeze:
            gc.unfreeze()
            gc.enable()


class BuildSession:
    """One build of one workspace under its lock. Each phase is a method; the state they pass
    on is set in `run` and read after, never changed from outside."""

    def __init__(self, ws: Workspace, targets: list[str], options: BuildOptions, freeze: bool):
        self.ws, self.targets, self.opt, self.freeze = ws, targets, options, freeze
        self.started, self.clock = records.utc_now(), time.perf_counter()
        # Shortcuts apply to a plain build of this workspace's store (not --force, --store,
        # --remote-upload: each of those asks for something the record did not see).
        self.shortcuts = options.shortcuts if not (options.force or options.store or options.remote_upload) \
            else "off"

    def run(self) -> BuildReport:
        ws, opt = self.ws, self.opt
        with ws.lock(wait=opt.wait):
            stat_cache = StatCache(ws.state_dir / "statcache")
            fingerprint.prefetch_interpreter(stat_cache, ws.state_dir / "cache", ws.root)  # answers while we plan
            try:
                # Read once, at the start: what is recorded is what this build began from.
                yaml_bytes = read_bytes(ws.pipeline_file)
                key = plan_key(ws, opt.overrides, opt.seed, yaml_bytes)
                record = answer = None
                if self.shortcuts != "off":
                    from sci.build import noop

                    record = noop.read_record(ws.state_dir)
                    if self.shortcuts == "on":
                        fast = noop.fast_build(ws, self.targets, opt.argv, opt.emit, self.started, self.clock,
                                               opt.executor, plan_key=key, record=record, stat_cache=stat_cache)
                        if fast is not None:
                            return fast
                    else:  # verify: the shortcut's answer, then the full path's
                        answer = noop.fast_answer(ws, self.targets, plan_key=key, record=record,
                                                  stat_cache=stat_cache)
                report = self._full(yaml_bytes, key, record, stat_cache)
            finally:
                fingerprint.drop_prefetched()
        if answer is not None:
            _compare_fast(answer["manifest"]["plan"], report)
        if not report.ok:
            raise _failure(report)
        return report

    def _full(self, yaml_bytes: bytes, key: str, record, stat_cache: StatCache) -> BuildReport:
        """Plan, decide every node and run what must run; the records; the no-op record."""
        from sci.build.inputs import Resolver
        from sci.build.resources import check_fits

        ws, opt, targets = self.ws, self.opt, self.targets
        loaded = load(ws, opt.overrides, seed=opt.seed, yaml_bytes=yaml_bytes, cache_key=key)
        if self.freeze:
            import gc

            gc.freeze()
            gc.enable()
        graph = loaded.graph
        selected = graph.select(targets, ws.root)
        forced = _forced(graph, opt.force, ws.root)
        store = store_of(loaded, opt.store)
        if fingerprint.probing():  # a fresh workspace: hash its sources while python3 answers
            _hash_sources(graph, selected, stat_cache, ws.root)
        gpu = graph.gpu_nodes
        gpu_nodes = [graph.nodes[n] for n in selected if n in gpu] if gpu else []
        if opt.executor == "local":  # a GPU node on a machine without one: this, not a fingerprint error
            check_fits(gpu_nodes, loaded.hardware, loaded.pos)
        from sci.plan.pipeline import environments_of

        envs = environments_of(loaded, stat_cache)
        env = _environment(loaded, stat_cache, gpu_nodes, opt.executor, envs)
        last = None  # after a parameter edit: what the last build's record proves (noop.py)
        if self.shortcuts != "off" and not forced:
            from sci.build.noop import unchanged_nodes

            last = unchanged_nodes(ws, loaded, targets, {k: v["digest"] for k, v in env.items()}, selected, record)
        use_last = last is not None and self.shortcuts == "on"
        # after an edit: the nodes not known unchanged, in any order (the scheduler orders them)
        to_run = sorted(last.dirty) if use_last else selected
        # Nodes not re-planned by a parameter edit fit last time, on the same hardware.yaml.
        new_nodes = [graph.nodes[n] for n in (sorted(last.touched) if use_last else selected)]
        if opt.executor == "local":  # a distributed executor checks the nodes against its cluster instead
            check_fits(new_nodes, loaded.hardware, loaded.pos)
        _clean_scratch(ws, start=True)
        mode = _link_mode(opt.link_mode)
        from sci.executors import make_executor

        # An unknown executor, or a cluster that cannot run some node, fails before any record.
        run_id = records.new_run_id()
        run_dir = ws.runs_dir / run_id
        ex = make_executor(opt.executor, jobs=opt.jobs or loaded.hardware.cpu or 1, pos=loaded.pos,
                           **opt.executor_options,
                           nodes=[graph.nodes[n] for n in to_run] if opt.executor != "local" else (),
                           ws=ws, yaml_bytes=yaml_bytes, run_dir=run_dir)
        hardware = ex.hardware() if hasattr(ex, "hardware") else loaded.hardware  # a cluster's, for Ray, SLURM
        jobs = opt.jobs or hardware.cpu or 1
        log = records.RunLog(run_dir)

        def emit_all(event: str, node: str | None = None, **data: Any) -> None:
            log.write(event, node, level=records.LEVELS.get(event, "info"), **data)
            opt.emit(event, node, **data)

        emit_all("build_started", None, targets=targets, nodes=len(selected), jobs=jobs)
        resolver = Resolver(ws.root, graph, stat_cache, store, env)
        state = records.state_of(ws, hint=last.entries if use_last else None)

        def prepare(node, outcomes):
            if node.kind != "dossier":
                return {}, {}
            from sci.evidence import dossier

            return dossier.prepare(node, outcomes, graph, store, loaded.experiment, env["cpu"], ws.root)

        cache = None
        if opt.use_remote and (loaded.remotes or os.environ.get("SCI_REMOTE") or opt.remote):
            from sci.remote.cache import open_remote_cache

            cache = open_remote_cache(store, loaded.remotes, opt.remote, ws.root, emit_all)
        from sci.build.resources import Pools
        from sci.build.scheduler import Scheduler

        sched = Scheduler(root=ws.root, graph=graph, resolver=resolver, store=store, state=state,
                          remote=cache, requested=graph.requested(targets, ws.root),
                          stat_cache=stat_cache, executor=ex, pools=Pools(hardware, jobs), emit=emit_all,
                          environment=env, keep_going=opt.keep_going, force=forced, prepare=prepare,
                          link_mode=mode, python=sys.executable, last=last, shortcuts=self.shortcuts,
                          display=opt.emit, environments=envs)
        if use_last:  # one event for them all, not a node_cached each
            emit_all("unchanged", None, nodes=len(last.known),
                     reason="only parameters changed, and these nodes read none of them")
        try:
            previous = _stop_on_signals()
            try:
                outcomes = sched.run(to_run)
            finally:
                ex.close()
                _restore_signals(previous)
                _clean_scratch(ws, start=False)
            if opt.remote_upload and cache is not None:
                from sci.remote.transfer import push

                built = [o.key for o in outcomes.values() if o.status is records.NodeStatus.EXECUTED and o.key]
                up = push(store, cache.remote, built)
                emit_all("remote_upload", None, **up.to_json())
        finally:
            stat_cache.save()
            state.save()
            if sched.as_recorded:
                log.write("unchanged", None, nodes=sched.as_recorded,
                          reason="their inputs came out of this build as the last build recorded them")
            recorded_last = last if use_last else None
            plan = _plan_entries(selected, sched.outcomes, graph, recorded_last, _metrics_of(graph, store))
            durations = {n: round(o.duration_s, 6) for n, o in sched.outcomes.items() if o.duration_s}
            man = records.manifest(
                root=ws.root, pipeline_digest=loaded.pipeline_digest, params_digest=loaded.params_digest,
                environment=env["cpu"], determinism=loaded.determinism, root_seed=loaded.root_seed,
                command=records.without_executor_options(opt.argv), targets=targets,
                plan=plan, run_id=run_id, started=self.started, started_clock=self.clock, executor=ex.name,
                durations=durations, params=loaded.params, params_json=loaded.params_json,
                environments={k[4:]: v for k, v in env.items() if k.startswith("env:") and not k.endswith("+gpu")})
            plan_json = _plan_json(plan, sched.outcomes, recorded_last)
            encoded = {"plan": records.plan_pieces(plan_json)}
            # The manifest's parameters' canonical JSON: the planned parameters' when nothing in
            # them is hidden (they are the same object) and the plan's loading encoded them.
            params_json = loaded.params_json if man.get("params") is loaded.params else None
            if params_json is not None:
                encoded["params"] = [params_json]
            records.write_manifest(run_dir, man, encoded)
            emit_all("build_finished", None, counts=sched.all_outcomes.counts())
            log.close()
        if sched.mismatches:
            raise ShortcutMismatch("SCI_SHORTCUTS=verify: the parameter-edit shortcut and the full path "
                                   "disagree: " + " | ".join(sched.mismatches),
                                   hint="this is a bug in sci: please report it with these lines")
        report = BuildReport(run_id, run_dir, outcomes, selected, man)
        from sci.build import noop

        if self.shortcuts != "off" and report.ok:
            noop.record_build(ws, loaded, targets, key, selected, outcomes, resolver, stat_cache, env, man, store,
                              recorded_last, plan_json, params_json)
        else:
            noop.discard(ws.state_dir)
        if cache is not None:
            report.remote = {"lookups": cache.looked_up, "hits": cache.hits, **cache.stats.to_json()}
        return report


_STOP_SIGNALS = ("SIGTERM", "SIGHUP")  # and SIGINT, which Python turns into KeyboardInterrupt itself


def _stop_on_signals() -> dict[int, Any]:
    """While nodes run, SIGTERM (`timeout`, the end of a CI job, `docker stop`) and SIGHUP (the
    terminal or SSH session closed) stop the build as Ctrl-C does: every running step is
    stopped (its process group, a Ray task, a SLURM job), nothing half-done is recorded, exit
    130. Without this a killed sci left its steps running on: they run in sessions of their own,
    so neither signal reaches them. A signal the parent ignores (`nohup`) stays ignored. The
    handlers replaced are returned and put back after (`_restore_signals`); only the main
    thread can set them. `_signal` is what `signal.signal` calls: importing `signal` itself (its
    enums) costs ~1 ms of every build that runs a node."""
    import threading

    import _signal

    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for name in _STOP_SIGNALS:
        num = getattr(_signal, name)
        was = _signal.signal(num, _raise_interrupt)
        if was == _signal.SIG_IGN:  # ignored as its parent asked: so it stays
            _signal.signal(num, was)
        elif was is not None:
            previous[num] = was
    return previous


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _restore_signals(previous: dict[int, Any]) -> None:
    if previous:
        import _signal

        for num, handler in previous.items():
            _signal.signal(num, handler)


def _hash_sources(graph, selected: list[str], stat_cache: StatCache, root: Path) -> None:
    """Put the selected nodes' source files into the stat cache now, where the keys will find
    them. Only what the scheduler hashes anyway, earlier: a file that cannot be read is left
    for the node that reads it to name."""
    for path in sorted({s.path for n in selected for s in graph.sources[n] if s.producer is None}):
        try:
            stat_cache.path_digest(root / path, path)
        except (OSError, SciError):
            pass


def _environment(loaded, stat_cache: StatCache, gpu_nodes: list, executor: str, envs=None) -> dict[str, dict]:
    """The environment records (`envs`: the build's declared environments); under a cluster
    executor, a GPU fingerprint this machine cannot take says how to declare the cluster's GPUs
    instead (the driver keys every node)."""
    from sci.plan.pipeline import environment_records

    try:
        return environment_records(loaded, stat_cache, gpu_nodes, envs)
    except SciError as exc:
        from sci.build.gpu import GpuRequired  # here: only a failed fingerprint needs it
        from sci.build.resources import HARDWARE_FILE

        if executor == "local" or not isinstance(exc, GpuRequired):
            raise
        raise GpuRequired(exc.message, hint=f"GPU nodes are keyed on this machine: declare the GPUs of the "
                                             f"cluster's nodes in {HARDWARE_FILE} (docs/format.md)") from None


def _compare_fast(recorded_plan: list[dict], full: BuildReport) -> None:
    """SCI_SHORTCUTS=verify: the no-op shortcut said every node is cached as recorded; the full
    path must say the same of every node (status, key, outputs)."""
    from sci.build.decision import recorded

    diffs = []
    shortcut = {p["node"]: p for p in recorded_plan}
    for name in full.order:
        got, said = full.outcomes[name], shortcut.get(name)
        if said is None:
            diffs.append(f"{name}: the full path selects it, the no-op shortcut does not")
        elif got.status is not records.NodeStatus.CACHED or got.key != said["key"] or got.outputs != said["outputs"]:
            answer = recorded(name, said, "the no-op record")
            diffs.append(f"{name}: the shortcut ({answer.proof}) says {answer.verdict.value} with key "
                         f"{answer.key[:12]}; the full path says {got.status.value} with key {(got.key or '')[:12]}")
    for name in shortcut.keys() - set(full.order):
        diffs.append(f"{name}: the no-op shortcut selects it, the full path does not")
    if diffs:
        raise ShortcutMismatch("SCI_SHORTCUTS=verify: the no-op shortcut and the full path disagree: "
                               + " | ".join(diffs), hint="this is a bug in sci: please report it with these lines")


def _failure(report: BuildReport) -> StepFailed:
    outcomes = report.outcomes
    failed = [n for n in report.order if outcomes[n].status is records.NodeStatus.FAILED]
    # The first failure that was no cancellation by sci (a sibling it stopped after the cause)
    failed.sort(key=lambda n: (outcomes[n].error or "").startswith(records.CANCELLED))
    first = outcomes[failed[0]] if failed else None
    msg = (f"{len(failed)} node(s) failed; first: {failed[0]}: {first.error}" if failed
           else "some nodes did not run")
    err = StepFailed(msg, hint=f"see runs/{report.run_id}/logs.jsonl; fix the step and run sci build again")
    err.report = report  # type: ignore[attr-defined]
    return err


def _link_mode(asked: str | None) -> str:
    from sci.store.cas import MATERIALIZE_MODES

    mode = asked or os.environ.get("SCI_LINK", "copy")
    if mode not in MATERIALIZE_MODES:
        raise UserError(f"SCI_LINK={mode!r} is not a materialization mode",
                        hint=f"use one of {', '.join(MATERIALIZE_MODES)} (copy is the safe default)")
    return mode


def _metrics_of(graph, store):
    """`metrics_of(name, outcome)` for the manifest's plan entries: an executed node's from its
    fresh StepResult; a cached node's from its action result in the store, read only for nodes
    that can have metrics (a step with metrics files, or a Python step), so a build of command
    steps without metrics reads no action result for this."""
    nodes = graph.nodes

    def metrics_of(name: str, outcome) -> dict:
        result = outcome.result
        if result is not None:
            return result.get("metrics") or {}
        if outcome.key is None or outcome.status._value_ != "cached":
            return {}
        node = nodes[name]
        if not node.metrics and node.kind != "fn":
            return {}
        action = store.get_action(outcome.key)
        return (action or {}).get("metrics") or {}

    return metrics_of


def plan_entry(name: str, outcome, graph, metrics_of=None) -> dict:
    """A node's entry in the manifest's plan (SPEC §6); a `fast` node says so (SPEC §5), and
    a node with metrics carries them (SPEC §11; `metrics_of`: _metrics_of)."""
    entry = {"node": name, "step": graph.step_of[name], "key": outcome.key, "status": outcome.status.value,
             "outputs": outcome.outputs}
    if graph.nodes[name].determinism == "fast":
        entry["determinism"] = "fast"
    metrics = metrics_of(name, outcome) if metrics_of is not None else None
    if metrics:
        entry["metrics"] = metrics
    return entry


def _plan_entries(selected: list[str], decided: dict, graph, last, metrics_of=None) -> list[dict]:
    """The manifest's plan: a node this build decided gets a new entry. After a parameter edit
    (`last`: noop.LastBuild) the others keep theirs from the last record: the recorded plan,
    with the decided nodes' entries replaced in place."""
    if last is None:
        return [plan_entry(n, o, graph, metrics_of) for n in selected for o in [decided.get(n)] if o is not None]
    plan = list(last.doc["manifest"]["plan"])
    for n, o in decided.items():
        plan[last.position(n)] = plan_entry(n, o, graph, metrics_of)
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
    """Sandboxes live in ws.scratch_dir (outside the workspace: SCI_SCRATCH). At the start of a build (under the workspace lock, so no
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


def _forced(graph, force: list[str], root: Path) -> set[str]:
    """The nodes `--force` names: node names, step names (all their nodes) or output paths
    (the node that writes it, not the ones upstream of it)."""
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
        out.add(owner)
    return out
