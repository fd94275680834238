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
import re
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


def _chips(mapping: dict) -> str:
    """A sorted `key value` list that wraps like words (metrics: many short numbers)."""
    if not mapping:
        return _NONE
    rows = "".join(f"<li><code>{_e(k)}</code> {_e(_value(mapping[k]))}</li>" for k in sorted(mapping))
    return f'<ul class="chips">{rows}</ul>'


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table from pre-escaped cells. Each cell carries its column's name
    (`data-label`), which a narrow screen shows when it stacks the cells of a row."""
    th = "".join(f"<th>{h}</th>" for h in head)
    labels = [escape(re.sub(r"<[^>]*>", "", h), quote=True) for h in head]
    body = "".join("<tr>" + "".join(f'<td data-label="{labels[i] if i < len(labels) else ""}">{c}</td>'
                                     for i, c in enumerate(row)) + "</tr>" for row in rows)
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


def _status(node: dict, check: dict | None = None) -> str:
    """The node's exit, its declared determinism, and what repro-check found for its key."""
    status = node.get("exit_status", 0)
    text = '<span class="ok">ok</span>' if status == 0 else f'<span class="bad">failed (exit {_e(status)})</span>'
    if node.get("determinism") == "fast":
        text += ' <span class="warn" title="declared nondeterministic (determinism: fast)">nondeterministic</span>'
    if check:
        label = {"match": ("ok", "reproduced"), "mismatch": ("bad", "did not reproduce"),
                 "env-drift": ("bad", "did not reproduce (environment changed)"),
                 "nondeterministic-declared": ("dim", "rebuilt, not compared")}.get(check.get("status"))
        if label:
            text += (f' <span class="{label[0]} check" title="sci repro-check run {_e(check.get("run_id", ""))}">'
                     f'{_e(label[1])}</span>')
    return text


def _outputs(outputs: dict) -> str:
    if not outputs:
        return '<span class="none">none</span>'
    items = []
    for name in sorted(outputs):
        o = outputs[name]
        items.append(f'<li><span class="path">{_e(o.get("path", ""))}</span> '
                     f'<span class="dim">{_size(int(o.get("size", 0)))}{" dir" if o.get("type") == "tree" else ""}'
                     f'</span> {_digest(o.get("digest", ""))}</li>')
    return f'<ul class="kv">{"".join(items)}</ul>'


def _code_summary(code: dict) -> str:
    """A node's or step's code files, collapsed: the count and one digest of them all (the
    digest of the canonical path → digest mapping), the list inside a <details>."""
    if not code:
        return _NONE
    from sci import canonical

    whole = digest_bytes(canonical.dumps(code))
    files = "".join(f"<li><code>{_e(k)}</code> {_digest(code[k])}</li>" for k in sorted(code))
    return (f'<details class="code"><summary>{len(code)} file{"s" if len(code) != 1 else ""} '
            f'{_digest(whole)}</summary><ul class="kv">{files}</ul></details>')


def _shared(nodes: list[dict], field: str) -> dict:
    """The entries of components[field] that every node of a step has with the same value."""
    maps = [(n.get("components") or {}).get(field) or {} for n in nodes]
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(k in m and m[k] == v for m in maps[1:])}


