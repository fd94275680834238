"""The local executor: a thread pool whose threads each run one node's subprocess."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Callable

from sci.executors.run import forget_stores, run_task_then_tidy
from sci.executors.task import Finished, Task, TaskResult

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor


class LocalExecutor:
    name = "local"

    def __init__(self, jobs: int):
        forget_stores()  # what an earlier build in this process saw of the store may be stale
        self._jobs = max(1, jobs)
        # Made at the first `submit`: a build whose nodes all run on the scheduler's thread
        # (`run_here`: a parameter edit, a chain) never imports concurrent.futures (~5 ms).
        self._pool: ThreadPoolExecutor | None = None
        self._procs: dict[str, int] = {}
        self._signalled: set[str] = set()  # nodes whose step `cancel_all` told to stop
        self._pending: set[Future] = set()  # submitted, not yet taken by a thread
        self._lock = threading.Lock()
        self._tidy_here: Callable[[], None] | None = None  # the last `run_here` task's box

    def _track(self, node: str, pid: int | None) -> None:
        with self._lock:
            if pid is None:
                self._procs.pop(node, None)
            else:
                self._procs[node] = pid

    def submit(self, task: Task) -> "Future[TaskResult]":
        from concurrent.futures import Future, ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._jobs, thread_name_prefix="sci-node")
        fut: Future = Future()
        with self._lock:
            self._pending.add(fut)
        self._pool.submit(self._run, task, fut)
        return fut

    def _run(self, task: Task, fut: Future) -> None:
        """Report the result as soon as it is known, then tidy the box (off the critical path:
        in a chain the next node is already being dispatched)."""
        with self._lock:
            self._pending.discard(fut)
        if not fut.set_running_or_notify_cancel():
            return
        try:
            result, tidy = run_task_then_tidy(task, self._track, self._stopped_by(task.node))
        except BaseException as exc:  # noqa: BLE001 - the scheduler turns it into a failed node
            fut.set_exception(exc)
            return
        fut.set_result(result)
        tidy()

    def run_here(self, task: Task, while_running: Callable[[], None] | None = None) -> Finished:
        """Run `task` on the calling thread; its future comes back finished. The scheduler does
        this when the task is all there is to do (nothing running, nothing else waiting), as
        for every node of a chain: it saves the two thread hand-offs of `submit` (~0.1 ms a
        node here). `while_running` is called once the step's process has started, so the
        caller's bookkeeping overlaps the step instead of following it. The box is tidied
        before the next task on this thread, not on the way to the result."""
        self.tidy_here()
        started: list[int] = []

        def track(node: str, pid: int | None) -> None:
            self._track(node, pid)
            if pid is not None:
                started.append(pid)
                if while_running is not None:
                    while_running()

        try:
            result, self._tidy_here = run_task_then_tidy(task, track, self._stopped_by(task.node))
        except KeyboardInterrupt:  # the step runs in its own session: Ctrl-C did not reach it
            _terminate(started)
            raise
        except Exception as exc:  # noqa: BLE001 - the scheduler turns it into a failed node
            return Finished(error=exc)
        return Finished(result)

    def tidy_here(self) -> None:
        tidy, self._tidy_here = self._tidy_here, None
        if tidy is not None:
            tidy()

    def _stopped_by(self, node: str):
        """What `run_task` asks once the node's step ended: a step told to stop is no result,
        even if it traps the signal and exits 0."""
        def why() -> str | None:
            with self._lock:
                told = node in self._signalled
            return "killed by signal 15 (SIGTERM) while the step ran" if told else None
        return why

    def cancel_all(self) -> None:
        """Stop every running node: SIGTERM to each process group (steps run in their own)."""
        with self._lock:
            pids = list(self._procs.values())
            self._signalled.update(self._procs)
        _terminate(pids)

    def close(self) -> None:
        self.tidy_here()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            pending, self._pending = self._pending, set()
        for fut in pending:  # never started: nobody may wait on them for ever
            fut.cancel()


def _terminate(pids) -> None:
    """SIGTERM to each process group (a step's process leads its own session)."""
    import signal  # only when cancelling: ~0.6 ms of every build's start-up otherwise

    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
