"""Experiments through the CLI: metrics from any step, `sci runs`, `sci metrics`, `sci diff`.

The pipeline: a sweep whose items are declared out of string order, so a table that sorted
them as text would show it:

    sim[n=10] ─┐
    sim[n=2]  ─┼─> total          (fn step: ctx.metrics and a YAML metrics file)
    sim[n=1]  ─┘
    table                         (cmd step: a CSV metrics file)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import no_traceback
from sci.errors import SciError
from sci.records import metrics as metrics_mod
from sci.records.history import list_runs
from sci.records.index import read_index
from sci.workspace import Workspace

PIPELINE = """
version: 1
defaults: {seed: 7}
params: params.yaml
steps:
  sim:
    foreach: {n: [10, 2, 1]}
    cmd: python sim.py {item.n} {params.sim.scale} {outs.samples} {outs.score}
    code: [sim.py]
    params: [sim]                    # a mapping: its leaves are columns, and named in diff
    outs: {samples: "data/sim-{item.n}.txt"}
    metrics: {score: "data/score-{item.n}.json"}
  total:
    fn: steps:total
    deps: {samples: "data/sim-*.txt"}
    params: [total.offset]
    outs: {sum: results/total.txt}
    metrics: [results/total-metrics.yaml]
  table:
    cmd: printf 'rows,share,done\\n3,0.25,true\\n' > {outs.csv}
    metrics: {csv: results/table.csv}
"""

SIM = """
import json, sys
n, scale, samples, score = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
open(samples, "w").write(f"{n * scale}\\n")
json.dump({"loss": {"train": n * scale, "val": n * scale + 0.5}, "converged": n < 5, "n": n}, open(score, "w"))
"""

STEPS = """
from pathlib import Path

def total(ctx):
    values = [float(p.read_text()) for p in ctx.deps["samples"]]
    total = sum(values) + ctx.params["total.offset"]
    ctx.outs["sum"].write_text(f"{total}\\n")
    ctx.metrics["total"] = total
    ctx.metrics["files"] = {"count": len(values)}
    Path("results/total-metrics.yaml").write_text(f"mean: {total / len(values)}\\nspread:\\n  max: {max(values)}\\n")
"""


def files(scale: float = 1.5, offset: float = 0.0) -> dict[str, str]:
    return {"sci.yaml": PIPELINE, "sim.py": SIM, "steps.py": STEPS,
            "params.yaml": f"sim:\n  scale: {scale}\ntotal:\n  offset: {offset}\n"}


def metrics_json(sci, *args: str) -> dict:
    out = json.loads(sci("metrics", "--format", "json", *args).stdout)
    return {"columns": [c["name"] for c in out["columns"]], "kinds": {c["name"]: c["kind"] for c in out["columns"]},
            "rows": out["rows"]}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file under the store and runs/ with its size and mtime (what a write changes)."""
    out = {}
    for top in ("cas", "runs"):
        for dirpath, dirs, names in os.walk(root / top):
            for name in dirs + names:
                p = Path(dirpath) / name
                st = p.stat()
                out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def built(ws):
    sci = ws(files())
    sci.build()
    return sci


# -- metrics from any step -------------------------------------------------------------------

def test_metrics_files_of_each_format_are_recorded(built):
    """JSON (nested keys joined with '.'), YAML and CSV metrics, and ctx.metrics beside a file."""
    root = built.root
    run = json.loads(built("runs", "--json").stdout)["runs"][0]["run"]
    manifest = json.loads((root / "runs" / run / "manifest.json").read_text())
    by_node = {e["node"]: e for e in manifest["plan"]}
    assert by_node["sim[n=2]"]["metrics"] == {"loss.train": 3.0, "loss.val": 3.5, "converged": True, "n": 2}
    assert by_node["table"]["metrics"] == {"rows": 3, "share": 0.25, "done": True}
    assert by_node["total"]["metrics"] == {"total": 19.5, "files.count": 3, "mean": 6.5, "spread.max": 15.0}
    # the metrics files are outputs too, recorded with their digests
    assert by_node["sim[n=2]"]["outputs"]["score"]["path"] == "data/score-2.json"
    assert by_node["total"]["outputs"]["results/total-metrics.yaml"]["path"] == "results/total-metrics.yaml"
    # and the StepResult in the store holds the same numbers
    key = by_node["table"]["key"]
    from sci.store.cas import Store

    assert Store(root / "cas", create=False).get_action(key)["metrics"] == {"rows": 3, "share": 0.25, "done": True}


