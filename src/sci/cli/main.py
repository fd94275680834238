"""The `sci` entry point: map errors to exit codes (SPEC §7), and take the common `sci build`
and `sci status` without importing click.

Exit codes: 0 success; 1 the work failed; 2 the request is wrong. Every failure prints one line
(`sci: error: where: what (hint: how)`), never a bare traceback (SCI_DEBUG=1 shows one).

Importing click and what it imports costs ~45 ms here, more than half of a no-op build of 200
nodes or of a status of a few. So `sci build` with nothing but targets, `-j N`, `-k`, `-v` and
`--json`, `sci status` with nothing but targets and `--json`, and `sci --version` are parsed
here; any other command line goes to the click command tree in `commands.py`, which parses it
the same way and also words usage errors and `--help`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import sci
from sci.cli.run import guarded, run_build, run_status, say


def plain_build(argv: list[str]) -> dict[str, Any] | None:
    """The arguments of `build` when `argv` is `build` with only targets, `-j N` (`-jN`,
    `--jobs N`, `--jobs=N`), `-k`/`--keep-going`, `-v`/`--verbose` and `--json`; else None
    (click then parses it, and words what is wrong)."""
    if not argv or argv[0] != "build":
        return None
    args: dict[str, Any] = {"targets": [], "jobs": None, "keep_going": False, "verbose": False, "as_json": False}
    rest = iter(argv[1:])
    for tok in rest:
        if tok in ("-j", "--jobs"):
            value = next(rest, None)
        elif tok.startswith("--jobs="):
            value = tok[len("--jobs="):]
        elif tok.startswith("-j") and len(tok) > 2:
            value = tok[2:]
        elif tok in ("-k", "--keep-going"):
            args["keep_going"] = True
            continue
        elif tok in ("-v", "--verbose"):
            args["verbose"] = True
            continue
        elif tok == "--json":
            args["as_json"] = True
            continue
        elif tok.startswith("-") or not tok:
            return None
        else:
            args["targets"].append(tok)
            continue
        if value is None or not (value.isascii() and value.isdigit()) or int(value) < 1:
            return None
        args["jobs"] = int(value)
    return args


def plain_status(argv: list[str]) -> dict[str, Any] | None:
    """The arguments of `status` when `argv` is `status` with only targets and `--json`; else
    None (click then parses it)."""
    if not argv or argv[0] != "status":
        return None
    args: dict[str, Any] = {"targets": [], "as_json": False}
    for tok in argv[1:]:
        if tok == "--json":
            args["as_json"] = True
        elif tok.startswith("-") or not tok:
            return None
        else:
            args["targets"].append(tok)
    return args


def main() -> None:
    # A command lives seconds and builds large structures at once (a 10,000-node plan is ~200k
    # objects): at the default thresholds the cyclic GC walks them again and again while they
    # are being made — a quarter of a parameter edit at 10,000 nodes. It stays on, only rarer.
    import gc

    gc.set_threshold(100_000, 50, 100)
    argv = sys.argv[1:]
    if argv in (["--version"], ["-V"]):
        say(f"sci {sci.__version__}")
        return
    if not all(a.isascii() for a in argv):
        _refuse_undecodable(argv)
    args, run = plain_build(argv), run_build
    if args is None:
        args, run = plain_status(argv), run_status
    if args is None:
        from sci.cli.commands import main as full

        full()
        return
    targets = args.pop("targets")
    try:
        guarded(lambda: run(targets, **args))
    except SystemExit as exc:
        if isinstance(exc.code, int):
            _leave(exc.code)
        raise
    _leave(0)


def _refuse_undecodable(argv: list[str]) -> None:
    """Exit 2 at an argument that is not UTF-8 (Python holds its bytes as surrogates): no
    record, key or message could hold it. It is named by position, never shown: it may be a
    `--set` secret."""
    from sci.canonical import not_text

    for i, arg in enumerate(argv, 1):
        if not_text(arg):
            sys.stderr.write(f"sci: error: argument {i} is not UTF-8 text (hint: pass targets, paths and --set "
                             "values as UTF-8)\n")
            _leave(2)


def _leave(code: int) -> None:
    """End the process without the interpreter's teardown of every object: a 10,000-node
    build holds ~300,000 (its plan and record), and freeing them one by one took ~10 ms of
    each command. The exit handlers still run and the standard streams are flushed. Only when
    no other thread is alive (a normal exit would wait for it): else a normal exit."""
    import threading

    if threading.active_count() != 1:
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say there
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
