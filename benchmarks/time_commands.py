"""Time whole sci commands against make and `python -c pass` on generated pipelines.

    .venv/bin/python benchmarks/time_commands.py            # N = 200, 1,000, 10,000; 5 reps
    .venv/bin/python benchmarks/time_commands.py --quick    # N = 50, 200; 3 reps

Rows: start-up (`sci --version` beside `python -c pass` and `make --version`); then for a chain
and a fan-out of N trivial `cmd` nodes (benchmarks/gen_pipeline.py): a cold build at -j 2, a
no-op re-run, and a re-run after editing the parameter of the middle node (with the number of
nodes that actually ran). sci and make take turns in every repetition; medians are printed
with sci/make ratios. For the comparison with DVC, Snakemake and doit see tools/bench_peers.py.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import report  # noqa: E402


def sci_works(sci: str) -> bool:
    try:
        return subprocess.run([sci, "--version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        help="comma-separated node counts (default 200,1000,10000)")
    parser.add_argument("--shapes", default="chain,fanout")
    parser.add_argument("--reps", type=int, help="repetitions (default 5, quick 3)")
    parser.add_argument("--cap", type=float, default=600, help="seconds before a run is abandoned")
    parser.add_argument("--sci", default=str(harness.REPO / ".venv" / "bin" / "sci"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--workdir", type=Path, help="where workspaces go (default: a temp dir)")
    args = parser.parse_args(argv)

    sizes = args.sizes or ([50, 200] if args.quick else [200, 1000, 10000])
    reps = args.reps or (3 if args.quick else 5)
    tools = harness.make_tools(sci=args.sci)
    if not sci_works(args.sci):
        print(f"`{args.sci} --version` does not work yet: sci rows left unmeasured", file=sys.stderr)
        del tools["sci"]

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sci-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = harness.Results()
    meta = {"command": "python benchmarks/time_commands.py " + " ".join(argv or sys.argv[1:]),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": harness.machine(), "versions": harness.versions(tools),
            "sizes": sizes, "reps": reps, "cap_s": args.cap}
    try:
        harness.bench_startup(results, tools, reps=max(reps, 10), cap=60)
        harness.bench_pipelines(results, tools, args.shapes.split(","), sizes, reps, args.cap, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["machine"]["loadavg_end"] = harness.machine()["loadavg"]
    print(report.table(results))
    if args.json:
        report.write_json(args.json, meta, results)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
