"""The content-addressed store (CAS): blobs, trees and action results under one directory.

Layout (format 1; see docs/store.md):

    <store>/FORMAT                    "sci-store 1"
    <store>/blobs/<d[:2]>/<d>         file contents, named by their BLAKE3 digest, read-only
    <store>/trees/<d[:2]>/<d>         canonical tree listings (hashing.tree_document), read-only
    <store>/actions/<k[:2]>/<k>       action results: canonical StepResult JSON by action key
    <store>/tmp/                      staging area; every write is tmp file + os.replace

Invariants: an object is visible under its final name only once complete (rename is atomic),
so a reader never sees a partial object and a killed writer leaves at most a stray tmp file;
the bytes of `blobs/x/xyz` hash to `xyz` unless the disk or a person damaged them (`verify`).
Materialized workspace files are copies (or reflinks), never links, unless the user opts in.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat as stat_mod
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sci import canonical
from sci.errors import StoreError
from sci.hashing import TreeEntry, digest_bytes, digest_file, entries_from_document, tree_document

# Bump when the layout changes; a store with another FORMAT is refused, never misread.
STORE_FORMAT = "sci-store 1"
_FICLONE = 0x40049409  # linux/fs.h: clone a whole file (reflink)
_FSYNC = os.environ.get("SCI_FSYNC", "") not in ("", "0")
MATERIALIZE_MODES = ("copy", "hardlink", "symlink")


@dataclass(frozen=True)
class OutputRecord:
    """What one declared output was: a file (blob) or a directory (tree)."""

    type: str  # "file" | "tree"
    digest: str
    size: int  # bytes of the file, or of all files in the tree

    def to_json(self) -> dict:
        return {"type": self.type, "digest": self.digest, "size": self.size}

    @classmethod
    def from_json(cls, data: dict) -> "OutputRecord":
        return cls(data["type"], data["digest"], data["size"])


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_NO_REFLINK: set[tuple[int, int]] = set()  # (source device, target device) pairs that refused a clone


def _reflink_or_copy(src: str, dst: str) -> None:
    """Copy src to a new file dst, sharing blocks (reflink) where the filesystem can."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        devices = (os.fstat(fin.fileno()).st_dev, os.fstat(fout.fileno()).st_dev)
        if devices not in _NO_REFLINK:
            try:
                fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY,
                                     errno.EBADF, errno.ENOSYS):
                    raise
                _NO_REFLINK.add(devices)
        # sendfile/copy_file_range: the kernel copies without a trip through Python.
        remaining = os.fstat(fin.fileno()).st_size
        offset = 0
        while remaining > 0:
            sent = os.sendfile(fout.fileno(), fin.fileno(), offset, remaining)
            if sent == 0:
                break
            offset += sent
            remaining -= sent


