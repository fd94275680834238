"""The Ray executor: run each node's task on an existing Ray cluster; the driver keeps every decision.

What crosses the wire: the driver sends a `Task` (paths, the command or function name, params,
seed, declared environment variables) and gets back a `TaskResult` (digests, exit status,
times, host). Step inputs and outputs never travel through Ray: a worker reads the inputs from
the workspace and writes the outputs into the store *by path*, so the workspace and the store
must be on a filesystem every Ray node mounts at the same path (docs/ray.md). Keys, records and
dossiers are made by the driver from the same `TaskResult` a local build gets, so a Ray build
is identical, digest for digest, to a local one; only `volatile` (host, executor) differs.

`ray` is an optional extra and is imported only inside functions: nothing on sci's start-up path
pays for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Iterable

from sci.errors import ResourceError, UserError
from sci.executors.task import Task, TaskResult, identity
from sci.values import Value

if TYPE_CHECKING:
    from sci.build.resources import Hardware

NAMESPACE = "sci"
ADDRESS_ENV = "RAY_ADDRESS"
DEFAULT_GCS_PORT = 6379
# How long to wait for the GCS port to answer before saying the address is wrong.
PROBE_TIMEOUT_S = 5.0
GIB = 2**30
# The seconds a step's process group gets between SIGTERM and SIGKILL once its worker is gone.
KILL_GRACE_S = 2


# -- the cluster's shape -------------------------------------------------------------------
class ClusterNode(Value):
    """One alive Ray node as the executor sees it: what a single task could get there at most."""

    __slots__ = _FIELDS = ("name", "cpu", "gpu", "mem_bytes")

    def __init__(self, name: str, cpu: float, gpu: float, mem_bytes: float):
        self.name, self.cpu, self.gpu, self.mem_bytes = name, cpu, gpu, mem_bytes

    def describe(self) -> str:
        return f"{self.name} ({_num(self.cpu)} CPU, {_num(self.gpu)} GPU, {self.mem_bytes / GIB:.1f} GiB memory)"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def cluster_nodes(raw_nodes: Iterable[dict]) -> list[ClusterNode]:
    """The alive nodes of `ray.nodes()`, with the resources sci asks for (CPU, GPU, memory)."""
    out = []
    for n in raw_nodes:
        if not n.get("Alive", n.get("alive", False)):
            continue
        res = n.get("Resources") or {}
        name = n.get("NodeName") or n.get("NodeManagerAddress") or str(n.get("NodeID", "?"))[:12]
        out.append(ClusterNode(name=str(name), cpu=float(res.get("CPU", 0)), gpu=float(res.get("GPU", 0)),
                               mem_bytes=float(res.get("memory", 0))))
    return out


def ray_options(resources: dict) -> dict[str, Any]:
    """Ray task options for a node's `resources` (sci's cpu / gpu / mem_gb). Ray has no notion
    of VRAM, so `vram_gb` stays a driver-side check only (docs/ray.md)."""
    opts: dict[str, Any] = {"num_cpus": resources.get("cpu", 1) or 0, "num_gpus": resources.get("gpu", 0) or 0,
                            "max_retries": 0}
    mem = resources.get("mem_gb", 0) or 0
    if mem > 0:
        opts["memory"] = int(mem * GIB)
    return opts


def _fits(opts: dict, c: ClusterNode) -> bool:
    return opts["num_cpus"] <= c.cpu and opts["num_gpus"] <= c.gpu and opts.get("memory", 0) <= c.mem_bytes


def check_cluster_fits(nodes: Iterable, cluster: list[ClusterNode], address: str, pos=None) -> None:
    """Reject, before anything runs, a node that no single cluster node can satisfy (exit 2).

    Ray would otherwise queue such a task forever (or until the autoscaler gives up). The
    message names the node, what it asks, and the largest cluster node — by CPU, then GPU, then
    memory, the order in which people size clusters.
    """
    if not cluster:
        raise ResourceError(f"the Ray cluster at {address} has no alive node",
                            hint="start the cluster's nodes (`ray start`), then run sci build again")
    largest = max(cluster, key=lambda c: (c.cpu, c.gpu, c.mem_bytes, c.name))
    for n in nodes:
        opts = ray_options(n.resources)
        if any(_fits(opts, c) for c in cluster):
            continue
        asks = [f"{_num(opts['num_cpus'])} CPU"]
        if opts["num_gpus"]:
            asks.append(f"{_num(opts['num_gpus'])} GPU")
        if opts.get("memory"):
            asks.append(f"{n.resources['mem_gb']:g} GB memory")
        loc = pos.at(n.origin + ("resources",)) if pos is not None and getattr(n, "origin", None) else None
        raise ResourceError(
            f"{n.name} asks for {', '.join(asks)} but no node of the Ray cluster at {address} has that; "
            f"the largest is {largest.describe()}",
            location=loc, hint="lower the step's resources or add a larger node to the cluster")


# -- connecting ----------------------------------------------------------------------------
def resolve_address(address: str | None) -> str:
    """`--address`, else RAY_ADDRESS; never a silently started local cluster."""
    addr = (address or os.environ.get(ADDRESS_ENV, "")).strip()
    if not addr:
        raise UserError("--executor ray needs the address of a running Ray cluster",
                        hint="pass --address HOST:PORT (the head's GCS port, 6379 by default) or set RAY_ADDRESS")
    if addr.startswith("ray://"):
        raise UserError(f"{addr} is a Ray Client address; sci connects to the cluster's GCS (HOST:PORT)",
                        hint="run sci on a machine of the cluster (or one that reaches its GCS and shares "
                             "its filesystem) and pass --address HOST:PORT")
    return addr


def _require_ray() -> None:
    """Say clearly that the extra is missing, before anything slow happens."""
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UserError("--executor ray needs the ray package, which is not installed",
                        hint="uv sync --extra ray (or pip install 'sci[ray]')")


def _probe(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast on an address nothing listens on: `ray.init` retries an unreachable GCS for
    about a minute and then kills its own process, without a word sci could report."""
    import socket

    if address == "auto":
        return  # Ray looks the local cluster up itself and says clearly when there is none
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        host, port = address, str(DEFAULT_GCS_PORT)
    host = host.strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}",
                        hint="check --address / RAY_ADDRESS (the head's GCS HOST:PORT); "
                             "start a cluster with `ray start --head`") from None


