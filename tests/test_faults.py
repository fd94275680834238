"""Faults of the machine (issue 15, SPEC §7): a full disk, a read-only `.sci/`, `runs/` or store.

Each is injected for real: the workspace on a small tmpfs filled to its last byte, a folder
bind-mounted read-only over itself. Every command then ends with exit 1 (never 3, never a
traceback) and one `sci: error:` line naming the path and the cause; the store stays
consistent, and once the fault is gone the next build resumes and `sci fsck` is content.
Mounting needs root: elsewhere these tests skip, saying so.

Also here: `logs.jsonl` survives a SIGKILL (every line is written as it happens), and a
failed build's summary names the node that failed first, not a sibling cancelled after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Sci, no_traceback, write
from sci.store.cas import Store


def _can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    probe = Path(f"/tmp/sci-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], capture_output=True)
        return ok
    except OSError:
        return False
    finally:
        probe.rmdir()


needs_mount = pytest.mark.skipif(not _can_mount(), reason="fault injection mounts a small tmpfs and read-only "
                                                           "bind mounts: needs root (or CAP_SYS_ADMIN)")


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def read_only(path: Path):
    """`path` (a folder) read-only for everyone, root included: EROFS on any write below it."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(root: Path) -> None:
    """Fill the filesystem holding root to its last byte."""
    with open(root / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    with contextlib.suppress(OSError):
        (root / "filler").open("ab").write(b"\0" * 4096)


PIPELINE = {
    "params.yaml": "size: 300000\n",
    "sci.yaml": """
        version: 1
        params: params.yaml
        steps:
          gen:
            foreach: {i: [1, 2, 3, 4, 5, 6]}
            cmd: python -c "import sys; open(sys.argv[1], 'wb').write(bytes([int(sys.argv[2])]) * int(sys.argv[3]))" {outs} {item.i} {params.size}
            params: [size]
            outs: ["data/{item.i}.bin"]
          sum:
            cmd: cat {deps} | wc -c > {outs}
            deps: ["data/*.bin"]
            outs: [sum.txt]
        """,
}


def refused(proc, cause: str, where: str) -> None:
    """Exit 1 and one error line naming the path and the cause; never an internal error."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert no_traceback(proc.stderr) and "internal error" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sci: error:")]
    assert len(errors) == 1, proc.stderr
    assert cause in errors[0] and where in errors[0], errors[0]


def sound_and_resumes(sci: Sci, size: int = 300000) -> None:
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
    sci.build()
    assert (sci.root / "sum.txt").read_text().strip() == str(6 * size)
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
    assert sci.build()["executed"] == []


@needs_mount
def test_a_full_disk_before_anything_was_built(tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        root = disk / "ws"
        root.mkdir()
        write(root, PIPELINE)
        fill(disk)
        sci = Sci(root)
        for args in (["build"], ["status"], ["fsck"], ["gc"]):
            refused(sci(*args, check=False), "No space left on device", str(root))
        (disk / "filler").unlink()
        sci("fsck")  # what the failed commands left is sound


@needs_mount
def test_a_disk_that_fills_during_a_build(tmp_path):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        root = disk / "ws"
        root.mkdir()
        write(root, PIPELINE)
        sci = Sci(root)
        proc = sci("build", "-j", "1", check=False)
        refused(proc, "No space left on device", str(root))
        assert "FAILED" in proc.stderr
        assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
        done = {json.loads(data)["node"] for _k, data, _f in Store(root / "cas", create=False).iter_actions()}
        subprocess.run(["mount", "-o", "remount,size=40m", str(disk)], check=True)
        out = sci.build()
        assert set(out["cached"]) == done  # nothing stored before the disk filled runs again
        sound_and_resumes(sci)


@needs_mount
def test_a_full_disk_after_a_build_still_lets_status_and_fsck_look(tmp_path):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        root = disk / "ws"
        root.mkdir()
        write(root, PIPELINE)
        sci = Sci(root)
        sci.build()
        (root / "params.yaml").write_text("size: 300001\n")
        fill(disk)
        assert "would run" in sci("status").stdout
        sci("fsck")
        refused(sci("build", check=False), "No space left on device", str(root))
        (disk / "filler").unlink()
        sound_and_resumes(sci, 300001)


@needs_mount
@pytest.mark.parametrize("fresh", [True, False])
def test_a_read_only_state_folder(ws, fresh):
    sci = ws(PIPELINE)
    if not fresh:
        sci.build()
        (ws.root / "sum.txt").unlink()
    with read_only(ws.root / ".sci"):
        refused(sci("build", check=False), "Read-only file system", str(ws.root / ".sci"))
        refused(sci("gc", check=False), "Read-only file system", str(ws.root / ".sci"))
        assert sci("status").returncode == 0  # looking needs no writing
        sci("fsck")
    sound_and_resumes(sci)


@needs_mount
def test_a_read_only_runs_folder(ws):
    sci = ws(PIPELINE)
    with read_only(ws.root / "runs"):
        refused(sci("build", check=False), "Read-only file system", str(ws.root / "runs"))
    sound_and_resumes(sci)


@needs_mount
def test_a_read_only_store(ws):
    sci = ws(PIPELINE)
    sci.build()
    (ws.root / "params.yaml").write_text("size: 300001\n")
    with read_only(ws.root / "cas"):
        refused(sci("build", "-j", "2", check=False), "Read-only file system", str(ws.root / "cas"))
        refused(sci("gc", "--keep-runs", "0", check=False), "Read-only file system", str(ws.root / "cas"))
        sci("fsck")
        assert sci("status").returncode == 0
    sound_and_resumes(sci, 300001)


def test_the_summary_names_the_node_that_failed_first_not_a_sibling_cancelled_after(ws):
    """`b_fast` fails; `a_slow`, running beside it, is cancelled by sci (SIGTERM). The summary
    must name `b_fast`, though `a_slow` comes first in plan order, and `a_slow`'s own failure
    must say it was cancelled. (On a read-only store each node now fails as it starts, with
    the path: test_a_read_only_store.)"""
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              a_slow:
                cmd: sleep 30 && echo s > {outs}
                outs: [slow.txt]
              b_fast:
                cmd: sleep 0.5 && echo 'disk gone' >&2 && exit 7
                outs: [fast.txt]
            """,
    })
    proc = sci("build", "-j", "2", check=False)
    assert proc.returncode == 1 and no_traceback(proc.stderr), proc.stderr
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("sci: error:")]
    assert "2 node(s) failed; first: b_fast: exited with status 7" in error, error
    (log,) = (ws.root / "runs").glob("*/logs.jsonl")
    failed = {e["node"]: e["data"]["error"] for e in map(json.loads, log.read_text().splitlines())
              if e["event"] == "node_failed"}
    assert failed["b_fast"] == "exited with status 7"
    assert failed["a_slow"] == "cancelled after b_fast failed (killed by signal 15)"
    manifest = json.loads(next((ws.root / "runs").glob("*/manifest.json")).read_text())
    assert {e["node"]: e["status"] for e in manifest["plan"]} == {"a_slow": "failed", "b_fast": "failed"}


