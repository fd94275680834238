"""One framing for every state file under `.sci/`: a named, versioned header, then checksummed frames.

    b"sci-journal-2 " FORMAT b"\\n"                    FORMAT: the file's own name and version
    frame*: [4-byte length][the length's complement][16-byte XXH3-128 of the body][body]

Every file sci keeps for speed (`.sci/state`, the stat cache, the no-op record, the plan and
pipeline caches) is written and read through here, so one rule decides what is believed:

- a file of another journal version or format, a bad length, a bad checksum, a body its caller
  cannot decode: the file is damaged and ignored as if absent (the caller rebuilds it). A state
  file is a hint; a hint that might be wrong is worth nothing, so nothing in it is kept.
- a file that ends inside its last frame (a writer killed mid-append): the whole frames before
  the cut are read, and the reader is told the file is not whole, so its next save rewrites it.

The length is stored twice (plain and complemented) so that a damaged length is told apart
from a cut: any flipped byte anywhere makes the file damaged, never a shorter true file.
The checksum guards against damage, not an attacker (a file an attacker can write can be
anything), so it need not be cryptographic: XXH3-128 (xxhash) checks ~30 GB/s on one core here,
BLAKE3 and zlib's CRC-32 ~3.5 GB/s; the ~21 MB of state a 10,000-node parameter edit reads cost
~6 ms to check with BLAKE3 (journal 1), ~0.7 ms now. Payloads are the caller's
(marshal, pickle: whatever it decodes fastest). Files are replaced whole by rename and appended
to with one write; nothing is fsynced (a torn or lost file costs only time).
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Iterable
from typing import Any
from pathlib import Path

from xxhash import xxh3_128_digest

from sci import canonical
from sci.store.mapped import map_file
from sci.values import Value

# Bump when the framing below changes; every state file is then ignored and rebuilt once.
JOURNAL = b"sci-journal-2"  # 2: XXH3-128 checksums; 1: BLAKE3
_DIGEST = 16  # bytes of checksum per frame
_HEAD = 8 + _DIGEST  # length, complement, checksum
_MASK = 0xFFFFFFFF
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_OPEN_READ = os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC  # a FIFO in a file's place opens at once (and is no file)
_OPEN_APPEND = os.O_RDWR | os.O_APPEND | _CLOEXEC


def header(fmt: str) -> bytes:
    """The first line of a file of format `fmt` (e.g. "sci-state-4")."""
    return JOURNAL + b" " + fmt.encode("ascii") + b"\n"


def frame(body: bytes) -> bytes:
    """One frame around `body` (at most 4 GiB)."""
    return _prefix(body) + body


def _prefix(body: bytes) -> bytes:
    size = len(body)
    return size.to_bytes(4, "little") + (size ^ _MASK).to_bytes(4, "little") + _checksum(body)


def _checksum(body: bytes | memoryview) -> bytes:
    return xxh3_128_digest(body)


class Frames(Value):
    """What a read found: the bodies of the whole frames, in order, and whether the file ended
    exactly after the last one (False: a cut-short frame followed; rewrite, do not append)."""

    __slots__ = _FIELDS = ("bodies", "whole", "end")

    def __init__(self, bodies: list[memoryview], whole: bool, end: int):
        self.bodies, self.whole = bodies, whole
        self.end = end  # where the last whole frame ends


def parse(data: bytes | memoryview, fmt: str) -> Frames | None:
    """The frames of a file's bytes; None when it is not a sound file of format `fmt`."""
    data = memoryview(data)
    head = header(fmt)
    at = len(head)
    if data[:at] != head:
        return None
    bodies: list[memoryview] = []
    end = len(data)
    while at < end:
        if at + 8 > end:
            return Frames(bodies, False, at)  # cut inside the length
        size = int.from_bytes(data[at:at + 4], "little")
        if (size ^ _MASK) != int.from_bytes(data[at + 4:at + 8], "little"):
            return None  # a damaged length: nothing after it can be placed
        start = at + _HEAD
        if start + size > end:
            return Frames(bodies, False, at)  # cut inside the checksum or the body
        body = data[start:start + size]
        if _checksum(body) != data[at + 8:start]:
            return None
        bodies.append(body)
        at = start + size
    return Frames(bodies, True, at)


