"""The recorded runs, newest first: what `sci runs` lists and `sci metrics --runs` / `sci diff`
pick from. Reads `runs/` (the index, and manifests where the index has no frame); writes only
the index, a cache in `.sci/` (records/index.py).

A run's summary is its index frame; a run folder without a manifest (a build killed before it
ended, or one still running) is listed as incomplete, and not indexed (it may yet finish).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sci.errors import UserError
from sci.records.index import read_index, save, summary


def list_runs(ws, *, detail: bool = False) -> list[dict[str, Any]]:
    """Every run in the workspace's `runs/`, newest first (run ids sort by time), as summaries;
    with `detail`, with every node's metrics and the parameters too (records/index.py)."""
    runs_dir = ws.runs_dir
    try:
        names = [e.name for e in os.scandir(runs_dir) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    names.sort(reverse=True)
    found = read_index(ws.runs_index, detail=detail)
    indexed = found.lines
    out, new = [], []
    for name in names:
        line = indexed.get(name)
        if line is None:
            line = _from_manifest(runs_dir / name)
            if not line.get("incomplete"):
                new.append(line)
        out.append(line)
    if new:
        save(ws.runs_index, found, names, new)
    return out


def _from_manifest(run_dir: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((run_dir / "manifest.json").read_bytes())
        if not isinstance(manifest, dict):
            raise ValueError("not a manifest")
        return summary(run_dir.name, manifest)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {"run": run_dir.name, "incomplete": True, "kind": None, "command": [], "targets": [],
                "counts": {}, "cells": ((), (), ()), "duration_s": None, "started": None}


def read_manifest(runs_dir: Path, run_id: str) -> dict:
    path = runs_dir / run_id / "manifest.json"
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"run {run_id} has no readable manifest ({exc})",
                        hint="the build was killed or is still running; pick another run (`sci runs`)") from None


def overrides(command: list[str]) -> list[str]:
    """The `--set KEY=VALUE` assignments of a recorded command line, in order."""
    out, it = [], iter(command)
    for arg in it:
        if arg == "--set":
            value = next(it, None)
            if value is not None:
                out.append(value)
        elif arg.startswith("--set="):
            out.append(arg[len("--set="):])
    return out


def complete(runs: list[dict]) -> list[dict]:
    return [r for r in runs if not r.get("incomplete")]


def resolve(runs: list[dict], ref: str) -> dict:
    """A run named by its id, a unique prefix of it, or `~N` (the N-th before the latest; `~0`
    is the latest) among `runs` (newest first)."""
    if ref.startswith("~") and ref[1:].isdigit():
        n = int(ref[1:])
        if n >= len(runs):
            raise UserError(f"there is no run {ref}: {len(runs)} run(s) recorded", hint="`sci runs` lists them")
        return runs[n]
    exact = [r for r in runs if r["run"] == ref]
    if exact:
        return exact[0]
    hits = [r for r in runs if r["run"].startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise UserError(f"no recorded run {ref!r}", hint="`sci runs` lists the runs; give an id, a unique prefix or ~N")
    raise UserError(f"{ref!r} names {len(hits)} runs ({hits[0]['run']}, {hits[1]['run']}, ...)",
                    hint="give more of the id")


def to_json(line: dict) -> dict:
    """A summary as `sci runs --json` prints it."""
    return {
        "run": line["run"],
        "kind": line.get("kind"),
        "incomplete": bool(line.get("incomplete")),
        "started": line.get("started"),
        "duration_s": line.get("duration_s"),
        "command": line.get("command") or [],
        "overrides": overrides(line.get("command") or []),
        "targets": line.get("targets") or [],
        "counts": line.get("counts") or {},
        "headline": line.get("headline") or {},
    }
