"""SPEC §8 guarantees 1–3 and the engine's everyday behaviour, through the real CLI.

The pipeline used here:

    raw.txt ─▶ prep ─▶ work/clean.txt ─▶ stats ─▶ work/stats.txt ─▶ report (fn) ─▶ results/report.txt
    other.txt ─▶ side ─▶ work/side.txt
"""

from __future__ import annotations

import json

from conftest import no_traceback
from sci.store.cas import Store
from sci.workspace import Workspace

PIPELINE = {
    "sci.yaml": """
        version: 1
        defaults: {seed: 11}
        params: params.yaml
        steps:
          prep:
            cmd: python scripts/prep.py {deps.raw} {params.prep.scale} {outs.clean}
            code: [scripts/prep.py]
            deps: {raw: raw.txt}
            params: [prep.scale]
            outs: {clean: work/clean.txt}
          stats:
            cmd: python scripts/stats.py {deps} {outs}
            code: [scripts/stats.py, scripts/lib.py]
            deps: [work/clean.txt]
            params: [stats.digits]
            outs: [work/stats.txt]
          report:
            fn: steps.report:report
            deps: {stats: work/stats.txt}
            params: [report]
            outs: {out: results/report.txt}
          side:
            cmd: tr a-z A-Z < {deps} > {outs}
            deps: [other.txt]
            outs: [work/side.txt]
        """,
    "params.yaml": """
        prep: {scale: 2}
        stats: {digits: 3}
        report: {title: Numbers}
        """,
    "raw.txt": "1\n2\n3\n",
    "other.txt": "hello\n",
    "scripts/lib.py": "def fmt(x, d):\n    return f'{x:.{d}f}'\n",
    "scripts/prep.py": """
        import sys
        src, scale, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
        vals = [float(l) * scale for l in open(src) if l.strip()]
        open(out, 'w').write(''.join(f'{v}\\n' for v in vals))
        """,
    "scripts/stats.py": """
        import sys
        sys.path.insert(0, 'scripts')
        from lib import fmt
        src, out = sys.argv[1], sys.argv[2]
        vals = [float(l) for l in open(src) if l.strip()]
        open(out, 'w').write(fmt(sum(vals) / len(vals), 3) + '\\n')
        """,
    "steps/__init__.py": "",
    "steps/report.py": """
        from steps.helpers import banner

        def report(ctx):
            mean = ctx.deps['stats'].read_text().strip()
            ctx.outs['out'].write_text(banner(ctx.params['report']['title']) + f'mean={mean}\\n')
            ctx.metrics['mean'] = float(mean)
        """,
    "steps/helpers.py": "def banner(t):\n    return f'== {t} ==\\n'\n",
}


def test_build_twice_runs_nothing_the_second_time(ws):
    sci = ws(PIPELINE)
    first = sci.build()
    assert first["executed"] == ["prep", "report", "side", "stats"]
    assert (ws.root / "results/report.txt").read_text() == "== Numbers ==\nmean=4.000\n"
    second = sci.build()
    assert second["executed"] == []
    assert second["cached"] == ["prep", "report", "side", "stats"]


def test_param_edit_reruns_exactly_its_dependants_and_undo_runs_nothing(ws):
    sci = ws(PIPELINE)
    sci.build()
    params = ws.root / "params.yaml"
    original = params.read_text()
    params.write_text(original.replace("scale: 2", "scale: 3"))
    edited = sci.build()
    assert edited["executed"] == ["prep", "report", "stats"]
    assert (ws.root / "results/report.txt").read_text().endswith("mean=6.000\n")
    params.write_text(original)
    undone = sci.build()
    assert undone["executed"] == []
    assert (ws.root / "results/report.txt").read_text().endswith("mean=4.000\n")


def test_code_edit_reruns_exactly_the_nodes_whose_code_includes_it(ws):
    sci = ws(PIPELINE)
    sci.build()
    lib = ws.root / "scripts/lib.py"
    lib.write_text(lib.read_text() + "# a comment\n")
    assert sci.build()["executed"] == ["stats"]  # same bytes out: report is cut off early
    helper = ws.root / "steps/helpers.py"  # imported by the fn step's module: in its closure
    helper.write_text(helper.read_text().replace("==", "##"))
    assert sci.build()["executed"] == ["report"]
    assert (ws.root / "results/report.txt").read_text().startswith("## Numbers ##")


