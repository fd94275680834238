"""Task and TaskResult: the plain data that crosses the scheduler ↔ executor seam."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Task:
    """Everything needed to run one node anywhere that can reach the workspace and the store.

    Paths in `deps`, `code` and `outs` are workspace-relative POSIX paths. `ctx_deps` is the
    name → path(s) view a Python step gets. `files` are extra files (relative path → text)
    written into the sandbox before the step starts (the dossier's input document).
    """

    node: str
    kind: str
    cmd: str | None
    fn: str | None
    workspace: str
    store: str
    scratch_root: str
    sandbox: bool
    deps: list[str]
    code: list[str]
    outs: dict[str, str]
    ctx_deps: dict[str, Any]
    params: dict[str, Any]
    seed: int
    determinism: str
    threads: int
    env: dict[str, str]
    gpus: list[int] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    python: str = ""
    # How to place a sandboxed step's outputs in the workspace once stored (a store
    # materialization mode), or None to leave that to the scheduler. Doing it in the worker
    # spreads the file creation over the workers instead of the scheduler's one thread.
    materialize: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaskResult:
    node: str
    ok: bool
    exit_status: int
    outputs: dict[str, dict] = field(default_factory=dict)  # name -> {path, type, digest, size}
    stdout: str = ""
    stderr: str = ""
    start: str = ""
    end: str = ""
    duration_s: float = 0.0
    error: str | None = None
    stderr_tail: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    host: str = ""
    materialized: bool = False  # the outputs are in the workspace too (Task.materialize)


class Finished:
    """A future that is already done: what `run_here` returns (the task ran on the caller's
    thread), without importing concurrent.futures for it. Has what the scheduler asks of one."""

    __slots__ = ("_result", "_error")

    def __init__(self, result: TaskResult | None = None, error: BaseException | None = None):
        self._result, self._error = result, error

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> TaskResult:
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]
