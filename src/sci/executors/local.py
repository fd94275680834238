"""The local executor: a thread pool whose threads each run one node's subprocess."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from sci.executors.run import run_task
from sci.executors.task import Task, TaskResult


class LocalExecutor:
    name = "local"

    def __init__(self, jobs: int):
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="sci-node")
        self._procs: dict[str, int] = {}
        self._lock = threading.Lock()

    def _track(self, node: str, pid: int | None) -> None:
        with self._lock:
            if pid is None:
                self._procs.pop(node, None)
            else:
                self._procs[node] = pid

    def submit(self, task: Task) -> "Future[TaskResult]":
        return self._pool.submit(run_task, task, self._track)

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
