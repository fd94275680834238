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
import stat as stat_mod
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sci import unique
from sci.redact import known as known_secrets
from sci.redact import redact, redact_bytes, secret_values
from sci.executors.task import Task, TaskResult
from sci.records.run import utc_now
from sci.plan.nodes import GPUS_MARK
from sci.errors import DamagedObject, OutputError, SciError
from sci.store.cas import OutputRecord, Store, _reflink_or_copy, check_output, copy_over
from sci.store.hashing import RACY_WINDOW_NS, NameNotText, digest_file, signature, stat_signature
from sci.workspace import symlink_on_path

if TYPE_CHECKING:  # a name for annotations only: making the alias at import costs ~0.1 ms of every build
    # Asked once the step's process has ended: why the step was stopped (a signal to its job, a
    # cancelled build), or None. A step that ends with status 0 after it was told to stop is no
    # result: nothing it wrote is stored or placed in the workspace.
    Stopped = Callable[[], "str | None"]

# Environment variables a step inherits from sci's own environment besides PATH: only those a
# toolchain needs to find its libraries. Everything else a step sees is declared (SPEC §2).
PASSTHROUGH = ("LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "SSL_CERT_FILE", "TZ", "OPENBLAS_CORETYPE",
               "OPENBLAS_L2_SIZE", "SYSTEMROOT")




class _Box:
    """A worker thread's sandbox directory, reused task after task.

    A step's deps and code are copies in its box (reflinks where the filesystem can), never
    links: a write to one lands in the step's own copy, never in a workspace source or a store
    object (SPEC §2; the cost is measured in docs/security.md). Creating directory entries and
    copying bytes are the slow part of a sandbox, so the box keeps the directories and copies
    the last task had and the next one needs too — in a fan-out every node reads the same
    source — and only adds or removes the difference. A copy is given its source's mtime (as
    `cp -p`: a `make` inside a step sees the times it would see in the workspace). A kept copy
    is reused only while both its source and the copy itself have the stat signature they had
    when it was made (a step that wrote to its copy set the copy's mtime to the time of the
    write, so the next task gets a fresh one). Only a source written within one timestamp tick
    of a task's start (an upstream output just made) could hide such a write ("racily clean",
    as in the stat cache): a copy of one is compared byte for byte (by digest) with its source
    before its next reuse. After every
    task the box must hold nothing but its kept entries; a step that left anything else gets
    its box removed whole.
    """

    def __init__(self, root: Path):
        self.root = str(root)
        # rel path -> None for a directory, or [source path, source signature, copy signature,
        # racy: a task that started within RACY_WINDOW_NS of the copy's making used it, mode]
        self.kept: dict[str, list | None] = {}
        self.files: list[str] = []  # written for one task only (the dossier's input)

    def prepare(self, copies: dict[str, str], dirs: set[str], files: dict[str, str]) -> None:
        """Make the box hold exactly copies of these workspace paths (a directory's whole
        tree) and these directories (plus the files' parents)."""
        try:
            self._prepare(copies, dirs, files)
        except OSError:  # something in the box is not as it was left: start from an empty one
            shutil.rmtree(self.root, ignore_errors=True)
            os.mkdir(self.root, 0o700)
            self.kept.clear()
            self.files.clear()
            self._prepare(copies, dirs, files)

    def _prepare(self, copies: dict[str, str], dirs: set[str], files: dict[str, str]) -> None:
        wanted: dict[str, tuple | None] = {}  # rel -> None (a directory) or (source, its stat)
        for rel, src in copies.items():
            _expand(rel, src, wanted)
        for rel in (*dirs, *(os.path.dirname(r) for r in (*wanted, *files))):
            while rel and rel != "." and rel not in wanted:
                wanted[rel] = None
                rel = os.path.dirname(rel)
        root = self.root
        spares: dict[str, int] = {}  # stale copies nobody touched, by rel: their mode
        for rel in sorted(self.kept, reverse=True):  # children before their directories
            have, want = self.kept[rel], wanted.get(rel, 0)
            if have is None and want is None:
                continue
            unchanged = have is not None and _lsig(f"{root}/{rel}") == have[2]
            if (unchanged and want and want[0] == have[0] and signature(want[1]) == have[1]
                    and (not have[3] or digest_file(f"{root}/{rel}") == digest_file(have[0]))):
                continue  # the same source, unchanged, and a copy nobody wrote to
            del self.kept[rel]
            if unchanged and want is not None and (wanted.get(os.path.dirname(rel), 0) is None
                                                    or "/" not in rel):
                spares[rel] = have[4]  # in a directory that stays: rewritten below, not removed
            elif have is None:
                shutil.rmtree(f"{root}/{rel}")
            else:
                os.unlink(f"{root}/{rel}")
        for rel in sorted(wanted):  # parents before their children
            if rel in self.kept:
                continue
            want = wanted[rel]
            dest = f"{root}/{rel}"
            if want is None:
                os.mkdir(dest)
                self.kept[rel] = None
            else:
                src, st = want
                mode = stat_mod.S_IMODE(st.st_mode) | 0o600
                if not _copy_into_spare(spares, root, rel, src, mode):
                    _reflink_or_copy(src, dest, mode)
                os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))  # as the source's, as cp -p
                self.kept[rel] = [src, signature(st), _lsig(dest), False, mode]
        for rel in spares:
            os.unlink(f"{root}/{rel}")
        starting = time.time_ns()  # the task starts after this: a write of its sets the copy's
        for entry in self.kept.values():  # mtime to now, which hides only if the source's is as recent
            if entry is not None:
                entry[3] = starting - entry[2][1] <= RACY_WINDOW_NS
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
            for rel, entry in self.kept.items():
                parent, _, name = rel.rpartition("/")
                children.setdefault(parent, set()).add(name)
                if entry is None:
                    children.setdefault(rel, set())
            for rel, names in children.items():
                if set(os.listdir(f"{self.root}/{rel}" if rel else self.root)) != names:
                    raise OSError("the step left or removed files")
            return True
        except OSError:
            shutil.rmtree(self.root, ignore_errors=True)
            self.kept.clear()
            return False