def _connect(address: str):
    """The `ray` module, connected to the cluster at `address` (importing ray takes a second:
    the address is checked first, so a typo fails at once)."""
    import logging

    _require_ray()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray  # one connection per process; a second executor (e.g. repro-check) reuses it
    _probe(address)
    import ray

    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot connect to the Ray cluster at {address}: {reason}",
                        hint="run sci on a node of the cluster (Ray needs a raylet beside its driver: "
                             "`ray start --address=HEAD:PORT --num-cpus=0` on this machine) and check the address") from None
    return ray


# -- the executor --------------------------------------------------------------------------
class RayExecutor:
    """Runs `run_task` as Ray tasks; the driver keeps keys, pools, records and materializing.

    `nodes` are the nodes this build may ask to run: their resources become the Ray options of
    their tasks (a Task carries no resources), and are checked against the cluster at start.
    How many tasks run at once is the driver's business (`-j` and the scheduler's pools); Ray
    only places each task on a node that has its resources free.
    Futures map every Ray failure (a cancelled task, a dead worker) to a failed `TaskResult`, so
    the scheduler sees one kind of failure whatever the executor.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, nodes: Iterable = (), pos=None):
        self.address = resolve_address(address)
        self._ray = _connect(self.address)
        nodes = list(nodes)
        self.cluster = cluster_nodes(self._ray.nodes())
        check_cluster_fits(nodes, self.cluster, self.address, pos)
        self._options = {n.name: ray_options(n.resources) for n in nodes}
        self._remote = self._ray.remote(_run_on_worker)
        self._expect = _driver_identity()
        self._running: dict[Any, Future] = {}  # ObjectRef -> the future handed to the scheduler
        self._cancelled: set[Any] = set()
        self._lock = threading.Lock()

    def hardware(self) -> "Hardware":
        """The cluster's totals as a `Hardware`, for pools sized to the cluster, not the driver."""
        from sci.build.resources import Gpu, Hardware

        return Hardware(cpu=int(sum(c.cpu for c in self.cluster)),
                        mem_gb=round(sum(c.mem_bytes for c in self.cluster) / GIB, 2),
                        gpus=[Gpu(i, 0.0) for i in range(int(sum(c.gpu for c in self.cluster)))],
                        source=f"ray cluster {self.address}")

    def submit(self, task: Task) -> "Future[TaskResult]":
        opts = self._options.get(task.node) or {"num_cpus": task.threads, "num_gpus": len(task.gpus), "max_retries": 0}
        ref = self._remote.options(**opts).remote(task, self._expect)
        out: Future = Future()
        out.set_running_or_notify_cancel()
        with self._lock:
            self._running[ref] = out
        ref.future().add_done_callback(lambda f: self._settle(ref, task.node, f))
        return out

    def _settle(self, ref, node: str, ray_future: Future) -> None:
        with self._lock:
            out = self._running.pop(ref, None)
            cancelled = ref in self._cancelled
            self._cancelled.discard(ref)
        if out is None:
            return
        try:
            result: TaskResult = ray_future.result()
        except Exception as exc:  # noqa: BLE001 - any Ray failure is this node's failure
            result = TaskResult(node=node, ok=False, exit_status=-1, error=_failure_text(exc, cancelled))
        else:
            if cancelled and not result.ok:
                # Ray may kill the step's process before the worker, so the task "returns" a
                # step killed by a signal: the real cause is the cancellation.
                result.error = _failure_text(None, True)
        out.set_result(result)

    def cancel_all(self) -> None:
        """Stop every running task: Ray kills its worker, and the worker's guard stops the step."""
        with self._lock:
            refs = list(self._running)
            self._cancelled.update(refs)
        for ref in refs:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or the cluster is gone: nothing to stop
                pass

    def close(self) -> None:
        """Disconnect this driver; the cluster keeps running (sci did not start it)."""
        if self._ray.is_initialized():
            self._ray.shutdown()


