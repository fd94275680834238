"""Run one task: make its sandbox, start its process, store what it produced.

This function is the unit every executor runs (a local thread, a Ray worker). It reads inputs
from the workspace, writes outputs only into the store, and returns plain data; materializing
outputs in the workspace and writing the action result are the scheduler's job.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from sci import unique
from sci.errors import SciError
from sci.redact import known as known_secrets
from sci.redact import redact, redact_bytes, secret_values
from sci.executors.task import Task, TaskResult
from sci.records.run import utc_now
from sci.plan.nodes import GPUS_MARK
from sci.store.cas import Store
from sci.store.hashing import stat_signature

# Environment variables a step inherits from sci's own environment besides PATH: only those a
# toolchain needs to find its libraries. Everything else a step sees is declared (SPEC §2).
PASSTHROUGH = ("LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "SSL_CERT_FILE", "TZ", "OPENBLAS_CORETYPE",
               "OPENBLAS_L2_SIZE", "SYSTEMROOT")




class _Box:
    """A worker thread's sandbox directory, reused task after task.

    Creating a directory entry is the slow part of a sandbox on many filesystems (0.4–0.9 ms
    each here, against 13 µs to remove one), so the box keeps the directories and dep links
    the last task had and the next one needs too — in a fan-out every node links the same
    source — and only adds or removes the difference. A kept entry is checked before reuse
    (a link must still point where it should), and after every task the box must hold
    nothing but its kept entries; a step that left anything else gets its box removed whole.
    """

    def __init__(self, root: Path):
        self.root = str(root)
        self.kept: dict[str, str | None] = {}  # rel path -> link target, or None for a directory
        self.files: list[str] = []  # written for one task only (the dossier's input)

    def prepare(self, links: dict[str, str], dirs: set[str], files: dict[str, str]) -> None:
        """Make the box hold exactly these links and directories (plus the files' parents)."""
        try:
            self._prepare(links, dirs, files)
        except OSError:  # something in the box is not as it was left: start from an empty one
            shutil.rmtree(self.root, ignore_errors=True)
            os.mkdir(self.root, 0o700)
            self.kept.clear()
            self.files.clear()
            self._prepare(links, dirs, files)

    def _prepare(self, links: dict[str, str], dirs: set[str], files: dict[str, str]) -> None:
        wanted: dict[str, str | None] = {}
        for rel in (*dirs, *(os.path.dirname(r) for r in (*links, *files))):
            while rel and rel != "." and rel not in wanted:
                wanted[rel] = None
                rel = os.path.dirname(rel)
        wanted.update(links)
        root = self.root
        for rel in sorted(self.kept, reverse=True):  # children before their directories
            target = self.kept[rel]
            if wanted.get(rel, 0) == target and (target is None or os.readlink(f"{root}/{rel}") == target):
                continue
            if target is None:
                os.rmdir(f"{root}/{rel}")
            else:
                os.unlink(f"{root}/{rel}")
            del self.kept[rel]
        for rel in sorted(wanted):  # parents before their children
            if rel in self.kept:
                continue
            target = wanted[rel]
            if target is None:
                os.mkdir(f"{root}/{rel}")
            else:
                os.symlink(target, f"{root}/{rel}")
            self.kept[rel] = target
        for rel, text in files.items():
            with open(f"{root}/{rel}", "w", encoding="utf-8") as fh:
                fh.write(text)
            self.files.append(rel)

    def clean(self) -> bool:
        """Remove the task's files and check that only kept entries remain; False (and the
        box removed whole) when the step left something of its own, or took something away."""
        try:
            for rel in self.files:
                os.unlink(f"{self.root}/{rel}")
            self.files.clear()
            children: dict[str, set[str]] = {"": set()}
            for rel, target in self.kept.items():
                parent, _, name = rel.rpartition("/")
                children.setdefault(parent, set()).add(name)
                if target is None:
                    children.setdefault(rel, set())
            for rel, names in children.items():
                if set(os.listdir(f"{self.root}/{rel}" if rel else self.root)) != names:
                    raise OSError("the step left or removed files")
            return True
        except OSError:
            shutil.rmtree(self.root, ignore_errors=True)
            self.kept.clear()
            return False


def _box_layout(task: Task) -> tuple[dict[str, str], set[str]]:
    """The links (each declared dep and code path, at the same relative path, unless a linked
    parent directory already shows it) and directories (those of the outputs) of a sandbox."""
    ws = task.workspace
    links: dict[str, str] = {}
    for rel in sorted(set(task.deps) | set(task.code)):
        parent, covered = rel, False
        while parent:
            if parent in links:
                covered = True  # already visible through a linked parent directory
                break
            parent = os.path.dirname(parent)
        if covered:
            continue
        src = f"{ws}/{rel}"
        if not os.path.lexists(src):
            continue  # globs in code: may match nothing; missing deps were caught earlier
        links[rel] = src
    return links, {os.path.dirname(rel) for rel in task.outs.values()}


_LOGS = threading.local()
_HOST = os.uname().nodename  # a uname() per task otherwise
_STORES: dict[str, Store] = {}  # opened once per process: the FORMAT check is not per task
_BOXES = threading.local()


def _take_box(scratch_root: Path) -> _Box:
    """This worker thread's sandbox, made once and reused while tasks leave it clean."""
    box = getattr(_BOXES, "box", None)
    if box is None or os.path.dirname(box.root) != str(scratch_root) or not os.path.isdir(box.root):
        box = _Box(Path(unique.make_dir(scratch_root, "n-")))
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
        files = (unique.unnamed_file(scratch_root), unique.unnamed_file(scratch_root), str(scratch_root))
        _LOGS.files = files
    for fh in files[:2]:
        fd = fh.fileno()
        if os.lseek(fd, 0, os.SEEK_END):  # truncating costs ~70 µs even when there is nothing to cut
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
    return files[0], files[1]


def _spawn_shell(script: str, cwd: str, env: dict[str, str], out, err) -> int:
    """Start `/bin/sh -c script` in `cwd`, in a session of its own (SIGTERM reaches the whole
    step), stdin from /dev/null: what `subprocess.Popen` does, in one C call instead of ~100 µs
    of Python, where every line is a chance to wait for the GIL behind a busy thread.
    `os.posix_spawn` has no working directory in Python 3.11, so the shell changes into it."""
    devnull = getattr(_LOGS, "devnull", None)
    if devnull is None:
        devnull = _LOGS.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return os.posix_spawn("/bin/sh", ["/bin/sh", "-c", f"cd -- {shlex.quote(cwd)} || exit 126\n{script}"], env,
                          file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                                        (os.POSIX_SPAWN_DUP2, err.fileno(), 2)], setsid=True)


