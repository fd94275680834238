"""Content digests: BLAKE3 of bytes, files and directory trees, accelerated by a stat cache.

A file's digest is the plain BLAKE3 of its bytes (so it equals `b3sum`). A directory's digest
is the BLAKE3 of a tagged canonical listing of the files below it (a Merkle node: child
digests go into the parent's pre-image). mtimes never decide anything: the stat cache only
lets an unchanged file (same size, mtime, ctime and inode) skip being read again.
"""

from __future__ import annotations

import errno
import marshal
import mmap
import operator
import os
import re
import stat as stat_mod
import time
from collections import namedtuple
from pathlib import Path

from blake3 import blake3

from sci import canonical
from sci.errors import UserError
from sci.store import journal

# Files at least this large are hashed by mmap with BLAKE3's own threads; smaller ones are
# read whole, which is faster for the many-small-files case.
MMAP_THRESHOLD = 4 * 1024 * 1024
TREE_TAG = "sci.tree"
TREE_FORMAT = 1
# A file changed less than this long before it was hashed may change again within the same
# timestamp tick without its stat changing ("racily clean", as git calls it): not cached.
RACY_WINDOW_NS = 50_000_000
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
_CHUNK = 1024 * 1024


# sci places a file or directory output through a staging name beside it (`.NAME.sci-tmp`,
# `.NAME.sci-stage`). One left by a killed sci is no part of any directory's tree: tree hashing
# and storing skip these names, and the next restore of NAME removes it.
STAGING_MARK = ".sci-"


def is_staging_name(name: str) -> bool:
    """Whether a directory entry is a sci staging file (callers test `name[0] == "."` first)."""
    return name[0] == "." and STAGING_MARK in name


def digest_bytes(data: bytes) -> str:
    return blake3(data).hexdigest()


class NotRegularFile(OSError):
    """A path hashed as a file is something else (a FIFO, a device, a socket): never read,
    since reading a FIFO or /dev/zero would never end."""

    def __init__(self, path: str | os.PathLike, mode: int):
        kind = ("a FIFO" if stat_mod.S_ISFIFO(mode) else "a device" if stat_mod.S_ISCHR(mode) or stat_mod.S_ISBLK(mode)
                else "a socket" if stat_mod.S_ISSOCK(mode) else "not a regular file")
        super().__init__(errno.EINVAL, f"{kind}, not a regular file", os.fspath(path))


def digest_file(path: str | os.PathLike, size: int | None = None) -> str:
    """BLAKE3 of a file's bytes, hex. `size` (from a stat the caller already made, of a regular
    file) is a hint. Anything but a regular file raises NotRegularFile, unread."""
    if size is None:
        st = os.stat(path)
        if not stat_mod.S_ISREG(st.st_mode):
            raise NotRegularFile(path, st.st_mode)
        size = st.st_size
    # O_NONBLOCK: a path swapped for a FIFO after the caller's stat opens at once (then refused
    # below) instead of waiting for a writer; on a regular file the flag changes nothing.
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if size >= MMAP_THRESHOLD:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                raise NotRegularFile(path, st.st_mode)
            if st.st_size:
                with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                    return blake3(mapped, max_threads=blake3.AUTO).hexdigest()
            return blake3().hexdigest()
        # One os.read of size+1 bytes: no buffered-file object, no fstat, one allocation of the
        # right size. This is what keeps tree hashing of many small files at raw-BLAKE3 speed.
        data = os.read(fd, size + 1)
        if len(data) == size:  # the common case: exactly what stat said, so at EOF
            return blake3(data).hexdigest()
        # The file changed size since the caller's stat (or a short read): read to EOF, once
        # it is sure to end (/dev/zero never does).
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise NotRegularFile(path, st.st_mode)
        hasher = blake3(data)
        while chunk := os.read(fd, _CHUNK):
            hasher.update(chunk)
        return hasher.hexdigest()
    finally:
        os.close(fd)


class TreeEntry(namedtuple("TreeEntry", "path digest size executable")):
    """One file of a tree: its path relative to the tree root (POSIX), digest, size, mode."""

    __slots__ = ()


def tree_document(entries: list[TreeEntry]) -> dict:
    """The canonical listing whose digest is the tree's digest (sorted by path)."""
    rows = [[e.path, e.digest, e.size, e.executable] for e in sorted(entries, key=lambda e: e.path)]
    return {"type": TREE_TAG, "format": TREE_FORMAT, "entries": rows}


def tree_digest(entries: list[TreeEntry]) -> str:
    return digest_bytes(canonical.dumps(tree_document(entries)))


class NameNotText(UserError):
    """A file whose name is not UTF-8 (Python holds its bytes as surrogates): no tree, key or
    record can hold it. A dep or code file so named is a request sci cannot take (exit 2); a
    step that writes one fails, naming it."""

    def __init__(self, path: str):
        super().__init__(f"{canonical.shown(path)}: the file name is not UTF-8 text",
                         hint="rename it: sci records every path as UTF-8")