def _failure_text(exc: BaseException | None, cancelled: bool) -> str:
    if cancelled or exc is None:
        return "cancelled: the build stopped (a node failed without --keep-going, or it was interrupted)"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"Ray could not run the task ({type(exc).__name__}): {first}"


_driver_identity = identity  # what a worker must match (sci.executors.task)


# -- on the worker -------------------------------------------------------------------------
_GUARD = r"""
exec 3<&0 </dev/null
(
  if IFS= read -r line <&3 && [ "$line" = done ]; then exit 0; fi
  kill -TERM -"$1" 2>/dev/null || exit 0
  sleep "$2"
  kill -KILL -"$1" 2>/dev/null
  exit 0
) &
"""


class _Guard:
    """Stops a step's process group if the worker running it dies first.

    A step runs in its own session (so the local executor can signal its whole group), which
    also puts it outside the worker's process group that Ray kills on `cancel(force=True)`.
    So, as the step starts, a tiny detached shell is handed the read end of a pipe: the worker
    writes `done` when the step ended by itself; if the worker is killed, the pipe closes
    without it and the shell sends SIGTERM, then SIGKILL, to the step's group.
    """

    def __init__(self) -> None:
        self._pipe = None

    def track(self, node: str, pid: int | None) -> None:
        if pid is None or self._pipe is not None:
            return
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", _GUARD, "sci-guard", str(pid), str(KILL_GRACE_S)],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
        except OSError:
            return  # no guard: the step still runs; only a killed worker could orphan it
        self._pipe = proc.stdin
        proc.wait()  # the outer shell exits at once; its detached child holds the pipe

    def release(self, step_ended_by_itself: bool) -> None:
        """Close the pipe; `done` first unless the step died of a signal (then its group goes too)."""
        if self._pipe is None:
            return
        try:
            if step_ended_by_itself:
                self._pipe.write(b"done\n")
            self._pipe.close()
        except OSError:
            pass
        self._pipe = None


def _unreachable(task: Task) -> str | None:
    import socket

    for what, path in (("workspace", task.workspace), ("store", task.store)):
        if not os.path.isdir(path):
            return (f"the {what} {path} is not reachable on Ray node {socket.gethostname()}: --executor ray needs "
                    f"the workspace and the store on a filesystem every Ray node mounts at the same path")
    if not os.path.isfile(os.path.join(task.store, "FORMAT")):
        return f"{task.store} on Ray node {socket.gethostname()} is not a sci store"
    return None


def _mismatch(expect: dict[str, str]) -> str | None:
    import socket

    here = _driver_identity()
    diff = [f"{k} {here[k]} (driver: {expect[k]})" for k in sorted(expect) if here.get(k) != expect[k]]
    if diff:
        return (f"Ray node {socket.gethostname()} runs {', '.join(diff)}: results would not match the keys "
                f"the driver computed; run the cluster in the driver's environment")
    return None


def _worker_gpus() -> list:
    import ray

    ids = []
    for g in ray.get_gpu_ids():
        s = str(g)
        ids.append(int(s) if s.isdigit() else s)
    return ids


def _run_on_worker(task: Task, expect: dict[str, str]) -> TaskResult:
    """The body of every Ray task: check the worker can serve the task, then `run_task`.

    The task's GPUs are those Ray assigned on this worker, not the driver's pool ids (the
    driver's ids mean nothing on another machine); they reach only the step's environment,
    never a key or a record.
    """
    from sci.executors.run import run_task

    problem = _mismatch(expect) or _unreachable(task)
    if problem:
        import socket

        return TaskResult(node=task.node, ok=False, exit_status=-1, error=problem, host=socket.gethostname())
    task.gpus = _worker_gpus()  # this worker's copy of the task: changed in place
    if task.python and not os.access(task.python, os.X_OK):
        task.python = sys.executable  # the driver's interpreter path does not exist here
    guard = _Guard()
    try:
        result = run_task(task, guard.track)
    except BaseException:
        guard.release(step_ended_by_itself=False)
        raise
    guard.release(step_ended_by_itself=result.exit_status >= 0)
    return result


__all__ = ["RayExecutor", "ClusterNode", "check_cluster_fits", "cluster_nodes", "ray_options", "resolve_address"]
