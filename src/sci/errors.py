"""The error tree: every failure sci reports is one of these, caught once in the CLI.

Exit codes (SPEC §7): a wrong request (`UserError` and subclasses) exits 2; work that failed
(`WorkFailed` and subclasses) exits 1. Anything else is a bug in sci and is reported as such.
"""

from __future__ import annotations

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
