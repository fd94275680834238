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
DOSSIER_FORMAT = 1


def prepare(node, outcomes: dict, graph, store, experiment: dict | None, environment: dict,
            root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(extra key inputs, files for the sandbox) for a dossier node whose upstream is done."""
    from sci.evidence.page import media_type_for

    indexed = sorted(n for n, m in graph.nodes.items() if m.step in node.dossier_steps)
    results = []
    for name in indexed:
        oc = outcomes.get(name)
        if oc is None or oc.key is None:
            continue
        rec = getattr(oc, "result", None) or store.get_action(oc.key)
        if rec is not None:
            results.append(records.without_volatile(rec))
    names = set(indexed)
    edges = sorted([u, d] for d in indexed for u in graph.upstream[d] if u in names)
    evidence = []
    by_path = {o["path"]: o for r in results for o in r["outputs"].values()}
    for path in node.evidence:
        rec = by_path.get(path)
        if rec is None:
            src = next((s for s in graph.sources[node.name] if s.path == path), None)
            digest = None
            if src is not None:
                from sci.store.hashing import digest_file

                digest = digest_file(root / path)
            rec = {"path": path, "digest": digest, "size": (root / path).stat().st_size, "type": "file"}
        evidence.append({"path": path, "digest": rec["digest"], "size": rec["size"],
                         "media_type": media_type_for(path)})
    doc = {
        "experiment": experiment,
        "nodes": results,
        "sweeps": sweeps(node, graph, {r["node"] for r in results}),
        "edges": edges,
        "evidence": evidence,
        "lineage": lineage(node.evidence, results, edges),
        "environment": environment,
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
    files = ("dossier.py", "page.py", "dag_svg.py", "plots.py", "citation.py", "../canonical.py")
    parts = {name: digest_bytes((here / name).read_bytes()) for name in files}
    return digest_bytes(canonical.dumps(parts))


def lineage(evidence: list[str], results: list[dict], edges: list[list[str]]) -> dict[str, Any]:
    """For every evidence file: the nodes behind it, and their code, params, seeds and sources."""
    by_node = {r["node"]: r for r in results}
    producer = {o["path"]: r["node"] for r in results for o in r["outputs"].values()}
    ups: dict[str, list[str]] = {}
    for u, d in edges:
        ups.setdefault(d, []).append(u)
    out: dict[str, Any] = {}
    for path in evidence:
        start = producer.get(path)
        chain: list[str] = []
        stack = [start] if start else []
        while stack:
            n = stack.pop()
            if n in chain:
                continue
            chain.append(n)
            stack.extend(ups.get(n, []))
        chain.sort()
        code: dict[str, str] = {}
        params: dict[str, Any] = {}
        seeds: dict[str, int] = {}
        sources: dict[str, str] = {}
        produced = set(producer)
        for n in chain:
            r = by_node[n]
            code.update(r["components"]["code"])
            params.update(r["components"]["params"])
            seeds[n] = r["seed"]
            for dep, digest in r["components"]["deps"].items():
                if dep not in produced:
                    sources[dep] = digest
        out[path] = {"nodes": chain, "code": code, "params": params, "seeds": seeds, "sources": sources}
    return out


def assemble(doc: dict) -> dict:
    """The Dossier record, sealed: `citation.version` is the digest of everything else."""
    from sci.evidence.citation import citation_block, seal
    from sci.evidence.page import reproduce_commands

    experiment = doc.get("experiment") or {}
    dossier = {
        "format": DOSSIER_FORMAT,
        "type": "sci.dossier",
        "experiment": experiment,
        "nodes": doc["nodes"],
        "sweeps": doc.get("sweeps") or [],
        "edges": doc["edges"],
        "evidence": doc["evidence"],
        "lineage": doc["lineage"],
        "environment": doc["environment"],
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
    (out_dir / "dossier.json").write_bytes(canonical.dumps(dossier) + b"\n")
    evidence_files = {e["path"]: Path(e["path"]).read_bytes() for e in dossier["evidence"] if Path(e["path"]).exists()}
    from sci.evidence import citation
    from sci.evidence.page import render_html

    (out_dir / "index.html").write_bytes(render_html(dossier, evidence_files))
    if dossier["experiment"]:
        exp, version = dossier["experiment"], dossier["citation"]["version"]
        parents = evidence_works(dossier)
        (out_dir / "CITATION.cff").write_text(citation.cff(exp, version, parents), encoding="utf-8")
        (out_dir / "citation.bib").write_text(citation.bibtex(exp, version, parents), encoding="utf-8")


def evidence_works(dossier: dict) -> list[dict]:
    """The dossier's evidence files as citable parent artifacts (title, version = digest)."""
    exp = dossier.get("experiment") or {}
    return [{"title": f"{exp.get('title', 'sci dossier')}: {e['path']}", "version": e["digest"],
             "authors": exp.get("authors", []), "license": exp.get("license")}
            for e in dossier.get("evidence", [])]
