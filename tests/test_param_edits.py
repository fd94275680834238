"""Parameter edits take a short path (replan.py patches the plan, noop.unchanged_nodes skips the
keying of untouched nodes); these tests check it re-runs exactly what a full plan would."""

from __future__ import annotations

import json

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from sci import canonical
from sci.spec import params as params_mod
from sci.plan import replan

PIPELINE = {
    "sci.yaml": """
        version: 1
        params: params.yaml
        steps:
          a:
            cmd: echo {params.x} > {outs}
            params: [x]
            outs: [a.txt]
          sign:
            cmd: "if [ {params.x} -gt 0 ]; then echo pos; else echo neg; fi > {outs}"
            outs: [sign.txt]
          after_sign:
            cmd: cat {deps} > {outs}
            deps: [sign.txt]
            outs: [after_sign.txt]
          b:
            cmd: echo {params.y} > {outs}
            outs: [b.txt]
          named:
            cmd: echo hi > {outs}
            outs: ["out/{params.name}.txt"]
          after_a:
            cmd: cat {deps} > {outs}
            deps: [a.txt, src.txt]
            outs: [after_a.txt]
          sweep:
            foreach:
              i: [1, 2]
            cmd: echo {item.i} {params.z.k} > {outs}
            outs: ["sweep/{item.i}.txt"]
        """,
    "params.yaml": """
        x: 1
        y: 2
        name: first
        z:
          k: 3
        unused: 0
        """,
    "src.txt": "source\n",
}
ALL = ["a", "after_a", "after_sign", "b", "named", "sign", "sweep[i=1]", "sweep[i=2]"]


def edit(root, old: str, new: str) -> None:
    p = root / "params.yaml"
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new))


def last_log(root) -> list[dict]:
    run = sorted((root / "runs").iterdir())[-1]
    return [json.loads(line) for line in (run / "logs.jsonl").read_text().splitlines()]


@pytest.mark.shortcut_mechanics
def test_an_edit_reruns_exactly_the_readers_and_proves_the_rest_unchanged(ws):
    sci = ws(PIPELINE)
    assert sci.build()["executed"] == ALL
    edit(ws.root, "y: 2", "y: 5")
    out = sci.build()
    assert out["executed"] == ["b"]
    assert (ws.root / "b.txt").read_text() == "5\n"
    unchanged = [e for e in last_log(ws.root) if e["event"] == "unchanged"]
    assert unchanged and unchanged[0]["data"]["nodes"] == len(ALL) - 1


def test_an_edit_reaches_downstream_nodes_through_their_inputs(ws):
    sci = ws(PIPELINE)
    sci.build()
    edit(ws.root, "x: 1", "x: 7")
    out = sci.build()
    # a's bytes changed, so after_a runs; sign still says "pos", so after_sign is cut off early
    assert out["executed"] == ["a", "after_a", "sign"]
    assert "after_sign" in out["cached"]
    assert (ws.root / "after_a.txt").read_text() == "7\nsource\n"
    edit(ws.root, "x: 7", "x: -1")
    assert sci.build()["executed"] == ["a", "after_a", "after_sign", "sign"]
    assert (ws.root / "after_sign.txt").read_text() == "neg\n"


def test_an_edit_of_a_value_in_a_path_plans_again(ws):
    sci = ws(PIPELINE)
    sci.build()
    edit(ws.root, "name: first", "name: second")
    assert sci.build()["executed"] == ["named"]
    assert (ws.root / "out/second.txt").read_text() == "hi\n"
    edit(ws.root, "name: second", "name: first")
    assert sci.build()["executed"] == []  # back to the stored result


@pytest.mark.parametrize("bad", [".inf", "-.inf", ".nan", "1e999"])
def test_an_edit_to_a_number_no_key_can_hold_is_refused_at_its_line(ws, bad):
    """The parameter-edit path (replan.patch) meets the value first: it gives way to planning
    whole, which names the key and its line (exit 2), not an internal error (exit 3)."""
    sci = ws(PIPELINE)
    sci.build()
    edit(ws.root, "  k: 3", f"  k: {bad}")
    res = sci("build", check=2)
    assert "params.yaml:5:" in res.stderr and "parameter z.k is" in res.stderr and "not a finite number" in res.stderr, \
        res.stderr
    edit(ws.root, f"  k: {bad}", "  k: 3")
    assert sci.build()["executed"] == []  # nothing was recorded by the refused build


