"""Standard provenance: a target's run as a Workflow Run RO-Crate (Provenance Run Crate
profile) and as W3C PROV-JSON (docs/provenance.md has the mapping and a worked example).

Both are made from one neutral description of the run, a `view` (see `view_of_nodes`):
the experiment, the workflow file, the executed nodes' StepResults in declaration order, every
file they read or wrote with its digest, the environment, and optionally the timing. The
dossier writes its crate from its own record (pure: no timing, its date only from the
reproduction check it cites); `sci export` writes one from the store, with timing.

The crate's JSON-LD is written here, not by ro-crate-py: a dossier's bytes must be a pure
function of its inputs, and the library stamps dates and orders entities its own way. The
tests validate what is written with ro-crate-py (it must parse it) and roc-validator (the
provenance-run-crate profile, no errors). Entities appear in a fixed order and `canonical`
JSON sorts keys, so the same view always gives the same bytes.

    ro-crate-metadata.json ─ about ─▶ ./ (Dataset) ─ mainEntity ─▶ sci.yaml (ComputationalWorkflow)
    #organize (OrganizeAction, sci) ─ object ─▶ #control-NODE (ControlAction) ─ object ─▶ #action-NODE
    #action-NODE (CreateAction) ─ instrument ─▶ #tool-STEP; object: files, code, #pv-… ; result: files
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sci import canonical

CRATE_FILE = "ro-crate-metadata.json"
RO_CRATE = "https://w3id.org/ro/crate/1.1"
WFRUN = "https://w3id.org/ro/terms/workflow-run#"
# The RO-Crate 1.1 context, plus, inline, the terms it lacks: the Workflow Run terms this
# crate uses (as the workflow-run context defines them) and schema.org's `sha256`, which 1.1
# does not define (1.2 does); inline, so reading the crate fetches one context, not two.
CONTEXT = ["https://w3id.org/ro/crate/1.1/context",
           {"wfrun": WFRUN, "ParameterConnection": "wfrun:ParameterConnection", "connection": "wfrun:connection",
            "sourceParameter": "wfrun:sourceParameter", "targetParameter": "wfrun:targetParameter",
            "environment": "wfrun:environment", "sha256": "http://schema.org/sha256"}]
PROFILES = ("https://w3id.org/ro/wfrun/process/0.5", "https://w3id.org/ro/wfrun/workflow/0.5",
            "https://w3id.org/ro/wfrun/provenance/0.5", "https://w3id.org/workflowhub/workflow-ro-crate/1.0")
PROFILE_NAMES = ("Process Run Crate", "Workflow Run Crate", "Provenance Run Crate", "Workflow RO-Crate")
FORMAL_PARAMETER = "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"
COMPUTATIONAL_WORKFLOW = "https://bioschemas.org/profiles/ComputationalWorkflow/1.0-RELEASE"
COMPLETED = "http://schema.org/CompletedActionStatus"
FAILED = "http://schema.org/FailedActionStatus"
PROV_NS = "https://sci.invalid/ns#"  # sci's own PROV attributes (a reserved name: no lookup is intended)


def _q(text: str) -> str:
    """`text` as a piece of an IRI: brackets and spaces in node names and paths escaped."""
    return quote(text, safe="/=,-_.~:@+")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- the view ------------------------------------------------------------------------------------

def view_of_nodes(*, experiment: dict | None, nodes: list[dict], workflow: dict, environment: dict,
                  targets: list[str], included: dict[str, dict], engine: str, date: str | None = None,
                  run: dict | None = None, producers: dict[str, str] | None = None) -> dict:
    """The neutral description both formats are made from.

    `nodes`: StepResults (with `volatile` for timing), upstream first. `workflow`: {path,
    digest, size, sha256?} of sci.yaml. `targets`: the paths the run was for. `included`:
    path → {digest, size, sha256, media_type?} of files inside the crate besides the workflow
    (every other file is described, digest and size, but not included). `producers`: path →
    node outside `nodes` that wrote it (the rest of a deps' origin comes from `nodes`).
    """
    files: dict[str, dict] = {}
    produced: dict[str, str] = dict(producers or {})
    for n in nodes:
        for out in (n.get("outputs") or {}).values():
            files[out["path"]] = {"digest": out["digest"], "size": out.get("size"), "type": out.get("type", "file")}
            produced[out["path"]] = n["node"]
    for n in nodes:
        comp = n.get("components") or {}
        for path, digest in sorted((comp.get("deps") or {}).items()):
            files.setdefault(path, {"digest": digest, "size": None, "type": "file"})
        for path, digest in sorted((comp.get("code") or {}).items()):
            files.setdefault(path, {"digest": digest, "size": None, "type": "file", "code": True})
    for path, meta in included.items():
        files.setdefault(path, {"digest": meta["digest"], "size": meta.get("size"), "type": "file"})
    return {"experiment": experiment or {}, "workflow": workflow, "nodes": nodes, "files": files,
            "produced": produced, "included": included, "environment": environment, "targets": targets,
            "engine": engine, "date": date, "run": run}


# -- RO-Crate ------------------------------------------------------------------------------------

def _file_id(view: dict, path: str) -> str:
    """Inside the crate: its relative path (a directory's ending in /); outside: a local
    `#file:` identifier."""
    if path in view["included"] or path == view["workflow"]["path"]:
        tree = (view["files"].get(path) or {}).get("type") == "tree"
        return _q(path) + ("/" if tree and not path.endswith("/") else "")
    return "#file:" + _q(path)


def _license(experiment: dict) -> tuple[Any, list[dict]]:
    lic = experiment.get("license")
    if not lic:
        return "unspecified", []
    if all(c.isalnum() or c in ".-+" for c in lic):  # an SPDX identifier
        url = f"https://spdx.org/licenses/{lic}"
        return {"@id": url}, [{"@id": url, "@type": "CreativeWork", "name": lic, "identifier": lic}]
    return lic, []


def _value(v: Any) -> Any:
    return v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else json.dumps(v, sort_keys=True)


def _value_type(v: Any) -> str:
    if isinstance(v, bool):
        return "Boolean"
    if isinstance(v, int):
        return "Integer"
    if isinstance(v, float):
        return "Float"
    if isinstance(v, str):
        return "Text"
    return "PropertyValue"


def crate(view: dict) -> dict:
    """The ro-crate-metadata.json document of `view` (Provenance Run Crate 0.5)."""
    exp, wf, nodes = view["experiment"], view["workflow"], view["nodes"]
    files, produced = view["files"], view["produced"]
    wf_id = _q(wf["path"])
    steps: list[str] = []
    by_step: dict[str, list[dict]] = {}
    for n in nodes:
        if n["step"] not in by_step:
            steps.append(n["step"])
        by_step.setdefault(n["step"], []).append(n)
    entities: list[dict] = []
    license_value, license_entities = _license(exp)

    # formal parameters: per step its file inputs, its parameters and its outputs by name
    fps: list[dict] = []
    step_io: dict[str, dict[str, list]] = {}
    out_fp: dict[str, str] = {}  # output path -> its formal parameter
    for step in steps:
        io: dict[str, list] = {"input": [], "output": []}
        fp_in = f"#fp-{_q(step)}-inputs"
        if any((n.get("components") or {}).get("deps") for n in by_step[step]):
            fps.append({"@id": fp_in, "@type": "FormalParameter", "name": f"{step} inputs", "additionalType": "File",
                        "multipleValues": True, "conformsTo": {"@id": FORMAL_PARAMETER}})
            io["input"].append({"@id": fp_in})
        keys: dict[str, Any] = {}
        for n in by_step[step]:
            for k, v in ((n.get("components") or {}).get("params") or {}).items():
                keys.setdefault(k, v)
        for k in sorted(keys):
            fid = f"#fp-{_q(step)}-param-{_q(k)}"
            fps.append({"@id": fid, "@type": "FormalParameter", "name": k, "additionalType": _value_type(keys[k]),
                        "conformsTo": {"@id": FORMAL_PARAMETER}})
            io["input"].append({"@id": fid})
        names: dict[str, str] = {}
        for n in by_step[step]:
            for name, out in (n.get("outputs") or {}).items():
                names.setdefault(name, "Dataset" if out.get("type") == "tree" else "File")
                out_fp[out["path"]] = f"#fp-{_q(step)}-out-{_q(name)}"
        for name in sorted(names):
            fid = f"#fp-{_q(step)}-out-{_q(name)}"
            fps.append({"@id": fid, "@type": "FormalParameter", "name": name, "additionalType": names[name],
                        "conformsTo": {"@id": FORMAL_PARAMETER}})
            io["output"].append({"@id": fid})
        step_io[step] = io

    connections = sorted({(out_fp[path], f"#fp-{_q(n['step'])}-inputs")
                          for n in nodes for path in ((n.get("components") or {}).get("deps") or {})
                          if path in out_fp})
    sources = sorted(p for p, f in files.items() if p not in produced and not f.get("code"))
    wf_inputs = [{"@id": f"#fp-workflow-source-{_q(p)}"} for p in sources]
    wf_outputs = [{"@id": out_fp[p]} for p in view["targets"] if p in out_fp]
    for p in sources:
        fps.append({"@id": f"#fp-workflow-source-{_q(p)}", "@type": "FormalParameter", "name": p,
                    "additionalType": "File", "conformsTo": {"@id": FORMAL_PARAMETER}})

    parts = [wf_id] + [_file_id(view, p) for p in sorted(view["included"])]
    root: dict[str, Any] = {
        "@id": "./", "@type": "Dataset", "name": exp.get("title") or f"sci run of {', '.join(view['targets'])}",
        "description": exp.get("question") or "A run of a sci pipeline.",
        "license": license_value, "conformsTo": [{"@id": p} for p in PROFILES],
        "mainEntity": {"@id": wf_id}, "hasPart": [{"@id": p} for p in parts],
        "mentions": [{"@id": "#run"}] + [{"@id": f"#action-{_q(n['node'])}"} for n in nodes],
    }
    if view.get("date"):
        root["datePublished"] = view["date"]
    if exp.get("keywords"):
        root["keywords"] = ", ".join(exp["keywords"])
    people = []
    for a in exp.get("authors") or []:
        pid = f"https://orcid.org/{a['orcid']}" if a.get("orcid") else "#person-" + _q(a["name"])
        person = {"@id": pid, "@type": "Person", "name": a["name"]}
        if a.get("affiliation"):
            person["affiliation"] = a["affiliation"]
        people.append(person)
    if people:
        root["author"] = [{"@id": p["@id"]} for p in people]

    workflow = {
        "@id": wf_id, "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
        "name": wf["path"], "programmingLanguage": {"@id": "#sci"}, "conformsTo": {"@id": COMPUTATIONAL_WORKFLOW},
        "identifier": f"blake3:{wf['digest']}", "version": wf["digest"][:12], "encodingFormat": "application/yaml",
        "input": wf_inputs, "output": wf_outputs,
        "hasPart": [{"@id": f"#tool-{_q(s)}"} for s in steps], "step": [{"@id": f"#step-{_q(s)}"} for s in steps],
    }
    if wf.get("sha256"):
        workflow["sha256"] = wf["sha256"]
    if wf.get("size") is not None:
        workflow["contentSize"] = str(wf["size"])
    if connections:
        workflow["connection"] = [{"@id": f"#connection-{i}"} for i in range(len(connections))]
    entities += [
        {"@id": CRATE_FILE, "@type": "CreativeWork", "about": {"@id": "./"},
         "conformsTo": [{"@id": RO_CRATE}, {"@id": PROFILES[3]}]},
        root, workflow,
        {"@id": "#sci", "@type": "ComputerLanguage", "name": "sci", "alternateName": "sci.yaml version 1",
         "version": view["engine"]},
        {"@id": "#sci-engine", "@type": "SoftwareApplication", "name": "sci", "softwareVersion": view["engine"]},
    ]
    entities += people + license_entities
    entities += [{"@id": url, "@type": "CreativeWork", "name": name, "version": url.rsplit("/", 1)[1]}
                 for url, name in zip(PROFILES, PROFILE_NAMES)]
    for i, step in enumerate(steps):
        first = by_step[step][0]
        definition = (first.get("components") or {}).get("definition") or {}
        tool = {"@id": f"#tool-{_q(step)}", "@type": "SoftwareApplication", "name": step,
                "input": step_io[step]["input"], "output": step_io[step]["output"]}
        kind = definition.get("kind")
        tool["description"] = (f"Python function {definition['fn']}" if definition.get("fn") else
                               "sci's built-in dossier step" if kind == "dossier" else
                               "a shell command (each action's description is the command as it ran)")
        entities.append(tool)
        entities.append({"@id": f"#step-{_q(step)}", "@type": "HowToStep", "position": str(i + 1),
                         "name": step, "workExample": {"@id": f"#tool-{_q(step)}"}})
    entities += fps
    for i, (src, dst) in enumerate(connections):
        entities.append({"@id": f"#connection-{i}", "@type": "ParameterConnection",
                         "sourceParameter": {"@id": src}, "targetParameter": {"@id": dst}})

    # the run: the workflow's, each node's, the engine's, each step's control
    env_ids = _environment_entities(view["environment"], entities)
    run = view.get("run") or {}
    controls = []
    for n in nodes:
        comp = n.get("components") or {}
        nid = _q(n["node"])
        obj = [{"@id": _file_id(view, p)} for p in sorted(comp.get("deps") or {})]
        obj += [{"@id": _file_id(view, p)} for p in sorted(comp.get("code") or {})]
        for k, v in sorted((comp.get("params") or {}).items()):
            pv = f"#pv-{nid}-{_q(k)}"
            entities.append({"@id": pv, "@type": "PropertyValue", "name": k, "value": _value(v),
                             "exampleOfWork": {"@id": f"#fp-{_q(n['step'])}-param-{_q(k)}"}})
            obj.append({"@id": pv})
        action = {"@id": f"#action-{nid}", "@type": "CreateAction", "name": n["node"],
                  "instrument": {"@id": f"#tool-{_q(n['step'])}"}, "object": obj,
                  "result": [{"@id": _file_id(view, o["path"])} for _, o in sorted((n.get("outputs") or {}).items())],
                  "actionStatus": {"@id": COMPLETED if n.get("exit_status", 0) == 0 else FAILED},
                  "identifier": f"sci-key:{n['key']}",
                  "description": (comp.get("definition") or {}).get("cmd") or (comp.get("definition") or {}).get("fn")
                  or "built-in step"}
        env_digest = (n.get("environment") or {}).get("digest")
        if env_digest and env_digest in env_ids:
            action["environment"] = [{"@id": e} for e in env_ids[env_digest]]
        vol = n.get("volatile") or {}
        if vol.get("start"):
            action["startTime"] = vol["start"]
        if vol.get("end"):
            action["endTime"] = vol["end"]
        entities.append(action)
        entities.append({"@id": f"#control-{nid}", "@type": "ControlAction", "name": f"orchestrate {n['node']}",
                         "description": f"sci ran step {n['step']} as node {n['node']}",
                         "instrument": {"@id": f"#step-{_q(n['step'])}"}, "object": {"@id": f"#action-{nid}"},
                         "actionStatus": {"@id": COMPLETED}})
        controls.append({"@id": f"#control-{nid}"})
    wf_run = {"@id": "#run", "@type": "CreateAction", "name": f"Run of {wf['path']}: {', '.join(view['targets'])}",
              "instrument": {"@id": wf_id},
              "object": [{"@id": _file_id(view, p)} for p in sources],
              "result": [{"@id": _file_id(view, p)} for p in view["targets"] if p in files],
              "actionStatus": {"@id": COMPLETED},
              "description": f"sci built {', '.join(view['targets'])} from {wf['path']}"}
    organize = {"@id": "#organize", "@type": "OrganizeAction", "name": "sci build",
                "description": "sci planned the nodes, decided what to run and ran them",
                "instrument": {"@id": "#sci-engine"}, "object": controls, "result": {"@id": "#run"}}
    for field, key in (("startTime", "started"), ("endTime", "finished")):
        if run.get(key):
            wf_run[field] = organize[field] = run[key]
    if people:
        wf_run["agent"] = {"@id": people[0]["@id"]}
    entities += [wf_run, organize]
    entities += _file_entities(view, out_fp)
    return {"@context": CONTEXT, "@graph": [_singletons(e) for e in entities]}


def _singletons(entity: dict) -> dict:
    """One-item lists as the item itself, as RO-Crate 1.1's JSON-LD recommends."""
    return {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in entity.items()}


def _environment_entities(env: dict, entities: list[dict]) -> dict[str, list[str]]:
    """The environment fingerprint as PropertyValues (one per component; the installed
    packages as one `name==version` list), shared by the actions that ran in it."""
    digest = env.get("digest")
    if not digest:
        return {}
    ids = []
    comps = env.get("components") or {}
    for name in sorted(comps):
        value = comps[name]
        if name == "packages" and isinstance(value, dict):
            value = ", ".join(f"{k}=={v}" for k, v in sorted(value.items()) if v != "not-installed")
        eid = f"#env-{digest[:16]}-{_q(name)}"
        entities.append({"@id": eid, "@type": "PropertyValue", "name": name, "value": _value(value)})
        ids.append(eid)
    eid = f"#env-{digest[:16]}-fingerprint"
    entities.append({"@id": eid, "@type": "PropertyValue", "name": "sci environment fingerprint",
                     "value": f"blake3:{digest}"})
    ids.append(eid)
    return {digest: ids}


def _file_entities(view: dict, out_fp: dict[str, str]) -> list[dict]:
    """Every file the run read or wrote: its digest (BLAKE3 always, SHA-256 where the bytes are
    in the crate), size, and the formal parameters it is an example of."""
    out = []
    consumers: dict[str, set[str]] = {}
    for n in view["nodes"]:
        for p in ((n.get("components") or {}).get("deps") or {}):
            consumers.setdefault(p, set()).add(f"#fp-{_q(n['step'])}-inputs")
    for path in sorted(view["files"]):
        f = view["files"][path]
        if path == view["workflow"]["path"]:
            continue
        tree = f.get("type") == "tree"
        fid = _file_id(view, path)
        ent: dict[str, Any] = {"@id": fid, "@type": "Dataset" if tree else "File", "name": path,
                               "identifier": f"blake3:{f['digest']}"}
        if f.get("size") is not None:
            ent["contentSize"] = str(f["size"])
        inc = view["included"].get(path)
        if inc and inc.get("sha256"):
            ent["sha256"] = inc["sha256"]
        if not tree:
            from sci.evidence.page import media_type_for

            ent["encodingFormat"] = (inc or {}).get("media_type") or media_type_for(path)
        works = sorted(consumers.get(path, set()) | ({out_fp[path]} if path in out_fp else set()))
        if path not in view["produced"] and not f.get("code"):
            works.append(f"#fp-workflow-source-{_q(path)}")
        if works:
            ent["exampleOfWork"] = [{"@id": w} for w in works]
        if not inc:
            ent["description"] = "Not included in this crate; identified by its BLAKE3 digest."
        out.append(ent)
    return out


def crate_bytes(view: dict) -> bytes:
    """The crate as indented JSON with sorted keys: readable, and the same view gives the same bytes."""
    return (json.dumps(crate(view), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


# -- W3C PROV-JSON -------------------------------------------------------------------------------

def prov_document(view: dict):
    """The same run as a W3C PROV document (prov.model.ProvDocument): files are entities with
    their digests, nodes are activities that used their inputs, code, parameters and
    environment and generated their outputs (wasDerivedFrom links each output to each
    input), associated with the sci engine under the step as plan."""
    from prov.model import ProvDocument

    doc = ProvDocument()
    doc.set_default_namespace("urn:sci:")
    doc.add_namespace("sci", PROV_NS)
    f = doc.add_namespace("file", "urn:sci:file:")
    node = doc.add_namespace("node", "urn:sci:node:")
    step_ns = doc.add_namespace("step", "urn:sci:step:")
    param = doc.add_namespace("param", "urn:sci:param:")
    env_ns = doc.add_namespace("env", "urn:sci:env:")
    engine = doc.agent("sci:engine", {"prov:type": "prov:SoftwareAgent", "sci:version": view["engine"]})
    exp = view["experiment"]
    for a in exp.get("authors") or []:
        doc.agent(f"sci:person-{_q(a['name'])}", {"prov:type": "prov:Person", "prov:label": a["name"],
                                                 **({"sci:orcid": a["orcid"]} if a.get("orcid") else {})})
    wf = view["workflow"]
    doc.entity(f[_q(wf["path"])], {"prov:type": "prov:Plan", "sci:digest": f"blake3:{wf['digest']}"})
    files = {}
    for path, meta in sorted(view["files"].items()):
        if path == wf["path"]:
            continue
        attrs = {"prov:label": path, "sci:digest": f"blake3:{meta['digest']}",
                 "sci:kind": "code" if meta.get("code") else ("directory" if meta.get("type") == "tree" else "file")}
        if meta.get("size") is not None:
            attrs["sci:size"] = int(meta["size"])
        inc = view["included"].get(path)
        if inc and inc.get("sha256"):
            attrs["sci:sha256"] = inc["sha256"]
        files[path] = doc.entity(f[_q(path)], attrs)
    env = view["environment"]
    env_entity = None
    if env.get("digest"):
        comps = env.get("components") or {}
        attrs = {"prov:type": "sci:Environment", "sci:digest": f"blake3:{env['digest']}"}
        for name in sorted(comps):
            v = comps[name]
            if name == "packages" and isinstance(v, dict):
                v = ", ".join(f"{k}=={x}" for k, x in sorted(v.items()) if x != "not-installed")
            attrs[f"sci:{name}"] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
        env_entity = doc.entity(env_ns[env["digest"]], attrs)
    steps_seen: set[str] = set()
    for n in view["nodes"]:
        comp = n.get("components") or {}
        if n["step"] not in steps_seen:
            steps_seen.add(n["step"])
            doc.entity(step_ns[_q(n["step"])], {"prov:type": "prov:Plan", "prov:label": n["step"]})
        vol = n.get("volatile") or {}
        act = doc.activity(node[_q(n["node"])], vol.get("start"), vol.get("end"),
                           {"prov:label": n["node"], "sci:key": n["key"], "sci:seed": int(n.get("seed", 0)),
                            "sci:determinism": n.get("determinism", "strict"),
                            "sci:exit_status": int(n.get("exit_status", 0))})
        doc.wasAssociatedWith(act, engine, step_ns[_q(n["step"])])
        inputs = [files[p] for p in sorted(comp.get("deps") or {}) if p in files]
        for ent in inputs + [files[p] for p in sorted(comp.get("code") or {}) if p in files]:
            doc.used(act, ent)
        for k, v in sorted((comp.get("params") or {}).items()):
            pe = doc.entity(param[f"{_q(n['node'])}/{_q(k)}"], {"prov:label": k, "prov:value": _value(v)})
            doc.used(act, pe)
        if env_entity is not None and (n.get("environment") or {}).get("digest") == env["digest"]:
            doc.used(act, env_entity)
        for _, out in sorted((n.get("outputs") or {}).items()):
            ent = files.get(out["path"])
            if ent is None:
                continue
            doc.wasGeneratedBy(ent, act, vol.get("end"))
            for src in inputs:
                doc.wasDerivedFrom(ent, src, act)
    return doc


def prov_json(view: dict) -> bytes:
    """PROV-JSON bytes of `view` (keys sorted, so the same view gives the same bytes)."""
    text = prov_document(view).serialize(format="json")
    return canonical.dumps(json.loads(text)) + b"\n"
