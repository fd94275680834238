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
import threading
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


class _Box:
    """A task's scratch directory. It remembers what sci put in it (links, directories, files),
    so cleaning up is a few unlinks instead of a tree walk; anything else left behind (a
    step's own junk) falls back to rmtree. Directory operations are the slow part of a
    sandbox on many filesystems."""

    def __init__(self, root: Path):
        self.root = str(root)
        self.made: list[str] = []  # created directories and links, in creation order

    def mkdirs(self, rel_dir: str) -> None:
        missing = []
        d = rel_dir
        while d and d != "." and not os.path.isdir(f"{self.root}/{d}"):
            missing.append(d)
            d = os.path.dirname(d)
        for d in reversed(missing):
            os.mkdir(f"{self.root}/{d}")
            self.made.append(d + "/")

    def link(self, rel: str, src: str) -> None:
        self.mkdirs(os.path.dirname(rel))
        os.symlink(src, f"{self.root}/{rel}")
        self.made.append(rel)

    def write(self, rel: str, text: str) -> None:
        self.mkdirs(os.path.dirname(rel))
        with open(f"{self.root}/{rel}", "w", encoding="utf-8") as fh:
            fh.write(text)
        self.made.append(rel)

    def clean(self) -> bool:
        """Empty the box, keeping the directory itself for the next task; False when the step
        left something of its own there (the box is then removed whole)."""
        try:
            for entry in reversed(self.made):
                if entry.endswith("/"):
                    os.rmdir(f"{self.root}/{entry[:-1]}")
                else:
                    os.unlink(f"{self.root}/{entry}")
            self.made.clear()
            if not os.listdir(self.root):
                return True
        except OSError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
        return False


def _link_inputs(task: Task, box: _Box) -> None:
    """Symlink each declared dep and code path into the sandbox at the same relative path."""
    ws = task.workspace
    linked: set[str] = set()
    for rel in sorted(set(task.deps) | set(task.code)):
        parent, covered = rel, False
        while parent:
            if parent in linked:
                covered = True  # already visible through a linked parent directory
                break
            parent = os.path.dirname(parent)
        if covered:
            continue
        src = f"{ws}/{rel}"
        if not os.path.lexists(src):
            continue  # globs in code: may match nothing; missing deps were caught earlier
        box.link(rel, src)
        linked.add(rel)


_LOGS = threading.local()
_BOXES = threading.local()


def _take_box(scratch_root: Path) -> Path:
    """This worker thread's empty sandbox directory, made once and reused while tasks leave it
    clean: one directory less to create and remove per task."""
    box = getattr(_BOXES, "box", None)
    if box is None or box.parent != scratch_root or not box.is_dir():
        box = Path(tempfile.mkdtemp(dir=scratch_root, prefix="n-"))
        _BOXES.box = box
    return box


def _return_box(box: _Box, keep: bool) -> None:
    if keep or not box.clean():
        _BOXES.box = None  # kept for inspection, or removed because a step left files behind


def _log_files(scratch_root: Path):
    """This worker thread's two unnamed temporary files for a step's stdout and stderr, emptied
    and reused task after task (O_TMPFILE: no directory entry is ever made)."""
    files = getattr(_LOGS, "files", None)
    if files is None or files[2] != str(scratch_root):
        files = (tempfile.TemporaryFile(dir=scratch_root), tempfile.TemporaryFile(dir=scratch_root), str(scratch_root))
        _LOGS.files = files
    for fh in files[:2]:
        fh.seek(0)
        fh.truncate()
    return files[0], files[1]


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
    box = _take_box(scratch_root)
    sandbox = _Box(box)
    cwd = box if task.sandbox else ws
    logs = {name: Path(f"{box}{suffix}") for name, suffix in (("metrics", ".metrics.json"), ("request", ".request.json"))}
    keep = os.environ.get("SCI_KEEP_SCRATCH") == "1"
    try:
        if task.sandbox:
            _link_inputs(task, sandbox)
        else:
            for rel in task.outs.values():  # stale outputs would hide a step that writes nothing
                p = ws / rel
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif os.path.lexists(p):
                    p.unlink()
        for rel in task.outs.values():
            if task.sandbox:
                sandbox.mkdirs(os.path.dirname(rel))
            else:
                (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        for rel, text in task.files.items():
            if task.sandbox:
                sandbox.write(rel, text)
            else:
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
        out, err = _log_files(scratch_root)
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
        _return_box(sandbox, keep)
        if not keep:
            for p in logs.values():
                if task.kind != "cmd":  # only Python steps have a request and metrics file
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass
