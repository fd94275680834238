"""The SLURM executor (SPEC §12): each node a batch job on an existing cluster, results identical
to a local build, impossible nodes rejected before anything is submitted, failures named by the
job's state, every job cancelled on Ctrl-C or a failure.

The first half needs no cluster (time limits, `scontrol` parsing, resource checks, settings).
The second half starts one real SLURM cluster on loopback (tests/slurm_cluster.py: munged,
slurmctld and slurmd, 2 CPUs with 8 job slots each, 4 fake GPUs, no accounting database)
for the whole session and drives `sci build --executor slurm` against it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO, Sci, no_traceback, signals_reach_children, write
from slurm_cluster import CPUS, GPUS, PARTITION, slurm_cluster_fixture, wait_until
from sci.errors import ResourceError, SpecError, UserError
from sci.executors import slurm as sx
from sci.store.cas import Store

# What `scontrol show node/partition --oneliner` printed on the test cluster (SLURM 22.05).
NODE_LINE = ("NodeName=localhost Arch=x86_64 CoresPerSocket=2  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=3.15 "
             "AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:fake:4 NodeAddr=127.0.0.1 "
             "NodeHostName=localhost Version=22.05.8 OS=Linux 6.18.44-fc-v1300 #1 SMP PREEMPT_DYNAMIC @0  "
             "RealMemory=24000 AllocMem=0 FreeMem=20695 Sockets=1 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 "
             "Weight=1 Owner=N/A MCS_label=N/A Partitions=debug,short  BootTime=2026-12-07T06:18:35 "
             "CfgTRES=cpu=2,mem=24000M,billing=2 AllocTRES= CapWatts=n/a")
PARTITION_LINES = (
    "PartitionName=debug AllowGroups=ALL Default=YES QoS=N/A DefaultTime=NONE MaxNodes=UNLIMITED MaxTime=UNLIMITED "
    "MinNodes=0 MaxCPUsPerNode=UNLIMITED Nodes=localhost OverSubscribe=FORCE:8 State=UP TotalCPUs=2 TotalNodes=1 "
    "DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=24000M,node=1,billing=2\n"
    "PartitionName=short AllowGroups=ALL Default=NO QoS=N/A DefaultTime=NONE MaxNodes=UNLIMITED MaxTime=00:01:00 "
    "MinNodes=0 MaxCPUsPerNode=UNLIMITED Nodes=localhost State=UP TotalCPUs=2 TotalNodes=1 "
    "DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED\n")
BASE = {"partition": None, "account": None, "qos": None, "time": None, "setup": [], "options": [], "arrays": True}


# -- no cluster needed ---------------------------------------------------------------------
def _node(name="n", cpu=1, gpu=0, mem_gb=0.0):
    return SimpleNamespace(name=name, step=name, resources={"cpu": cpu, "gpu": gpu, "mem_gb": mem_gb, "vram_gb": 0},
                           origin=("steps", name))


@pytest.mark.parametrize("text,seconds", [
    ("90", 5400), ("0:30", 30), ("1:30:00", 5400), ("2-0", 172800), ("1-12:30", 131400), ("1-00:00:05", 86405),
    ("UNLIMITED", None), ("INFINITE", None)])
def test_slurm_time_limits_are_read_in_all_their_forms(text, seconds):
    assert sx.parse_time(text) == seconds


@pytest.mark.parametrize("bad", ["", "1h", "1:2:3:4", "-5", "1.5", "ten"])
def test_a_malformed_time_limit_is_a_user_error(bad):
    with pytest.raises(UserError, match="not a SLURM time"):
        sx.parse_time(bad)


@given(st.integers(0, 400 * 86400))
def test_a_formatted_time_limit_reads_back_as_itself(seconds):
    assert sx.parse_time(sx._fmt_time(seconds)) == seconds


def test_scontrol_lines_are_read_with_values_that_hold_spaces():
    (node,) = sx.parse_nodes(NODE_LINE)
    assert (node.name, node.cpus, node.mem_mb, node.gpus, node.partitions) == ("localhost", 2, 24000, 4, ["debug", "short"])
    assert sx.fields(NODE_LINE)["OS"] == "Linux 6.18.44-fc-v1300 #1 SMP PREEMPT_DYNAMIC @0"
    debug, short = sx.parse_partitions(PARTITION_LINES, [node])
    assert (debug.name, debug.default, debug.max_time_s, debug.nodes) == ("debug", True, None, [node])
    assert (short.default, short.max_time_s) == (False, 60)


@pytest.mark.parametrize("gres,count", [("gpu:4", 4), ("gpu:a100:4(S:0-1)", 4), ("gpu:fake:2,gpu:v100:1", 3),
                                        ("(null)", 0), ("", 0), ("mps:100,gpu:2", 2), ("gpu:a100:2(S:0),shard:8", 2)])
def test_gpus_are_counted_from_a_nodes_gres(gres, count):
    assert sx.gpu_count(gres) == count


def test_resources_become_sbatch_options():
    assert sx.resource_args({"cpu": 4, "gpu": 2, "mem_gb": 1.5}) == [
        "--nodes=1", "--ntasks=1", "--cpus-per-task=4", "--mem=1536M", "--gres=gpu:2"]
    # cpu: 0 still needs one CPU from SLURM; no mem_gb leaves the site's default
    assert sx.resource_args({"cpu": 0, "gpu": 0, "mem_gb": 0}) == ["--nodes=1", "--ntasks=1", "--cpus-per-task=1"]
    assert sx.site_args({**BASE, "partition": "gpu", "time": "1:00:00", "options": ["--constraint=avx2"]}) == [
        "--partition=gpu", "--time=1:00:00", "--constraint=avx2"]


def _cluster(nodes=((2, 24000, 4),), max_time="UNLIMITED"):
    ns = [sx.ClusterNode(f"n{i}", c, m, g, ["debug"]) for i, (c, m, g) in enumerate(nodes)]
    return [sx.Partition("debug", True, "UP", sx.parse_time(max_time), nodes=ns)]


def test_rejection_names_the_node_what_it_asks_and_the_largest_node():
    cluster = _cluster(((2, 4000, 0), (8, 32000, 1)))
    sx.check_cluster_fits([_node("fits", cpu=8, gpu=1, mem_gb=30)], cluster, BASE)
    with pytest.raises(ResourceError) as err:
        sx.check_cluster_fits([_node("fits"), _node("huge", cpu=16, mem_gb=2)], cluster, BASE)
    assert err.value.exit_code == 2
    assert err.value.message == ("huge asks for 16 CPU, 2 GB memory but no node of partition debug has that; "
                                 "the largest is n1 (8 CPU, 1 GPU, 31.2 GiB memory)")


def test_partition_names_defaults_and_time_limits_are_checked():
    cluster = _cluster() + [sx.Partition("short", False, "UP", 60, nodes=_cluster()[0].nodes)]
    with pytest.raises(ResourceError, match="no partition 'gpu'") as err:
        sx.check_cluster_fits([_node()], cluster, {**BASE, "partition": "gpu"})
    assert "debug, short" in err.value.hint
    with pytest.raises(ResourceError, match="exceeds the MaxTime of partition short"):
        sx.check_cluster_fits([_node()], cluster, {**BASE, "partition": "short", "time": "5"})
    assert sx.check_cluster_fits([_node()], cluster, {**BASE, "partition": "short,debug", "time": "5"})
    no_default = [sx.Partition("a", False, nodes=cluster[0].nodes)]
    with pytest.raises(ResourceError, match="no default partition"):
        sx.check_cluster_fits([_node()], no_default, BASE)


asks = st.fixed_dictionaries({"cpu": st.integers(0, 6), "gpu": st.integers(0, 3),
                              "mem_gb": st.sampled_from([0, 0.5, 1, 4, 16])})
machines = st.lists(st.tuples(st.integers(1, 6), st.sampled_from([1000, 4096, 16384]), st.integers(0, 3)),
                    min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(ask=asks, nodes=machines)
def test_a_node_is_accepted_iff_one_cluster_node_has_all_it_asks(ask, nodes):
    one_fits = any(max(1, ask["cpu"]) <= c and ask["mem_gb"] * 1024 <= m and ask["gpu"] <= g for c, m, g in nodes)
    try:
        sx.check_cluster_fits([_node("x", **ask)], _cluster(nodes), BASE)
        accepted = True
    except ResourceError:
        accepted = False
    assert accepted == one_fits


def test_settings_come_from_the_command_line_then_sci_yaml_then_config(tmp_path):
    write(tmp_path, {"config/executors.yaml": """
        slurm: {partition: site, account: lab, time: 30, setup: [module load site], arrays: false}
        """})
    yaml = b"version: 1\nexecutors:\n  slurm: {partition: proj, setup: [module load proj]}\nsteps: {}\n"
    ws = SimpleNamespace(root=tmp_path)
    got = sx.settings(ws, yaml, {"partition": "cli", "options": "--exclusive --constraint=x", "poll_s": "0.5"})
    assert got == {"partition": "cli", "account": "lab", "qos": None, "time": "30", "setup": ["module load proj"],
                   "options": ["--exclusive", "--constraint=x"], "arrays": False, "poll_s": 0.5}
    assert sx.settings(ws, yaml, {"setup": ["a", "b"], "arrays": "yes"})["setup"] == ["a", "b"]
    assert sx.settings(SimpleNamespace(root=tmp_path / "none"), None, {})["poll_s"] == sx.DEFAULT_POLL_S


@pytest.mark.parametrize("cli,words", [({"partiton": "x"}, "unknown --executor-option 'partiton'"),
                                       ({"arrays": "maybe"}, "not a yes or no"),
                                       ({"poll_s": "0"}, "positive number"),
                                       ({"time": "1h"}, "not a SLURM time"),
                                       ({"qos": ["a", "b"]}, "given 2 times")])
def test_bad_command_line_settings_are_user_errors(tmp_path, cli, words):
    with pytest.raises(UserError, match=words):
        sx.settings(SimpleNamespace(root=tmp_path), None, cli)


def test_a_bad_config_file_points_at_its_line(tmp_path):
    write(tmp_path, {"config/executors.yaml": "slurm:\n  partition: a\n  acount: lab\n"})
    with pytest.raises(SpecError) as err:
        sx.settings(SimpleNamespace(root=tmp_path), None, {})
    assert "unknown key 'acount'" in err.value.message and "account" in err.value.hint
    assert str(err.value.location).startswith("config/executors.yaml:3")


def test_cli_rejects_a_bad_executors_section_of_sci_yaml_before_anything(ws):
    sci = ws({"sci.yaml": "version: 1\nexecutors:\n  slurm: {partition: 3, tiem: 5}\nsteps:\n  a: {cmd: 'true'}\n"})
    proc = sci("build", "--executor", "slurm", check=2)
    assert "sci.yaml:3" in proc.stderr and "tiem" in proc.stderr and no_traceback(proc.stderr)


def test_cli_without_slurm_on_path_exits_2_naming_the_commands(ws):
    sci = ws({"sci.yaml": "version: 1\nsteps:\n  a:\n    cmd: echo hi > {outs}\n    outs: [a.txt]\n"})
    sci.env["PATH"] = str(Path(sys.executable).parent)
    proc = sci("build", "--executor", "slurm", check=2)
    assert "needs SLURM's commands on PATH" in proc.stderr and "sbatch" in proc.stderr and no_traceback(proc.stderr)
    assert not (ws.root / "runs").exists()


def test_a_gpu_node_on_a_driver_without_gpus_says_to_declare_the_clusters_gpus(ws):
    from sci.build.gpu import detect_gpus

    if detect_gpus():
        pytest.skip("this machine has a GPU: its fingerprint is taken, nothing to declare")
    sci = ws({"sci.yaml": "version: 1\nsteps:\n  t:\n    cmd: echo hi > {outs}\n    outs: [t.txt]\n"
                          "    resources: {gpu: 1}\n"})
    sci.env["PATH"] = str(Path(sys.executable).parent)  # no SLURM either: the GPU check comes first
    proc = sci("build", "--executor", "slurm", check=2)
    assert "cannot fingerprint the GPU environment" in proc.stderr and no_traceback(proc.stderr)
    assert "declare the GPUs of the cluster's nodes in config/hardware.yaml" in proc.stderr
    assert "run GPU steps on a machine with an NVIDIA GPU" not in proc.stderr
    proc = sci("build", check=2)  # the local executor: this machine needs the GPU itself
    assert "has none" in proc.stderr and "cluster" not in proc.stderr


def test_executor_options_do_not_apply_to_the_local_executor(ws):
    sci = ws({"sci.yaml": "version: 1\nsteps:\n  a:\n    cmd: echo hi > {outs}\n    outs: [a.txt]\n"})
    proc = sci("build", "--executor-option", "partition=x", check=2)
    assert "does not apply to --executor local" in proc.stderr and no_traceback(proc.stderr)
    proc = sci("build", "--executor", "slurm", "--executor-option", "nokey", check=2)
    assert "is not KEY=VALUE" in proc.stderr


# -- a real cluster ------------------------------------------------------------------------
cluster = pytest.fixture(scope="session")(slurm_cluster_fixture)


def on_the_cluster(test):
    """A cluster test: slow, and grouped so that under `pytest -n N --dist loadgroup` one xdist
    worker runs them all against one cluster."""
    return pytest.mark.slow(pytest.mark.xdist_group("slurm-cluster")(test))


POLL = ["--executor-option", "poll_s=0.3"]


def _env(cluster, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SCI_CAS", "SCI_REMOTE")}
    env.update(cluster.env, NO_COLOR="1", **extra)
    return env


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sci.cli", "build", "--json", "--executor", "slurm", *POLL, *args]


def _slurm_build(cluster, root: Path, *args: str, check: int = 0, env: dict | None = None,
                 timeout: float = 300) -> dict:
    proc = subprocess.run(_argv(*args), cwd=root, env=env or _env(cluster), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    data = json.loads(proc.stdout) if proc.stdout.strip() else {"nodes": []}
    data["by_node"] = {n["node"]: n for n in data["nodes"]}
    data["stderr"] = proc.stderr
    return data


def _snapshot(root: Path, keys: dict[str, str], made: tuple[str, ...]) -> dict:
    """What must not depend on the executor: each node's StepResult outside `volatile`, the
    run manifest outside `volatile`, and the bytes of every file the build made."""
    store = Store(root / "cas", create=False)
    actions, volatile = {}, {}
    for node, key in keys.items():
        rec = store.get_action(key)
        volatile[node] = rec.pop("volatile")
        actions[node] = rec
    (run,) = (root / "runs").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest_volatile = manifest.pop("volatile")
    files = {str(p.relative_to(root)): p.read_bytes() for d in made for p in sorted((root / d).rglob("*"))
             if p.is_file()}
    return {"actions": actions, "manifest": manifest, "files": files, "volatile": volatile,
            "manifest_volatile": manifest_volatile, "run": run}


def _local_then_slurm(cluster, root: Path, made: tuple[str, ...], *args: str) -> tuple[dict, dict, dict]:
    """Build locally, snapshot, wipe everything the build made, build on the cluster, snapshot."""
    local = Sci(root, _env(cluster)).build(*args)
    keys = {n["node"]: n["key"] for n in local["nodes"]}
    before = _snapshot(root, keys, made)
    for d in ("cas", ".sci", "runs", *made):
        shutil.rmtree(root / d, ignore_errors=True)
    remote = _slurm_build(cluster, root, *args)
    assert {n: v["key"] for n, v in remote["by_node"].items()} == keys
    return keys, before, _snapshot(root, keys, made)


def _assert_identical(before: dict, after: dict) -> None:
    assert after["actions"] == before["actions"]
    assert after["files"] == before["files"]
    # The executor flags are not part of the record (SPEC §9): the command lines are equal too.
    assert after["manifest"] == before["manifest"]
    assert {v["executor"] for v in after["volatile"].values()} == {"slurm"}
    assert after["manifest_volatile"]["executor"] == "slurm"


def _arrays(cluster, job_name: str, root: Path) -> dict[str, list[str]]:
    """Array job id -> its task ids, for the finished jobs called `job_name` that ran in `root`."""
    out: dict[str, list[str]] = {}
    for rec in cluster.completed():
        if rec.get("Name") == job_name and rec.get("WorkDir") == str(root) and rec.get("ArrayJobId"):
            out.setdefault(rec["ArrayJobId"], []).append(rec["ArrayTaskId"])
    return out


INVESTIGATION = ["sci.yaml", "params.yaml", "uv.lock", "pyproject.toml", "rules"]


@pytest.fixture(scope="module")
def overrun(cluster, tmp_path_factory):
    """A build whose node outlives its one-minute `--time`. SLURM checks time limits about every
    30 s, so it ends 60–90 s after it starts: started by the first cluster test of this module,
    it runs beside the others and is checked by the last."""
    root = tmp_path_factory.mktemp("overrun")
    write(root, {"sci.yaml": """
        version: 1
        executors:
          slurm: {time: 1}
        steps:
          forever:
            cmd: sleep 600; echo never > {outs}
            outs: [never.txt]
        """})
    proc = subprocess.Popen(_argv(), cwd=root, env=_env(cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    yield SimpleNamespace(root=root, proc=proc)
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@on_the_cluster
def test_the_bundled_investigation_is_identical_digest_for_digest_dossier_included(cluster, overrun, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    for name in INVESTIGATION:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, root / name)
    params = (root / "params.yaml").read_text()
    for old, new in (("replicates: 200", "replicates: 20"), ("bootstrap: 2000", "bootstrap: 200")):
        assert old in params
        params = params.replace(old, new)
    (root / "params.yaml").write_text(params)

    keys, before, after = _local_then_slurm(cluster, root, ("data", "results", "dossier"))
    assert len(keys) == 15
    _assert_identical(before, after)
    assert (root / "dossier" / "index.html").is_file()
    # The six simulations were ready together: one job array of six tasks. (Each fit is ready
    # when its simulation ends: those that end together share an array.)
    arrays = _arrays(cluster, "sci-simulate", root)
    assert [sorted(tasks, key=int) for tasks in arrays.values()] == [[str(i) for i in range(6)]], arrays


SWEEP = {
    "sci.yaml": """
        version: 1
        experiment:
          title: SLURM parity
          question: "Does a SLURM build match a local one?"
          authors: [{name: Ada Lovelace}]
          license: CC-BY-4.0
        params: params.yaml
        defaults: {seed: 7}
        steps:
          gen:
            foreach: {i: [1, 2, 3, 4, 5]}
            cmd: python scripts/gen.py {item.i} {params.gen.scale} {outs}
            code: [scripts/gen.py]
            params: [gen.scale]
            outs: ["data/{item.i}.txt"]
            resources: {cpu: 1, mem_gb: 0.25}
          summary:
            cmd: cat {deps} | wc -c > {outs}
            deps: ["data/*.txt"]
            outs: [results/summary.txt]
            sandbox: false
          report:
            fn: steps.report:report
            deps: {data: "data/*.txt"}
            params: [report]
            outs: {out: results/report.txt}
          dossier:
            kind: dossier
            steps: [gen, summary, report]
            evidence: [results/summary.txt, results/report.txt]
            outs: [dossier/]
        """,
    "params.yaml": "gen: {scale: 3}\nreport: {title: Sums}\n",
    "scripts/gen.py": """
        import os, random, sys
        i, scale, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        rng = random.Random(int(os.environ["SCI_SEED"]))
        open(out, "w").write(" ".join(str(rng.randint(0, 99) * scale + i) for _ in range(50)) + "\\n")
        """,
    "steps/__init__.py": "",
    "steps/report.py": """
        def report(ctx):
            total = sum(int(x) for p in ctx.deps["data"] for x in p.read_text().split())
            ctx.outs["out"].write_text(f"{ctx.params['report']['title']}: {total}\\n")
            ctx.metrics["total"] = total
        """,
}


@on_the_cluster
def test_a_sweep_goes_as_one_job_array_and_matches_a_local_build(cluster, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write(root, SWEEP)
    keys, before, after = _local_then_slurm(cluster, root, ("data", "results", "dossier"))
    assert len(keys) == 8
    _assert_identical(before, after)
    assert after["manifest"]["command"] == ["build", "--json"]
    # The five gen nodes: one sbatch of a five-task array, with the node's resources.
    arrays = _arrays(cluster, "sci-gen", root)
    assert [sorted(tasks, key=int) for tasks in arrays.values()] == [["0", "1", "2", "3", "4"]], arrays
    (array_id,) = arrays
    scripts = sorted((after["run"] / "slurm").glob("*.sh"))
    assert any("5 node(s) of step gen" in s.read_text() for s in scripts)
    job = cluster.client("scontrol", "show", "job", f"{array_id}_0", "--oneliner").stdout
    assert "MinMemoryNode=256M" in job and "NumCPUs=1" in job and "Name=sci-gen" in job
    # executor.json: what the build asked of SLURM, and each node's job id.
    stats = json.loads((after["run"] / "slurm" / "executor.json").read_text())
    assert stats["jobs"] == len(stats["nodes"]) and set(stats["nodes"]) <= set(keys) and stats["arrays"] >= 1
    assert stats["sbatch"] < stats["jobs"] and stats["scancel"] == 0 and stats["submit_s"] > 0
    assert sorted(j for n, j in stats["nodes"].items() if n.startswith("gen")) == [f"{array_id}_{i}" for i in range(5)]
    # Built again, locally: the SLURM build's records are cache hits for the local executor.
    again = Sci(root, _env(cluster)).build()
    assert again["executed"] == [] and len(again["cached"]) == 8


@on_the_cluster
def test_gpu_nodes_get_the_gpus_slurm_assigned(cluster, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write(root, {
        # The driver declares two GPUs it does not have (a login node); the cluster has four.
        "config/hardware.yaml": "cpu: 2\nmem_gb: 8\ngpus: [{index: 0, vram_gb: 16, name: Fake}, "
                                "{index: 1, vram_gb: 16, name: Fake}]\n",
        "sci.yaml": """
            version: 1
            steps:
              train:
                foreach: {run: [a, b]}
                cmd: echo "$CUDA_VISIBLE_DEVICES {gpus}" > {outs}; sleep 2
                outs: ["gpu-{item.run}.txt"]
                resources: {gpu: 2}
              one:
                cmd: echo "$CUDA_VISIBLE_DEVICES {gpus}" > {outs}
                outs: [gpu-one.txt]
                resources: {gpu: 1}
            """,
    })
    _slurm_build(cluster, root)
    granted = {}
    for name in ("a", "b", "one"):
        visible, substituted = (root / f"gpu-{name}.txt").read_text().split()
        assert visible == substituted
        granted[name] = visible.split(",")
        assert set(granted[name]) <= {str(i) for i in range(GPUS)}
    assert len(granted["a"]) == len(granted["b"]) == 2 and len(granted["one"]) == 1
    # a and b ran at the same time (2 s each, 4 GPUs free): SLURM gave them different GPUs.
    assert not set(granted["a"]) & set(granted["b"])


@on_the_cluster
def test_a_node_no_partition_can_hold_exits_2_with_nothing_submitted(cluster, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write(root, {
        "config/hardware.yaml": "cpu: 64\nmem_gb: 512\ngpus: []\n",  # only the cluster can say no
        "sci.yaml": """
            version: 1
            steps:
              small:
                cmd: echo small > {outs}
                outs: [small.txt]
              huge:
                cmd: echo huge > {outs}
                outs: [huge.txt]
                resources: {cpu: 8}
            """,
    })
    seen = len(cluster.completed()), cluster.queue()
    out = _slurm_build(cluster, root, check=2)
    msg = out["stderr"]
    assert f"huge asks for 8 CPU but no node of partition {PARTITION} has that" in msg
    assert f"the largest is localhost ({CPUS} CPU, {GPUS} GPU, 23.4 GiB memory)" in msg
    assert "sci.yaml:" in msg and no_traceback(msg)
    # Nor a partition that does not exist, nor a time limit above the partition's.
    assert "no partition 'nope'" in _slurm_build(cluster, root, "--executor-option", "partition=nope", check=2)["stderr"]
    msg = _slurm_build(cluster, root, "small", "--executor-option", "partition=short", "--executor-option", "time=5",
                       check=2)["stderr"]
    assert "exceeds the MaxTime of partition short (00:01:00)" in msg
    assert (len(cluster.completed()), cluster.queue()) == seen
    assert not (root / "runs").exists() and not (root / "small.txt").exists()


FAILING = {
    "sci.yaml": """
        version: 1
        steps:
          bad:
            cmd: echo partial; sleep 1; echo broken >&2; exit 3
            outs: [bad.txt]
          after_bad:
            cmd: cp {deps} {outs}
            deps: [bad.txt]
            outs: [after_bad.txt]
          slow:
            cmd: sleep SLEEP; echo done > {outs}
            outs: [slow.txt]
          after_slow:
            cmd: cp {deps} {outs}
            deps: [slow.txt]
            outs: [after_slow.txt]
        """,
}


def _our_jobs(cluster, root: Path) -> list[dict]:
    """The queue's jobs whose output goes to this workspace's runs/."""
    out = []
    for job in cluster.queue():
        info = cluster.client("scontrol", "show", "job", job["id"], "--oneliner", check=False).stdout
        if f"WorkDir={root} " in info:
            out.append(job)
    return out


@on_the_cluster
def test_a_failing_step_fails_its_node_naming_the_job_state_and_cancels_the_rest(cluster, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write(root, {"sci.yaml": FAILING["sci.yaml"].replace("SLEEP", "300")})
    out = _slurm_build(cluster, root, check=1)
    st_ = {n: v["status"] for n, v in out["by_node"].items()}
    bad = out["by_node"]["bad"]
    assert st_["bad"] == "failed"
    assert bad["error"].startswith("slurm job ") and " FAILED" in bad["error"] and "exited with status 3" in bad["error"]
    assert st_["slow"] == "failed" and out["by_node"]["slow"]["error"].startswith("cancelled")
    assert st_["after_bad"] == st_["after_slow"] == "skipped"
    assert not (root / "slow.txt").exists() and not (root / "bad.txt").exists()
    # Every job this build submitted is gone from the queue (scancel), none left running.
    assert wait_until(lambda: not _our_jobs(cluster, root)), cluster.queue()
    # The failed step's output is kept where `sci log` finds it: digests in the run's log.
    (run,) = (root / "runs").iterdir()
    failed = [json.loads(line) for line in (run / "logs.jsonl").read_text().splitlines()
              if '"node_failed"' in line and '"bad"' in line]
    store = Store(root / "cas", create=False)
    assert store.read_blob(failed[0]["data"]["stdout"]) == b"partial\n"
    assert store.read_blob(failed[0]["data"]["stderr"]) == b"broken\n"
    assert "broken" in failed[0]["data"]["stderr_tail"]
    # No action result for a failed or cancelled node.
    assert not list(store.iter_actions())


@on_the_cluster
def test_with_keep_going_the_other_nodes_finish(cluster, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write(root, {"sci.yaml": FAILING["sci.yaml"].replace("SLEEP", "2")})
    out = _slurm_build(cluster, root, "--keep-going", check=1)
    st_ = {n: v["status"] for n, v in out["by_node"].items()}
    assert st_ == {"bad": "failed", "after_bad": "skipped", "slow": "executed", "after_slow": "executed"}
    assert (root / "after_slow.txt").read_text() == "done\n"


@on_the_cluster
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_build_cancels_every_job_it_submitted(cluster, tmp_path, sig):
    root = tmp_path / "ws"
    root.mkdir()
    write(root, {"sci.yaml": """
        version: 1
        steps:
          wait:
            foreach: {i: [1, 2, 3, 4]}
            cmd: sleep 300; echo {item.i} > {outs}
            outs: ["w{item.i}.txt"]
          alone:
            cmd: sleep 300; echo alone > {outs}
            outs: [alone.txt]
            resources: {cpu: 2}
        """})
    with signals_reach_children():
        proc = subprocess.Popen(_argv(), cwd=root, env=_env(cluster), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: sum(j["state"] == "RUNNING" for j in _our_jobs(cluster, root)) == 5, 60), \
            cluster.queue()
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"the build did not end within 60 s of {sig.name}:\n{proc.communicate()[1][-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err and no_traceback(err)
    assert wait_until(lambda: not _our_jobs(cluster, root), 60), cluster.queue()
    assert not list(Store(root / "cas", create=False).iter_actions())
    assert not list(root.glob("*.txt"))

    # The five jobs ended CANCELLED in SLURM's own record (written as each job's end is logged).
    def states() -> list[str]:
        return [rec.get("JobState", "") for rec in cluster.completed() if rec.get("WorkDir") == str(root)]

    assert wait_until(lambda: len(states()) >= 5), states()
    assert set(states()) == {"CANCELLED"}, states()


@on_the_cluster
def test_two_builds_sharing_a_store_on_the_cluster_do_not_corrupt_it(cluster, tmp_path):
    store = tmp_path / "shared-cas"
    pipeline = {"sci.yaml": """
        version: 1
        steps:
          make:
            foreach: {i: [1, 2, 3, 4, 5, 6]}
            cmd: python -c "import sys; open(sys.argv[1], 'wb').write(bytes(range(256)) * 4000 * {item.i})" {outs}
            outs: ["big/{item.i}.bin"]
          tree:
            cmd: mkdir -p {outs} && for i in 1 2 3; do cat {deps} > {outs}/$i.bin; done
            deps: ["big/*.bin"]
            outs: [tree/]
        """}
    roots = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        write(root, pipeline)
        roots.append(root)
    env = _env(cluster, SCI_CAS=str(store))
    procs = [subprocess.Popen(_argv(), cwd=r, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in roots]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    fsck = Sci(roots[0], env)("fsck", check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    for rel in ("big/6.bin", "tree/3.bin"):
        assert (roots[0] / rel).read_bytes() == (roots[1] / rel).read_bytes()
    assert (roots[0] / "tree" / "1.bin").stat().st_size == 256 * 4000 * 21
    # Both builds are complete: a third build in either workspace runs nothing.
    for root in roots:
        assert Sci(root, env).build()["executed"] == []


@on_the_cluster
def test_doctor_reports_the_cluster(cluster, ws):
    sci = ws({"sci.yaml": "version: 1\nsteps: {}\n"}, env=cluster.env)
    rep = json.loads(sci("doctor", "--json").stdout)["slurm"]
    assert (rep["cluster"], rep["nodes"], rep["cpus"], rep["gpus"], rep["accounting"]) == ("scitest", 1, CPUS, GPUS,
                                                                                            False)
    assert [(p["name"], p["default"], p["max_time"]) for p in rep["partitions"]] == [
        (PARTITION, True, "UNLIMITED"), ("short", False, "00:01:00")]
    text = sci("doctor").stdout
    assert "slurm      cluster scitest" in text and f"{PARTITION}*" in text


@on_the_cluster
def test_a_job_gone_from_the_queue_is_resolved_from_the_completion_record(cluster, tmp_path, monkeypatch):
    """Without accounting, a job the controller forgot (MinJobAge) is read from the job-completion
    file, else from scontrol; the node fails naming the state the record gives."""
    for k, v in cluster.env.items():
        monkeypatch.setenv(k, v)
    ex = sx.SlurmExecutor(settings=sx.settings(None, None, {}), workspace=tmp_path, run_dir=tmp_path / "run")
    job_id = cluster.client("sbatch", "--parsable", "--output=/dev/null", "--wrap", "exit 7").stdout.strip()
    assert wait_until(lambda: any(r.get("JobId") == job_id for r in cluster.completed()))
    assert ex._from_sacct([job_id]) == {}  # no accounting on this cluster: never asked
    assert ex._from_jobcomp([job_id]) == {job_id: ("FAILED", "7:0")}
    assert ex._from_scontrol([job_id]) == {job_id: ("FAILED", "7:0")}
    from concurrent.futures import Future

    job = sx._Job("lost", Future(), "b00001-0")
    job.base = job.job_id = job_id
    ex._jobs[job.name] = job
    ex._resolve([job])
    result = job.fut.result(timeout=1)
    assert not result.ok and result.error == f"slurm job {job_id} FAILED (exit code 7:0)"
    ex.close()


@pytest.fixture(scope="session")
def accounting_cluster():
    """A second cluster, with slurmdbd on a MariaDB of its own: `sacct` works, and there is no
    job-completion file."""
    yield from slurm_cluster_fixture(accounting=True)


@on_the_cluster
def test_with_accounting_a_build_works_and_a_job_gone_from_the_queue_is_read_from_sacct(accounting_cluster,
                                                                                       tmp_path, monkeypatch):
    cluster = accounting_cluster
    root = tmp_path / "ws"
    root.mkdir()
    write(root, {"sci.yaml": FAILING["sci.yaml"].replace("SLEEP", "1")})
    out = _slurm_build(cluster, root, "--keep-going", check=1, env=_env(cluster))
    st_ = {n: v["status"] for n, v in out["by_node"].items()}
    assert st_ == {"bad": "failed", "after_bad": "skipped", "slow": "executed", "after_slow": "executed"}
    assert " FAILED" in out["by_node"]["bad"]["error"] and "exited with status 3" in out["by_node"]["bad"]["error"]

    for k, v in cluster.env.items():
        monkeypatch.setenv(k, v)
    ex = sx.SlurmExecutor(settings=sx.settings(None, None, {}), workspace=tmp_path, run_dir=tmp_path / "run")
    assert ex.accounting and ex.jobcomp is None
    job_id = cluster.client("sbatch", "--parsable", "--output=/dev/null", "--wrap", "exit 7").stdout.strip()
    assert wait_until(lambda: "FAILED" in cluster.client("sacct", "-n", "-X", "-j", job_id, "-o", "State").stdout)
    assert ex._from_sacct([job_id, "999999"]) == {job_id: ("FAILED", "7:0")}
    assert ex._from_jobcomp([job_id]) == {}
    from concurrent.futures import Future

    job = sx._Job("lost", Future(), "b00001-0")
    job.base = job.job_id = job_id
    ex._jobs[job.name] = job
    ex._resolve([job])
    assert job.fut.result(timeout=1).error == f"slurm job {job_id} FAILED (exit code 7:0)"
    assert ex.stats["sacct"] == 2 and ex.stats["scontrol"] == 0  # sacct answered: scontrol not asked
    ex.close()
    doctor = json.loads(Sci(root, _env(cluster))("doctor", "--json").stdout)["slurm"]
    assert doctor["accounting"] is True


@on_the_cluster
def test_a_time_limit_overrun_fails_the_node_as_timeout(cluster, overrun):
    out, err = overrun.proc.communicate(timeout=300)
    assert overrun.proc.returncode == 1, err
    node = {n["node"]: n for n in json.loads(out)["nodes"]}["forever"]
    assert node["status"] == "failed"
    assert node["error"].startswith("slurm job ") and " TIMEOUT (time limit 1)" in node["error"]
    assert "killed by signal 15" in node["error"]
    (run,) = (overrun.root / "runs").iterdir()
    assert "DUE TO TIME LIMIT" in "".join(p.read_text() for p in (run / "slurm").glob("*.out"))


@on_the_cluster
def test_a_step_that_finishes_after_its_job_is_cancelled_leaves_no_result(cluster, tmp_path):
    """The job is cancelled while the step runs; the step's shell traps SIGTERM, writes its
    output and exits 0 — as a shell does when the time limit's SIGTERM reaches its `sleep` first.
    A job stopped by a signal is no result: the node fails naming CANCELLED, nothing is cached."""
    root = tmp_path / "ws"
    root.mkdir()
    write(root, {"sci.yaml": """
        version: 1
        steps:
          stubborn:
            cmd: "trap 'echo late > {outs}; exit 0' TERM; sleep 600 & wait"
            outs: [late.txt]
        """})
    proc = subprocess.Popen(_argv(), cwd=root, env=_env(cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert wait_until(lambda: any(j["state"] == "RUNNING" for j in _our_jobs(cluster, root)), timeout_s=120), \
            cluster.queue()
        time.sleep(1)  # the worker has started the step
        (job,) = _our_jobs(cluster, root)
        cluster.client("scancel", job["id"])
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    node = {n["node"]: n for n in json.loads(out)["nodes"]}["stubborn"]
    assert node["status"] == "failed"
    assert " CANCELLED" in node["error"] and "killed by signal 15" in node["error"], node["error"]
    assert not (root / "late.txt").exists()  # the worker placed nothing either
    assert not list(Store(root / "cas", create=False).iter_actions())
    status = Sci(root, _env(cluster))("status")
    assert "stubborn" in status.stdout and "would run" in status.stdout
