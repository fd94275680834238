"""The body of every SLURM job sci submits: `python -m sci.executors.slurm_worker JOBDIR TAG`.

It reads its task (`JOBDIR/tasks/TAG-I.json`, I being the array index, 0 for a lone job),
runs it with `run_task` exactly as the local executor would, and writes the `TaskResult` to
`JOBDIR/results/TAG-I.json` (whole or not at all). Exit status: 0 when the node succeeded,
else the step's status (1 when it has none), so SLURM's own record says FAILED too.

The node's GPUs are the ones SLURM granted this job (`CUDA_VISIBLE_DEVICES`), never the
driver's; the declared environment variables are this job's, which sbatch copied from the
driver's environment (their values are never written to the task file). On SIGTERM (scancel,
a time limit) the step's process group is stopped and the result still written, so its
captured output is kept; the driver names the job's state (CANCELLED, TIMEOUT). A step that
ends by itself once the signal came (its shell traps it, or the signal reached its child
first and the shell went on) has no result either: what it wrote under a dying job is not kept.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys


def _fail(node: str, error: str) -> dict:
    return {"node": node, "ok": False, "exit_status": -1, "error": error, "host": socket.gethostname()}


def _job_id() -> str:
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID", "?")


def _granted_gpus() -> list:
    ids = []
    for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(","):
        g = g.strip()
        if g:
            ids.append(int(g) if g.isdigit() else g)
    return ids


def run(doc: dict) -> tuple[dict, str | None]:
    """Run the task described by `doc` (what the driver wrote); the result as JSON-able data,
    and the name of the signal that stopped the job, if one did."""
    from sci.executors.run import run_task
    from sci.executors.task import Task, identity

    spec = doc["task"]
    node = spec["node"]
    here = identity()
    expect = doc.get("expect") or {}
    diff = [f"{k} {here.get(k)} (driver: {expect[k]})" for k in sorted(expect) if here.get(k) != expect[k]]
    if diff:
        return _fail(node, f"the job on {socket.gethostname()} runs {', '.join(diff)}: results would not match "
                           f"the keys the driver computed; the compute nodes need sci's environment at the same path"), None
    for what, path in (("workspace", spec["workspace"]), ("store", spec["store"])):
        if not os.path.isdir(path):
            return _fail(node, f"the {what} {path} is not reachable on {socket.gethostname()}: --executor slurm "
                               f"needs the workspace and the store on a filesystem the compute nodes mount at the "
                               f"same path"), None
    missing = [k for k in doc.get("env", []) if k not in os.environ]
    if missing:
        return _fail(node, f"the job's environment lacks {missing[0]}, which the driver passes to the step: sbatch "
                           f"must export the driver's environment (no --export=NONE)"), None
    task = Task(**{**spec, "env": {k: os.environ[k] for k in doc.get("env", [])}})
    if doc.get("gpus"):
        task.gpus = _granted_gpus()
        if len(task.gpus) < doc["gpus"]:
            return _fail(node, f"slurm job {_job_id()} asked for {doc['gpus']} GPU(s) but CUDA_VISIBLE_DEVICES names "
                               f"{len(task.gpus)}: check the partition's gres.conf"), None
    else:
        task.gpus = []
    if task.python and not os.access(task.python, os.X_OK):
        task.python = sys.executable

    stopped: list[str] = []
    running: dict[str, int] = {}

    def track(_node: str, pid: int | None) -> None:
        if pid is None:
            running.pop("pid", None)
        else:
            running["pid"] = pid
            if stopped:  # the signal came while the step was starting
                _stop(pid)

    def on_signal(signum, _frame) -> None:
        stopped.append(signal.Signals(signum).name)
        pid = running.get("pid")
        if pid is not None:
            _stop(pid)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def why_stopped() -> str | None:
        if not stopped:
            return None
        return f"killed by signal {int(signal.Signals[stopped[0]])} ({stopped[0]}) while the step ran"

    result = run_task(task, track, why_stopped)
    data = {name: getattr(result, name) for name in type(result).__slots__}
    return data, (stopped[0] if stopped else None)


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: python -m sci.executors.slurm_worker JOBDIR TAG\n")
        return 2
    jobdir, tag = argv[1], argv[2]
    name = f"{tag}-{os.environ.get('SLURM_ARRAY_TASK_ID') or 0}"
    try:
        with open(os.path.join(jobdir, "tasks", f"{name}.json"), encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"sci worker: cannot read its task {name}: {exc} (the build may have ended)\n")
        return 1
    try:
        data, stopped = run(doc)
    except Exception as exc:  # noqa: BLE001 - reported to the driver as this node's failure
        data, stopped = _fail(doc["task"]["node"], f"the sci worker failed: {type(exc).__name__}: {exc}"), None
    data["signal"] = stopped
    results = os.path.join(jobdir, "results")
    tmp = os.path.join(results, f".{name}.json.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"))
        os.replace(tmp, os.path.join(results, f"{name}.json"))
    except OSError as exc:
        sys.stderr.write(f"sci worker: cannot write its result {name}: {exc} (the build may have ended)\n")
        return 1
    if data["ok"]:
        return 0
    if stopped:
        return 128 + int(signal.Signals[stopped])
    status = data.get("exit_status", -1)
    return status if 0 < status < 256 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
