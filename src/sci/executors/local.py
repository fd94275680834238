"""The local executor: a thread pool whose threads each run one node's subprocess."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from sci.executors.run import run_task_then_tidy
from sci.executors.task import Task, TaskResult


class LocalExecutor:
    name = "local"

    def __init__(self, jobs: int):
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="sci-node")
        self._procs: dict[str, int] = {}
        self._pending: set[Future] = set()  # submitted, not yet taken by a thread
        self._lock = threading.Lock()

    def _track(self, node: str, pid: int | None) -> None:
        with self._lock:
            if pid is None:
                self._procs.pop(node, None)
            else:
                self._procs[node] = pid

    def submit(self, task: Task) -> "Future[TaskResult]":
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
            result, tidy = run_task_then_tidy(task, self._track)
        except BaseException as exc:  # noqa: BLE001 - the scheduler turns it into a failed node
            fut.set_exception(exc)
            return
        fut.set_result(result)
        tidy()

    def cancel_all(self) -> None:
        """Stop every running node: SIGTERM to each process group (steps run in their own)."""
        with self._lock:
            pids = list(self._procs.values())
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            pending, self._pending = self._pending, set()
        for fut in pending:  # never started: nobody may wait on them for ever
            fut.cancel()
