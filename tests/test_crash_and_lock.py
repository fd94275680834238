"""SPEC §8 guarantees 6 and 7: SIGKILL at any moment leaves a sound store and the next build
resumes; two builds on one workspace never corrupt it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import Sci, signals_reach_children
from sci.store.cas import Store
from sci.workspace import Workspace

N = 8
PIPELINE = {
    "sci.yaml": f"""
        version: 1
        steps:
          part:
            foreach: {{i: {list(range(N))}}}
            cmd: sleep 0.25 && head -c 200000 /dev/urandom > {{outs}}.tmp && echo {{item.i}} >> {{outs}}.tmp && mv {{outs}}.tmp {{outs}}
            outs: ["parts/{{item.i}}.bin"]
            determinism: fast
          join:
            cmd: cat {{deps}} > {{outs}}
            deps: ["parts/*.bin"]
            outs: [all.bin]
        """,
}


def _completed_nodes(root):
    """Nodes whose action result reached the store (what a resumed build must not redo)."""
    if not (root / "cas").exists():
        return set()
    return {json.loads(data)["node"] for _key, data, _file in Store(root / "cas", create=False).iter_actions()}


@pytest.mark.parametrize("kill_after", [0.15, 0.45, 0.8, 1.3])
def test_sigkill_at_any_moment_leaves_a_sound_store_and_the_next_build_resumes(ws, kill_after):
    sci = ws(PIPELINE)
    proc = subprocess.Popen([sys.executable, "-m", "sci.cli", "build", "-j", "2"], cwd=ws.root, env=sci.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.4)  # let orphaned step processes finish writing into their scratch dirs
    fsck = sci("fsck", "--json")
    assert json.loads(fsck.stdout)["ok"] is True
    done = _completed_nodes(ws.root)
    out = sci.build()
    everything = {f"part[i={i}]" for i in range(N)} | {"join"}
    assert set(out["executed"]) == everything - done
    assert set(out["cached"]) == done
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
    assert sci.build()["executed"] == []


def test_second_build_waits_for_the_lock(ws):
    sci = ws(PIPELINE)
    first = subprocess.Popen([sys.executable, "-m", "sci.cli", "build", "--json"], cwd=ws.root, env=sci.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    second = subprocess.run([sys.executable, "-m", "sci.cli", "build", "--json"], cwd=ws.root, env=sci.env,
                            capture_output=True, text=True, timeout=120)
    out1, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    a, b = json.loads(out1), json.loads(second.stdout)
    assert a["counts"]["executed"] == N + 1
    assert b["counts"]["executed"] == 0 and b["counts"]["cached"] == N + 1
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True


def test_no_wait_fails_at_once_when_locked(ws):
    sci = ws(PIPELINE)
    first = subprocess.Popen([sys.executable, "-m", "sci.cli", "build"], cwd=ws.root, env=sci.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while not (ws.root / ".sci" / "lock").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        t0 = time.time()
        proc = sci("build", "--no-wait", check=1)
        assert time.time() - t0 < 10
        assert "locked by another sci process" in proc.stderr
    finally:
        first.wait(timeout=120)
    assert first.returncode == 0


def test_corrupted_store_object_is_named_by_fsck(ws):
    sci = Sci(ws.root)
    ws({"sci.yaml": "version: 1\nsteps:\n  a:\n    cmd: echo hello > {outs}\n    outs: [a.txt]\n"})
    sci.build()
    blob = next(p for p in (ws.root / "cas" / "blobs").glob("*/*")
                if p.read_bytes() == b"hello\n")
    os.chmod(blob, 0o644)
    blob.write_bytes(b"jello\n")
    proc = sci("fsck", check=1)
    assert blob.name in proc.stderr
    sci("fsck", "--repair")
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True


STOPS = pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                                ids=["ctrl-c", "sigterm", "sighup"])


@STOPS
def test_ctrl_c_stops_cleanly_and_the_next_build_resumes(ws, sig):
    """Ctrl-C, SIGTERM (`timeout`, a CI job's end, `docker stop`) or SIGHUP (the terminal or SSH
    session closed): the same clean stop."""
    sci = ws(PIPELINE)
    with signals_reach_children():
        proc = subprocess.Popen([sys.executable, "-m", "sci.cli", "build", "-j", "2"], cwd=ws.root, env=sci.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and not _completed_nodes(ws.root):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not list(Workspace(ws.root).scratch_dir.glob("n-*")), "sandboxes are cleaned up"
    run = sorted((ws.root / "runs").iterdir())[-1]
    manifest = json.loads((run / "manifest.json").read_text())  # the interrupted run is recorded too
    assert any(p["status"] == "failed" for p in manifest["plan"]) or len(manifest["plan"]) < N + 1
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
    done = _completed_nodes(ws.root)
    out = sci.build()
    assert set(out["executed"]) == ({f"part[i={i}]" for i in range(N)} | {"join"}) - done


@STOPS
def test_ctrl_c_during_a_step_run_on_the_scheduler_thread_stops_the_step_too(ws, sig):
    """A node that is all there is to do runs on the scheduler's own thread (a chain's every
    node); its process has a session of its own, so Ctrl-C must be passed on to it. SIGTERM and
    SIGHUP too: before, they killed sci alone and the step ran on, orphaned."""
    marker = f"{os.getpid()}{time.time_ns() % 1000}"  # `sleep 97.<marker>`: this test's process only
    sci = ws({"sci.yaml": f"version: 1\nsteps:\n  slow:\n    cmd: sleep 97.{marker} && echo > {{outs}}\n"
                          "    outs: [slow.txt]\n"})
    with signals_reach_children():
        proc = subprocess.Popen([sys.executable, "-m", "sci.cli", "build"], cwd=ws.root, env=sci.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def step_running() -> bool:
        return subprocess.run(["pgrep", "-f", f"sleep 97.{marker}"], capture_output=True).returncode == 0

    deadline = time.time() + 30
    while time.time() < deadline and not step_running():
        time.sleep(0.05)
    assert step_running()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    deadline = time.time() + 10
    while time.time() < deadline and step_running():
        time.sleep(0.05)
    assert not step_running(), "the step's process outlived the interrupted build"
    assert not (ws.root / "slow.txt").exists()


def test_an_action_result_that_cannot_be_written_fails_the_build_and_nothing_counts_as_done(ws):
    """Action results are written off the scheduler's loop; a failed write must still fail the
    build with one clear line, and no node may pass for built afterwards."""
    sci = ws(PIPELINE)
    sci("fsck")  # creates the store
    packs = ws.root / "cas" / "actions" / "packs"
    packs.write_text("in the way\n")  # a file where the build's pack goes: no result can be written
    proc = sci("build", check=1)
    assert "could not write an action result" in proc.stderr and "Traceback" not in proc.stderr
    packs.unlink()
    out = sci.build()
    assert len(out["executed"]) == N + 1  # nothing was recorded as done, so everything runs
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
