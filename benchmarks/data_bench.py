"""Hashing and status benchmarks over data, not pipelines: how fast each tool tracks big inputs.

Three data sets, made once per run and moved (renamed) from workspace to workspace so every
tool sees the same bytes, warm in the page cache:

    one    1 GiB in one file                  (quick: 64 MiB)
    many   1 GiB in 10,000 files, 100 folders (quick: 64 MiB in 1,000)
    small  10,000 files of 100 bytes          (quick: 1,000)

For `one` and `many`, "cold" is a tool's first look at the data in a fresh workspace (sci: a
`sci build` of one `sandbox: false` node that declares the data as its dep; DVC: `dvc add`,
which also copies the data into its cache; doit: the first run of a task with the files as
`file_dep`, which MD5s them) and "warm" its status check right after (`sci status`, `dvc status`,
`doit list --status`). make and Snakemake never hash content, so they have no hashing rows. For
`small`, every tool's status check of the unchanged files is timed, make (`make -q`) and
Snakemake (`snakemake -n`) included. Raw BLAKE3 on the same data, in this process, is the
baseline: `update_mmap` with threads AUTO for one file, whole-file reads on one thread for many.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness import Results, Tool, rotated, time_command


@dataclass(frozen=True)
class DataSet:
    name: str  # "one" | "many" | "small"
    files: int
    total_bytes: int

    @property
    def rel(self) -> str:
        return f"data/{self.name}" + ("/big.bin" if self.name == "one" else "")


def data_sets(quick: bool) -> dict[str, DataSet]:
    if quick:
        return {"one": DataSet("one", 1, 64 << 20), "many": DataSet("many", 1000, 64 << 20),
                "small": DataSet("small", 1000, 100_000)}
    return {"one": DataSet("one", 1, 1 << 30), "many": DataSet("many", 10_000, 1 << 30),
            "small": DataSet("small", 10_000, 1_000_000)}


def make_data(ds: DataSet, home: Path) -> Path:
    """Write the data set under home/data/<name> (random bytes, seeded); returns its folder."""
    rng = random.Random(ds.name)
    folder = home / "data" / ds.name
    folder.mkdir(parents=True)
    if ds.name == "one":
        with open(folder / "big.bin", "wb") as fh:
            left = ds.total_bytes
            while left:
                n = min(left, 16 << 20)
                fh.write(rng.randbytes(n))
                left -= n
        return folder
    each = ds.total_bytes // ds.files
    for i in range(ds.files):
        sub = folder / f"d{i // 100:03d}"
        if i % 100 == 0:
            sub.mkdir()
        (sub / f"f{i:05d}.bin").write_bytes(rng.randbytes(each))
    return folder


def file_list(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


def raw_blake3(ds: DataSet, folder: Path) -> float:
    """Seconds raw BLAKE3 takes over the data set, in this process."""
    from blake3 import blake3

    if ds.name == "one":
        start = time.perf_counter()
        blake3(max_threads=blake3.AUTO).update_mmap(folder / "big.bin").digest()
        return time.perf_counter() - start
    paths = file_list(folder)
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as fh:
            blake3(fh.read()).digest()
    return time.perf_counter() - start


# -- per-tool workspaces tracking the data ---------------------------------------------------

def _write_tracking(tool: str, ds: DataSet, ws: Path, dvc: str | None) -> None:
    (ws / "out").mkdir(parents=True, exist_ok=True)
    rel = ds.rel
    if tool == "sci":
        (ws / "sci.yaml").write_text(
            "version: 1\nsteps:\n  use:\n    cmd: \"echo ok > {outs}\"\n"
            f"    deps: [{rel}]\n    outs: [out/ok.txt]\n    sandbox: false\n")
    elif tool == "dvc":
        subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=ws, check=True)
        subprocess.run([dvc, "config", "core.analytics", "false"], cwd=ws, check=True)
    elif tool == "doit":
        deps = f'sorted(str(p) for p in Path("{rel}").rglob("*") if p.is_file())' \
            if ds.name != "one" else f'["{rel}"]'
        (ws / "dodo.py").write_text(
            "from pathlib import Path\n\nDOIT_CONFIG = {'verbosity': 0}\n\n\n"
            "def task_use():\n"
            f"    return {{'file_dep': {deps}, 'targets': ['out/ok.txt'],\n"
            "            'actions': ['echo ok > out/ok.txt']}\n")
    elif tool == "make":
        (ws / "Makefile").write_text(
            "MAKEFLAGS += --no-builtin-rules\n.SUFFIXES:\n"
            f"out/ok.txt: $(wildcard data/{ds.name}/*/*.bin)\n\techo ok > $@\n")
    elif tool == "snakemake":
        (ws / "Snakefile").write_text(
            "from pathlib import Path\n\n"
            f'FILES = sorted(str(p) for p in Path("data/{ds.name}").rglob("*.bin"))\n\n'
            'rule use:\n    input: FILES\n    output: "out/ok.txt"\n    shell: "echo ok > {output}"\n')


def commands(tool: Tool, ds: DataSet) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """(first look, status check) for `tool` on `ds`; first look is None if it never hashes."""
    exe = tool.build[0]
    if tool.writer == "sci":
        return tool.build, (exe, "status")
    if tool.writer == "dvc":
        return (exe, "add", "-q", ds.rel), (exe, "status", "-q")
    if tool.writer == "doit":
        return (exe,), (exe, "list", "--status")
    if tool.writer == "make":
        return tool.build, ("make", "-q")
    if tool.writer == "snakemake":
        return tool.build, (exe, "-n", "--cores", "1")
    raise ValueError(tool.name)


HASHERS = ("sci", "dvc", "doit")


def bench_data(results: Results, tools: dict[str, Tool], quick: bool, reps: int, cap: float,
               workdir: Path, say=print) -> None:
    """The hashing rows (one, many: cold and warm) and the status row (small), tools alternating."""
    for ds in data_sets(quick).values():
        home = workdir / f"data-{ds.name}"
        holder = make_data(ds, home)
        names = [t for t in tools if ds.name == "small" or tools[t].writer in HASHERS]
        raw = results.row(f"hash/{ds.name}/cold", ds.files, "raw BLAKE3")
        for rep in range(reps):
            if ds.name != "small":
                raw.samples.append(raw_blake3(ds, holder))
                raw.extra["bytes"] = ds.total_bytes
            for name in rotated(names, rep):
                holder = _data_round(results, tools[name], ds, holder, workdir / f"{name}-{ds.name}-{rep}",
                                     cap, say)
        if ds.name == "small":
            del results.rows[(raw.bench, raw.n, raw.tool)]
        else:
            warm_raw = results.row(f"hash/{ds.name}/warm", ds.files, "raw BLAKE3")
            warm_raw.samples = raw.samples  # raw BLAKE3 has no cache: warm is cold again
        shutil.rmtree(holder.parent.parent, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def _data_round(results: Results, tool: Tool, ds: DataSet, holder: Path, ws: Path, cap: float,
                say) -> Path:
    """Move the data into a fresh workspace for `tool`, time first look and status there."""
    ws.mkdir(parents=True)
    target = ws / "data" / ds.name
    target.parent.mkdir()
    os.replace(holder, target)
    for extra in set(target.iterdir()) - {target / "big.bin"} if ds.name == "one" else ():
        extra.unlink()  # e.g. DVC's big.bin.dvc and .gitignore from an earlier round
    old_ws = holder.parent.parent
    if old_ws.name != f"data-{ds.name}" and old_ws.exists():
        shutil.rmtree(old_ws, ignore_errors=True)  # the previous tool's workspace, data gone
    _write_tracking(tool.writer, ds, ws, tool.build[0] if tool.writer == "dvc" else None)
    first, status = commands(tool, ds)
    log = ws.parent / f"{ws.name}.log"
    if ds.name == "small":
        setup = time_command(first, ws, cap, log)
        row = results.row("status/small", ds.files, tool.name)
        row.add(time_command(status, ws, cap, log) if setup.status == "ok" else setup)
        say(f"status small rep {tool.name}: {row.samples[-1:] or row.status}")
        return target
    cold = time_command(first, ws, cap, log)
    warm = time_command(status, ws, cap, log) if cold.status == "ok" else cold
    results.row(f"hash/{ds.name}/cold", ds.files, tool.name).add(cold)
    results.row(f"hash/{ds.name}/cold", ds.files, tool.name).extra["bytes"] = ds.total_bytes
    results.row(f"hash/{ds.name}/warm", ds.files, tool.name).add(warm)
    say(f"hash {ds.name} {tool.name}: cold {cold.seconds or cold.status}, "
        f"warm {results.get(f'hash/{ds.name}/warm', ds.files, tool.name).samples[-1:]}")
    return target