def test_early_cutoff_same_bytes_from_upstream_stop_the_rerun(ws):
    sci = ws(PIPELINE)
    sci.build()
    (ws.root / "raw.txt").write_text("3\n2\n1\n")  # same mean, different clean.txt
    out = sci.build()
    assert out["executed"] == ["prep", "stats"]  # stats.txt identical → report not re-run
    assert "report" in out["cached"]


def test_set_overrides_for_one_invocation_only(ws):
    sci = ws(PIPELINE)
    sci.build()
    out = sci.build("--set", "prep.scale=10")
    assert out["executed"] == ["prep", "report", "stats"]
    assert (ws.root / "results/report.txt").read_text().endswith("mean=20.000\n")
    back = sci.build()
    assert back["executed"] == []  # the earlier result is still in the store
    assert (ws.root / "results/report.txt").read_text().endswith("mean=4.000\n")


def test_set_unknown_parameter_is_a_usage_error(ws):
    sci = ws(PIPELINE)
    proc = sci("build", "--set", "prep.scal=3", check=2)
    assert "prep.scal" in proc.stderr and "did you mean 'prep.scale'" in proc.stderr
    assert no_traceback(proc.stderr)


def test_deleted_or_edited_output_is_restored_without_running(ws):
    sci = ws(PIPELINE)
    sci.build()
    (ws.root / "work/clean.txt").unlink()
    (ws.root / "results/report.txt").write_text("vandalised\n")
    out = sci.build()
    assert out["executed"] == []
    assert (ws.root / "work/clean.txt").read_text() == "2.0\n4.0\n6.0\n"
    assert (ws.root / "results/report.txt").read_text() == "== Numbers ==\nmean=4.000\n"


def test_editing_a_materialized_output_never_changes_the_store(ws):
    sci = ws(PIPELINE)
    sci.build()
    before = {p: p.read_bytes() for p in (ws.root / "cas" / "blobs").rglob("*") if p.is_file()}
    with open(ws.root / "work/clean.txt", "r+b") as fh:  # in place, as root could
        fh.write(b"X")
    after = {p: p.read_bytes() for p in (ws.root / "cas" / "blobs").rglob("*") if p.is_file()}
    assert before == after
    sci("fsck")


def test_targets_build_only_their_closure(ws):
    sci = ws(PIPELINE)
    out = sci.build("stats")
    assert out["executed"] == ["prep", "stats"]
    out = sci.build("work/side.txt")
    assert out["executed"] == ["side"]
    assert sci.build("report")["executed"] == ["report"]


def test_force_reruns_a_cached_node(ws):
    sci = ws(PIPELINE)
    sci.build()
    assert sci.build("--force", "side")["executed"] == ["side"]


def test_failed_node_stops_only_its_dependants_with_keep_going(ws):
    files = dict(PIPELINE)
    files["scripts/prep.py"] = "import sys\nprint('boom on stderr', file=sys.stderr)\nsys.exit(3)\n"
    sci = ws(files)
    out = sci.build("--keep-going", "-j", "1", check=1)
    assert out["failed"] == ["prep"]
    assert out["skipped"] == ["report", "stats"]
    assert out["executed"] == ["side"]
    assert "boom on stderr" in out["stderr"] and "prep" in out["stderr"]
    assert no_traceback(out["stderr"])


def test_missing_declared_output_fails_the_node(ws):
    files = dict(PIPELINE)
    files["scripts/prep.py"] = "print('forgot to write')\n"
    sci = ws(files)
    out = sci.build("prep", check=1)
    assert out["failed"] == ["prep"]
    assert "did not produce its declared output work/clean.txt" in out["stderr"]


