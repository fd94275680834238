"""Benchmark `sci build --executor slurm` on a real SLURM cluster on loopback.

    .venv/bin/python benchmarks/bench_slurm.py                     # 1,000 nodes, chain of 10
    .venv/bin/python benchmarks/bench_slurm.py --nodes 200 --snakemake /tmp/smk/bin/snakemake

It starts its own cluster (tests/slurm_cluster.py: 2 CPUs, 8 job slots each, so 16 jobs at
once; no accounting) and measures:

1. Per-node overhead against the local executor: a chain of `--chain` trivial nodes (each
   waits for the one before), built locally and with SLURM; (slurm - local) / chain.
2. `--nodes` trivial nodes, all ready at once: wall time to completion, sci's own time to submit
   them (task files, scripts and sbatch: runs/<id>/slurm/executor.json), with job arrays and
   with one sbatch per node; and how many scheduler queries (squeue, sacct, scontrol) the build
   made per second. Every SLURM command either tool runs is also counted by PATH shims that log
   each call, so the two tools are counted the same way.
3. With `--snakemake PATH` (a Snakemake with snakemake-executor-plugin-slurm, in a venv of its
   own): the same nodes as Snakemake rules, with its defaults (one sbatch per job, status
   checks every 10 s after 40 s), and with its job arrays and status checks as frequent as sci's
   queue queries (every 2 s).

Snakemake's jobs call `srun`, which (unlike sbatch) finds its configuration at
/etc/slurm/slurm.conf once the plugin strips SLURM_* variables from the job; so as root the
benchmark runs in a private mount namespace with the cluster's etc/ bound on /etc/slurm,
which nobody outside the namespace sees. Results: printed, and `--json FILE`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from slurm_cluster import SlurmCluster  # noqa: E402

COUNTED = ("sbatch", "squeue", "sacct", "scontrol", "scancel", "srun", "sinfo")
QUERIES = ("squeue", "sacct", "scontrol", "sinfo")


def shims(where: Path, log: Path) -> Path:
    """A directory of wrappers that log each call of a SLURM command, then run the real one."""
    where.mkdir(parents=True, exist_ok=True)
    for name in COUNTED:
        real = shutil.which(name)
        if real is None:
            continue
        p = where / name
        p.write_text(f'#!/bin/sh\necho "{name}" >> "{log}"\nexec "{real}" "$@"\n')
        p.chmod(0o755)
    return where


def counts(log: Path) -> dict[str, int]:
    out = {name: 0 for name in COUNTED}
    try:
        for line in log.read_text().split():
            out[line] = out.get(line, 0) + 1
    except FileNotFoundError:
        pass
    return out


def sci_env(cluster: SlurmCluster, shim_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SCI_CAS", "SCI_REMOTE")}
    env.update(cluster.env, NO_COLOR="1")
    if shim_dir is not None:
        env["PATH"] = f"{shim_dir}{os.pathsep}{env['PATH']}"
    return env


def sci_build(root: Path, env: dict, *args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sci.cli", "build", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"sci build {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return wall


def workspace(base: Path, name: str, files: dict[str, str]) -> Path:
    root = base / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def chain_yaml(n: int) -> str:
    lines = ["version: 1", "steps:", "  n0:", "    cmd: echo 0 > {outs}", "    outs: [c/0.txt]"]
    for i in range(1, n):
        lines += [f"  n{i}:", f"    cmd: cat {{deps}} > {{outs}}; echo {i} >> {{outs}}",
                  f"    deps: [c/{i - 1}.txt]", f"    outs: [c/{i}.txt]"]
    return "\n".join(lines) + "\n"


def fan_yaml(n: int) -> str:
    return (f"version: 1\nsteps:\n  make:\n    foreach: {{i: {list(range(n))}}}\n"
            f"    cmd: echo {{item.i}} > {{outs}}\n    outs: [\"out/{{item.i}}.txt\"]\n")


def executor_stats(root: Path) -> dict:
    (run,) = [r for r in (root / "runs").iterdir() if (r / "slurm" / "executor.json").exists()]
    return json.loads((run / "slurm" / "executor.json").read_text())


def bench_chain(cluster: SlurmCluster, base: Path, n: int, rounds: int) -> dict:
    local, slurm = [], []
    for r in range(rounds):
        root = workspace(base, f"chain-local-{r}", {"sci.yaml": chain_yaml(n)})
        local.append(sci_build(root, sci_env(cluster)))
        root = workspace(base, f"chain-slurm-{r}", {"sci.yaml": chain_yaml(n)})
        slurm.append(sci_build(root, sci_env(cluster), "--executor", "slurm"))
    lm, sm = statistics.median(local), statistics.median(slurm)
    return {"chain": n, "rounds": rounds, "local_s": round(lm, 3), "slurm_s": round(sm, 3),
            "per_node_overhead_s": round((sm - lm) / n, 3), "local_all": local, "slurm_all": slurm}


def bench_fan_sci(cluster: SlurmCluster, base: Path, n: int) -> dict:
    out: dict = {"nodes": n}
    root = workspace(base, "fan-local", {"sci.yaml": fan_yaml(n)})
    out["local_s"] = round(sci_build(root, sci_env(cluster)), 3)
    for arrays in (True, False):
        label = "arrays" if arrays else "one_sbatch_each"
        log = base / f"calls-sci-{label}.log"
        log.unlink(missing_ok=True)
        env = sci_env(cluster, shims(base / f"shims-sci-{label}", log))
        root = workspace(base, f"fan-slurm-{label}", {"sci.yaml": fan_yaml(n)})
        wall = sci_build(root, env, "--executor", "slurm", "--executor-option", f"arrays={str(arrays).lower()}")
        st = executor_stats(root)
        calls = counts(log)
        queries = sum(calls[q] for q in QUERIES)
        out[label] = {"wall_s": round(wall, 3), "submit_s": st["submit_s"], "sbatch": st["sbatch"],
                      "arrays": st["arrays"], "squeue": st["squeue"], "watch_s": st["watch_s"],
                      "calls": calls, "queries_per_s": round(queries / wall, 3)}
    return out


SNAKEFILE = """
import os
N = int(os.environ["BENCH_N"])
rule all:
    input: expand("out/{i}.txt", i=range(N))
