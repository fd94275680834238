"""The dossier's index.html: one self-contained page a reviewer reads, made from dossier.json.

Self-contained means the page makes no request at all: its CSS is inline, figures are
data: URIs, there are no fonts or scripts, and a Content-Security-Policy says so to the
browser (`default-src 'none'`), so a forgotten external reference fails loudly in testing
instead of leaking a reader's visit. Links (DOI, ORCID, the experiment's URL) are plain
anchors, followed only when a reader clicks.

The page is a pure function of its inputs: no dates, mappings rendered in sorted key order,
lists in their recorded order, numbers formatted one way. `sci repro-check dossier`
compares it byte for byte like any other output.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import shlex
from html import escape
from typing import Any

from sci.evidence import citation, plots
from sci.evidence.dag_svg import render_svg
from sci.errors import WorkFailed
from sci.store.hashing import digest_bytes

TABLE_ROWS = 50  # data rows of a CSV shown inline; the rest is counted, not shown
TEXT_CHARS = 20_000  # characters of a text evidence file shown inline
MAX_INLINE_BYTES = 32 * 1024 * 1024  # a larger figure is listed, not embedded
KEY_PREFIX = 12
_NONE = '<span class="none">none</span>'

_MEDIA_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".webp": "image/webp", ".svg": "image/svg+xml", ".csv": "text/csv",
    ".tsv": "text/tab-separated-values", ".txt": "text/plain", ".md": "text/markdown",
    ".json": "application/json", ".html": "text/html", ".pdf": "application/pdf",
}
_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml"}
_TABLES = {"text/csv": ",", "text/tab-separated-values": "\t"}
_TEXTS = {"text/plain", "text/markdown", "application/json"}


class EvidenceError(WorkFailed):
    """An evidence file given to the page is missing or does not match its recorded digest."""


def media_type_for(path: str) -> str:
    """The media type recorded for an evidence file, from its suffix.

    A fixed table rather than `mimetypes`, whose answers depend on the host's
    /etc/mime.types: the dossier must not.
    """
    name = path.rsplit("/", 1)[-1].lower()
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    return _MEDIA_TYPES.get(suffix, "application/octet-stream")


def reproduce_commands(target: str = "dossier", *, remote: str | None = None) -> list[str]:
    """The shell commands that rebuild `target` and prove it, for the dossier's `reproduce`.

    `remote` names the remote store to pull from first ("default" for `remotes.default`),
    or None when results are rebuilt from scratch.
    """
    commands = []
    if remote is not None:
        commands.append("sci pull" if remote == "default" else f"sci pull --remote {shlex.quote(remote)}")
    commands.append(f"sci build {shlex.quote(target)}")
    commands.append(f"sci repro-check {shlex.quote(target)}")
    return commands


# -- small formatters ------------------------------------------------------------------------

def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)


def _value(value: Any) -> str:
    """A value as a reader expects it: strings bare, everything else as JSON."""
    return value if isinstance(value, str) else _json(value)


def _size(n: int) -> str:
    """Bytes in binary units with one decimal: '532 B', '12.3 KiB'."""
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _digest(d: str) -> str:
    return f'<code class="digest" title="{_e(d)}">{_e(d[:KEY_PREFIX])}</code>'


def _href(url: str) -> str | None:
    """`url` if it is safe to link (http or https), else None: no javascript: links."""
    return url if url.startswith(("https://", "http://")) else None


def _kv_list(mapping: dict, *, digests: bool = False) -> str:
    """A sorted `key value` list; values are digests (shortened) or plain values."""
    if not mapping:
        return _NONE
    rows = "".join(f"<li><code>{_e(k)}</code> {_digest(mapping[k]) if digests else _e(_value(mapping[k]))}</li>"
                   for k in sorted(mapping))
    return f'<ul class="kv">{rows}</ul>'


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table from pre-escaped cells."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


# -- sections --------------------------------------------------------------------------------

def _header(experiment: dict, version: str) -> str:
    parts = [f"<h1>{_e(experiment.get('title', 'Untitled experiment'))}</h1>"]
    if experiment.get("question"):
        parts.append(f'<p class="question"><span class="label">Question</span> {_e(experiment["question"])}</p>')
    authors = []
    for a in experiment.get("authors") or []:
        bits = [f'<span class="name">{_e(a["name"])}</span>']
        if a.get("affiliation"):
            bits.append(f'<span class="aff">{_e(a["affiliation"])}</span>')
        if a.get("orcid"):
            bits.append(f'<a class="orcid" href="https://orcid.org/{_e(a["orcid"])}">ORCID {_e(a["orcid"])}</a>')
        if a.get("email"):
            bits.append(f'<a href="mailto:{_e(a["email"])}">{_e(a["email"])}</a>')
        authors.append("<li>" + " · ".join(bits) + "</li>")
    if authors:
        parts.append(f'<ul class="authors">{"".join(authors)}</ul>')
    if experiment.get("description"):
        paras = [p for p in str(experiment["description"]).split("\n\n") if p.strip()]
        parts.extend(f'<p class="description">{_e(p)}</p>' for p in paras)
    meta = [f'<dt>License</dt><dd>{_e(experiment["license"])}</dd>'] if experiment.get("license") else []
    if experiment.get("keywords"):
        tags = "".join(f'<span class="tag">{_e(k)}</span>' for k in experiment["keywords"])
        meta.append(f"<dt>Keywords</dt><dd>{tags}</dd>")
    if experiment.get("doi"):
        meta.append(f'<dt>DOI</dt><dd><a href="https://doi.org/{_e(experiment["doi"])}">{_e(experiment["doi"])}</a></dd>')
    if experiment.get("url"):
        url = _href(experiment["url"])
        link = f'<a href="{_e(url)}">{_e(url)}</a>' if url else _e(experiment["url"])
        meta.append(f"<dt>URL</dt><dd>{link}</dd>")
    meta.append(f'<dt>Dossier version</dt><dd><code class="version">{_e(version)}</code></dd>')
    parts.append(f'<dl class="meta">{"".join(meta)}</dl>')
    return "<header>" + "".join(parts) + "</header>"


def _graph(nodes: list[dict], edges: list) -> str:
    names = [n["node"] for n in nodes]
    labels = {n["node"]: f'{n["node"]}\n{n.get("key", "")[:KEY_PREFIX]}' for n in nodes}
    svg = render_svg(names, [(u, v) for u, v in edges], labels)
    return ('<section id="graph"><h2>Pipeline</h2><p class="hint">Upstream on the left; each box '
            f'shows a node and the first {KEY_PREFIX} hex digits of its cache key.</p>'
            f'<div class="dag scroll">{svg}</div></section>')


def _status(node: dict) -> str:
    status = node.get("exit_status", 0)
    text = '<span class="ok">ok</span>' if status == 0 else f'<span class="bad">failed (exit {_e(status)})</span>'
    if node.get("determinism") == "fast":
        text += ' <span class="warn" title="declared nondeterministic (determinism: fast)">nondeterministic</span>'
    return text


def _outputs(outputs: dict) -> str:
    if not outputs:
        return '<span class="none">none</span>'
    items = []
    for name in sorted(outputs):
        o = outputs[name]
        items.append(f'<li><code>{_e(name)}</code> {_e(o.get("path", ""))} '
                     f'<span class="dim">({_e(o.get("type", ""))}, {_size(int(o.get("size", 0)))})</span> '
                     f'{_digest(o.get("digest", ""))}</li>')
    return f'<ul class="kv">{"".join(items)}</ul>'


def _nodes(nodes: list[dict]) -> str:
    rows = []
    for n in nodes:
        comp = n.get("components") or {}
        rows.append([
            f'<code class="node">{_e(n["node"])}</code>',
            _e(n.get("step", "")),
            _status(n),
            _digest(n.get("key", "")),
            _e(n.get("seed", "")),
            _kv_list(comp.get("params") or {}),
            _kv_list(comp.get("code") or {}, digests=True),
            _outputs(n.get("outputs") or {}),
            _kv_list(n.get("metrics") or {}),
        ])
    table = _table(["Node", "Step", "Status", "Key", "Seed", "Params", "Code", "Outputs", "Metrics"],
                   rows, "nodes")
    return f'<section id="nodes"><h2>Nodes</h2>{table}</section>'


def _csv_table(data: bytes, delimiter: str) -> str:
    text = data.decode("utf-8-sig", errors="replace")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    if not rows:
        return '<p class="none">empty table</p>'
    head, body = rows[0], rows[1:]
    shown = body[:TABLE_ROWS]

    def cell(value: str) -> str:
        try:
            float(value)
            return f'<span class="num">{_e(value)}</span>'
        except ValueError:
            return _e(value)

    table = _table([_e(h) for h in head], [[cell(c) for c in r] for r in shown], "evidence-table")
    note = (f'<p class="hint">Showing the first {len(shown)} of {len(body)} rows.</p>'
            if len(body) > len(shown) else f'<p class="hint">{len(body)} rows.</p>')
    return table + note


def _evidence_body(entry: dict, data: bytes) -> str:
    media = entry.get("media_type") or media_type_for(entry["path"])
    if media in _IMAGES:
        if len(data) > MAX_INLINE_BYTES:
            return f'<p class="none">Image too large to embed ({_size(len(data))}).</p>'
        uri = f"data:{media};base64,{base64.b64encode(data).decode('ascii')}"
        return f'<img class="evidence-figure" src="{uri}" alt="{_e(entry["path"])}">'
    if media in _TABLES:
        return _csv_table(data, _TABLES[media])
    if media in _TEXTS or media.startswith("text/"):
        text = data.decode("utf-8", errors="replace")
        cut = text[:TEXT_CHARS]
        more = f'<p class="hint">Showing {TEXT_CHARS} of {len(text)} characters.</p>' if len(text) > len(cut) else ""
        return f"<pre>{_e(cut)}</pre>{more}"
    return f'<p class="none">Not shown inline ({_e(media)}).</p>'


def _lineage(lin: dict | None) -> str:
    if not lin:
        return ""
    chain = " → ".join(f"<code>{_e(n)}</code>" for n in lin.get("nodes") or []) or _NONE
    seeds = _kv_list(lin.get("seeds") or {})
    return ('<details class="lineage"><summary>Lineage</summary><dl>'
            f"<dt>Nodes</dt><dd>{chain}</dd>"
            f"<dt>Sources</dt><dd>{_kv_list(lin.get('sources') or {}, digests=True)}</dd>"
            f"<dt>Code</dt><dd>{_kv_list(lin.get('code') or {}, digests=True)}</dd>"
            f"<dt>Params</dt><dd>{_kv_list(lin.get('params') or {})}</dd>"
            f"<dt>Seeds</dt><dd>{seeds}</dd></dl></details>")


def _evidence(evidence: list[dict], files: dict[str, bytes], lineage: dict) -> str:
    figures = []
    for i, entry in enumerate(evidence, 1):
        path = entry["path"]
        if path not in files:
            raise EvidenceError(f"evidence file {path} was not given to the dossier page",
                                hint="pass every evidence file's bytes to render_html")
        data = files[path]
        if digest_bytes(data) != entry.get("digest"):
            raise EvidenceError(f"evidence file {path} does not match its recorded digest",
                                hint="rebuild the dossier; something changed the file after it was recorded")
        caption = (f'<figcaption><code>{_e(path)}</code> <span class="dim">{_e(entry.get("media_type", ""))}, '
                   f'{_size(len(data))}</span> {_digest(entry["digest"])}</figcaption>')
        figures.append(f'<figure class="evidence" id="evidence-{i}">{caption}'
                       f"{_evidence_body(entry, data)}{_lineage(lineage.get(path))}</figure>")
    body = "".join(figures) or '<p class="none">No evidence files were declared.</p>'
    return f'<section id="evidence"><h2>Evidence</h2>{body}</section>'


def _environment(env: dict) -> str:
    comps = env.get("components") or {}
    rows = [[f"<code>{_e(k)}</code>", f"<code>{_e(_value(comps[k]))}</code>"] for k in sorted(comps)]
    table = _table(["Component", "Value"], rows, "env")
    return (f'<section id="environment"><h2>Environment</h2><p>Fingerprint '
            f'<code class="digest">{_e(env.get("digest", ""))}</code></p>{table}</section>')


def _reproduce(commands: list[str]) -> str:
    text = "\n".join(commands or reproduce_commands())
    return ('<section id="reproduce"><h2>How to reproduce</h2><p>In a clone of the workspace, run:</p>'
            f'<pre class="commands"><code>{_e(text)}</code></pre><p class="hint"><code>sci repro-check</code> '
            "rebuilds everything from scratch and exits non-zero if any output differs from the hashes "
            "recorded here.</p></section>")


def _cite(experiment: dict, version: str) -> str:
    bib = citation.bibtex(experiment, version, [])
    cff = citation.cff(experiment, version, [])
    return ('<section id="cite"><h2>How to cite</h2>'
            f'<pre class="bibtex"><code>{_e(bib)}</code></pre>'
            f'<details><summary>CITATION.cff</summary><pre><code>{_e(cff)}</code></pre></details></section>')


def render_html(dossier: dict, evidence_files: dict[str, bytes]) -> bytes:
    """The dossier page as UTF-8 bytes, a pure function of `dossier` and the evidence bytes.

    `evidence_files` maps each evidence path to its bytes; a missing file or one whose
    digest differs from the dossier's raises EvidenceError.
    """
    experiment = dossier.get("experiment") or {}
    version = (dossier.get("citation") or {}).get("version") or citation.dossier_version(dossier)
    nodes = dossier.get("nodes") or []
    title = experiment.get("title", "sci dossier")
    fast = sum(1 for n in nodes if n.get("determinism") == "fast")
    summary = (f'{len(nodes)} nodes · {len(dossier.get("edges") or [])} edges · '
               f'{len(dossier.get("evidence") or [])} evidence files · '
               + (f"{fast} declared nondeterministic" if fast else "all strict (bit-for-bit reproducible)"))
    sweeps = plots.section(dossier)
    body = [
        _header(experiment, version),
        f'<nav><p class="summary">{_e(summary)}</p><a href="#graph">Pipeline</a> <a href="#nodes">Nodes</a> '
        + ('<a href="#sweeps">Sweeps</a> ' if sweeps else "")
        + '<a href="#evidence">Evidence</a> <a href="#environment">Environment</a> '
        '<a href="#reproduce">Reproduce</a> <a href="#cite">Cite</a></nav>',
        "<main>",
        _graph(nodes, dossier.get("edges") or []),
        _nodes(nodes),
        *([sweeps] if sweeps else []),
        _evidence(dossier.get("evidence") or [], evidence_files, dossier.get("lineage") or {}),
        _environment(dossier.get("environment") or {}),
        _reproduce(dossier.get("reproduce") or []),
        _cite(experiment, version),
        "</main>",
        '<footer>Generated by sci from dossier.json; this page makes no network requests.</footer>',
    ]
    page = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        '<link rel="icon" href="data:,">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}\n{plots.CSS}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
    ]
    return ("\n".join(page) + "\n").encode("utf-8")


_CSS = """
:root{color-scheme:light;--fg:#111827;--dim:#6b7280;--line:#e5e7eb;--accent:#4f46e5;--bg2:#f9fafb}
*{box-sizing:border-box}
body{margin:0 auto;max-width:78rem;padding:1.5rem 1.5rem 3rem;font:15px/1.5 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:#fff}
h1{font-size:1.7rem;line-height:1.25;margin:.2rem 0 .6rem}
h2{font-size:1.2rem;margin:2.2rem 0 .6rem;padding-bottom:.2rem;border-bottom:1px solid var(--line)}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:.85em}
pre{background:var(--bg2);border:1px solid var(--line);padding:.7rem .9rem;overflow:auto;border-radius:4px}
a{color:var(--accent)}
.question{font-size:1.1rem;border-left:4px solid var(--accent);padding:.3rem .8rem;background:var(--bg2)}
.label{font-weight:600;color:var(--accent);margin-right:.4rem}
.authors{list-style:none;padding:0;margin:.4rem 0}
.authors .name{font-weight:600}
.aff,.dim,.hint,.none{color:var(--dim)}
.hint{font-size:.9em}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.8rem 0}
dl.meta dt,.lineage dt{font-weight:600}
dl.meta dd,.lineage dd{margin:0}
.tag{display:inline-block;background:#eef2ff;color:#3730a3;border-radius:3px;padding:0 .4rem;margin:0 .3rem .2rem 0}
.version{word-break:break-all}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid var(--line);padding:.4rem 0;z-index:1}
nav a{margin-right:1rem}
nav .summary{margin:0 0 .2rem;color:var(--dim);font-size:.9em}
.scroll{overflow:auto}
.dag{max-height:80vh;border:1px solid var(--line);border-radius:4px;background:#fff}
.dag svg{display:block}
table{border-collapse:collapse;font-size:.88em;width:100%}
table.evidence-table{width:auto;min-width:40%}
section{scroll-margin-top:4.5rem}
th,td{border:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:var(--bg2);position:sticky;top:0}
ul.kv{list-style:none;margin:0;padding:0}
.num{font-variant-numeric:tabular-nums;display:block;text-align:right}
.ok{color:#047857;font-weight:600}
.bad{color:#b91c1c;font-weight:600}
.warn{color:#92400e;background:#fef3c7;border-radius:3px;padding:0 .3rem}
figure.evidence{margin:1rem 0 1.6rem;padding:0}
figcaption{margin-bottom:.5rem}
img.evidence-figure{max-width:100%;height:auto;border:1px solid var(--line);background:#fff}
details{margin:.5rem 0}
summary{cursor:pointer;color:var(--accent)}
footer{margin-top:3rem;color:var(--dim);font-size:.85em}
@media print{nav{position:static}.dag{max-height:none}}
""".strip()
