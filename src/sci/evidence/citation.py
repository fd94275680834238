"""How to cite an experiment: its dossier's version digest, and BibTeX, CSL-JSON, CFF, Markdown.

Every function here is pure: the same experiment, version and parents give the same text,
byte for byte. No dates appear anywhere (a date would make the dossier's bytes depend on
when it was built, and `sci repro-check dossier` could never pass); the version is a
content digest instead.

Arguments shared by the renderers:
- `experiment`: the ExperimentRequest as a dict (title, question, authors, license, keywords,
  optional description, url, doi). Each author is {name, orcid?, affiliation?, email?}.
- `version`: the dossier's version digest (`dossier_version`).
- `parents`: works this one builds upon, most often other dossiers' `citation` blocks: dicts
  with `title` and `authors` and optionally `version`, `doi`, `url`, `license`. Listed in
  the order given.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from typing import Any

from sci import canonical
from sci.store.hashing import digest_bytes

CFF_VERSION = "1.2.0"
CFF_MESSAGE = "If you use these results, please cite them as below."
# Lower-case name particles that belong to the family name ("Ludwig van Beethoven").
_PARTICLES = frozenset({"da", "de", "del", "della", "der", "des", "di", "du", "la", "le",
                        "st", "ter", "van", "von", "zu"})


# -- the version digest ----------------------------------------------------------------------

def dossier_version(dossier: dict) -> str:
    """BLAKE3 of the canonical JSON of `dossier` with `citation.version` and `reproduction` removed.

    A document cannot contain its own digest, so the version is the digest of everything
    else: change any node, edge, evidence file, lineage entry or citation field and the
    version changes. `reproduction` (what repro-check records say about those nodes,
    evidence/claims.py) is left out: a check earned later changes what the dossier claims,
    not what it is, so the citable version stays. To check a dossier: remove
    `citation.version` and `reproduction`, hash `canonical.dumps` of the rest, compare.
    """
    doc = copy.deepcopy(dossier)
    doc.pop("reproduction", None)
    citation = doc.get("citation")
    if isinstance(citation, dict):
        citation.pop("version", None)
    return digest_bytes(canonical.dumps(doc))


def citation_block(experiment: dict) -> dict:
    """The Dossier's `citation` field, without `version` (see `seal`)."""
    return {
        "title": experiment["title"],
        "authors": [dict(a) for a in experiment.get("authors") or []],
        "license": experiment.get("license"),
        "keywords": list(experiment.get("keywords") or []),
    }


def seal(dossier: dict) -> dict:
    """A copy of `dossier` whose `citation.version` is its version digest."""
    doc = copy.deepcopy(dossier)
    doc.setdefault("citation", citation_block(doc["experiment"]))
    doc["citation"]["version"] = dossier_version(doc)
    return doc


# -- names and keys --------------------------------------------------------------------------

def split_name(name: str) -> tuple[str, str, str]:
    """(given names, particle, family name) of a person's display name.

    The last word is the family name, preceded by any lower-case particles ('van', 'de');
    everything before is given names. A one-word name is a family name only. This is a
    heuristic: names it splits wrongly can be given as 'Family, Given' (comma form), which
    is taken literally.
    """
    name = " ".join(name.split())
    if "," in name:
        family, _, given = name.partition(",")
        family, given = family.strip(), given.strip()
        words = family.split(" ")
        particle = []
        while len(words) > 1 and words[0] in _PARTICLES:
            particle.append(words.pop(0))
        return given, " ".join(particle), " ".join(words)
    words = name.split(" ")
    if len(words) == 1:
        return "", "", words[0]
    family = [words.pop()]
    particle: list[str] = []
    while len(words) > 1 and words[-1] in _PARTICLES:
        particle.insert(0, words.pop())
    return " ".join(words), " ".join(particle), family[0]


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]", "", folded.lower())


def _entry_key(work: dict, fallback: str) -> str:
    authors = work.get("authors") or []
    family = _ascii_slug(split_name(authors[0]["name"])[2]) if authors else ""
    version = str(work.get("version") or "")
    suffix = _ascii_slug(version)[:8] or fallback
    return (family or "sci") + suffix


def _keys(experiment: dict, version: str, parents: list[dict]) -> list[str]:
    """Citation keys of the work and each parent, made unique by letter suffixes in order."""
    raw = [_entry_key({**experiment, "version": version}, "x")]
    raw += [_entry_key(p, str(i + 1)) for i, p in enumerate(parents)]
    seen: dict[str, int] = {}
    out = []
    for key in raw:
        n = seen.get(key, 0)
        seen[key] = n + 1
        out.append(key if n == 0 else f"{key}{chr(ord('a') + (n - 1) % 26)}{(n - 1) // 26 or ''}")
    return out


def _description(experiment: dict) -> str:
    parts = [experiment.get("question") or "", experiment.get("description") or ""]
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


