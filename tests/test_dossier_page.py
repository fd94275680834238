"""The dossier page: pure, escaped, self-contained, and readable in a real headless Chromium.

The example dossier is a hand-made 4-node pipeline:

    prepare ──> simulate[noise=0.0] ──┐
        └─────> simulate[noise=0.1] ──┴──> fit

fit writes the evidence: results/fit.png (a PNG made with zlib), results/fit.csv and
results/residuals.svg.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sci import canonical
from sci.evidence.citation import seal
from sci.evidence.dossier import lineage
from sci.evidence.page import EvidenceError, media_type_for, render_html, reproduce_commands
from sci.store.hashing import digest_bytes

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS_ENV = "SCI_TEST_ARTIFACTS"  # set to 1 to copy screenshots to tests/artifacts/


# -- the example -----------------------------------------------------------------------------

def make_png(width: int = 96, height: int = 64) -> bytes:
    """A real RGB PNG (a gradient with a diagonal line), written with zlib alone."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            on_line = abs(x * height - y * width) < width
            rows += bytes((20, 20, 120)) if on_line else bytes((255 * x // width, 255 * y // height, 200))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
            + chunk(b"IEND", b""))


def make_svg() -> bytes:
    """A small SVG chart, as a plotting library would write it."""
    bars = "".join(f'<rect x="{10 + 22 * i}" y="{80 - 7 * i}" width="16" height="{7 * i + 5}" fill="#4f46e5"/>'
                   for i in range(8))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" viewBox="0 0 200 100">'
            f'<rect width="200" height="100" fill="#fff"/>{bars}</svg>').encode()


def make_csv(rows: int = 8) -> bytes:
    lines = ["noise,damping,stderr"] + [f"{i / 10},{0.05 + i / 1000:.4f},{0.001 * (i + 1):.4f}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def _node(name: str, step: str, *, deps: dict, code: dict, params: dict, seed: int, outputs: dict,
          determinism: str = "strict", metrics: dict | None = None) -> dict:
    components = {"format": 1, "definition": {"cmd": f"run {step}", "outs": sorted(outputs)},
                  "deps": deps, "code": code, "params": params, "environment": "e" * 64, "seed": seed}
    return {
        "format": 1, "type": "sci.step_result", "key": digest_bytes(canonical.dumps(components)),
        "node": name, "step": step, "components": components, "outputs": outputs, "exit_status": 0,
        "seed": seed, "determinism": determinism, "stdout": digest_bytes(b""), "stderr": digest_bytes(b""),
        "metrics": metrics or {},
        "environment": {"components": {"python": "3.11.9"}, "digest": "e" * 64},
    }


def _out(path: str, data: bytes) -> dict:
    return {"path": path, "type": "file", "digest": digest_bytes(data), "size": len(data)}


def example(csv_rows: int = 8, reproduction: dict | None = None) -> tuple[dict, dict[str, bytes]]:
    """(dossier, evidence files) of the 4-node example, sealed with its version digest."""
    png, table, svg = make_png(), make_csv(csv_rows), make_svg()
    raw = b"raw measurements\n"
    code = {"rules/simulate.py": digest_bytes(b"sim"), "rules/common/io.py": digest_bytes(b"io")}
    prepared = _out("data/prepared.npy", b"prepared")
    sims = {f"simulate[noise={n}]": _out(f"data/samples-{n}.npy", f"samples {n}".encode()) for n in ("0.0", "0.1")}
    nodes = [_node("prepare", "prepare", deps={"data/raw.txt": digest_bytes(raw)},
                   code={"rules/prepare.py": digest_bytes(b"prep")}, params={}, seed=11,
                   outputs={"prepared": prepared})]
    for i, (name, out) in enumerate(sims.items()):
        nodes.append(_node(name, "simulate", deps={"data/prepared.npy": prepared["digest"]}, code=code,
                           params={"simulate.n": 1000}, seed=100 + i, outputs={"samples": out}))
    fit_outputs = {"figure": _out("results/fit.png", png), "table": _out("results/fit.csv", table),
                   "residuals": _out("results/residuals.svg", svg)}
    nodes.append(_node("fit", "fit", deps={o["path"]: o["digest"] for o in sims.values()},
                       code={"rules/fit.py": digest_bytes(b"fit")}, params={"fit.degree": 2}, seed=7,
                       outputs=fit_outputs, determinism="fast", metrics={"rmse": 0.0123}))
    edges = [["prepare", s] for s in sims] + [[s, "fit"] for s in sims]
    experiment = {
        "title": "Recovering the damping ratio of a noisy oscillator",
        "question": "How does measurement noise bias the fitted damping ratio?",
        "authors": [{"name": "Ada Lovelace", "orcid": "0000-0002-1825-0097",
                     "affiliation": "Analytical Engines Ltd"}, {"name": "Charles Babbage"}],
        "license": "CC-BY-4.0", "keywords": ["oscillator", "least squares"],
        "url": "https://example.org/oscillator",
    }
    evidence = {"results/fit.png": png, "results/fit.csv": table, "results/residuals.svg": svg}
    entries = [{"path": p, "digest": digest_bytes(d), "size": len(d), "media_type": media_type_for(p)}
               for p, d in evidence.items()]
    dossier = {
        "format": 2, "type": "sci.dossier", "experiment": experiment, "nodes": nodes, "edges": edges,
        "workflow": {"path": "sci.yaml", "copied_as": "pipeline.sci.yaml", "digest": digest_bytes(b"version: 1\n"),
                     "size": 11},
        "evidence": entries,
        "lineage": lineage(entries, nodes, edges, {}),
        "environment": {"components": {"python": "3.11.9 CPython", "os": "Linux x86_64", "sci": "0.1.0",
                                       "packages": {"numpy": "2.1.0", "cupy-cuda12x": "not-installed"}},
                        "digest": "e" * 64},
        "reproduction": reproduction or {"state": "not-checked", "check": None, "mismatch": None, "nodes": {}},
        "citation": {"title": experiment["title"], "authors": experiment["authors"],
                     "license": experiment["license"], "keywords": experiment["keywords"]},
        "reproduce": reproduce_commands("dossier", remote="default"),
    }
    return seal(dossier), evidence


