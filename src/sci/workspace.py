"""The workspace: its root, the `.sci/` state folder, `runs/`, the store location and the lock."""

from __future__ import annotations

import os
import stat as stat_mod
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sci.errors import LockHeld, UserError

PIPELINE_FILE = "sci.yaml"
STATE_DIR = ".sci"
RUNS_DIR = "runs"
RUNS_INDEX = "runs"  # in STATE_DIR: runs/ holds only one folder per run (SPEC §1)
DEFAULT_STORE = "cas"
# The directories sci owns in every workspace; the store's is added where it lies inside (owned).
RESERVED = (STATE_DIR, RUNS_DIR)


def owns(rel_path: str, owned: tuple[str, ...]) -> str | None:
    """The one rule for the paths sci reserves: the directory of `owned` (Workspace.owned) that
    the workspace-relative POSIX path `rel_path` is or lies in, else None. Such a path is never
    a dep, an output, a code or evidence file, a glob match or a bundle member."""
    for d in owned:
        if rel_path.startswith(d) and (len(rel_path) == len(d) or rel_path[len(d)] == "/"):
            return d
    return None


_UNSURE = object()


def store_setting(yaml_bytes: bytes):
    """sci.yaml's top-level `store:` value (None: not set), found by a line search, not a YAML
    parse: for the no-op path, which never parses sci.yaml. `_UNSURE` where the search cannot
    be certain (a quoted or flow-style key, an escape, a block scalar): the caller then owns
    less, never more, than the plan does, which only costs a fallback to the normal path."""
    import re

    # The top-level lines that could set the store: a key naming it, or a form this search does
    # not follow (a flow mapping, a quoted, explicit, tagged or anchored key, a merge).
    # An indented root mapping, or content after `---`, is not searched either.
    lines = re.findall(rb"""^(?:(?=[^\s#]).*store|[{\[?"'&!*]|<<|---[ \t]+[^\s#]).*$""", yaml_bytes, re.M)
    first = re.search(rb"^(?![ \t]*(?:#|%|---|\r?$)).", yaml_bytes, re.M)
    if first is not None and first[0] in b" \t":
        return _UNSURE
    if not lines:
        return None
    match = re.fullmatch(rb"""store:[ \t]*(?:"([\w ./~+@,=-]+)"|'([\w ./~+@,=-]+)'|([\w./~+@,=-]+))"""
                         rb"""[ \t]*(?:[ \t]#.*)?\r?""", lines[0])
    if len(lines) != 1 or match is None:
        return _UNSURE
    quoted = match[1] if match[1] is not None else match[2]
    value = (quoted if quoted is not None else match[3]).decode("utf-8")
    return None if quoted is None and value in ("~", "null", "Null", "NULL") else value


_OWNED: dict = {}  # (root, SCI_CAS, sci.yaml's stat signature) -> Workspace.owned()


def escape_problem(rel: str) -> str | None:
    """Why a path a user wrote does not stay inside the workspace ("is absolute", "escapes the
    workspace"), or None. Lexical, as every path in sci.yaml is (SPEC §2): `..` may not climb
    out; a symbolic link the workspace's owner made is theirs to make."""
    import posixpath
    import re

    text = rel.strip()
    if text.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", text) or text.startswith("~"):
        return "is absolute"
    norm = posixpath.normpath(text) if text else text
    if norm == ".." or norm.startswith("../"):
        return "escapes the workspace"
    return None


