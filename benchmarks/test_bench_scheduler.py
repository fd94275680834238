"""Scheduler dispatch: `Scheduler.run` over N no-op nodes with a fake executor, no processes.

The workload is gen_pipeline's sci workspace (10,000 nodes; quick: 1,000) as a chain and as a
fan-out, planned once. Each round starts cold: an empty store, no `.sci/state`, an empty stat
cache and no outputs in the workspace, so every node is keyed, misses the cache, is "run",
and completes through the scheduler's real path — step result record, action written to the
store, output materialized in the workspace, state updated, events written to a run log as
`sci build` writes them. The fake executor does on the calling thread what `run_task` does after
the process exits: it stores each declared output (a tiny, per-node file, so every node pays
one blob) and the empty stdout and stderr, and returns an already finished future. What is
timed is therefore sci's own per-node cost without the process spawn and the sandbox.
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
from sci import pipeline, records
from sci.executors import Task, TaskResult
from sci.hashing import StatCache
from sci.inputs import Resolver
from sci.resources import Pools
from sci.scheduler import Scheduler, Status
from sci.store import Store
from sci.workspace import Workspace

# The store and workspace on the benchmarks' temporary disk, and the fan-out once more on tmpfs:
# the difference is what creating files costs (0.1-0.4 ms each on this machine's ext4).
CASES = (("chain", "disk"), ("fanout", "disk"), ("fanout", "tmpfs"))
# Every round is already N nodes; three keep the full-size file near two minutes.
ROUNDS = 3


class FakeExecutor:
    """Satisfies `sci.executors.Executor`: each task "succeeds" at once, writing its outputs."""

    name = "fake"

    def __init__(self, store: Store):
        self.store = store
        self.empty = store.put_bytes(b"")  # the captured stdout and stderr of a silent step
        self.submitted = 0

    def submit(self, task: Task) -> "Future[TaskResult]":
        self.submitted += 1
        outputs = {}
        for name, rel in task.outs.items():
            data = f"{task.node} {name}\n".encode()  # distinct per node: one new blob each
            outputs[name] = {"path": rel, "type": "file", "digest": self.store.put_bytes(data),
                             "size": len(data)}
        stamp = records.utc_now()
        future: Future[TaskResult] = Future()
        future.set_result(TaskResult(node=task.node, ok=True, exit_status=0, outputs=outputs,
                                     stdout=self.empty, stderr=self.empty, start=stamp, end=stamp,
                                     host="bench"))
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
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no tmpfs at /dev/shm")
        base = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="sci-bench-"))
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

        resolver = Resolver(root, graph, stat_cache, store, env["cpu"]["digest"])
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