def test_foreach_nodes_of_a_step_that_reads_the_edited_key_all_rerun(ws):
    sci = ws(PIPELINE)
    sci.build()
    edit(ws.root, "  k: 3", "  k: 4")
    assert sci.build()["executed"] == ["sweep[i=1]", "sweep[i=2]"]
    assert (ws.root / "sweep/2.txt").read_text() == "2 4\n"
    edit(ws.root, "z:\n  k: 4", "z: {k: 4, extra: 1}")  # a sibling key added under z
    assert sci.build()["executed"] == []


def test_unread_keys_added_removed_or_changed_run_nothing(ws):
    sci = ws(PIPELINE)
    sci.build()
    edit(ws.root, "unused: 0", "unused: 1\nbrand_new: [1, 2]")
    assert sci.build()["executed"] == []
    edit(ws.root, "unused: 1\n", "")
    assert sci.build()["executed"] == []


def test_a_value_of_another_type_is_a_change(ws):
    sci = ws(PIPELINE)
    sci.build()
    edit(ws.root, "y: 2", "y: 2.0")
    assert sci.build()["executed"] == ["b"]
    assert (ws.root / "b.txt").read_text() == "2.0\n"


def test_a_param_edit_and_a_file_edit_together(ws):
    sci = ws(PIPELINE)
    sci.build()
    edit(ws.root, "y: 2", "y: 3")
    (ws.root / "src.txt").write_text("changed\n")
    assert sci.build()["executed"] == ["after_a", "b"]
    assert (ws.root / "after_a.txt").read_text() == "1\nchanged\n"


def test_set_overrides_take_the_short_path_too(ws):
    sci = ws(PIPELINE)
    sci.build()
    assert sci.build("--set", "y=9")["executed"] == ["b"]
    assert (ws.root / "b.txt").read_text() == "9\n"
    assert sci.build()["executed"] == []
    assert (ws.root / "b.txt").read_text() == "2\n"


def test_status_after_an_edit_names_the_parameter(ws):
    sci = ws(PIPELINE)
    sci.build()
    edit(ws.root, "x: 1", "x: 2")
    rows = {r["node"]: r for r in json.loads(sci("status", "--json").stdout)["nodes"]}
    assert rows["a"]["state"] != "up to date"
    assert any("x: 1 → 2" in reason for reason in rows["a"]["reasons"])
    assert rows["b"]["state"] == "up to date"


# -- changed_keys, the part the short path's correctness rests on --------------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, 1.0, 2.5]),
                    st.sampled_from(["a", "b"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from("pqr"), inner, max_size=3)),
                      max_leaves=8)
mappings = st.dictionaries(st.sampled_from("xyz"), values, max_size=3)


def leaf_paths(value, prefix=""):
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in leaf_paths(v, f"{prefix}{k}.")]
    return [prefix[:-1]] if prefix else []


@settings(max_examples=400, deadline=None)
@given(mappings, mappings)
def test_changed_keys_cover_every_difference(old, new):
    changed = replan.changed_keys(old, new)
    assert (changed == []) == (canonical.dumps(old) == canonical.dumps(new))
    for path in set(leaf_paths(old)) | set(leaf_paths(new)):
        a = params_mod.lookup(old, path, default=KeyError)
        b = params_mod.lookup(new, path, default=KeyError)
        if a is KeyError or b is KeyError or canonical.dumps(a) != canonical.dumps(b):
            assert replan.affected_steps({"s": [path]}, changed) == {"s"}, (path, changed)


dotted = st.lists(st.sampled_from(["a", "b", "c", "0"]), min_size=1, max_size=3).map(".".join)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["s1", "s2", "s3", "s4"]), st.lists(dotted, max_size=3), max_size=4),
       st.lists(st.one_of(dotted, st.just("")), max_size=3))
def test_affected_steps_is_every_step_with_a_touching_read(step_reads, changed):
    def touches(read: str, change: str) -> bool:  # the rule, pair by pair
        return (not change or read == change or read.startswith(change + ".")
                or change.startswith(read + "."))

    brute = {s for s, reads in step_reads.items() if any(touches(r, c) for r in reads for c in changed)}
    assert replan.affected_steps(step_reads, changed) == brute


