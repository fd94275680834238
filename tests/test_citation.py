"""Citations: BibTeX that parses, CFF that meets the CFF 1.2.0 schema, CSL-JSON, Markdown, and
the dossier's version digest."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import bibtexparser
import pytest
from bibtexparser.bparser import BibTexParser
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator
from ruamel.yaml import YAML

from sci import canonical
from sci.evidence import citation
from sci.store.hashing import digest_bytes

V = "5271ebce77be832aeddc1635e3160f3580ad5e1edb679b337502f918397060ee"
EXPERIMENT = {
    "title": "Recovering the damping ratio of a noisy oscillator",
    "question": "How does measurement noise bias the fitted damping ratio?",
    "description": "Simulated oscillators, fitted by least squares.",
    "authors": [
        {"name": "Ada Lovelace", "orcid": "0000-0002-1825-0097", "affiliation": "Analytical Engines Ltd",
         "email": "ada@example.org"},
        {"name": "Ludwig van Beethoven"},
        {"name": "Plato"},
    ],
    "license": "CC-BY-4.0",
    "keywords": ["oscillator", "least squares"],
    "doi": "10.5281/zenodo.1003150",
    "url": "https://example.org/oscillator",
}
PARENT = {"title": "Oscillator measurements", "authors": [{"name": "Charles Babbage"}], "license": "MIT",
          "version": "c" * 64, "keywords": []}
CSL_TYPES = {"article", "book", "dataset", "document", "report", "software", "webpage"}


def _parse_bibtex(text: str) -> list[dict]:
    parser = BibTexParser(common_strings=False)
    parser.ignore_nonstandard_types = False
    return bibtexparser.loads(text, parser=parser).entries


_UNTEX = {r"\textbackslash{}": "\\", r"\textbraceleft{}": "{", r"\textbraceright{}": "}",
          r"\textasciitilde{}": "~", r"\textasciicircum{}": "^", r"\&": "&", r"\%": "%", r"\$": "$",
          r"\#": "#", r"\_": "_"}
_UNTEX_RE = re.compile("|".join(re.escape(k) for k in sorted(_UNTEX, key=len, reverse=True)))


def _untex(text: str) -> str:
    return _UNTEX_RE.sub(lambda m: _UNTEX[m.group(0)], text)


def _cff_schema() -> dict | None:
    """The CFF 1.2.0 JSON Schema shipped inside the cffconvert package, read without importing it
    (cffconvert pins an old jsonschema; only its data file is used)."""
    spec = importlib.util.find_spec("cffconvert")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "schemas" / "1.2.0" / "schema.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


CFF_SCHEMA = _cff_schema()


def _check_cff(text: str) -> dict:
    """Parse CITATION.cff text and check it: against the official schema when available, and
    always against the fields sci promises."""
    data = YAML(typ="safe", pure=True).load(text)
    if CFF_SCHEMA is not None:
        errors = sorted(Draft7Validator(CFF_SCHEMA).iter_errors(data), key=lambda e: list(e.path))
        assert errors == [], [f"{list(e.path)}: {e.message}" for e in errors]
    allowed = {"cff-version", "message", "type", "title", "abstract", "authors", "version", "doi", "url",
               "license", "keywords", "identifiers", "references"}
    assert set(data) <= allowed
    assert data["cff-version"] == "1.2.0" and data["type"] == "dataset"
    assert isinstance(data["message"], str) and data["message"]
    assert isinstance(data["title"], str) and data["title"]
    assert data["authors"] and all(isinstance(a, dict) and ("family-names" in a or "name" in a)
                                   for a in data["authors"])
    assert all(set(a) <= {"family-names", "given-names", "name-particle", "name", "orcid", "affiliation", "email"}
               for a in data["authors"])
    return data


# -- BibTeX ----------------------------------------------------------------------------------

def test_bibtex_parses_with_the_expected_fields():
    entries = _parse_bibtex(citation.bibtex(EXPERIMENT, V, [PARENT]))
    assert [e["ENTRYTYPE"] for e in entries] == ["misc", "misc"]
    main = next(e for e in entries if e["ID"] == "lovelace5271ebce")
    parent = next(e for e in entries if e["ID"] != main["ID"])
    assert main["title"] == "{" + EXPERIMENT["title"] + "}"
    assert main["author"] == "Lovelace, Ada and van Beethoven, Ludwig and {Plato}"
    assert main["version"] == V and main["license"] == "CC-BY-4.0"
    assert main["doi"] == "10.5281/zenodo.1003150"
    assert main["keywords"] == "oscillator, least squares"
    assert main["related"] == parent["ID"] == "babbagecccccccc"
    assert "year" not in main and "date" not in main


def test_bibtex_keys_stay_unique():
    twin = dict(PARENT)
    entries = _parse_bibtex(citation.bibtex(EXPERIMENT, V, [twin, twin, {"title": "anon", "authors": []}]))
    ids = [e["ID"] for e in entries]
    assert len(ids) == 4 and len(set(ids)) == 4


_hostile = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30)


@settings(max_examples=50, deadline=None)
@given(title=_hostile.filter(lambda s: s.strip()), name=_hostile.filter(lambda s: s.strip()))
def test_bibtex_survives_any_text(title, name):
    exp = {**EXPERIMENT, "title": title, "authors": [{"name": name}]}
    entries = _parse_bibtex(citation.bibtex(exp, V, [PARENT]))
    assert len(entries) == 2
    main = entries[0] if entries[0]["ID"].endswith("5271ebce") else entries[1]
    assert _untex(main["title"][1:-1]) == " ".join(title.split())


# -- CITATION.cff ----------------------------------------------------------------------------

def test_cff_is_valid():
    data = _check_cff(citation.cff(EXPERIMENT, V, [PARENT]))
    assert data["title"] == EXPERIMENT["title"]
    assert data["version"] == V
    assert data["authors"][0] == {"family-names": "Lovelace", "given-names": "Ada",
                                  "orcid": "https://orcid.org/0000-0002-1825-0097",
                                  "affiliation": "Analytical Engines Ltd", "email": "ada@example.org"}
    assert data["authors"][1] == {"family-names": "Beethoven", "given-names": "Ludwig", "name-particle": "van"}
    assert data["authors"][2] == {"family-names": "Plato"}
    assert data["references"][0]["title"] == PARENT["title"]
    assert data["identifiers"] == [{"type": "other", "value": f"blake3:{V}",
                                    "description": "BLAKE3 digest of dossier.json without citation.version"}]
    assert "date-released" not in data


def test_cff_schema_is_really_checked():
    if CFF_SCHEMA is None:
        pytest.skip("the cffconvert package (which ships the CFF 1.2.0 schema) is not installed")
    bad = YAML(typ="safe", pure=True).load(citation.cff(EXPERIMENT, V, []))
    bad["authors"][0]["orcid"] = "0000-0002-1825-0097"  # CFF wants the https://orcid.org/ form
    assert list(Draft7Validator(CFF_SCHEMA).iter_errors(bad)) != []


@settings(max_examples=60, deadline=None)
@given(title=_hostile.filter(lambda s: s.strip()), name=_hostile.filter(lambda s: s.strip()),
       keywords=st.lists(_hostile, max_size=3), with_parent=st.booleans())
def test_cff_is_valid_for_any_text(title, name, keywords, with_parent):
    exp = {**EXPERIMENT, "title": title, "authors": [{"name": name}, {"name": name}], "keywords": keywords}
    data = _check_cff(citation.cff(exp, V, [PARENT] if with_parent else []))
    assert data["title"] == title


# -- CSL-JSON and Markdown -------------------------------------------------------------------

def test_csl_json_fields():
    item = citation.csl_json(EXPERIMENT, V, [PARENT])
    assert json.loads(json.dumps(item)) == item
    assert item["type"] in CSL_TYPES and item["type"] == "dataset"
    assert item["id"] == "lovelace5271ebce"
    assert item["title"] == EXPERIMENT["title"] and item["version"] == V
    assert item["author"] == [{"family": "Lovelace", "given": "Ada"},
                              {"family": "Beethoven", "given": "Ludwig", "non-dropping-particle": "van"},
                              {"literal": "Plato"}]
    assert item["DOI"] == EXPERIMENT["doi"] and item["URL"] == EXPERIMENT["url"]
    assert item["keyword"] == "oscillator, least squares"
    assert "Babbage, C. Oscillator measurements" in item["note"]
    assert not {"issued", "accessed", "submitted"} & set(item)


def test_markdown():
    text = citation.markdown(EXPERIMENT, V, [PARENT])
    assert text.startswith("Lovelace, A., van Beethoven, L., & Plato. *Recovering the damping ratio")
    assert f"`{V}`" in text and "<https://doi.org/10.5281/zenodo.1003150>" in text
    assert "- Babbage, C. Oscillator measurements (version cccccccccccc)" in text
    assert citation.markdown({**EXPERIMENT, "title": "a*b_[c]"}, V, []).count(r"a\*b\_\[c\]") == 1


def test_a_bare_experiment_still_gives_valid_citations():
    """sci.yaml may leave out authors, license and keywords; every format still holds up."""
    bare = {"title": "Untitled {draft}", "question": "Why?"}
    assert len(_parse_bibtex(citation.bibtex(bare, V, []))) == 1
    assert _check_cff(citation.cff(bare, V, []))["authors"] == [{"name": "anonymous"}]
    assert citation.csl_json(bare, V, [])["author"] == []
    assert citation.markdown(bare, V, []).startswith("*Untitled {draft}*")


@pytest.mark.parametrize("fn", [citation.bibtex, citation.csl_json, citation.cff, citation.markdown])
def test_renderers_are_pure(fn):
    assert fn(EXPERIMENT, V, [PARENT]) == fn(json.loads(json.dumps(EXPERIMENT)), V, [dict(PARENT)])


@pytest.mark.parametrize("name,expected", [
    ("Ada Lovelace", ("Ada", "", "Lovelace")),
    ("Ludwig van Beethoven", ("Ludwig", "van", "Beethoven")),
    ("Johann  Sebastian   Bach", ("Johann Sebastian", "", "Bach")),
    ("Plato", ("", "", "Plato")),
    ("de la Fontaine, Jean", ("Jean", "de la", "Fontaine")),
    ("Charles de Gaulle", ("Charles", "de", "Gaulle")),
])
def test_split_name(name, expected):
    assert citation.split_name(name) == expected


# -- the version digest ----------------------------------------------------------------------

def _dossier() -> dict:
    return {"format": 1, "type": "sci.dossier", "experiment": EXPERIMENT, "nodes": [], "edges": [],
            "evidence": [], "lineage": {}, "environment": {"components": {}, "digest": "e" * 64},
            "citation": citation.citation_block(EXPERIMENT), "reproduce": ["sci build dossier"]}


def test_version_is_the_digest_of_the_dossier_without_it():
    sealed = citation.seal(_dossier())
    unversioned = json.loads(json.dumps(sealed))
    del unversioned["citation"]["version"]
    assert sealed["citation"]["version"] == digest_bytes(canonical.dumps(unversioned))
    assert citation.dossier_version(sealed) == sealed["citation"]["version"]
    assert citation.seal(sealed) == sealed  # sealing is idempotent


@settings(max_examples=40, deadline=None)
@given(other=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), command=st.text(max_size=20))
def test_version_ignores_itself_and_sees_everything_else(other, command):
    base = citation.seal(_dossier())
    assert citation.dossier_version({**base, "citation": {**base["citation"], "version": other}}) \
        == base["citation"]["version"]
    changed = citation.seal({**_dossier(), "reproduce": ["sci build dossier", command]})
    assert changed["citation"]["version"] != base["citation"]["version"]
