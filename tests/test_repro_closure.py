"""`sci repro-check TARGET` rebuilds exactly TARGET's closure (SPEC §7): steps outside it need
none of their sources; a rebuild that fails is a `failed` verdict with its reason, never a
missing report; the scratch is removed unless --keep, and `sci gc` removes what is left.

    in1.txt ──▶ a ──▶ a.txt          in2.txt ──▶ b ──▶ b.txt       rules/agg.py ──▶ agg (fn)
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from conftest import no_traceback

TWO = {
    "sci.yaml": """
        version: 1
        steps:
          a:
            cmd: cat {deps} > {outs}
            deps: [in1.txt]
            outs: [a.txt]
          b:
            cmd: cat {deps} > {outs}
            deps: [in2.txt]
            outs: [b.txt]
          agg:
            fn: rules.agg:agg
            deps: [b.txt]
            outs: [agg.txt]
          sweep:
            foreach: {s: [x, y]}
            cmd: cat {deps} > {outs}
            deps: ["raw/{item.s}.txt"]
            outs: ["out/{item.s}.txt"]
        """,
    "in1.txt": "one\n",
    "in2.txt": "two\n",
    "raw/x.txt": "x\n",
    "raw/y.txt": "y\n",
    "rules/__init__.py": "",
    "rules/agg.py": """
        def agg(ctx):
            next(iter(ctx.outs.values())).write_text("agg\\n")
        """,
}


def _report(root: Path) -> dict:
    runs = sorted(p for p in (root / "runs").iterdir() if (p / "repro.json").exists())
    return json.loads((runs[-1] / "repro.json").read_text())


def _scratch_left(root: Path) -> list[str]:
    base = root / ".sci" / "repro"
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


def test_steps_outside_the_closure_need_none_of_their_sources(ws):
    sci = ws(TWO)
    sci.build()
    # what b, agg and sweep[s=y] read is gone: a and sweep[s=x] can still be checked
    (ws.root / "in2.txt").unlink()
    (ws.root / "rules" / "agg.py").unlink()
    (ws.root / "raw" / "y.txt").unlink()
    proc = sci("repro-check", "a", "--json")
    rep = json.loads(proc.stdout)
    assert rep["verdict"] == "reproduced" and rep["ok"] is True
    assert [n["node"] for n in rep["nodes"]] == ["a"]
    rep = json.loads(sci("repro-check", "sweep[s=x]", "--json").stdout)
    assert [(n["node"], n["status"]) for n in rep["nodes"]] == [("sweep[s=x]", "match")]
    assert _scratch_left(ws.root) == []
    # the check's keys are the workspace's: the closure's plan is the full plan's, cut
    assert rep["nodes"][0]["key"] == rep["nodes"][0]["rebuilt_key"]


def test_fn_step_closure_reproduces_and_needs_no_other_step(ws):
    sci = ws(TWO)
    sci.build()
    (ws.root / "in1.txt").unlink()
    rep = json.loads(sci("repro-check", "agg", "--json").stdout)
    assert {n["node"]: n["status"] for n in rep["nodes"]} == {"b": "match", "agg": "match"}


def test_a_failed_rebuild_is_a_failed_verdict_with_a_reason_and_a_report(ws):
    # `sneaky` reads a file it does not declare: it builds in the workspace (sandbox: false)
    # but not in the scratch, which holds only declared inputs
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              first:
                cmd: cat {deps} > {outs}
                deps: [in.txt]
                outs: [first.txt]
              sneaky:
                cmd: cat {deps} undeclared.txt > {outs}
                deps: [first.txt]
                outs: [sneaky.txt]
                sandbox: false
              last:
                cmd: cat {deps} > {outs}
                deps: [sneaky.txt]
                outs: [last.txt]
            """,
        "in.txt": "in\n",
        "undeclared.txt": "secret ingredient\n",
    })
    sci.build()
    proc = sci("repro-check", "last", check=1)
    assert no_traceback(proc.stderr)
    assert "CHECK FAILED" in proc.stderr and "NOT REPRODUCED" not in proc.stderr
    rep = _report(ws.root)
    assert rep["verdict"] == "failed" and rep["ok"] is False
    by = {n["node"]: n for n in rep["nodes"]}
    assert by["first"]["status"] == "match"
    assert by["sneaky"]["status"] == "failed" and "rebuild failed" in by["sneaky"]["note"]
    assert "undeclared.txt" in by["sneaky"]["note"]  # the stderr line that says why
    assert by["last"]["status"] == "failed" and "a node it depends on failed" in by["last"]["note"]
    assert _scratch_left(ws.root) == []


