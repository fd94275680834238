"""The scheduler: one thread decides, executors only run.

Loop: key every ready node (its inputs' digests are known once its upstream finished); a key
the store already holds is a cache hit whose outputs are restored in the workspace; the rest
wait in priority order (graph order: longest path to a sink, then the graph's order, which is
declaration order among equals) until the CPU, RAM,
GPU, VRAM and `-j` pools admit them. A failed node stops its dependants only; without
keep-going nothing new starts after a failure and the running nodes are cancelled (their
process groups get SIGTERM), so a failed build ends promptly.
"""

from __future__ import annotations

import heapq
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sci.build import keys
from sci.build.decision import Decision, agree, decide, disagreement, recorded, store_again
from sci.envs.runtime import record_key
from sci.records import run as records
from sci.errors import DamagedObject, SciError, StoreError, WorkFailed
from sci.executors import Executor, Task, TaskResult
from sci.plan.graph import Graph
from sci.store.hashing import StatCache
from sci.build.inputs import Resolver
from sci.plan.nodes import Node
from sci.build.resources import Pools
from sci.values import NameIndex
from sci.store.cas import OutputRecord, Store
from sci.workspace import Workspace


if TYPE_CHECKING:
    from concurrent.futures import Future

    from sci.build.noop import LastBuild

Status = records.NodeStatus
Outcome = records.Outcome


class Interrupted(WorkFailed):
    exit_code = 130


Emit = Callable[..., None]


