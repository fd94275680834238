"""What a dossier claims, and how it is earned (SPEC §13): "reproduced" only from a repro-check
record that matched every node the dossier indexes; a later check of the same keys changes
nothing; the claim changes no other byte of the dossier's evidence; `repro-check dossier`
passes before and after; lineage is drawn back to workspace sources, correct when `steps:`
names only some steps.

    raw/{1,2,3}.txt ──▶ clean[i=1..3] ──▶ gen[i=1..3] ──▶ summary ──▶ dossier (steps: [gen, summary])
"""

from __future__ import annotations

import json
from pathlib import Path

from sci.evidence import claims

PIPELINE = """
version: 1
experiment: {title: Tiny, question: Does it reproduce?, authors: [{name: Ada Lovelace}], license: CC-BY-4.0}
steps:
  clean:
    foreach: {i: [3, 1, 2]}
    cmd: tr a-z A-Z < {deps} > {outs}
    deps: ["raw/{item.i}.txt"]
    outs: ["clean/{item.i}.txt"]
  gen:
    foreach: {i: [3, 1, 2]}
    cmd: python -c "import sys; open(sys.argv[1], 'w').write(open(sys.argv[3]).read() * int(sys.argv[2]))" {outs} {item.i} {deps}
    deps: ["clean/{item.i}.txt"]
    outs: ["data/{item.i}.txt"]
  summary:
    cmd: wc -c {deps} > {outs}
    deps: ["data/*.txt"]
    outs: [results/summary.txt]
  dossier:
    kind: dossier
    steps: [gen, summary]
    evidence: [results/summary.txt]
    outs: [dossier/]
"""
FILES = {"sci.yaml": PIPELINE, "raw/1.txt": "one\n", "raw/2.txt": "two\n", "raw/3.txt": "three\n"}


def _dossier(root: Path) -> dict:
    return json.loads((root / "dossier" / "dossier.json").read_text())


def test_reproduced_only_after_a_matching_check_and_stable_after(ws):
    sci = ws(FILES)
    sci("build", "dossier")
    before = _dossier(ws.root)
    assert before["reproduction"]["state"] == "not-checked"
    page = (ws.root / "dossier" / "index.html").read_text()
    assert "Declared strict, not yet checked." in page and "Reproduced." not in page
    files_before = {p.name: p.read_bytes() for p in (ws.root / "dossier").iterdir()}

    sci("build", "dossier")  # a no-op build records itself: the check below must still be seen
    first = json.loads(sci("repro-check", "dossier", "--json").stdout)
    assert first["verdict"] == "reproduced"
    sci("build", "dossier")  # the claim is an input: the dossier rebuilds
    assert sci.build("dossier")["executed"] == []
    after = _dossier(ws.root)
    claim = after["reproduction"]
    assert claim["state"] == "reproduced"
    assert claim["check"]["run_id"] == first["run_id"] and claim["check"]["target"] == "dossier"
    assert claim["check"]["nodes"] == 4 and claim["check"]["checked_at"] == first["checked_at"]
    assert set(claim["nodes"]) == {"gen[i=3]", "gen[i=1]", "gen[i=2]", "summary"}
    page = (ws.root / "dossier" / "index.html").read_text()
    assert "Reproduced." in page and first["run_id"] in page and first["checked_at"][:10] in page
    # nothing else changed: the evidence, the version digest, the citation files
    assert {k: v for k, v in after.items() if k != "reproduction"} == \
        {k: v for k, v in before.items() if k != "reproduction"}
    for name in ("CITATION.cff", "citation.bib"):
        assert (ws.root / "dossier" / name).read_bytes() == files_before[name]

    # the dossier that makes the claim reproduces too; a second check of the same keys
    # changes nothing, so the dossier stays built
    second = json.loads(sci("repro-check", "dossier", "--json").stdout)
    assert second["verdict"] == "reproduced"
    assert {n["node"]: n["status"] for n in second["nodes"]}["dossier"] == "match"
    assert sci.build("dossier")["executed"] == []
    assert _dossier(ws.root)["reproduction"]["check"]["run_id"] == first["run_id"]