def _waiter(pid: int) -> Callable[[], int]:
    """A wait for `pid` returning its exit code as Popen does (-N: killed by signal N)."""
    def wait() -> int:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    return wait


def _written(before: tuple | None, now: tuple | None) -> bool:
    """Whether a file's stat signature (hashing.stat_signature) says it was written between the
    two looks. Its ctime is left out: with SCI_LINK=hardlink a dep shares its inode with a store
    blob, and another node materializing the same blob changes the inode's link count, and so
    its ctime, while nobody writes the file."""
    if before is None or now is None:
        return before is not now
    return before[:2] != now[:2] or before[3] != now[3]


def step_environment(task: Task, cwd: Path) -> dict[str, str]:
    """The variables a step's process starts with (docs/format.md, "Sandbox", lists them).

    `PATH` is the caller's as given — sci never puts its own interpreter's directory on it, so
    `python` in a step is the caller's `python`, not sci's (SPEC §10) — unless the step's
    software environment sets it (`task.environ`: a uv environment puts its `bin/` first).
    `PYTHONPATH` is the working directory, then a directory holding only sci's own package
    (`sci_shim`), so `import sci.determinism` works in any interpreter without exposing sci's
    dependencies."""
    from sci.determinism import command_env

    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": f"{cwd}{os.pathsep}{sci_shim(task.scratch_root)}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "SCI_NODE": task.node,
    }
    for name in PASSTHROUGH:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(task.environ)
    env.update(task.env)
    env.update(command_env(task.seed, task.determinism, task.gpus, task.threads))
    return env


