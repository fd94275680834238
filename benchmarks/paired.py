"""Two sci executables on one workspace shape, in pairs: the median of the pairs' own ratios.

    .venv/bin/python benchmarks/paired.py edit  --pairs 21 WS_A SCI_A WS_B SCI_B
    .venv/bin/python benchmarks/paired.py fresh --pairs 15 --shape chain -n 200 WS_A SCI_A WS_B SCI_B

A and B run one after the other in every pair (the order swapped each pair), so a drift of the
machine's speed falls on both sides of each ratio; on a shared machine that is what resolves a
10% difference that two medians of a few runs cannot. Modes: `noop` (build an unchanged
workspace), `edit` (change the parameter of node 100, then build), `cold` (remove the store, the
state and the outputs, then build), `fresh` (a new workspace from gen_pipeline.py each time, as
bench_peers makes one for each repetition; WS_A and WS_B are emptied), `status`. Builds run at
-j 2, in the caller's environment (so with the caller's PATH: which `python3` a step finds
changes what a workspace's first build asks; see docs/environments.md).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def prepare(mode: str, ws: Path, args, value: list[int]) -> None:
    if mode == "edit":
        params = ws / "params.yaml"
        value[0] += 1
        params.write_text(re.sub(r"node100: \d+", f"node100: {value[0]}", params.read_text()))
        time.sleep(0.06)  # past the stat cache's racy window: the edit is seen as an edit
    elif mode == "fresh":
        subprocess.run([sys.executable, str(HERE / "gen_pipeline.py"), str(ws), "--shape", args.shape,
                        "-n", str(args.nodes), "--runlog", f"{ws}.runlog"], check=True, stderr=subprocess.DEVNULL)
    elif mode == "cold":
        for name in ("cas", ".sci", "runs", "out"):
            shutil.rmtree(ws / name, ignore_errors=True)


def timed(mode: str, ws: Path, sci: str, args, value: list[int]) -> float:
    prepare(mode, ws, args, value)
    argv = [sci, "status"] if mode == "status" else [sci, "build", "-j", "2"]
    start = time.perf_counter()
    subprocess.run(argv, cwd=ws, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["noop", "edit", "cold", "fresh", "status"])
    parser.add_argument("ws_a", type=Path)
    parser.add_argument("sci_a")
    parser.add_argument("ws_b", type=Path)
    parser.add_argument("sci_b")
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--shape", default="chain", help="fresh: the generated pipeline's shape")
    parser.add_argument("-n", "--nodes", type=int, default=200, help="fresh: its node count")
    args = parser.parse_args(argv)
    value = [int(time.time())]
    a, b = (args.ws_a, args.sci_a), (args.ws_b, args.sci_b)
    timed(args.mode, *a, args, value)  # warm-up: byte code, page cache
    timed(args.mode, *b, args, value)
    times_a, times_b, ratios = [], [], []
    for i in range(args.pairs):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        t_first = timed(args.mode, *first, args, value)
        t_second = timed(args.mode, *second, args, value)
        t_a, t_b = (t_first, t_second) if i % 2 == 0 else (t_second, t_first)
        times_a.append(t_a)
        times_b.append(t_b)
        ratios.append(t_a / t_b)
    med_a, med_b = statistics.median(times_a), statistics.median(times_b)
    print(f"{args.mode}: A {med_a * 1000:.1f} ms, B {med_b * 1000:.1f} ms (medians); A/B {med_a / med_b:.3f}, "
          f"median of the {args.pairs} pairs' ratios {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    sys.exit(main())