def test_manifests_of_two_identical_builds_differ_only_in_volatile(ws):
    sci = ws(PIPELINE)
    sci.build()
    a = sci.build()
    b = sci.build()
    ma = json.loads((ws.root / "runs" / a["run_id"] / "manifest.json").read_text())
    mb = json.loads((ws.root / "runs" / b["run_id"] / "manifest.json").read_text())
    assert ma["volatile"]["run_id"] != mb["volatile"]["run_id"]
    ma.pop("volatile"), mb.pop("volatile")
    assert ma == mb
    assert [p["status"] for p in ma["plan"]] == ["cached"] * 4
    raw = (ws.root / "runs" / a["run_id"] / "manifest.json").read_bytes()
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    logs = (ws.root / "runs" / a["run_id"] / "logs.jsonl").read_text().splitlines()
    events = [json.loads(l) for l in logs]
    assert {"time", "level", "node", "event", "data"} <= set(events[0])


def test_step_result_is_recorded_as_the_action_result(ws):
    sci = ws(PIPELINE)
    out = sci.build()
    key = next(n["key"] for n in out["nodes"] if n["node"] == "report")
    rec = Store(ws.root / "cas", create=False).get_action(key)
    assert rec["key"] == key and rec["node"] == "report" and rec["exit_status"] == 0
    assert rec["metrics"] == {"mean": 4.0}
    assert set(rec["components"]["code"]) == {"steps/__init__.py", "steps/helpers.py", "steps/report.py"}
    assert rec["components"]["params"] == {"report": {"title": "Numbers"}}
    assert rec["outputs"]["out"]["path"] == "results/report.txt"
    assert {"start", "end", "duration_s", "host"} <= set(rec["volatile"])
    assert (ws.root / "cas" / "blobs" / rec["stdout"][:2] / rec["stdout"]).exists()


def test_status_names_what_changed(ws):
    sci = ws(PIPELINE)
    proc = sci("status", "--json")
    rows = {r["node"]: r for r in json.loads(proc.stdout)["nodes"]}
    assert rows["prep"]["reasons"] == ["never built"]
    assert rows["stats"]["state"] == "waits" and rows["stats"]["waits_on"] == ["prep"]
    sci.build()
    (ws.root / "params.yaml").write_text((ws.root / "params.yaml").read_text().replace("digits: 3", "digits: 4"))
    (ws.root / "other.txt").write_text("bye\n")
    (ws.root / "scripts/prep.py").write_text((ws.root / "scripts/prep.py").read_text() + "\n")
    rows = {r["node"]: r for r in json.loads(sci("status", "--json").stdout)["nodes"]}
    assert rows["stats"]["state"] == "waits"
    assert rows["prep"]["reasons"] == ["code changed: scripts/prep.py"]
    assert rows["side"]["reasons"] == ["dep changed: other.txt"]
    rows = {r["node"]: r for r in json.loads(sci("status", "--json", "stats").stdout)["nodes"]}
    sci.build("prep")
    rows = {r["node"]: r for r in json.loads(sci("status", "--json").stdout)["nodes"]}
    assert rows["stats"]["reasons"] == ["params changed: stats.digits: 3 → 4"]
    text = sci("status").stdout
    assert "would run   stats: params changed: stats.digits: 3 → 4" in text


def test_dag_formats(ws):
    sci = ws(PIPELINE)
    text = sci("dag").stdout
    assert "stats  <- prep" in text
    dot = sci("dag", "--format", "dot").stdout
    assert '"prep" -> "stats";' in dot
    mer = sci("dag", "--format", "mermaid").stdout
    assert mer.startswith("graph LR") and "-->" in mer
    data = json.loads(sci("dag", "--format", "json").stdout)
    assert ["stats", "report"] in data["edges"]


def test_shared_store_via_sci_cas(ws, tmp_path):
    store = tmp_path / "shared-store"
    sci = ws(PIPELINE, env={"SCI_CAS": str(store)})
    sci.build()
    assert (store / "FORMAT").exists() and not (ws.root / "cas").exists()
    other = tmp_path / "clone"
    import shutil

    shutil.copytree(ws.root, other, ignore=shutil.ignore_patterns(".sci", "runs", "work", "results"))
    from conftest import Sci

    clone = Sci(other, env={"SCI_CAS": str(store)})
    out = clone.build()
    assert out["executed"] == [] and (other / "results/report.txt").exists()


