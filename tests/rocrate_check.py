"""Validating a crate offline with roc-validator (used by the provenance tests).

roc-validator resolves the crate's JSON-LD context over the network, which a test machine
does not have. The RO-Crate 1.1 context maps every term to schema.org (`Term` →
`http://schema.org/Term`) except a few; ro-crate-py ships the 1.3 context, whose schema.org
terms are a superset and which maps five of those few differently (bioschemas' /terms/
namespace, cite-as). The context served here is the 1.3 one with those five set back to
their 1.1 values, and `USED_TERMS_IN_1_1` (checked against the published 1.1 context) keeps
a term that only 1.3 defines from passing unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

# The 1.1 context's values for the terms the 1.3 context maps differently (published 1.1.3).
CONTEXT_1_1_DIFFERENCES = {
    "cite-as": "https://www.w3.org/ns/iana/link-relations/relation#cite-as",
    "ComputationalWorkflow": "https://bioschemas.org/ComputationalWorkflow",
    "input": "https://bioschemas.org/ComputationalWorkflow#input",
    "output": "https://bioschemas.org/ComputationalWorkflow#output",
    "FormalParameter": "https://bioschemas.org/FormalParameter",
}
# Every term sci's crates use, each of them defined by the published RO-Crate 1.1 context.
USED_TERMS_IN_1_1 = frozenset({
    "@id", "@type", "@context", "@graph", "CreativeWork", "Dataset", "File", "SoftwareSourceCode",
    "ComputationalWorkflow", "HowTo", "HowToStep", "ComputerLanguage", "SoftwareApplication", "FormalParameter",
    "PropertyValue", "CreateAction", "ControlAction", "OrganizeAction", "Person", "about", "conformsTo", "name",
    "description", "license", "datePublished", "mainEntity", "hasPart", "mentions", "author", "keywords",
    "affiliation", "programmingLanguage", "identifier", "input", "output", "step", "contentSize",
    "alternateName", "version", "softwareVersion", "position", "workExample", "additionalType", "multipleValues",
    "value", "exampleOfWork", "instrument", "object", "result", "actionStatus", "startTime", "endTime", "agent",
    "encodingFormat",
})
# Terms the crate's own inline context defines (evidence/provenance.py CONTEXT).
INLINE_TERMS = frozenset({"ParameterConnection", "connection", "sourceParameter", "targetParameter", "environment",
                          "sha256"})


def offline_context() -> dict:
    import rocrate

    bundled = json.loads((Path(rocrate.__file__).parent / "data" / "ro-crate.jsonld").read_text())
    return {"@context": {**bundled["@context"], **CONTEXT_1_1_DIFFERENCES}}


def terms(doc) -> set[str]:
    """Every key used anywhere in a JSON-LD document, and every @type value."""
    out: set[str] = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.add(k)
            if k == "@type":
                out.update([v] if isinstance(v, str) else v)
            elif k != "@context":
                out |= terms(v)
    elif isinstance(doc, list):
        for v in doc:
            out |= terms(v)
    return out


def validate(crate_dir: Path, profile: str = "provenance-run-crate") -> list[tuple[str, str, str]]:
    """(severity, check, message) of every REQUIRED issue roc-validator finds in `crate_dir`."""
    import rocrate_validator.utils.document_loader as loader
    import rocrate_validator.utils.http as http
    from rocrate_validator import models, services

    context = offline_context()
    requester = http.HttpRequester()  # a singleton that hands unknown attributes to its session
    original_fetch = loader._fetch_json_ld

    def fetch(url: str):
        if url.startswith("https://w3id.org/ro/crate/1.1/context"):
            return context
        return original_fetch(url)

    def get(url, *args, **kwargs):
        if str(url).startswith("https://w3id.org/ro/crate/1.1/context"):
            import requests

            response = requests.Response()
            response.status_code = 200
            response._content = json.dumps(context).encode()
            response.headers["Content-Type"] = "application/ld+json"
            response.url = str(url)
            return response
        return requester.session.get(url, *args, **kwargs)

    loader._fetch_json_ld = fetch
    requester.__dict__["get"] = get  # found before __getattr__ is asked
    try:
        settings = services.ValidationSettings(rocrate_uri=str(crate_dir), profile_identifier=profile,
                                               requirement_severity=models.Severity.REQUIRED)
        result = services.validate(settings)
    finally:
        loader._fetch_json_ld = original_fetch
        requester.__dict__.pop("get", None)
    return [(i.severity.name, i.check.identifier if i.check else "", i.message) for i in result.get_issues()]
