"""The error tree: every failure sci reports is one of these, caught once in the CLI.

Exit codes (SPEC §7): a wrong request (`UserError` and subclasses) exits 2; work that failed
(`WorkFailed` and subclasses) exits 1. Anything else is a bug in sci and is reported as such.
"""

from __future__ import annotations

import errno
from collections import namedtuple


class Location(namedtuple("Location", "file line column", defaults=(None, None))):
    """A place in a user's file, line and column counted from 1."""

    __slots__ = ()

    def __str__(self) -> str:
        parts = [self.file]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)


class SciError(Exception):
    """Base of every error sci reports: a message, where it happened, and how to fix it."""

    exit_code = 1

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint

    def one_line(self) -> str:
        """The single line the CLI prints: `where: what (hint: how to fix)`."""
        text = f"{self.location}: {self.message}" if self.location else self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class UserError(SciError):
    """The request is wrong: bad usage, a bad pipeline or input file. Exit 2."""

    exit_code = 2


class SpecError(UserError):
    """sci.yaml or params are invalid."""


class GraphError(UserError):
    """The pipeline's graph is invalid: a cycle, overlapping outputs, a missing input."""


class ResourceError(UserError):
    """A node asks for resources the machine (or cluster) cannot give."""


class TargetError(UserError):
    """A target names no node, step or output."""


class WorkFailed(SciError):
    """The work itself failed. Exit 1."""

    exit_code = 1


class StepFailed(WorkFailed):
    """One or more nodes failed."""


class OutputError(WorkFailed):
    """A step's output is not what an output may be (a regular file, or a directory of them),
    or lies where sci may not write it (behind a symbolic link out of the workspace)."""


class StoreError(WorkFailed):
    """The store is damaged or an object does not match its digest."""


class DamagedObject(StoreError):
    """A store object that is not what its name says (bytes that do not hash to it, or no
    regular file at all). It has been dropped from the store; whatever needs it is rebuilt."""


class LockHeld(WorkFailed):
    """The workspace lock is held by another sci process and `--no-wait` was given."""


# What the machine refuses, as opposed to a bug in sci: a full disk or quota, a read-only or
# unwritable folder, a failing disk, no file descriptors left. The CLI reports these as work
# that failed (exit 1) in one line naming the path; the store stays consistent (every write is
# a temporary file renamed into place), so running sci again once the cause is gone resumes.
_ENVIRONMENT_HINTS = {
    errno.ENOSPC: "free space on that disk, then run sci again: the store is consistent and the work resumes",
    errno.EDQUOT: "free space within your quota, then run sci again: the store is consistent and the work resumes",
    errno.EFBIG: "the file is larger than that filesystem allows; put the store or workspace on another",
    errno.EROFS: "that filesystem is mounted read-only; make it writable, or point sci elsewhere (SCI_CAS for the store)",
    errno.EACCES: "make that path readable and writable for you, or point sci elsewhere (SCI_CAS for the store)",
    errno.EPERM: "make that path readable and writable for you, or point sci elsewhere (SCI_CAS for the store)",
    errno.EIO: "the disk failed to read or write; check it (dmesg), then run `sci fsck`",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or run with fewer jobs (-j)",
    errno.ENFILE: "too many open files on this machine: raise the limit or run with fewer jobs (-j)",
}


def environment_error(exc: BaseException) -> WorkFailed | None:
    """The one-line error for an OSError the machine caused (see above), or None when `exc`
    is no such error (then it is a bug in sci, reported as one)."""
    if not isinstance(exc, OSError) or exc.errno not in _ENVIRONMENT_HINTS:
        return None
    where = exc.filename if exc.filename is not None else "a file sci was writing"
    return WorkFailed(f"{where}: {exc.strerror}", hint=_ENVIRONMENT_HINTS[exc.errno])


def at_path(exc: OSError, path) -> OSError:
    """`exc`, naming `path` when it names no file (a failed os.write names none)."""
    if exc.filename is not None:
        return exc
    import os

    return OSError(exc.errno, exc.strerror, os.fspath(path))
