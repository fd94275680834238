"""What both ways into `sci` share (the plain `sci build` and `sci status` parsed in main.py
and the click tree in commands.py): running a build or a status, and turning every failure
into one line and its exit code."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable


def warn(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_build(targets, *, jobs: int | None = None, keep_going: bool = False, dry_run: bool = False,
              overrides=(), force=(), as_json: bool = False, no_wait: bool = False, executor: str = "local",
              address: str | None = None, remote: str | None = None, no_remote: bool = False,
              remote_upload: bool = False, verbose: bool = False, executor_option=()) -> None:
    """`sci build`, however its command line was parsed."""
    from sci.workspace import find_workspace

    ws = find_workspace()
    from sci.build.fingerprint import ask_interpreter_early

    ask_interpreter_early(ws.state_dir / "cache", ws.root)  # a first build: python3 answers while sci starts
    from sci import api, canonical
    from sci.cli import console
    from sci.redact import remember_overrides

    remember_overrides(overrides)  # `--set db.password=…`: masked in every tail and record
    if dry_run:
        # What the build would refuse, it refuses too. A distributed executor checks the nodes
        # against its cluster when it builds; a dry run cannot reach it.
        rows = api.status(ws, list(targets), overrides=list(overrides), check_resources=executor == "local")
        if as_json:
            say(canonical.dumps_text({"dry_run": True, "nodes": [r.to_json() for r in rows]}))
        else:
            for line in console.status_lines(rows):
                say(line)
        return
    t0 = time.perf_counter()
    rep = console.reporter(verbose=verbose, quiet=False)
    try:
        report = api.build(ws, list(targets), jobs=jobs, keep_going=keep_going, overrides=list(overrides),
                           force=list(force), wait=not no_wait, emit=rep, argv=["build", *sys.argv[2:]],
                           executor=executor, executor_options=executor_options(address, executor_option),
                           remote=remote, use_remote=not no_remote,
                           remote_upload=remote_upload)
    except Exception as exc:
        rep.close() if hasattr(rep, "close") else None
        report = getattr(exc, "report", None)
        if report is not None:
            if as_json:
                say(canonical.dumps_text(report.to_json()))
            warn(console.summary(report.counts(), time.perf_counter() - t0))
        raise
    if hasattr(rep, "close"):
        rep.close()
    if as_json:
        say(canonical.dumps_text(report.to_json()))
    warn(console.summary(report.counts(), time.perf_counter() - t0))


def run_status(targets, *, overrides=(), as_json: bool = False) -> None:
    """`sci status`, however its command line was parsed: for each node, up to date or why it
    would run."""
    from sci import api, canonical
    from sci.cli import console
    from sci.redact import remember_overrides
    from sci.workspace import find_workspace

    remember_overrides(overrides)
    rows = api.status(find_workspace(), list(targets), overrides=list(overrides))
    if as_json:
        say(canonical.dumps_text({"nodes": [r.to_json() for r in rows]}))
        return
    for line in console.status_lines(rows):
        say(line)


def _masked(line: str) -> str:
    """An error line with every known secret value masked (SPEC §7: a key is never echoed)."""
    from sci.redact import redact

    return redact(line)


def executor_options(address: str | None, pairs=()) -> dict[str, Any]:
    """`--address` and every `--executor-option KEY=VALUE` as one mapping; a key given more than
    once keeps all its values, in order (a list option such as `setup` takes several)."""
    from sci.errors import UserError

    out: dict[str, Any] = {"address": address} if address else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--executor-option {pair!r} is not KEY=VALUE",
                            hint="e.g. --executor-option partition=gpu --executor-option time=2:00:00")
        if key in out and key != "address":
            prev = out[key]
            out[key] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            out[key] = value
    return out


def guarded(call: Callable[[], None]) -> None:
    """Run `call`, turning every failure into one line and its exit code."""
    from sci.errors import SciError

    try:
        call()
    except SciError as exc:
        warn(f"sci: error: {_masked(exc.one_line())}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        warn("sci: interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - a bug in sci: one line, traceback on request
        from sci.errors import environment_error

        refused = environment_error(exc)  # a full disk, a read-only folder: the work failed
        if refused is not None and not os.environ.get("SCI_DEBUG"):
            warn(f"sci: error: {refused.one_line()}")
            sys.exit(refused.exit_code)
        if os.environ.get("SCI_DEBUG"):
            raise
        warn(f"sci: internal error: {type(exc).__name__}: {_masked(str(exc))} (set SCI_DEBUG=1 for a traceback, "
             "and please report it)")
        sys.exit(3)
