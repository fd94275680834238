"""`.sci/runs.jsonl`: one summary line per finished run, so listing runs reads one file.

The line is written when the run's manifest is (records.write_manifest), appended in one write:
run id, kind, command, targets, times, status counts, the parameters in effect and every node's
metrics. It is a cache of the manifests, never the truth: a reader takes the runs that are in
`runs/` now, uses the index line of each when there is one, and reads the manifest of any run
that has none (a run recorded before the index existed, a line lost to a crash or a torn
write). A run folder someone deleted is simply not listed, whatever the index says. So the
file may be deleted at any time; `sci runs` then reads the manifests (slower, same answer).

At 1,000 runs of a 100-node pipeline reading the index takes a few ms where reading the
manifests took ~0.3 s (benchmarks/bench_history.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

INDEX_FORMAT = 1  # bump when a line's fields change meaning; lines of another format are ignored

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def summary(run_id: str, manifest: dict) -> dict[str, Any]:
    """A manifest's summary: what `sci runs` shows of a run (`headline`: a few metrics that
    stand for it), and what `sci metrics --runs` needs (`metrics` of every node, `params`).
    The id is its folder's name (a repro-check's manifest is its scratch rebuild's, with that
    run's id). One pass over the plan, in C where it can be (at 10,000 nodes ~0.6 ms of a build)."""
    plan = manifest.get("plan") or []
    statuses = [e["status"] for e in plan]
    counts = {s: statuses.count(s) for s in ("executed", "cached", "failed", "skipped")}
    vol = manifest.get("volatile") or {}
    metrics = {e["node"]: e["metrics"] for e in plan if "metrics" in e}
    line: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "run": run_id,
        "kind": manifest.get("kind", "build"),
        "started": vol.get("started"),
        "duration_s": vol.get("duration_s"),
        "command": manifest.get("command") or [],
        "targets": manifest.get("targets") or [],
        "counts": counts,
        "params_digest": manifest.get("params_digest"),
        "headline": headline(metrics),
        "metrics": metrics,
    }
    if "params" in manifest:
        line["params"] = manifest["params"]
    return line


HEADLINE = 3  # metrics `sci runs` shows of a run
_DETAIL = ("metrics", "params")  # the second half of a line, decoded only by who needs it


def headline(metrics: dict[str, dict], n: int = HEADLINE) -> dict[str, Any]:
    """A few metrics that stand for a run: those of the last node in plan order that has any
    (the most downstream result: a sweep's nodes come before what summarizes them), by name."""
    if not metrics:
        return {}
    values = metrics[next(reversed(metrics))]
    return {name: values[name] for name in sorted(values)[:n]}


def encode(line: dict) -> bytes:
    """One index line: the summary's JSON, a tab, then the JSON of its metrics and params. A
    tab never occurs inside JSON text (json escapes it in strings), so `sci runs` decodes the
    first half only: ~0.5 KB a run, where the metrics of a 100-node run are ~7 KB."""
    head = {k: v for k, v in line.items() if k not in _DETAIL}
    detail = {k: line[k] for k in _DETAIL if k in line}
    return (_encode(head) + "\t" + _encode(detail) + "\n").encode("utf-8")


def append_index(run_dir: Path, manifest: dict) -> None:
    """Append the run's line to the workspace's index (best effort: a run whose line is missing
    is read from its manifest instead). The index lives in `.sci/`, not in `runs/`, which holds
    nothing but one folder per run (SPEC §1)."""
    from sci.workspace import Workspace

    try:
        data = encode(summary(run_dir.name, manifest))
        fd = os.open(Workspace.of_run(run_dir).runs_index, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except (OSError, ValueError, TypeError, KeyError):
        pass


def read_index(path: Path, *, detail: bool = False) -> dict[str, dict]:
    """run id -> its summary, from the index at `path`: the first half of each line, and with
    `detail` the second (a line whose half does not decode is left out: its run is then read
    from its manifest). Torn or foreign lines are skipped."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return {}
    out: dict[str, dict] = {}
    loads = json.loads
    for raw in data.splitlines():
        head, tab, rest = raw.partition(b"\t")
        try:
            line = loads(head)
            if type(line) is not dict or line.get("format") != INDEX_FORMAT or type(line.get("run")) is not str:
                continue
            if detail:
                more = loads(rest) if tab else None
                if type(more) is not dict:
                    continue
                line.update(more)
        except ValueError:
            continue
        out[line["run"]] = line
    return out