# -- BibTeX ----------------------------------------------------------------------------------

_TEX = {
    "\\": r"\textbackslash{}", "{": r"\textbraceleft{}", "}": r"\textbraceright{}",
    "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    """Text safe inside a braced BibTeX field: specials escaped, braces always balanced.

    Braces become \\textbraceleft{}/\\textbraceright{} rather than \\{ and \\}, because BibTeX
    counts every brace, escaped or not, when it looks for the end of a field.
    """
    text = " ".join(text.split())  # newlines and runs of blanks mean nothing in BibTeX
    return "".join(_TEX.get(ch, ch) for ch in text)


def _bib_name(name: str) -> str:
    given, particle, family = split_name(name)
    if " and " in f" {name} " or ("," in name and not given):
        return "{" + tex_escape(name) + "}"  # an organisation, or a name BibTeX would split
    last = " ".join(x for x in (particle, family) if x)
    if not given:
        return "{" + tex_escape(last) + "}"
    return f"{tex_escape(last)}, {tex_escape(given)}"


def _bib_entry(key: str, work: dict, fields: list[tuple[str, str]]) -> str:
    authors = " and ".join(_bib_name(a["name"]) for a in work.get("authors") or [])
    rows = [("title", "{" + tex_escape(work["title"]) + "}")]  # double braces keep its capitals
    if authors:
        rows.append(("author", authors))
    rows += [(k, v) for k, v in fields if v]
    if work.get("version"):
        rows.append(("version", tex_escape(str(work["version"]))))
    if work.get("license"):
        rows.append(("license", tex_escape(work["license"])))
    if work.get("doi"):
        rows.append(("doi", tex_escape(work["doi"])))
    if work.get("url"):
        rows.append(("url", tex_escape(work["url"])))
    body = ",\n".join(f"  {k} = {{{v}}}" for k, v in rows)
    return f"@misc{{{key},\n{body}\n}}\n"


def bibtex(experiment: dict, version: str, parents: list[dict]) -> str:
    """A BibTeX (@misc) entry for the experiment, then one for each parent.

    The main entry names its parents in `related` (a biblatex field BibTeX ignores) and in
    its `note`, so plain BibTeX users still see them.
    """
    keys = _keys(experiment, version, parents)
    note = "Evidence dossier built with sci; version is the BLAKE3 digest of its dossier.json"
    if parents:
        note += "; builds on " + ", ".join(tex_escape(p["title"]) for p in parents)
    fields = [
        ("howpublished", "sci evidence dossier"),
        ("abstract", tex_escape(_description(experiment))),
        ("keywords", tex_escape(", ".join(experiment.get("keywords") or []))),
        ("note", note),
        ("related", ",".join(keys[1:])),
    ]
    out = [_bib_entry(keys[0], {**experiment, "version": version}, fields)]
    for key, parent in zip(keys[1:], parents):
        out.append(_bib_entry(key, parent, []))
    return "\n".join(out)


# -- CSL-JSON --------------------------------------------------------------------------------

def _csl_name(name: str) -> dict:
    given, particle, family = split_name(name)
    if " and " in f" {name} " or not given:
        return {"literal": name}
    out = {"family": family, "given": given}
    if particle:
        out["non-dropping-particle"] = particle
    return out


def csl_json(experiment: dict, version: str, parents: list[dict]) -> dict:
    """One CSL-JSON item (type 'dataset') for the experiment; parents are named in `note`."""
    keys = _keys(experiment, version, parents)
    item: dict[str, Any] = {
        "id": keys[0],
        "type": "dataset",
        "title": experiment["title"],
        "author": [_csl_name(a["name"]) for a in experiment.get("authors") or []],
        "version": version,
        "genre": "evidence dossier",
    }
    if experiment.get("license"):
        item["license"] = experiment["license"]
    abstract = _description(experiment)
    if abstract:
        item["abstract"] = abstract
    if experiment.get("keywords"):
        item["keyword"] = ", ".join(experiment["keywords"])
    if experiment.get("doi"):
        item["DOI"] = experiment["doi"]
    if experiment.get("url"):
        item["URL"] = experiment["url"]
    if parents:
        item["note"] = "Builds on: " + "; ".join(_plain_reference(p) for p in parents)
    return item


# -- CITATION.cff ----------------------------------------------------------------------------

def _yaml_str(text: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar: quoting everything sidesteps YAML's
    # implicit typing ('yes', '1.0', 'null' stay strings) and needs no escaping rules of ours.
    return json.dumps(text, ensure_ascii=False)


def _cff_person(author: dict) -> dict:
    given, particle, family = split_name(author["name"])
    if " and " in f" {author['name']} " or not family.strip():
        # an entity, or a name with no family part to cite by ("Ada,", ","): CFF wants one
        person: dict[str, str] = {"name": author["name"]}
    else:
        person = {"family-names": family}
        if given:
            person["given-names"] = given
        if particle:
            person["name-particle"] = particle
    if author.get("orcid"):
        person["orcid"] = f"https://orcid.org/{author['orcid']}"
    if author.get("affiliation") and "name" not in person:
        person["affiliation"] = author["affiliation"]
    if author.get("email"):
        person["email"] = author["email"]
    return person


def _unique(items: list) -> list:
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _license_value(license_: str) -> str | list[str]:
    ids = [x for x in license_.split(" OR ")]
    return ids[0] if len(ids) == 1 else _unique(ids)


def _cff_work(work: dict, version: str | None, kind: str) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("type", kind), ("title", work["title"])]
    authors = _unique([_cff_person(a) for a in work.get("authors") or []]) or [{"name": "anonymous"}]
    rows.append(("authors", authors))
    if version:
        rows.append(("version", str(version)))
    for key in ("doi", "url"):
        if work.get(key):
            rows.append((key, work[key]))
    if work.get("license"):
        rows.append(("license", _license_value(work["license"])))
    return rows


def _emit(rows: list[tuple[str, Any]], indent: str) -> list[str]:
    """Block-style YAML for a list of (key, value) rows, values str, dict or list."""
    lines = []
    for key, value in rows:
        if isinstance(value, list):
            lines.append(f"{indent}{key}:")
            for item in value:
                if isinstance(item, dict):
                    sub = _emit(list(item.items()), indent + "    ")
                    lines.append(f"{indent}  - {sub[0].lstrip()}")
                    lines.extend(sub[1:])
                else:
                    lines.append(f"{indent}  - {_yaml_str(item)}")
        else:
            lines.append(f"{indent}{key}: {_yaml_str(value)}")
    return lines


def cff(experiment: dict, version: str, parents: list[dict]) -> str:
    """CITATION.cff text (CFF 1.2.0), type dataset; parents become `references`."""
    rows: list[tuple[str, Any]] = [("cff-version", CFF_VERSION), ("message", CFF_MESSAGE)]
    work = _cff_work(experiment, version, "dataset")
    rows += work[:2] + [("abstract", _description(experiment))] + work[2:]
    rows = [(k, v) for k, v in rows if v != ""]
    keywords = _unique([k for k in experiment.get("keywords") or [] if k])
    if keywords:
        rows.append(("keywords", keywords))
    rows.append(("identifiers", [{
        "type": "other",
        "value": f"blake3:{version}",
        "description": "BLAKE3 digest of dossier.json without citation.version",
    }]))
    if parents:
        rows.append(("references", [dict(_cff_work(p, p.get("version"), "data")) for p in parents]))
    return "\n".join(_emit(rows, "")) + "\n"


# -- Markdown --------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _autolink(url: str) -> str:
    """A Markdown autolink, `<url>`, which takes the URL literally; escaped text if it cannot."""
    return _md(url) if re.search(r"[<>\s]", url) else f"<{url}>"


def _initials(given: str) -> str:
    return " ".join(f"{part[0]}." for part in given.replace("-", " ").split() if part)


def _apa_name(name: str) -> str:
    given, particle, family = split_name(name)
    last = " ".join(x for x in (particle, family) if x)
    return f"{last}, {_initials(given)}" if given else last


def _sentence(text: str) -> str:
    """`text` ending in exactly one full stop ('Babbage, C.' stays, 'Plato' gets one)."""
    return text if text.endswith(".") else text + "."


def _plain_reference(work: dict) -> str:
    names = [_apa_name(a["name"]) for a in work.get("authors") or []]
    text = (_sentence(", ".join(names)) + " " if names else "") + work["title"]
    if work.get("version"):
        text += f" (version {str(work['version'])[:12]})"
    if work.get("doi"):
        text += f", https://doi.org/{work['doi']}"
    elif work.get("url"):
        text += f", {work['url']}"
    return text


def markdown(experiment: dict, version: str, parents: list[dict]) -> str:
    """A human-readable citation in Markdown, with the full version digest and the parents."""
    names = [_md(_apa_name(a["name"])) for a in experiment.get("authors") or []]
    who = ", ".join(names[:-1]) + ", & " + names[-1] if len(names) > 1 else "".join(names)
    line = f"{_sentence(who)} " if who else ""
    line += f"*{_md(experiment['title'])}* [evidence dossier, version `{version}`]."
    if experiment.get("license"):
        line += f" License: {_md(experiment['license'])}."
    if experiment.get("doi"):
        line += " " + _autolink(f"https://doi.org/{experiment['doi']}")
    elif experiment.get("url"):
        line += " " + _autolink(experiment["url"])
    out = [line]
    if parents:
        out.append("")
        out.append("Builds on:")
        out.extend(f"- {_md(_plain_reference(p))}" for p in parents)
    return "\n".join(out) + "\n"