# -- pure Python checks ------------------------------------------------------------------------

def test_example_is_a_valid_dossier():
    from sci.records.models import Dossier

    dossier, _ = example()
    Dossier.model_validate(dossier)


def test_render_is_a_pure_function_of_its_inputs():
    dossier, files = example()
    first = render_html(dossier, files)
    assert render_html(dossier, files) == first
    # the same content with every mapping built in reverse order renders to the same bytes
    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reverse(v) for v in value]
        return value
    assert render_html(reverse(dossier), dict(reversed(list(files.items())))) == first


def test_page_contains_what_a_reviewer_needs():
    dossier, files = example()
    page = render_html(dossier, files).decode()
    for text in ("Recovering the damping ratio of a noisy oscillator",
                 "How does measurement noise bias the fitted damping ratio?",
                 "Ada Lovelace", "Analytical Engines Ltd", "https://orcid.org/0000-0002-1825-0097",
                 "simulate[noise=0.1]", dossier["nodes"][0]["key"][:12], "fit.degree", "nondeterministic",
                 "sci pull\nsci build dossier\nsci repro-check dossier", "@misc{", "cff-version",
                 dossier["citation"]["version"], "python", "3.11.9 CPython"):
        assert text in page, text
    assert page.count('<g class="node"') == 4
    assert page.count('class="evidence-figure"') == 2


def test_page_makes_no_external_references():
    dossier, files = example()
    page = render_html(dossier, files).decode()
    assert "<script" not in page and "@import" not in page and "url(" not in page
    for attr, value in re.findall(r'\b(src|href)="([^"]*)"', page):
        if attr == "src":
            assert value.startswith("data:"), value
        else:  # anchors are followed only on a click; nothing is loaded
            assert value.startswith(("#", "https://", "mailto:", "data:")), value
    assert "default-src 'none'" in page


def test_csv_evidence_shows_the_first_50_rows():
    dossier, files = example(csv_rows=120)
    page = render_html(dossier, files).decode()
    table = page[page.index('<table class="evidence-table">'):]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 1 + 50
    assert "Showing the first 50 of 120 rows." in page


def test_evidence_that_does_not_match_its_digest_is_refused():
    dossier, files = example()
    with pytest.raises(EvidenceError, match="results/fit.csv does not match"):
        render_html(dossier, {**files, "results/fit.csv": files["results/fit.csv"] + b"x"})
    with pytest.raises(EvidenceError, match="results/fit.png was not given"):
        render_html(dossier, {"results/fit.csv": files["results/fit.csv"]})


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def _tags(page: bytes) -> list[str]:
    parser = _Tags()
    parser.feed(page.decode())
    return parser.tags


