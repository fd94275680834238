"""Planning: sci.yaml → validated document → nodes → graph, for a generated pipeline.

The workload is gen_pipeline's sci workspace (N one-command steps with one parameter each,
10,000; quick: 1,000) in both shapes: a chain (N-1 edges) and a fan-out (no edges, every node
reads `data/source.txt`). Each stage of a full plan (`pipeline._parse`) is timed on its own, in
its order: YAML load plus pydantic validation (what `.sci/pipeline.pickle` saves while sci.yaml
is unchanged), the params file, `plan.expand`, `graph.build_graph`. Then the whole
`pipeline.load`, as `sci build` calls it: with no cache at all (sci.yaml just edited), with the
validated sci.yaml cached but no plan, after one parameter was edited (the previous plan is
patched), and with nothing edited (the plan cache hit).
"""

from __future__ import annotations

import itertools

import pytest

from gen_pipeline import Workload, edit_param, generate
from sci.spec import params as params_mod
from sci.plan import pipeline
from sci.determinism import derive_seed
from sci.plan.graph import build_graph
from sci.spec.load import load_yaml_text
from sci.plan.nodes import expand
from sci.spec.model import validate_pipeline
from sci.workspace import RESERVED, Workspace

SHAPES = ("chain", "fanout")


def validated(text: str):
    """What `pipeline._pipeline_doc` does on a cache miss: parse, validate, dump to plain data."""
    data, pos = load_yaml_text(text, "sci.yaml")
    doc = validate_pipeline(data, pos).model_dump()
    return doc, pos


@pytest.fixture(scope="module", params=SHAPES)
def workspace(request, tmp_path_factory, sizes):
    """(workload, workspace, sci.yaml text, validated doc, positions, params, reserved paths)."""
    w = Workload(request.param, sizes.plan_nodes)
    ws = Workspace(generate("sci", w, tmp_path_factory.mktemp(f"plan-{w.shape}") / "ws"))
    text = ws.pipeline_file.read_text()
    doc, pos = validated(text)
    params = params_mod.load(ws.root, doc["params"], pos).data
    reserved = tuple(RESERVED) + pipeline._store_reserved(ws, doc["store"])
    return w, ws, text, doc, pos, params, reserved


def edges(graph) -> int:
    return sum(len(ups) for ups in graph.upstream.values())


def check_graph(graph, w: Workload) -> None:
    assert len(graph.nodes) == len(graph.order) == w.n
    if w.shape == "chain":
        assert edges(graph) == w.n - 1
        assert graph.order == [w.name(i) for i in range(w.n)]
        assert graph.priority[w.name(0)] == w.n
    else:
        assert edges(graph) == 0
        assert {s.path for srcs in graph.sources.values() for s in srcs} == {"data/source.txt"}


@pytest.mark.benchmark(group="plan/graph")
def test_yaml_load_and_validate(benchmark, workspace, sizes):
    w, _, text, doc, *_ = workspace
    got, _ = benchmark.pedantic(validated, args=(text,), rounds=sizes.rounds, warmup_rounds=1)
    assert len(got["steps"]) == w.n
    assert got == doc


@pytest.mark.benchmark(group="plan/graph")
def test_params_load(benchmark, workspace, sizes):
    w, ws, _, doc, pos, params, _ = workspace
    if w.shape != "chain":
        pytest.skip("params.yaml is the same in both shapes")
    got = benchmark.pedantic(params_mod.load, args=(ws.root, doc["params"], pos),
                             rounds=sizes.rounds, warmup_rounds=1)
    assert got.file == "params.yaml" and len(got.data["p"]) == w.n and got.text is not None


@pytest.mark.benchmark(group="plan/graph")
def test_params_load_after_a_one_value_edit(benchmark, workspace, sizes):
    """The same file after one value in the middle changed, read against the previous text and
    mapping (simple_yaml.patch): only the changed line is read again. Compare with the row above."""
    w, ws, _, doc, pos, params, _ = workspace
    if w.shape != "chain":
        pytest.skip("params.yaml is the same in both shapes")
    before = params_mod.load(ws.root, doc["params"], pos)
    mid = w.edit_index()
    edit_param("sci", w, ws.root, mid, 7)
    try:
        got = benchmark.pedantic(params_mod.load, args=(ws.root, doc["params"], pos, (before.text, before.data)),
                                 rounds=sizes.rounds * 4, warmup_rounds=1)
    finally:
        edit_param("sci", w, ws.root, mid, 0)
    assert got.changed == [w.param_key(mid)] and got.data["p"][f"node{mid}"] == 7
    assert got.data["p"] is not before.data["p"] and len(got.data["p"]) == w.n