def check_names(paths, where: str = "") -> None:
    """NameNotText for the first of `paths` (found by a glob or a walk) that is not UTF-8."""
    for p in paths:
        if not p.isascii() and canonical.not_text(p):
            raise NameNotText(f"{where}{p}")


class UnsafeTree(ValueError):
    """A tree listing sci could not have written: a path that is absolute, climbs out with
    `..`, holds an empty or `.` component or a NUL, appears twice, or is both a file and a
    directory. Materializing it would write outside the output's directory (a forged bundle
    or remote): it is refused wherever a tree is read, and `sci fsck` names it."""


# An empty, "." or ".." component (a leading "/" is an empty first one), or a NUL.
_UNSAFE_PATH = re.compile(r"(?:^|/)\.{0,2}(?:/|$)|\x00")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def is_digest(value) -> bool:
    """A BLAKE3 digest as sci writes it: 64 lowercase hex digits."""
    return type(value) is str and _HEX64.match(value) is not None


def path_problem(path: str) -> str | None:
    """Why `path` is not a normalized relative POSIX path (what trees and records hold), or None."""
    if type(path) is not str or not path or _UNSAFE_PATH.search(path):
        return "not a relative path inside the workspace"
    return None


def entries_from_document(doc: dict) -> list[TreeEntry]:
    """A tree listing's entries, each checked (UnsafeTree, a ValueError)."""
    if not isinstance(doc, dict) or doc.get("type") != TREE_TAG or not isinstance(doc.get("entries"), list):
        raise ValueError("not a sci tree document")
    try:
        out = [TreeEntry(p, d, s, x) for p, d, s, x in doc["entries"]]
    except (TypeError, ValueError):
        raise UnsafeTree("a tree entry is not [path, digest, size, executable]") from None
    seen: set[str] = set()
    dirs: set[str] = set()
    for e in out:
        p = e.path
        if path_problem(p):
            raise UnsafeTree(f"tree entry {p!r} is not a relative path inside the tree")
        if not is_digest(e.digest) or type(e.size) is not int or e.size < 0 or type(e.executable) is not bool:
            raise UnsafeTree(f"tree entry {p!r} is malformed")
        if p in seen or p in dirs:
            raise UnsafeTree(f"tree entry {p!r} is listed twice, or as both a file and a directory")
        seen.add(p)
        cut = p.rfind("/")
        while cut > 0:
            parent = p[:cut]
            if parent in seen:
                raise UnsafeTree(f"tree entry {p!r} lies under {parent!r}, which is a file")
            if parent in dirs:
                break
            dirs.add(parent)
            cut = p.rfind("/", 0, cut)
    return out


# The stat signature of a stat result: what sci compares to tell that a file may have changed
# since it last looked — (size, mtime, ctime, inode); ctime catches a rewrite that restores the
# mtime. The stat cache, the no-op record and the sandbox's check of a step's inputs all use it
# (an attrgetter: a C call, as quick as building the tuple inline in the hot loops). Changing
# it changes what the stat cache and the no-op record hold: bump their formats with it.
signature = operator.attrgetter("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino")


def stat_signature(path: str | os.PathLike) -> tuple[int, int, int, int] | None:
    """`signature` of the file or directory at `path` (symlinks followed); None when it cannot
    be stat'ed."""
    try:
        return signature(os.stat(path))
    except OSError:
        return None


