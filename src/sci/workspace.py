"""The workspace: its root, the `.sci/` state folder, `runs/`, the store location and the lock."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sci.errors import LockHeld, UserError

PIPELINE_FILE = "sci.yaml"
STATE_DIR = ".sci"
RUNS_DIR = "runs"
DEFAULT_STORE = "cas"
# Paths sci owns inside a workspace: never a dep, an output or a glob match.
RESERVED = (STATE_DIR, RUNS_DIR)


class Workspace:
    """A workspace: the folder with sci.yaml. (A plain class: a frozen dataclass costs ~0.4 ms
    to make, and every command makes one.)"""

    __slots__ = ("root",)

    def __init__(self, root: Path):
        object.__setattr__(self, "root", root)

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"a Workspace is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        return type(other) is Workspace and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Workspace(root={self.root!r})"

    def __reduce__(self):
        return Workspace, (self.root,)

    @property
    def pipeline_file(self) -> Path:
        return self.root / PIPELINE_FILE

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS_DIR

    @property
    def scratch_dir(self) -> Path:
        """Where sandboxes are made: inside the workspace, so outputs move into the store
        by rename when the store is on the same filesystem."""
        return self.state_dir / "scratch"

    def store_root(self, configured: str | None = None) -> Path:
        """SCI_CAS wins over `store:` in sci.yaml, which wins over `cas/`."""
        env = os.environ.get("SCI_CAS")
        chosen = env or configured or DEFAULT_STORE
        path = Path(os.path.expanduser(chosen))
        return path if path.is_absolute() else (self.root / path)

    @contextmanager
    def lock(self, *, wait: bool = True) -> Iterator[None]:
        """Hold the workspace lock: one building sci process per workspace at a time.

        An flock(2) on `.sci/lock`: the kernel drops it when the process dies, even by SIGKILL,
        so a crashed build never leaves a stale lock. (filelock does the same where there is no
        fcntl; on POSIX the direct call saves its import on every command.)
        """
        if not self.state_dir.is_dir():
            self.state_dir.mkdir(parents=True, exist_ok=True)
        path = str(self.state_dir / "lock")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield from _filelock(path, wait, self.root)
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise LockHeld(f"the workspace {self.root} is locked by another sci process",
                               hint="wait for it to finish, or run without --no-wait to wait") from None
            yield
        finally:
            os.close(fd)


def find_workspace(start: Path | None = None) -> Workspace:
    """The nearest directory at or above `start` holding sci.yaml."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / PIPELINE_FILE).is_file():
            return Workspace(d)
    raise UserError(f"no {PIPELINE_FILE} in {here} or any parent directory",
                    hint=f"run sci inside a workspace, or create {PIPELINE_FILE} (see docs/format.md)")


def _filelock(path: str, wait: bool, root: Path) -> Iterator[None]:  # pragma: no cover - not POSIX
    from filelock import FileLock, Timeout

    lock = FileLock(path)
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        raise LockHeld(f"the workspace {root} is locked by another sci process",
                       hint="wait for it to finish, or run without --no-wait to wait") from None
    try:
        yield
    finally:
        lock.release()