_SHIMS: dict[str, str] = {}


def sci_shim(scratch_root: str) -> str:
    """A directory whose only entry is `sci`, a link to this sci's package: on a step's
    PYTHONPATH it makes `sci` importable (the fn runner, `sci.determinism`) in whatever
    interpreter the step runs, and nothing else of sci's environment (its site-packages, where
    numpy or pydantic live, stays out of sight). Made once per process, beside the scratch
    directory (`.sci/cache/pyshim/<digest of the package path>/`)."""
    shim = _SHIMS.get(scratch_root)
    if shim is not None:
        return shim
    import hashlib

    import sci

    package = os.path.dirname(os.path.abspath(sci.__file__))
    tag = hashlib.sha256(package.encode()).hexdigest()[:16]
    shim = os.path.join(os.path.dirname(scratch_root), "cache", "pyshim", tag)
    link = os.path.join(shim, "sci")
    if not (os.path.islink(link) and os.readlink(link) == package):
        os.makedirs(shim, exist_ok=True)
        tmp = f"{link}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(package, tmp)
        os.replace(tmp, link)  # atomic: a concurrent build sees the old link or the new one
    _SHIMS[scratch_root] = shim
    return shim


_PYTHONS: dict[str, str | None] = {}


def step_python(path: str) -> str | None:
    """The first `python3` on `path` (then `python`): the interpreter of an `fn` step that runs
    in the workspace's default environment (SPEC §10). None when there is none."""
    if path in _PYTHONS:
        return _PYTHONS[path]
    found = shutil.which("python3", path=path) or shutil.which("python", path=path)
    _PYTHONS[path] = found
    return found


# Variables a container step does not get from sci: the image's own PATH stands, and the host's
# library paths mean nothing inside it.
_NOT_INTO_CONTAINER = ("PATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "CUDA_HOME", "CUDA_PATH", "SSL_CERT_FILE")


def container_command(task: Task, argv: list[str], env: dict[str, str], cwd: Path, scratch_root: Path,
                      ws: Path) -> str:
    """`ENGINE run …` for a step in a container (SPEC §10): no network; the workspace mounted at
    its own path (read-only for a sandboxed step, whose deps are links into it), the scratch
    directory (the box, the fn step's request and metrics) read-write, sci's own package
    read-only (the shim on PYTHONPATH points there); the step's variables but PATH."""
    import sci

    package = os.path.dirname(os.path.abspath(sci.__file__))
    engine = shutil.which(task.container["engine"]) or task.container["engine"]
    parts = [engine, "run", "--rm", "--network=none", "--workdir", str(cwd),
             "--volume", f"{ws}:{ws}:{'ro' if task.sandbox else 'rw'}",
             "--volume", f"{scratch_root}:{scratch_root}:rw",
             "--volume", f"{package}:{package}:ro"]
    for name, value in sorted(env.items()):
        if name not in _NOT_INTO_CONTAINER:
            parts += ["--env", f"{name}={value}"]
    parts += [task.container["image"], *argv]
    return "exec " + " ".join(shlex.quote(p) for p in parts)


def _tail(fh, secrets: list[str], lines: int = 20) -> str:
    """The last lines of an open log file, known secret values masked (sci.redact)."""
    try:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - 8192))
        data = fh.read()
    except OSError:
        return ""
    return redact("\n".join(data.decode("utf-8", "replace").splitlines()[-lines:]), secrets)


def _tail_blob(store: Store, digest: str, secrets: list[str], lines: int = 20) -> str:
    try:
        data = store.read_blob(digest)[-8192:]
    except OSError:
        return ""
    return redact("\n".join(data.decode("utf-8", "replace").splitlines()[-lines:]), secrets)