class StatCache:
    """Remembers file digests by (size, mtime, ctime, inode) so unchanged files are not re-read.

    Keys are paths as given by the caller (sci uses workspace-relative POSIX paths). The cache
    is a hint: a missing, stale or unreadable cache file only costs re-hashing.
    """

    # The file's format (store/journal.py frames it). Bump when the entries' shape or the
    # signature tuple changes; a file of another format is then ignored and rebuilt.
    # Frames: marshal of {key: (signature, digest), or None for a key forgotten}. The first is
    # the whole table; a save appends what changed since the load (a parameter edit's build
    # changes a few entries of 10,000: ~0.1 ms instead of ~3.5 ms to write them all), and a
    # load that finds many frames, or a cut-short last one, makes the next save write it whole.
    # The checksum matters: a damaged entry would otherwise hand out a wrong digest for an
    # unchanged file, and a wrong digest makes a wrong cache key.
    FORMAT = "sci-statcache-4"
    _COMPACT_AFTER = 16  # frames

    def __init__(self, path: Path | None = None):
        self.path = path
        self._entries: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self._changed: dict[str, tuple | None] = {}
        self._rewrite = True  # until a load finds a sound file to append to
        self._end: int | None = None  # where that file ended
        if path is not None:
            self._entries = self._load(path)

    def _load(self, path: Path) -> dict:
        found = journal.read(path, self.FORMAT)
        if found is None or not found.bodies:
            return {}
        try:
            entries = marshal.loads(found.bodies[0])
            for body in found.bodies[1:]:
                for key, entry in marshal.loads(body).items():
                    if entry is None:
                        entries.pop(key, None)
                    else:
                        entries[key] = entry
        except (EOFError, ValueError, TypeError, AttributeError):
            return {}  # sound frames that do not decode: written by something else, not believed
        if type(entries) is not dict:
            return {}
        self._rewrite = not found.whole or len(found.bodies) > self._COMPACT_AFTER
        self._end = found.end
        return entries

    def file_digest(self, path: str | os.PathLike, key: str | None = None,
                    st: os.stat_result | None = None) -> str:
        """Digest of the file at `path`, read only if its stat changed since last time."""
        key = os.fspath(path) if key is None else key
        if st is None:
            st = os.stat(path)
        sig = signature(st)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
        if not stat_mod.S_ISREG(st.st_mode):
            raise NotRegularFile(path, st.st_mode)
        digest = digest_file(path, st.st_size)
        if time.time_ns() - st.st_ctime_ns > RACY_WINDOW_NS:
            self._entries[key] = self._changed[key] = (sig, digest)
        return digest

    def remember(self, path: str | os.PathLike, digest: str, key: str | None = None) -> None:
        """Record a digest sci already knows (e.g. of a file it just materialized).

        Unlike `file_digest`, this records even a racily recent file: sci wrote these bytes
        itself, so only a writer that changes the file to the same size within one timestamp
        tick of sci's write could make the entry stale (`forget` the key if that can happen).
        """
        key = os.fspath(path) if key is None else key
        self._entries[key] = self._changed[key] = (signature(os.stat(path)), digest)

    def tree_entries(self, root: str | os.PathLike, key: str | None = None) -> list[TreeEntry]:
        """List every regular file under `root` with its digest (symlinks are followed).

        This is `file_digest` inlined into the walk: with 10,000 small files the per-file
        Python overhead, not BLAKE3, is what separates sci from a raw hashing loop.
        """
        root = os.fspath(root)
        prefix = (os.fspath(root) if key is None else key).rstrip("/") + "/"
        cache, changed = self._entries, self._changed
        # One clock reading for the whole walk. It is earlier than any file's hashing, so the
        # racy test below is at least as strict as file_digest's.
        trusted_before = time.time_ns() - RACY_WINDOW_NS
        out: list[TreeEntry] = []
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as it:
                for entry in it:
                    name = entry.name
                    if name[0] == "." and STAGING_MARK in name:  # is_staging_name, inlined
                        continue
                    rel = f"{rel_dir}/{name}" if rel_dir else name
                    if not name.isascii() and canonical.not_text(name):
                        raise NameNotText(prefix + rel)
                    st = entry.stat()
                    mode = st.st_mode
                    if stat_mod.S_ISREG(mode):
                        cache_key = prefix + rel
                        sig = signature(st)
                        hit = cache.get(cache_key)
                        if hit is not None and hit[0] == sig:
                            digest = hit[1]
                        else:
                            digest = digest_file(entry.path, st.st_size)
                            if st.st_ctime_ns < trusted_before:
                                cache[cache_key] = changed[cache_key] = (sig, digest)
                        out.append(TreeEntry(rel, digest, st.st_size, bool(mode & 0o111)))
                    elif stat_mod.S_ISDIR(mode):
                        stack.append(rel)
        out.sort(key=lambda e: e.path)
        return out

    def path_digest(self, path: str | os.PathLike, key: str | None = None) -> str:
        """Digest of a file or, for a directory, of its tree."""
        st = os.stat(path)
        if stat_mod.S_ISDIR(st.st_mode):
            return tree_digest(self.tree_entries(path, key))
        return self.file_digest(path, key, st)

    @property
    def entries(self) -> dict[str, tuple[tuple[int, int, int, int], str]]:
        """key -> (stat signature, digest), as last seen (read-only use, please)."""
        return self._entries

    def forget(self, key: str) -> None:
        if self._entries.pop(key, None) is not None:
            self._changed[key] = None

    def save(self) -> None:
        """Write what changed. The cache is a hint: where it cannot be written (a full disk, a
        read-only `.sci/`) it is not (journal.write says False), and the next command hashes
        again; a torn append is cut off by its checksum at the next load."""
        if self.path is None or not self._changed:
            return
        if self._rewrite or not journal.append(self.path, self.FORMAT, [marshal.dumps(self._changed)], end=self._end):
            self._rewrite = not journal.write(self.path, self.FORMAT, [marshal.dumps(self._entries)])
        self._changed, self._end = {}, None  # a later save verifies what it appends to