def test_a_cached_node_keeps_its_metrics_in_the_next_manifest(built):
    """A no-op build and a parameter edit take cached nodes' metrics from their results."""
    out = built.build()
    assert out["executed"] == []
    built.root.joinpath("params.yaml").write_text("sim:\n  scale: 1.5\ntotal:\n  offset: 1.0\n")
    out = built.build()
    assert out["executed"] == ["total"]
    for run in json.loads(built("runs", "--json").stdout)["runs"][:2]:
        manifest = json.loads((built.root / "runs" / run["run"] / "manifest.json").read_text())
        plan = {e["node"]: e for e in manifest["plan"]}
        assert plan["sim[n=10]"]["metrics"]["loss.train"] == 15.0
        assert plan["table"]["metrics"]["rows"] == 3


def test_a_sweep_of_three_items_gives_three_rows_in_declaration_order(built):
    table = metrics_json(built, "sim")
    assert [r["node"] for r in table["rows"]] == ["sim[n=10]", "sim[n=2]", "sim[n=1]"]  # never string order
    assert table["columns"] == ["node", "n", "sim.scale", "converged", "loss.train", "loss.val", "metric:n"]
    assert table["kinds"]["n"] == "item" and table["kinds"]["sim.scale"] == "param"
    assert [(r["n"], r["loss.train"], r["loss.val"], r["converged"]) for r in table["rows"]] == [
        (10, 15.0, 15.5, False), (2, 3.0, 3.5, True), (1, 1.5, 2.0, True)]
    text = built("metrics", "sim").stdout.splitlines()
    assert text[0].split() == ["node", "n", "sim.scale", "converged", "loss.train", "loss.val", "metric:n"]
    assert text[1].split() == ["sim[n=10]", "10", "1.5", "false", "15", "15.5", "10"]


def test_metrics_formats_sort_and_only_changed(built):
    csv_text = built("metrics", "sim", "--format", "csv", "--only-changed", "--sort", "loss.val").stdout
    assert csv_text.splitlines() == [
        "node,n,converged,loss.train,loss.val,metric:n",  # sim.scale is the same in every row
        "sim[n=1],1,true,1.5,2.0,1",
        "sim[n=2],2,true,3.0,3.5,2",
        "sim[n=10],10,false,15.0,15.5,10"]
    md = built("metrics", "sim", "--format", "md", "--sort=-loss.train").stdout.splitlines()
    assert md[0] == "| node | n | sim.scale | converged | loss.train | loss.val | metric:n |"
    assert md[1].startswith("| --- | ---: |") and md[2].startswith("| sim[n=10] |")
    bad = built("metrics", "--sort", "accuracy", check=2)
    assert "--sort 'accuracy' is not a metric" in bad.stderr and no_traceback(bad.stderr)


def test_metrics_of_every_node_and_of_a_step_given_as_an_output_path(built):
    table = metrics_json(built)
    assert [r["node"] for r in table["rows"]] == ["sim[n=10]", "sim[n=2]", "sim[n=1]", "total", "table"]
    assert metrics_json(built, "results/table.csv")["rows"] == [{"node": "table", "done": True, "rows": 3,
                                                                "share": 0.25}]


# -- runs, metrics per run, diff ---------------------------------------------------------------

def test_runs_lists_newest_first_with_overrides_counts_and_headline(built):
    built.build("--set", "sim.scale=2")
    out = json.loads(built("runs", "--json").stdout)
    assert out["total"] == 2
    newest, oldest = out["runs"]
    assert newest["run"] > oldest["run"]
    assert newest["overrides"] == ["sim.scale=2"] and oldest["overrides"] == []
    assert oldest["counts"] == {"executed": 5, "cached": 0, "failed": 0, "skipped": 0}
    assert newest["counts"]["executed"] == 4 and newest["counts"]["cached"] == 1  # table reads no parameter
    # the last node in plan order with metrics (table: table and total tie, total is declared first)
    assert newest["headline"] == {"done": True, "rows": 3, "share": 0.25}
    text = built("runs", "-n", "1")
    lines = text.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith(newest["run"]) and "--set sim.scale=2" in lines[1]
    assert "1 of 2 runs shown" in text.stderr


