"""Records: StepResults (action results), the RunManifest, logs.jsonl and `.sci/state`.

Every record is canonical JSON. Fields that differ between two runs of the same command on the
same inputs (times, run id, durations, host, executor) live under one key, `volatile`, so two
such manifests are byte-identical once it is removed (SPEC §6).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import sci
from sci import canonical
from sci import redact
from sci.errors import at_path
from sci.redact import redact_argv  # noqa: F401 - records.redact_argv, as callers know it
from sci.values import Value

class NodeStatus(str, Enum):
    """What happened to a node in one run: found in the store, run, failed, or not reached."""

    CACHED = "cached"
    EXECUTED = "executed"
    FAILED = "failed"
    SKIPPED = "skipped"


# How the error of a node begins that sci itself stopped (SIGTERM) after another node failed:
# a failure summary names the node that failed first, never one of these.
CANCELLED = "cancelled after"


class Outcome(Value):
    """What happened to one node in one run, as the scheduler reports it."""

    __slots__ = _FIELDS = ("node", "status", "key", "outputs", "error", "stderr_tail", "duration_s", "result")

    def __init__(self, node: str, status: NodeStatus, key: str | None = None, outputs: dict[str, dict] | None = None,
                 error: str | None = None, stderr_tail: str = "", duration_s: float = 0.0, result: dict | None = None):
        self.node, self.status, self.key = node, status, key
        self.outputs = outputs if outputs is not None else {}
        self.error, self.stderr_tail, self.duration_s, self.result = error, stderr_tail, duration_s, result


class Outcomes(Mapping):
    """Every selected node's outcome: those this build decided, and those a parameter edit took
    unchanged from the last build's record (noop.unchanged_nodes), as their plan entries. An
    entry becomes an Outcome only when asked for: making 10,000 of them took ~10 ms, and a build
    asks for a few (its counts need none)."""

    __slots__ = ("decided", "recorded")

    def __init__(self, decided: dict[str, Outcome], recorded: Mapping[str, dict] | None = None):
        self.decided = decided
        self.recorded = recorded if recorded is not None else {}

    def __getitem__(self, name: str) -> Outcome:
        hit = self.decided.get(name)
        if hit is not None:
            return hit
        entry = self.recorded[name]
        return Outcome(name, NodeStatus.CACHED, entry["key"], entry["outputs"])

    def get(self, name: str, default: Any = None) -> Any:
        hit = self.decided.get(name)
        if hit is not None:
            return hit
        return self[name] if name in self.recorded else default

    def __contains__(self, name: object) -> bool:
        return name in self.decided or name in self.recorded

    def __iter__(self) -> Iterator[str]:
        yield from self.decided
        decided = self.decided
        yield from (n for n in self.recorded if n not in decided)

    def __len__(self) -> int:
        return len(self.decided) + len(self.recorded) - self._both()

    def _both(self) -> int:
        recorded = self.recorded
        return sum(1 for n in self.decided if n in recorded) if recorded else 0

    def counts(self) -> dict[str, int]:
        """How many nodes ended in each status (the recorded ones are cached)."""
        out = {"cached": len(self.recorded) - self._both(), "executed": 0, "failed": 0, "skipped": 0}
        for o in self.decided.values():
            out[o.status] += 1  # a str Enum: the member is its value as a dict key
        return out



# Bump when a record's shape changes (and regenerate docs/schemas with `sci schema`).
RECORD_FORMAT = 1
DOSSIER_FORMAT = 2  # dossier.json; 2: lineage as a graph, the reproduction claim (records/models.py pins it)


def utc_now() -> str:
    """ISO 8601 UTC to the microsecond. Called a few times per node: the formatted second is
    kept, so this takes 0.5 µs instead of datetime.strftime's ~3 µs."""
    global _SECOND
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _SECOND  # one read: another thread may replace it meanwhile
    if cached[0] != second:
        cached = _SECOND = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{micro:06d}Z"


_SECOND: tuple = (None, "")


def new_run_id() -> str:
    """Sorts by time: UTC timestamp to the microsecond, then the pid to break ties."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ") + f"-{os.getpid()}"


def step_result(*, key: str, node, components: dict, outputs: dict, exit_status: int, stdout: str,
                stderr: str, metrics: dict, environment: dict, volatile: dict) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "type": "sci.step_result",
        "key": key,
        "node": node.name,
        "step": node.step,
        "components": components,
        "outputs": outputs,
        "exit_status": exit_status,
        "seed": node.seed,
        "determinism": node.determinism,
        "stdout": stdout,
        "stderr": stderr,
        "metrics": metrics,
        "environment": environment,
        "volatile": volatile,
    }


def without_volatile(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "volatile"}


def git_commit(root: Path) -> str | None:
    """HEAD's commit of the workspace's git repository, read from .git without running git."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: PATH"
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        for base in (git, _common_dir(git)):
            loose = base / ref
            if loose.is_file():
                return loose.read_text().strip() or None
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


