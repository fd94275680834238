"""Shared fixtures: temporary workspaces and a way to run the real `sci` CLI in them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests run as under `uv run pytest` (.ci/run): the test interpreter's bin/ first on PATH, so a
# step's `python` is that interpreter (sci itself never puts it there: SPEC §10).
_BIN = os.path.dirname(sys.executable)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", os.defpath)


def pytest_collection_modifyitems(config, items):
    """Under SCI_SHORTCUTS=off or verify no shortcut answers a build: the tests that assert how
    one answered (its events, what it did not visit) have nothing to check there."""
    mode = os.environ.get("SCI_SHORTCUTS", "on")
    if mode in ("off", "verify"):
        skip = pytest.mark.skip(reason=f"SCI_SHORTCUTS={mode}: no shortcut answers, the full path does")
        for item in items:
            if "shortcut_mechanics" in item.keywords:
                item.add_marker(skip)


class Sci:
    """Runs `python -m sci.cli ...` in a workspace, the way a user runs `sci`."""

    def __init__(self, root: Path, env: dict[str, str] | None = None):
        self.root = root
        self.env = dict(os.environ)
        self.env.pop("SCI_CAS", None)
        self.env.pop("SCI_REMOTE", None)
        self.env["NO_COLOR"] = "1"
        if env:
            self.env.update(env)

    def __call__(self, *args: str, check: bool | int = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "sci.cli", *args], cwd=kw.pop("cwd", self.root),
                              env=kw.pop("env", self.env), capture_output=True, text=True, timeout=timeout, **kw)
        expected = 0 if check is True else check
        if check is not False and proc.returncode != expected:
            raise AssertionError(f"sci {' '.join(args)} exited {proc.returncode} (wanted {expected})\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def build(self, *args: str, check: bool | int = True) -> dict:
        """`sci build --json ...` → its summary, plus `executed`/`cached` node-name lists."""
        proc = self("build", "--json", *args, check=check)
        data = json.loads(proc.stdout)
        for status in ("executed", "cached", "failed", "skipped"):
            data[status] = sorted(n["node"] for n in data["nodes"] if n["status"] == status)
        data["stderr"] = proc.stderr
        return data


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))


@pytest.fixture
def ws(tmp_path: Path):
    """A factory: ws({path: text}) writes the files into a fresh workspace and returns a Sci."""
    root = tmp_path / "ws"
    root.mkdir()

    def make(files: dict[str, str], env: dict[str, str] | None = None) -> Sci:
        write(root, files)
        return Sci(root, env)

    make.root = root
    return make


def same(a, b) -> bool:
    """Equal with the same types all the way down and dict keys in the same order (parsed YAML
    compared exactly: 1, 1.0 and True differ, so do 0.0 and -0.0; NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return a == b


def no_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" not in text


@contextlib.contextmanager
def signals_reach_children():
    """Children started inside begin with SIGINT and SIGHUP at their defaults, as from a
    terminal. A test run started in the background of a non-interactive shell has SIGINT
    ignored, one started under `nohup` SIGHUP; a child inherits that (a handler is not
    inherited), and sci rightly keeps a signal its caller chose to ignore."""
    saved = {}
    for sig in (signal.SIGINT, signal.SIGHUP):
        old = signal.getsignal(sig)
        if old is signal.SIG_IGN:
            saved[sig] = old
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)