def read(path: str | os.PathLike, fmt: str) -> Frames | None:
    """The frames of the file at `path`; None when it is absent, unreadable or damaged."""
    try:
        fd = os.open(path, _OPEN_READ)
    except OSError:
        return None
    try:
        data = _contents(fd)
        return None if data is None else parse(data, fmt)
    except OSError:
        return None
    finally:
        os.close(fd)


def _contents(fd: int) -> mmap.mmap | bytes | None:
    """The whole regular file open at `fd`, mapped rather than read (store/mapped.py): the frames
    are slices of the mapping, so a 10 MB record is neither copied nor allocated (a read costs
    ~2 ms more). sci never shortens one of its files in place (it replaces them by rename and
    appends with one write), so a mapping stays whole while it is used. None for a directory,
    a FIFO or a device in the file's place: no file of sci's."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return None
    with os.fdopen(fd, "rb", closefd=False) as fh:
        return map_file(fh)


def write(path: str | os.PathLike, fmt: str, bodies: Iterable[bytes]) -> bool:
    """Replace the file at `path` with a header and `bodies` as frames, atomically (a temporary
    file beside it, then a rename). False, and the old file untouched, when that fails."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        try:
            fh = open(tmp, "wb")
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(tmp, "wb")
        with fh:  # piece by piece: a 6 MB body is written, not copied into a joined buffer
            fh.write(header(fmt))
            for body in bodies:
                fh.write(_prefix(body))
                fh.write(body)
        try:
            os.replace(tmp, path)
        except IsADirectoryError:  # a directory where the file goes (it is sci's path): replaced
            remove(path)
            os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    return True


def read_value(path: str | os.PathLike, fmt: str) -> Any:
    """The one canonical-JSON value a cache entry holds (`write_value`); None when it is absent,
    damaged, cut or of another format: a cache entry decides nothing unless it is whole."""
    found = read(path, fmt)
    if found is None or not found.whole or len(found.bodies) != 1:
        return None
    try:
        return canonical.loads(bytes(found.bodies[0]))
    except ValueError:
        return None


def write_value(path: str | os.PathLike, fmt: str, value: Any) -> bool:
    """A cache entry: one frame of canonical JSON, written atomically."""
    return write(path, fmt, [canonical.dumps(value)])


def remove(path: str | os.PathLike) -> None:
    """Delete the file at `path`, or whatever took its place; nothing when there is none."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        if not os.path.isdir(path) or os.path.islink(path):
            raise
        import shutil

        shutil.rmtree(path)


def append(path: str | os.PathLike, fmt: str, bodies: Iterable[bytes], *, end: int | None = None,
           most: int | None = None) -> bool:
    """Add `bodies` as frames at the end of the file at `path`, in one write, if it is a sound
    file of format `fmt` ending after a whole frame; else False, and the caller writes the file
    whole. `end`: where the file ended when the caller read it sound (Frames.end) in this build,
    under the workspace lock; then only its header and size are compared. Without it the file
    is read now and its checksums verified (not decoded), and `most` caps its frames: a file
    that holds that many already is False too (written whole, so that appends by builds that
    never read it cannot grow it without end)."""
    try:
        fd = os.open(path, _OPEN_APPEND)
    except OSError:
        return False
    try:
        if end is None:
            data = _contents(fd)
            found = None if data is None else parse(data, fmt)
            if found is None or not found.whole or (most is not None and len(found.bodies) >= most):
                return False
        elif os.fstat(fd).st_size != end or os.pread(fd, len(header(fmt)), 0) != header(fmt):
            return False
        os.write(fd, b"".join(map(frame, bodies)))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
