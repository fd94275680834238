"""The Ray executor (SPEC §9): nodes run as Ray tasks on an existing cluster, results identical to
a local build, impossible nodes rejected before anything runs, failures cancel the rest.

The first half needs no cluster (address resolution, resource checks, options). The second
half runs one real Ray head node on loopback inside a private network and PID namespace
(tests/ray_cluster.py), shared by the whole module, and drives `sci build --executor ray` in it.

The pipeline built both ways:

    gen[i=1..3] (cmd) ─▶ data/{i}.txt ─┬─▶ summary (cmd, sandbox: false) ─▶ results/summary.txt ─┐
                                      └─▶ report (fn) ─────────────────▶ results/report.txt ───┴─▶ dossier
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Sci, no_traceback, write
from ray_cluster import ADDRESS, CLUSTER_CPUS, CLUSTER_GPUS, ray_cluster_fixture, wait_until
from sci.errors import ResourceError, UserError
from sci.executors import ray as rx
from sci.store.cas import Store


# -- no cluster needed ---------------------------------------------------------------------
def _node(name="n", cpu=1, gpu=0, mem_gb=0.0, vram_gb=0.0):
    return SimpleNamespace(name=name, resources={"cpu": cpu, "gpu": gpu, "mem_gb": mem_gb, "vram_gb": vram_gb},
                           origin=("steps", name))


def test_address_comes_from_the_flag_then_ray_address(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert rx.resolve_address("head:1234") == "head:1234"
    assert rx.resolve_address(None) == "10.0.0.5:6379"


def test_no_address_is_a_user_error_never_a_local_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(UserError) as err:
        rx.resolve_address(None)
    assert err.value.exit_code == 2 and "--address" in err.value.hint and "RAY_ADDRESS" in err.value.hint


def test_a_ray_client_address_is_refused():
    with pytest.raises(UserError, match="Ray Client"):
        rx.resolve_address("ray://head:10001")


def test_missing_ray_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra sees
    with pytest.raises(UserError) as err:
        rx.RayExecutor(address="127.0.0.1:1")
    assert "uv sync --extra ray" in err.value.hint


def test_ray_options_carry_the_nodes_resources():
    assert rx.ray_options({"cpu": 2, "gpu": 1, "mem_gb": 1.5, "vram_gb": 8}) == {
        "num_cpus": 2, "num_gpus": 1, "memory": int(1.5 * 2**30), "max_retries": 0}
    assert "memory" not in rx.ray_options({"cpu": 1, "gpu": 0, "mem_gb": 0, "vram_gb": 0})


def test_only_alive_nodes_count():
    raw = [{"Alive": True, "NodeName": "a", "Resources": {"CPU": 4.0, "memory": 8 * 2**30}},
           {"Alive": False, "NodeName": "dead", "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    assert rx.cluster_nodes(raw) == [rx.ClusterNode("a", 4.0, 0.0, 8.0 * 2**30)]


def test_rejection_names_the_node_what_it_asks_and_the_largest_cluster_node():
    cluster = [rx.ClusterNode("small", 2, 0, 4 * 2**30), rx.ClusterNode("big", 8, 1, 32 * 2**30)]
    rx.check_cluster_fits([_node("fits", cpu=8, gpu=1, mem_gb=30)], cluster, "h:1")
    with pytest.raises(ResourceError) as err:
        rx.check_cluster_fits([_node("fits", cpu=1), _node("huge", cpu=16, mem_gb=2)], cluster, "h:1")
    msg = err.value.message
    assert err.value.exit_code == 2
    assert msg.startswith("huge asks for 16 CPU, 2 GB memory") and "h:1" in msg
    assert "big (8 CPU, 1 GPU, 32.0 GiB memory)" in msg


def test_a_cluster_without_alive_nodes_is_rejected():
    with pytest.raises(ResourceError, match="no alive node"):
        rx.check_cluster_fits([_node()], [], "h:1")


resources = st.fixed_dictionaries({"cpu": st.integers(0, 6), "gpu": st.integers(0, 3),
                                   "mem_gb": st.sampled_from([0, 0.5, 1, 4, 16])})
machines = st.lists(st.builds(lambda c, g, m: rx.ClusterNode("m", c, g, m * 2**30),
                              st.integers(0, 6), st.integers(0, 3), st.sampled_from([0, 1, 4, 16])),
                    min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(asks=resources, cluster=machines)
def test_a_node_is_accepted_iff_one_cluster_node_has_all_it_asks(asks, cluster):
    node = _node("x", cpu=asks["cpu"], gpu=asks["gpu"], mem_gb=asks["mem_gb"])
    one_fits = any(asks["cpu"] <= c.cpu and asks["gpu"] <= c.gpu and asks["mem_gb"] * 2**30 <= c.mem_bytes
                   for c in cluster)
    try:
        rx.check_cluster_fits([node], cluster, "h:1")
        accepted = True
    except ResourceError:
        accepted = False
    assert accepted == one_fits


def test_a_worker_in_another_environment_refuses_the_task():
    assert rx._mismatch(rx._driver_identity()) is None
    problem = rx._mismatch({**rx._driver_identity(), "sci": "0.0.0-elsewhere"})
    assert "0.0.0-elsewhere" in problem and "driver" in problem


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_without_an_address_exits_2_before_anything_runs(ws):
    sci = ws({"sci.yaml": "version: 1\nsteps:\n  a:\n    cmd: echo hi > {outs}\n    outs: [a.txt]\n"})
    sci.env.pop("RAY_ADDRESS", None)
    proc = sci("build", "--executor", "ray", check=2)
    assert "needs the address of a running Ray cluster" in proc.stderr and no_traceback(proc.stderr)
    assert not (ws.root / "runs").exists() and not (ws.root / "a.txt").exists()


def test_cli_with_an_address_nobody_listens_on_exits_2_at_once(ws):
    pytest.importorskip("ray", reason="ray is not installed (uv sync --extra ray)")
    sci = ws({"sci.yaml": "version: 1\nsteps:\n  a:\n    cmd: echo hi > {outs}\n    outs: [a.txt]\n"})
    proc = sci("build", "--executor", "ray", "--address", f"127.0.0.1:{_free_port()}", check=2, timeout=60)
    assert "cannot reach the Ray cluster" in proc.stderr and no_traceback(proc.stderr)
    assert not (ws.root / "runs").exists()


# -- a real cluster ------------------------------------------------------------------------
cluster = pytest.fixture(scope="module")(ray_cluster_fixture)


def on_the_cluster(test):
    """A cluster test: slow, and grouped so that under `pytest -n N --dist loadgroup` one xdist
    worker runs them all against one cluster (with plain `-n` each worker may start its own)."""
    return pytest.mark.slow(pytest.mark.xdist_group("ray-cluster")(test))


SOURCES = {
    "sci.yaml": """
        version: 1
        experiment:
          title: Ray parity
          question: "Does a Ray build match a local one?"
          authors: [{name: Ada Lovelace}]
          license: CC-BY-4.0
        params: params.yaml
        defaults: {seed: 7}
        steps:
          gen:
            foreach: {i: [1, 2, 3]}
            cmd: python scripts/gen.py {item.i} {params.gen.scale} {outs}
            code: [scripts/gen.py]
            params: [gen.scale]
            outs: ["data/{item.i}.txt"]
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


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SCI_CAS", "SCI_REMOTE", "RAY_ADDRESS")}
    env["NO_COLOR"] = "1"
    return env