def test_metrics_per_run(built):
    built.build("--set", "sim.scale=2")
    runs = [r["run"] for r in json.loads(built("runs", "--json").stdout)["runs"]]
    table = metrics_json(built, "sim[n=2]", "--all-runs")
    assert [r["run"] for r in table["rows"]] == runs
    assert [(r["set"], r["sim.scale"], r["loss.train"]) for r in table["rows"]] == [("sim.scale=2", 2, 4.0),
                                                                                    ("", 1.5, 3.0)]
    assert "total.offset" not in table["columns"]  # only what the selected nodes declare
    two = metrics_json(built, "sim", "--runs", runs[1].split("-")[0], "--runs", "~0", "--only-changed")
    assert [r["run"] for r in two["rows"]] == [runs[1], runs[0]]
    assert two["columns"] == ["run", "set", "sim.scale", "sim[n=10]:loss.train", "sim[n=10]:loss.val",
                              "sim[n=2]:loss.train", "sim[n=2]:loss.val", "sim[n=1]:loss.train", "sim[n=1]:loss.val"]
    unknown = built("metrics", "--runs", "nope", check=2)
    assert "no recorded run 'nope'" in unknown.stderr
    built.build("sim[n=1]", "--set", "sim.scale=3")  # a run of one node: its metrics, no others
    rows = metrics_json(built, "--all-runs")["rows"]
    assert [(r.get("sim[n=1]:loss.train"), r.get("sim[n=2]:loss.train"), r.get("table:rows")) for r in rows] == [
        (3.0, None, None), (2.0, 4.0, 3), (1.5, 3.0, 3)]


def test_diff_after_an_edit_names_the_param_the_nodes_that_reran_and_the_metric_delta(built):
    built.root.joinpath("params.yaml").write_text("sim:\n  scale: 2.0\ntotal:\n  offset: 0.0\n")
    built.build()
    out = json.loads(built("diff", "--json").stdout)
    assert out["params"] == [{"key": "sim.scale", "change": "changed", "old": 1.5, "new": 2.0}]
    reran = {n["node"]: n for n in out["nodes"]}
    assert set(reran) == {"sim[n=10]", "sim[n=2]", "sim[n=1]", "total"}
    assert all(n["status_b"] == "executed" for n in reran.values())
    assert "params changed: sim.scale: 1.5 → 2.0" in reran["sim[n=2]"]["reasons"]
    assert "dep changed: data/sim-2.txt" in reran["total"]["reasons"]
    delta = {(m["node"], m["metric"]): m for m in out["metrics"]}
    assert delta[("sim[n=2]", "loss.train")] == {"node": "sim[n=2]", "metric": "loss.train", "old": 3.0, "new": 4.0,
                                                 "delta": 1.0, "relative": pytest.approx(1 / 3)}
    assert ("table", "rows") not in delta and out["environment"] == []
    assert {o["path"] for o in out["outputs"]} >= {"data/sim-2.txt", "results/total.txt"}
    text = built("diff").stdout.splitlines()
    assert text[0].endswith("changed: 1 parameter, 4 nodes (4 re-ran), 8 outputs, 9 metrics")
    assert "  sim.scale: 1.5 → 2" in text
    assert any(line.startswith("  sim[n=2]: loss.train: 3 → 4  (+1, +33.33%)") for line in text)


def test_diff_of_a_run_with_itself_and_with_too_few_runs(built):
    lone = built("diff", check=2)
    assert "needs two recorded builds; 1 found" in lone.stderr and no_traceback(lone.stderr)
    same = built("diff", "~0", "~0").stdout.splitlines()
    assert same[0].endswith("no differences")


def test_runs_metrics_and_diff_run_nothing(built):
    built.root.joinpath("params.yaml").write_text("sim:\n  scale: 3\ntotal:\n  offset: 0.0\n")
    built.build()
    before = snapshot(built.root)
    for args in (("runs",), ("runs", "--json"), ("metrics",), ("metrics", "--all-runs"), ("metrics", "--runs", "~1"),
                 ("diff",), ("diff", "--json")):
        built(*args)
    assert snapshot(built.root) == before


