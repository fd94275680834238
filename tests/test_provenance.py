"""Standard provenance (SPEC §13): `sci export --format ro-crate` writes a Workflow Run RO-Crate
(Provenance Run Crate profile) that roc-validator accepts and ro-crate-py reads; `--format prov`
writes W3C PROV-JSON that the `prov` library reads back; the dossier directory carries its own
crate, byte-stable and valid once the dossier cites a reproduction check.

    raw/{3,1,2}.txt ──▶ clean[i] ──▶ gen[i] ──▶ summary ──▶ dossier (steps: [gen, summary])
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import no_traceback
from rocrate_check import INLINE_TERMS, USED_TERMS_IN_1_1, terms, validate
from test_dossier_claims import FILES

pytest.importorskip("rocrate_validator", reason="roc-validator is in the dev group")


def _graph(crate_dir: Path) -> dict[str, dict]:
    doc = json.loads((crate_dir / "ro-crate-metadata.json").read_text())
    assert terms(doc) <= USED_TERMS_IN_1_1 | INLINE_TERMS  # nothing the context would drop
    return {e["@id"]: e for e in doc["@graph"]}


def _list(v) -> list:
    return v if isinstance(v, list) else [v]


def test_export_ro_crate_validates_and_describes_every_node(ws):
    from rocrate.rocrate import ROCrate

    sci = ws(FILES)
    sci.build("summary")
    proc = sci("export", "summary", "--format", "ro-crate")
    crate_dir = Path(proc.stdout.strip())
    run_ids = [p.name for p in (ws.root / "runs").iterdir()]
    assert crate_dir.parent.parent == ws.root / "runs" and crate_dir.parent.name in run_ids
    assert crate_dir.name == "ro-crate"
    assert validate(crate_dir) == []
    crate = ROCrate(crate_dir)  # ro-crate-py reads it
    assert crate.mainEntity.id == "sci.yaml"
    graph = _graph(crate_dir)
    # the crate holds the pipeline, the target's output, the code; the rest is described
    assert (crate_dir / "sci.yaml").read_bytes() == (ws.root / "sci.yaml").read_bytes()
    assert (crate_dir / "results" / "summary.txt").read_bytes() == (ws.root / "results" / "summary.txt").read_bytes()
    files = [e for e in graph.values() if e.get("@type") in ("File", "Dataset") and e["@id"] != "./"]
    assert files and all(e["identifier"].startswith("blake3:") for e in files)
    assert graph["results/summary.txt"]["sha256"]
    assert "#file:data/1.txt" in graph and "#file:raw/1.txt" in graph
    # every executed node is an action with inputs, outputs, environment, parameters and timing
    actions = [e for e in graph.values() if e.get("@type") == "CreateAction" and e["@id"] != "#run"]
    assert sorted(a["name"] for a in actions) == sorted(
        ["clean[i=3]", "clean[i=1]", "clean[i=2]", "gen[i=3]", "gen[i=1]", "gen[i=2]", "summary"])
    for a in actions:
        assert a["instrument"]["@id"].startswith("#tool-")
        assert _list(a["object"]) and _list(a["result"]) and a["environment"]
        assert a["startTime"] <= a["endTime"]
    summary = next(a for a in actions if a["name"] == "summary")
    assert {o["@id"] for o in _list(summary["object"])} == {"#file:data/1.txt", "#file:data/2.txt", "#file:data/3.txt"}
    assert _list(summary["result"]) == [{"@id": "results/summary.txt"}]
    env = {graph[e["@id"]]["name"]: graph[e["@id"]]["value"] for e in _list(summary["environment"])}
    assert env["python"] and env["sci environment fingerprint"].startswith("blake3:")


def test_export_prov_reads_back_with_the_prov_library(ws, tmp_path):
    import prov.model as pm

    sci = ws(FILES)
    sci.build("summary")
    out = tmp_path / "run.prov.json"
    proc = sci("export", "summary", "--format", "prov", "-o", str(out))
    assert proc.stdout.strip() == str(out)
    doc = pm.ProvDocument.deserialize(source=str(out), format="json")
    activities = {str(a.get_attribute("prov:label").pop()): a for a in doc.get_records(pm.ProvActivity)}
    assert set(activities) == {"clean[i=3]", "clean[i=1]", "clean[i=2]", "gen[i=3]", "gen[i=1]", "gen[i=2]",
                               "summary"}
    assert all(a.get_startTime() and a.get_endTime() for a in activities.values())
    entities = {str(next(iter(e.get_attribute("prov:label")), "")): e for e in doc.get_records(pm.ProvEntity)}
    digest = next(iter(entities["results/summary.txt"].get_attribute("sci:digest")))
    assert digest.startswith("blake3:")
    generated = {(str(g.args[0]), str(g.args[1])) for g in doc.get_records(pm.ProvGeneration)}
    assert ("file:results/summary.txt", "node:summary") in generated
    used = {(str(u.args[0]), str(u.args[1])) for u in doc.get_records(pm.ProvUsage)}
    assert ("node:summary", "file:data/1.txt") in used and ("node:gen%5Bi=1%5D", "file:clean/1.txt") in used
    derived = {(str(d.args[0]), str(d.args[1])) for d in doc.get_records(pm.ProvDerivation)}
    assert ("file:data/1.txt", "file:clean/1.txt") in derived
    # the same records give the same bytes
    again = tmp_path / "again.json"
    sci("export", "summary", "--format", "prov", "-o", str(again))
    assert again.read_bytes() == out.read_bytes()


def test_export_refuses_what_is_not_built_and_bundle_still_needs_o(ws):
    sci = ws(FILES)
    proc = sci("export", "summary", "--format", "ro-crate", check=2)
    assert "is not built" in proc.stderr and no_traceback(proc.stderr)
    sci.build("summary")
    proc = sci("export", "summary", check=2)
    assert "--format bundle needs -o" in proc.stderr


def test_dossier_directory_carries_a_pure_crate_valid_once_reproduced(ws):
    sci = ws(FILES)
    sci("build", "dossier")
    crate_dir = ws.root / "dossier"
    first = (crate_dir / "ro-crate-metadata.json").read_bytes()
    graph = _graph(crate_dir)
    assert "datePublished" not in graph["./"]  # no date is earned before a check
    assert graph["./"]["mainEntity"] == {"@id": "pipeline.sci.yaml"}
    assert (crate_dir / "pipeline.sci.yaml").read_bytes() == (ws.root / "sci.yaml").read_bytes()
    for name in ("dossier.json", "index.html", "CITATION.cff", "citation.bib"):
        assert graph[name]["sha256"] and graph[name]["identifier"].startswith("blake3:")
    issues = validate(crate_dir)
    assert [i[1] for i in issues] == ["ro-crate-1.1_8.4"]  # datePublished, and nothing else
    check = json.loads(sci("repro-check", "dossier", "--json").stdout)
    sci("build", "dossier")
    assert validate(crate_dir) == []
    graph = _graph(crate_dir)
    assert graph["./"]["datePublished"] == check["checked_at"][:10]
    assert (crate_dir / "ro-crate-metadata.json").read_bytes() != first
    # the crate is part of the dossier: its rebuild reproduces it byte for byte
    again = json.loads(sci("repro-check", "dossier", "--json").stdout)
    assert again["verdict"] == "reproduced"