rule make:
    output: "out/{i}.txt"
    shell: "echo {wildcards.i} > {output}"
"""


def bench_fan_snakemake(cluster: SlurmCluster, base: Path, n: int, snakemake: str) -> dict:
    out: dict = {"nodes": n, "version": subprocess.run([snakemake, "--version"], capture_output=True,
                                                         text=True).stdout.strip()}
    variants = {
        "defaults": [],
        "arrays_checks_every_2s": ["--seconds-between-status-checks", "2",
                                   "--slurm-init-seconds-before-status-checks", "1", "--slurm-array-jobs", "all"],
    }
    for label, extra in variants.items():
        log = base / f"calls-smk-{label}.log"
        log.unlink(missing_ok=True)
        env = sci_env(cluster, shims(base / f"shims-smk-{label}", log))
        env["BENCH_N"] = str(n)
        root = workspace(base, f"smk-{label}", {"Snakefile": SNAKEFILE})
        t0 = time.perf_counter()
        proc = subprocess.run([snakemake, "--executor", "slurm", "--jobs", str(n), "--slurm-status-command", "squeue",
                               "--default-resources", "slurm_partition=debug", "--slurm-no-account", "--quiet",
                               *extra], cwd=root, env=env, capture_output=True, text=True, timeout=7200)
        wall = time.perf_counter() - t0
        done = len(list((root / "out").glob("*.txt"))) if (root / "out").exists() else 0
        calls = counts(log)
        queries = sum(calls[q] for q in QUERIES)
        out[label] = {"wall_s": round(wall, 3), "ok": proc.returncode == 0 and done == n, "made": done,
                      "calls": calls, "queries_per_s": round(queries / wall, 3)}
        if proc.returncode != 0:
            out[label]["stderr_tail"] = proc.stderr[-1500:]
    return out


def in_private_mounts(argv: list[str]) -> None:
    """Re-run this script in a private mount namespace (see the module's docstring)."""
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "--", sys.executable, *argv,
                          "--in-namespace"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--chain", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--snakemake", help="the snakemake executable of a venv with snakemake-executor-plugin-slurm")
    ap.add_argument("--snakemake-nodes", type=int, help="nodes for Snakemake (default: --nodes)")
    ap.add_argument("--skip-sci", action="store_true", help="run only Snakemake")
    ap.add_argument("--skip-chain", action="store_true", help="skip the per-node overhead chain")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.snakemake and not args.in_namespace and os.geteuid() == 0 and shutil.which("unshare"):
        in_private_mounts(sys.argv)
    base = Path(tempfile.mkdtemp(prefix="sci-bench-slurm-"))
    base.chmod(0o755)  # munged wants every directory above its socket open to all
    cluster = SlurmCluster(base / "cluster")
    if args.in_namespace:
        (cluster.dir / "etc").mkdir(parents=True)
        subprocess.run(["mount", "--bind", str(cluster.dir / "etc"), "/etc/slurm"], check=True)
    cluster.start()
    results: dict = {"cluster": {"cpus": 2, "slots": 16, "accounting": False}, "machine_cpus": os.cpu_count()}
    try:
        if not args.skip_sci and not args.skip_chain:
            results["chain"] = bench_chain(cluster, base, args.chain, args.rounds)
            print(json.dumps({"chain": results["chain"]}), flush=True)
        if not args.skip_sci:
            results["fan"] = bench_fan_sci(cluster, base, args.nodes)
            print(json.dumps({"fan": results["fan"]}), flush=True)
        if args.snakemake:
            results["snakemake"] = bench_fan_snakemake(cluster, base, args.snakemake_nodes or args.nodes,
                                                       args.snakemake)
            print(json.dumps({"snakemake": results["snakemake"]}), flush=True)
    finally:
        cluster.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
