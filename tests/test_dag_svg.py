"""The DAG picture: valid SVG, every node drawn once, no overlapping boxes, edges left to right,
few crossings, and the same picture whatever order the graph was given in."""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sci.evidence.dag_svg import name_key, render_svg

SVG = "{http://www.w3.org/2000/svg}"


def _boxes(svg: str) -> dict[str, tuple[float, float, float, float]]:
    """node name -> (x, y, width, height) of its box."""
    root = ET.fromstring(svg)
    out = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "node":
            rect = g.find(f"{SVG}rect")
            out[g.get("data-node")] = tuple(float(rect.get(k)) for k in ("x", "y", "width", "height"))
    return out


def _paths(svg: str) -> list[list[tuple[float, float]]]:
    """Every edge path as its list of coordinate pairs."""
    root = ET.fromstring(svg)
    out = []
    for path in root.iter(f"{SVG}path"):
        nums = [float(x) for x in re.findall(r"-?[0-9.]+", path.get("d"))]
        out.append(list(zip(nums[::2], nums[1::2])))
    return out


def _overlap(a, b) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


@st.composite
def dags(draw, max_nodes: int = 24):
    n = draw(st.integers(1, max_nodes))
    names = draw(st.lists(st.text("abcxyz019[]=._<&>\"", min_size=1, max_size=12), min_size=n, max_size=n,
                          unique=True))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), max_size=3 * n, unique=True)) if pairs else []
    return names, [(names[i], names[j]) for i, j in chosen]


@settings(max_examples=60, deadline=None)
@given(graph=dags(), seed=st.integers(0, 2**32 - 1))
def test_layout_properties(graph, seed):
    nodes, edges = graph
    svg = render_svg(nodes, edges)
    root = ET.fromstring(svg)  # well-formed XML, whatever the names contain
    width, height = (float(v) for v in root.get("viewBox").split()[2:])
    boxes = _boxes(svg)
    assert sorted(boxes) == sorted(nodes)
    for name, box in boxes.items():
        x, y, w, h = box
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height, name
    names = sorted(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not _overlap(boxes[a], boxes[b]), (a, b)
    for u, v in edges:  # downstream is always to the right
        assert boxes[u][0] + boxes[u][2] < boxes[v][0]
    assert len(_paths(svg)) == len(edges)
    # the picture does not depend on the order the graph was given in
    rng = random.Random(seed)
    shuffled_nodes, shuffled_edges = list(nodes), list(edges) + list(edges[:1])
    rng.shuffle(shuffled_nodes)
    rng.shuffle(shuffled_edges)
    assert render_svg(shuffled_nodes, shuffled_edges) == svg


def test_edges_end_at_their_boxes():
    svg = render_svg(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")])
    boxes = _boxes(svg)
    ends = {}
    for points in _paths(svg):
        start, end = points[0], points[-1]
        src = next(n for n, (x, y, w, h) in boxes.items() if abs(start[0] - (x + w)) < 0.2 and y <= start[1] <= y + h)
        dst = next(n for n, (x, y, w, h) in boxes.items() if x - 10 <= end[0] <= x and y <= end[1] <= y + h)
        ends[(src, dst)] = True
    assert sorted(ends) == [("a", "b"), ("a", "c"), ("b", "c")]


def test_crossings_are_removed():
    #   a ──> y        layered by name, a-y and b-x would cross;
    #   b ──> x        the sweeps put x level with b and y level with a
    svg = render_svg(["a", "b", "x", "y"], [("a", "y"), ("b", "x")])
    boxes = _boxes(svg)
    assert (boxes["a"][1] < boxes["b"][1]) == (boxes["y"][1] < boxes["x"][1])


def test_a_chain_is_a_straight_line():
    svg = render_svg(["c", "b", "a"], [("a", "b"), ("b", "c")])
    boxes = _boxes(svg)
    centres = {round(y + h / 2, 1) for _, y, _, h in boxes.values()}
    assert len(centres) == 1
    assert boxes["a"][0] < boxes["b"][0] < boxes["c"][0]


def test_foreach_siblings_are_ordered_by_value():
    items = [0.0, 0.05, 0.1, 0.15, 0.2, 1.0, 10.0]
    nodes = [f"simulate[noise={x}]" for x in items] + ["fit"]
    svg = render_svg(nodes, [(n, "fit") for n in nodes[:-1]])
    boxes = _boxes(svg)
    tops = [boxes[n][1] for n in nodes[:-1]]
    assert tops == sorted(tops)
    assert sorted(nodes, key=name_key)[:3] == ["fit", "simulate[noise=0.0]", "simulate[noise=0.05]"]


def test_two_hundred_nodes_stay_legible():
    sweep = [f"simulate[noise={i / 100},seed={i % 3}]" for i in range(196)]
    nodes = ["prepare", *sweep, "fit", "plot", "report"]
    edges = ([("prepare", s) for s in sweep] + [(s, "fit") for s in sweep]
             + [("fit", "plot"), ("plot", "report"), ("prepare", "report")])
    svg = render_svg(nodes, edges)
    boxes = _boxes(svg)
    assert len(boxes) == 200
    column = sorted(boxes[s][1] for s in sweep)
    gaps = [b - a for a, b in zip(column, column[1:])]
    assert min(gaps) >= boxes[sweep[0]][3]  # stacked, not overlapping, and never squeezed
    heights = {boxes[s][3] for s in sweep}
    assert heights == {boxes["fit"][3]}  # every box keeps the full, readable text size
    root = ET.fromstring(svg)
    assert root.get("width") == root.get("viewBox").split()[2]  # drawn at 1:1, the page scrolls


def test_labels_add_lines_and_keep_the_name_as_title():
    svg = render_svg(["fit"], [], {"fit": "fit\n0123456789ab"})
    root = ET.fromstring(svg)
    node = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "node")
    assert [t.text for t in node.iter(f"{SVG}text")] == ["fit", "0123456789ab"]
    assert node.find(f"{SVG}title").text == "fit"


def test_long_names_are_shortened_but_kept_in_the_tooltip():
    name = "x" * 100
    svg = render_svg([name], [])
    assert f"<title>{name}</title>" in svg
    assert ("x" * 43 + "\u2026") in svg


@pytest.mark.parametrize("nodes,edges,message", [
    (["a", "b"], [("a", "b"), ("b", "a")], "cycle through: a, b"),
    (["a"], [("a", "a")], "cycle through: a"),
    (["a"], [("a", "z")], "not in the graph"),
])
def test_bad_graphs_are_refused(nodes, edges, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        render_svg(nodes, edges)


def test_empty_graph_is_an_empty_picture():
    root = ET.fromstring(render_svg([], []))
    assert _boxes(render_svg([], [])) == {} and root.tag == f"{SVG}svg"
