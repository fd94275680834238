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
import os
import shutil
import stat as stat_mod
from collections import namedtuple
from pathlib import Path
from typing import Callable, Iterator

from sci import canonical, unique
from sci.store.packs import (INDEX_SUFFIX, PackIndex, PackWriter, claim, index_problem, read_pack,
                              read_record)
from sci.errors import StoreError
from sci.store.hashing import (TreeEntry, UnsafeTree, check_names, digest_bytes, digest_file, entries_from_document,
                               tree_document)

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


def _copy_fd(src: str, fout: int) -> None:
    """Copy the file at src into the open, empty file fout: a reflink (shared blocks) where the
    filesystem can, else sendfile (the kernel copies without a trip through Python)."""
    fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        src_st = os.fstat(fin)
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
    finally:
        os.close(fin)


def _reflink_or_copy(src: str, dst: str, mode: int = 0o644) -> None:
    """Copy src to dst, a new file created with `mode` (less the umask); dst must not exist."""
    fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        _copy_fd(src, fout)
    finally:
        os.close(fout)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _own_file(path: str) -> bool:
    """A regular file with no other name: safe to rename into the store."""
    st = os.lstat(path)
    return stat_mod.S_ISREG(st.st_mode) and st.st_nlink == 1


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# The mode of a file output in the workspace, whether built or restored (a new file's 0o644
# less the umask, as _reflink_or_copy creates it).
_FILE_MODE = 0o644 & ~_umask()



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
        try:
            fill(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        self._replace(tmp, final)

    def _write_atomic(self, final: str | Path, data: bytes, readonly: bool = True) -> None:
        def write_all(fd: int) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]

        self._write_new(final, write_all, 0o444 if readonly else 0o644)

    def put_bytes(self, data: bytes) -> str:
        digest = digest_bytes(data)
        if digest in self._put:
            return digest
        path = f"{self._blobs_str}/{digest[:2]}/{digest}"
        if not os.path.exists(path):
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
        if digest is None:
            digest = digest_file(src)
        path = self.blob_path(digest)
        if path.exists():
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
            size = os.stat(src).st_size
            digest = self.put_file(src)
            os.unlink(src)
            self._materialize_file(digest, dest, "copy", executable=False)
            return OutputRecord("file", digest, size)
        digest = digest_file(src, st.st_size)
        blob = f"{self._blobs_str}/{digest[:2]}/{digest}"
        if not os.path.exists(blob):
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
                self._materialize_file(digest, dest, "copy", executable=False)  # scratch on another disk
                os.unlink(src)
                break
        return OutputRecord("file", digest, st.st_size)

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
            check_names(dirnames + filenames, f"{os.path.relpath(dirpath, os.path.dirname(path))}/")
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

    def get_tree(self, digest: str) -> list[TreeEntry]:
        try:
            data = self.tree_path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"tree {digest[:12]} is missing from the store {self.root}",
                             hint="run `sci build` to rebuild it, or `sci pull`") from None
        if digest_bytes(data) != digest:
            raise StoreError(f"tree {digest[:12]} in {self.root} does not match its digest",
                             hint="run `sci fsck --repair`")
        try:
            return entries_from_document(canonical.loads(data))
        except ValueError as exc:  # UnsafeTree: never materialized, wherever it came from
            raise StoreError(f"tree {digest[:12]} in {self.root} is refused: {exc}",
                             hint="run `sci fsck --repair` to drop it, then `sci build`") from None

    def action_bytes(self, key: str) -> bytes | None:
        """The stored bytes of an action result (canonical JSON), loose or packed; None if absent."""
        try:
            with open(f"{self._actions_str}/{key[:2]}/{key}", "rb") as fh:
                return fh.read()
        except (FileNotFoundError, NotADirectoryError):  # a shard that is not a directory: damaged, a miss
            pass
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
                    yield path.name, path.read_bytes(), str(path)
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
        if rec.type == "file":
            self._materialize_file(rec.digest, os.fspath(dest), mode, executable=False)
            return
        dest = Path(dest)
        if not dest.parent.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(unique.make_dir(dest.parent, f".{dest.name}.sci-", 0o755))  # an ordinary directory
        try:
            for e in self.get_tree(rec.digest):
                self._materialize_file(e.digest, os.fspath(staging / e.path), mode, e.executable)
            if dest.is_dir() and not dest.is_symlink():
                old = Path(unique.make_dir(dest.parent, f".{dest.name}.old-"))
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

    def _materialize_file(self, digest: str, dest: str, mode: str, executable: bool) -> None:
        """Place one blob at dest through a staging name beside it. This runs once per output
        of every executed node, so it asks the filesystem only what it must: a missing parent
        or source, a stale staging file or a directory in the way show up as errors, not stats."""
        src = f"{self._blobs_str}/{digest[:2]}/{digest}"
        parent, name = os.path.split(dest)
        tmp = f"{parent}/.{name}.sci-tmp-{os.getpid()}"
        for attempt in range(3):
            try:
                if mode == "hardlink":
                    os.link(src, tmp)
                elif mode == "symlink":
                    os.symlink(os.path.realpath(src), tmp)
                else:
                    _reflink_or_copy(src, tmp, 0o755 if executable else 0o644)
                break
            except FileExistsError:  # a staging file left by a killed sci with this pid
                os.unlink(tmp)
            except FileNotFoundError:
                if not os.path.exists(src):
                    raise StoreError(f"object {digest[:12]} needed for {dest} is missing from the store",
                                     hint="run `sci build` to rebuild it, or `sci pull`") from None
                if attempt:
                    raise
                os.makedirs(parent or ".", exist_ok=True)
        try:
            os.replace(tmp, dest)
        except IsADirectoryError:  # a directory where the file goes: the output replaces it
            shutil.rmtree(dest)
            os.replace(tmp, dest)

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
                return None if digest_file(path) == path.name else "content does not match its digest"
            if kind == "pack":
                data, records, problem = read_pack(str(path))
                for key, (offset, length) in records.items():
                    if not self._sound_action(key, data[offset:offset + length]):
                        return f"the record of {key[:12]} is not an action result naming its own key"
                return problem or index_problem(str(path), records)
            data = path.read_bytes()
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