@pytest.mark.benchmark(group="plan/graph")
def test_expand_nodes(benchmark, workspace, sizes):
    w, _, _, doc, pos, params, reserved = workspace
    nodes = benchmark.pedantic(lambda: expand(doc, params, pos, reserved=reserved, derive_seed=derive_seed),
                               rounds=sizes.rounds, warmup_rounds=1)
    assert [n.name for n in nodes] == [w.name(i) for i in range(w.n)]
    assert nodes[-1].params == {w.param_key(w.n - 1): 0}
    assert nodes[-1].deps == {w.dep(w.n - 1): w.dep(w.n - 1)}


@pytest.mark.benchmark(group="plan/graph")
def test_build_graph(benchmark, workspace, sizes):
    w, ws, _, doc, pos, params, reserved = workspace
    nodes = expand(doc, params, pos, reserved=reserved, derive_seed=derive_seed)
    graph = benchmark.pedantic(lambda: build_graph(nodes, ws.root, pos, reserved=reserved),
                               rounds=sizes.rounds, warmup_rounds=1)
    check_graph(graph, w)


def _load_without(ws: Workspace, *caches: str):
    """A benchmark setup: remove these cache files from `.sci/`, then load as `sci build` does."""
    def setup():
        for name in caches:
            (ws.state_dir / name).unlink(missing_ok=True)
        return (ws,), {}
    return setup


@pytest.mark.benchmark(group="plan/graph")
def test_load_pipeline_no_cache(benchmark, workspace, sizes):
    """sci.yaml edited: YAML, validation, params, expansion, graph, commands, then both caches written."""
    w, ws, *_ = workspace
    setup = _load_without(ws, pipeline.PLAN_CACHE, pipeline.PIPELINE_CACHE)
    loaded = benchmark.pedantic(pipeline.load, setup=setup, rounds=sizes.rounds)
    check_graph(loaded.graph, w)
    assert (ws.state_dir / pipeline.PLAN_CACHE).is_file()
    assert loaded.graph.nodes[w.name(0)].cmd == f"{{ head -n 1 {w.dep(0)}; echo 0; }} > {w.out(0)}"


@pytest.mark.benchmark(group="plan/graph")
def test_load_pipeline_no_plan_cache(benchmark, workspace, sizes):
    """No plan to start from: the validated sci.yaml comes from `.sci/pipeline.pickle`, the rest is redone."""
    w, ws, *_ = workspace
    pipeline.load(ws)  # writes pipeline.pickle
    loaded = benchmark.pedantic(pipeline.load, setup=_load_without(ws, pipeline.PLAN_CACHE),
                                rounds=sizes.rounds)
    check_graph(loaded.graph, w)


@pytest.mark.benchmark(group="plan/graph")
def test_load_pipeline_params_edited(benchmark, workspace, sizes):
    """One value in params.yaml edited before each round: the previous plan is patched (replan.py)."""
    w, ws, *_ = workspace
    mid = w.edit_index()
    edit_param("sci", w, ws.root, mid, 0)
    pipeline.load(ws)  # the plan of the unedited parameters, which every round patches
    plan_file = ws.state_dir / pipeline.PLAN_CACHE
    written = plan_file.stat().st_mtime_ns
    values = itertools.count(1)

    def setup():
        value = next(values)
        edit_param("sci", w, ws.root, mid, value)
        return (ws,), {}

    loaded = benchmark.pedantic(pipeline.load, setup=setup, rounds=sizes.rounds)
    last = next(values) - 1
    edit_param("sci", w, ws.root, mid, 0)
    # Read lazily (plan_cache.py): only the edited node's stored version was decoded, to compare.
    assert loaded.graph.nodes.decoded() <= 1
    check_graph(loaded.graph, w)
    assert loaded.graph.nodes[w.name(mid)].params == {w.param_key(mid): last}
    assert loaded.graph.nodes[w.name(mid)].cmd.endswith(f"echo {last}; }} > {w.out(mid)}")
    assert plan_file.stat().st_mtime_ns == written  # patched plans are not written: none was planned anew


@pytest.mark.benchmark(group="plan/graph")
def test_load_pipeline_plan_cached(benchmark, workspace, sizes):
    """Nothing edited: the plan comes from `.sci/plan.pickle` (the floor under the loads above)."""
    w, ws, *_ = workspace
    pipeline.load(ws)
    loaded = benchmark.pedantic(pipeline.load, args=(ws,), rounds=sizes.rounds, warmup_rounds=1)
    check_graph(loaded.graph, w)
