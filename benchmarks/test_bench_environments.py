"""Declared environments on the no-op path: what a prepared environment adds to a build that
runs nothing (the budget: ≤ 5 ms), and what preparing one costs the first time.

Two workspaces of one `cmd` node each, built once: one runs in the workspace's own environment,
the other in a declared uv project environment (one small pure-Python package, tabulate,
locked). Timed: `noop.fast_answer`, the whole decision of a no-op `sci build` (the record, the
stat signatures, the fingerprints — with the declared environment's identity read from its
cached resolution), in a fresh process's state (memos cleared) and with the on-disk caches warm.
The first preparation is timed once (a real `uv venv` + `uv sync --frozen` from uv's warm cache)
and reported, not asserted on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sci import api
from sci.build import fingerprint, noop
from sci.plan.pipeline import plan_key, read_bytes
from sci.workspace import Workspace

UV = shutil.which("uv")
pytestmark = pytest.mark.skipif(UV is None, reason="uv is not installed (it makes the environments)")

PLAIN = "version: 1\nsteps:\n  a:\n    cmd: echo a > {outs}\n    outs: [a.txt]\n"
DECLARED = ("version: 1\nenvironments:\n  analysis: {python: envs/analysis}\n"
            "steps:\n  a:\n    environment: analysis\n    cmd: echo a > {outs}\n    outs: [a.txt]\n")


def _workspace(root: Path, text: str) -> Workspace:
    root.mkdir(parents=True)
    (root / "sci.yaml").write_text(text)
    if "environments" in text:
        project = root / "envs" / "analysis"
        project.mkdir(parents=True)
        (project / "pyproject.toml").write_text(
            '[project]\nname = "analysis"\nversion = "0"\nrequires-python = ">=3.11"\n'
            'dependencies = ["tabulate==0.9.0"]\n\n[tool.uv]\npackage = false\n')
        subprocess.run([UV, "lock", "-q", "--python", sys.executable], cwd=project, check=True)
    return Workspace(root)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(plain workspace, declared-environment workspace, seconds the first preparation took)."""
    base = tmp_path_factory.mktemp("envs")
    plain, declared = _workspace(base / "plain", PLAIN), _workspace(base / "declared", DECLARED)
    api.build(plain, argv=["build"])
    t0 = time.perf_counter()
    api.prepare_environments(declared)
    first = time.perf_counter() - t0
    api.build(declared, argv=["build"])
    api.build(declared, argv=["build"])  # the no-op record, and the stat cache settled
    api.build(plain, argv=["build"])
    return plain, declared, first


def _answer(ws: Workspace) -> dict:
    fingerprint.clear_memos()  # a new sci process: only the on-disk caches remain
    key = plan_key(ws, [], None, read_bytes(ws.pipeline_file))
    doc = noop.fast_answer(ws, [], plan_key=key, record=noop.read_record(ws.state_dir))
    assert doc is not None, "the no-op shortcut must answer"
    return doc


@pytest.mark.parametrize("which", ["plain", "declared"])
def test_noop_decision_with_and_without_a_declared_environment(benchmark, built, which):
    plain, declared, first = built
    ws = plain if which == "plain" else declared
    cwd = os.getcwd()
    os.chdir(ws.root)
    try:
        doc = benchmark(_answer, ws)
    finally:
        os.chdir(cwd)
    assert set(doc["env"]) == ({"cpu"} if which == "plain" else {"cpu", "env:analysis"})
    benchmark.extra_info["first_preparation_s"] = round(first, 3)