def _step_group(step: str, nodes: list[dict], checks: dict) -> str:
    """One step: what its nodes share (kind, code, params) once, then a row per node."""
    kinds = {((n.get("components") or {}).get("definition") or {}).get("kind") for n in nodes} - {None}
    code = _shared(nodes, "code")
    same_code = all(((n.get("components") or {}).get("code") or {}) == code for n in nodes)
    params = _shared(nodes, "params")
    head = [f'<h3><code>{_e(step)}</code> <span class="dim">{len(nodes)} node{"s" if len(nodes) != 1 else ""}'
            + (f" · {_e(', '.join(sorted(kinds)))}" if kinds else "") + "</span></h3>", '<dl class="step-meta">']
    if same_code:
        head.append(f"<dt>Code</dt><dd>{_code_summary(code)}</dd>")
    if params:
        head.append(f"<dt>Params</dt><dd>{_kv_list(params)}</dd>")
    head.append("</dl>")
    varying = any(set(((n.get("components") or {}).get("params") or {})) - set(params) for n in nodes)
    with_metrics = any(n.get("metrics") for n in nodes)
    cols = ["Node", "Status", "Key", "Seed"] + (["Params"] if varying else []) + ([] if same_code else ["Code"]) \
        + ["Outputs"] + (["Metrics"] if with_metrics else [])
    rows = []
    for n in nodes:
        comp = n.get("components") or {}
        own = {k: v for k, v in (comp.get("params") or {}).items() if k not in params}
        row = [f'<code class="node">{_e(n["node"])}</code>', _status(n, checks.get(n["node"])),
               _digest(n.get("key", "")), f'<span class="seed">{_e(n.get("seed", ""))}</span>']
        if varying:
            row.append(_kv_list(own))
        if not same_code:
            row.append(_code_summary(comp.get("code") or {}))
        row.append(_outputs(n.get("outputs") or {}))
        if with_metrics:
            row.append(_chips(n.get("metrics") or {}))
        rows.append(row)
    return f'<div class="step" id="step-{_e(_slug(step))}">{"".join(head)}{_table(cols, rows, "nodes")}</div>'


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _nodes(nodes: list[dict], reproduction: dict | None = None) -> str:
    """The nodes grouped by step, steps and sweep items in the order the dossier lists them
    (declaration order)."""
    checks = (reproduction or {}).get("nodes") or {}
    steps: dict[str, list[dict]] = {}
    for n in nodes:
        steps.setdefault(n.get("step") or n["node"], []).append(n)
    body = "".join(_step_group(step, group, checks) for step, group in steps.items()) or _NONE
    return (f'<section id="nodes"><h2>Nodes</h2><p class="hint">Grouped by step; what a step\'s nodes share is '
            f"shown once. Code is collapsed to a count and one digest: open it for the files.</p>{body}</section>")


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


def _lineage(path: str, lin: dict | None, anchor: str) -> str:
    """An evidence file's lineage as a graph written as a list, downstream first: the node
    that wrote the file, then each node it came from, each with the files it read (the
    edges: path, digest, and the node that wrote it, linked), down to the workspace sources.
    Readable without JavaScript, and on a phone."""
    if not lin:
        return ""
    nodes = lin.get("nodes") or []
    inputs: dict[str, list[dict]] = {}
    for edge in lin.get("inputs") or []:
        inputs.setdefault(edge["node"], []).append(edge)
    upstream = lin.get("upstream") or {}
    sources = lin.get("sources") or {}

    def node_ref(name: str | None) -> str:
        if name is None:
            return '<span class="src">workspace source</span>'
        if name in nodes:
            return f'<a href="#{anchor}-{_slug(name)}"><code>{_e(name)}</code></a>'
        return f'<code>{_e(name)}</code> <span class="dim">(outside this dossier\'s steps)</span>'

    items = []
    producer = lin.get("producer")
    if producer is None:
        where = node_ref(upstream[path]["node"]) if path in upstream else node_ref(None)
        items.append(f"<li><code>{_e(path)}</code> is written by {where}</li>")
    for name in _downstream_first(nodes, inputs, producer):
        reads = sorted(inputs.get(name, []), key=lambda e: e["path"])
        role = "wrote this file, reading" if name == producer else "reading"
        edges = "".join(f'<li>← <code>{_e(e["path"])}</code> {_digest(e["digest"])} from {node_ref(e.get("producer"))}'
                        "</li>" for e in reads) or '<li class="none">no file inputs (code, parameters, seed)</li>'
        items.append(f'<li id="{anchor}-{_slug(name)}"><code class="node">{_e(name)}</code> '
                     f'<span class="dim">seed {_e((lin.get("seeds") or {}).get(name, ""))}</span> {role}'
                     f'<ul class="edges">{edges}</ul></li>')
    count = (f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, {len(sources)} workspace "
             f"source{'s' if len(sources) != 1 else ''}" + (f", {len(upstream)} file(s) from outside the "
                                                          "dossier's steps" if upstream else ""))
    return (f'<details class="lineage"><summary>Lineage: {_e(count)}</summary>'
            f'<ol class="lineage-graph">{"".join(items)}</ol><dl>'
            f"<dt>Sources</dt><dd>{_kv_list(sources, digests=True)}</dd>"
            f"<dt>Code</dt><dd>{_code_summary(lin.get('code') or {})}</dd>"
            f"<dt>Params</dt><dd>{_kv_list(lin.get('params') or {})}</dd></dl></details>")


