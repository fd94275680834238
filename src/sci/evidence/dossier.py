"""The built-in `kind: dossier` step: gathers the indexed nodes' records and writes the dossier.

Two halves: `prepare` runs in the scheduler and builds the dossier's input document (the
ExperimentRequest, the indexed nodes' StepResults without volatile fields, edges, evidence,
lineage, environment); its digest enters the dossier node's key. `build_step` runs in the
node's sandbox like any Python step and turns that document plus the evidence files into
`dossier.json`, `index.html`, `CITATION.cff` and `citation.bib` — bytes that are a pure
function of the input, so `sci repro-check dossier` can pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sci import canonical
from sci.records import run as records
from sci.store.hashing import digest_bytes

INPUT_FILE = ".sci-dossier-input.json"
# The pipeline file's copy in the dossier directory: not named sci.yaml, or `sci` run inside
# the dossier would take the directory for a workspace.
WORKFLOW_COPY = "pipeline.sci.yaml"
DOSSIER_FORMAT = records.DOSSIER_FORMAT


def prepare(node, outcomes: dict, graph, store, experiment: dict | None, environment: dict,
            root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(extra key inputs, files for the sandbox) for a dossier node whose upstream is done.

    The input document holds everything the dossier shows, so its digest in the key makes the
    dossier a pure function of it: the indexed nodes' StepResults (in declaration order),
    the edges among them, the evidence files' digests, where each dep of an indexed node
    comes from (lineage), the environment, and the reproduction claim earned by repro-check
    records of the indexed nodes' current keys (claims.py)."""
    from sci.evidence import claims
    from sci.evidence.page import media_type_for
    from sci.workspace import RUNS_DIR

    indexed = [n for n, step in graph.step_of.items() if step in node.dossier_steps]
    results = []
    keys: dict[str, str] = {}
    for name in indexed:
        oc = outcomes.get(name)
        if oc is None or oc.key is None:
            continue
        keys[name] = oc.key
        rec = getattr(oc, "result", None) or store.get_action(oc.key)
        if rec is not None:
            results.append(records.without_volatile(rec))
    names = set(indexed)
    edges = sorted([u, d] for d in indexed for u in graph.upstream[d] if u in names)
    # where each dep of an indexed node comes from: another node's output (indexed or not)
    origin = {s.path: s.producer for n in indexed for s in graph.sources[n] if s.producer is not None}
    evidence = []
    by_path = {o["path"]: o for r in results for o in r["outputs"].values()}
    for path in node.evidence:
        rec = by_path.get(path)
        if rec is None:
            from sci.store.hashing import digest_file

            rec = {"path": path, "digest": digest_file(root / path), "size": (root / path).stat().st_size,
                   "type": "file"}
            producer = graph.producer_of.get(path)
            if producer is not None:
                origin[path] = producer
        evidence.append({"path": path, "digest": rec["digest"], "size": rec["size"],
                         "media_type": media_type_for(path)})
    from sci.workspace import PIPELINE_FILE

    pipeline = (root / PIPELINE_FILE).read_bytes()
    doc = {
        "experiment": experiment,
        "workflow": {"path": PIPELINE_FILE, "text": pipeline.decode("utf-8")},
        "nodes": results,
        "sweeps": sweeps(node, graph, {r["node"] for r in results}),
        "edges": edges,
        "evidence": evidence,
        "lineage": lineage(evidence, results, edges, origin),
        "environment": environment,
        "reproduction": claims.claim(root / RUNS_DIR, keys),
        "dossier_node": node.name,
    }
    text = canonical.dumps_text(doc)
    return {"dossier_input": digest_bytes(text.encode()), "implementation": implementation_digest()}, {INPUT_FILE: text}


def sweeps(node, graph, recorded: set[str]) -> list[dict]:
    """The `foreach` steps among the indexed ones: their keys, and their recorded nodes with
    their items, in declaration order (what the page's sweep plots are drawn from)."""
    out = []
    for step in node.dossier_steps:
        names = [n for n in graph.nodes_of_step(step) if n in recorded]
        items = [graph.nodes[n].item for n in names]
        if not names or not items[0]:
            continue
        keys = list(items[0])
        out.append({"step": step, "keys": keys,
                    "nodes": [{"node": n, "item": item} for n, item in zip(names, items)]})
    return out