class Store:
    """A CAS rooted at a directory, shareable between workspaces and processes."""

    def __init__(self, root: Path, *, create: bool = True):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.trees = self.root / "trees"
        self.actions = self.root / "actions"
        self.tmp = self.root / "tmp"
        self._actions_str = str(self.actions)
        fmt = self.root / "FORMAT"
        if fmt.exists():
            found = fmt.read_text().strip()
            if found != STORE_FORMAT:
                raise StoreError(f"store {self.root} has format {found!r}, this sci reads {STORE_FORMAT!r}",
                                 hint="use a store made by this version of sci, or another store path")
        elif create:
            for d in (self.blobs, self.trees, self.actions, self.tmp):
                d.mkdir(parents=True, exist_ok=True)
            self._write_atomic(fmt, (STORE_FORMAT + "\n").encode(), readonly=False)
        else:
            raise StoreError(f"no sci store at {self.root}")

    # -- paths ---------------------------------------------------------------------------
    @staticmethod
    def _shard(base: Path, name: str) -> Path:
        return base / name[:2] / name

    def blob_path(self, digest: str) -> Path:
        return self._shard(self.blobs, digest)

    def tree_path(self, digest: str) -> Path:
        return self._shard(self.trees, digest)

    def action_path(self, key: str) -> Path:
        return self._shard(self.actions, key)

    def has_action(self, key: str) -> bool:
        """Cheap existence test (string paths: this runs once per node on every build)."""
        return os.path.exists(f"{self._actions_str}/{key[:2]}/{key}")

    # -- writing -------------------------------------------------------------------------
    def _tmp_name(self) -> str:
        try:
            fd, name = tempfile.mkstemp(dir=self.tmp, prefix="w-")
        except FileNotFoundError:  # someone removed tmp/: make it again
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.tmp, prefix="w-")
        os.close(fd)
        return name

    def _publish(self, tmp: str, final: Path, readonly: bool) -> None:
        if readonly:
            os.chmod(tmp, 0o444)
        if _FSYNC:
            _fsync_file(tmp)
        try:
            os.replace(tmp, final)
        except FileNotFoundError:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        if _FSYNC:
            _fsync_file(str(final.parent))

    def _write_atomic(self, final: Path, data: bytes, readonly: bool = True) -> None:
        tmp = self._tmp_name()
        with open(tmp, "wb") as fh:
            fh.write(data)
        self._publish(tmp, final, readonly)

    def put_bytes(self, data: bytes) -> str:
        digest = digest_bytes(data)
        path = self.blob_path(digest)
        if not path.exists():
            self._write_atomic(path, data)
        return digest

    def put_stream(self, fh) -> str:
        """Store the whole content of an open binary file (e.g. a step's captured stdout)."""
        fh.seek(0)
        data = fh.read()
        return self.put_bytes(data)

    def put_file(self, src: str | os.PathLike, digest: str | None = None, *, move: bool = False) -> str:
        """Store a file's bytes as a blob; with `move`, src may be renamed into the store."""
        src = os.fspath(src)
        if digest is None:
            digest = digest_file(src)
        path = self.blob_path(digest)
        if path.exists():
            if move:
                os.unlink(src)
            return digest
        if move:
            try:
                self._publish(src, path, readonly=True)
                return digest
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        tmp = self._tmp_name()
        os.unlink(tmp)
        _reflink_or_copy(src, tmp)
        self._publish(tmp, path, readonly=True)
        if move:
            os.unlink(src)
        return digest

    def put_tree(self, entries: list[TreeEntry]) -> str:
        data = canonical.dumps(tree_document(entries))
        digest = digest_bytes(data)
        path = self.tree_path(digest)
        if not path.exists():
            self._write_atomic(path, data)
        return digest

    def put_output(self, path: str | os.PathLike, *, move: bool = False,
                   known: dict[str, str] | None = None) -> OutputRecord:
        """Store a produced file or directory and describe it."""
        path = os.fspath(path)
        st = os.stat(path)
        if not stat_mod.S_ISDIR(st.st_mode):
            digest = self.put_file(path, move=move)
            return OutputRecord("file", digest, st.st_size)
        entries: list[TreeEntry] = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                fst = os.stat(full)
                if not stat_mod.S_ISREG(fst.st_mode):
                    continue
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                digest = self.put_file(full, move=move)
                entries.append(TreeEntry(rel, digest, fst.st_size, bool(fst.st_mode & 0o111)))
        tree = self.put_tree(entries)
        return OutputRecord("tree", tree, sum(e.size for e in entries))

    def put_action(self, key: str, result: dict) -> None:
        self._write_atomic(self.action_path(key), canonical.dumps(result))

    # -- reading -------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def has_tree(self, digest: str) -> bool:
        return self.tree_path(digest).exists()

    def get_tree(self, digest: str) -> list[TreeEntry]:
        try:
            data = self.tree_path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"tree {digest[:12]} is missing from the store {self.root}",
                             hint="run `sci build` to rebuild it, or `sci pull`") from None
        if digest_bytes(data) != digest:
            raise StoreError(f"tree {digest[:12]} in {self.root} does not match its digest",
                             hint="run `sci fsck --repair`")
        return entries_from_document(canonical.loads(data))

    def get_action(self, key: str) -> dict | None:
        try:
            return canonical.loads(self.action_path(key).read_bytes())
        except (FileNotFoundError, NotADirectoryError):  # a shard that is not a directory: damaged, a miss
            return None
        except ValueError:
            return None  # a damaged action result is a miss; fsck reports it

    def has_output(self, rec: OutputRecord) -> bool:
        """Whether every object needed to materialize `rec` is present."""
        if rec.type == "file":
            return self.has_blob(rec.digest)
        if not self.has_tree(rec.digest):
            return False
        return all(self.has_blob(e.digest) for e in self.get_tree(rec.digest))

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    # -- materializing -------------------------------------------------------------------
    def materialize(self, rec: OutputRecord, dest: str | os.PathLike, mode: str = "copy") -> None:
        """Make `dest` hold exactly `rec`, replacing whatever is there, atomically per file."""
        dest = Path(dest)
        if not dest.parent.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
        if rec.type == "file":
            self._materialize_file(rec.digest, dest, mode, executable=False)
            return
        staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.sci-"))
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; a restored directory is an ordinary one
        try:
            for e in self.get_tree(rec.digest):
                self._materialize_file(e.digest, staging / e.path, mode, e.executable)
            if dest.is_dir() and not dest.is_symlink():
                old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
                os.replace(dest, old / "d")
                os.replace(staging, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                if dest.exists() or dest.is_symlink():
                    dest.unlink()
                os.replace(staging, dest)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _materialize_file(self, digest: str, dest: Path, mode: str, executable: bool) -> None:
        src = self.blob_path(digest)
        if not src.exists():
            raise StoreError(f"object {digest[:12]} needed for {dest} is missing from the store",
                             hint="run `sci build` to rebuild it, or `sci pull`")
        if not dest.parent.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.sci-tmp-{os.getpid()}")
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        if mode == "hardlink":
            os.link(src, tmp)
        elif mode == "symlink":
            os.symlink(src.resolve(), tmp)
        else:
            _reflink_or_copy(os.fspath(src), os.fspath(tmp))
            os.chmod(tmp, 0o755 if executable else 0o644)
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)

    # -- checking ------------------------------------------------------------------------
    def iter_objects(self) -> Iterator[tuple[str, Path]]:
        """Every (kind, path) object in the store; kind is blob, tree or action."""
        for kind, base in (("blob", self.blobs), ("tree", self.trees), ("action", self.actions)):
            if not base.is_dir():
                continue
            for shard in sorted(base.iterdir()):
                if shard.is_dir():
                    for obj in sorted(shard.iterdir()):
                        yield kind, obj

    def verify_object(self, kind: str, path: Path) -> str | None:
        """None if the object is sound, else what is wrong with it."""
        try:
            if kind == "blob":
                return None if digest_file(path) == path.name else "content does not match its digest"
            data = path.read_bytes()
            if kind == "tree":
                if digest_bytes(data) != path.name:
                    return "content does not match its digest"
                entries_from_document(canonical.loads(data))
                return None
            doc = canonical.loads(data)
            if not isinstance(doc, dict) or doc.get("key") != path.name:
                return "action result does not name its own key"
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"unreadable: {exc}"

    def verify_all(self) -> list[tuple[str, Path, str]]:
        """Verify every object; return the bad ones as (kind, path, problem)."""
        bad = []
        for kind, path in self.iter_objects():
            problem = self.verify_object(kind, path)
            if problem:
                bad.append((kind, path, problem))
        return bad