def _common_dir(git: Path) -> Path:
    try:
        return (git / (git / "commondir").read_text().strip()).resolve()
    except OSError:
        return git


# Options that choose where nodes run, not what they compute: kept out of the manifest's
# non-volatile fields (SPEC §9: the executor never enters a record), recorded under volatile.
EXECUTOR_OPTIONS = ("--executor", "--address", "--executor-option")


def without_executor_options(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in EXECUTOR_OPTIONS:
            skip = True
            continue
        if a.split("=", 1)[0] in EXECUTOR_OPTIONS:
            continue
        out.append(a)
    return out


# The level of an event in logs.jsonl, where it is not "info".
LEVELS = {"node_failed": "error", "warning": "warning"}


class RunLog:
    """runs/<run_id>/logs.jsonl: one JSON object per line (time, level, node, event, data).

    Each line goes to the file as it is written, with one `write` on an append-only descriptor
    (no buffer in this process): a build killed at any moment leaves every event before the
    kill, and at most a torn last line (a reader skips a last line that does not parse; a write of
    a few hundred bytes to a local file is not torn by SIGKILL). tests/test_faults.py checks it."""

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "logs.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._lock = threading.Lock()

    # One encoder for every line: json.dumps with options builds a new one per call.
    _encode = json.JSONEncoder(ensure_ascii=False, default=str, allow_nan=False, sort_keys=True).encode

    def write(self, event: str, node: str | None = None, level: str = "info", **data: Any) -> None:
        line = redact.redact(self._encode({"time": utc_now(), "level": level, "node": node, "event": event,
                                           "data": data}))
        view = memoryview((line + "\n").encode("utf-8"))
        with self._lock:
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as exc:
                raise at_path(exc, self.path) from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# A manifest's pieces (two per plan entry) go out this many to a writev, never copied in this
# process first: a 10,000-node manifest (2.9 MB) in a fresh process took 16 ms through an 8 KiB
# buffered file (~720 writes) or joined, 10.8 ms through a 1 MiB buffer, 7.1 ms so.
_IOV_MAX = 1024


def _write_pieces(fd: int, pieces: list[bytes]) -> None:
    """Write `pieces` to fd, in order, a batch per writev; after a short write, the rest of
    that batch with os.write until all of it is written."""
    for i in range(0, len(pieces), _IOV_MAX):
        batch = pieces[i:i + _IOV_MAX]
        written = os.writev(fd, batch)
        if written < sum(map(len, batch)):
            rest = memoryview(b"".join(batch))[written:]
            while rest:
                rest = rest[os.write(fd, rest):]


def write_manifest(run_dir: Path, manifest: dict, encoded: dict[str, list[bytes]] | None = None) -> Path:
    """Write the manifest as canonical JSON. `encoded`: fields whose canonical JSON the caller
    has already, as pieces (`plan_pieces`: the plan's entries, kept in the no-op record; the
    parameters as planned): most of a big manifest's bytes, written as they are instead of
    encoded (10,000 nodes: ~30 ms for the plan) and not even joined: each 3 MB joined costs ~3 ms
    here, most of it the new memory's page faults. Joined only to hide a known secret."""
    path = run_dir / "manifest.json"
    tmp = path.with_suffix(".tmp")
    pieces = manifest_pieces(manifest, encoded) if encoded else [canonical.dumps(manifest)]
    if redact.known():
        pieces = [redact.redact_bytes(b"".join(pieces))]
    pieces.append(b"\n")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            _write_pieces(fd, pieces)
        finally:
            os.close(fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise at_path(exc, path) from None
    os.replace(tmp, path)
    return path


def manifest_pieces(manifest: dict, encoded: dict[str, list[bytes]]) -> list[bytes]:
    """canonical.dumps(manifest) in pieces, where each field in `encoded` is given as the pieces
    of its canonical JSON: the fields in code-point order, those between the given ones encoded
    together."""
    pieces: list[bytes] = [b"{"]
    run: dict = {}
    for key in sorted(manifest):
        if key not in encoded:
            run[key] = manifest[key]
            continue
        if run:
            pieces += (canonical.dumps(run)[1:-1], b",")
            run = {}
        pieces.append(canonical.dumps(key) + b":")
        pieces += encoded[key]
        pieces.append(b",")
    if run:
        pieces.append(canonical.dumps(run)[1:-1])
    elif len(pieces) > 1:
        pieces.pop()  # the comma after the last given field
    pieces.append(b"}")
    return pieces


def plan_pieces(plan_json: list[bytes]) -> list[bytes]:
    """The pieces of the plan's canonical JSON, from its entries' (manifest_pieces)."""
    pieces = [b","] * (2 * len(plan_json) + 1)
    pieces[0], pieces[-1] = b"[", b"]"
    pieces[1:-1:2] = plan_json
    return pieces if plan_json else [b"[]"]


def manifest(*, root: Path, pipeline_digest: str, params_digest: str, environment: dict,
             determinism: str, root_seed: int, command: list[str], targets: list[str], plan: list[dict],
             run_id: str, started: str, started_clock: float, executor: str, durations: dict[str, float],
             kind: str = "build", with_git: bool = True, params: dict | None = None, params_json: bytes | None = None,
             environments: dict[str, dict] | None = None) -> dict[str, Any]:
    man = {
        "format": RECORD_FORMAT,
        "type": "sci.run_manifest",
        "kind": kind,
        "sci_version": sci.__version__,
        "git_commit": git_commit(root) if with_git else None,
        "pipeline_digest": pipeline_digest,
        "params_digest": params_digest,
        "environment": environment,
        "determinism": determinism,
        "root_seed": root_seed,
        "command": redact_argv(command),
        "targets": targets,
        "plan": plan,
        "volatile": {
            "run_id": run_id,
            "started": started,
            "finished": utc_now(),
            "duration_s": round(time.perf_counter() - started_clock, 6),
            "host": os.uname().nodename,  # gethostname(), without importing socket
            "executor": executor,
            "python_executable": sys.executable,
            "durations": durations,
        },
    }
    if params is not None:  # the parameters in effect, --set overrides applied (sci diff compares them)
        # `params` itself when nothing in it is hidden: its canonical JSON (`params_json`, when the
        # caller has it) is then the field's bytes (write_manifest)
        hidden = params_json is None or not redact.hides_nothing_in(params_json)
        man["params"] = redact.redact_params(params) if hidden else params
    if environments:  # the declared environments' fingerprints, by name (sci diff names their changes)
        man["environments"] = environments
    return man


# The file's format (store/journal.py frames it): bump when an entry's shape changes; a file
# of another format is then ignored (the first build finds every key in the store instead).
STATE_FILE, STATE_FORMAT = "state", "sci-state-4"
_COMPACT_AFTER = 16  # appended frames a load tolerates before the next save rewrites the file


def state_of(ws, hint: dict[str, dict] | None = None) -> State:
    return State(ws.state_dir / STATE_FILE, hint)


class State:
    """`.sci/state`: the last key and outputs of each node built in this workspace.

    A hint for speed (no-op builds skip reading action results) and for `status` (what the
    node's key was before, to explain a change). Losing it costs time, never correctness, and
    so does an old entry: a (key, outputs) pair stays true for as long as that key's action
    result is in the store, which every reader checks.

    The file is a journal (store/journal.py) of marshalled frames: the whole table, then the
    changes of later builds appended. A build after a parameter edit changes a few nodes: it
    appends them without reading the table, and answers `get` from `hint` (the last build's
    record) where it can. Many frames (a load finds them, or an append after edits that never
    loaded the file) make the save rewrite the file whole; a damaged file is not believed at all
    (read as empty, then rewritten).
    """

    def __init__(self, path: Path, hint: dict[str, dict] | None = None):
        self.path = path
        self._hint = hint or {}
        self._loaded: dict[str, dict] | None = None
        self._changed: dict[str, dict] = {}
        self._compact = False

    @property
    def nodes(self) -> dict[str, dict]:
        """Every node's entry (a copy): the file's and this build's."""
        return {**self._table(), **self._changed}

    def _table(self) -> dict[str, dict]:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def _load(self) -> dict[str, dict]:
        import marshal

        from sci.store import journal

        found = journal.read(self.path, STATE_FORMAT)
        if found is None:
            self._compact = True  # damaged or absent: written whole next time
            return {}
        nodes: dict[str, dict] = {}
        try:
            for body in found.bodies:
                nodes.update(marshal.loads(body))
        except (ValueError, EOFError, TypeError, AttributeError):
            self._compact = True
            return {}
        self._compact = len(found.bodies) > _COMPACT_AFTER or not found.whole
        return nodes

    def get(self, node: str) -> dict | None:
        hit = self._changed.get(node)
        if hit is None and self._loaded is None:
            hit = self._hint.get(node)
        return hit if hit is not None else self._table().get(node)

    def put(self, node: str, key: str, outputs: dict) -> None:
        cur = self._changed.get(node) or (self._hint if self._loaded is None else self._loaded).get(node)
        if cur and cur.get("key") == key and cur.get("outputs") == outputs:
            return
        self._changed[node] = {"key": key, "outputs": outputs}

    def save(self) -> None:
        import marshal

        from sci.store import journal

        if not self._changed:
            return
        # Appended only to a sound file of this format (journal.append walks its frame lengths);
        # anything else, or a file that needs compacting, is written whole from the table.
        if self._loaded is not None or self._compact \
                or not journal.append(self.path, STATE_FORMAT, [marshal.dumps(self._changed)], most=_COMPACT_AFTER):
            self._table().update(self._changed)
            self._compact = not journal.write(self.path, STATE_FORMAT, [marshal.dumps(self._loaded)])
        self._changed = {}