def _downstream_first(nodes: list[str], inputs: dict[str, list[dict]], producer: str | None) -> list[str]:
    """`nodes` by their distance from the producer (the longest way down to it), nearest
    first; at equal distance, in the order the dossier lists them (declaration order)."""
    down: dict[str, set[str]] = {}
    for name, edges in inputs.items():
        for e in edges:
            if e.get("producer") in nodes:
                down.setdefault(e["producer"], set()).add(name)
    depth: dict[str, int] = {}
    for name in reversed(nodes):  # `nodes` is upstream first: every reader is placed before
        depth[name] = 0 if name == producer else 1 + max((depth[d] for d in down.get(name, ()) if d in depth),
                                                         default=-1)
    index = {n: i for i, n in enumerate(nodes)}
    return sorted(nodes, key=lambda n: (depth[n], index[n]))


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
                       f"{_evidence_body(entry, data)}{_lineage(path, lineage.get(path), f'lin-{i}')}</figure>")
    body = "".join(figures) or '<p class="none">No evidence files were declared.</p>'
    return f'<section id="evidence"><h2>Evidence</h2>{body}</section>'


_PLATFORM = ("python", "implementation", "os", "machine", "libc", "sci")


def _environment(env: dict) -> str:
    """The environment grouped: the platform in one line, the installed packages of the
    workspace's locks as a compact list, what the locks name but is not installed here
    collapsed (a lock lists every platform's and every group's packages), then the files,
    variables, tools and GPU the fingerprint covers."""
    comps = env.get("components") or {}
    rows = []
    platform = [f"{k} <code>{_e(_value(comps[k]))}</code>" for k in _PLATFORM if k in comps]
    if platform:
        rows.append(f'<dt>Platform</dt><dd>{" · ".join(platform)}</dd>')
    packages = comps.get("packages")
    if isinstance(packages, dict) and packages:
        installed = {k: v for k, v in packages.items() if v != "not-installed"}
        absent = sorted(k for k, v in packages.items() if v == "not-installed")
        chips = "".join(f'<li><code>{_e(k)}</code> {_e(_value(installed[k]))}</li>' for k in sorted(installed))
        text = (f'<details><summary>{len(installed)} installed, as the lock files pin them</summary>'
                f'<ul class="chips">{chips}</ul></details>' if chips else _NONE)
        if absent:
            text += (f'<details><summary>{len(absent)} more named by the lock, not installed here</summary>'
                     f'<p class="hint">Other platforms\' or optional groups\' packages: the steps could not '
                     f'import them.</p><p class="wrap">{_e(", ".join(absent))}</p></details>')
        rows.append(f"<dt>Packages</dt><dd>{text}</dd>")
    else:
        rows.append('<dt>Packages</dt><dd><span class="warn">no package versions recorded</span> '
                    '<span class="hint">(declare the lock file under <code>env: files:</code>, e.g. uv.lock)</span></dd>')
    for key, label, digests in (("files", "Files", True), ("vars", "Variables", False), ("tools", "Tools", False)):
        if comps.get(key):
            rows.append(f"<dt>{label}</dt><dd>{_kv_list(comps[key], digests=digests)}</dd>")
    if comps.get("gpu"):
        rows.append(f"<dt>GPU</dt><dd>{_kv_list(comps['gpu'] if isinstance(comps['gpu'], dict) else {'gpu': comps['gpu']})}</dd>")
    known = set(_PLATFORM) | {"packages", "files", "vars", "tools", "gpu"}
    for k in sorted(set(comps) - known):
        rows.append(f"<dt>{_e(k)}</dt><dd><code>{_e(_value(comps[k]))}</code></dd>")
    return (f'<section id="environment"><h2>Environment</h2><p>What the steps ran with. Fingerprint '
            f'<code class="digest wrap">{_e(env.get("digest", ""))}</code> (it enters every node\'s key).</p>'
            f'<dl class="env">{"".join(rows)}</dl></section>')


