"""`.sci/runs`: one summary per finished run, so listing runs reads one file.

A journal (store/journal.py, format `sci-runs-1`), like every state file under `.sci/`: one
frame per run, holding its id, kind, command, targets, times, status counts, headline metrics,
then every node's metrics and the parameters in effect. It is a cache of the manifests, never
the truth, and only readers write it: `sci runs`, `sci metrics --runs` and `sci diff` take the
runs that are in `runs/` now, use the frame of each that has one, read the manifest of any
that has none (a run recorded since the last read, or before the index existed) and append
frames for those, in one write. A build never touches it, so keeping it costs a build nothing.
A run folder someone deleted is simply not listed, whatever the index says. A damaged or
foreign file is ignored as if absent and written whole again; the file may be deleted at any
time (the next reader reads the manifests, slower, same answer). Readers take no lock: two at
once may both append a run's frame (the same summary twice; either is right) or lose an append
to a rewrite (the next reader adds it again).

At 1,000 runs of a 100-node pipeline reading the index takes a few ms where reading the
manifests took ~0.3 s (benchmarks/bench_history.py).
"""

from __future__ import annotations

import marshal
import sys
from pathlib import Path
from typing import Any

from sci.store import journal
from sci.values import Value

INDEX_FORMAT = "sci-runs-1"  # bump when a frame's fields change meaning; a file of another format is rebuilt
COMPACT = 64  # frames of deleted runs tolerated before the file is written whole without them



def summary(run_id: str, manifest: dict) -> dict[str, Any]:
    """A manifest's summary: what `sci runs` shows of a run (`headline`: a few metrics that
    stand for it), and what `sci metrics --runs` needs (`cells`: every node's metrics, and
    `params`).
    The id is its folder's name (a repro-check's manifest is its scratch rebuild's, with that
    run's id). One pass over the plan, in C where it can be (~0.6 ms at 10,000 nodes)."""
    plan = manifest.get("plan") or []
    statuses = [e["status"] for e in plan]
    counts = {s: statuses.count(s) for s in ("executed", "cached", "failed", "skipped")}
    vol = manifest.get("volatile") or {}
    metrics = {e["node"]: e["metrics"] for e in plan if "metrics" in e}
    line: dict[str, Any] = {
        "run": run_id,
        "kind": manifest.get("kind", "build"),
        "started": vol.get("started"),
        "duration_s": vol.get("duration_s"),
        "command": manifest.get("command") or [],
        "targets": manifest.get("targets") or [],
        "counts": counts,
        "params_digest": manifest.get("params_digest"),
        "headline": headline(metrics),
        "cells": cells(metrics),
    }
    if "params" in manifest:
        line["params"] = manifest["params"]
    return line


HEADLINE = 3  # metrics `sci runs` shows of a run
_DETAIL = ("cells", "params")  # the second half of a line, decoded only by who needs it


def cells(metrics: dict[str, dict]) -> tuple[tuple, tuple, tuple]:
    """A run's metrics as three parallel tuples, one entry per (node, metric): the nodes, the
    metric names, the values. Runs of one pipeline share the first two, so `sci metrics
    --all-runs` makes its columns by transposing the values of a thousand runs at once (and
    decodes 3 tuples a run, not a mapping per node). Names are interned: marshal writes a
    repeated one as a reference."""
    intern = sys.intern
    nodes = tuple(intern(n) for n, m in metrics.items() for _ in m)
    names = tuple(intern(k) for m in metrics.values() for k in m)
    values = tuple(v for m in metrics.values() for v in m.values())
    return nodes, names, values


def headline(metrics: dict[str, dict], n: int = HEADLINE) -> dict[str, Any]:
    """A few metrics that stand for a run: those of the last node in plan order that has any
    (the most downstream result: a sweep's nodes come before what summarizes them), by name."""
    if not metrics:
        return {}
    values = metrics[next(reversed(metrics))]
    return {name: values[name] for name in sorted(values)[:n]}


def encode(line: dict) -> bytes:
    """One frame's body: the summary's length (4 bytes), the summary, then its metrics and
    params, each marshalled (the fastest decoder at hand, as the other state files use), so
    `sci runs` decodes the first part only: ~0.3 KB a run, where the metrics of a 100-node run
    are ~5 KB."""
    head = marshal.dumps({k: v for k, v in line.items() if k not in _DETAIL})
    detail = marshal.dumps({k: line[k] for k in _DETAIL if k in line})
    return len(head).to_bytes(4, "little") + head + detail


class Index(Value):
    """What a read found: run id -> summary, each run's frame body, and where the file ends
    (None: absent, damaged, cut or of another format; the next save writes it whole)."""

    __slots__ = _FIELDS = ("lines", "bodies", "end", "frames")

    def __init__(self, lines: dict[str, dict], bodies: dict[str, bytes | memoryview], end: int | None, frames: int):
        self.lines, self.bodies, self.end, self.frames = lines, bodies, end, frames


def read_index(path: Path, *, detail: bool = False) -> Index:
    """The index at `path`: of each frame the first half, and with `detail` the second. A frame
    that does not decode makes the whole file unbelieved, as the journal's rule is."""
    found = journal.read(path, INDEX_FORMAT)
    if found is None:
        return Index({}, {}, None, 0)
    lines: dict[str, dict] = {}
    bodies: dict[str, bytes | memoryview] = {}
    loads = marshal.loads
    try:
        for body in found.bodies:
            cut = 4 + int.from_bytes(body[:4], "little")
            line = loads(body[4:cut])
            if type(line) is not dict or type(line.get("run")) is not str:
                raise ValueError("not a run's summary")
            if detail:
                more = loads(body[cut:])
                if type(more) is not dict:
                    raise ValueError("not a run's metrics")
                line.update(more)
            lines[line["run"]] = line
            bodies[line["run"]] = body
    except (ValueError, EOFError, TypeError):
        return Index({}, {}, None, 0)
    return Index(lines, bodies, found.end if found.whole else None, len(found.bodies))


def save(path: Path, found: Index, live: list[str], new: list[dict]) -> None:
    """Add the summaries `new` (of runs read from their manifests) to the index `found` read
    from `path`: appended when the file is sound and unchanged since, else (or when it holds
    many frames of runs no longer in `live`) written whole with the runs in `live`. Best effort:
    a failed or lost write costs the next reader time, never a wrong answer."""
    bodies = [encode(line) for line in new]
    stale = found.frames - len(found.bodies.keys() & set(live))
    if found.end is not None and stale <= COMPACT:
        journal.append(path, INDEX_FORMAT, bodies, end=found.end)
        return
    keep = set(live)
    old = [body for run, body in found.bodies.items() if run in keep]
    journal.write(path, INDEX_FORMAT, old + bodies)
