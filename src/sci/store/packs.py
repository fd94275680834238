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

A closed pack gets a key index beside it, `<id>.pack.idx`: b"sci-pack-index 1\n", then one
44-byte row per record sorted by key (the key's 32 bytes, the body's offset as 8 bytes and its
length as 4, little-endian). A look-up bisects it instead of scanning the pack: a key that is
in no pack (every node a build must run) costs ~14 probes per pack, not a scan of its ~15 MB.
The index is a hint. A hit is checked against the record header in the pack, a pack without
an index (still being written, or its writer was killed before writing one) is scanned, and
`sci fsck` reports an index that disagrees with its pack (`--repair` rewrites both).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import time

from sci import unique
from sci.errors import at_path
from sci.store.mapped import map_file

MAGIC = b"sci-pack 1\n"
SUFFIX = ".pack"
INDEX_MAGIC = b"sci-pack-index 1\n"
INDEX_SUFFIX = ".idx"  # appended to the pack's name: <id>.pack.idx
_ROW = 44  # key (32 bytes), offset (8), length (4)
_FSYNC = os.environ.get("SCI_FSYNC", "") not in ("", "0")


def scan(path: str) -> tuple[dict[str, tuple[int, int]], str | None]:
    """The complete records of one pack, key -> (offset, length) of its JSON, and what is
    wrong with it (None when nothing is). A torn last record — its writer was killed, or is
    still writing — is not damage: it is skipped and not reported. A record that is malformed
    where a whole one should be is damage, and nothing after it is read."""
    _data, records, problem = read_pack(path)
    return records, problem


def read_pack(path: str) -> tuple[bytes, dict[str, tuple[int, int]], str | None]:
    """A pack's bytes with `scan`'s answer, for callers that go on to read its records."""
    with open(path, "rb") as fh:
        data = fh.read()
    problem: list[str] = []
    records = _records(data, problem)
    return data, records, problem[0] if problem else None


def _records(data: bytes, problem: list[str] | None = None) -> dict[str, tuple[int, int]]:
    """The records of a pack's bytes (see scan); what is wrong goes into `problem`."""
    def bad(what: str) -> dict[str, tuple[int, int]]:
        if problem is not None:
            problem.append(what)
        return records

    records: dict[str, tuple[int, int]] = {}
    if data[:len(MAGIC)] != MAGIC:
        return bad("not an action pack (bad header)")
    pos, size = len(MAGIC), len(data)
    while pos < size:
        eol = data.find(b"\n", pos, pos + 96)
        if eol < 0:
            return records if size - pos < 96 else bad(f"bad record header at byte {pos}")
        head = data[pos:eol].split(b" ")
        if len(head) != 2 or not head[1].isdigit():
            return bad(f"bad record header at byte {pos}")
        start = eol + 1
        end = start + int(head[1])
        if end >= size:
            return records  # the torn tail of an interrupted append
        if data[end] != 0x0A:
            return bad(f"record at byte {pos} does not end where its header says")
        records[head[0].decode("ascii", "replace")] = (start, end - start)
        pos = end + 1
    return records


def claim(path: str) -> int | None:
    """An exclusive hold on a closed pack, for rewriting it: an open descriptor, or None when
    a writer still has the pack open (it holds a shared lock until it closes it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def read_record(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def new_pack_path(packs_dir: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{packs_dir}/{stamp}-{unique.name()}{SUFFIX}"


class PackWriter:
    """Appends records to one new pack, opened at the first record (a build that executes
    nothing makes no pack). A failed write closes the pack: the next record starts a new one,
    so a torn tail is never followed by records a reader could not reach."""

    def __init__(self, packs_dir: str):
        self.dir = packs_dir
        self.path: str | None = None
        self._fd: int | None = None
        self._size = 0
        self._rows: list[tuple[str, int, int]] = []  # the records written: the key index's rows

    def _open(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        while True:
            path = new_pack_path(self.dir)
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o444)
                break
            except FileExistsError:
                continue
        fcntl.flock(self._fd, fcntl.LOCK_SH)  # "being written": a merge leaves this pack alone
        self.path, self._size, self._rows = path, 0, []
        self._write(MAGIC)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        path = self.path
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self.close()
            raise at_path(exc, path or self.dir) from None
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
        self._rows.append((key, offset, len(body)))
        return self.path, offset, len(body)

    def close(self) -> None:
        """Close the pack and write its key index (a failure there only leaves it unindexed)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if _FSYNC:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if self.path is not None and self._rows:
                try:
                    write_index(self.path, self._rows)
                except OSError:
                    pass


