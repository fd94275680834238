"""`sci diff`: what changed between two recorded runs, read from their manifests and the store.

Parameters (the manifests' `params`, flattened to dotted keys: old → new), environment
components (the manifests' fingerprints, named as `sci status` names them), the nodes whose
key changed and why (the two StepResults' key components through keys.explain, the same
reasons `sci status` gives), the outputs whose digest changed, and the metrics with their
absolute and relative change. Runs nothing; writes only the runs index (picking the runs).
"""

from __future__ import annotations

from typing import Any

from sci.values import Value


class RunDiff(Value):
    """The difference between run `a` (older, usually) and run `b`; every list is in node
    order (see diff_runs)."""

    __slots__ = _FIELDS = ("a", "b", "params", "environment", "nodes", "outputs", "metrics", "notes")

    def __init__(self, a: dict, b: dict, params: list[dict], environment: list[str], nodes: list[dict],
                 outputs: list[dict], metrics: list[dict], notes: list[str]):
        self.a, self.b, self.params, self.environment = a, b, params, environment
        self.nodes, self.outputs, self.metrics, self.notes = nodes, outputs, metrics, notes

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "summary": self.summary(), "params": self.params,
                "environment": self.environment, "nodes": self.nodes, "outputs": self.outputs,
                "metrics": self.metrics, "notes": self.notes}

    def summary(self) -> str:
        """One sentence a person reads first."""
        reran = [n for n in self.nodes if n["status_b"] == "executed"]
        changed_metrics = [m for m in self.metrics if m["old"] != m["new"]]
        parts = [_count(len(self.params), "parameter"), _count(len(self.environment), "environment component"),
                 _count(len(self.nodes), "node") + (f" ({len(reran)} re-ran)" if reran else ""),
                 _count(len(self.outputs), "output"), _count(len(changed_metrics), "metric")]
        parts = [p for p in parts if not p.startswith("0 ")]
        return "changed: " + ", ".join(parts) if parts else "no differences"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def flat_params(params: Any) -> dict[str, Any]:
    from sci.records.table import flat

    return flat(params, "") if isinstance(params, dict) else {}


def diff_runs(a_line: dict, b_line: dict, man_a: dict, man_b: dict, store,
              declared: list[str] | None = None) -> RunDiff:
    """The difference between two runs, from their summaries and manifests (`store`: for the
    key components of nodes whose key changed; a result no longer there is said so). Nodes are
    listed in `declared` order (the pipeline's declaration order: a sweep's items as written),
    then the others in plan order."""
    from sci.build import fingerprint, keys
    from sci.records.history import overrides

    notes: list[str] = []
    # parameters
    params: list[dict] = []
    if "params" in man_a and "params" in man_b:
        pa, pb = flat_params(man_a["params"]), flat_params(man_b["params"])
        for k in list(dict.fromkeys([*pb, *pa])):
            if k not in pa:
                params.append({"key": k, "change": "added", "old": None, "new": pb[k]})
            elif k not in pb:
                params.append({"key": k, "change": "removed", "old": pa[k], "new": None})
            elif not _same(pa[k], pb[k]):
                params.append({"key": k, "change": "changed", "old": pa[k], "new": pb[k]})
    elif man_a.get("params_digest") != man_b.get("params_digest"):
        notes.append("the parameters differ, but a run recorded no values (made by an older sci)")
    # environment
    env_a = (man_a.get("environment") or {}).get("components") or {}
    env_b = (man_b.get("environment") or {}).get("components") or {}
    environment = fingerprint.diff(env_a, env_b) if env_a != env_b else []
    declared_a, declared_b = man_a.get("environments") or {}, man_b.get("environments") or {}
    for name in sorted(set(declared_a) | set(declared_b)):
        ea, eb = declared_a.get(name), declared_b.get(name)
        if ea is None or eb is None:
            environment.append(f"environment {name}: {'added' if ea is None else 'removed'}")
        elif ea.get("digest") != eb.get("digest"):  # its own lines only: the shared ones are said above
            own = f"environment {name}:"
            environment.extend(line for line in fingerprint.diff(ea.get("components") or {},
                                                                  eb.get("components") or {}, name)
                               if line.startswith(own))
    # nodes, outputs, metrics
    plan_a = {e["node"]: e for e in man_a.get("plan") or []}
    plan_b = [e for e in man_b.get("plan") or []]
    names_b = {e["node"] for e in plan_b}
    order = [e["node"] for e in plan_b] + [n for n in plan_a if n not in names_b]
    if declared:
        rank = {n: i for i, n in enumerate(declared)}
        order.sort(key=lambda n: rank.get(n, len(rank)))  # stable: the rest keep plan order
    entries_b = {e["node"]: e for e in plan_b}
    nodes: list[dict] = []
    outputs: list[dict] = []
    metrics: list[dict] = []
    for name in order:
        ea, eb = plan_a.get(name), entries_b.get(name)
        if ea is None or eb is None:
            nodes.append({"node": name, "change": "added" if ea is None else "removed",
                          "status_b": eb["status"] if eb else None, "reasons": []})
            continue
        done = ("executed", "cached")
        if ea["status"] not in done or eb["status"] not in done:
            if ea["status"] != eb["status"]:
                bad = ea if ea["status"] not in done else eb
                nodes.append({"node": name, "change": f"{bad['status']} in run {'a' if bad is ea else 'b'}",
                              "status_b": eb["status"], "reasons": []})
            continue  # a node that did not succeed in both runs has no outputs or metrics to compare
        if ea.get("key") != eb.get("key"):
            nodes.append({"node": name, "change": "key changed", "status_b": eb["status"],
                          "reasons": _reasons(ea, eb, store, keys, fingerprint)})
        oa, ob = ea.get("outputs") or {}, eb.get("outputs") or {}
        for out in list(dict.fromkeys([*ob, *oa])):
            ra, rb = oa.get(out), ob.get(out)
            if ra is not None and rb is not None and ra.get("digest") == rb.get("digest"):
                continue
            outputs.append({"node": name, "output": out, "path": (rb or ra)["path"],
                            "old": ra.get("digest") if ra else None, "new": rb.get("digest") if rb else None})
        ma, mb = ea.get("metrics") or {}, eb.get("metrics") or {}
        for m in sorted(set(ma) | set(mb)):
            old, new = ma.get(m), mb.get(m)
            if _same(old, new):
                continue
            metrics.append({"node": name, "metric": m, "old": old, "new": new, **_delta(old, new)})
    a = {"run": a_line["run"], "command": man_a.get("command") or [], "overrides": overrides(man_a.get("command") or [])}
    b = {"run": b_line["run"], "command": man_b.get("command") or [], "overrides": overrides(man_b.get("command") or [])}
    return RunDiff(a, b, params, environment, nodes, outputs, metrics, notes)