# -- from the last build's record: early cutoff, the updated record, the lazily read plan ----------
CHAIN = {
    "sci.yaml": """
        version: 1
        params: params.yaml
        steps:
          sign:
            cmd: "if [ {params.x} -gt 0 ]; then echo pos; else echo neg; fi > {outs}"
            outs: [sign.txt]
          c1:
            cmd: cat {deps} > {outs}
            deps: [sign.txt]
            outs: [c1.txt]
          c2:
            cmd: cat {deps} > {outs}
            deps: [c1.txt]
            outs: [c2.txt]
          other:
            cmd: echo {params.y} > {outs}
            outs: [other.txt]
        """,
    "params.yaml": "x: 1\ny: 1\n",
}


def events(root, name: str) -> list[dict]:
    return [e["data"] for e in last_log(root) if e["event"] == name]


@pytest.mark.shortcut_mechanics
def test_downstream_nodes_whose_inputs_come_out_as_recorded_are_taken_from_the_record(ws):
    sci = ws(CHAIN)
    sci.build()
    edit(ws.root, "x: 1", "x: 7")  # sign re-runs and still writes "pos"
    out = sci.build()
    assert out["executed"] == ["sign"] and out["cached"] == ["c1", "c2", "other"]
    # other: proven before the build; c1 and c2: once sign's output came out as recorded
    assert [e["nodes"] for e in events(ws.root, "unchanged")] == [1, 2]
    assert not any(e for e in last_log(ws.root) if e["event"] == "node_cached")  # one line, not one per node
    assert sci.build()["executed"] == []
    assert events(ws.root, "noop"), "the record updated after the edit must serve the next no-op"
    edit(ws.root, "x: 7", "x: -1")  # now sign's output changes: everything after it runs
    assert sci.build()["executed"] == ["c1", "c2", "sign"]
    assert (ws.root / "c2.txt").read_text() == "neg\n"


def test_the_record_updated_after_an_edit_equals_one_made_from_scratch(ws):
    from sci.build import noop

    def doc():
        return noop.read_record(ws.root / ".sci").doc

    sci = ws(CHAIN)
    sci.build()
    edit(ws.root, "x: 1", "x: -2")
    edit(ws.root, "y: 1", "y: 3")
    sci.build()
    updated = doc()
    (ws.root / ".sci" / noop.NOOP_FILE).unlink()
    assert sci.build()["executed"] == []  # keyed in full, found cached, recorded from scratch
    fresh = doc()
    for part in ("sigs", "globs", "params", "env", "env_spec"):
        assert updated[part] == fresh[part], part
    assert [dict(p, status=None) for p in updated["manifest"]["plan"]] == \
        [dict(p, status=None) for p in fresh["manifest"]["plan"]]
    assert set(fresh["actions"]) <= set(updated["actions"])


def test_an_output_edited_after_an_edit_build_is_noticed(ws):
    sci = ws(CHAIN)
    sci.build()
    edit(ws.root, "x: 1", "x: -1")
    sci.build()
    (ws.root / "c2.txt").write_text("tampered\n")  # written by this last build, recorded by the update
    (ws.root / "other.txt").write_text("tampered\n")  # taken from the old record unchanged
    assert sci.build()["executed"] == []
    assert (ws.root / "c2.txt").read_text() == "neg\n" and (ws.root / "other.txt").read_text() == "1\n"


def test_a_parameter_edit_decodes_only_the_nodes_it_replans(ws):
    from sci.plan.pipeline import load
    from sci.workspace import Workspace

    steps = "\n".join(f"  s{i}:\n    cmd: echo {{params.p.s{i}}} > {{outs}}\n    outs: [o{i}.txt]" for i in range(40))
    sci = ws({"sci.yaml": f"version: 1\nparams: params.yaml\nsteps:\n{steps}\n",
              "params.yaml": "p:\n" + "".join(f"  s{i}: 0\n" for i in range(40))})
    sci.build()
    edit(ws.root, "  s7: 0", "  s7: 1")
    loaded = load(Workspace(ws.root))
    assert loaded.graph.nodes["s7"].cmd == "echo 1 > o7.txt"
    assert loaded.graph.nodes.decoded() == 1  # s7 was re-planned: the stored one is decoded to compare
    assert loaded.graph.nodes["s8"].cmd == "echo 0 > o8.txt" and loaded.graph.nodes.decoded() == 2
    assert sci.build()["executed"] == ["s7"]