def test_the_runs_index_is_only_a_cache(built):
    """Readers keep the index (a journal in .sci/); deleted or damaged, it gives way to the
    manifests and is written again; a deleted run is not listed; a build never writes it."""
    built.build("--set", "sim.scale=2")
    index = built.root / ".sci" / "runs"
    assert not index.exists()  # builds do not keep it: the first reader does
    first = built("runs", "--json").stdout
    found = read_index(index, detail=True)
    assert found.end == index.stat().st_size and found.frames == 2
    newest, older = (r["run"] for r in json.loads(first)["runs"])
    assert found.lines[older]["counts"]["executed"] == 5
    assert found.lines[older]["params"] == {"sim": {"scale": 1.5}, "total": {"offset": 0.0}}
    assert read_index(index).lines[older].keys() & {"metrics", "params"} == set()  # the first half only
    built.build("--set", "sim.scale=3")
    third = built("runs", "--json").stdout
    assert read_index(index).frames == 3  # the new run's frame appended
    saved = index.read_bytes()
    for damage in (b"", b"garbage", saved[:-7], saved[:-40] + bytes([saved[-40] ^ 1]) + saved[-39:]):
        index.write_bytes(damage)
        assert built("runs", "--json").stdout == third
        assert read_index(index).frames == 3 and read_index(index).end == index.stat().st_size  # written again
    index.unlink()
    index.mkdir()  # a directory in its place: replaced
    assert built("runs", "--json").stdout == third and read_index(index).frames == 3
    index.unlink()
    rows = metrics_json(built, "sim[n=2]", "--all-runs")["rows"]
    assert [r["loss.train"] for r in rows] == [6.0, 4.0, 3.0]
    import shutil

    shutil.rmtree(built.root / "runs" / newest)
    assert newest not in [r["run"] for r in json.loads(built("runs", "--json").stdout)["runs"]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_index_is_never_believed(built, data):
    """Any flipped byte of the index (a metric's digit included): the runs read are the
    manifests' own, never a wrong value."""
    ws = Workspace(built.root)
    truth = list_runs(ws, detail=True)  # the first read writes the index
    saved = ws.runs_index.read_bytes()
    at = data.draw(st.integers(0, len(saved) - 1))
    bit = data.draw(st.integers(0, 7))
    ws.runs_index.write_bytes(saved[:at] + bytes([saved[at] ^ (1 << bit)]) + saved[at + 1:])
    assert list_runs(ws, detail=True) == truth
    again = read_index(ws.runs_index, detail=True)  # written whole again from the manifests
    assert again.end == ws.runs_index.stat().st_size and list(again.lines.values()) == truth


def test_secret_looking_parameters_are_redacted_in_the_manifest(ws):
    sci = ws({**files(), "params.yaml": "sim:\n  scale: 1.5\ntotal:\n  offset: 0.0\napi:\n  token: hunter2\n"})
    out = sci.build()
    manifest = (sci.root / "runs" / out["run_id"] / "manifest.json").read_text()
    assert json.loads(manifest)["params"]["api"] == {"token": "<redacted>"} and "hunter2" not in manifest


# -- bad metrics -------------------------------------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    ('{"acc": "high"}', "metric 'acc' is the text 'high', not a number"),
    ('{"acc": null}', "metric 'acc' is null, not a number"),
    ('{"acc": NaN}', "not valid JSON"),
    ('{"acc": [1, 2]}', "metric 'acc' is a list, not a number"),
    ('[1, 2]', "holds a list, not a mapping"),
    ('{"acc": ', "not valid JSON"),
])
def test_a_malformed_metrics_file_fails_its_step_with_one_line(ws, content, expected):
    sci = ws({"sci.yaml": "version: 1\nsteps:\n  s:\n    cmd: cat m.src > {outs.m}\n    deps: [m.src]\n"
                          "    metrics: {m: out/m.json}\n", "m.src": content})
    proc = sci("build", check=1)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sci: error:")]
    assert len(errors) == 1 and "metrics file out/m.json" in errors[0] and expected in errors[0], proc.stderr
    assert no_traceback(proc.stderr)
    assert json.loads(sci("runs", "--json").stdout)["runs"][0]["counts"]["failed"] == 1


