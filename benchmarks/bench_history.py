"""Time `sci runs`, `sci metrics --all-runs` and `sci diff` over many recorded runs.

    .venv/bin/python benchmarks/bench_history.py                 # 1,000 runs of a 100-node pipeline
    .venv/bin/python benchmarks/bench_history.py --runs 200 --nodes 50 --reps 3

The workspace: a 100-node `foreach` sweep of `cmd` steps, each writing a JSON metrics file of
three numbers that depend on a parameter. A few real builds (each with its own `--set scale=…`)
record real runs; the rest of the 1,000 are copies of those manifests with later run ids,
their own parameters and metrics, written through `records.write_manifest` as a real build's
are. Building 1,000 times for real would take the same records ~15 minutes longer and measure
nothing more: the commands read records only.

Whole commands are timed (a fresh `python -m sci.cli` process each, as a user runs them), the
median of `--reps` repetitions, beside a no-op `sci build` of the same workspace; then again
with the runs index (`.sci/runs`) deleted before each repetition, where every manifest is read
and the index written again: what the first reader after 1,000 new runs pays.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

SCRIPT = """
import json, sys
i, scale, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
json.dump({"loss": round(1 / (1 + i * scale), 9), "accuracy": round(1 - 1 / (2 + i + scale), 9),
           "epochs": 10 + i % 7}, open(out, "w"))
"""


def pipeline(nodes: int) -> str:
    items = ", ".join(str(i) for i in range(nodes))
    return (f"version: 1\ndefaults: {{seed: 1}}\nparams: {{scale: 1.0}}\nsteps:\n  train:\n"
            f"    foreach: {{i: [{items}]}}\n    cmd: python train.py {{item.i}} {{params.scale}} {{outs.m}}\n"
            f"    code: [train.py]\n    params: [scale]\n    metrics: {{m: \"m/train-{{item.i}}.json\"}}\n")


def sci(ws: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = harness.clean_env()  # as a user runs sci: bytecode cached, no store redirected
    proc = subprocess.run([sys.executable, "-m", "sci.cli", *args], cwd=ws, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"sci {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def record_runs(ws: Path, total: int, real: int) -> None:
    """`real` builds, then copies of their manifests up to `total` runs."""
    sys.path.insert(0, str(REPO / "src"))
    from sci.records import run as records

    for k in range(real):
        sci(ws, "build", "-j", "2", "--set", f"scale={1.0 + k}")
    manifests = [json.loads((p / "manifest.json").read_bytes()) for p in sorted((ws / "runs").iterdir())]
    base = time.time()
    for k in range(real, total):
        man = json.loads(json.dumps(manifests[k % real]))
        scale = 1.0 + k
        man["command"] = ["build", "--set", f"scale={scale}"]
        man["params"] = {"scale": scale}
        for j, entry in enumerate(man["plan"]):
            entry["status"] = "executed" if k % 3 else "cached"
            entry["metrics"] = {"accuracy": round(1 - 1 / (2 + j + scale), 9), "epochs": 10 + j % 7,
                                "loss": round(1 / (1 + j * scale), 9)}
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(base + 60 * k))
        run_id = f"{stamp}.{k % 1_000_000:06d}Z-{100000 + k}"
        man["volatile"] = dict(man["volatile"], run_id=run_id, duration_s=1.0 + k % 5)
        run_dir = ws / "runs" / run_id
        run_dir.mkdir(parents=True)
        records.write_manifest(run_dir, man)


def timed(ws: Path, args: list[str], reps: int, before_each=None) -> tuple[float, float]:
    """Medians of (wall-clock, CPU) seconds of the whole command. CPU time (user + system of
    the child) is reported beside wall-clock because a shared machine's load inflates the
    latter; on an idle machine the two are close."""
    sci(ws, *args)  # warm the file cache, the plan cache and the runs index once
    walls, cpus = [], []
    for _ in range(reps):
        if before_each is not None:
            before_each()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        sci(ws, *args)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--real", type=int, default=3, help="real builds among the runs")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", type=Path, help="make the workspace here and keep it (for profiling)")
    args = parser.parse_args(argv)

    ws = args.keep or Path(tempfile.mkdtemp(prefix="sci-history-"))
    ws.mkdir(parents=True, exist_ok=True)
    try:
        (ws / "sci.yaml").write_text(pipeline(args.nodes))
        (ws / "train.py").write_text(SCRIPT)
        t0 = time.perf_counter()
        record_runs(ws, args.runs, args.real)
        print(f"recorded {args.runs} runs of {args.nodes} nodes in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        sci(ws, "build")  # the no-op build below is the fast path's
        commands = {
            "sci build (no-op)": ["build"],
            "sci --version": ["--version"],
            "sci runs": ["runs"],
            "sci runs -n 0": ["runs", "-n", "0"],
            "sci metrics --all-runs": ["metrics", "--all-runs"],
            "sci metrics train[i=7] --all-runs --format csv": ["metrics", "train[i=7]", "--all-runs", "--format", "csv"],
            "sci metrics": ["metrics"],
            "sci diff": ["diff"],
        }
        results: dict[str, tuple[float, float]] = {}
        for name, cmd in commands.items():
            results[name] = timed(ws, cmd, args.reps)
        index = ws / ".sci" / "runs"
        saved = index.read_bytes()
        for name in ("sci runs", "sci metrics --all-runs"):
            results[f"{name} (no index)"] = timed(ws, commands[name], max(3, args.reps // 2),
                                                  lambda: index.unlink(missing_ok=True))
        noop_wall, noop_cpu = results["sci build (no-op)"]
        print(f"{args.runs} runs of a {args.nodes}-node pipeline; medians of {args.reps}: wall-clock and CPU "
              f"seconds, each with its ratio to a no-op build (load average {os.getloadavg()[0]:.1f})")
        for name, (wall, cpu) in results.items():
            print(f"  {name:<50} {wall:7.3f} {wall / noop_wall:5.2f}x   {cpu:7.3f} {cpu / noop_cpu:5.2f}x")
        print(f"  index size: {len(saved) / 1e6:.1f} MB")
        if args.json:
            args.json.write_text(json.dumps({"runs": args.runs, "nodes": args.nodes, "reps": args.reps,
                                             "wall_cpu_seconds": results, "index_bytes": len(saved),
                                             "load_average": os.getloadavg()[0]}, indent=2) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(ws, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