def _claims(dossier: dict) -> str:
    """What the dossier claims, each claim with how it was earned: the determinism the steps
    declared, and reproduction only as repro-check records prove it (evidence/claims.py)."""
    nodes = dossier.get("nodes") or []
    fast = [n["node"] for n in nodes if n.get("determinism") == "fast"]
    strict = len(nodes) - len(fast)
    declared = (f"{strict} of {len(nodes)} nodes declared strict (seeded, bit-for-bit expected)"
                + (f"; {len(fast)} declared nondeterministic: {', '.join(fast)}" if fast else ""))
    rep = dossier.get("reproduction") or {"state": "not-checked"}
    target = (dossier.get("reproduce") or ["sci repro-check dossier"])[-1]
    state = rep.get("state")
    if state == "reproduced":
        c = rep["check"]
        text = (f'<span class="ok">Reproduced.</span> <code>sci repro-check {_e(c["target"])}</code> '
                f'(run <code>{_e(c["run_id"])}</code>, {_e(c["checked_at"][:10])}) rebuilt all {c["nodes"]} '
                "strict nodes from scratch, ignoring every cached result, and matched the recorded outputs "
                "bit for bit.")
        if c.get("nondeterministic"):
            text += f" {len(c['nondeterministic'])} declared nondeterministic node(s) were rebuilt, not compared."
    elif state == "mismatch":
        m = rep["mismatch"]
        text = (f'<span class="bad">Not reproduced.</span> <code>sci repro-check {_e(m["target"])}</code> '
                f'(run <code>{_e(m["run_id"])}</code>, {_e(m["checked_at"][:10])}) rebuilt '
                f'{_e(", ".join(m["nodes"]))} with different outputs.')
    elif state == "partly-checked":
        done = sorted(n for n, v in (rep.get("nodes") or {}).items() if v.get("status") == "match")
        text = (f'<span class="warn">Declared strict, partly checked.</span> {len(done)} of {len(nodes)} nodes '
                f"matched in repro-check runs; no one check covered them all. Run <code>{_e(target)}</code>.")
    else:
        text = (f'<span class="warn">Declared strict, not yet checked.</span> No repro-check has rebuilt these '
                f"nodes yet. Run <code>{_e(target)}</code> to check, then rebuild the dossier.")
    packages = ((dossier.get("environment") or {}).get("components") or {}).get("packages")
    env = ("the environment fingerprint names package versions" if isinstance(packages, dict) and packages
           else '<span class="warn">the environment fingerprint names no package versions</span> (no lock file '
                "is declared under <code>env: files:</code>)")
    return ('<section id="claims" class="claims"><h2>Claims</h2><dl>'
            f"<dt>Reproduction</dt><dd>{text}</dd><dt>Determinism</dt><dd>{_e(declared)}</dd>"
            f"<dt>Environment</dt><dd>Recorded per node; {env}.</dd></dl></section>")