def test_a_mismatching_check_is_never_hidden(ws, tmp_path):
    runs = tmp_path / "runs"

    def record(run: str, statuses: dict[str, str], keys: dict[str, str]) -> None:
        (runs / run).mkdir(parents=True)
        nodes = [{"node": n, "key": keys[n], "status": s, "files": [{"path": "x"}] if s != "match" else []}
                 for n, s in statuses.items()]
        (runs / run / "repro.json").write_text(json.dumps({"format": 2, "seed": None, "target": "t",
                                                            "checked_at": f"{run}Z", "nodes": nodes}))

    keys = {"a": "1" * 64, "b": "2" * 64}
    assert claims.claim(runs, keys)["state"] == "not-checked"
    record("20260101T000000.000000Z-1", {"a": "match"}, keys)
    assert claims.claim(runs, keys)["state"] == "partly-checked"
    record("20260102T000000.000000Z-1", {"a": "match", "b": "match"}, keys)
    c = claims.claim(runs, keys)
    assert c["state"] == "reproduced" and c["check"]["run_id"] == "20260102T000000.000000Z-1"
    assert c["nodes"]["a"]["run_id"] == "20260101T000000.000000Z-1"
    record("20260103T000000.000000Z-1", {"a": "match", "b": "mismatch"}, keys)
    c = claims.claim(runs, keys)
    assert c["state"] == "mismatch" and c["mismatch"]["nodes"] == ["b"]
    assert c["check"]["run_id"] == "20260102T000000.000000Z-1"  # both shown
    # another key (the node changed since) is not covered by these checks
    assert claims.claim(runs, {"a": "3" * 64})["state"] == "not-checked"
    # the records a rebuild must see are exactly those cited
    assert claims.records_used(runs, keys) == ["20260101T000000.000000Z-1", "20260102T000000.000000Z-1",
                                               "20260103T000000.000000Z-1"]


def test_lineage_is_a_graph_back_to_sources_and_names_outside_producers(ws):
    sci = ws(FILES)
    sci.build("dossier")
    d = _dossier(ws.root)
    # nodes in declaration order, sweep items as declared (3, 1, 2), never string order
    assert [n["node"] for n in d["nodes"]] == ["gen[i=3]", "gen[i=1]", "gen[i=2]", "summary"]
    lin = d["lineage"]["results/summary.txt"]
    assert lin["producer"] == "summary"
    assert lin["nodes"] == ["gen[i=3]", "gen[i=1]", "gen[i=2]", "summary"]
    edges = {(e["node"], e["path"], e["producer"]) for e in lin["inputs"]}
    assert ("summary", "data/1.txt", "gen[i=1]") in edges
    assert ("gen[i=1]", "clean/1.txt", "clean[i=1]") in edges
    # clean/*.txt are written by nodes outside the dossier's steps: not sources
    assert lin["sources"] == {}
    assert set(lin["upstream"]) == {"clean/1.txt", "clean/2.txt", "clean/3.txt"}
    assert lin["upstream"]["clean/1.txt"]["node"] == "clean[i=1]"
    page = (ws.root / "dossier" / "index.html").read_text()
    assert "outside this dossier&#x27;s steps" in page or "outside this dossier's steps" in page
    # with every step indexed, the raw files are the sources
    (ws.root / "sci.yaml").write_text(PIPELINE.replace("steps: [gen, summary]", "steps: [clean, gen, summary]"))
    sci.build("dossier")
    lin = _dossier(ws.root)["lineage"]["results/summary.txt"]
    assert set(lin["sources"]) == {"raw/1.txt", "raw/2.txt", "raw/3.txt"} and lin["upstream"] == {}
    assert lin["nodes"][:3] == ["clean[i=3]", "clean[i=1]", "clean[i=2]"]
