"""Scheduler events → the terminal: progress on stderr (rich on a terminal, plain lines
otherwise), data on stdout. `NO_COLOR` is honoured; nothing here decides anything."""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class PlainReporter:
    """One line per executed, failed or skipped node as it finishes, with how far the build is
    (`[done/total]`, cached nodes counted): what a CI log shows while a long build runs. Cached
    nodes only in the summary (or one line each with -v)."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.total = 0
        self.done = 0

    def __call__(self, event: str, node: str | None = None, **data: Any) -> None:
        if event == "build_started":
            self.total = data.get("nodes", 0)
        elif event == "node_cached":
            self.done += 1
            if self.verbose:
                _err(f"  cached    {node}")
        elif event == "unchanged":  # a parameter edit's untouched nodes, all at once
            self.done += data.get("nodes", 0)
            if self.verbose:
                _err(f"  cached    {data.get('nodes', 0)} nodes: {data.get('reason')}")
        elif event == "node_started":
            if self.verbose:
                _err(f"  start     {node}")
        elif event == "node_executed":
            self.done += 1
            _err(f"  executed  {node} ({data.get('duration_s', 0):.2f}s)  {self._progress()}")
        elif event == "node_failed":
            from sci.redact import redact  # a tail made on another machine (Ray) is masked here too

            self.done += 1
            _err(f"  FAILED    {node}: {redact(str(data.get('error')))}  {self._progress()}")
            tail = redact(data.get("stderr_tail") or "")
            if tail:
                for line in tail.splitlines():
                    _err(f"    | {line}")
        elif event == "node_skipped":
            self.done += 1
            _err(f"  skipped   {node} (upstream {data.get('because')} failed)")
        elif event == "warning":
            from sci.redact import redact

            _err(f"sci: warning: {redact(str(data.get('message')))}")
        elif event == "environment_prepared":
            _err(f"  prepared  environment {data.get('environment')} ({data.get('duration_s', 0):.2f}s)")

    def _progress(self) -> str:
        return f"[{self.done}/{self.total}]" if self.total else ""

    def close(self) -> None:
        pass


class RichReporter(PlainReporter):
    """A live progress bar (done/total, cached, running nodes) above the plain lines."""

    def __init__(self, verbose: bool = False):
        super().__init__(verbose)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
        self.progress = Progress(TextColumn("[bold]sci build"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self.task = None
        self.running: dict[str, float] = {}
        self.cached = 0

    def _refresh(self) -> None:
        if self.task is None:
            return
        from rich.markup import escape

        # node names, escaped: `slow[i=1]` would otherwise read as a markup tag and show as `slow`
        names = escape(", ".join(list(self.running)[:3])) + (" …" if len(self.running) > 3 else "")
        info = f"cached {self.cached} · running {len(self.running)}" + (f": {names}" if names else "")
        self.progress.update(self.task, completed=self.done, info=info)

    def __call__(self, event: str, node: str | None = None, **data: Any) -> None:
        if event == "build_started":
            self.total = data.get("nodes", 0)
            self.progress.start()
            self.task = self.progress.add_task("build", total=self.total, info="")
        elif event == "node_cached":
            self.cached += 1
            self.done += 1
        elif event == "unchanged":
            self.cached += data.get("nodes", 0)
            self.done += data.get("nodes", 0)
        elif event == "node_started":
            self.running[node] = time.monotonic()
        elif event in ("node_executed", "node_failed"):
            self.running.pop(node, None)
            self.done += 1
            if event == "node_executed":
                self.progress.console.print(f"  executed  {node} ({data.get('duration_s', 0):.2f}s)", markup=False,
                                            highlight=False)
            else:
                self.done -= 1
                PlainReporter.__call__(self, event, node, **data)
        elif event in ("node_skipped", "environment_prepared", "warning"):
            PlainReporter.__call__(self, event, node, **data)
        elif event == "warning":
            self.progress.console.print(f"sci: warning: {data.get('message')}", markup=False, highlight=False)
        elif event == "build_finished":
            self.progress.stop()
        self._refresh()

    def close(self) -> None:
        self.progress.stop()


def reporter(verbose: bool = False, quiet: bool = False):
    if quiet:
        return lambda *a, **k: None
    if sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
        return RichReporter(verbose)
    return PlainReporter(verbose)


def summary(counts: dict[str, int], seconds: float) -> str:
    parts = [f"{v} {k}" for k, v in counts.items() if v]
    return f"sci: {', '.join(parts) or 'nothing to do'} in {seconds:.2f}s"


def status_lines(rows) -> list[str]:
    out = []
    for r in rows:
        why = ": " + "; ".join(r.reasons) if r.reasons else ""
        if r.state == "waits":
            out.append(f"  waits       {r.node}{why} (on {', '.join(r.waits_on)})")
        else:
            out.append(f"  {r.state:<11} {r.node}{why}")
    return out


def repro_lines(rep) -> list[str]:
    """The repro-check table: one line per node, then what differs, file by file (diffs.py)."""
    from sci.evidence.diffs import summary_lines

    out = []
    width = max((len(v.node) for v in rep.verdicts), default=4)
    for v in rep.verdicts:
        out.append((f"  {v.status:<26} {v.node:<{width}}" + (f"  {v.note}" if v.note else "")).rstrip())
        for comp in v.env_drift:
            out.append(f"      env: {comp}")
        for f in v.files:
            out.extend(summary_lines(f))
    if rep.diffoscope and rep.diffoscope not in ("ran", "nothing differs"):
        out.append(f"  diffoscope: {rep.diffoscope}")
    return out


def run_lines(runs: list[dict]) -> list[str]:
    """`sci runs`: one line per run, newest first; aligned columns, plain text."""
    from sci.records.history import overrides
    from sci.records.table import text

    rows = []
    for r in runs:
        if r.get("incomplete"):
            rows.append([r["run"], "incomplete (no manifest: killed, or still running)", "", "", "", ""])
            continue
        c = r.get("counts") or {}
        counts = f"{c.get('executed', 0)} run · {c.get('cached', 0)} cached" + (
            f" · {c['failed']} failed" if c.get("failed") else "") + (
            f" · {c['skipped']} skipped" if c.get("skipped") else "")
        command = r.get("command") or []
        cmd = " ".join(a for a in command if a not in overrides(command) and a != "--set"
                       and not a.startswith("--set="))
        if r.get("kind") not in (None, "build") and not cmd.startswith(str(r.get("kind"))):
            cmd = f"{r['kind']}: {cmd}"
        dur = r.get("duration_s")
        rows.append([r["run"], cmd, " ".join(f"--set {o}" for o in overrides(command)), counts,
                     f"{dur:.2f}s" if isinstance(dur, int | float) else "",
                     "  ".join(f"{k}={text(v)}" for k, v in (r.get("headline") or {}).items())])
    if not rows:
        return []
    head = ["RUN", "COMMAND", "OVERRIDES", "NODES", "TIME", "HEADLINE METRICS"]
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    return ["  ".join(x.ljust(w) if i != 4 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths))).rstrip()
            for row in [head, *rows]]
