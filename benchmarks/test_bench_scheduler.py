"""Scheduler dispatch: `Scheduler.run` over N no-op nodes with a fake executor, no processes.

The workload is gen_pipeline's sci workspace (10,000 nodes; quick: 1,000) as a chain and as a
fan-out, planned once. Each round starts cold: an empty store, no `.sci/state`, an empty stat
cache and no outputs in the workspace, so every node is keyed, misses the cache, is "run",
and completes through the scheduler's real path: step result record, action written to the
store, output in the workspace, state updated, events written to a run log as `sci build`
writes them. The fake executor does, on the calling thread, what `run_task` does once the
step's process exited: it moves each declared output (a tiny file, distinct per node, so every
node adds one blob) from its sandbox into the store, places it in the workspace if the task
asks, and stores the empty stdout and stderr. What is timed is therefore sci's own per-node
cost without the process spawn and the sandbox set-up.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from concurrent.futures import Future
from pathlib import Path

import pytest

from gen_pipeline import Workload, generate
from sci.plan import pipeline
from sci.records import run as records
from sci.executors import Task, TaskResult
from sci.store.hashing import StatCache
from sci.build.inputs import Resolver
from sci.build.resources import Pools
from sci.build.scheduler import Scheduler, Status
from sci.store.cas import Store
from sci.workspace import Workspace

# Both shapes with the workspace and store in memory (tmpfs): sci's own per-node cost. The
# fan-out once more on the benchmarks' temporary disk: the difference is what creating files
# costs there (three or four per node: sandbox output, blob, workspace copy, action record).
CASES = (("chain", "tmpfs"), ("fanout", "tmpfs"), ("fanout", "disk"))
TMPFS = "/dev/shm"
TMPFS_NEEDS = 1 << 30  # bytes free: every small file takes a page or more
# Every round is already N nodes; three keep the full-size file near two minutes.
ROUNDS = 3


class FakeExecutor:
    """Satisfies `sci.executors.Executor`: each task "succeeds" at once, with outputs.

    Like `run_task` after its process exited: each declared output is written in a sandbox
    box under the task's scratch root, moved into the store by `put_output(move=True)` and,
    when the task asks for it (`Task.materialize`), placed in the workspace.
    """

    name = "fake"

    def __init__(self, store: Store):
        self.store = store
        self.empty = store.put_bytes(b"")  # the captured stdout and stderr of a silent step
        self.submitted = 0
        self.dirs: set[str] = set()

    def submit(self, task: Task) -> "Future[TaskResult]":
        self.submitted += 1
        box = f"{task.scratch_root}/n-fake"
        mode = getattr(task, "materialize", None) if task.sandbox else None
        outputs = {}
        for name, rel in task.outs.items():
            path = f"{box}/{rel}"
            parent = os.path.dirname(path)
            if parent not in self.dirs:
                os.makedirs(parent, exist_ok=True)
                self.dirs.add(parent)
            with open(path, "w") as fh:
                fh.write(f"{task.node} {name}\n")  # distinct per node: one new blob each
            rec = self.store.put_output(path, move=True)
            outputs[name] = {"path": rel, **rec.to_json()}
            if mode:
                self.store.materialize(rec, f"{task.workspace}/{rel}", mode)
        stamp = records.utc_now()
        result = TaskResult(node=task.node, ok=True, exit_status=0, outputs=outputs, stdout=self.empty,
                            stderr=self.empty, start=stamp, end=stamp, host="bench")
        result.materialized = bool(mode)
        future: Future[TaskResult] = Future()
        future.set_result(result)
        return future

    def cancel_all(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(scope="module", params=CASES, ids=[f"{shape}-{fs}" for shape, fs in CASES])
def planned(request, tmp_path_factory, sizes):
    """(workload, loaded pipeline, environment records, a folder for the rounds' stores)."""
    shape, fs = request.param
    if fs == "tmpfs":
        if not os.path.isdir(TMPFS) or shutil.disk_usage(TMPFS).free < TMPFS_NEEDS:
            pytest.skip(f"needs a tmpfs at {TMPFS} with 1 GiB free")
        base = Path(tempfile.mkdtemp(dir=TMPFS, prefix="sci-bench-"))
    else:
        base = tmp_path_factory.mktemp(f"sched-{shape}")
    w = Workload(shape, sizes.plan_nodes)
    ws = Workspace(generate("sci", w, base / "ws"))
    loaded = pipeline.load(ws)
    env = pipeline.environment_records(loaded, StatCache(), [])
    (base / "rounds").mkdir()
    yield w, loaded, env, base / "rounds"
    shutil.rmtree(base)


def scheduler_factory(planned):
    """A `setup` for benchmark.pedantic (a Scheduler over a fresh store, state, stat cache and
    outputs each round) and the run logs it opened, the last of which the caller closes."""
    _, loaded, env, scratch = planned
    root, graph = loaded.ws.root, loaded.graph
    rounds = itertools.count()
    logs: list[records.RunLog] = []

    def setup():
        for log in logs:
            log.close()
        for old in scratch.iterdir():
            shutil.rmtree(old)  # the previous round's store and run log
        shutil.rmtree(root / "out")
        (root / "out").mkdir()
        here = scratch / f"round-{next(rounds)}"
        store = Store(here / "cas")
        stat_cache = StatCache()
        log = records.RunLog(here / "run")
        logs.append(log)

        def emit(event, node=None, **data):
            log.write(event, node, level="error" if event == "node_failed" else "info", **data)

        resolver = Resolver(root, graph, stat_cache, store, env)
        sched = Scheduler(root=root, graph=graph, resolver=resolver, store=store,
                          state=records.State(here / "state.json"), stat_cache=stat_cache,
                          executor=FakeExecutor(store), pools=Pools(loaded.hardware, loaded.hardware.cpu),
                          emit=emit, environment=env)
        return (sched, list(graph.order)), {}

    return setup, logs


def run(sched: Scheduler, selected: list[str]) -> Scheduler:
    sched.run(selected)
    return sched


@pytest.mark.benchmark(group="scheduler: fake executor")
def test_scheduler_dispatch(benchmark, planned):
    w, loaded, *_ = planned
    setup, logs = scheduler_factory(planned)
    sched = benchmark.pedantic(run, setup=setup, rounds=ROUNDS)
    logs[-1].close()
    outcomes = sched.outcomes
    assert len(outcomes) == w.n == sched.executor.submitted
    assert {o.status for o in outcomes.values()} == {Status.EXECUTED}
    keys = [outcomes[w.name(i)].key for i in range(w.n)]
    assert len(set(keys)) == w.n and all(sched.store.has_action(k) for k in keys)
    root = loaded.ws.root
    assert (root / w.out(w.n - 1)).read_text() == f"{w.name(w.n - 1)} {w.out(w.n - 1)}\n"
    assert sched.state.get(w.name(0))["key"] == keys[0]
