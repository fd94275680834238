"""The content-addressed store (CAS): blobs, trees and action results under one directory.

Layout (format 1; see docs/store.md):

    <store>/FORMAT                    "sci-store 1"
    <store>/blobs/<d[:2]>/<d>         file contents, named by their BLAKE3 digest, read-only
    <store>/trees/<d[:2]>/<d>         canonical tree listings (hashing.tree_document), read-only
    <store>/actions/<k[:2]>/<k>       action results: canonical StepResult JSON by action key
    <store>/actions/packs/<id>.pack   action results of one build, appended (action_packs.py)
    <store>/tmp/                      staging area; every write is tmp file + os.replace

Invariants: an object is visible under its final name only once complete (rename is atomic),
so a reader never sees a partial object and a killed writer leaves at most a stray tmp file;
the bytes of `blobs/x/xyz` hash to `xyz` unless the disk or a person damaged them (`verify`).
Materialized workspace files are copies (or reflinks), never links, unless the user opts in.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import shutil
import stat as stat_mod
from collections import namedtuple
from pathlib import Path
from typing import Any, Callable, Iterator

from blake3 import blake3

from sci import canonical, unique
from sci.workspace import symlink_on_path
from sci.store.packs import (INDEX_SUFFIX, PackIndex, PackWriter, claim, index_problem, read_pack,
                              read_record)
from sci.errors import DamagedObject, OutputError, StoreError, at_path
from sci.store.hashing import (MMAP_THRESHOLD, NameNotText, NotRegularFile, TreeEntry, UnsafeTree, digest_bytes,
                               digest_file, entries_from_document, is_staging_name, tree_document)

# Bump when the layout changes; a store with another FORMAT is refused, never misread.
STORE_FORMAT = "sci-store 1"
_FICLONE = 0x40049409  # linux/fs.h: clone a whole file (reflink)
_FSYNC = os.environ.get("SCI_FSYNC", "") not in ("", "0")
MATERIALIZE_MODES = ("copy", "hardlink", "symlink")


class OutputRecord(namedtuple("OutputRecord", "type digest size")):
    """What one declared output was: a file (blob) or a directory (tree). `type` is "file" or
    "tree"; `size` the bytes of the file, or of all files in the tree. (A named tuple: a frozen
    dataclass costs ~0.4 ms to make at start-up, and its every construction is slower.)"""

    __slots__ = ()

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


def _copy_open(fin: int, src_st: os.stat_result, fout: int) -> None:
    """Copy the open file fin into the open file fout, from its start (fout is empty, or
    `copy_over` cuts it after): a reflink (shared blocks) where the filesystem can, else
    sendfile (the kernel copies without a trip through Python)."""
    devices = (src_st.st_dev, os.fstat(fout).st_dev)
    if devices not in _NO_REFLINK:
        try:
            fcntl.ioctl(fout, _FICLONE, fin)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY,
                                 errno.EBADF, errno.ENOSYS):
                raise
            _NO_REFLINK.add(devices)
    remaining = src_st.st_size
    offset = 0
    while remaining > 0:
        sent = os.sendfile(fout, fin, offset, remaining)
        if sent == 0:
            break
        offset += sent
        remaining -= sent


def _copy_fd(src: str, fout: int) -> None:
    """Copy the file at src into the open, empty file fout (`_copy_open`)."""
    fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _copy_open(fin, os.fstat(fin), fout)
    finally:
        os.close(fin)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# Opening a FIFO for reading blocks until a writer comes; O_NONBLOCK makes the open return at
# once, so the fstat that follows can refuse it (on regular files the flag changes nothing).
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK


def _fill(fd: int, tmp: str, fill: Callable[[int], Any], where: str | Path) -> Any:
    """`fill(fd)` into the new file at `tmp`, then close it; what fill returns. On any failure
    the file is closed and removed, and an OSError (a full disk: os.write names no file) is
    said at `where`."""
    try:
        result = fill(fd)
    except BaseException as exc:
        os.close(fd)
        os.unlink(tmp)
        if isinstance(exc, OSError):
            raise at_path(exc, where) from None
        raise
    os.close(fd)
    return result


def _copy_verified(src: str, fout: int | None, digest: str) -> str | None:
    """Copy the blob at src into fout (None: only check it), verifying that its bytes hash to
    `digest`: None when they do, else what is wrong (nothing is then promised about fout).

    A small blob is read once, hashed and written from the same buffer. A large one is hashed
    first through a memory map with BLAKE3's threads, then copied by reflink or sendfile from
    the page cache (no Python buffer holds it). The hash is the cost (1 GiB: 1.7 s verified
    against 0.37 s copied, docs/security.md), paid only on the way out. A missing blob
    raises FileNotFoundError; an unreadable one (EIO, a directory in its place) is damage; a
    failure to write fout is raised as it is."""
    try:
        fin = os.open(src, _READ_FLAGS)
    except IsADirectoryError:
        return "a directory stands in its place"
    try:
        try:
            st = os.fstat(fin)
            if not stat_mod.S_ISREG(st.st_mode):
                return "a directory stands in its place" if stat_mod.S_ISDIR(st.st_mode) else "not a regular file"
            data = None
            if st.st_size < MMAP_THRESHOLD:
                data = os.read(fin, st.st_size + 1)
                good = len(data) == st.st_size and blake3(data).hexdigest() == digest
            else:
                with mmap.mmap(fin, 0, access=mmap.ACCESS_READ) as mapped:
                    good = blake3(mapped, max_threads=blake3.AUTO).hexdigest() == digest
        except ValueError:  # a file that shrank to nothing before it was mapped
            good = False
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EISDIR, errno.EINVAL):
                raise
            return f"unreadable: {exc.strerror}"
        if not good:
            return "content does not match its digest"
        if fout is not None:
            if data is not None:
                _write_all(fout, data)
            else:
                _copy_open(fin, st, fout)
        return None
    finally:
        os.close(fin)


def read_regular(path: str | os.PathLike) -> bytes:
    """The bytes of the regular file at `path`; FileNotFoundError if there is none, and an
    OSError (EISDIR, EINVAL) for anything else found there, unread: never waits on a FIFO."""
    fd = os.open(path, _READ_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise OSError(errno.EISDIR if stat_mod.S_ISDIR(st.st_mode) else errno.EINVAL,
                          "not a regular file", os.fspath(path))
        data = os.read(fd, st.st_size + 1)
        if len(data) == st.st_size:  # the common case: all of it, and at the end
            return data
        chunks = [data]  # it changed size meanwhile, or a short read: read to the end
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def copy_over(src: str, fout: int) -> None:
    """Make the open regular file fout hold exactly the bytes of the file at src: copied from
    its start, then cut to src's length (never cut to nothing first: ext4 would then write the
    old bytes out on close, `auto_da_alloc`)."""
    fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fin)
        _copy_open(fin, st, fout)
        os.ftruncate(fout, st.st_size)
    finally:
        os.close(fin)


def _reflink_or_copy(src: str, dst: str, mode: int = 0o644) -> None:
    """Copy src to dst, a new file created with `mode` (less the umask); dst must not exist."""
    fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        _copy_fd(src, fout)
    except OSError as exc:
        raise at_path(exc, dst) from None
    finally:
        os.close(fout)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _kind(mode: int) -> str:
    return ("a FIFO" if stat_mod.S_ISFIFO(mode) else "a device" if stat_mod.S_ISCHR(mode) or stat_mod.S_ISBLK(mode)
            else "a socket" if stat_mod.S_ISSOCK(mode) else "a directory" if stat_mod.S_ISDIR(mode)
            else "not a regular file")


def regular_file(path: str) -> os.stat_result:
    """The stat of the regular file at `path` (through a symbolic link); OutputError if it is
    anything else, or a link that leads nowhere."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise OutputError(f"output {path} is missing or a symbolic link that leads nowhere",
                          hint="outputs must be regular files or directories of them") from None
    if not stat_mod.S_ISREG(st.st_mode):
        raise OutputError(f"output {path} is {_kind(st.st_mode)}, not a regular file",
                          hint="outputs must be regular files or directories of them")
    return st


