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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import sci
from sci import canonical
from sci.fingerprint import is_secret_name

class NodeStatus(str, Enum):
    """What happened to a node in one run: found in the store, run, failed, or not reached."""

    CACHED = "cached"
    EXECUTED = "executed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class Outcome:
    """What happened to one node in one run, as the scheduler reports it."""

    node: str
    status: NodeStatus
    key: str | None = None
    outputs: dict[str, dict] = field(default_factory=dict)
    error: str | None = None
    stderr_tail: str = ""
    duration_s: float = 0.0
    result: dict | None = None



# Bump when a record's shape changes (and regenerate docs/schemas with `sci schema`).
RECORD_FORMAT = 1


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
EXECUTOR_OPTIONS = ("--executor", "--address")


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


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with the values of secret-looking `--set`/env assignments hidden."""
    out = []
    for a in argv:
        name = a.split("=", 1)[0].upper()
        out.append(f"{a.split('=', 1)[0]}=<redacted>" if "=" in a and is_secret_name(name) else a)
    return out


class RunLog:
    """runs/<run_id>/logs.jsonl: one JSON object per line (time, level, node, event, data)."""

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "logs.jsonl"
        self._fh = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    # One encoder for every line: json.dumps with options builds a new one per call.
    _encode = json.JSONEncoder(ensure_ascii=False, default=str, allow_nan=False, sort_keys=True).encode

    def write(self, event: str, node: str | None = None, level: str = "info", **data: Any) -> None:
        line = self._encode({"time": utc_now(), "level": level, "node": node, "event": event, "data": data})
        with self._lock:
            self._fh.write(line + "\n")

    def close(self) -> None:
        self._fh.close()


def write_manifest(run_dir: Path, manifest: dict) -> Path:
    path = run_dir / "manifest.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(canonical.dumps(manifest) + b"\n")
    os.replace(tmp, path)
    return path


def manifest(*, root: Path, pipeline_digest: str, params_digest: str, environment: dict,
             determinism: str, root_seed: int, command: list[str], targets: list[str], plan: list[dict],
             run_id: str, started: str, started_clock: float, executor: str, durations: dict[str, float],
             kind: str = "build", with_git: bool = True) -> dict[str, Any]:
    return {
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


STATE_FILE, STATE_FORMAT = "state", "sci-state-2"


def state_of(ws) -> State:
    return State(ws.state_dir / STATE_FILE)


class State:
    """`.sci/state`: the last key and outputs of each node built in this workspace.

    A hint for speed (no-op builds skip reading action results) and for `status` (what the
    node's key was before, to explain a change). Losing it costs time, never correctness.
    Kept in marshal, not JSON: at 10,000 nodes it loads and saves in 10 ms instead of 50 ms.
    """

    def __init__(self, path: Path):
        import marshal

        self.path = path
        self.nodes: dict[str, dict] = {}
        try:
            doc = marshal.loads(path.read_bytes())
            if isinstance(doc, dict) and doc.get("format") == STATE_FORMAT and isinstance(doc.get("nodes"), dict):
                self.nodes = doc["nodes"]
        except (OSError, ValueError, EOFError, TypeError):
            self.nodes = {}
        self._dirty = False

    def get(self, node: str) -> dict | None:
        return self.nodes.get(node)

    def put(self, node: str, key: str, outputs: dict) -> None:
        cur = self.nodes.get(node)
        if cur and cur.get("key") == key and cur.get("outputs") == outputs:
            return
        self.nodes[node] = {"key": key, "outputs": outputs}
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        import marshal

        tmp.write_bytes(marshal.dumps({"format": STATE_FORMAT, "nodes": self.nodes}))
        os.replace(tmp, self.path)
        self._dirty = False
