"""Action packs: the action results of one build appended to one file instead of one file each.

Creating a file is the dearest thing a build asks of most filesystems (a new inode, a directory
entry); appending a line is cheap. So a build writes its StepResults into a pack of its own:

    actions/packs/<id>.pack    b"sci-pack 1\\n", then one record per action result:
                               b"<key> <n>\\n" + n bytes of canonical StepResult JSON + b"\\n"

Rules that keep readers safe without locks:
- a pack has one writer, the build that created it (O_EXCL, a name with time, pid and salt);
- a record is written with one os.write on an O_APPEND descriptor and a reader takes only
  complete records, so a writer killed mid-record leaves a torn tail that readers skip and
  `sci fsck` reports (and `--repair` drops);
- a closed pack is never modified: gc and fsck --repair write a new pack under a new name and
  then remove the old one, so "this pack file still exists" keeps meaning "its records are
  as they were" (the no-op record relies on that).
Loose results (actions/<k[:2]>/<k>: remote fetches, bundle imports) stay valid and are looked
up first.
"""

from __future__ import annotations

import itertools
import os
import time

MAGIC = b"sci-pack 1\n"
SUFFIX = ".pack"
_SALT = os.urandom(4).hex()
_COUNTER = itertools.count()
_FSYNC = os.environ.get("SCI_FSYNC", "") not in ("", "0")


def scan(path: str) -> tuple[dict[str, tuple[int, int]], str | None]:
    """The complete records of one pack, key -> (offset, length) of its JSON, and what is
    wrong with it (None when nothing is). A torn last record — its writer was killed, or is
    still writing — is not damage: it is skipped and not reported. A record that is malformed
    where a whole one should be is damage, and nothing after it is read."""
    with open(path, "rb") as fh:
        data = fh.read()
    if not data.startswith(MAGIC):
        return {}, "not an action pack (bad header)"
    records: dict[str, tuple[int, int]] = {}
    pos, size = len(MAGIC), len(data)
    while pos < size:
        eol = data.find(b"\n", pos, pos + 96)
        if eol < 0:
            return records, None if size - pos < 96 else f"bad record header at byte {pos}"
        head = data[pos:eol].split(b" ")
        if len(head) != 2 or not head[1].isdigit():
            return records, f"bad record header at byte {pos}"
        start = eol + 1
        end = start + int(head[1])
        if end >= size:
            return records, None  # the torn tail of an interrupted append
        if data[end] != 0x0A:
            return records, f"record at byte {pos} does not end where its header says"
        records[head[0].decode("ascii", "replace")] = (start, end - start)
        pos = end + 1
    return records, None


def read_record(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def new_pack_path(packs_dir: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{packs_dir}/{stamp}-{os.getpid()}-{_SALT}-{next(_COUNTER)}{SUFFIX}"


class PackWriter:
    """Appends records to one new pack, opened at the first record (a build that executes
    nothing makes no pack). A failed write closes the pack: the next record starts a new one,
    so a torn tail is never followed by records a reader could not reach."""

    def __init__(self, packs_dir: str):
        self.dir = packs_dir
        self.path: str | None = None
        self._fd: int | None = None
        self._size = 0

    def _open(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        while True:
            path = new_pack_path(self.dir)
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o444)
                break
            except FileExistsError:
                continue
        self.path, self._size = path, 0
        self._write(MAGIC)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except BaseException:
            self.close()
            raise
        self._size += len(data)

    def append(self, key: str, body: bytes) -> tuple[str, int, int]:
        """Write one record; returns (pack path, offset, length) of its body."""
        if self._fd is None:
            self._open()
        head = f"{key} {len(body)}\n".encode("ascii")
        offset = self._size + len(head)
        self._write(head + body + b"\n")
        if _FSYNC:
            os.fsync(self._fd)
        return self.path, offset, len(body)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if _FSYNC:
                    os.fsync(fd)
            finally:
                os.close(fd)


class PackIndex:
    """Where each packed result is (key -> pack path, offset, length). It is built at the first
    lookup that misses and brought up to date when actions/packs/ changed (a pack added or
    removed). Records another process appends to a pack after this one read it stay unseen for
    this process's lifetime: cache misses, never wrong answers."""

    def __init__(self, packs_dir: str):
        self.dir = packs_dir
        self._entries: dict[str, tuple[str, int, int]] = {}
        self._scanned: set[str] = set()
        self._stamp: int | None = None

    def packs(self) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(f"{self.dir}/{n}" for n in names if n.endswith(SUFFIX))

    def refresh(self) -> None:
        try:
            stamp = os.stat(self.dir).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            stamp = None
        if stamp == self._stamp and stamp is not None:
            return
        self._stamp = stamp
        current = self.packs()
        if self._scanned - set(current):  # a pack went away (gc, repair): start over
            self._entries = {k: v for k, v in self._entries.items() if v[0] in current}
            self._scanned &= set(current)
        for path in current:
            if path in self._scanned:
                continue
            try:
                records, _problem = scan(path)
            except OSError:
                continue
            for key, (offset, length) in records.items():
                self._entries[key] = (path, offset, length)
            self._scanned.add(path)

    def lookup(self, key: str) -> tuple[str, int, int] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.refresh()
            entry = self._entries.get(key)
        return entry

    def add(self, key: str, path: str, offset: int, length: int) -> None:
        """A record this process just wrote (its pack counts as scanned)."""
        self._entries[key] = (path, offset, length)
        self._scanned.add(path)

    def entries(self) -> dict[str, tuple[str, int, int]]:
        self.refresh()
        return dict(self._entries)
