"""Names no other writer takes: staging files, scratch directories, action packs.

pid + a per-process salt keep processes apart (a pid reused after a crash gets another salt),
a counter keeps one process's own names apart. Not the tempfile module: it imports random and
hashlib's sha512, ~1 ms of every build's start-up, and mkstemp costs a create, a close and a
reopen per file.
"""

from __future__ import annotations

import itertools
import os

SALT = os.urandom(4).hex()
_COUNTER = itertools.count()


def name(prefix: str = "") -> str:
    """`prefix` followed by the pid, this process's salt and the next count."""
    return f"{prefix}{os.getpid()}-{SALT}-{next(_COUNTER)}"


def make_dir(parent: str | os.PathLike, prefix: str, mode: int = 0o700) -> str:
    """A new, empty directory in `parent` (mkdtemp's contract: made by this call)."""
    while True:
        path = os.path.join(parent, name(prefix))
        try:
            os.mkdir(path, mode)
            return path
        except FileExistsError:
            continue  # left by a crashed process that had this pid and salt: take the next name


def unnamed_file(parent: str | os.PathLike):
    """A new file without a name in `parent`, open for reading and writing (binary, buffered,
    as tempfile.TemporaryFile): O_TMPFILE, or created and unlinked at once where the
    filesystem has no O_TMPFILE."""
    flags = os.O_RDWR | os.O_CLOEXEC
    try:
        fd = os.open(parent, flags | os.O_TMPFILE, 0o600)
    except (AttributeError, OSError) as exc:  # no O_TMPFILE here, or not on this filesystem
        if isinstance(exc, FileNotFoundError):
            raise  # no such directory: no fallback would help
        while True:
            path = os.path.join(parent, name(".sci-tmp-"))
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            os.unlink(path)
            break
    return os.fdopen(fd, "w+b")