def _put_log(store: Store, fh, secrets: list[str]) -> str:
    """Store a step's captured stdout or stderr with the known secret values masked: what
    `sci log` shows then differs from what the step printed by exactly those (docs/security.md)."""
    if not secrets and not known_secrets():
        return store.put_stream(fh)
    fh.flush()
    fd = fh.fileno()
    size = os.fstat(fd).st_size
    return store.put_bytes(redact_bytes(os.pread(fd, size, 0), secrets) if size else b"")


def run_task(task: Task, track: Callable[[str, int | None], None] | None = None) -> TaskResult:
    """Run `task` to completion and return what happened; never raises for step failures.

    Directory operations are the slow part of a sandbox on many filesystems, so a task makes
    one directory, its box: the working directory of a sandboxed step, and HOME and TMPDIR of
    every step, so nothing a step leaves behind outlives it (only declared outputs are kept).
    """
    result, tidy = run_task_then_tidy(task, track)
    tidy()
    return result


def run_task_then_tidy(task: Task, track: Callable[[str, int | None], None] | None = None
                       ) -> tuple[TaskResult, Callable[[], None]]:
    """`run_task`, with the tidying of the box handed back instead of done: the local executor
    reports the result first, so the scheduler goes on (in a chain, the next node starts), and
    tidies after, on this same thread, before the thread takes another task."""
    store = _STORES.get(task.store)
    if store is None:
        store = _STORES[task.store] = Store(Path(task.store), create=False)
    ws = Path(task.workspace)
    result = TaskResult(node=task.node, ok=False, exit_status=-1, host=_HOST)
    scratch_root = Path(task.scratch_root)
    if not scratch_root.is_dir():
        scratch_root.mkdir(parents=True, exist_ok=True)
    sandbox = _take_box(scratch_root)
    box = Path(sandbox.root)
    cwd = box if task.sandbox else ws
    logs = {name: Path(f"{box}{suffix}") for name, suffix in (("metrics", ".metrics.json"), ("request", ".request.json"))}
    keep = os.environ.get("SCI_KEEP_SCRATCH") == "1"

    def tidy() -> None:
        _return_box(sandbox, keep)
        if not keep and task.kind != "cmd":  # only Python steps have a request and metrics file
            for p in logs.values():
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass

    try:
        _execute(task, track, store, ws, sandbox, box, cwd, logs, scratch_root, result)
    except OSError as exc:
        result.error = f"could not run: {exc}"
    except BaseException:
        tidy()
        raise
    return result, tidy