def _reproduce(commands: list[str], workflow: dict | None = None, workflow_text: str | None = None) -> str:
    text = "\n".join(commands or reproduce_commands())
    pipeline = ""
    if workflow and workflow_text is not None:
        pipeline = (f'<details><summary>The pipeline: <code>{_e(workflow["path"])}</code> {_digest(workflow["digest"])}'
                    f' (a copy is beside this page: <code>{_e(workflow.get("copied_as", ""))}</code>)</summary>'
                    f'<pre><code>{_e(workflow_text)}</code></pre></details>')
    return ('<section id="reproduce"><h2>How to reproduce</h2><p>In a clone of the workspace, run:</p>'
            f'<pre class="commands"><code>{_e(text)}</code></pre><p class="hint"><code>sci repro-check</code> '
            "rebuilds everything from scratch and exits non-zero if any output differs from the hashes "
            "recorded here.</p>" + pipeline + "</section>")


def _cite(experiment: dict, version: str) -> str:
    bib = citation.bibtex(experiment, version, [])
    cff = citation.cff(experiment, version, [])
    return ('<section id="cite"><h2>How to cite</h2>'
            f'<pre class="bibtex"><code>{_e(bib)}</code></pre>'
            f'<details><summary>CITATION.cff</summary><pre><code>{_e(cff)}</code></pre></details></section>')


