"""`sci push`/`sci pull` against `dvc push`/`dvc pull` on the same data, both whole commands.

    .venv/bin/python benchmarks/bench_transfer_dvc.py [--rounds 3] [--large-mib 1024]

Needs DVC in tools/bench_peers.py's environment (.bench-venv/bin/dvc; run that tool once, or
`uv venv .bench-venv && uv pip install --python .bench-venv/bin/python dvc`). Workloads: 1,000
small files (4 KiB) and one large file, each produced by a workspace (sci: one node writing a
directory output; DVC: `dvc add` of the same directory) and pushed to an empty directory remote,
then pulled into a fresh clone with an empty cache. The tools take turns; medians are printed
with the sci/DVC ratio. Whole commands, so start-up is included, as a user would see it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCI = [sys.executable, "-m", "sci.cli"]
DVC = [str(REPO / ".bench-venv" / "bin" / "dvc")]


def run(cmd, cwd, env=None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def make_data(dst: Path, kind: str, large_mib: int) -> None:
    dst.mkdir(parents=True)
    if kind == "small":
        for i in range(1000):
            (dst / f"f{i:04d}.bin").write_bytes(os.urandom(4096))
    else:
        with open(dst / "big.bin", "wb") as fh:
            for _ in range(large_mib):
                fh.write(os.urandom(1 << 20))


def sci_round(work: Path, data: Path) -> tuple[float, float]:
    src, clone, remote = work / "sci-src", work / "sci-clone", work / "sci-remote"
    src.mkdir()
    (src / "sci.yaml").write_text(
        "version: 1\nremotes: {default: " + str(remote) + "}\nsteps:\n  make:\n"
        f"    cmd: cp -r {data} {{outs}}\n    outs: [data]\n    sandbox: false\n")
    subprocess.run(SCI + ["build", "--no-remote"], cwd=src, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    t_push = run(SCI + ["push"], src)
    clone.mkdir()
    shutil.copy(src / "sci.yaml", clone / "sci.yaml")
    t_pull = run(SCI + ["pull"], clone)
    return t_push, t_pull


def dvc_round(work: Path, data: Path) -> tuple[float, float]:
    src, clone, remote = work / "dvc-src", work / "dvc-clone", work / "dvc-remote"
    src.mkdir()
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    subprocess.run(["git", "init", "-q"], cwd=src, check=True)
    subprocess.run(DVC + ["init", "-q"], cwd=src, check=True, env=env)
    subprocess.run(DVC + ["remote", "add", "-d", "r", str(remote)], cwd=src, check=True, env=env,
                   stdout=subprocess.DEVNULL)
    shutil.copytree(data, src / "data")
    subprocess.run(DVC + ["add", "data"], cwd=src, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    t_push = run(DVC + ["push"], src, env)
    shutil.copytree(src, clone, ignore=shutil.ignore_patterns("data", "cache", "tmp"))
    t_pull = run(DVC + ["pull"], clone, env)
    return t_push, t_pull


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--large-mib", type=int, default=1024)
    args = ap.parse_args()
    if not Path(DVC[0]).exists():
        print("DVC not found in .bench-venv: run tools/bench_peers.py once first", file=sys.stderr)
        return 2
    print(f"load average at start: {os.getloadavg()}")
    for kind in ("small", "large"):
        times = {"sci": ([], []), "dvc": ([], [])}
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            make_data(data, kind, args.large_mib)
            for r in range(args.rounds):
                order = [("sci", sci_round), ("dvc", dvc_round)]
                if r % 2:
                    order.reverse()
                for name, fn in order:
                    work = Path(tmp) / f"{name}-{r}"
                    work.mkdir()
                    push_s, pull_s = fn(work, data)
                    times[name][0].append(push_s)
                    times[name][1].append(pull_s)
                    shutil.rmtree(work)
        label = "1,000 × 4 KiB" if kind == "small" else f"1 × {args.large_mib} MiB"
        for op, i in (("push", 0), ("pull", 1)):
            s, d = statistics.median(times["sci"][i]), statistics.median(times["dvc"][i])
            print(f"{label:>16}  {op}:  sci {s:7.3f} s   dvc {d:7.3f} s   dvc/sci {d / s:5.1f}x")
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
