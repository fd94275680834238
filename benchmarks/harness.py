"""Timing whole commands: the tools compared, one timed run with a cap, and pipeline rounds.

Used by `benchmarks/time_commands.py` (sci against make and `python -c pass`) and by
`tools/bench_peers.py` (sci against make, doit, Snakemake and DVC). A run is a fresh process
timed from spawn to exit with `time.perf_counter`, its output sent to a log file, killed with
its whole process group when it passes the cap. Tools take turns within every repetition (the
starting tool rotates), so a slow minute on a shared machine lands on all of them alike.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gen_pipeline as gp

REPO = Path(__file__).resolve().parent.parent
JOBS = 2


@dataclass(frozen=True)
class Tool:
    """How to drive one pipeline tool: its build command at -j 2 and its version command."""

    name: str  # the key used in results and gen_pipeline.WRITERS
    label: str
    build: tuple[str, ...]
    version: tuple[str, ...]
    gen_kwargs: tuple[tuple[str, str], ...] = ()
    kind: str = ""  # which tool's files it reads (gen_pipeline.WRITERS); default: its name

    @property
    def writer(self) -> str:
        return self.kind or self.name

    def generate(self, w: gp.Workload, dest: Path) -> Path:
        return gp.generate(self.writer, w, dest, **dict(self.gen_kwargs))


def make_tools(sci: str | None = None, peer_bin: str | Path | None = None,
               baseline: str | None = None) -> dict[str, Tool]:
    """The tools, sci from the project's venv and the peers from `peer_bin` (their own venv);
    `baseline`: another sci executable (an earlier commit's), measured as "sci-base"."""
    sci = sci or str(REPO / ".venv" / "bin" / "sci")
    tools = {
        "sci": Tool("sci", "sci", (sci, "build", "-j", str(JOBS)), (sci, "--version")),
        "make": Tool("make", "GNU make", ("make", "-j", str(JOBS)), ("make", "--version")),
    }
    if baseline is not None:
        tools["sci-base"] = Tool("sci-base", "sci (baseline)", (baseline, "build", "-j", str(JOBS)),
                                 (baseline, "--version"), kind="sci")
    if peer_bin is not None:
        b = Path(peer_bin)
        tools["doit"] = Tool("doit", "doit", (str(b / "doit"), "-n", str(JOBS)), (str(b / "doit"), "--version"))
        tools["snakemake"] = Tool("snakemake", "Snakemake", (str(b / "snakemake"), "--cores", str(JOBS)),
                                  (str(b / "snakemake"), "--version"))
        # dvc repro runs stages one at a time: it has no -j for stages.
        tools["dvc"] = Tool("dvc", "DVC", (str(b / "dvc"), "repro"), (str(b / "dvc"), "--version"),
                            (("dvc", str(b / "dvc")),))
    return tools


def clean_env() -> dict[str, str]:
    """The environment every timed command gets: ours, minus what would redirect sci's store."""
    env = dict(os.environ)
    for name in ("SCI_CAS", "SCI_REMOTE", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("NO_COLOR", "1")
    return env


@dataclass
class Run:
    """One timed command: its wall time, or why it has none."""

    seconds: float | None
    status: str  # "ok" | "capped" | "failed"
    detail: str = ""


ACTIVATED = False
"""Set by `bench_peers.py --activated`: each tool run from a virtual environment's bin/ gets that
folder first on PATH, as `uv run` or `source .venv/bin/activate` gives it. It matters for sci,
whose steps' `python3` is then its own interpreter (known without asking) instead of whatever
the shell finds first (here a pyenv shim, which sci must ask: SPEC §10)."""


def _env_for(argv) -> dict[str, str]:
    env = clean_env()
    folder = os.path.dirname(str(argv[0]))
    if ACTIVATED and folder and os.path.exists(os.path.join(os.path.dirname(folder), "pyvenv.cfg")):
        env["PATH"] = folder + os.pathsep + env.get("PATH", "")
        env["VIRTUAL_ENV"] = os.path.dirname(folder)
    return env


def time_command(argv, cwd: Path | str, cap: float, log: Path | None = None,
                 env: dict | None = None) -> Run:
    """Run argv in cwd and time it; past `cap` seconds the whole process group is killed.

    The wait is a plain blocking `waitpid` and the cap a timer thread: `Popen.wait(timeout=...)`
    polls with sleeps that grow to 50 ms, which would round every time above ~64 ms up to the
    next 50 ms step.
    """
    out = open(log, "ab") if log else subprocess.DEVNULL
    killed = threading.Event()
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env or _env_for(argv), start_new_session=True)

        def kill() -> None:
            killed.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(cap, kill)
        timer.daemon = True
        timer.start()
        try:
            code = proc.wait()
        finally:
            timer.cancel()
        elapsed = time.perf_counter() - start
        if killed.is_set():
            return Run(None, "capped", f"over the {cap:g} s cap")
    finally:
        if log:
            out.close()
    if code != 0:
        tail = ""
        if log and log.exists():
            tail = log.read_text(errors="replace")[-600:].strip().replace("\n", " | ")
        return Run(None, "failed", f"exit {code}: {tail}")
    return Run(elapsed, "ok")


@dataclass
class Row:
    """All samples of one (benchmark, size, tool) cell."""

    bench: str  # e.g. "chain/cold"
    n: int
    tool: str
    samples: list[float] = field(default_factory=list)
    status: str = "ok"
    detail: str = ""
    ran: list[int] = field(default_factory=list)  # nodes that ran, per sample (incremental)
    expected: int | None = None
    exact: bool | None = None
    extra: dict = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples and self.status == "ok" else None

    def add(self, run: Run) -> None:
        if run.status == "ok":
            self.samples.append(run.seconds)
        else:
            self.status, self.detail = run.status, run.detail

    def to_json(self) -> dict:
        doc = {"bench": self.bench, "n": self.n, "tool": self.tool, "status": self.status,
               "median_s": self.median, "samples_s": self.samples}
        if self.detail:
            doc["detail"] = self.detail
        if self.expected is not None:
            doc.update(expected_reruns=self.expected, reruns=self.ran, exact=self.exact)
        doc.update(self.extra)
        return doc


class Results:
    """Rows by (bench, n, tool), in the order they were first measured."""

    def __init__(self):
        self.rows: dict[tuple[str, int, str], Row] = {}

    def row(self, bench: str, n: int, tool: str) -> Row:
        key = (bench, n, tool)
        if key not in self.rows:
            self.rows[key] = Row(bench, n, tool)
        return self.rows[key]

    def get(self, bench: str, n: int, tool: str) -> Row | None:
        return self.rows.get((bench, n, tool))

    def to_json(self) -> list[dict]:
        return [row.to_json() for row in self.rows.values()]


def rotated(items: list, k: int) -> list:
    k %= max(len(items), 1)
    return items[k:] + items[:k]


Progress = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_startup(results: Results, tools: dict[str, Tool], reps: int, cap: float,
                  say: Progress = _say) -> None:
    """`--version` of every tool, and `python -c pass` as the floor any Python tool pays."""
    commands = {"python -c pass": (sys.executable, "-c", "pass")}
    commands.update({name: tool.version for name, tool in tools.items()})
    cwd = tempfile.mkdtemp(prefix="sci-bench-startup-")
    try:
        for argv in commands.values():  # warm-up: byte-compile, fill the page cache
            time_command(argv, cwd, cap)
        for rep in range(reps):
            for name in rotated(list(commands), rep):
                row = results.row("startup", 0, name)
                if row.status == "ok":
                    row.add(time_command(commands[name], cwd, cap))
        say("startup: " + ", ".join(f"{name} {results.get('startup', 0, name).median or float('nan'):.3f} s"
                                    for name in commands))
    finally:
        shutil.rmtree(cwd, ignore_errors=True)


def bench_pipelines(results: Results, tools: dict[str, Tool], shapes: list[str], sizes: list[int],
                    reps: int, cap: float, workdir: Path, say: Progress = _say,
                    large_reps: int | None = None) -> None:
    """Cold build, no-op re-run and one-parameter edit, per shape and size, tools alternating.

    A tool whose cold build fails or passes the cap is not tried at larger sizes of that shape.
    `large_reps`, when given, is the number of repetitions at N >= 10,000 (they take longest).
    """
    given_up: dict[tuple[str, str], str] = {}  # (shape, tool) -> why: "capped" | "failed"
    for shape in shapes:
        for n in sizes:
            for name in tools:
                why = given_up.get((shape, name))
                for phase in ("cold", "noop", "edit") if why else ():
                    row = results.row(f"{shape}/{phase}", n, name)
                    row.status, row.detail = why, "not tried: a smaller N did not finish"
            for rep in range(large_reps if large_reps and n >= 10_000 else reps):
                for name in rotated(list(tools), rep):
                    if (shape, name) in given_up:
                        continue
                    if not _pipeline_round(results, tools[name], shape, n, rep, cap, workdir, say):
                        given_up[(shape, name)] = results.row(f"{shape}/cold", n, name).status
    for (shape, name), why in sorted(given_up.items()):
        say(f"gave up on {name} for larger {shape}s ({why})")


def _pipeline_round(results: Results, tool: Tool, shape: str, n: int, rep: int, cap: float,
                    workdir: Path, say: Progress) -> bool:
    """One repetition for one tool: fresh workspace, cold, no-op, edit. False to stop trying."""
    ws = workdir / f"{tool.name}-{shape}-{n}"
    w = gp.Workload(shape, n, params=True, runlog=str(workdir / f"{tool.name}-{shape}-{n}.runlog"))
    tool.generate(w, ws)
    gp.clear_runlog(w)
    log = workdir / f"{tool.name}-{shape}-{n}.log"
    log.write_text("")

    cold = time_command(tool.build, ws, cap, log)
    results.row(f"{shape}/cold", n, tool.name).add(cold)
    if cold.status != "ok":
        say(f"{shape} n={n} {tool.name}: cold {cold.status} ({cold.detail})")
        for phase in ("noop", "edit"):
            row = results.row(f"{shape}/{phase}", n, tool.name)
            row.status, row.detail = cold.status, "cold build did not finish"
        return False
    if sorted(set(gp.ran(w))) != [w.name(i) for i in range(n)]:
        say(f"{shape} n={n} {tool.name}: cold build ran {len(gp.ran(w))} of {n} nodes")

    gp.clear_runlog(w)
    noop = time_command(tool.build, ws, cap, log)
    results.row(f"{shape}/noop", n, tool.name).add(noop)
    noop_ran = len(gp.ran(w))

    index = w.edit_index()
    time.sleep(0.02)  # let mtime-based tools see the edit as newer than the outputs
    gp.edit_param(tool.writer, w, ws, index, rep + 1)
    gp.clear_runlog(w)
    edit = time_command(tool.build, ws, cap, log)
    row = results.row(f"{shape}/edit", n, tool.name)
    row.add(edit)
    ran, expected = gp.ran(w), w.affected(index)
    row.ran.append(len(ran))
    row.expected = len(expected)
    row.exact = (row.exact is not False) and ran == expected
    say(f"{shape} n={n} rep {rep + 1} {tool.name}: cold {_fmt(cold)}, no-op {_fmt(noop)}"
        f"{f' (ran {noop_ran}!)' if noop_ran else ''}, edit {_fmt(edit)} ran {len(ran)}/{len(expected)}")
    return True


def _fmt(run: Run) -> str:
    return f"{run.seconds:.3f} s" if run.status == "ok" else run.status


# -- what the numbers were measured on -------------------------------------------------------

def _first_line(argv) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=120, env=clean_env())
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else f"exit {out.returncode}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"


def machine() -> dict:
    """nproc, RAM, CPU model, OS and the load when asked (others may share the machine)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "ram_gib": mem_gib, "cpu": cpu,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "loadavg": list(os.getloadavg())}


def versions(tools: dict[str, Tool]) -> dict[str, str]:
    found = {name: _first_line(tool.version) for name, tool in tools.items()}
    try:
        import blake3

        found["blake3 (Python)"] = blake3.__version__
    except ImportError:
        pass
    return found