def render_html(dossier: dict, evidence_files: dict[str, bytes], *, workflow_text: str | None = None) -> bytes:
    """The dossier page as UTF-8 bytes, a pure function of `dossier` and the evidence bytes.

    `evidence_files` maps each evidence path to its bytes; a missing file or one whose
    digest differs from the dossier's raises EvidenceError.
    """
    experiment = dossier.get("experiment") or {}
    version = (dossier.get("citation") or {}).get("version") or citation.dossier_version(dossier)
    nodes = dossier.get("nodes") or []
    title = experiment.get("title", "sci dossier")
    state = (dossier.get("reproduction") or {}).get("state", "not-checked")
    summary = (f'{len(nodes)} nodes · {len(dossier.get("edges") or [])} edges · '
               f'{len(dossier.get("evidence") or [])} evidence files · '
               + {"reproduced": "reproduced by repro-check", "mismatch": "NOT reproduced",
                  "partly-checked": "partly checked"}.get(state, "not yet checked"))
    sweeps = plots.section(dossier)
    body = [
        _header(experiment, version),
        f'<nav><p class="summary">{_e(summary)}</p><a href="#claims">Claims</a> <a href="#graph">Pipeline</a> '
        '<a href="#nodes">Nodes</a> '
        + ('<a href="#sweeps">Sweeps</a> ' if sweeps else "")
        + '<a href="#evidence">Evidence</a> <a href="#environment">Environment</a> '
        '<a href="#reproduce">Reproduce</a> <a href="#cite">Cite</a></nav>',
        "<main>",
        _claims(dossier),
        _graph(nodes, dossier.get("edges") or []),
        _nodes(nodes, dossier.get("reproduction")),
        *([sweeps] if sweeps else []),
        _evidence(dossier.get("evidence") or [], evidence_files, dossier.get("lineage") or {}),
        _environment(dossier.get("environment") or {}),
        _reproduce(dossier.get("reproduce") or [], dossier.get("workflow"), workflow_text),
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
dd,td,li,p{overflow-wrap:anywhere}
th,code.node,code.digest,.seed{white-space:nowrap}
h1{font-size:1.7rem;line-height:1.25;margin:.2rem 0 .6rem}
h2{font-size:1.2rem;margin:2.2rem 0 .6rem;padding-bottom:.2rem;border-bottom:1px solid var(--line)}
h3{font-size:1rem;margin:1.4rem 0 .3rem}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:.85em}
pre{background:var(--bg2);border:1px solid var(--line);padding:.7rem .9rem;border-radius:4px;
white-space:pre-wrap;overflow-wrap:anywhere}
a{color:var(--accent)}
.question{font-size:1.1rem;border-left:4px solid var(--accent);padding:.3rem .8rem;background:var(--bg2)}
.label{font-weight:600;color:var(--accent);margin-right:.4rem}
.authors{list-style:none;padding:0;margin:.4rem 0}
.authors .name{font-weight:600}
.aff,.dim,.hint,.none,.src{color:var(--dim)}
.hint{font-size:.9em}
dl.meta,dl.env,.claims dl,dl.step-meta{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.3rem 1rem;
margin:.8rem 0}
dl.meta dt,dl.env dt,.claims dt,dl.step-meta dt,.lineage dt{font-weight:600}
dl dd{margin:0;min-width:0}
dl.step-meta{margin:.2rem 0 .5rem;font-size:.92em}
.claims dl{background:var(--bg2);border:1px solid var(--line);border-radius:4px;padding:.7rem .9rem}
.tag{display:inline-block;background:#eef2ff;color:#3730a3;border-radius:3px;padding:0 .4rem;margin:0 .3rem .2rem 0}
.version,.wrap,code.wrap{word-break:break-all;white-space:normal}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid var(--line);padding:.4rem 0;z-index:1;
display:flex;flex-wrap:wrap;gap:.1rem 1rem;align-items:baseline}
nav .summary{margin:0;color:var(--dim);font-size:.9em;flex-basis:100%}
.scroll{overflow-x:auto;max-width:100%}
.dag{max-height:80vh;border:1px solid var(--line);border-radius:4px;background:#fff}
.dag svg{display:block;max-width:100%;height:auto}
table{border-collapse:collapse;font-size:.88em;width:100%}
table.evidence-table{width:auto;min-width:40%}
table.evidence-table td{white-space:nowrap;overflow-wrap:normal}
section{scroll-margin-top:5rem}
th,td{border:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:var(--bg2)}
ul.kv{list-style:none;margin:0;padding:0}
ul.chips{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:.1rem .9rem}
.num{font-variant-numeric:tabular-nums;display:block;text-align:right}
.ok{color:#047857;font-weight:600}
.bad{color:#b91c1c;font-weight:600}
.warn{color:#92400e;background:#fef3c7;border-radius:3px;padding:0 .3rem}
.check{font-size:.85em;display:inline-block}
.step{margin-bottom:1.2rem}
figure.evidence{margin:1rem 0 1.6rem;padding:0}
figcaption{margin-bottom:.5rem}
img.evidence-figure{max-width:100%;height:auto;border:1px solid var(--line);background:#fff}
details{margin:.3rem 0}
summary{cursor:pointer;color:var(--accent)}
ol.lineage-graph{padding-left:1.4rem}
ol.lineage-graph>li{margin:.4rem 0}
ul.edges{margin:.1rem 0 0;padding-left:1.2rem;font-size:.92em}
footer{margin-top:3rem;color:var(--dim);font-size:.85em}
@media (max-width:640px){
body{padding:1rem .8rem 2rem;font-size:14px}
h1{font-size:1.35rem}
table.nodes thead{display:none}
table.nodes,table.nodes tbody,table.nodes tr,table.nodes td{display:block;width:100%}
table.nodes tr{border:1px solid var(--line);border-radius:4px;margin:0 0 .6rem;padding:.2rem .1rem}
table.nodes td{border:0;padding:.1rem .5rem;display:grid;grid-template-columns:4.2rem minmax(0,1fr);gap:0 .5rem}
table.nodes td::before{content:attr(data-label);font-size:.85em;color:var(--dim)}
table.nodes td:first-child{display:block;font-weight:600;border-bottom:1px solid var(--line);margin-bottom:.2rem}
table.nodes td:first-child::before{content:none}
dl.meta,dl.env,.claims dl,dl.step-meta{grid-template-columns:minmax(0,1fr)}
dl.env dt,.claims dt{margin-top:.4rem}
}
@media print{nav{position:static}.dag{max-height:none}}
""".strip()