def _ray_build(cluster, root: Path, *args: str, check: int = 0) -> dict:
    """`sci build --json --executor ray --address …` inside the cluster's namespace."""
    proc = cluster.run([sys.executable, "-m", "sci.cli", "build", "--json", "--executor", "ray", "--address", ADDRESS,
                        *args], cwd=root, env=_env())
    assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    data = json.loads(proc.stdout) if proc.stdout.strip() else {"nodes": []}
    data["by_node"] = {n["node"]: n for n in data["nodes"]}
    data["stderr"] = proc.stderr
    return data


def _snapshot(root: Path, keys: dict[str, str]) -> dict:
    """What must not depend on the executor: each node's StepResult outside `volatile`, the
    run manifest outside `volatile`, and the bytes of every file the build made."""
    actions = {}
    volatile = {}
    for node, key in keys.items():
        rec = Store(root / "cas", create=False).get_action(key)
        volatile[node] = rec.pop("volatile")
        actions[node] = rec
    (run,) = (root / "runs").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest_volatile = manifest.pop("volatile")
    made = {str(p.relative_to(root)): p.read_bytes() for d in ("data", "results", "dossier")
            for p in sorted((root / d).rglob("*")) if p.is_file()}
    return {"actions": actions, "manifest": manifest, "files": made, "volatile": volatile,
            "manifest_volatile": manifest_volatile}