def implementation_digest() -> str:
    """The dossier is written by sci's own code, not the workspace's: its source files count
    as the node's code, so a changed page layout rebuilds the dossier even within one version."""
    here = Path(__file__).parent
    files = ("dossier.py", "page.py", "dag_svg.py", "plots.py", "citation.py", "claims.py", "provenance.py",
             "../canonical.py")
    parts = {name: digest_bytes((here / name).read_bytes()) for name in files}
    return digest_bytes(canonical.dumps(parts))


def lineage(evidence: list[dict], results: list[dict], edges: list[list[str]],
            origin: dict[str, str]) -> dict[str, Any]:
    """For every evidence file: the graph that made it, drawn back to workspace sources.

    `producer`: the indexed node that wrote the file (None: the file is itself a source, or
    an output of a node outside the dossier's steps). `nodes`: every indexed node it comes
    from, upstream first (ties in declaration order). `inputs`: the edges, each a file one of
    those nodes read — with its digest and `producer`, the node that wrote it, or None for a
    workspace source. `sources`: the workspace files at the bottom; `upstream`: files written
    by nodes outside the dossier's `steps:` (not sources: their producer is named). `origin`:
    dep path → the node that produces it (from the graph). Plus the code, params and seeds.
    """
    by_node = {r["node"]: r for r in results}
    position = {r["node"]: i for i, r in enumerate(results)}
    producer = {o["path"]: r["node"] for r in results for o in r["outputs"].values()}
    ups: dict[str, list[str]] = {}
    for u, d in edges:
        ups.setdefault(d, []).append(u)
    out: dict[str, Any] = {}
    for entry in evidence:
        path = entry["path"]
        start = producer.get(path)
        chain: set[str] = set()
        stack = [start] if start else []
        while stack:
            n = stack.pop()
            if n not in chain:
                chain.add(n)
                stack.extend(ups.get(n, []))
        nodes = _upstream_first(chain, ups, position)
        code: dict[str, str] = {}
        params: dict[str, Any] = {}
        seeds: dict[str, int] = {}
        sources: dict[str, str] = {}
        upstream: dict[str, dict] = {}
        inputs: list[dict] = []
        for n in nodes:
            r = by_node[n]
            code.update(r["components"]["code"])
            params.update(r["components"]["params"])
            seeds[n] = r["seed"]
            for dep, digest in sorted(r["components"]["deps"].items()):  # a fresh result keeps declaration order
                frm = producer.get(dep) or origin.get(dep)
                inputs.append({"node": n, "path": dep, "digest": digest, "producer": frm})
                if frm is None:
                    sources[dep] = digest
                elif frm not in by_node:
                    upstream[dep] = {"node": frm, "digest": digest}
        if start is None:  # the evidence file is not an indexed node's output
            frm = origin.get(path)
            if frm is None:
                sources[path] = entry["digest"]
            else:
                upstream[path] = {"node": frm, "digest": entry["digest"]}
        out[path] = {"producer": start, "nodes": nodes, "inputs": inputs, "code": code, "params": params,
                     "seeds": seeds, "sources": sources, "upstream": upstream}
    return out


