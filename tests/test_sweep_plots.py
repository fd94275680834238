"""The dossier's sweep plots: each metric against each swept key, plain SVG, pure bytes, and
readable in a headless Chromium with JavaScript off.

The built pipeline sweeps a numeric key declared out of order, and a two-key sweep whose
second key is text:

    sim[noise=0.2]  ─┐
    sim[noise=0.05] ─┼─> dossier
    sim[noise=0.1]  ─┤
    grid[a=1,m=x] … ─┘   (a: [1, 2], m: [x, b])
"""

from __future__ import annotations

import json
import re

import pytest

from conftest import no_traceback
from sci.evidence import plots
from sci.evidence.page import render_html
from test_dossier_page import _open, browser, example, needs_chromium  # noqa: F401 - the fixture

PIPELINE = """
version: 1
experiment: {title: Sweep plots, question: Do they draw?, authors: [{name: Ada Lovelace}], license: CC0-1.0}
defaults: {seed: 3}
steps:
  sim:
    foreach: {noise: [0.2, 0.05, 0.1]}
    cmd: python score.py {item.noise} 1 {outs.score}
    code: [score.py]
    metrics: {score: "m/sim-{item.noise}.json"}
  grid:
    foreach: {a: [1, 2], m: [x, b]}
    cmd: python score.py {item.a} {item.m} {outs.score}
    code: [score.py]
    metrics: {score: "m/grid-{item.a}-{item.m}.json"}
  dossier:
    kind: dossier
    steps: [sim, grid]
    outs: [dossier/]
"""

SCORE = """
import json, sys
a, m, out = float(sys.argv[1]), sys.argv[2], sys.argv[3]
doc = {"error": a * a, "gain": {"db": 10 * a + len(m)}}
if a != 0.05:
    doc["rare"] = a  # one point missing: a gap in its line
json.dump(doc, open(out, "w"))
"""


def _dossier_with_sweeps(names: list[str]) -> dict:
    dossier, _ = example()
    nodes = []
    for a in (1, 2):
        for m in ("x", "b"):
            n = f"grid[a={a},m={m}]"
            nodes.append({"node": n, "item": {"a": a, "m": m}})
            dossier["nodes"].append(dict(dossier["nodes"][0], node=n, step="grid",
                                         metrics={name: a * (2 if m == "x" else 3) for name in names}))
    dossier["sweeps"] = [{"step": "grid", "keys": ["a", "m"], "nodes": nodes}]
    return dossier


def test_one_plot_per_metric_and_swept_key_with_a_table():
    html = plots.section(_dossier_with_sweeps(["loss", "acc"]))
    figures = re.findall(r'<figure class="plot" data-metric="([^"]+)" data-key="([^"]+)">', html)
    assert figures == [("acc", "a"), ("acc", "m"), ("loss", "a"), ("loss", "m")]
    assert html.count("<svg") == 4 and html.count("<script") == 0
    # against `a`: one line per value of m, in declaration order (x before b)
    first = html[html.index('data-key="a"'):html.index('data-key="m"')]
    assert re.findall(r'data-series="([^"]+)"', first) == ["m=x", "m=b"]
    # against `m` (text): categories in declaration order, not sorted
    second = html[html.index('data-key="m"'):html.index('data-metric="loss"')]
    ticks = re.findall(r'text-anchor="middle">([^<]+)</text>', second)
    assert ticks[:2] == ["x", "b"]
    assert html.count("<tr>") == 1 + 4  # the table: a header and one row per node
    assert plots.section({"nodes": [], "sweeps": []}) == ""


def test_plots_are_a_pure_function_and_escape_names():
    hostile = ['<script>alert(1)</script>', 'a"b', "x&y"]
    dossier = _dossier_with_sweeps(hostile)
    one = plots.section(dossier)
    assert one == plots.section(json.loads(json.dumps(dossier)))
    assert "<script>" not in one and "&lt;script&gt;" in one and 'data-metric="a&quot;b"' in one
    page, files = example()
    page["sweeps"] = dossier["sweeps"]
    page["nodes"] = dossier["nodes"]
    assert render_html(page, files) == render_html(page, files)


def test_ticks_are_round_and_cover_the_data():
    for lo, hi in ((0.0, 0.2), (-0.035, 0.0), (3.2, 29.2), (5.0, 5.0), (1e-9, 3e-9), (-1e6, 2e6)):
        ticks = plots._nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) <= 21
        steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:])}
        assert len(steps) == 1
        mantissa = float(f"{steps.pop():e}".split("e")[0])
        assert mantissa in (1.0, 2.0, 5.0)


@needs_chromium
def test_sweep_plots_of_a_built_dossier_in_chromium_without_javascript(browser, ws):  # noqa: F811
    sci = ws({"sci.yaml": PIPELINE, "score.py": SCORE})
    sci.build("dossier")
    dossier = json.loads((ws.root / "dossier" / "dossier.json").read_text())
    assert [s["step"] for s in dossier["sweeps"]] == ["sim", "grid"]
    assert [n["node"] for n in dossier["sweeps"][0]["nodes"]] == ["sim[noise=0.2]", "sim[noise=0.05]",
                                                                 "sim[noise=0.1]"]
    assert dossier["sweeps"][1]["keys"] == ["a", "m"]
    context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto((ws.root / "dossier" / "index.html").as_uri(), wait_until="load")
    try:
        shown = page.eval_on_selector_all(
            "#sweeps figure.plot", "els => els.map(e => [e.dataset.metric, e.dataset.key, "
            "e.getBoundingClientRect().width, e.getBoundingClientRect().height, e.querySelectorAll('circle').length])")
        rows = page.locator("#sweeps table.sweep-table tbody tr").count()
        nav = page.locator('nav a[href="#sweeps"]').count()
    finally:
        context.close()
    assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
    sim = [s for s in shown if s[1] == "noise"]
    assert [(m, k) for m, k, *_ in sim] == [("error", "noise"), ("gain.db", "noise"), ("rare", "noise")]
    assert all(w > 100 and h > 100 for _, _, w, h, _ in shown)
    assert [c for *_, c in sim] == [3, 3, 2]  # the missing point is left out, not drawn at zero
    grid = [s for s in shown if s[1] != "noise"]
    assert len(grid) == 3 * 2 and all(c == 4 for *_, c in grid)
    assert rows == 3 + 4 and nav == 1


def test_a_dossier_with_sweep_plots_reproduces_bit_for_bit(ws):
    sci = ws({"sci.yaml": PIPELINE, "score.py": SCORE})
    sci.build("dossier")
    first = (ws.root / "dossier" / "index.html").read_bytes()
    assert first.count(b'class="sci-plot"') == 3 + 6
    proc = sci("repro-check", "dossier")
    assert no_traceback(proc.stderr)
    assert "mismatch" not in proc.stdout
    assert (ws.root / "dossier" / "index.html").read_bytes() == first
