"""sci against its peers (GNU make, doit, Snakemake, DVC) on the same workloads, one table.

    .venv/bin/python tools/bench_peers.py --quick     # small sizes: proves the harness, minutes
    .venv/bin/python tools/bench_peers.py             # N = 200, 1,000, 10,000 and 1 GiB: long

The peers are installed into a virtual environment of their own (`.bench-venv/`, made with
`uv venv` + `uv pip install`), never into the project's. Rows (see docs/performance.md):
start-up; chain and fan-out of N trivial nodes — cold build at -j 2, no-op re-run, re-run after
editing one node's parameter (with whether exactly the affected nodes ran); hashing of 1 GiB in
one file and in 10,000 files, cold and warm; status of 10,000 unchanged small files. Tools take
turns in every repetition; each run has a time cap and a tool past it shows "—" (and is not
tried at larger N). Results go to benchmarks/results/peers-<mode>.json and, as a Markdown
table with the machine, the versions and this command, into docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import data_bench  # noqa: E402
import harness  # noqa: E402
import report  # noqa: E402

PEER_VENV = REPO / ".bench-venv"
# Pinned so a re-run measures the same peers; --peers overrides.
PEER_SPECS = ["dvc==3.67.1", "snakemake==9.27.1", "doit==0.37.0"]
DOC = REPO / "docs" / "performance.md"


def markers(name: str) -> tuple[str, str]:
    """Each run name (full, quick, or with a --tag) keeps its own section of docs/performance.md."""
    return f"<!-- bench_peers:{name}:begin -->", f"<!-- bench_peers:{name}:end -->"


def ensure_peers(venv: Path, specs: list[str], reinstall: bool) -> Path:
    """Create `venv` with uv and install the peers into it (skipped when already there)."""
    bin_dir = venv / "bin"
    wanted = {spec.split("==")[0] for spec in specs}
    if not reinstall and all((bin_dir / name).exists() for name in wanted):
        return bin_dir
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("bench_peers needs `uv` on PATH to build the peers' environment")
    if reinstall or not (bin_dir / "python").exists():
        subprocess.run([uv, "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(venv)],
                       check=True)
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(bin_dir / "python"), *specs], check=True)
    return bin_dir


def _bytes(n: int) -> str:
    return f"{n / 2**30:g} GiB" if n >= 2**30 else f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n:,} B"


def size_labels(quick: bool):
    """The N column: node count for pipelines, files and bytes for the data rows."""
    sets = {f"/{ds.name}": ds for ds in data_bench.data_sets(quick).values()}

    def label(bench: str, n: int) -> str:
        if bench == "startup":
            return ""
        for key, ds in sets.items():
            if key in bench:
                return f"{ds.files:,} file{'s' if ds.files > 1 else ''}, {_bytes(ds.total_bytes)}"
        return f"{n:,}"

    return label


def render_doc(meta: dict, table: str) -> str:
    begin, end = markers(meta.get("name", meta["mode"]))
    m = meta["machine"]
    versions = "\n".join(f"- {name}: `{text}`" for name, text in meta["versions"].items())
    return f"""{begin}
## Latest {meta.get('name', meta['mode'])} run

Measured {meta['started']} with

    {meta['command']}

Machine: {m['nproc']} cores, {m['ram_gib']} GiB RAM, {m['cpu']}, {m['os']}, Python {m['python']};
load average {', '.join(f'{x:.2f}' for x in m['loadavg'])} at the start and
{', '.join(f'{x:.2f}' for x in m['loadavg_end'])} at the end (other work shared the machine; the
tools take turns, so it falls on all of them). Medians of {meta['reps']} repetition(s)
({meta.get('large_reps', meta['reps'])} at N = 10,000; start-up: {max(meta['reps'], 10)}); cap {meta['cap_s']:g} s per
command, twice that for hashing ("—": over the cap, and then not tried at larger N). Ratios are
sci's median over the peer's: below 1× sci is faster. ✓k: exactly the k affected nodes re-ran;
✗ ran k: k nodes re-ran. Raw JSON: `{meta['json']}`.

Versions:
{versions}