def _copy_into_spare(spares: dict[str, int], root: str, rel: str, src: str, mode: int) -> bool:
    """Make `rel` a copy of src by rewriting a stale copy of the same mode (its own, else any)
    in place; False when there is none. Creating a file costs a new inode, and where ext4 runs
    without a journal each new inode is found by stepping over every inode freed in the last
    minutes: in a long chain, where each node's dep replaces the last one's, a copy made anew
    cost ~1 ms (docs/performance.md, session 11). A spare is a copy nobody wrote to, linked or
    renamed since it was made (its stat signature, ctime included, is as it was then) and with
    one link, so what is rewritten is the box's own file and nothing else."""
    dest = f"{root}/{rel}"
    own = spares.pop(rel, None)
    if own != mode:
        if own is not None:
            os.unlink(dest)
        spare = next((r for r, m in spares.items() if m == mode), None)
        if spare is None:
            return False
        del spares[spare]
        os.rename(f"{root}/{spare}", dest)
    fd = os.open(dest, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_nlink != 1:  # linked since the signature was taken: not ours alone
            os.unlink(dest)
            return False
        copy_over(src, fd)
    finally:
        os.close(fd)
    return True


def _lsig(path: str) -> tuple | None:
    """hashing.signature of the box entry itself (never followed)."""
    try:
        return signature(os.lstat(path))
    except OSError:
        return None


def _expand(rel: str, src: str, wanted: dict[str, tuple | None]) -> None:
    """Add the copies that make `rel` show the workspace path `src`: a file, or every file and
    directory below a directory (symbolic links followed, as tree hashing follows them; a
    directory met twice through links is copied once)."""
    st = os.stat(src)
    if not stat_mod.S_ISDIR(st.st_mode):
        if stat_mod.S_ISREG(st.st_mode):
            wanted[rel] = (src, st)
        return  # a FIFO or device: not copied (never read); hashing refused it already
    seen = {(st.st_dev, st.st_ino)}
    stack = [(rel, src)]
    while stack:
        rel_dir, src_dir = stack.pop()
        wanted[rel_dir] = None
        with os.scandir(src_dir) as it:
            for entry in it:
                try:
                    est = entry.stat()
                except FileNotFoundError:  # a link that leads nowhere: not part of the tree
                    continue
                if stat_mod.S_ISDIR(est.st_mode):
                    if (est.st_dev, est.st_ino) not in seen:
                        seen.add((est.st_dev, est.st_ino))
                        stack.append((f"{rel_dir}/{entry.name}", entry.path))
                elif stat_mod.S_ISREG(est.st_mode):
                    wanted[f"{rel_dir}/{entry.name}"] = (entry.path, est)


def _box_layout(task: Task) -> tuple[dict[str, str], set[str]]:
    """The copies (each declared dep and code path, at the same relative path) and directories
    (those of the outputs) of a sandbox."""
    ws = task.workspace
    copies: dict[str, str] = {}
    for rel in sorted(set(task.deps) | set(task.code)):
        src = f"{ws}/{rel}"
        if not os.path.lexists(src):
            continue  # globs in code: may match nothing; missing deps were caught earlier
        copies[rel] = src
    return copies, {os.path.dirname(rel) for rel in task.outs.values()}


_LOGS = threading.local()
_HOST = os.uname().nodename  # a uname() per task otherwise
_STORES: dict[str, Store] = {}  # opened once per process: the FORMAT check is not per task
_BOXES = threading.local()


def forget_stores() -> None:
    """Drop the stores opened by earlier builds of this process: a Store remembers the small
    blobs it has seen (`Store.put_bytes`), which `sci fsck --repair` or `gc` may have removed
    since. An executor calls this when a build makes it."""
    _STORES.clear()


# linux/fs.h: get and set an inode's flags (the kernel reads and writes an int), and the flag
# that marks a directory as the top of a hierarchy.
_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS, _FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def _spread_boxes(scratch_root: Path) -> None:
    """Mark the workspace's scratch folder as the top of a hierarchy, so ext4 places each new
    box in a block group of its own instead of beside the last ones. Where ext4 runs without a
    journal, each new inode is found by stepping over every inode of its group freed in the
    last minutes: boxes in the group where a removed workspace's outputs were made (they are
    made in a box) made each file a step creates cost ~1 ms in a 4,000-node chain (20–23 s for
    the build; 13–14 s with the flag: docs/performance.md, session 11). Other filesystems
    refuse the flag or ignore it: best effort, never an error."""
    try:
        import fcntl

        fd = os.open(scratch_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            flags = bytearray(4)
            fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
            value = int.from_bytes(flags, sys.byteorder)
            if not value & _FS_TOPDIR_FL:
                fcntl.ioctl(fd, _FS_IOC_SETFLAGS, (value | _FS_TOPDIR_FL).to_bytes(4, sys.byteorder))
        finally:
            os.close(fd)
    except OSError:
        pass


def _take_box(scratch_root: Path) -> _Box:
    """This worker thread's sandbox, made once and reused while tasks leave it clean."""
    box = getattr(_BOXES, "box", None)
    if box is None or os.path.dirname(box.root) != str(scratch_root) or not os.path.isdir(box.root):
        _spread_boxes(scratch_root)
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
    import sci
    from sci.store.hashing import digest_bytes  # not hashlib: importing OpenSSL's costs ~4 ms a build

    package = os.path.dirname(os.path.abspath(sci.__file__))
    tag = digest_bytes(package.encode())[:16]
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


def _place(task: Task, store: Store, src: str, dest: str) -> OutputRecord:
    """Store one output the step wrote at src and, for a sandboxed step, put it at dest in
    the workspace. A copy-mode output is the step's own file or directory, moved in (the store
    gets a copy where it lacks the bytes): the workspace never receives a store copy that may
    have rotted. Linked modes point into the store: a blob found damaged as it is linked is
    dropped (`Store.materialize`), stored again from the step's file, and linked again."""
    if not task.sandbox:
        return store.put_output(src)  # the workspace's file is the step's own
    if task.materialize == "copy":
        return store.put_and_place_tree(src, dest) if os.path.isdir(src) else store.put_and_place(src, dest)
    if not task.materialize:  # the scheduler places it
        return store.put_output(src, move=True)
    rec = store.put_output(src)
    try:
        store.materialize(rec, dest, task.materialize)
    except DamagedObject:
        store.put_output(src)
        store.materialize(rec, dest, task.materialize)
    if os.path.isdir(src) and not os.path.islink(src):
        shutil.rmtree(src)
    else:
        os.unlink(src)
    return rec


def run_task(task: Task, track: Callable[[str, int | None], None] | None = None,
             stopped: Stopped | None = None) -> TaskResult:
    """Run `task` to completion and return what happened; never raises for step failures.

    Directory operations are the slow part of a sandbox on many filesystems, so a task makes
    one directory, its box: the working directory of a sandboxed step, and HOME and TMPDIR of
    every step, so nothing a step leaves behind outlives it (only declared outputs are kept).
    """
    result, tidy = run_task_then_tidy(task, track, stopped)
    tidy()
    return result


def run_task_then_tidy(task: Task, track: Callable[[str, int | None], None] | None = None,
                       stopped: Stopped | None = None) -> tuple[TaskResult, Callable[[], None]]:
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
        _execute(task, track, stopped, store, ws, sandbox, box, cwd, logs, scratch_root, result)
    except OSError as exc:  # a full disk, a read-only store: the path and the cause, as the CLI says them
        where = f"{exc.filename}: " if exc.filename is not None else ""
        result.error = f"could not run: {where}{exc.strerror or exc}"
    except BaseException:
        tidy()
        raise
    return result, tidy


def _execute(task: Task, track, stopped: Stopped | None, store: Store, ws: Path, sandbox: _Box, box: Path,
             cwd: Path, logs: dict[str, Path], scratch_root: Path, result: TaskResult) -> None:
    """The task's steps, filling in `result`; returns early at the first failure."""
    for rel in task.outs.values():  # before anything runs, or is removed, through a link
        link = symlink_on_path(task.workspace, rel)
        if link is not None:
            result.error = (f"output {rel} lies behind {link}, a symbolic link to {os.readlink(f'{ws}/{link}')} "
                            "(outputs must stay inside the workspace; remove the link)")
            return
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
    why = stopped() if stopped is not None else None
    if why:  # it went on after the signal (a shell that traps it, or whose child got it first)
        result.error = f"{why}; it finished after that, and what it wrote is not kept"
        return
    changed = [rel for rel, sig in before.items() if _written(sig, stat_signature(f"{ws}/{rel}"))]
    if changed:
        result.error = f"modified its input {changed[0]} (steps must not write to their deps)"
        return
    missing = [rel for rel in task.outs.values() if not os.path.lexists(cwd / rel)]
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
    try:
        if task.sandbox and task.materialize and len(task.outs) > 1:
            for rel in task.outs.values():  # a failed step places nothing: all checked before the first is placed
                check_output(f"{cwd}/{rel}")
        for name, rel in task.outs.items():
            rec = _place(task, store, f"{cwd}/{rel}", f"{ws}/{rel}")
            result.outputs[name] = {"path": rel, **rec.to_json()}
    except (OutputError, NameNotText) as exc:  # what no output may be: the step failed, naming it
        result.error = exc.message.replace(f"{cwd}/", "") + f" ({exc.hint})"
        return
    result.materialized = bool(task.sandbox and task.materialize)
    result.ok = True


def _metrics(task: Task, cwd: Path, ctx_file: Path) -> dict:
    """The step's metrics, before its outputs are stored (a bad metrics file fails the step):
    its metrics files' numbers, and for a Python step what it put in ctx.metrics."""
    if not task.metrics and (task.kind == "cmd" or not ctx_file.exists()):
        return {}  # nothing to read: the metrics module is not even imported
    from sci.records import metrics

    found = metrics.read_step_metrics(task.metrics, str(cwd)) if task.metrics else {}
    if task.kind == "cmd" or not ctx_file.exists():
        return found
    return metrics.merge(found, json.loads(ctx_file.read_text()), task.node)