def _fill(text: str) -> tuple[dict, dict[str, bytes]]:
    """The example with `text` in every free-text field a user or a step controls."""
    dossier, files = example()
    dossier["experiment"]["title"] = text
    dossier["experiment"]["question"] = text
    dossier["experiment"]["authors"][1]["name"] = text
    dossier["nodes"][3]["metrics"] = {text: text}
    dossier["nodes"][3]["components"]["params"] = {text: text}
    dossier["environment"]["components"][text] = text
    dossier["reproduce"] = [text]
    return seal(dossier), files


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(min_size=1, max_size=40).filter(lambda s: s.strip()))
def test_every_user_string_is_escaped(text):
    """Hostile text in any field adds no tag to the page: the tag sequence stays the same."""
    baseline = _tags(render_html(*_fill("harmless")))
    page = render_html(*_fill(f"<script>alert(1)</script><img src=x onerror=y>{text}\"'&"))
    assert _tags(page) == baseline
    assert b"<script" not in page


def test_reproduce_commands():
    assert reproduce_commands() == ["sci build dossier", "sci repro-check dossier"]
    assert reproduce_commands("dossier", remote="default")[0] == "sci pull"
    assert reproduce_commands("my dossier", remote="lab")[:2] == ["sci pull --remote lab", "sci build 'my dossier'"]


def test_media_types_do_not_depend_on_the_host():
    assert media_type_for("results/fit.PNG") == "image/png"
    assert media_type_for("a/b.csv") == "text/csv"
    assert media_type_for("a/b.svg") == "image/svg+xml"
    assert media_type_for("a/README") == "application/octet-stream"
    assert media_type_for("a.b/c") == "application/octet-stream"


# -- in a real browser ---------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class _Watch:
    """Everything a page asked the network for, and everything that went wrong while loading."""

    def __init__(self, context, page):
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.failed: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        context.route("**/*", self._route)
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("requestfailed", lambda r: self.failed.append(r.url))
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))

    def _route(self, route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def external(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("file://", "data:"))]


def _open(browser, html_path: Path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watch = _Watch(context, page)
    page.goto(html_path.as_uri(), wait_until="load")
    return context, page, watch


@needs_chromium
def test_the_network_watch_sees_a_request(browser, tmp_path):
    """The watch is not vacuous: a page that loads an image over HTTP is caught and blocked."""
    page_path = tmp_path / "leaky.html"
    page_path.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png">')
    context, _, watch = _open(browser, page_path)
    context.close()
    assert watch.blocked == ["http://127.0.0.1:9/x.png"]
    assert watch.external() == ["http://127.0.0.1:9/x.png"]


@needs_chromium
def test_page_in_headless_chromium(browser, tmp_path):
    dossier, files = example()
    page_path = tmp_path / "dossier" / "index.html"
    page_path.parent.mkdir()
    page_path.write_bytes(render_html(dossier, files))
    context, page, watch = _open(browser, page_path)
    try:
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth, e.getBoundingClientRect().width])")
        dag = page.locator("svg.sci-dag")
        dag_visible = dag.is_visible()
        dag_box = dag.bounding_box()
        dag_nodes = page.locator("svg.sci-dag g.node").count()
        table_rows = page.locator("table.evidence-table tbody tr").count()
        title = page.title()
        shot = tmp_path / "dossier.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        context.close()

    assert watch.external() == [] and watch.blocked == [] and watch.failed == []
    assert watch.console_errors == [] and watch.page_errors == []
    assert title == dossier["experiment"]["title"]
    assert dag_visible and dag_box and dag_box["width"] > 0 and dag_box["height"] > 0
    assert dag_nodes == 4
    assert [(alt, done, natural) for alt, done, natural, _ in images] == [
        ("results/fit.png", True, 96), ("results/residuals.svg", True, 200)]
    assert all(shown > 0 for *_, shown in images)
    assert table_rows == 8
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(ARTIFACTS_ENV):
        target = Path(__file__).parent / "artifacts"
        target.mkdir(exist_ok=True)
        shutil.copyfile(shot, target / "dossier.png")


@needs_chromium
def test_page_built_by_sci_in_headless_chromium(browser, ws):
    """The page `sci build dossier` really writes: DAG, every evidence figure, no network."""
    from test_remote_build import PIPELINE

    sci = ws({"sci.yaml": PIPELINE.replace("evidence: [results/summary.txt]",
                                           "evidence: [results/summary.txt, figure.png]")
                           .replace("steps:\n  gen:", "steps:\n  fig:\n    cmd: python make_png.py {outs}\n"
                                    "    code: [make_png.py]\n    outs: [figure.png]\n  gen:")
                           .replace("steps: [gen, summary]", "steps: [gen, summary, fig]"),
              "make_png.py": "import sys, base64\n"
                             "sys.path.insert(0, '.')\n"
                             "open(sys.argv[1], 'wb').write(" + repr(make_png()) + ")\n"})
    sci.build("dossier")
    page_path = ws.root / "dossier" / "index.html"
    dossier = json.loads((ws.root / "dossier" / "dossier.json").read_text())
    context, page, watch = _open(browser, page_path)
    try:
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
        dag_nodes = page.locator("svg.sci-dag g.node").count()
        visible = page.locator("svg.sci-dag").is_visible()
        page.screenshot(path=str(ws.root / "page.png"), full_page=True)
    finally:
        context.close()
    assert watch.external() == [] and watch.failed == [] and watch.console_errors == [] and watch.page_errors == []
    assert visible and dag_nodes == len(dossier["nodes"]) == 5
    assert images == [["figure.png", True, 96]]
    assert (ws.root / "page.png").read_bytes()[:4] == b"\x89PNG"