def _upstream_first(chain: set[str], ups: dict[str, list[str]], position: dict[str, int]) -> list[str]:
    """`chain` in topological order, upstream first; among ready nodes, declaration order."""
    import heapq

    indeg = {n: sum(1 for u in ups.get(n, []) if u in chain) for n in chain}
    downs: dict[str, list[str]] = {}
    for n in chain:
        for u in ups.get(n, []):
            if u in chain:
                downs.setdefault(u, []).append(n)
    ready = [(position[n], n) for n, d in indeg.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for m in downs.get(n, []):
            indeg[m] -= 1
            if indeg[m] == 0:
                heapq.heappush(ready, (position[m], m))
    return order


def assemble(doc: dict) -> dict:
    """The Dossier record, sealed: `citation.version` is the digest of everything else."""
    from sci.evidence.citation import citation_block, seal
    from sci.evidence.page import reproduce_commands

    experiment = doc.get("experiment") or {}
    workflow = doc["workflow"]["text"].encode("utf-8")
    dossier = {
        "format": DOSSIER_FORMAT,
        "type": "sci.dossier",
        "experiment": experiment,
        "workflow": {"path": doc["workflow"]["path"], "copied_as": WORKFLOW_COPY, "digest": digest_bytes(workflow),
                     "size": len(workflow)},
        "nodes": doc["nodes"],
        "sweeps": doc.get("sweeps") or [],
        "edges": doc["edges"],
        "evidence": doc["evidence"],
        "lineage": doc["lineage"],
        "environment": doc["environment"],
        "reproduction": doc["reproduction"],
        "reproduce": reproduce_commands(doc["dossier_node"]),
        "citation": citation_block(experiment),
    }
    return seal(dossier)


def build_step(ctx) -> None:
    """The dossier node's function (runs in its sandbox)."""
    doc = json.loads(Path(INPUT_FILE).read_text(encoding="utf-8"))
    out_dir = next(iter(ctx.outs.values()))
    out_dir.mkdir(parents=True, exist_ok=True)
    dossier = assemble(doc)
    workflow_text = doc["workflow"]["text"]
    (out_dir / "dossier.json").write_bytes(canonical.dumps(dossier) + b"\n")
    evidence_files = {e["path"]: Path(e["path"]).read_bytes() for e in dossier["evidence"] if Path(e["path"]).exists()}
    from sci.evidence import citation
    from sci.evidence.page import render_html

    (out_dir / "index.html").write_bytes(render_html(dossier, evidence_files, workflow_text=workflow_text))
    if dossier["experiment"]:
        exp, version = dossier["experiment"], dossier["citation"]["version"]
        parents = evidence_works(dossier)
        (out_dir / "CITATION.cff").write_text(citation.cff(exp, version, parents), encoding="utf-8")
        (out_dir / "citation.bib").write_text(citation.bibtex(exp, version, parents), encoding="utf-8")
    (out_dir / WORKFLOW_COPY).write_bytes(workflow_text.encode("utf-8"))
    write_crate(out_dir, dossier)


def write_crate(out_dir: Path, dossier: dict) -> None:
    """ro-crate-metadata.json for the dossier directory (evidence/provenance.py): the dossier's
    files and the pipeline file are in the crate; the pipeline's own files are described by
    digest. Its date is the date of the reproduction check the dossier cites, if any: a
    dossier carries no other date (its bytes are a pure function of its inputs)."""
    from sci.evidence import provenance
    from sci.evidence.page import media_type_for
    from sci.store.hashing import digest_file

    included = {}
    for path in sorted(p.name for p in out_dir.iterdir() if p.is_file() and p.name != provenance.CRATE_FILE):
        if path == WORKFLOW_COPY:
            continue
        f = out_dir / path
        included[path] = {"digest": digest_file(f), "size": f.stat().st_size, "sha256": provenance.sha256_file(f),
                          "media_type": media_type_for(path)}
    wf = dict(dossier["workflow"], path=WORKFLOW_COPY, sha256=provenance.sha256_file(out_dir / WORKFLOW_COPY))
    check = (dossier.get("reproduction") or {}).get("check")
    view = provenance.view_of_nodes(
        experiment=dossier["experiment"], nodes=dossier["nodes"], workflow=wf, environment=dossier["environment"],
        targets=[e["path"] for e in dossier["evidence"]], included=included, engine=dossier["environment"].get(
            "components", {}).get("sci", ""), date=check["checked_at"][:10] if check else None,
        producers={p: u["node"] for lin in dossier["lineage"].values() for p, u in (lin.get("upstream") or {}).items()})
    (out_dir / provenance.CRATE_FILE).write_bytes(provenance.crate_bytes(view))


def evidence_works(dossier: dict) -> list[dict]:
    """The dossier's evidence files as citable parent artifacts (title, version = digest)."""
    exp = dossier.get("experiment") or {}
    return [{"title": f"{exp.get('title', 'sci dossier')}: {e['path']}", "version": e["digest"],
             "authors": exp.get("authors", []), "license": exp.get("license")}
            for e in dossier.get("evidence", [])]
