"""Executors: where a node's task runs. The scheduler only sees this protocol.

An executor takes a `Task` (plain data, picklable and JSON-able) and returns a future of a
`TaskResult`. The local executor (embedded default) runs tasks on a thread pool of
subprocesses; a distributed executor (Ray) runs the same `run_task` function on a cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sci.executors.task import Task, TaskResult

if TYPE_CHECKING:  # concurrent.futures (and the logging it imports) loads only with a thread pool
    from concurrent.futures import Future


class Executor(Protocol):
    name: str

    def submit(self, task: Task) -> "Future[TaskResult]": ...

    def cancel_all(self) -> None: ...

    def close(self) -> None: ...


def make_executor(name: str, *, jobs: int, nodes=(), pos=None, **options) -> Executor:
    """The executor called `name`. `nodes` are the nodes it will be asked to run, so a
    distributed executor can reject, before anything runs, one no worker could satisfy."""
    if name == "local":
        from sci.executors.local import LocalExecutor

        return LocalExecutor(jobs=jobs)
    if name == "ray":
        from sci.executors.ray import RayExecutor

        return RayExecutor(address=options.get("address"), nodes=nodes, pos=pos)
    from sci.errors import UserError

    raise UserError(f"unknown executor {name!r}", hint="use --executor local or --executor ray")


__all__ = ["Executor", "Task", "TaskResult", "make_executor"]