WIDTHS = (1400, 900, 390)  # a desktop, a half-screen window or tablet, a phone


def _at_widths(browser, page_path: Path, shots: Path) -> dict[int, dict]:
    """Open the page at each width with the network blocked; what a reviewer would see."""
    seen = {}
    for width in WIDTHS:
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        watch = _Watch(context, page)
        page.goto(page_path.as_uri(), wait_until="load")
        try:
            seen[width] = {
                "overflow": page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]"),
                # what sticks out of the page, outside a scrolling box of its own (a wide data table)
                "outside": page.evaluate("""() => [...document.querySelectorAll('body *')]
                    .filter(e => !e.closest('.scroll') && e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
                    .map(e => e.tagName + '.' + e.className)"""),
                "code_details": page.eval_on_selector_all("#nodes details.code", "els => els.map(e => e.open)"),
                "node_order": page.eval_on_selector_all("#nodes code.node", "els => els.map(e => e.textContent)"),
                "claims": page.locator("#claims").inner_text(),
                "watch": watch,
            }
            page.screenshot(path=str(shots / f"dossier-{width}.png"), full_page=True)
        finally:
            context.close()
    return seen


@needs_chromium
def test_page_reads_well_at_three_widths(browser, ws, tmp_path):
    """The page sci writes, at 1400, 900 and 390 px: nothing scrolls sideways, no request, no
    console error; code collapsed per step, sweep items in declaration order, the claim said."""
    from test_dossier_claims import FILES

    files = dict(FILES, **{"rules/count.py": "import os, sys\nfor p in sys.argv[1:]:\n    print(os.path.getsize(p), p)\n"})
    files["sci.yaml"] = FILES["sci.yaml"].replace("cmd: wc -c {deps} > {outs}",
                                                  "cmd: python rules/count.py {deps} > {outs}\n    code: [rules/count.py]")
    sci = ws(files)
    sci("build", "dossier")
    shots = tmp_path / "shots"
    shots.mkdir()
    seen = _at_widths(browser, ws.root / "dossier" / "index.html", shots)
    for width, s in seen.items():
        w = s["watch"]
        assert w.external() == [] and w.blocked == [] and w.failed == [], width
        assert w.console_errors == [] and w.page_errors == [], width
        scroll_width, client_width = s["overflow"]
        assert scroll_width <= client_width, (width, s["outside"])
        assert s["outside"] == [], width
        assert s["code_details"] and not any(s["code_details"]), width  # collapsed, expandable
        assert s["node_order"] == ["gen[i=3]", "gen[i=1]", "gen[i=2]", "summary"], width
        assert "Declared strict, not yet checked." in s["claims"], width
        assert "names no package versions" in s["claims"], width  # this pipeline declares no lock file
        assert (shots / f"dossier-{width}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(ARTIFACTS_ENV):
        target = Path(__file__).parent / "artifacts"
        target.mkdir(exist_ok=True)
        for width in WIDTHS:
            shutil.copyfile(shots / f"dossier-{width}.png", target / f"dossier-{width}.png")


@needs_chromium
def test_wide_example_page_has_no_sideways_scroll(browser, tmp_path):
    """The hand-made example, with long names, many metrics and a wide table, at the three widths."""
    dossier, files = example(csv_rows=60)
    dossier["nodes"][3]["metrics"] = {f"metric_{i}_with_a_long_name": i / 7 for i in range(12)}
    dossier = seal(dossier)
    page_path = tmp_path / "index.html"
    page_path.write_bytes(render_html(dossier, files))
    seen = _at_widths(browser, page_path, tmp_path)
    for width, s in seen.items():
        assert s["overflow"][0] <= s["overflow"][1] and s["outside"] == [], (width, s["outside"])
        assert s["watch"].console_errors == [] and s["watch"].external() == []