{table}
{end}"""


def write_doc(meta: dict, table: str) -> None:
    section = render_doc(meta, table)
    begin, end = markers(meta.get("name", meta["mode"]))
    text = DOC.read_text() if DOC.exists() else "# Performance\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (N = 50, 200; 64 MiB)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        help="node counts (default 200,1000,10000; quick 50,200)")
    parser.add_argument("--shapes", default="chain,fanout")
    parser.add_argument("--reps", type=int, help="repetitions (default 3)")
    parser.add_argument("--large-reps", type=int, help="repetitions at N >= 10,000 (default: --reps)")
    parser.add_argument("--cap", type=float, help="seconds before a run is abandoned (default 300; quick 120)")
    parser.add_argument("--only", default="startup,pipelines,data",
                        help="which parts to run: startup, pipelines, data")
    parser.add_argument("--tools", default="sci,make,doit,snakemake,dvc")
    parser.add_argument("--baseline", metavar="SCI", help="another sci executable (an earlier commit's venv/bin/sci), "
                        "measured alongside as sci-base: add sci-base to --tools")
    parser.add_argument("--sci", metavar="SCI", help="the sci executable measured as sci (default .venv/bin/sci); "
                        "give one from a venv with the same packages as the baseline's: a venv with torch "
                        "pays ~1 ms more per start for setuptools' .pth hook alone")
    parser.add_argument("--activated", action="store_true",
                        help="run each tool with its virtual environment's bin/ first on PATH, as `uv run` does "
                        "(sci's steps then run sci's own python3, which needs no probe)")
    parser.add_argument("--peers", nargs="*", default=PEER_SPECS, help="pip specs of the peers")
    parser.add_argument("--reinstall", action="store_true", help="rebuild the peers' environment")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temp dir, removed)")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/performance.md")
    parser.add_argument("--tag", help="name this run: results go to peers-<mode>-<tag>.json and its own section")
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="measure nothing: print and write the table of an earlier run's JSON")
    args = parser.parse_args(argv)

    if args.from_json:
        meta, results = report.load_json(args.from_json)
        table = report.table(results, size_labels(meta["mode"] == "quick"))
        print(table)
        if not args.no_doc:
            write_doc(meta, table)
        return 0

    mode = "quick" if args.quick else "full"
    sizes = args.sizes or ([50, 200] if args.quick else [200, 1000, 10000])
    reps = args.reps or 3
    cap = args.cap or (120 if args.quick else 300)
    parts = set(args.only.split(","))

    harness.ACTIVATED = args.activated
    peer_bin = ensure_peers(PEER_VENV, args.peers, args.reinstall)
    all_tools = harness.make_tools(sci=args.sci, peer_bin=peer_bin, baseline=args.baseline)
    tools = {name: all_tools[name] for name in args.tools.split(",")}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sci-peers-"))
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"{mode}-{args.tag}" if args.tag else mode
    json_path = REPO / "benchmarks" / "results" / f"peers-{name}.json"
    meta = {"command": " ".join([".venv/bin/python", "tools/bench_peers.py", *(argv or sys.argv[1:])]),
            "mode": mode, "name": name,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": harness.machine(), "versions": harness.versions(tools),
            "sizes": sizes, "reps": reps, "large_reps": args.large_reps or reps, "cap_s": cap, "json": str(json_path.relative_to(REPO))}
    results = harness.Results()
    try:
        if "startup" in parts:
            harness.bench_startup(results, tools, reps=max(reps, 10), cap=60)
        if "pipelines" in parts:
            harness.bench_pipelines(results, tools, args.shapes.split(","), sizes, reps, cap, workdir,
                                    large_reps=args.large_reps)
        if "data" in parts:
            data_bench.bench_data(results, tools, args.quick, reps, cap * 2, workdir,
                                  say=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["machine"]["loadavg_end"] = harness.machine()["loadavg"]
    table = report.table(results, size_labels(args.quick))
    print(table)
    report.write_json(json_path, meta, results)
    print(f"wrote {json_path.relative_to(REPO)}", file=sys.stderr)
    if not args.no_doc:
        write_doc(meta, table)
        print(f"updated {DOC.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