class Workspace:
    """A workspace: the folder with sci.yaml. (A plain class: a frozen dataclass costs ~0.4 ms
    to make, and every command makes one.)

    `scope`: None for an ordinary command. For `sci repro-check`, targets (node names, step
    names or output paths): only their closure is planned, so steps outside it need none of
    their sources or code (SPEC §7). A node's key never depends on which other nodes exist,
    so a scoped plan gives the closure's nodes the keys the full plan gives them.
    """

    __slots__ = ("root", "scope")

    def __init__(self, root: Path, scope: tuple[str, ...] | None = None):
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "scope", scope)

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"a Workspace is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        return type(other) is Workspace and other.root == self.root and other.scope == self.scope

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        scope = "" if self.scope is None else f", scope=<{len(self.scope)} nodes>"
        return f"Workspace(root={self.root!r}{scope})"

    def __reduce__(self):
        return Workspace, (self.root, self.scope)

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
    def runs_index(self) -> Path:
        """`.sci/runs`: a summary per finished run, a cache of runs/ (records/index.py)."""
        return self.state_dir / RUNS_INDEX

    @classmethod
    def of_run(cls, run_dir: Path) -> "Workspace":
        """The workspace a run folder belongs to (run folders are `runs_dir / run_id`)."""
        return cls(Path(run_dir).parent.parent)

    @property
    def scratch_dir(self) -> Path:
        """Where this workspace's sandboxes are made: outside it, so that no relative path a
        step reads or writes (`../../../f`) reaches the workspace (SPEC §2; docs/security.md).
        `SCI_SCRATCH` names the base folder; else the user's cache folder
        (`$XDG_CACHE_HOME/sci/scratch`, `~/.cache/sci/scratch`), else the system's temporary
        folder, whichever first lies outside the workspace. On the workspace's filesystem,
        outputs move into the workspace by rename; on another, they are copied."""
        from sci.store.hashing import digest_bytes

        base = _scratch_base(self.root)
        tag = digest_bytes(os.fsencode(str(self.root)))[:16]
        name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in self.root.name[:40])
        return base / f"{name}-{tag}"

    def store_root(self, configured: str | None = None) -> Path:
        """SCI_CAS wins over `store:` in sci.yaml, which wins over `cas/`."""
        env = os.environ.get("SCI_CAS")
        chosen = env or configured or DEFAULT_STORE
        path = Path(os.path.expanduser(chosen))
        return path if path.is_absolute() else (self.root / path)

    def owned(self, configured_store: str | None = None, *, read_config: bool = False) -> tuple[str, ...]:
        """The workspace-relative directories sci owns here (see `owns`): `.sci`, `runs` and,
        when the store lies inside the workspace, the store's directory (only it: a store at
        `data/cas` leaves the rest of `data/` to the user). `read_config`: take the store's
        location from sci.yaml (`store_setting`) instead of `configured_store`."""
        if read_config:
            from sci.store.hashing import stat_signature

            memo = (self.root, os.environ.get("SCI_CAS"), stat_signature(self.pipeline_file))
            hit = _OWNED.get(memo)
            if hit is None:
                try:
                    setting = store_setting(self.pipeline_file.read_bytes())
                except OSError:
                    setting = None
                hit = _OWNED[memo] = RESERVED if setting is _UNSURE and not memo[1] else self.owned(setting)
            return hit
        try:
            rel = self.store_root(configured_store).resolve().relative_to(self.root.resolve())
        except (ValueError, OSError):
            return RESERVED
        return (*RESERVED, rel.as_posix()) if rel.parts else RESERVED

    def unowned(self, paths: list[str], owned: tuple[str, ...] | None = None) -> list[str]:
        """`paths` (workspace-relative) less those sci owns; `owned` defaults to what sci.yaml's
        store setting gives (`owned(read_config=True)`)."""
        if owned is None:
            owned = self.owned(read_config=True)
        return [p for p in paths if owns(p, owned) is None]

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


def _scratch_base(root: Path) -> Path:
    chosen = os.environ.get("SCI_SCRATCH")
    if chosen:
        return Path(os.path.abspath(os.path.expanduser(chosen)))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    base = Path(cache) / "sci" / "scratch"
    real, real_root = os.path.realpath(base), os.path.realpath(root)
    if os.path.isabs(real) and not (real == real_root or real.startswith(real_root.rstrip("/") + "/")):
        return base
    import tempfile  # only here: it pulls in random (a build's edit path imports neither)

    return Path(tempfile.gettempdir()) / f"sci-scratch-{os.getuid()}"


def symlink_on_path(root: str, rel: str) -> str | None:
    """The first directory on the way from the workspace root to the workspace path `rel`
    (normalized, relative) that is a symbolic link, or None: a file placed at `rel` would
    land wherever that link leads. Missing directories are no link (sci makes them)."""
    parts = rel.split("/")[:-1]
    path = root
    for i, part in enumerate(parts):
        path = f"{path}/{part}"
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat_mod.S_ISLNK(st.st_mode):
            return "/".join(parts[:i + 1])
    return None


def find_workspace(start: Path | None = None) -> Workspace:
    """The nearest directory at or above `start` holding sci.yaml."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        candidate = d / PIPELINE_FILE
        if candidate.is_file():
            return Workspace(d)
        if os.path.lexists(candidate):  # a FIFO, a device, a directory, a broken link: never read
            raise UserError(f"{candidate} is not a regular file",
                            hint=f"{PIPELINE_FILE} must be a YAML file (see docs/format.md)")
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
