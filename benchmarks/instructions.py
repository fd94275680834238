"""Instructions, not seconds: two sci executables on one workspace shape, under callgrind.

    .venv/bin/python benchmarks/instructions.py edit --builds 9 WS_A SCI_A WS_B SCI_B

Wall-clock ratios on a shared 2-core machine swing by ±20% from one run to the next (the same
row read 1.06 and 1.24 in two bench_peers runs of session 10). `valgrind --tool=callgrind`
counts the instructions sci's main thread executes, which repeat to within 1% for the same
build. They leave out the kernel (page faults, file creation) and the steps' own processes, so
they measure sci's own work: start-up, imports, planning, deciding, records. Modes as in
paired.py: `edit` (change the parameter of node 100, then build), `noop`, `status`. A no-op
record takes 8 appended edits before it is written whole again, so `--builds 9` sums one whole
cycle. Needs valgrind; builds run at -j 2 with each executable's bin/ first on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def count(mode: str, ws: Path, sci: str, value: int) -> int:
    """Main-thread instructions of one command of `sci` in `ws`."""
    if mode == "edit":
        params = ws / "params.yaml"
        params.write_text(re.sub(r"node100: \d+", f"node100: {value}", params.read_text()))
        time.sleep(0.06)  # past the stat cache's racy window: the edit is seen as an edit
    argv = [sci, "status"] if mode == "status" else [sci, "build", "-j", "2"]
    env = dict(os.environ, PATH=f"{Path(sci).parent}{os.pathsep}{os.environ['PATH']}", PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
                        *argv], cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        main_thread = next(Path(tmp).glob("cg.out-01"))
        for line in main_thread.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no totals")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["edit", "noop", "status"])
    parser.add_argument("ws_a", type=Path)
    parser.add_argument("sci_a")
    parser.add_argument("ws_b", type=Path)
    parser.add_argument("sci_b")
    parser.add_argument("--builds", type=int, default=9)
    args = parser.parse_args(argv)
    sums = {}
    for name, ws, sci in (("A", args.ws_a, args.sci_a), ("B", args.ws_b, args.sci_b)):
        counts = [count(args.mode, ws, sci, 1000 + i) for i in range(args.builds)]
        sums[name] = sum(counts)
        print(f"{name}: {sums[name] / 1e6:,.0f} M instructions in {args.builds} builds "
              f"({', '.join(f'{c / 1e6:.0f}' for c in counts)} M each)")
    print(f"{args.mode}: A/B {sums['A'] / sums['B']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
