"""Resource semaphores, GPU assignment and the sandbox, observed from inside the steps.

Every step here appends `start end` wall-clock times (and what it was given) to its output,
so the tests check real overlap, not the scheduler's opinion of it.
"""

from __future__ import annotations

import json

from sci.store.cas import Store
from sci.workspace import Workspace


def _intervals(root, paths):
    out = []
    for p in paths:
        start, end, *rest = (root / p).read_text().split()
        out.append((float(start), float(end), rest))
    return out


def _max_overlap(intervals):
    events = sorted([(s, 1) for s, _, _ in intervals] + [(e, -1) for _, e, _ in intervals])
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


TIMED = "python -c \"import time,os,sys; s=time.time(); time.sleep(SLEEP); open(sys.argv[1],'w').write(f'{{s}} {{time.time()}} ' + os.environ.get('CUDA_VISIBLE_DEVICES','-') + ' ' + os.environ['OMP_NUM_THREADS'] + ' ' + sys.argv[2])\" {outs} g={gpus}"


def test_two_gpu_nodes_on_one_gpu_never_overlap(ws):
    sci = ws({
        "config/hardware.yaml": "cpu: 4\nmem_gb: 8\ngpus: [{vram_gb: 16, name: Test GPU}]\n",
        "sci.yaml": f"""
            version: 1
            steps:
              train:
                foreach: {{run: [a, b]}}
                cmd: {TIMED.replace("SLEEP", "0.6")}
                outs: ["out/{{item.run}}.txt"]
                resources: {{cpu: 1, gpu: 1, vram_gb: 8}}
            """,
    })
    sci.build("-j", "4")
    iv = _intervals(ws.root, ["out/a.txt", "out/b.txt"])
    assert _max_overlap(iv) == 1
    assert all(rest == ["0", "1", "g=0"] for _, _, rest in iv)  # CUDA_VISIBLE_DEVICES and {gpus}


def test_cpu_limit_holds_with_jobs_above_it(ws):
    sci = ws({
        "config/hardware.yaml": "cpu: 2\nmem_gb: 8\n",
        "sci.yaml": f"""
            version: 1
            steps:
              work:
                foreach: {{i: [1, 2, 3, 4, 5]}}
                cmd: {TIMED.replace("SLEEP", "0.4")}
                outs: ["out/{{item.i}}.txt"]
              wide:
                cmd: {TIMED.replace("SLEEP", "0.4")}
                outs: [out/wide.txt]
                resources: {{cpu: 2}}
            """,
    })
    sci.build("-j", "8")
    paths = [f"out/{i}.txt" for i in range(1, 6)]
    iv = _intervals(ws.root, paths + ["out/wide.txt"])
    assert _max_overlap(iv) <= 2
    wide = iv[-1]
    assert all(e <= wide[0] or s >= wide[1] for s, e, _ in iv[:-1])  # the 2-CPU node ran alone
    assert wide[2] == ["2", "g="]  # CUDA_VISIBLE_DEVICES empty (no GPU visible); threads = its CPUs
    assert _max_overlap(iv[:-1]) == 2  # but the 1-CPU nodes did use both CPUs


def test_memory_semaphore(ws):
    sci = ws({
        "config/hardware.yaml": "cpu: 4\nmem_gb: 1\n",
        "sci.yaml": f"""
            version: 1
            steps:
              big:
                foreach: {{i: [1, 2, 3]}}
                cmd: {TIMED.replace("SLEEP", "0.3")}
                outs: ["out/{{item.i}}.txt"]
                resources: {{mem_gb: 0.6}}
            """,
    })
    sci.build("-j", "3")
    assert _max_overlap(_intervals(ws.root, [f"out/{i}.txt" for i in (1, 2, 3)])) == 1