def test_dry_run_runs_nothing(ws):
    sci = ws(PIPELINE)
    proc = sci("build", "--dry-run")
    assert "would run   prep: never built" in proc.stdout
    assert not (ws.root / "work").exists() and not (ws.root / "runs").exists()


def test_glob_deps_expand_over_declared_outputs_only(ws):
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              make:
                foreach: {n: [1, 2]}
                cmd: echo {item.n} > {outs}
                outs: ["parts/p{item.n}.txt"]
              join:
                cmd: cat {deps} > {outs}
                deps: ["parts/*.txt"]
                outs: [joined.txt]
            """,
        "parts/p9.txt": "stale\n",
    })
    sci.build()
    assert (ws.root / "joined.txt").read_text() == "1\n2\n"


def test_no_op_fast_path_notices_a_file_added_to_a_directory_dep(ws):
    """The stat-only no-op (.sci/noop) must fall back when a directory dep gains a file."""
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              count:
                cmd: ls {deps} | wc -l > {outs}
                deps: [inputs]
                outs: [count.txt]
            """,
        "inputs/a.txt": "a\n",
    })
    assert sci.build()["executed"] == ["count"]
    assert sci.build()["executed"] == []
    assert (ws.root / ".sci" / "noop").exists()
    (ws.root / "inputs" / "b.txt").write_text("b\n")
    assert sci.build()["executed"] == ["count"]
    assert (ws.root / "count.txt").read_text().strip() == "2"
    (ws.root / "extra_module.py").write_text("x = 1\n")  # beside nothing we read: still a no-op
    assert sci.build()["executed"] == []


def test_steps_run_where_they_should_even_under_an_awkward_path(tmp_path):
    """cmd steps are started with posix_spawn, which has no working directory: the shell is told
    to change into the sandbox first, so the path must survive shell quoting."""
    from conftest import Sci, write

    root = tmp_path / "my ws $HOME 'q'"
    root.mkdir()
    write(root, {"sci.yaml": """
        version: 1
        steps:
          boxed:
            cmd: pwd > {outs}
            outs: [boxed.txt]
          here:
            cmd: pwd > {outs}
            outs: [here.txt]
            sandbox: false
          killed:
            cmd: kill -9 $$
            outs: [never.txt]
          failing:
            cmd: echo why >&2; exit 3
            outs: [never2.txt]
        """})
    out = Sci(root).build("--keep-going", check=1)
    assert out["executed"] == ["boxed", "here"]
    assert (root / "here.txt").read_text() == f"{root}\n"
    assert (root / "boxed.txt").read_text().startswith(f"{Workspace(root).scratch_dir}/n-")  # outside the workspace
    assert "killed: killed by signal 9" in out["stderr"] and "failing: exited with status 3" in out["stderr"]


def test_a_build_through_the_api_leaves_the_collector_as_it_found_it(ws):
    """api.build turns the cycle collector off while it reads its state files, freezes the loaded
    plan, and undoes both at the end, also on the no-op shortcut's way out; a program that froze
    objects or turned the collector off itself keeps its own policy."""
    import gc

    from sci import api
    from sci.workspace import Workspace

    ws({"sci.yaml": "version: 1\nsteps:\n  a:\n    cmd: echo hi > {outs}\n    outs: [a.txt]\n"})
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    api.build(Workspace(ws.root))
    assert gc.get_freeze_count() == 0 and gc.isenabled()  # off while the state files were read, on again
    api.build(Workspace(ws.root))  # the no-op shortcut's way out, too
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    gc.disable()  # a program that turned it off keeps it off
    try:
        api.build(Workspace(ws.root))
        assert not gc.isenabled()
    finally:
        gc.enable()
    (ws.root / "sci.yaml").write_text("version: 1\nsteps:\n  a:\n    cmd: echo ho > {outs}\n    outs: [a.txt]\n")
    keep = [[i] for i in range(100)]  # the program's own objects, frozen by it
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert api.build(Workspace(ws.root)).ok
        assert gc.get_freeze_count() > frozen // 2  # not thawed (a few frozen objects died meanwhile)
    finally:
        gc.unfreeze()
    assert (ws.root / "a.txt").read_text() == "ho\n" and keep
