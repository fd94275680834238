"""`sci status` and `sci build -n`: the build's decision (build/decision.py), driven without an
executor. Nodes are keyed in plan order; a node whose upstream node would run waits (its
inputs are not known until that node has run)."""

from __future__ import annotations

from typing import Any

from sci.build.decision import Decision, Verdict, decide, explain_miss, waits
from sci.envs.runtime import record_key
from sci.errors import SciError
from sci.plan.pipeline import environment_records, load, store_of
from sci.records import run as records
from sci.records.key_only import KeyOnly
from sci.store.hashing import StatCache
from sci.values import Value
from sci.workspace import Workspace

# How a verdict reads in `sci status` (its `state` column); a verdict not here reads as its value.
STATE = {Verdict.RUN: "would run", Verdict.FETCH: "would fetch"}


class NodeStatus(Value):
    """One node's row of `sci status`: `state` is "up to date", "restore", "would run" or "waits"."""

    __slots__ = _FIELDS = ("node", "state", "key", "reasons", "waits_on")

    def __init__(self, node: str, state: str, key: str | None = None, reasons: list[str] | None = None,
                 waits_on: list[str] | None = None):
        self.node, self.state, self.key = node, state, key
        self.reasons = reasons if reasons is not None else []
        self.waits_on = waits_on if waits_on is not None else []

    @classmethod
    def of(cls, decision: Decision) -> NodeStatus:
        return cls(decision.node, STATE.get(decision.verdict, decision.verdict.value), decision.key,
                   decision.reasons, decision.waits_on)

    def to_json(self) -> dict:
        return {"node": self.node, "state": self.state, "key": self.key, "reasons": self.reasons,
                "waits_on": self.waits_on}


def status(ws: Workspace, targets: list[str], *, overrides: list[str], check_resources: bool = False
           ) -> list[NodeStatus]:
    """For each selected node: up to date, or why it would run (SPEC §7). Runs nothing.
    `check_resources` (`sci build --dry-run` on the local executor): the selected nodes must fit
    this machine, ResourceError (exit 2) as the build itself would refuse them."""
    return [NodeStatus.of(d) for d in decisions(ws, targets, overrides=overrides, check_resources=check_resources)]


def built_closure(ws: Workspace, target: str, *, verb: str = "export") -> tuple[Any, dict[str, str]]:
    """TARGET's closure when every node of it is built and up to date: (the plan, node → key).
    UserError (exit 2) naming the first node that is not, and why."""
    from sci.errors import UserError

    loaded = load(ws)
    statuses = status(ws, [target], overrides=[])
    for st in statuses:
        if st.state not in ("up to date", "restore"):
            why = "; ".join(st.reasons) or (f"waits on {', '.join(st.waits_on)}" if st.waits_on else st.state)
            raise UserError(f"cannot {verb} {target}: {st.node} is not built ({why})",
                            hint=f"run `sci build {target}` first")
    return loaded, {st.node: st.key for st in statuses}


def decisions(ws: Workspace, targets: list[str], *, overrides: list[str], check_resources: bool = False
              ) -> list[Decision]:
    """Every selected node's decision, in plan order, as a build would take it."""
    from sci.build.inputs import Resolver

    loaded = load(ws, overrides)
    graph = loaded.graph
    selected = graph.select(targets, ws.root)
    if check_resources:
        from sci.build.resources import check_fits

        check_fits([graph.nodes[n] for n in selected], loaded.hardware, loaded.pos)
    store = store_of(loaded)
    stat_cache = StatCache(ws.state_dir / "statcache")
    env = environment_records(loaded, stat_cache, [])
    resolver = Resolver(ws.root, graph, stat_cache, store, env)
    state = records.state_of(ws)
    root = str(ws.root)
    out: list[Decision] = []
    unknown: set[str] = set()  # nodes whose outputs are not known without running something
    known_keys: dict[str, Any] = {}
    for name in selected:
        node = graph.nodes[name]
        blocked = [u for u in graph.upstream[name] if u in unknown]
        if blocked:
            unknown.add(name)
            out.append(waits(name, blocked, built_before=state.get(name) is not None))
            continue
        if node.needs_gpu and record_key(node) not in env:
            try:
                env[record_key(node)] = environment_records(loaded, stat_cache, [node])[record_key(node)]
            except SciError as exc:
                unknown.add(name)
                out.append(Decision(name, Verdict.RUN, reasons=[f"env changed: {exc.message}"]))
                continue
        extra = None
        if node.kind == "dossier":
            from sci.evidence import dossier

            extra, _ = dossier.prepare(node, known_keys, graph, store, loaded.experiment, env["cpu"], ws.root)
        comp = resolver.components(node, extra)
        from sci.build import keys

        key = keys.key_of(comp)
        known_keys[name] = KeyOnly(key)
        env_record = env[record_key(node)]
        decision = decide(name, key, root=root, store=store, stat_cache=stat_cache,
                          explain=lambda: explain_miss(name, comp, state.get(name), store, env_record))
        if decision.cached:
            resolver.outputs[name] = decision.outputs
        else:
            unknown.add(name)
        out.append(decision)
    stat_cache.save()
    return out