def test_dispatch_order_is_critical_path_first_then_declaration_order(ws):
    #   a0 ─▶ a1 ─▶ a2        (longest path: a0 first)
    #   b0, c0                 (independent, one node each)
    # Among equals (c0, b0, a2: one node left to a sink each) the one declared first: SPEC §2
    # lists a sweep's nodes in declaration order, never string order.
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              c0: {cmd: "echo > {outs}", outs: [c0]}
              b0: {cmd: "echo > {outs}", outs: [b0]}
              a0: {cmd: "echo > {outs}", outs: [a0]}
              a1: {cmd: "cat {deps} > {outs}", deps: [a0], outs: [a1]}
              a2: {cmd: "cat {deps} > {outs}", deps: [a1], outs: [a2]}
            """,
    })
    out = sci.build("-j", "1")
    run = ws.root / "runs" / out["run_id"] / "logs.jsonl"
    started = [e["node"] for e in map(json.loads, run.read_text().splitlines()) if e["event"] == "node_started"]
    assert started == ["a0", "a1", "c0", "b0", "a2"]
    assert sci("dag").stdout.split("\n")[0] == "a0"


def test_sandbox_hides_undeclared_files_and_sandbox_false_does_not(ws):
    sci = ws({
        "secret.txt": "not declared\n",
        "sci.yaml": """
            version: 1
            steps:
              boxed:
                cmd: cat secret.txt > {outs}
                outs: [boxed.txt]
              open:
                cmd: cat secret.txt > {outs}
                outs: [open.txt]
                sandbox: false
            """,
    })
    out = sci.build("--keep-going", check=1)
    assert out["failed"] == ["boxed"] and out["executed"] == ["open"]
    assert "secret.txt" in out["stderr"]
    assert (ws.root / "open.txt").read_text() == "not declared\n"


def test_a_reused_sandbox_shows_each_node_exactly_its_own_inputs(ws):
    """Boxes are reused task after task, keeping shared links and directories: each node must
    still see only its own deps and output directories, whatever the node before it did."""
    listing = 'L=$(find . | LC_ALL=C sort); echo $L > {outs}'  # listed before the output exists
    sci = ws({
        "shared.txt": "s\n",
        "other.txt": "o\n",
        "sci.yaml": f"""
            version: 1
            steps:
              a1: {{cmd: "{listing}", deps: [shared.txt], outs: [a/one.txt]}}
              a2: {{cmd: "{listing}", deps: [shared.txt], outs: [a/two.txt]}}
              b1: {{cmd: "{listing}; rm shared.txt; mkdir -p junk; touch junk/x $TMPDIR/y", deps: [shared.txt], outs: [b/one.txt]}}
              b2: {{cmd: "{listing}", deps: [shared.txt, other.txt], outs: [b/deep/two.txt]}}
              c1: {{cmd: "{listing}; ln -sfn /tmp other.txt", deps: [other.txt], outs: [b/three.txt]}}
              c2: {{cmd: "{listing}; cat other.txt >> {{outs}}", deps: [other.txt], outs: [c.txt]}}
            """,
    })
    out = sci.build("-j", "1")
    assert out["executed"] == ["a1", "a2", "b1", "b2", "c1", "c2"]

    def seen(path: str) -> list[str]:
        return (ws.root / path).read_text().split()

    assert seen("a/one.txt") == [".", "./a", "./shared.txt"]
    assert seen("a/two.txt") == [".", "./a", "./shared.txt"]
    assert seen("b/one.txt") == [".", "./b", "./shared.txt"]
    assert seen("b/deep/two.txt") == [".", "./b", "./b/deep", "./other.txt", "./shared.txt"]
    assert seen("b/three.txt") == [".", "./b", "./other.txt"]
    assert seen("c.txt") == [".", "./other.txt", "o"]  # the link c1 bent points home again
    assert (ws.root / "shared.txt").read_text() == "s\n"  # removing a link in the box is harmless
    assert not list(Workspace(ws.root).scratch_dir.glob("n-*")), "boxes are removed after the build"


def test_sandboxed_step_that_writes_to_its_dep_changes_only_its_own_copy(ws):
    sci = ws({
        "data.txt": "original\n",
        "sci.yaml": """
            version: 1
            steps:
              rude:
                cmd: echo changed >> {deps} && cat {deps} > {outs}
                deps: [data.txt]
                outs: [o.txt]
            """,
    })
    sci.build()
    assert (ws.root / "data.txt").read_text() == "original\n"
    assert (ws.root / "o.txt").read_text() == "original\nchanged\n"


def test_step_sees_only_path_and_declared_env(ws):
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              env:
                cmd: env | sort > {outs}
                outs: [env.txt]
                env: [MY_FLAG, API_TOKEN]
            """,
    }, env={"MY_FLAG": "on", "API_TOKEN": "hunter2", "UNDECLARED_THING": "x"})
    out = sci.build()
    seen = dict(line.split("=", 1) for line in (ws.root / "env.txt").read_text().splitlines() if "=" in line)
    assert seen["MY_FLAG"] == "on" and seen["API_TOKEN"] == "hunter2"  # passed to the step
    assert "UNDECLARED_THING" not in seen
    assert seen["SCI_SEED"] and seen["SCI_DETERMINISM"] == "strict" and seen["PYTHONHASHSEED"]
    key = out["nodes"][0]["key"]
    record = Store(ws.root / "cas", create=False).action_bytes(key).decode()
    assert "hunter2" not in record and '"MY_FLAG":"on"' in record  # secrets never recorded by value
    for run in (ws.root / "runs").iterdir():
        for f in run.iterdir():
            assert "hunter2" not in f.read_text()