def test_mismatch_outranks_failure_and_both_exit_1(ws):
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              clock:
                cmd: python -c "import time; print(time.time_ns())" > {outs}
                outs: [clock.txt]
              broken:
                cmd: cat missing.txt > {outs}
                outs: [broken.txt]
                sandbox: false
            """,
        "missing.txt": "here now\n",
    })
    sci.build()
    (ws.root / "missing.txt").unlink()  # gone, but undeclared: status cannot see it
    proc = sci("repro-check", "clock", check=1)
    assert "NOT REPRODUCED" in proc.stderr
    proc = sci("repro-check", "broken", check=1)
    assert "CHECK FAILED" in proc.stderr
    assert _report(ws.root)["verdict"] == "failed"


def test_keep_prints_the_scratch_and_gc_removes_it(ws):
    sci = ws(TWO)
    (ws.root / "in1.txt").write_bytes(b"one\n" * 50_000)  # 200 kB: linked, so removing it frees nothing
    sci.build()
    proc = sci("repro-check", "a", "--keep")
    kept = next(line.split(" kept in ", 1)[1].split(" ", 1)[0] for line in proc.stderr.splitlines()
                if "kept in" in line)
    assert (ws.root / kept / "ws" / "in1.txt").read_bytes() == b"one\n" * 50_000
    assert _report(ws.root)["kept"] == kept
    # a source is linked, not copied: the same inode where the filesystem allows it
    rep = _report(ws.root)
    assert rep["scratch"]["linked_files"] + rep["scratch"]["copied_files"] >= 2
    dry = sci("gc", "--dry-run")
    assert f"would delete scratch {kept}" in dry.stdout
    assert (ws.root / kept).exists()
    source_linked = (ws.root / "in1.txt").stat().st_nlink > 1
    files = {(st.st_ino, st.st_size) for p in (ws.root / kept).rglob("*")
             if not stat.S_ISDIR((st := p.lstat()).st_mode)}
    every_file = sum(size for _, size in files)  # each file once, however many links it has in the scratch
    out = json.loads(sci("gc", "--json").stdout)
    assert [s["path"] for s in out["scratch"]] == [kept]
    assert not (ws.root / kept).exists()
    # the bytes said are the bytes freed: a source linked from the workspace frees nothing
    assert out["scratch"][0]["bytes"] == (every_file - 200_000 if source_linked else every_file)


def test_a_mismatch_leaves_no_scratch_behind(ws):
    sci = ws({"sci.yaml": """
        version: 1
        steps:
          clock:
            cmd: python -c "import time; print(time.time_ns())" > {outs}
            outs: [clock.txt]
        """})
    sci.build()
    sci("repro-check", "clock", check=1)
    assert _scratch_left(ws.root) == []


def test_gc_skips_the_scratch_of_a_running_check(ws):
    import fcntl

    sci = ws(TWO)
    sci.build()
    busy = ws.root / ".sci" / "repro" / "20990101T000000.000000Z-1"
    (busy / "ws").mkdir(parents=True)
    fd = os.open(busy / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        out = json.loads(sci("gc", "--json").stdout)
        assert out["scratch"] == [] and busy.exists()
    finally:
        os.close(fd)
    out = json.loads(sci("gc", "--json").stdout)
    assert len(out["scratch"]) == 1 and not busy.exists()


def test_an_unknown_target_is_the_request_exit_2(ws):
    sci = ws(TWO)
    sci.build()
    proc = sci("repro-check", "nope", check=2)
    assert "names no node" in proc.stderr and no_traceback(proc.stderr)