def test_a_bad_csv_and_a_bad_ctx_metric_fail_their_steps(ws):
    sci = ws({"sci.yaml": "version: 1\nsteps:\n  c:\n    cmd: printf 'a,b\\n1,2\\n3,4\\n' > {outs.m}\n"
                          "    metrics: {m: m.csv}\n  f:\n    fn: bad:step\n    outs: [f.txt]\n",
              "bad.py": "def step(ctx):\n    open('f.txt', 'w').write('x')\n    ctx.metrics['score'] = float('nan')\n"})
    proc = sci("build", "-k", check=1)
    assert "c: metrics file m.csv: a CSV metrics file has a header and one row, not 3" in proc.stderr
    assert "f: metrics of f (ctx.metrics): metric 'score' is nan, which no record can hold" in proc.stderr
    assert no_traceback(proc.stderr)


@pytest.mark.parametrize("step, expected", [
    ("    cmd: x > {outs}\n    outs: {m: a.json}\n    metrics: {m: b.json}\n", "the name 'm' is both an output"),
    ("    cmd: x > {outs}\n    outs: [a.json]\n    metrics: [a.json]\n", "metrics file 'a.json' is also declared"),
    ("    cmd: x > {outs}\n    metrics: ['m-*.json']\n", "metrics file 'm-*.json' is a glob"),
    ("    cmd: x > {outs}\n    metrics: [../m.json]\n", "escapes the workspace"),
])
def test_metrics_declarations_are_checked_before_anything_runs(ws, step, expected):
    sci = ws({"sci.yaml": "version: 1\nsteps:\n  s:\n" + step})
    proc = sci("build", check=2)
    assert expected in proc.stderr and "sci.yaml:" in proc.stderr and no_traceback(proc.stderr)
    assert not (sci.root / "runs").exists()


def test_a_dossier_step_takes_no_metrics(ws):
    sci = ws({"sci.yaml": "version: 1\nexperiment: {title: t, question: q, authors: [{name: A}], license: MIT}\n"
                          "steps:\n  d:\n    kind: dossier\n    outs: [dossier/]\n    metrics: [m.json]\n"})
    proc = sci("build", check=2)
    assert "a dossier step has no metrics" in proc.stderr and no_traceback(proc.stderr)


# -- the reader, property-based ------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
numbers = st.one_of(st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False))
nested = st.recursive(numbers, lambda inner: st.dictionaries(names, inner, min_size=1, max_size=3), max_leaves=10)


def leaves(doc: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in doc.items():
        out.update(leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(names, nested, min_size=1, max_size=4))
def test_json_and_yaml_metrics_read_back_flattened(tmp_path, doc):
    expected = leaves(doc)
    if len(expected) != len({k for k in expected}):  # pragma: no cover - names cannot collide here
        return
    (tmp_path / "m.json").write_text(json.dumps(doc))
    assert metrics_mod.read_file(str(tmp_path / "m.json")) == expected
    from ruamel.yaml import YAML

    with open(tmp_path / "m.yaml", "w") as fh:
        YAML(typ="safe", pure=True).dump(doc, fh)
    read = metrics_mod.read_file(str(tmp_path / "m.yaml"))
    assert read.keys() == expected.keys()
    for k, v in expected.items():
        assert type(read[k]) is type(v) and (read[k] == v or math.isclose(read[k], v))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=st.dictionaries(names, numbers, min_size=1, max_size=6))
def test_csv_metrics_read_back(tmp_path, row):
    def cell(v):
        return ("true" if v else "false") if isinstance(v, bool) else repr(v)

    (tmp_path / "m.csv").write_text(",".join(row) + "\n" + ",".join(cell(v) for v in row.values()) + "\n")
    assert metrics_mod.read_file(str(tmp_path / "m.csv")) == row


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=64), suffix=st.sampled_from([".json", ".yaml", ".csv", ".txt"]))
def test_any_bytes_give_numbers_or_one_clear_error(tmp_path, data, suffix):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(data)
    try:
        got = metrics_mod.read_file(str(path), f"m{suffix}")
    except SciError as exc:
        assert exc.exit_code == 1 and f"m{suffix}" in exc.one_line() and "\n" not in exc.message
        return
    assert all(isinstance(v, bool | int | float) for v in got.values())


@given(values=st.lists(st.one_of(st.floats(allow_nan=False), st.integers(), st.booleans(), st.none()), max_size=40),
       floats=st.lists(st.floats(allow_nan=False), min_size=1, max_size=40))
def test_a_column_is_formatted_as_its_cells_are(values, floats):
    """The table formats a column at once (all floats: one %-format); each cell reads as alone."""
    from sci.records.table import _TEXT, _column, text

    for column in (values, floats):
        assert _column(column, _TEXT) == [text(v) for v in column]
