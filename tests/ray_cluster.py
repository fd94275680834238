"""A real Ray cluster on loopback, inside a private network and PID namespace, for tests.

Ray binds some services to the host's own address (SPEC §9), so the cluster lives in a private
network namespace whose only interface is `lo`; a private PID namespace (with its own /proc)
keeps `ray stop --force` from seeing, let alone killing, any Ray process outside it, and when
the namespace's first process exits the kernel kills whatever is left in it: a crashed test
run cannot leak a cluster. Every command of a test (the cluster's `ray start`, `sci build`, a
driver script) runs in that namespace through `nsenter`.

    pytest ──stdin pipe──▶ unshare --net --pid --fork --mount-proc ─▶ holder (PID 1: reaps, waits for EOF)
                                                                        ├─ ray start --head (GCS, raylet, workers)
    nsenter --target holder ───────────────────────────────────────▶  ├─ python -m sci.cli build --executor ray
                                                                        └─ ray stop --force (at the end)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

GCS_PORT = 6379  # the namespace is private, so Ray's default port is always free in it
CLUSTER_CPUS = 2
# Declared (not real) GPUs: Ray assigns ids from these, which is all the GPU test needs.
CLUSTER_GPUS = 2
ADDRESS = f"127.0.0.1:{GCS_PORT}"

# PID 1 of the namespace: reap orphans (a PID namespace's init must), exit when pytest closes
# our stdin or dies, which ends every process left in the namespace.
HOLDER = """
import os, subprocess, sys, threading
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
print("ready", flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
while True:
    try:
        os.wait()
    except ChildProcessError:
        threading.Event().wait(0.5)
"""


class NamespaceUnavailable(Exception):
    pass


class RayCluster:
    """One Ray head node in a private namespace; `run` executes commands beside it."""

    def __init__(self) -> None:
        self.address = ADDRESS
        self.temp = Path(tempfile.mkdtemp(prefix="sci-ray-"))  # short: Ray's socket paths must fit 107 bytes
        self._unshare: subprocess.Popen | None = None
        self.holder_pid: int | None = None
        self._user: list[str] = []

    # -- the namespace -------------------------------------------------------------------
    def _enter_namespace(self) -> None:
        if not shutil.which("unshare") or not shutil.which("nsenter") or not shutil.which("ip"):
            raise NamespaceUnavailable("needs unshare, nsenter and ip (util-linux, iproute2)")
        # As root the namespaces are made directly; otherwise inside a user namespace of our own.
        self._user = [] if os.geteuid() == 0 else ["--user"]
        mapping = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        self._unshare = subprocess.Popen(
            ["unshare", *mapping, "--net", "--pid", "--fork", "--mount-proc", "--", sys.executable, "-c", HOLDER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self._unshare.stdout.readline()
        if line.strip() != "ready":
            err = self._unshare.stderr.read() if self._unshare.poll() is not None else ""
            self._unshare.kill()
            raise NamespaceUnavailable(f"unshare refused: {err.strip() or 'no answer'}")
        self.holder_pid = self._holder_pid(self._unshare.pid)

    @staticmethod
    def _holder_pid(unshare_pid: int) -> int:
        """The host PID of the namespace's PID 1: the forked child of `unshare`."""
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children")
        if children.exists():
            pids = children.read_text().split()
            if pids:
                return int(pids[0])
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == unshare_pid:
                return int(stat.parent.name)
        raise NamespaceUnavailable("cannot find the namespace's first process")

    def argv(self, argv: list[str], cwd: Path | str | None = None) -> list[str]:
        """`argv` wrapped to run inside the namespace, in `cwd` (nsenter starts in /)."""
        inner = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', str(cwd or self.temp), *argv]
        return ["nsenter", f"--target={self.holder_pid}", *self._user, "--net", "--pid", "--mount", "--", *inner]

    def run(self, argv: list[str], *, cwd: Path | str | None = None, env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(argv, cwd), env=env, capture_output=True, text=True, timeout=timeout)

    # -- the cluster ---------------------------------------------------------------------
    def start(self) -> None:
        self._enter_namespace()
        ray = str(Path(sys.executable).parent / "ray")
        proc = self.run([ray, "start", "--head", f"--port={GCS_PORT}", "--node-ip-address=127.0.0.1",
                         f"--num-cpus={CLUSTER_CPUS}", f"--num-gpus={CLUSTER_GPUS}", "--disable-usage-stats",
                         "--include-dashboard=false", f"--temp-dir={self.temp}",
                         "--object-store-memory=100000000"], timeout=180)
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{proc.stdout}\n{proc.stderr}")

    def processes(self) -> str:
        """Every command line running in the namespace, one a line."""
        return self.run(["ps", "-eo", "args"]).stdout

    def stop(self) -> None:
        """`ray stop --force` (it sees only this namespace), then end the namespace itself."""
        if self._unshare is None:
            return
        try:
            if self.holder_pid is not None and self._unshare.poll() is None:
                self.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], timeout=60)
        except subprocess.TimeoutExpired:
            pass
        finally:
            try:
                self._unshare.stdin.close()  # the holder exits; the kernel ends what is left
                self._unshare.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._unshare.kill()
                self._unshare.wait()
            self._unshare = None
            shutil.rmtree(self.temp, ignore_errors=True)


def ray_cluster_fixture():
    """A module-scoped fixture body: skip (with the reason) where Ray or namespaces are missing."""
    pytest.importorskip("ray", reason="ray is not installed (uv sync --extra ray)")
    cluster = RayCluster()
    try:
        cluster.start()
    except NamespaceUnavailable as exc:
        pytest.skip(f"cannot make a private network namespace: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


def wait_until(predicate, timeout_s: float = 20.0, step_s: float = 0.2) -> bool:
    """Poll `predicate` until it holds; a hang guard, not a timing assertion."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()