def check_output(path: str) -> None:
    """OutputError (or NameNotText) when what a step left at `path` can be no output, as
    `Store.put_output` would find it; reads no byte of it."""
    if os.path.isdir(path):
        output_files(path)
    else:
        regular_file(path)


def output_files(root: str) -> list[tuple[str, str, os.stat_result]]:
    """Every file of a directory output as (relative POSIX path, full path, stat), sorted by
    path. Symbolic links to regular files count as those files; any other entry (a FIFO, a
    device, a socket, a link to a directory or to nothing) raises OutputError naming it.
    sci's staging files are left out (`hashing.is_staging_name`)."""
    out: list[tuple[str, str, os.stat_result]] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(f"{root}/{rel_dir}" if rel_dir else root) as it:
            for entry in it:
                name = entry.name
                if name[0] == "." and is_staging_name(name):
                    continue
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if not name.isascii() and canonical.not_text(name):  # no tree or record can hold it
                    raise NameNotText(f"{os.path.basename(root)}/{rel}")
                st = entry.stat(follow_symlinks=False)
                if stat_mod.S_ISLNK(st.st_mode):
                    try:
                        st = os.stat(entry.path)
                    except FileNotFoundError:
                        st = None
                    if st is None or not stat_mod.S_ISREG(st.st_mode):
                        raise OutputError(f"output {root}/{rel} is a symbolic link to "
                                          + ("nothing" if st is None else _kind(st.st_mode)),
                                          hint="outputs must be regular files or directories of them")
                if stat_mod.S_ISDIR(st.st_mode):
                    stack.append(rel)
                elif stat_mod.S_ISREG(st.st_mode):
                    out.append((rel, entry.path, st))
                else:
                    raise OutputError(f"output {root}/{rel} is {_kind(st.st_mode)}, not a regular file",
                                      hint="outputs must be regular files or directories of them")
    out.sort(key=lambda row: row[0])
    return out