def test_a_damaged_plan_cache_is_planned_again(ws):
    sci = ws(CHAIN)
    sci.build()
    cache = ws.root / ".sci" / "plan.pickle"
    data = cache.read_bytes()
    for value, damaged in enumerate((data[: len(data) // 2], b"\0" * 64, data[:4] + b"garbage" + data[11:]), 2):
        cache.write_bytes(damaged)
        edit(ws.root, "y: 1", f"y: {value}")
        assert sci.build()["executed"] == ["other"]
        assert (ws.root / "other.txt").read_text() == f"{value}\n"
        edit(ws.root, f"y: {value}", "y: 1")
        assert sci.build()["executed"] == []
        assert (ws.root / "other.txt").read_text() == "1\n"


def test_an_edit_that_moves_an_output_another_step_reads_through_a_directory(ws):
    # gather reads the directory out/, which holds a's output only while dir is "out": moving it
    # changes the plan's edges although gather reads no parameter; what gather reads decides
    sci = ws({"sci.yaml": """
        version: 1
        params: params.yaml
        steps:
          a:
            cmd: echo a > {outs}
            outs: ["{params.dir}/a.txt"]
          b:
            cmd: echo b > {outs}
            outs: [out/b.txt]
          gather:
            cmd: cat out/*.txt > {outs}
            deps: [out]
            outs: [all.txt]
        """, "params.yaml": "dir: out\n"})
    sci.build()
    assert (ws.root / "all.txt").read_text() == "a\nb\n"
    edit(ws.root, "dir: out", "dir: elsewhere")
    assert sci.build()["executed"] == ["a"]  # out/a.txt stays, so gather's input is what it was
    assert (ws.root / "elsewhere/a.txt").read_text() == "a\n" and (ws.root / "all.txt").read_text() == "a\nb\n"
    (ws.root / "out" / "a.txt").unlink()  # a user tidying up the old output
    assert sci.build()["executed"] == ["gather"]
    assert (ws.root / "all.txt").read_text() == "b\n"
    edit(ws.root, "dir: elsewhere", "dir: out")
    assert sci.build()["executed"] == []  # a's output back in out/, gather's result too: both from the store
    assert (ws.root / "all.txt").read_text() == "a\nb\n"


def test_the_plan_shape_is_stable_and_changes_with_the_edges(ws):
    from sci.plan.pipeline import PLAN_CACHE, load
    from sci.workspace import Workspace

    ws(PIPELINE)
    workspace = Workspace(ws.root)
    first = load(workspace).graph.shape
    (ws.root / ".sci" / PLAN_CACHE).unlink()
    assert load(workspace).graph.shape == first  # planned again from scratch: the same shape
    edit(ws.root, "y: 2", "y: 3")
    assert load(workspace).graph.shape == first  # a value no path reads
    edit(ws.root, "name: first", "name: second")
    assert load(workspace).graph.shape != first  # an output moved


def test_an_edit_that_makes_a_path_escape_is_reported_at_its_line_in_sci_yaml(ws):
    """The patched plan's positions come from the plan cache, read only when a message needs
    them (plan_cache.LazyPositions): the error still names sci.yaml's line, in one line, exit 2."""
    sci = ws(PIPELINE)
    sci.build()
    edit(ws.root, "name: first", "name: ../../escaped")
    bad = sci("build", check=2)
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "escapes the workspace" in lines[0], bad.stderr
    assert "sci.yaml:" in lines[0]  # a location, from the lazily read positions
    edit(ws.root, "name: ../../escaped", "name: first")
    assert sci.build()["executed"] == []


def test_positions_read_lazily_pickle_as_plain_positions(ws):
    import pickle

    from sci.plan import cache as plan_cache
    from sci.spec.load import Positions

    sci = ws(PIPELINE)
    sci.build()
    _key, loaded = plan_cache.read(ws.root / ".sci" / "plan.pickle", "another key")
    assert isinstance(loaded.pos, plan_cache.LazyPositions)
    again = pickle.loads(pickle.dumps(loaded.pos))
    assert type(again) is Positions and again.file == loaded.pos.file == "sci.yaml"
    assert again.at(("steps", "b")).line == loaded.pos.at(("steps", "b")).line > 1


@pytest.mark.shortcut_mechanics
def test_an_edit_build_reports_every_node_through_the_python_api(ws):
    from sci import api
    from sci.records.run import NodeStatus
    from sci.workspace import Workspace

    sci = ws(PIPELINE)
    first = sci.build()
    keys = {n["node"]: n["key"] for n in first["nodes"]}
    edit(ws.root, "y: 2", "y: 5")
    seen = []
    report = api.build(Workspace(ws.root), emit=lambda event, node=None, **data: seen.append((event, node, data)))
    assert sorted(report.outcomes) == ALL and len(report.outcomes) == len(ALL)
    assert report.counts() == {"cached": len(ALL) - 1, "executed": 1, "failed": 0, "skipped": 0} and report.ok
    assert report.outcomes["b"].status is NodeStatus.EXECUTED and report.outcomes["b"].key != keys["b"]
    for name in set(ALL) - {"b"}:  # taken from the record: their recorded keys, made when asked for
        assert report.outcomes[name].status is NodeStatus.CACHED
        assert report.outcomes.get(name).key == keys[name]
    assert report.outcomes.get("nope") is None and "nope" not in report.outcomes
    # the display hears of the untouched nodes once, as the log does, not once per node
    assert [(e, d["nodes"]) for e, _n, d in seen if e == "unchanged"] == [("unchanged", len(ALL) - 1)]
    assert not [n for e, n, _d in seen if e == "node_cached"]
    assert [n for e, n, _d in seen if e == "node_executed"] == ["b"]
    assert seen[-1][0] == "build_finished" and seen[-1][2]["counts"] == report.counts()
    assert [n["node"] for n in report.to_json()["nodes"]] == report.order


DOSSIER = {
    "sci.yaml": """
        version: 1
        experiment: {title: T, question: Q, authors: [{name: A B}], license: MIT}
        params: params.yaml
        steps:
          a:
            cmd: echo {params.x} > {outs}
            outs: [a.txt]
          b:
            cmd: echo {params.y} > {outs}
            outs: [b.txt]
          report:
            kind: dossier
            steps: [a, b]
            evidence: [a.txt, b.txt]
            outs: [dossier/]
        """,
    "params.yaml": "x: 1\ny: 1\n",
}


def test_a_dossier_after_an_edit_indexes_the_untouched_steps_from_the_record(ws):
    sci = ws(DOSSIER)
    sci.build()
    edit(ws.root, "x: 1", "x: 2")
    out = sci.build()
    assert out["executed"] == ["a", "report"] and out["cached"] == ["b"]
    dossier = json.loads((ws.root / "dossier" / "dossier.json").read_text())
    # b's result is indexed although the build neither keyed nor ran b (it came from the record)
    assert sorted(dossier["lineage"]) == ["a.txt", "b.txt"]
    assert [n["components"]["definition"]["cmd"] for n in dossier["nodes"]] == ["echo 2 > a.txt", "echo 1 > b.txt"]
    # keyed in full from scratch, the dossier has the key the edit build gave it
    rows = {r["node"]: r["state"] for r in json.loads(sci("status", "--json").stdout)["nodes"]}
    assert rows == {"a": "up to date", "b": "up to date", "report": "up to date"}


@pytest.mark.shortcut_mechanics
def test_verbose_progress_names_the_untouched_nodes_in_one_line(ws):
    sci = ws(PIPELINE)
    sci.build()
    edit(ws.root, "y: 2", "y: 3")
    err = sci("build", "-v").stderr
    assert f"  cached    {len(ALL) - 1} nodes: only parameters changed" in err
    assert "  executed  b" in err and f"sci: {len(ALL) - 1} cached, 1 executed" in err


def test_nodes_of_step_finds_every_step_s_nodes_in_plan_order(ws):
    from sci.plan.pipeline import load
    from sci.workspace import Workspace

    sci = ws({"sci.yaml": """
        version: 1
        steps:
          plain:
            cmd: echo > {outs}
            outs: [p.txt]
          one:
            foreach: {i: [1]}
            cmd: echo {item.i} > {outs}
            outs: ["one/{item.i}.txt"]
          grid:
            foreach: {i: [2, 1], j: [a, b]}
            cmd: echo {item.i}{item.j} > {outs}
            outs: ["grid/{item.i}{item.j}.txt"]
        """})
    sci.build()
    for graph in (load(Workspace(ws.root)).graph, load(Workspace(ws.root)).graph):  # planned, then cached
        for step in ("plain", "one", "grid", "missing"):
            assert list(graph.nodes_of_step(step)) == [n for n in graph.nodes if graph.step_of[n] == step], step


@pytest.mark.shortcut_mechanics
def test_an_edit_build_of_some_targets_runs_only_their_touched_nodes(ws):
    sci = ws(PIPELINE)
    assert sci.build("after_a", "b")["executed"] == ["a", "after_a", "b"]
    edit(ws.root, "x: 1", "x: 4")
    edit(ws.root, "k: 3", "k: 9")  # read by nodes that are not selected
    out = sci.build("after_a", "b")
    assert out["executed"] == ["a", "after_a"] and out["cached"] == ["b"]
    assert (ws.root / "after_a.txt").read_text() == "4\nsource\n"
    assert not (ws.root / "sweep").exists()
    assert events(ws.root, "unchanged") == [{"nodes": 1, "reason": "only parameters changed, and these nodes read none of them"}]


@pytest.mark.shortcut_mechanics
def test_nodes_taken_from_the_record_mid_build_are_reported_without_being_decided_one_by_one(ws):
    from sci import api
    from sci.records.run import NodeStatus
    from sci.workspace import Workspace

    sci = ws(CHAIN)
    keys = {n["node"]: n["key"] for n in sci.build()["nodes"]}
    edit(ws.root, "x: 1", "x: 5")  # sign re-runs and writes "pos" again: c1 and c2 come from the record
    report = api.build(Workspace(ws.root))
    assert set(report.outcomes.decided) == {"sign"}  # the only node keyed and run
    assert report.counts() == {"cached": 3, "executed": 1, "failed": 0, "skipped": 0}
    for name in ("c1", "c2", "other"):
        assert report.outcomes[name].status is NodeStatus.CACHED and report.outcomes[name].key == keys[name]
    plan = {p["node"]: p for p in json.loads((report.run_dir / "manifest.json").read_text())["plan"]}
    assert {n: p["key"] for n, p in plan.items()} == {**keys, "sign": report.outcomes["sign"].key}
    assert sci.build()["executed"] == []


def test_every_manifest_is_canonical_whether_encoded_whole_or_joined_from_the_record(ws):
    """The no-op and edit builds write their manifest from the record's per-entry JSON; each
    manifest must still be exactly the canonical JSON of what it says, and the record's
    entries' JSON must stay the JSON of its entries through appended edits."""
    from sci.build import noop

    def check_last_manifest():
        run = sorted((ws.root / "runs").iterdir())[-1]
        raw = (run / "manifest.json").read_bytes()
        assert raw == canonical.dumps(json.loads(raw)) + b"\n"
        doc = noop.read_record(ws.root / ".sci").doc
        assert doc["plan_json"] == [canonical.dumps(e) for e in doc["manifest"]["plan"]]
        return json.loads(raw)

    sci = ws(CHAIN)
    sci.build()
    check_last_manifest()
    for old, new in (("x: 1", "x: 2"), ("y: 1", "y: 4"), ("x: 2", "x: -3"), ("y: 4", "y: 5")):
        edit(ws.root, old, new)
        sci.build()
        manifest = check_last_manifest()
        assert sci.build()["executed"] == []  # the no-op, joined from the record
        noop_manifest = check_last_manifest()
        assert [p["key"] for p in noop_manifest["plan"]] == [p["key"] for p in manifest["plan"]]
    assert (ws.root / "c2.txt").read_text() == "neg\n" and (ws.root / "other.txt").read_text() == "5\n"


def test_a_target_given_as_a_path_resolves_in_a_patched_plan(ws):
    from sci.plan.pipeline import load
    from sci.workspace import Workspace

    sci = ws(PIPELINE)
    sci.build()
    edit(ws.root, "x: 1", "x: 6")
    loaded = load(Workspace(ws.root))  # patched from the cache: producer_of read when first asked
    assert loaded.graph.producer_of["after_a.txt"] == "after_a" and "a.txt" in loaded.graph.producer_of
    assert dict(loaded.graph.producer_of) == {p: n for n, node in loaded.graph.nodes.items() for p in node.outs.values()}
    out = sci.build(str(ws.root / "after_a.txt"))
    assert out["executed"] == ["a", "after_a"] and (ws.root / "after_a.txt").read_text() == "6\nsource\n"
