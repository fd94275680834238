"""Task and TaskResult: the plain data that crosses the scheduler ↔ executor seam."""

from __future__ import annotations

from typing import Any


def identity() -> dict[str, str]:
    """What a worker on another machine must match for its results to belong under the keys
    the driver computed: sci's version and Python's."""
    import sys

    from sci import __version__

    return {"sci": __version__, "python": "%d.%d.%d" % sys.version_info[:3]}


class Task:
    """Everything needed to run one node anywhere that can reach the workspace and the store.

    Paths in `deps`, `code` and `outs` are workspace-relative POSIX paths. `ctx_deps` is the
    name → path(s) view a Python step gets. `files` are extra files (relative path → text)
    written into the sandbox before the step starts (the dossier's input document).
    `materialize`: how to place a sandboxed step's outputs in the workspace once stored (a
    store materialization mode), or None to leave that to the scheduler; doing it in the
    worker spreads the file creation over the workers instead of the scheduler's one thread.
    `metrics`: the outputs (name -> path, each in `outs` too) whose numbers are read as the
    step's metrics once it succeeded (records/metrics.py).
    `python`: the interpreter of a Python step ("" for the first python3 on the step's PATH);
    `environ`: the variables its software environment sets (PATH, VIRTUAL_ENV), if any;
    `container`: {"engine", "image"} when it runs in a container (envs/prepare.py).

    A plain class, not a dataclass: making a dataclass costs ~0.5 ms of every build's start-up.
    """

    __slots__ = ("node", "kind", "cmd", "fn", "workspace", "store", "scratch_root", "sandbox", "deps", "code",
                 "outs", "ctx_deps", "params", "seed", "determinism", "threads", "env", "gpus", "files", "python",
                 "materialize", "metrics", "environ", "container")

    def __init__(self, *, node: str, kind: str, cmd: str | None, fn: str | None, workspace: str, store: str,
                 scratch_root: str, sandbox: bool, deps: list[str], code: list[str], outs: dict[str, str],
                 ctx_deps: dict[str, Any], params: dict[str, Any], seed: int, determinism: str, threads: int,
                 env: dict[str, str], gpus: list[int] | None = None, files: dict[str, str] | None = None,
                 python: str = "", materialize: str | None = None, metrics: dict[str, str] | None = None,
                 environ: dict[str, str] | None = None, container: dict[str, str] | None = None):
        self.node, self.kind, self.cmd, self.fn = node, kind, cmd, fn
        self.workspace, self.store, self.scratch_root, self.sandbox = workspace, store, scratch_root, sandbox
        self.deps, self.code, self.outs, self.ctx_deps = deps, code, outs, ctx_deps
        self.params, self.seed, self.determinism, self.threads, self.env = params, seed, determinism, threads, env
        self.gpus = gpus if gpus is not None else []
        self.files = files if files is not None else {}
        self.python, self.materialize = python, materialize
        self.metrics = metrics if metrics is not None else {}
        self.environ = environ if environ is not None else {}
        self.container = container

    def __repr__(self) -> str:
        return f"Task(node={self.node!r}, kind={self.kind!r})"


class TaskResult:
    """What running a Task gave: its outputs (name -> {path, type, digest, size}) and logs."""

    __slots__ = ("node", "ok", "exit_status", "outputs", "stdout", "stderr", "start", "end", "duration_s", "error",
                 "stderr_tail", "metrics", "host", "materialized")

    def __init__(self, node: str, ok: bool, exit_status: int, outputs: dict[str, dict] | None = None,
                 stdout: str = "", stderr: str = "", start: str = "", end: str = "", duration_s: float = 0.0,
                 error: str | None = None, stderr_tail: str = "", metrics: dict[str, Any] | None = None,
                 host: str = "", materialized: bool = False):
        self.node, self.ok, self.exit_status = node, ok, exit_status
        self.outputs = outputs if outputs is not None else {}
        self.stdout, self.stderr, self.start, self.end = stdout, stderr, start, end
        self.duration_s, self.error, self.stderr_tail = duration_s, error, stderr_tail
        self.metrics = metrics if metrics is not None else {}
        self.host = host
        self.materialized = materialized  # the outputs are in the workspace too (Task.materialize)

    def __repr__(self) -> str:
        return f"TaskResult(node={self.node!r}, ok={self.ok!r}, exit_status={self.exit_status!r})"


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
