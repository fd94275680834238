"""`sci export --format ro-crate|prov`: the workspace side of a standard provenance export.

It finds what to describe (the target's up-to-date closure, the run that built it, the files
to include) and hands a neutral view to evidence/provenance.py, which writes the crate or the
PROV document; kept apart so that provenance.py, which the dossier also uses, needs no plan."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sci.build.status import built_closure
from sci.errors import UserError
from sci.evidence import provenance
from sci.evidence.page import media_type_for
from sci.plan.pipeline import _params_path, store_of
from sci.records import run as records
from sci.store.cas import OutputRecord
from sci.store.hashing import digest_file
from sci.workspace import PIPELINE_FILE, Workspace


def export(ws: Workspace, target: str, fmt: str, out: Path | None = None) -> dict:
    """Write `target`'s run as a crate directory (`ro-crate`) or a PROV-JSON file (`prov`).

    The closure must be built and up to date (its records are what is described). Without
    `out`, the result goes under runs/<run_id>/ of the run that last executed the target
    (`ro-crate/`, `prov.json`). The crate holds the pipeline file, the params file, the code
    the closure ran and the target's own outputs; every other file is described by digest."""
    loaded, keys = built_closure(ws, target)
    graph = loaded.graph
    store = store_of(loaded)
    order = [n for n in graph.step_of if n in keys]
    actions = {n: store.get_action(keys[n]) for n in order}
    requested = [n for n in order if n in graph.requested([target], ws.root)]
    run_id, manifest = _producing_run(ws.runs_dir, {n: keys[n] for n in requested})
    if out is None:
        if run_id is None:
            raise UserError(f"no recorded run built {target}'s current results", hint="pass -o to say where to write")
        out = ws.runs_dir / run_id / ("ro-crate" if fmt == "ro-crate" else "prov.json")
    targets = [o["path"] for n in requested for _, o in sorted(actions[n]["outputs"].items())]
    wf_bytes = ws.pipeline_file.read_bytes()
    workflow = {"path": PIPELINE_FILE, "digest": digest_file(ws.pipeline_file), "size": len(wf_bytes),
                "sha256": hashlib.sha256(wf_bytes).hexdigest()}
    environment = (actions[requested[-1]] or {}).get("environment") or {}
    run = {"id": run_id, "started": manifest["volatile"].get("started"),
           "finished": manifest["volatile"].get("finished")} if manifest else None
    included: dict[str, dict] = {}
    if fmt == "ro-crate":
        out.mkdir(parents=True, exist_ok=True)
        (out / PIPELINE_FILE).write_bytes(wf_bytes)
        params = _params_path(ws, wf_bytes)
        code = sorted({p for n in order for p in (actions[n]["components"].get("code") or {})})
        extra = ([params.relative_to(ws.root).as_posix()] if params is not None and params.is_file() else []) + code
        for rel in extra:
            dst = out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes((ws.root / rel).read_bytes())
        for n in requested:
            for rec in actions[n]["outputs"].values():
                store.materialize(OutputRecord.from_json(rec), out / rec["path"])
        for rel in extra + targets:
            p = out / rel
            if p.is_file():
                included[rel] = {"digest": digest_file(p), "size": p.stat().st_size,
                                 "sha256": provenance.sha256_file(p), "media_type": media_type_for(rel)}
            elif p.is_dir():
                rec = next(o for n in requested for o in actions[n]["outputs"].values() if o["path"] == rel)
                included[rel] = {"digest": rec["digest"], "size": rec.get("size")}
    producers = {s.path: s.producer for n in order for s in graph.sources[n] if s.producer and s.producer not in keys}
    view = provenance.view_of_nodes(experiment=loaded.experiment, nodes=[actions[n] for n in order],
                                    workflow=workflow, environment=environment, targets=targets, included=included,
                                    engine=_engine_version(), date=(run or {}).get("finished") or records.utc_now(),
                                    run=run, producers=producers)
    if fmt == "ro-crate":
        (out / provenance.CRATE_FILE).write_bytes(provenance.crate_bytes(view))
        written = out / provenance.CRATE_FILE
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(provenance.prov_json(view))
        written = out
    return {"format": fmt, "target": target, "path": str(out), "written": str(written), "run_id": run_id,
            "nodes": len(order), "files": len(view["files"]), "included": len(included)}


def _engine_version() -> str:
    import sci

    return sci.__version__


def _producing_run(runs_dir: Path, keys: dict[str, str]) -> tuple[str | None, dict | None]:
    """The newest run whose manifest executed one of `keys` (else the newest that had them all
    cached): the run a crate or PROV document of them describes."""
    try:
        names = sorted((e.name for e in runs_dir.iterdir() if (e / "manifest.json").is_file()), reverse=True)
    except OSError:
        return None, None
    fallback: tuple[str | None, dict | None] = (None, None)
    for name in names:
        try:
            man = json.loads((runs_dir / name / "manifest.json").read_bytes())
        except (OSError, ValueError):
            continue
        if man.get("kind") == "repro-check":
            continue
        plan = {p.get("node"): p for p in man.get("plan", [])}
        hits = [n for n, k in keys.items() if plan.get(n, {}).get("key") == k]
        if any(plan[n].get("status") == "executed" for n in hits):
            return name, man
        if hits and len(hits) == len(keys) and fallback[0] is None:
            fallback = (name, man)
    return fallback
