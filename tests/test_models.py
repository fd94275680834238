"""Record models and their published JSON Schemas: documented, current, and in agreement."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from sci import canonical
from sci.store.hashing import digest_bytes
from sci.records.models import (
    MODELS,
    Dossier,
    ExperimentRequest,
    RunManifest,
    StepRecord,
    StepResult,
    schema_text,
    schemas,
    write_schemas,
)

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "docs" / "schemas"
D = "0123456789abcdef" * 4


def step_result() -> dict:
    components = {"format": 1, "definition": {"cmd": "python rules/simulate.py --noise 0.1", "outs": {
        "samples": "data/samples-0.1.npy"}, "sandbox": True, "determinism": "strict", "env": {}},
        "deps": {"data/raw.txt": D}, "code": {"rules/simulate.py": D}, "params": {"simulate.n": 1000},
        "environment": D, "seed": 42}
    return {
        "format": 1, "type": "sci.step_result", "key": digest_bytes(canonical.dumps(components)),
        "node": "simulate[noise=0.1]", "step": "simulate", "components": components,
        "outputs": {"samples": {"path": "data/samples-0.1.npy", "type": "file", "digest": D, "size": 8000}},
        "exit_status": 0, "seed": 42, "determinism": "strict", "stdout": D, "stderr": D,
        "metrics": {"rmse": 0.5},
        "environment": {"components": {"python": "3.11.7"}, "digest": D},
        "volatile": {"start": "2026-11-22T10:00:00.000000Z", "end": "2026-11-22T10:00:01.500000Z",
                     "duration_s": 1.5, "host": "lab-1", "executor": "local"},
    }


def run_manifest() -> dict:
    return {
        "format": 1, "type": "sci.run_manifest", "kind": "build", "sci_version": "0.1.0", "git_commit": None,
        "pipeline_digest": D, "params_digest": D,
        "environment": {"components": {"python": "3.11.9"}, "digest": D},
        "determinism": "strict", "root_seed": 20261122, "command": ["build", "dossier"],
        "targets": ["dossier"],
        "plan": [
            {"node": "simulate[noise=0.1]", "step": "simulate", "key": D, "status": "executed",
             "outputs": {"samples": {"path": "data/samples-0.1.npy", "type": "file", "digest": D, "size": 8}}},
            {"node": "fit", "step": "fit", "key": None, "status": "skipped", "outputs": {}},
        ],
        "volatile": {"run_id": "20261122T100000Z-1a2b", "started": "2026-11-22T10:00:00Z",
                     "finished": "2026-11-22T10:00:02Z", "duration_s": 2.0, "host": "lab-1",
                     "executor": "local", "durations": {"simulate[noise=0.1]": 1.5},
                     "python_executable": "/usr/bin/python3"},
    }


def experiment() -> dict:
    return {"title": "Damping", "question": "How biased?",
            "authors": [{"name": "Ada Lovelace", "orcid": "0000-0002-1825-0097"}],
            "license": "CC-BY-4.0", "keywords": ["oscillator"]}


def dossier() -> dict:
    node = step_result()
    del node["volatile"]
    return {
        "format": 2, "type": "sci.dossier", "experiment": experiment(), "nodes": [node], "edges": [],
        "workflow": {"path": "sci.yaml", "copied_as": "pipeline.sci.yaml", "digest": D, "size": 120},
        "evidence": [{"path": "data/samples-0.1.npy", "digest": D, "size": 8000,
                      "media_type": "application/octet-stream"}],
        "lineage": {"data/samples-0.1.npy": {
            "producer": "simulate[noise=0.1]", "nodes": ["simulate[noise=0.1]"],
            "inputs": [{"node": "simulate[noise=0.1]", "path": "data/raw.txt", "digest": D, "producer": None}],
            "code": {"rules/simulate.py": D}, "params": {"simulate.n": 1000}, "seeds": {"simulate[noise=0.1]": 42},
            "sources": {"data/raw.txt": D}, "upstream": {}}},
        "environment": {"components": {}, "digest": D},
        "reproduction": {"state": "reproduced", "mismatch": None, "nodes": {"simulate[noise=0.1]": {
            "status": "match", "run_id": "20261122T101500.000000Z-42"}}, "check": {
            "run_id": "20261122T101500.000000Z-42", "checked_at": "2026-11-22T10:15:00.000000Z",
            "target": "dossier", "environment": D, "nodes": 1, "nondeterministic": []}},
        "citation": {"title": "Damping", "authors": experiment()["authors"], "license": "CC-BY-4.0",
                     "version": D, "keywords": ["oscillator"]},
        "reproduce": ["sci build dossier", "sci repro-check dossier"],
    }


EXAMPLES = {"ExperimentRequest": experiment, "StepResult": step_result, "RunManifest": run_manifest,
            "Dossier": dossier}


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schemas()[name])


# -- the published schemas -------------------------------------------------------------------

def test_committed_schemas_are_current():
    """Fails when a model changed and docs/schemas/ was not regenerated (`sci schema`)."""
    expected = {f"{name}.schema.json": schema_text(s) for name, s in schemas().items()}
    found = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob("*.schema.json")}
    assert sorted(found) == sorted(expected)
    stale = [name for name in expected if found[name] != expected[name]]
    assert stale == [], f"regenerate docs/schemas/ (sci schema): stale {stale}"


def test_write_schemas_is_stable(tmp_path):
    first = write_schemas(tmp_path / "schemas")
    texts = [p.read_bytes() for p in first]
    again = write_schemas(tmp_path / "schemas")
    assert [p.name for p in first] == ["Dossier.schema.json", "ExperimentRequest.schema.json",
                                       "RunManifest.schema.json", "StepResult.schema.json"]
    assert again == first and [p.read_bytes() for p in again] == texts


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_is_valid_draft_2020_12(name):
    Draft202012Validator.check_schema(schemas()[name])


def _properties(node, where=""):
    """Every (path, property schema) in a schema, through $defs, items and anyOf."""
    if isinstance(node, dict):
        for key, value in (node.get("properties") or {}).items():
            yield f"{where}.{key}", value
        for key, value in node.items():
            if key != "properties":
                yield from _properties(value, f"{where}/{key}")
        for key, value in (node.get("properties") or {}).items():
            yield from _properties(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _properties(value, f"{where}[{i}]")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_field_is_described(name):
    props = list(_properties(schemas()[name]))
    assert len(props) >= 8  # the walk reaches nested models, not just the top level
    missing = sorted({path for path, prop in props if not prop.get("description")})
    assert missing == []


# -- records: the models and the schemas agree ---------------------------------------------------

@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_records_validate(name):
    record = EXAMPLES[name]()
    MODELS[name].model_validate(record)
    _validator(name).validate(record)
    # canonical JSON of the validated model is the record itself: names and shapes match exactly
    assert canonical.dumps(MODELS[name].model_validate(record).model_dump(mode="json", exclude_unset=True)) == canonical.dumps(record)


MUTATIONS = [
    ("StepResult", lambda r: r.update(extra=1)),
    ("StepResult", lambda r: r.update(determinism="sloppy")),
    ("StepResult", lambda r: r.update(key="ABC")),
    ("StepResult", lambda r: r["outputs"]["samples"].update(type="symlink")),
    ("StepResult", lambda r: r["components"].pop("seed")),
    ("StepResult", lambda r: r.pop("volatile")),
    ("RunManifest", lambda r: r["plan"][0].update(status="done")),
    ("RunManifest", lambda r: r.update(type="sci.manifest")),
    ("RunManifest", lambda r: r["volatile"].pop("run_id")),
    ("Dossier", lambda r: r["nodes"][0].update(volatile={})),
    ("Dossier", lambda r: r["citation"].update(date="2026-11-22")),
    ("Dossier", lambda r: r.update(edges=[["a"]])),
    ("Dossier", lambda r: r["experiment"].update(unknown="x")),
    ("ExperimentRequest", lambda r: r.update(authors=[])),
    ("ExperimentRequest", lambda r: r["authors"][0].update(orcid="0000-0002-1825-009")),
    ("ExperimentRequest", lambda r: r.update(license="CC BY 4.0")),
    ("ExperimentRequest", lambda r: r.update(doi="https://doi.org/10.1000/x")),
]


@pytest.mark.parametrize("name,mutate", MUTATIONS)
def test_model_and_schema_both_refuse_a_bad_record(name, mutate):
    record = EXAMPLES[name]()
    mutate(record)
    with pytest.raises(ValidationError):
        MODELS[name].model_validate(record)
    assert list(_validator(name).iter_errors(record)) != []


def test_orcid_check_digit_is_verified():
    ok = experiment()
    ExperimentRequest.model_validate(ok)
    typo = copy.deepcopy(ok)
    typo["authors"][0]["orcid"] = "0000-0002-1825-0098"
    with pytest.raises(ValidationError, match="check digit"):
        ExperimentRequest.model_validate(typo)
    x_digit = copy.deepcopy(ok)
    x_digit["authors"][0]["orcid"] = "0000-0002-9079-593X"
    ExperimentRequest.model_validate(x_digit)


def test_dossier_nodes_are_step_results_without_volatile():
    assert set(StepResult.model_fields) - set(StepRecord.model_fields) == {"volatile"}
    assert Dossier.model_fields["nodes"].annotation == list[StepRecord]
    RunManifest.model_validate(run_manifest())


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
_authors = st.lists(st.fixed_dictionaries({"name": _text}, optional={"affiliation": _text}), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(title=_text, question=_text, authors=_authors, keywords=st.lists(_text, max_size=4),
       license=st.sampled_from(["MIT", "CC-BY-4.0", "CC0-1.0", "Apache-2.0 OR MIT", "GPL-2.0 WITH Classpath-exception-2.0"]),
       extra=st.booleans())
def test_model_and_schema_agree_on_experiments(title, question, authors, keywords, license, extra):
    record = {"title": title, "question": question, "authors": authors, "license": license, "keywords": keywords}
    if extra:
        record["editor"] = "someone"
    schema_ok = not list(_validator("ExperimentRequest").iter_errors(record))
    try:
        ExperimentRequest.model_validate(record)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert schema_ok == model_ok == (not extra)