def test_a_sibling_that_finishes_after_it_was_cancelled_is_no_result(ws, tmp_path):
    """`b_fast` fails; sci cancels `a_stubborn`, whose shell traps SIGTERM, writes its output
    and exits 0. A step told to stop is no result: nothing reaches the workspace or the store,
    and the next `sci status` still says it would run."""
    ready = tmp_path / "stubborn-is-waiting"
    sci = ws({
        "sci.yaml": f"""
            version: 1
            steps:
              a_stubborn:
                cmd: "trap 'echo late > {{outs}}; exit 0' TERM; touch {ready}; sleep 60 & wait"
                outs: [late.txt]
              b_fast:
                cmd: "while [ ! -e {ready} ]; do sleep 0.05; done; exit 7"
                outs: [fast.txt]
            """,
    })
    proc = sci("build", "-j", "2", "--json", check=False)
    assert proc.returncode == 1 and no_traceback(proc.stderr), proc.stderr
    nodes = {n["node"]: n for n in json.loads(proc.stdout)["nodes"]}
    assert nodes["a_stubborn"]["status"] == "failed", nodes
    assert nodes["a_stubborn"]["error"].startswith("cancelled after b_fast failed (killed by signal 15"), nodes
    assert "not kept" in nodes["a_stubborn"]["error"]
    assert not (ws.root / "late.txt").exists()
    assert not list(Store(ws.root / "cas", create=False).iter_actions())
    status = sci("status", check=False)
    assert "a_stubborn" in status.stdout and "would run" in status.stdout, status.stdout


# -- logs.jsonl -----------------------------------------------------------------------------------
def test_the_event_log_survives_a_sigkill(ws):
    """Every event is in logs.jsonl as soon as it happens: after a SIGKILL, each node whose
    result reached the store has its `node_executed` line."""
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              tick:
                foreach: {i: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}
                cmd: sleep 0.15 && echo {item.i} > {outs}
                outs: ["t/{item.i}.txt"]
            """,
    })
    proc = subprocess.Popen([sys.executable, "-m", "sci.cli", "build", "-j", "2"], cwd=ws.root, env=sci.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(_stored(ws.root)) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = _stored(ws.root)
    assert len(stored) >= 5
    (log,) = (ws.root / "runs").glob("*/logs.jsonl")
    lines = log.read_text().splitlines()
    if lines and not lines[-1].endswith("}"):  # a torn last line is allowed, nothing before it
        lines.pop()
    events = [json.loads(line) for line in lines]
    logged = {e["node"] for e in events if e["event"] == "node_executed"}
    assert stored <= logged, (stored - logged)
    assert events[0]["event"] == "build_started"


def _stored(root: Path) -> set[str]:
    if not (root / "cas").exists():
        return set()
    with contextlib.suppress(Exception):
        return {json.loads(data)["node"] for _k, data, _f in Store(root / "cas", create=False).iter_actions()}
    return set()
