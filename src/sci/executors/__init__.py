"""Executors: where a node's task runs. The scheduler only sees this protocol.

An executor takes a `Task` (plain data, picklable and JSON-able) and returns a future of a
`TaskResult`. The local executor (embedded default) runs tasks on a thread pool of
subprocesses; a distributed executor (Ray, SLURM) runs the same `run_task` function on a cluster.
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


def make_executor(name: str, *, jobs: int, nodes=(), pos=None, ws=None, yaml_bytes: bytes | None = None,
                  run_dir=None, **options) -> Executor:
    """The executor called `name`. `nodes` are the nodes it will be asked to run, so a
    distributed executor can reject, before anything runs, one no worker could satisfy.
    `options` come from the command line (`--address`, `--executor-option K=V`); the SLURM
    executor adds sci.yaml's `executors: {slurm: …}` (from `yaml_bytes`) and the workspace's
    config/executors.yaml under them. `run_dir` is runs/<id>/ of this build (made only if used)."""
    from sci.errors import UserError

    if name == "local":
        from sci.executors.local import LocalExecutor

        _no_options(name, options)
        return LocalExecutor(jobs=jobs)
    if name == "ray":
        from sci.executors.ray import RayExecutor

        _no_options(name, {k: v for k, v in options.items() if k != "address"})
        return RayExecutor(address=options.get("address"), nodes=nodes, pos=pos)
    if name == "slurm":
        from sci.executors.slurm import SlurmExecutor, settings

        if "address" in options:
            raise UserError("--address is for --executor ray", hint="drop --address with --executor slurm")
        return SlurmExecutor(settings=settings(ws, yaml_bytes, options), nodes=nodes, pos=pos,
                             workspace=ws.root if ws is not None else None, run_dir=run_dir)
    raise UserError(f"unknown executor {name!r}", hint="use --executor local, ray or slurm")


def _no_options(name: str, options: dict) -> None:
    if options:
        from sci.errors import UserError

        key = sorted(options)[0]
        what = "--address" if key == "address" else f"--executor-option {key}"
        raise UserError(f"{what} does not apply to --executor {name}",
                        hint="executor options are for --executor slurm (and --address for ray)")


__all__ = ["Executor", "Task", "TaskResult", "make_executor"]