@on_the_cluster
def test_a_ray_build_is_identical_digest_for_digest_to_a_local_build(cluster, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write(root, SOURCES)
    local = Sci(root, _env()).build()
    assert len(local["executed"]) == 6
    keys = {n["node"]: n["key"] for n in local["nodes"]}
    before = _snapshot(root, keys)
    for made in ("cas", ".sci", "runs", "data", "results", "dossier"):
        shutil.rmtree(root / made)

    remote = _ray_build(cluster, root)
    assert sorted(n for n, v in remote["by_node"].items() if v["status"] == "executed") == sorted(keys)
    assert {n: v["key"] for n, v in remote["by_node"].items()} == keys
    after = _snapshot(root, keys)
    assert after["actions"] == before["actions"]
    assert after["files"] == before["files"]
    # The executor flags are not part of the record (SPEC §9): the command lines are equal too.
    assert after["manifest"]["command"] == before["manifest"]["command"] == ["build", "--json"]
    assert after["manifest"] == before["manifest"]
    assert {v["executor"] for v in after["volatile"].values()} == {"ray"}
    assert after["manifest_volatile"]["executor"] == "ray"
    # Built again, locally: the Ray build's records are cache hits for the local executor.
    again = Sci(root, _env()).build()
    assert again["executed"] == [] and len(again["cached"]) == 6


@on_the_cluster
def test_a_node_no_cluster_node_can_hold_exits_2_before_anything_runs(cluster, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write(root, {
        # The driver's machine is declared large, so only the cluster can say no.
        "config/hardware.yaml": "cpu: 16\nmem_gb: 64\ngpus: []\n",
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
    out = _ray_build(cluster, root, check=2)
    msg = out["stderr"]
    assert "huge asks for 8 CPU" in msg
    assert f"largest is 127.0.0.1 ({CLUSTER_CPUS} CPU, {CLUSTER_GPUS} GPU" in msg
    assert "sci.yaml:" in msg and no_traceback(msg)
    assert not (root / "runs").exists() and not (root / "small.txt").exists()
    assert not (root / "cas").exists() or not list(Store(root / "cas", create=False).iter_actions())


MARKER = "37.25"  # a sleep nobody else runs: how the test finds the step's grandchild process

FAILING = {
    "sci.yaml": """
        version: 1
        steps:
          bad:
            cmd: sleep 2; echo broken >&2; exit 3
            outs: [bad.txt]
          after_bad:
            cmd: cp {deps} {outs}
            deps: [bad.txt]
            outs: [after_bad.txt]
          slow:
            cmd: sh -c 'sleep SLEEP & wait'; echo done > {outs}
            outs: [slow.txt]
          after_slow:
            cmd: cp {deps} {outs}
            deps: [slow.txt]
            outs: [after_slow.txt]
        """,
}


def _no_marker(cluster) -> bool:
    return f"sleep {MARKER}" not in cluster.processes()


@on_the_cluster
def test_a_failure_without_keep_going_cancels_the_running_nodes(cluster, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write(root, {"sci.yaml": FAILING["sci.yaml"].replace("SLEEP", MARKER)})
    out = _ray_build(cluster, root, check=1)
    st_ = {n: v["status"] for n, v in out["by_node"].items()}
    assert st_["bad"] == "failed" and "status 3" in out["by_node"]["bad"]["error"]
    assert st_["slow"] == "failed", f"slow was not cancelled: {out['by_node']['slow']}"
    assert out["by_node"]["slow"]["error"].startswith("cancelled")
    assert st_["after_bad"] == st_["after_slow"] == "skipped"
    assert not (root / "slow.txt").exists()
    # Nothing of the cancelled step outlives it, not even the process it started in the background.
    assert wait_until(lambda: _no_marker(cluster)), cluster.processes()


@on_the_cluster
def test_with_keep_going_the_other_nodes_finish(cluster, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write(root, {"sci.yaml": FAILING["sci.yaml"].replace("SLEEP", "4")})
    out = _ray_build(cluster, root, "--keep-going", check=1)
    st_ = {n: v["status"] for n, v in out["by_node"].items()}
    assert st_ == {"bad": "failed", "after_bad": "skipped", "slow": "executed", "after_slow": "executed"}
    assert (root / "after_slow.txt").read_text() == "done\n"


@on_the_cluster
def test_a_gpu_node_gets_the_gpu_ray_assigned_not_the_drivers(cluster, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write(root, {
        # The driver's pool hands out GPU 5; the cluster's GPUs are 0 and 1.
        "config/hardware.yaml": "cpu: 2\nmem_gb: 8\ngpus: [{index: 5, vram_gb: 16, name: Test GPU}]\n",
        "sci.yaml": """
            version: 1
            steps:
              train:
                cmd: echo "$CUDA_VISIBLE_DEVICES {gpus}" > {outs}
                outs: [gpu.txt]
                resources: {gpu: 1}
            """,
    })
    _ray_build(cluster, root)
    visible, substituted = (root / "gpu.txt").read_text().split()
    assert visible == substituted and visible in {str(i) for i in range(CLUSTER_GPUS)}


DRIVER = """
import json, subprocess, sys, time
from pathlib import Path
from types import SimpleNamespace
from sci.executors.ray import RayExecutor
from sci.executors.task import Task
from sci.store.cas import Store

root, address, marker = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
store = Store(root / "cas")
(root / "ws").mkdir(exist_ok=True)

def task(name, cmd, workspace=root / "ws"):
    return Task(node=name, kind="cmd", cmd=cmd, fn=None, workspace=str(workspace), store=str(store.root),
                scratch_root=str(root / "ws" / ".sci" / "scratch"), sandbox=True, deps=[], code=[],
                outs={"o": "o.txt"}, ctx_deps={}, params={}, seed=1, determinism="strict", threads=1, env={},
                gpus=[], python=sys.executable)

res = {"cpu": 1, "gpu": 0, "mem_gb": 0, "vram_gb": 0}
ex = RayExecutor(address=address, nodes=[SimpleNamespace(name=n, resources=res, origin=()) for n in ("slow", "lost")])
out = {}
lost = ex.submit(task("lost", "echo x > o.txt", workspace=Path("/nonexistent/sci-ws"))).result(timeout=60)
out["lost"] = {"ok": lost.ok, "error": lost.error}
slow = ex.submit(task("slow", f"sh -c 'sleep {marker} & wait'; echo done > o.txt"))
deadline = time.monotonic() + 60
while time.monotonic() < deadline:  # wait until the step's background process runs
    if f"sleep {marker}" in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout:
        break
    time.sleep(0.2)
ex.cancel_all()
r = slow.result(timeout=60)
out["slow"] = {"ok": r.ok, "error": r.error}
ex.close()
print(json.dumps(out))
"""


@on_the_cluster
def test_cancel_all_stops_the_task_and_everything_its_step_started(cluster, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    marker = "41.75"
    proc = cluster.run([sys.executable, str(script), str(tmp_path), ADDRESS, marker], env=_env())
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["slow"]["ok"] is False and out["slow"]["error"].startswith("cancelled")
    assert wait_until(lambda: f"sleep {marker}" not in cluster.processes()), cluster.processes()
    # A worker that cannot see the workspace says so instead of failing obscurely.
    assert out["lost"]["ok"] is False and "not reachable on Ray node" in out["lost"]["error"]