def index_rows(records) -> bytes | None:
    """The key index's rows for (key, offset, length) records, sorted; None when a key is not
    64 hex digits (such a pack is scanned instead). A key written twice keeps its last record,
    as a scan of the pack does."""
    rows = []
    for key, (offset, length) in {key: (offset, length) for key, offset, length in records}.items():
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            return None
        if len(raw) != 32:
            return None
        rows.append(raw + offset.to_bytes(8, "little") + length.to_bytes(4, "little"))
    rows.sort()
    return b"".join(rows)


def write_index(pack: str, records) -> None:
    rows = index_rows(records)
    if rows is None:
        return
    tmp = f"{pack}{INDEX_SUFFIX}.{unique.name()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            os.write(fd, INDEX_MAGIC + rows)
        finally:
            os.close(fd)
        os.replace(tmp, pack + INDEX_SUFFIX)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def index_problem(pack: str, records: dict[str, tuple[int, int]]) -> str | None:
    """What is wrong with `pack`'s key index, given the pack's own records (None: it agrees
    with them, or there is none)."""
    try:
        with open(pack + INDEX_SUFFIX, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    want = index_rows((k, o, n) for k, (o, n) in records.items())
    if want is not None and data != INDEX_MAGIC + want:
        return "its key index does not match its records"
    return None


class _SortedKeys:
    """A pack's key index, mapped: bisected for one key at a time."""

    __slots__ = ("data", "rows")

    def __init__(self, data):
        self.data = data
        self.rows = (len(data) - len(INDEX_MAGIC)) // _ROW

    @classmethod
    def open(cls, pack: str) -> _SortedKeys | None:
        try:
            with open(pack + INDEX_SUFFIX, "rb") as fh:
                data = map_file(fh)
        except OSError:
            return None
        if data[:len(INDEX_MAGIC)] != INDEX_MAGIC or (len(data) - len(INDEX_MAGIC)) % _ROW:
            return None
        return cls(data)

    def find(self, key: str) -> tuple[int, int] | None:
        try:
            want = bytes.fromhex(key)
        except ValueError:
            return None
        data, base = self.data, len(INDEX_MAGIC)
        lo, hi = 0, self.rows
        while lo < hi:
            mid = (lo + hi) // 2
            at = base + mid * _ROW
            if data[at:at + 32] < want:
                lo = mid + 1
            else:
                hi = mid
        at = base + lo * _ROW
        if lo == self.rows or data[at:at + 32] != want:
            return None
        return int.from_bytes(data[at + 32:at + 40], "little"), int.from_bytes(data[at + 40:at + 44], "little")


class PackIndex:
    """Where each packed result is (key -> pack path, offset, length).

    A process that asks for a few keys (a parameter edit re-runs one node) should not pay for
    indexing every record of every pack, nor one that asks for thousands (a cold build misses
    on every node) for searching each time. So the first lookups bisect each pack's key index
    or, for a pack without one, search its bytes for the record header (canonical JSON has no
    newline, so b"\n<key> " only starts a record); after SEARCHES of them every pack is indexed
    once. The packs are listed again when actions/packs/ changed (a pack added or removed).
    Records another process appends to a pack after this one read it stay unseen for this
    process's lifetime: misses, never wrong answers."""

    SEARCHES = 16
    SEARCH_BYTES = 32 << 20

    def __init__(self, packs_dir: str):
        self.dir = packs_dir
        self._entries: dict[str, tuple[str, int, int]] = {}
        # Packs not indexed yet: their key index, or (without one) their bytes, mapped.
        self._raw: dict[str, bytes | mmap.mmap | _SortedKeys] = {}
        self._indexed: set[str] = set()
        self._stamp: int | None = None
        self._searches = 0

    def packs(self) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(f"{self.dir}/{n}" for n in names if n.endswith(SUFFIX))

    def refresh(self) -> None:
        """Take in packs added (and forget packs removed) since the last look."""
        try:
            stamp = os.stat(self.dir).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            stamp = None
        if stamp == self._stamp and stamp is not None:
            return
        self._stamp = stamp
        current = set(self.packs())
        if (self._indexed | set(self._raw)) - current:  # a pack went away (gc, repair)
            self._entries = {k: v for k, v in self._entries.items() if v[0] in current}
            self._indexed &= current
            self._raw = {p: d for p, d in self._raw.items() if p in current}
        for path in sorted(current - self._indexed - set(self._raw)):
            found = _SortedKeys.open(path) or _map(path)
            if found is not None:
                self._raw[path] = found

    def _index_all(self) -> None:
        for path, data in sorted(self._raw.items()):
            if isinstance(data, _SortedKeys):
                data = _map(path)
                if data is None:
                    continue
            for key, (offset, length) in _records(data).items():
                self._entries[key] = (path, offset, length)
            self._indexed.add(path)
        self._raw.clear()

    def _search(self, key: str) -> tuple[str, int, int] | None:
        needle = b"\n" + key.encode("ascii", "replace") + b" "
        for path, data in sorted(self._raw.items(), reverse=True):  # newest pack first
            if isinstance(data, _SortedKeys):
                hit = data.find(key)
                if hit is None:
                    continue
                if _is_record(path, key, *hit):
                    return (path, *hit)
                data = _map(path)  # an index that disagrees with its pack: search the pack
                if data is None:
                    continue
                self._raw[path] = data
            at = data.find(needle)
            if at < 0:
                continue
            head_end = data.find(b"\n", at + 1, at + 1 + 96)
            if head_end < 0:
                continue
            size = data[at + len(needle):head_end]
            if not size.isdigit():
                continue
            start = head_end + 1
            end = start + int(size)
            if end < len(data) and data[end] == 0x0A:  # a whole record, not a torn tail
                return path, start, end - start
        return None

    def lookup(self, key: str) -> tuple[str, int, int] | None:
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        self.refresh()
        if self._raw:
            # Searching visits every pack per key: worth it for a few keys, not for thousands
            # (one build's 10,000 results are ~15 MB), nor over a long, never-collected history.
            scanned = sum(len(d) for d in self._raw.values() if not isinstance(d, _SortedKeys))
            if self._searches < self.SEARCHES and scanned <= self.SEARCH_BYTES:
                self._searches += 1
                entry = self._search(key)
                if entry is not None:
                    self._entries[key] = entry
                return entry
            self._index_all()
        return self._entries.get(key)

    def add(self, key: str, path: str, offset: int, length: int) -> None:
        """A record this process just wrote (its pack counts as indexed)."""
        self._entries[key] = (path, offset, length)
        self._indexed.add(path)
        self._raw.pop(path, None)

    def entries(self) -> dict[str, tuple[str, int, int]]:
        self.refresh()
        self._index_all()
        return dict(self._entries)


def _map(path: str) -> bytes | mmap.mmap | None:
    """A pack's bytes, mapped: a search for one key touches the pages it scans, no copy of the
    ~15 MB one 10,000-node build writes. None when the pack cannot be opened."""
    try:
        with open(path, "rb") as fh:
            return map_file(fh)
    except OSError:
        return None


def _is_record(path: str, key: str, offset: int, length: int) -> bool:
    """Whether `pack` holds a whole record of `key` with its body at (offset, length): what a
    key index says is checked against the pack before it is believed."""
    head = f"\n{key} {length}\n".encode("ascii")
    if offset < len(head):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return (os.pread(fd, len(head), offset - len(head)) == head
                and os.pread(fd, 1, offset + length) == b"\n")
    finally:
        os.close(fd)