def _execute(task: Task, track, store: Store, ws: Path, sandbox: _Box, box: Path, cwd: Path,
             logs: dict[str, Path], scratch_root: Path, result: TaskResult) -> None:
    """The task's steps, filling in `result`; returns early at the first failure."""
    if task.sandbox:
        sandbox.prepare(*_box_layout(task), task.files)
    else:
        sandbox.prepare({}, set(), {})  # the box is still HOME and TMPDIR: empty it
        for rel in task.outs.values():  # stale outputs would hide a step that writes nothing
            p = ws / rel
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif os.path.lexists(p):
                p.unlink()
            p.parent.mkdir(parents=True, exist_ok=True)
        for rel, text in task.files.items():
            (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
            (cwd / rel).write_text(text, encoding="utf-8")
    env = step_environment(task, cwd)
    env["HOME"] = env["TMPDIR"] = str(box)
    before = {rel: stat_signature(f"{ws}/{rel}") for rel in (*task.deps, *task.code)}

    if task.kind == "cmd":
        argv = ["/bin/sh", "-c", (task.cmd or "").replace(GPUS_MARK, ",".join(map(str, task.gpus)))]
    elif task.container:
        logs["request"].write_text(json.dumps({
            "node": task.node, "fn": task.fn, "deps": task.ctx_deps, "outs": task.outs,
            "params": task.params, "seed": task.seed, "gpus": task.gpus,
            "determinism": task.determinism, "threads": task.threads,
            "metrics": str(logs["metrics"]),
        }))
        argv = ["python3", "-m", "sci.executors.fn_runner", str(logs["request"])]
    else:
        logs["request"].write_text(json.dumps({
            "node": task.node, "fn": task.fn, "deps": task.ctx_deps, "outs": task.outs,
            "params": task.params, "seed": task.seed, "gpus": task.gpus,
            "determinism": task.determinism, "threads": task.threads,
            "metrics": str(logs["metrics"]),
        }))
        python = task.python or step_python(env["PATH"])
        if python is None:
            result.error = ("found no python3 on the step's PATH: an fn step runs in the first python3 on "
                            "the caller's PATH, or in its declared environment's interpreter")
            return
        argv = [python, "-m", "sci.executors.fn_runner", str(logs["request"])]

    if task.container:  # the engine runs the step: `engine run … IMAGE argv`, in a shell like a cmd step's
        argv = ["/bin/sh", "-c", container_command(task, argv, env, cwd, scratch_root, ws)]
        env = {k: v for k, v in os.environ.items()}  # the engine's own (its config, its storage)
    result.start = utc_now()
    t0 = time.perf_counter()
    out, err = _log_files(scratch_root)
    if task.kind == "cmd" or task.container:
        pid = _spawn_shell(argv[2], str(cwd), env, out, err)
        wait = _waiter(pid)
    else:
        import subprocess  # fn steps only: a build of cmd steps never imports it

        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        pid, wait = proc.pid, proc.wait
    if track:
        track(task.node, pid)
    try:
        code = wait()
    finally:
        if track:
            track(task.node, None)
    result.duration_s = time.perf_counter() - t0
    result.end = utc_now()
    result.exit_status = code
    secrets = secret_values(task.env)  # a declared secret the step saw, even if sci's environment lacks it
    result.stdout = _put_log(store, out, secrets)
    result.stderr = _put_log(store, err, secrets)
    if code != 0:
        result.error = f"exited with status {code}" if code > 0 else f"killed by signal {-code}"
        result.stderr_tail = _tail(err, secrets)
        return
    changed = [rel for rel, sig in before.items() if _written(sig, stat_signature(f"{ws}/{rel}"))]
    if changed:
        result.error = f"modified its input {changed[0]} (steps must not write to their deps)"
        return
    missing = [rel for rel in task.outs.values() if not os.path.exists(cwd / rel)]
    if missing:
        result.error = f"did not produce its declared output {missing[0]}"
        result.stderr_tail = _tail_blob(store, result.stderr, secrets)
        return
    if task.metrics or task.kind != "cmd":
        try:
            result.metrics = _metrics(task, cwd, logs["metrics"])
        except SciError as exc:  # one line naming the file and the key: the step failed
            result.error = exc.message
            return
    for name, rel in task.outs.items():
        src = f"{cwd}/{rel}"
        if task.sandbox and task.materialize == "copy" and not os.path.isdir(src):
            rec = store.put_and_place(src, f"{ws}/{rel}")  # the step's file becomes the workspace's
        else:
            rec = store.put_output(src, move=task.sandbox)
            if task.sandbox and task.materialize:
                store.materialize(rec, ws / rel, task.materialize)
        result.outputs[name] = {"path": rel, **rec.to_json()}
    result.materialized = bool(task.sandbox and task.materialize)
    result.ok = True


def _metrics(task: Task, cwd: Path, ctx_file: Path) -> dict:
    """The step's metrics, before its outputs are stored (a bad metrics file fails the step):
    its metrics files' numbers, and for a Python step what it put in ctx.metrics."""
    from sci.records import metrics

    found = metrics.read_step_metrics(task.metrics, str(cwd)) if task.metrics else {}
    if task.kind == "cmd" or not ctx_file.exists():
        return found
    return metrics.merge(found, json.loads(ctx_file.read_text()), task.node)
