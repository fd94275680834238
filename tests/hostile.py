"""A harness for running the real `sci` CLI on hundreds of hostile workspaces cheaply and under
limits: one worker process imports sci once, then forks a child per case, which runs
`sci.cli.main.main()` exactly as the `sci` command does, in its own process group, under an
address-space limit (memory) and a CPU-time limit (a hang), with a wall-clock kill behind them.

    with Harness() as h:
        r = h.run({"sci.yaml": b"...", "p.yaml": FIFO}, ["status"])
        r.rc, r.signal, r.stderr, r.cpu_s, r.maxrss_mb, r.outside   # outside: what it wrote
                                                                     # beside the workspace

A case's workspace is `<case>/ws`; `<case>/outside/` is a directory a hostile path may aim at
(the text `@OUTSIDE@` in any file is replaced by its absolute path). Whatever appears in it, or
next to `ws/`, is reported in `outside`: sci must never write there. `@SHARED@` names
`<case>/shared/`, where sci may write: a store outside the workspace is allowed (a shared one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

FIFO = {"fifo": True}
DIRECTORY = {"dir": True}


def link(target: str) -> dict:
    return {"link": target}


MEMORY_MB = 1024  # address space a case may add to the worker's
CPU_S = 20  # CPU seconds a case may spend: far past "a second or two", short of a hang
WALL_S = 90  # then it is killed, whatever it is doing (a blocked read spends no CPU)


@dataclass
class Result:
    rc: int | None  # exit status, or None when a signal ended it
    signal: int | None
    stdout: str
    stderr: str
    cpu_s: float
    maxrss_mb: float
    outside: list[str]
    timed_out: bool

    def describe(self) -> str:
        how = f"exit {self.rc}" if self.rc is not None else f"signal {self.signal}"
        return (f"{how}{' (killed: wall-clock limit)' if self.timed_out else ''}, cpu {self.cpu_s:.2f}s, "
                f"rss {self.maxrss_mb:.0f} MB, outside {self.outside}\nstderr:\n{self.stderr[-3000:]}")


WORKER = r'''
import json, os, resource, signal, sys, time, traceback
sys.setrecursionlimit(sys.getrecursionlimit())
import sci.cli.main, sci.cli.commands, sci.cli.run, sci.api, sci.plan.pipeline, sci.spec.model  # noqa
import sci.spec.load, sci.spec.plain, sci.spec.params, sci.build.session, sci.spec.limits  # noqa
import ruamel.yaml, pydantic  # noqa

def vm_bytes():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0

def child(req):
    os.setpgid(0, 0)
    os.chdir(req["ws"])
    limit = vm_bytes() + req["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (req["cpu_s"], req["cpu_s"] + 1))
    for fd, name in ((1, "stdout"), (2, "stderr")):
        f = os.open(req[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    sys.argv = ["sci", *req["argv"]]
    for k, v in req["env"].items():  # surrogates stand for bytes that are not UTF-8, as in os.environ
        os.environ[k] = v
    code = 0
    try:
        sci.cli.main.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 99
    try:
        sys.stdout.flush(); sys.stderr.flush()
    finally:
        os._exit(code)

for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        child(req)
    deadline = time.monotonic() + req["wall_s"]
    timed_out = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            done, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.005)
    try:  # the case's own process group: a step left running is not left behind
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    out = {"rc": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
           "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
           "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_mb": usage.ru_maxrss / 1024,
           "timed_out": timed_out}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
'''


class Harness:
    """One worker process; `run` lays out a case and runs one command on it."""

    def __init__(self, env: dict[str, str] | None = None):
        self.base = Path(tempfile.mkdtemp(prefix="sci-hostile-"))
        self.count = 0
        e = dict(os.environ)
        for k in ("SCI_CAS", "SCI_REMOTE", "SCI_DEBUG"):
            e.pop(k, None)
        e.update({"NO_COLOR": "1", "MALLOC_ARENA_MAX": "2"})
        e.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=e, text=True, bufsize=1)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.base, ignore_errors=True)

    def run(self, files: dict[str, bytes | str | dict], argv: list[str], *, env: dict[str, str] | None = None,
            memory_mb: int = MEMORY_MB, cpu_s: int = CPU_S, wall_s: int = WALL_S, keep: bool = False) -> Result:
        self.count += 1
        case = self.base / f"case{self.count}"
        ws, outside = case / "ws", case / "outside"
        ws.mkdir(parents=True)
        outside.mkdir()
        (case / "shared").mkdir()
        lay_out(ws, files, case)
        req = {"ws": str(ws), "argv": argv, "stdout": str(case / "stdout"), "stderr": str(case / "stderr"),
               "memory_mb": memory_mb, "cpu_s": cpu_s, "wall_s": wall_s, "env": env or {}}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the hostile-input worker died (exit {self.proc.wait()})")
        got = json.loads(line)
        escaped = sorted(str(p.relative_to(case)) for p in outside.rglob("*"))
        escaped += sorted(p.name for p in case.iterdir() if p.name not in ("ws", "outside", "shared", "stdout", "stderr"))
        result = Result(got["rc"], got["signal"], _text(case / "stdout"), _text(case / "stderr"), got["cpu_s"],
                        got["maxrss_mb"], escaped, got["timed_out"])
        if not keep:
            shutil.rmtree(case, ignore_errors=True)
        return result


def lay_out(ws: Path, files: dict[str, bytes | str | dict], case: Path) -> None:
    marks = {b"@OUTSIDE@": str(case / "outside").encode(), b"@SHARED@": str(case / "shared").encode()}

    def place(data: bytes) -> bytes:
        for mark, path in marks.items():
            data = data.replace(mark, path)
        return data

    for rel, content in files.items():
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            if content.get("fifo"):
                os.mkfifo(path)
            elif content.get("dir"):
                path.mkdir(exist_ok=True)
            else:
                os.symlink(place(content["link"].encode()).decode(), path)
            continue
        data = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
        path.write_bytes(place(data))


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""
