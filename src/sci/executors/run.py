"""Run one task: make its sandbox, start its process, store what it produced.

This function is the unit every executor runs (a local thread, a Ray worker). It reads inputs
from the workspace, writes outputs only into the store, and returns plain data; materializing
outputs in the workspace and writing the action result are the scheduler's job.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from sci.executors.task import Task, TaskResult
from sci.plan import GPUS_MARK
from sci.store import Store

# Environment variables a step inherits from sci's own environment besides PATH: only those a
# toolchain needs to find its libraries. Everything else a step sees is declared (SPEC §2).
PASSTHROUGH = ("LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "SSL_CERT_FILE", "TZ", "OPENBLAS_CORETYPE",
               "OPENBLAS_L2_SIZE", "SYSTEMROOT")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _link_inputs(task: Task, scratch: Path) -> None:
    """Symlink each declared dep and code path into the sandbox at the same relative path."""
    ws = Path(task.workspace)
    linked: list[str] = []
    for rel in sorted(set(task.deps) | set(task.code)):
        if any(rel == p or rel.startswith(p + "/") for p in linked):
            continue  # already visible through a linked parent directory
        src = ws / rel
        if not os.path.lexists(src):
            continue  # globs in code: may match nothing; missing deps were caught earlier
        dst = scratch / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src, dst)
        linked.append(rel)


def _stat_sig(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def step_environment(task: Task, cwd: Path) -> dict[str, str]:
    from sci.determinism import command_env

    python_dir = os.path.dirname(task.python or sys.executable)
    path = os.environ.get("PATH", os.defpath)
    env = {
        "PATH": f"{python_dir}{os.pathsep}{path}" if python_dir else path,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": str(cwd),
        "PYTHONDONTWRITEBYTECODE": "1",
        "SCI_NODE": task.node,
    }
    for name in PASSTHROUGH:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(task.env)
    env.update(command_env(task.seed, task.determinism, task.gpus, task.threads))
    return env


def _tail(fh, lines: int = 20) -> str:
    """The last lines of an open log file."""
    try:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - 8192))
        data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _tail_blob(store: Store, digest: str, lines: int = 20) -> str:
    try:
        data = store.read_blob(digest)[-8192:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def run_task(task: Task, track: Callable[[str, int | None], None] | None = None) -> TaskResult:
    """Run `task` to completion and return what happened; never raises for step failures.

    Directory operations are the slow part of a sandbox on many filesystems, so a task makes
    one directory, its box: the working directory of a sandboxed step, and HOME and TMPDIR of
    every step, so nothing a step leaves behind outlives it (only declared outputs are kept).
    """
    store = Store(Path(task.store), create=False)
    ws = Path(task.workspace)
    result = TaskResult(node=task.node, ok=False, exit_status=-1, host=socket.gethostname())
    scratch_root = Path(task.scratch_root)
    if not scratch_root.is_dir():
        scratch_root.mkdir(parents=True, exist_ok=True)
    box = Path(tempfile.mkdtemp(dir=scratch_root, prefix="n-"))
    cwd = box if task.sandbox else ws
    logs = {name: Path(f"{box}{suffix}") for name, suffix in (("metrics", ".metrics.json"), ("request", ".request.json"))}
    keep = os.environ.get("SCI_KEEP_SCRATCH") == "1"
    try:
        if task.sandbox:
            _link_inputs(task, cwd)
        else:
            for rel in task.outs.values():  # stale outputs would hide a step that writes nothing
                p = ws / rel
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif os.path.lexists(p):
                    p.unlink()
        made: set[Path] = set()
        for rel in task.outs.values():
            parent = (cwd / rel).parent
            if parent not in made:
                parent.mkdir(parents=True, exist_ok=True)
                made.add(parent)
        for rel, text in task.files.items():
            (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
            (cwd / rel).write_text(text, encoding="utf-8")
        env = step_environment(task, cwd)
        env["HOME"] = env["TMPDIR"] = str(box)
        before = {rel: _stat_sig(ws / rel) for rel in (*task.deps, *task.code)}

        if task.kind == "cmd":
            argv = ["/bin/sh", "-c", (task.cmd or "").replace(GPUS_MARK, ",".join(map(str, task.gpus)))]
        else:
            logs["request"].write_text(json.dumps({
                "node": task.node, "fn": task.fn, "deps": task.ctx_deps, "outs": task.outs,
                "params": task.params, "seed": task.seed, "gpus": task.gpus,
                "determinism": task.determinism, "threads": task.threads,
                "metrics": str(logs["metrics"]),
            }))
            argv = [task.python or sys.executable, "-m", "sci.executors.fn_runner", str(logs["request"])]

        result.start = _now()
        t0 = time.perf_counter()
        # Unnamed temporary files (O_TMPFILE): no directory entry to create or remove.
        with tempfile.TemporaryFile(dir=scratch_root) as out, tempfile.TemporaryFile(dir=scratch_root) as err:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            if track:
                track(task.node, proc.pid)
            try:
                code = proc.wait()
            finally:
                if track:
                    track(task.node, None)
            result.duration_s = time.perf_counter() - t0
            result.end = _now()
            result.exit_status = code
            result.stdout = store.put_stream(out)
            result.stderr = store.put_stream(err)
            if code != 0:
                result.error = f"exited with status {code}" if code > 0 else f"killed by signal {-code}"
                result.stderr_tail = _tail(err)
                return result
        changed = [rel for rel, sig in before.items() if _stat_sig(ws / rel) != sig]
        if changed:
            result.error = f"modified its input {changed[0]} (steps must not write to their deps)"
            return result
        missing = [rel for rel in task.outs.values() if not os.path.exists(cwd / rel)]
        if missing:
            result.error = f"did not produce its declared output {missing[0]}"
            result.stderr_tail = _tail_blob(store, result.stderr)
            return result
        for name, rel in task.outs.items():
            rec = store.put_output(cwd / rel, move=task.sandbox)
            result.outputs[name] = {"path": rel, **rec.to_json()}
        if logs["metrics"].exists():
            result.metrics = json.loads(logs["metrics"].read_text())
        result.ok = True
        return result
    except OSError as exc:
        result.error = f"could not run: {exc}"
        return result
    finally:
        if not keep:
            shutil.rmtree(box, ignore_errors=True)
            for p in logs.values():
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