class Scheduler:
    """Decides every selected node of one build (see the module's docstring). A plain class,
    not a dataclass: making that costs ~0.7 ms of every build's start-up."""

    def __init__(self, *, root: Path, graph: Graph, resolver: Resolver, store: Store, state: records.State,
                 stat_cache: StatCache, executor: Executor, pools: Pools, emit: Emit,
                 environment: dict[str, dict], keep_going: bool = False, force: set[str] | None = None,
                 prepare: Callable[[Node, Any], tuple[dict, dict]] | None = None, link_mode: str = "copy",
                 python: str = "", remote: Any = None, requested: set[str] | None = None,
                 last: LastBuild | None = None, shortcuts: str = "on", display: Emit | None = None,
                 environments: Any = None):
        self.root, self.graph, self.resolver, self.store, self.state = root, graph, resolver, store, state
        self.stat_cache, self.executor, self.pools, self.emit = stat_cache, executor, pools, emit
        self.environment = environment  # envs.runtime.record_key(node) -> {"digest", "components"[, "name"]}
        self.environments = environments  # envs.runtime.Environments: declared ones, prepared on first run
        self._setups: dict[str, Any] = {}  # node -> its environment, prepared (envs.prepare.Prepared)
        self.keep_going = keep_going
        self.force = force if force is not None else set()
        self.prepare = prepare
        self.link_mode, self.python = link_mode, python
        self.remote = remote  # sci.remote.cache.RemoteCache, consulted on a local miss
        self.requested = requested if requested is not None else set()  # outputs that must land in the workspace
        self.outcomes: dict[str, Outcome] = {}  # the nodes this build decided
        # Remote hits whose bytes nobody needed yet: (key, action). Fetched when a node that
        # reads them must run; never, if every dependant is a hit too (build without the bytes).
        self.remote_hits: dict[str, tuple[str, dict]] = {}
        # After a parameter edit (build/noop.py `unchanged_nodes`), `last` says which nodes keep
        # their recorded plan entry for certain (`known`: taken as cached without being keyed)
        # and which steps read a changed parameter (`touched`). Any other node whose upstream
        # nodes all ended with exactly their recorded outputs has its recorded key too: it is
        # taken from the record (early cutoff from the record, see `_recorded_answer`).
        # `shortcuts` (SCI_SHORTCUTS): "on" uses these answers; "verify" computes them and the
        # full decision of every node and keeps each difference in `mismatches`; "off" skips them.
        self.last = last if shortcuts != "off" else None
        self.shortcuts = shortcuts
        use = self.last is not None and shortcuts == "on"
        self.known: dict[str, dict] = last.known if use else {}  # joined by the cutoff's nodes
        self.recorded: dict[str, dict] = last.entries if self.last is not None else {}
        self.touched: set[str] = last.touched if self.last is not None else set()
        if use:
            resolver.recorded = self.known
        self.all_outcomes = records.Outcomes(self.outcomes, self.known)
        self.display = display  # progress for the screen only (lines the log need not hold)
        self.mismatches: list[str] = []  # SCI_SHORTCUTS=verify: shortcut answers the full path contradicts
        self.as_recorded = 0  # how many nodes the cutoff took from the record
        # Action results wait here until the loop has nothing else to do (it is about to wait
        # for a node): writing them then keeps them off the path from one node's end to the next's.
        self._unwritten: list[tuple[str, dict]] = []
        self._write_error: str | None = None
        self._store_root, self._root_str = str(store.root), str(root)
        self._scratch_root = str(Workspace(root).scratch_dir)  # outside the workspace (docs/security.md)

    # -- carrying out a decision ----------------------------------------------------------
    def _take_stored(self, decision: Decision) -> bool:
        """Carry out a `cached` decision: restore the outputs it names (each object verified
        as it is copied) and store again what the store lost. False when that fails (a damaged
        or vanished object, a workspace copy that changed): the node must run."""
        try:
            if decision.restore:
                self.materialize(decision.outputs)
            if decision.lost and not store_again(self.store, self._root_str, decision):
                return False
        except DamagedObject as exc:  # dropped from the store: the node runs, never served
            self.emit("warning", decision.node, message=f"{exc.message}; {decision.node} runs again")
            return False
        except StoreError as exc:
            self.emit("store_damaged", decision.node, error=exc.one_line())
            return False
        return True

    def materialize(self, outputs: dict[str, dict]) -> None:
        """Make the workspace hold exactly these outputs (restoring deleted or edited ones)."""
        for rec in outputs.values():
            path = rec["path"]
            try:
                if self.stat_cache.path_digest(f"{self.root}/{path}", path) == rec["digest"]:
                    continue
            except OSError:
                pass
            ws = self.root / path
            out = OutputRecord.from_json(rec)
            self.store.materialize(out, ws, self.link_mode, within=self._root_str)
            self._remember(out, path)

    def _remember(self, out: OutputRecord, path: str) -> None:
        if self.link_mode != "copy":
            return
        if out.type == "file":
            self.stat_cache.remember(f"{self.root}/{path}", out.digest, path)
        else:
            for e in self.store.get_tree(out.digest):
                self.stat_cache.remember(f"{self.root}/{path}/{e.path}", e.digest, f"{path}/{e.path}")

    # -- tasks ---------------------------------------------------------------------------
    def make_task(self, node: Node, gpus: list[int], files: dict[str, str]) -> Task:
        ctx_deps: dict[str, Any] = {}
        for dname, paths in node.dep_paths.items():
            pattern = node.deps.get(dname, "")
            from sci.plan.nodes import GLOB_CHARS

            ctx_deps[dname] = paths if GLOB_CHARS.search(pattern) else paths[0]
        root = str(self.root)
        setup = self._setups.pop(node.name, None)
        if setup is None and node.environment is not None:  # _rebuild_now: not through the loop
            setup = self.environments.setup(node.environment, self.emit)
        return Task(
            node=node.name, kind=node.kind, cmd=node.cmd, fn=node.fn, workspace=root,
            store=self._store_root, scratch_root=self._scratch_root,
            sandbox=node.sandbox, deps=node.all_dep_paths(), code=self.resolver.code_files(node),
            outs=dict(node.outs), ctx_deps=ctx_deps, params=node.params, seed=node.seed,
            determinism=node.determinism, threads=max(1, int(node.resources["cpu"])),
            env={k: os.environ[k] for k in node.env if k in os.environ}, gpus=gpus, files=files,
            # The dossier is sci's own code: sci's interpreter. An fn step runs in the first
            # python3 on the step's PATH (run.step_python), or its environment's interpreter.
            python=self.python if node.kind == "dossier" else (setup.python or "" if setup else ""),
            materialize=self.link_mode, metrics=node.metrics, environ=setup.environ if setup else None,
            container=({"engine": setup.engine, "image": setup.image} if setup and setup.image else None),
        )

    # -- the loop ------------------------------------------------------------------------
    def run(self, selected: list[str]) -> records.Outcomes:
        """Decide every node of `selected` (in any order: ready nodes are taken by priority, then
        name; their upstream nodes are either in it or preset); the outcomes returned include
        the preset nodes."""
        self.store.start_pack()  # this build's action results: one pack, not a file each
        try:
            self._run(selected)
            return self.all_outcomes
        finally:
            try:
                self._write_actions()
            finally:
                self.store.finish_pack()
            if self._write_error is not None:
                raise StoreError(f"could not write an action result to the store: {self._write_error}",
                                 hint="check free space and permissions of the store; the next build re-runs that node")

    def _write_actions(self) -> None:
        """Write the action results of the nodes completed since last time. A failure is kept
        and fails the build at its end (the nodes whose result was not written re-run next time)."""
        pending, self._unwritten = self._unwritten, []
        for key, result in pending:
            try:
                self.store.put_action(key, result)
            except Exception as exc:  # noqa: BLE001 - reported as one StoreError by run()
                self._write_error = self._write_error or str(exc)

    def _run(self, selected: list[str]) -> None:
        g = self.graph
        sel = set(selected)
        waiting = {n: len([u for u in g.upstream[n] if u in sel]) for n in selected}
        rank = NameIndex(g.order).find  # ties: the graph's order (declaration order, plan/graph.py)
        ready = [(-g.priority[n], rank(n), n) for n in selected if waiting[n] == 0]
        heapq.heapify(ready)
        runnable: list[tuple[int, str]] = []  # heap of nodes keyed and waiting for resources
        pending: dict[str, tuple[str, dict, dict]] = {}  # name -> (key, components, files)
        running: dict[Future, tuple[str, list[int]]] = {}
        stopping = False
        cancelled_by: str | None = None  # the failed node whose failure cancelled the running ones

        def finish(name: str, outcome: Outcome) -> None:
            self.outcomes[name] = outcome
            if outcome.status in (Status.CACHED, Status.EXECUTED):
                self.resolver.outputs[name] = outcome.outputs
                release(name)
            else:
                self._skip_dependants(name, sel)

        def release(name: str) -> None:  # `name` is done: its dependants wait for one node less
            for m in g.downstream[name]:
                if m in sel and m not in self.outcomes:
                    waiting[m] -= 1
                    if waiting[m] == 0:
                        heapq.heappush(ready, (-g.priority[m], rank(m), m))

        known = self.known
        try:
            while True:
                while ready:
                    name = heapq.heappop(ready)[-1]
                    if name in self.outcomes:
                        continue
                    if stopping:
                        self.outcomes[name] = Outcome(name, Status.SKIPPED, error="not started after a failure")
                        continue
                    answer = self._recorded_answer(name) if self.recorded else None
                    if answer is not None and self.shortcuts == "on":  # cached, as recorded: joins `known`
                        known[name] = answer
                        self.as_recorded += 1
                        (self.display or self.emit)("node_cached", name, key=answer["key"])
                        release(name)
                        continue
                    node = g.nodes[name]
                    try:
                        extra, files = self.prepare(node, self.all_outcomes) if self.prepare else ({}, {})
                        comp = self.resolver.components(node, extra or None)
                    except SciError as exc:
                        self.emit("node_failed", name, error=exc.one_line())
                        finish(name, Outcome(name, Status.FAILED, error=exc.one_line()))
                        stopping = stopping or not self.keep_going
                        continue
                    key = keys.key_of(comp)
                    decision = decide(name, key, root=self._root_str, store=self.store, stat_cache=self.stat_cache,
                                      forced=name in self.force, drop_damaged=True)
                    for message in decision.damaged:  # dropped from the store: never served
                        self.emit("warning", name, message=f"{message}; {name} runs again")
                    if self.shortcuts == "verify" and self.last is not None:
                        self._verify(name, answer if answer is not None else self.last.known.get(name), decision)
                    outs = decision.outputs if decision.cached and self._take_stored(decision) else None
                    if outs is None and name not in self.force and self.remote is not None:
                        action = self.remote.lookup(key)
                        if action is not None:
                            lazy = name not in self.requested and all(
                                r["type"] == "file" for r in action["outputs"].values())
                            if lazy:
                                self.remote_hits[name] = (key, action)
                                self.emit("node_cached", name, key=key, remote=True)
                                finish(name, Outcome(name, Status.CACHED, key=key, outputs=action["outputs"],
                                                     result=action))
                                continue
                            if self.remote.fetch(key, action):
                                outs = action["outputs"]
                                self.materialize(outs)
                    if outs is not None:
                        self.state.put(name, key, outs)
                        self.emit("node_cached", name, key=key)
                        finish(name, Outcome(name, Status.CACHED, key=key, outputs=outs))
                        continue
                    if node.environment is not None:  # prepared once, before its first node runs
                        try:
                            self._setups[name] = self.environments.setup(node.environment, self.emit)
                        except SciError as exc:
                            self.emit("node_failed", name, error=exc.one_line())
                            finish(name, Outcome(name, Status.FAILED, key=key, error=exc.one_line()))
                            stopping = stopping or not self.keep_going
                            continue
                    pending[name] = (key, comp, files)
                    heapq.heappush(runnable, (-g.priority[name], rank(name), name))

                if not stopping:
                    kept = []
                    while runnable and self.pools.slots > 0:  # no free slot: nothing can start
                        item = heapq.heappop(runnable)
                        node = g.nodes[item[-1]]
                        if self._ensure_inputs(node):  # an input was rebuilt: key the node again
                            pending.pop(node.name, None)
                            heapq.heappush(ready, item)
                            continue
                        gpus = self.pools.try_acquire(node.resources)
                        if gpus is None:
                            kept.append(item)
                            continue
                        key, comp, files = pending[node.name]
                        self.emit("node_started", node.name, key=key, gpus=gpus)
                        task = self.make_task(node, gpus, files)
                        run_here = getattr(self.executor, "run_here", None)
                        if run_here is not None and not (running or runnable or kept or ready):
                            # all there is to do (a chain's every node): on this thread
                            fut = run_here(task, self._write_actions)
                        else:
                            fut = self.executor.submit(task)
                        running[fut] = (node.name, gpus)
                    for item in kept:
                        heapq.heappush(runnable, item)
                    if ready:
                        continue  # a node went back to be keyed again

                if not running:
                    for *_, name in runnable:
                        self.outcomes.setdefault(name, Outcome(name, Status.SKIPPED, error="not started after a failure"))
                    break
                self._write_actions()
                flush = getattr(self.executor, "flush", None)
                if flush is not None:  # a batching executor (SLURM) sends what this pass started, together
                    flush()
                done = [f for f in running if f.done()]  # a node run on this thread is done already
                if not done:
                    from concurrent.futures import FIRST_COMPLETED, wait

                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: running[f][0]):
                    name, gpus = running.pop(fut)
                    node = g.nodes[name]
                    self.pools.release(node.resources, gpus)
                    outcome = self._complete(node, pending.pop(name), fut, cancelled_by)
                    if outcome.status is Status.FAILED:
                        if not stopping and not self.keep_going:
                            self.executor.cancel_all()  # SPEC §9: without keep-going a failure cancels the rest
                            cancelled_by = name
                        stopping = stopping or not self.keep_going
                    finish(name, outcome)
        except KeyboardInterrupt:
            self.executor.cancel_all()
            for fut, (name, gpus) in list(running.items()):
                try:
                    fut.result()
                except Exception:  # noqa: BLE001 - we only drain here
                    pass
                self.outcomes[name] = Outcome(name, Status.FAILED, error="interrupted")
            raise Interrupted("interrupted; the store is consistent and the next build resumes") from None
        for name in selected:
            if name not in self.outcomes and name not in known:
                self.outcomes[name] = Outcome(name, Status.SKIPPED, error="an upstream node failed")

    def _recorded_answer(self, name: str) -> dict | None:
        """`name`'s plan entry in the last build's record when nothing it is a function of
        changed: its step reads no changed parameter, it is no dossier (whose input holds its
        upstream keys, not only their outputs) and every upstream node ended with its recorded
        outputs. Its files are as recorded too (the record's stat signatures were checked)."""
        entry = self.recorded.get(name)
        if entry is None or name in self.touched or name in self.force or name in self.graph.dossiers:
            return None
        known, presumed = self.known, self.last.known
        for u in self.graph.upstream[name]:
            if u in known or u in presumed:
                continue  # unchanged, with its recorded outputs
            done, was = self.outcomes.get(u), self.recorded.get(u)
            if done is None or was is None or done.outputs != was["outputs"]:
                return None
        return entry

    def _verify(self, name: str, answer: dict | None, decision: Decision) -> None:
        """SCI_SHORTCUTS=verify: the shortcut's answer (a recorded plan entry, or None when it
        would not have answered) must be the full decision's: cached, same key, same outputs."""
        if answer is None:
            return
        said = recorded(name, answer, "the last build's record, after a parameter edit")
        if not agree(said, decision):
            self.mismatches.append(disagreement(said, decision))

    def _ensure_inputs(self, node: Node) -> bool:
        """Bring the outputs of upstream remote hits into the store and workspace before `node`
        runs. An upstream whose remote copy fails verification is rebuilt here; True then,
        since `node`'s key may change."""
        rebuilt = False
        for u in self.graph.upstream[node.name]:
            hit = self.remote_hits.pop(u, None)
            if hit is None:
                continue
            key, action = hit
            if self.remote.fetch(key, action):
                self.materialize(action["outputs"])
                self.state.put(u, key, action["outputs"])
                continue
            self._rebuild_now(self.graph.nodes[u])
            rebuilt = True
        return rebuilt

    def _rebuild_now(self, node: Node) -> None:
        """Run `node` at once, outside the pools (a rare recovery path: its remote copy was bad)."""
        self._ensure_inputs(node)
        comp = self.resolver.components(node)
        key = keys.key_of(comp)
        self.emit("node_started", node.name, key=key, gpus=[])
        fut = self.executor.submit(self.make_task(node, [], {}))
        outcome = self._complete(node, (key, comp, {}), fut)
        self.outcomes[node.name] = outcome
        if outcome.status is Status.EXECUTED:
            self.resolver.outputs[node.name] = outcome.outputs

    def _skip_dependants(self, name: str, sel: set[str]) -> None:
        stack = list(self.graph.downstream[name])
        while stack:
            m = stack.pop()
            if m in sel and m not in self.outcomes:
                self.outcomes[m] = Outcome(m, Status.SKIPPED, error=f"upstream {name} failed")
                self.emit("node_skipped", m, because=name)
                stack.extend(self.graph.downstream[m])

    def _complete(self, node: Node, pending: tuple[str, dict, dict], fut: Future,
                  cancelled_by: str | None = None) -> Outcome:
        """The node's outcome from its finished task. `cancelled_by`: the failed node after
        which sci cancelled the running ones; a node then killed by a signal says so, so that
        no summary names it as the cause."""
        key, comp, _files = pending
        try:
            res: TaskResult = fut.result()
        except Exception as exc:  # noqa: BLE001 - an executor crash is this node's failure
            res = TaskResult(node=node.name, ok=False, exit_status=-1, error=f"executor error: {exc}")
        if not res.ok:
            if cancelled_by is not None and (res.error or "").startswith("killed by signal"):
                res.error = f"{records.CANCELLED} {cancelled_by} failed ({res.error})"
            self.emit("node_failed", node.name, key=key, error=res.error, stderr_tail=res.stderr_tail,
                      exit_status=res.exit_status, stdout=res.stdout or None, stderr=res.stderr or None)
            return Outcome(node.name, Status.FAILED, key=key, error=res.error, stderr_tail=res.stderr_tail,
                           duration_s=res.duration_s)
        env = self.environment[record_key(node)]
        result = records.step_result(
            key=key, node=node, components=comp, outputs=res.outputs, exit_status=res.exit_status,
            stdout=res.stdout, stderr=res.stderr, metrics=res.metrics, environment=env,
            volatile={"start": res.start, "end": res.end, "duration_s": round(res.duration_s, 6),
                      "host": res.host, "executor": self.executor.name},
        )
        # Outputs are in the store (the executor put them there): only now the action result.
        self._unwritten.append((key, result))
        if node.sandbox and not res.materialized:
            self.materialize(res.outputs)
        else:
            for rec in res.outputs.values():
                self._remember(OutputRecord.from_json(rec), rec["path"])
        self.state.put(node.name, key, res.outputs)
        self.emit("node_executed", node.name, key=key, duration_s=round(res.duration_s, 6))
        return Outcome(node.name, Status.EXECUTED, key=key, outputs=res.outputs, duration_s=res.duration_s,
                       result=result)