def _same(x: Any, y: Any) -> bool:
    return type(x) is type(y) and x == y


def _delta(old: Any, new: Any) -> dict[str, Any]:
    """Absolute and relative change of a number (booleans and missing values have none)."""
    if isinstance(old, bool) or isinstance(new, bool) or not isinstance(old, int | float) \
            or not isinstance(new, int | float):
        return {"delta": None, "relative": None}
    delta = new - old
    return {"delta": delta, "relative": (delta / abs(old)) if old else None}


def _reasons(ea: dict, eb: dict, store, keys, fingerprint) -> list[str]:
    old = store.get_action(ea["key"]) if store is not None else None
    new = store.get_action(eb["key"]) if store is not None else None
    if old is None or new is None:
        return ["the result of one run is no longer in the store (sci gc), so the change cannot be named"]
    env_diff = None
    if old["components"].get("environment") != new["components"].get("environment"):
        env_diff = fingerprint.diff((old.get("environment") or {}).get("components") or {},
                                    (new.get("environment") or {}).get("components") or {})
    return [str(r) for r in keys.explain(old["components"], new["components"], env_diff)]


def lines(d: RunDiff) -> list[str]:
    """The diff as a person reads it: the summary, then each section that has something."""
    from sci.records.table import text

    out = [f"{d.a['run']} → {d.b['run']}: {d.summary()}"]
    for side, label in ((d.a, "a"), (d.b, "b")):
        cmd = " ".join(side["command"]) or "?"
        out.append(f"  {label}: sci {cmd}")
    if d.params:
        out.append("parameters:")
        for p in d.params:
            if p["change"] == "added":
                out.append(f"  {p['key']}: added ({text(p['new'])})")
            elif p["change"] == "removed":
                out.append(f"  {p['key']}: removed (was {text(p['old'])})")
            else:
                out.append(f"  {p['key']}: {text(p['old'])} → {text(p['new'])}")
    if d.environment:
        out.append("environment:")
        out += [f"  {line}" for line in d.environment]
    if d.nodes:
        out.append("nodes:")
        for n in d.nodes:
            status = {"executed": "re-ran", "cached": "from the store", "failed": "failed",
                      "skipped": "skipped"}.get(n["status_b"] or "", "")
            head = f"  {n['node']}: {n['change']}" + (f", {status}" if status and n["change"] == "key changed" else "")
            out.append(head + (f": {'; '.join(n['reasons'])}" if n["reasons"] else ""))
    if d.outputs:
        out.append("outputs:")
        for o in d.outputs:
            old = o["old"][:12] if o["old"] else "(none)"
            new = o["new"][:12] if o["new"] else "(none)"
            out.append(f"  {o['path']} ({o['node']}): {old} → {new}")
    if d.metrics:
        out.append("metrics:")
        for m in d.metrics:
            change = ""
            if m["delta"] is not None:
                change = f"  ({'+' if m['delta'] >= 0 else ''}{text(m['delta'])}"
                change += f", {m['relative'] * 100:+.2f}%)" if m["relative"] is not None else ")"
            out.append(f"  {m['node']}: {m['metric']}: {text(m['old']) or '(none)'} → {text(m['new']) or '(none)'}"
                       + change)
    out += [f"note: {n}" for n in d.notes]
    return out