def _own_file(path: str) -> bool:
    """A regular file with no other name: safe to rename into the store."""
    st = os.lstat(path)
    return stat_mod.S_ISREG(st.st_mode) and st.st_nlink == 1


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# The mode of a file output in the workspace, whether built or restored (a new file's 0o644
# less the umask, as _reflink_or_copy creates it; 0o755 for an executable file of a tree).
_FILE_MODE = 0o644 & ~_umask()
_EXEC_MODE = 0o755 & ~_umask()


def _remove_staging_files(root: str) -> None:
    """Remove sci staging files (`.NAME.sci-…`) anywhere below root: they are no output."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*filenames, *dirnames):
            if name[0] == "." and is_staging_name(name):
                path = os.path.join(dirpath, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)



class Store:
    """A CAS rooted at a directory, shareable between workspaces and processes."""

    def __init__(self, root: Path, *, create: bool = True):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.trees = self.root / "trees"
        self.actions = self.root / "actions"
        self.tmp = self.root / "tmp"
        self._actions_str = str(self.actions)
        self._blobs_str = str(self.blobs)
        self._trees_str = str(self.trees)
        self._tmp_str = str(self.tmp)
        self._put: set[str] = set()  # small blobs this instance stored or found present
        self._packs = PackIndex(f"{self._actions_str}/packs")
        self._pack_writer: PackWriter | None = None
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
        return os.path.exists(f"{self._actions_str}/{key[:2]}/{key}") or self._packs.lookup(key) is not None

    def action_file(self, key: str) -> str | None:
        """The file that holds an action result: its loose file or its pack."""
        loose = f"{self._actions_str}/{key[:2]}/{key}"
        if os.path.exists(loose):
            return loose
        entry = self._packs.lookup(key)
        return entry[0] if entry else None

    # -- writing -------------------------------------------------------------------------
    def _create_tmp(self, mode: int) -> tuple[int, str]:
        """A new, empty, uniquely named file in tmp/, open for writing (created with `mode`:
        a read-only object is born read-only, no chmod after)."""
        while True:
            name = f"{self._tmp_str}/{unique.name('w-')}"
            try:
                return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode), name
            except FileExistsError:
                continue  # left by a crashed writer that had this pid and salt: take the next name
            except FileNotFoundError:  # someone removed tmp/: make it again
                self.tmp.mkdir(parents=True, exist_ok=True)

    def _tmp_name(self) -> str:
        """A new, empty staging file's path (for writers that fill it by name)."""
        fd, name = self._create_tmp(0o644)
        os.close(fd)
        return name

    def _replace(self, tmp: str, final: str | Path) -> None:
        """Publish tmp under its final name (atomic), making the shard directory if needed."""
        if _FSYNC:
            _fsync_file(tmp)
        try:
            os.replace(tmp, final)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(tmp, final)
        if _FSYNC:
            _fsync_file(os.path.dirname(final))

    def _publish(self, tmp: str, final: str | Path, readonly: bool) -> None:
        if readonly:
            os.chmod(tmp, 0o444)
        self._replace(tmp, final)

    def _write_new(self, final: str | Path, fill: Callable[[int], None], mode: int = 0o444) -> None:
        """A new object: a staging file filled by `fill(fd)`, then published under `final`
        (atomically); a failed fill leaves nothing behind."""
        fd, tmp = self._create_tmp(mode)
        _fill(fd, tmp, fill, final)
        self._replace(tmp, final)

    def _write_atomic(self, final: str | Path, data: bytes, readonly: bool = True) -> None:
        self._write_new(final, lambda fd: _write_all(fd, data), 0o444 if readonly else 0o644)

    def _present(self, path: str | Path, size: int | None = None) -> bool:
        """Whether an object file is at `path` (of `size` bytes, when the caller knows how many
        its content has). Anything else found there (a directory, a FIFO, a blob of another
        size) is damage: it is dropped, and the caller writes the object anew. (A damaged blob
        of the right size is found when it is next copied out, or by `sci fsck`.)"""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat_mod.S_ISREG(st.st_mode) and (size is None or st.st_size == size):
            return True
        self.drop(path)
        return False

    def drop(self, path: str | Path) -> None:
        """Remove a damaged object, or whatever stands in its place (a directory included)."""
        path = os.fspath(path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat_mod.S_ISDIR(st.st_mode):
            for dirpath, _dirs, _files in os.walk(path):  # a read-only directory would keep its files
                try:
                    os.chmod(dirpath, 0o755)
                except OSError:
                    pass
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _damaged(self, kind: str, digest: str, path: str, problem: str, needed_for: str) -> DamagedObject:
        """Drop a damaged object and say so: the error the caller raises."""
        self.drop(path)
        return DamagedObject(f"{kind} {digest[:12]} needed for {needed_for} was damaged ({problem}); "
                             "removed from the store", hint="the node that made it runs again")

    def put_bytes(self, data: bytes) -> str:
        digest = digest_bytes(data)
        if digest in self._put:
            return digest
        path = f"{self._blobs_str}/{digest[:2]}/{digest}"
        if not self._present(path):
            self._write_atomic(path, data)
        if len(data) <= 64:  # small, recurring blobs (empty logs): ask the disk once per Store
            self._put.add(digest)
        return digest

    def put_stream(self, fh) -> str:
        """Store the whole content of an open binary file (e.g. a step's captured stdout)."""
        fh.flush()
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        return self.put_bytes(os.pread(fd, size, 0) if size else b"")

    def put_file(self, src: str | os.PathLike, digest: str | None = None, *, move: bool = False) -> str:
        """Store a file's bytes as a blob; with `move`, src may be renamed into the store (when
        it is a plain file of its own: a symlink, or a file with other hard links — a step can
        link one of its inputs as its output — is copied, so nothing else shares the blob)."""
        src = os.fspath(src)
        size = None
        if digest is None:
            st = os.stat(src)
            if not stat_mod.S_ISREG(st.st_mode):
                raise NotRegularFile(src, st.st_mode)
            size = st.st_size
            digest = digest_file(src, size)
        path = self.blob_path(digest)
        if self._present(path, size):
            if move:
                os.unlink(src)
            return digest
        if move and _own_file(src):
            try:
                self._publish(src, path, readonly=True)
                return digest
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        self._copy_in(src, path)
        if move:
            os.unlink(src)
        return digest

    def _copy_in(self, src: str, final: str | Path) -> None:
        """A read-only copy of the file at src, published under `final` (atomically)."""
        self._write_new(final, lambda fd: _copy_fd(src, fd))

    def put_and_place(self, src: str, dest: str) -> OutputRecord:
        """Store the file a sandboxed step wrote at src and make it the workspace's file at dest.

        The step's own file is renamed into the workspace and the store gets a copy only when
        it lacks the content, so an output costs one new file when its content is new and none
        when the store holds it (a re-run, identical outputs). The workspace file gets the
        mode a restore from the store gives it, so a built and a restored output look alike."""
        st = os.lstat(src)
        if not stat_mod.S_ISREG(st.st_mode) or st.st_nlink != 1:  # not the step's own file: copies
            size = regular_file(src).st_size
            digest = self._place_copy(src, None, dest, False)
            os.unlink(src)
            return OutputRecord("file", digest, size)
        digest = digest_file(src, st.st_size)
        blob = f"{self._blobs_str}/{digest[:2]}/{digest}"
        if not self._present(blob, st.st_size):
            self._copy_in(src, blob)
        if st.st_mode & 0o7777 != _FILE_MODE:
            os.chmod(src, _FILE_MODE)
        for attempt in range(2):
            try:
                os.replace(src, dest)
                break
            except FileNotFoundError:
                if attempt:
                    raise
                os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
            except IsADirectoryError:  # a directory where the file goes: the output replaces it
                shutil.rmtree(dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                self._place_copy(src, digest, dest, False)  # scratch on another disk
                os.unlink(src)
                break
        return OutputRecord("file", digest, st.st_size)

    def _place_copy(self, src: str, digest: str | None, dest: str, executable: bool) -> str:
        """Store the file at src (unless `digest` says it is stored) and place a verified copy
        of the blob at dest. An old blob of the same bytes that turns out damaged is dropped by
        the copy; src is then stored again and copied once more. Returns the digest."""
        if digest is None:
            digest = self.put_file(src)
        try:
            self._materialize_file(digest, dest, "copy", executable)
        except DamagedObject:
            self.put_file(src)
            self._materialize_file(digest, dest, "copy", executable)
        return digest

    def put_and_place_tree(self, src: str, dest: str) -> OutputRecord:
        """`put_and_place` for a directory a sandboxed step wrote: each file is stored (a copy,
        where the store lacks it) and the step's directory is moved to dest whole, so the
        workspace gets the step's own bytes, never a store copy that may have rotted. Files
        get the modes a restore gives them; sci staging files in it are removed. A file that
        is a link (symbolic, or hard with other names) is replaced by a copy of its bytes."""
        entries: list[TreeEntry] = []
        for rel, full, st in output_files(src):
            executable = bool(st.st_mode & 0o111)
            lst = os.lstat(full)
            if not stat_mod.S_ISREG(lst.st_mode) or lst.st_nlink != 1:
                digest = self._place_copy(full, None, full, executable)  # the link gives way to a copy
            else:
                digest = digest_file(full, st.st_size)
                blob = f"{self._blobs_str}/{digest[:2]}/{digest}"
                if not self._present(blob, st.st_size):
                    self._copy_in(full, blob)
                mode = _EXEC_MODE if executable else _FILE_MODE
                if lst.st_mode & 0o7777 != mode:
                    os.chmod(full, mode)
            entries.append(TreeEntry(rel, digest, st.st_size, executable))
        _remove_staging_files(src)
        tree = self.put_tree(entries)
        rec = OutputRecord("tree", tree, sum(e.size for e in entries))
        parent, name = os.path.split(dest.rstrip("/"))
        stage = f"{parent}/.{name}.sci-stage"
        try:
            self._swap_in(src, dest.rstrip("/"), stage)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            try:  # the scratch is on another disk: a verified copy from the store
                self.materialize(rec, dest)
            except DamagedObject:  # an old, damaged blob of these bytes (now dropped): again
                for _rel, full, _st in output_files(src):
                    self.put_file(full)
                self.materialize(rec, dest)
        return rec

    def put_tree(self, entries: list[TreeEntry]) -> str:
        data = canonical.dumps(tree_document(entries))
        digest = digest_bytes(data)
        path = self.tree_path(digest)
        # A tree is small: one found under this name is compared whole, and a damaged one (it
        # may have been seen, not dropped, by a look that only asked `has_output`) replaced.
        if self._present(path, len(data)):
            try:
                if read_regular(path) == data:
                    return digest
            except OSError:
                pass
            self.drop(path)
        self._write_atomic(path, data)
        return digest

    def put_output(self, path: str | os.PathLike, *, move: bool = False,
                   known: dict[str, str] | None = None) -> OutputRecord:
        """Store a produced file or directory and describe it. Only regular files (a symbolic
        link to one counts as the file) and directories of them are outputs: anything else
        raises OutputError naming it, before a byte of it is read (a FIFO or /dev/zero would
        never end). sci's own staging files (`.NAME.sci-…`) are no part of a directory."""
        path = os.fspath(path)
        st = os.stat(path) if os.path.isdir(path) else regular_file(path)
        if not stat_mod.S_ISDIR(st.st_mode):
            digest = self.put_file(path, move=move)
            return OutputRecord("file", digest, st.st_size)
        files = output_files(path)
        entries = [TreeEntry(rel, self.put_file(full, move=move), fst.st_size, bool(fst.st_mode & 0o111))
                   for rel, full, fst in files]
        tree = self.put_tree(entries)
        return OutputRecord("tree", tree, sum(e.size for e in entries))

    def start_pack(self) -> None:
        """From now on action results go into one new pack (a build's), not a file each."""
        self._pack_writer = PackWriter(f"{self._actions_str}/packs")

    # More packs than this, and a build merges the small ones (git's auto-gc, in spirit): lookups
    # read every pack, so their number is kept down without anyone running `sci gc`.
    MERGE_PACKS_ABOVE = 32
    SMALL_PACK = 4 << 20

    def finish_pack(self) -> None:
        writer, self._pack_writer = self._pack_writer, None
        if writer is None:
            return
        writer.close()
        packs = self._packs.packs()
        if len(packs) > self.MERGE_PACKS_ABOVE:
            small = [p for p in packs if _size(p) < self.SMALL_PACK]
            try:
                self.rewrite_packs(lambda key: True, only=small, check=False)
            except OSError:
                pass  # housekeeping: the packs stay as they are, and the next build tries again

    def put_action(self, key: str, result: dict) -> None:
        data = canonical.dumps(result)
        if self._pack_writer is not None:
            self._packs.add(key, *self._pack_writer.append(key, data))
        else:
            self._write_atomic(f"{self._actions_str}/{key[:2]}/{key}", data)

    # -- reading -------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def has_tree(self, digest: str) -> bool:
        return self.tree_path(digest).exists()

    def get_tree(self, digest: str, *, drop: bool = True, needed_for: str = "a directory output") -> list[TreeEntry]:
        """A tree's entries, verified against its digest. A damaged tree raises DamagedObject
        (and, with `drop`, is removed from the store first); a missing one StoreError."""
        path = f"{self._trees_str}/{digest[:2]}/{digest}"
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            raise StoreError(f"tree {digest[:12]} is missing from the store {self.root}",
                             hint="run `sci build` to rebuild it, or `sci pull`") from None
        except IsADirectoryError:
            fd = None
        problem = None
        try:
            if fd is None or not stat_mod.S_ISREG(os.fstat(fd).st_mode):
                problem = "not a regular file"
            else:
                data = os.read(fd, os.fstat(fd).st_size + 1)
                if digest_bytes(data) != digest:
                    problem = "content does not match its digest"
                else:
                    try:
                        return entries_from_document(canonical.loads(data))
                    except (ValueError, KeyError, TypeError) as exc:  # UnsafeTree: its bytes are its
                        # name's, so it is no damage but a forgery: refused wherever it is read, never
                        # materialized, left for `sci fsck` to name (and --repair to drop)
                        refused = exc if isinstance(exc, UnsafeTree) else "not a tree document"
                        raise StoreError(f"tree {digest[:12]} in {self.root} is refused: {refused}",
                                         hint="run `sci fsck --repair` to drop it, then `sci build`") from None
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EISDIR, errno.EINVAL):
                raise
            problem = f"unreadable: {exc.strerror}"
        finally:
            if fd is not None:
                os.close(fd)
        if drop:
            raise self._damaged("tree", digest, path, problem, needed_for)
        raise DamagedObject(f"tree {digest[:12]} in {self.root} is damaged ({problem})",
                            hint="run `sci fsck --repair`")

    def action_bytes(self, key: str) -> bytes | None:
        """The stored bytes of an action result (canonical JSON), loose or packed; None if absent."""
        try:
            return read_regular(f"{self._actions_str}/{key[:2]}/{key}")
        except (FileNotFoundError, NotADirectoryError):  # a shard that is not a directory: damaged, a miss
            pass
        except OSError as exc:  # a directory or a FIFO where the result should be: damaged, a miss
            if exc.errno not in (errno.EISDIR, errno.EINVAL):
                raise
        entry = self._packs.lookup(key)
        if entry is None:
            return None
        try:
            return read_record(*entry)
        except FileNotFoundError:  # the pack was rewritten meanwhile (gc): look again
            self._packs.refresh()
            entry = self._packs.lookup(key)
            return read_record(*entry) if entry else None

    def get_action(self, key: str) -> dict | None:
        data = self.action_bytes(key)
        if data is None:
            return None
        try:
            return canonical.loads(data)
        except ValueError:
            return None  # a damaged action result is a miss; fsck reports it

    def iter_actions(self) -> Iterator[tuple[str, bytes, str]]:
        """Every stored action result as (key, bytes, file holding it), loose ones first."""
        for kind, path in self.iter_objects():
            if kind == "action":
                try:
                    yield path.name, read_regular(path), str(path)
                except OSError:
                    continue
        for key, (pack, offset, length) in sorted(self._packs.entries().items()):
            try:
                yield key, read_record(pack, offset, length), pack
            except OSError:
                continue

    def rewrite_packs(self, keep, *, dry_run: bool = False, only: list[str] | None = None,
                      check: bool = True) -> list[tuple[str, int]]:
        """Write the packed results whose key `keep(key)` accepts (and, with `check`, that are
        sound) into one new pack and remove the old packs (all, or `only` these); returns the
        (key, size) of the records left out. A pack a build is still writing is left alone,
        and nothing is removed before the new pack is complete."""
        claims: dict[str, int] = {}
        kept: dict[str, bytes] = {}
        dropped: list[tuple[str, int]] = []
        try:
            for pack in self._packs.packs() if only is None else only:
                fd = claim(pack) if not dry_run else None
                if fd is None and not dry_run:
                    continue
                if fd is not None:
                    claims[pack] = fd
                try:
                    data, records, _problem = read_pack(pack)
                except OSError:
                    continue
                for key, (offset, length) in records.items():
                    body = data[offset:offset + length]
                    if keep(key) and (not check or self._sound_action(key, body)):
                        kept[key] = body
                    else:
                        dropped.append((key, length))
            if dry_run or not claims:
                return dropped
            writer = PackWriter(f"{self._actions_str}/packs")
            try:
                for key in sorted(kept):
                    writer.append(key, kept[key])
            finally:
                writer.close()
            for pack in claims:
                for path in (pack + INDEX_SUFFIX, pack):  # the index first: a pack never has a stale one
                    try:
                        os.chmod(path, 0o644)
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            _remove_orphan_indexes(f"{self._actions_str}/packs")
        finally:
            for fd in claims.values():
                os.close(fd)
        self._packs.refresh()
        return dropped

    @staticmethod
    def _sound_action(key: str, data: bytes) -> bool:
        try:
            doc = canonical.loads(data)
        except ValueError:
            return False
        return isinstance(doc, dict) and doc.get("key") == key

    def has_output(self, rec: OutputRecord, *, drop: bool = False, needed_for: str = "a directory output") -> bool:
        """Whether every object needed to materialize `rec` is present (a damaged tree is not;
        whether the blobs are sound is checked when they are copied out). With `drop`, a
        damaged tree is removed from the store and DamagedObject raised (a build's look);
        without, the store is left as it is (`sci status`, which writes nothing)."""
        if rec.type == "file":
            return self.has_blob(rec.digest)
        if not self.has_tree(rec.digest):
            return False
        try:
            entries = self.get_tree(rec.digest, drop=drop, needed_for=needed_for)
        except DamagedObject:
            if drop:
                raise
            return False
        except StoreError:
            return False
        return all(self.has_blob(e.digest) for e in entries)

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    # -- materializing -------------------------------------------------------------------
    def materialize(self, rec: OutputRecord, dest: str | os.PathLike, mode: str = "copy", *,
                    within: str | None = None) -> None:
        """Make `dest` hold exactly `rec`, replacing whatever is there, atomically per file.
        Every blob is verified as it is copied: a damaged one is dropped from the store and
        DamagedObject raised, with `dest` as it was (a directory output is swapped in whole).
        With `within` (the workspace root), a dest whose way from there passes a symbolic link
        is refused (StoreError): the file would land wherever the link leads.

        A directory is assembled in `.NAME.sci-stage/new` beside it, the old one moved to
        `.NAME.sci-stage/old`, the new one moved in, the stage removed: whenever sci is killed,
        `dest` is the old or the new directory, and what is left over has that one fixed name,
        removed by the next restore of NAME (and no part of any tree: hashing.is_staging_name)."""
        if within is not None:
            rel = os.path.relpath(dest, within)
            link = symlink_on_path(within, rel)
            if link is not None:
                raise StoreError(f"cannot restore {rel}: {link} is a symbolic link, out of the workspace",
                                 hint=f"remove the link {link}; outputs stay inside the workspace")
        if rec.type == "file":
            self._materialize_file(rec.digest, os.fspath(dest), mode, executable=False)
            return
        dest = os.fspath(dest).rstrip("/")
        parent, name = os.path.split(dest)
        stage = f"{parent}/.{name}.sci-stage"
        if os.path.lexists(stage):
            self._remove_stage(stage)
        try:
            os.makedirs(f"{stage}/new")
        except FileNotFoundError:
            os.makedirs(parent, exist_ok=True)
            os.makedirs(f"{stage}/new")
        try:
            new = f"{stage}/new"
            for e in self.get_tree(rec.digest, needed_for=dest):
                self._materialize_file(e.digest, f"{new}/{e.path}", mode, e.executable, f"{dest}/{e.path}")
            self._swap_in(new, dest, stage)
        finally:
            self._remove_stage(stage)

    def _swap_in(self, new: str, dest: str, stage: str) -> None:
        """Move the directory `new` to dest, the directory (or file) there moving aside into
        `stage`/old first; the stage is removed after. dest's parents are made if missing."""
        if os.path.isdir(dest) and not os.path.islink(dest):
            os.makedirs(stage, exist_ok=True)
            if os.path.lexists(f"{stage}/old"):
                self._remove_stage(f"{stage}/old")
            os.replace(dest, f"{stage}/old")
        elif os.path.lexists(dest):
            os.unlink(dest)
        try:
            os.replace(new, dest)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(new, dest)
        finally:
            self._remove_stage(stage)

    @staticmethod
    def _remove_stage(stage: str) -> None:
        try:
            shutil.rmtree(stage)
        except FileNotFoundError:
            pass
        except OSError:  # read-only directories inside (an old output's): open them, try again
            for dirpath, _dirs, _files in os.walk(stage):
                try:
                    os.chmod(dirpath, 0o755)
                except OSError:
                    pass
            shutil.rmtree(stage, ignore_errors=True)

    def _materialize_file(self, digest: str, dest: str, mode: str, executable: bool,
                          needed_for: str | None = None) -> None:
        """Place one blob at dest through a staging name beside it, `.NAME.sci-tmp` (fixed: a
        killed sci's leftover is the name the next restore of NAME uses, and removes), after
        verifying the blob's bytes. This runs once per output of every executed node, so it
        asks the filesystem only what it must: a missing parent or source, a stale staging
        file or a directory in the way show up as errors, not stats."""
        src = f"{self._blobs_str}/{digest[:2]}/{digest}"
        parent, name = os.path.split(dest)
        tmp = f"{parent}/.{name}.sci-tmp"
        problem = None
        for attempt in range(3):
            try:
                if mode == "copy":
                    problem = self._copy_verified_to(src, tmp, digest, 0o755 if executable else 0o644)
                else:
                    problem = _copy_verified(src, None, digest)
                    if problem is None:
                        if mode == "hardlink":
                            os.link(src, tmp)
                        else:
                            os.symlink(os.path.realpath(src), tmp)
                break
            except FileExistsError:  # a staging file left by a killed sci
                os.unlink(tmp)
            except FileNotFoundError:
                if not os.path.lexists(src):
                    raise StoreError(f"object {digest[:12]} needed for {needed_for or dest} is missing from the store",
                                     hint="run `sci build` to rebuild it, or `sci pull`") from None
                if attempt:
                    raise
                os.makedirs(parent or ".", exist_ok=True)
        if problem is not None:
            raise self._damaged("object", digest, src, problem, needed_for or dest)
        try:
            os.replace(tmp, dest)
        except IsADirectoryError:  # a directory where the file goes: the output replaces it
            shutil.rmtree(dest)
            os.replace(tmp, dest)

    @staticmethod
    def _copy_verified_to(src: str, tmp: str, digest: str, mode: int) -> str | None:
        """`_copy_verified` into a new file at tmp; on damage (or any failure) tmp is removed."""
        fout = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        problem = _fill(fout, tmp, lambda fd: _copy_verified(src, fd, digest), tmp)
        if problem is not None:
            os.unlink(tmp)
        return problem

    # -- checking ------------------------------------------------------------------------
    def iter_objects(self) -> Iterator[tuple[str, Path]]:
        """Every (kind, path) object in the store; kind is blob, tree, action (a loose result)
        or pack (a file of action results)."""
        for kind, base in (("blob", self.blobs), ("tree", self.trees), ("action", self.actions)):
            if not base.is_dir():
                continue
            for shard in sorted(base.iterdir()):
                if shard.name == "packs" and kind == "action":
                    for pack in self._packs.packs():
                        yield "pack", Path(pack)
                elif shard.is_dir():
                    for obj in sorted(shard.iterdir()):
                        yield kind, obj

    def verify_object(self, kind: str, path: Path) -> str | None:
        """None if the object is sound, else what is wrong with it."""
        try:
            if kind == "blob":
                return _copy_verified(str(path), None, path.name)
            if kind == "pack":
                data, records, problem = read_pack(str(path))
                for key, (offset, length) in records.items():
                    if not self._sound_action(key, data[offset:offset + length]):
                        return f"the record of {key[:12]} is not an action result naming its own key"
                return problem or index_problem(str(path), records)
            data = read_regular(path)
            if kind == "tree":
                if digest_bytes(data) != path.name:
                    return "content does not match its digest"
                try:
                    entries_from_document(canonical.loads(data))
                except UnsafeTree as exc:
                    return str(exc)
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


def _remove_orphan_indexes(packs_dir: str) -> None:
    """Key indexes whose pack is gone (a process killed between removing the two)."""
    try:
        names = set(os.listdir(packs_dir))
    except OSError:
        return
    for name in names:
        if name.endswith(INDEX_SUFFIX) and name[:-len(INDEX_SUFFIX)] not in names:
            try:
                os.unlink(f"{packs_dir}/{name}")
            except OSError:
                pass
