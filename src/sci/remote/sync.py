"""`sci push` / `sci pull`: the current pipeline's results to and from a remote store."""

from __future__ import annotations

from typing import Any

from sci.records import run as records
from sci.records.key_only import KeyOnly
from sci.store.hashing import StatCache
from sci.plan.loaded import Loaded
from sci.plan.pipeline import environment_records, load, store_of as _store
from sci.workspace import Workspace

def _remote(loaded: Loaded, name: str | None):
    from sci.errors import UserError
    from sci.remote.stores import open_remote, select_remote

    chosen = select_remote(loaded.remotes, name)
    if chosen is None:
        raise UserError("no remote store is configured",
                        hint="set SCI_REMOTE, or add `remotes: {default: URL}` to sci.yaml (docs/remotes.md)")
    return open_remote(chosen[1], name=chosen[0], base_dir=loaded.ws.root)


def push(ws: Workspace, targets: list[str] | None = None, *, remote: str | None = None, jobs: int = 8,
         progress=None) -> dict:
    """Copy the latest action results of the selected nodes, and the objects they need, to a remote."""
    from sci.remote.transfer import push as run_push

    loaded = load(ws)
    selected = loaded.graph.select(list(targets or []), ws.root)
    store = _store(loaded)
    state = records.state_of(ws)
    keys, missing = [], []
    for name in selected:
        last = state.get(name)
        if last and store.get_action(last["key"]) is not None:
            keys.append(last["key"])
        else:
            missing.append(name)
    stats = run_push(store, _remote(loaded, remote), keys, jobs=jobs, progress=progress)
    return {"pushed_actions": len(keys), "not_built": missing, **stats.to_json()}


def pull(ws: Workspace, targets: list[str] | None = None, *, remote: str | None = None, jobs: int = 8,
         progress=None) -> dict:
    """Fetch the action results of the selected nodes' current keys, and every object they need.

    Keys are computed as a build would (a node's key needs its upstream's outputs), so a node
    the remote lacks leaves its dependants unknown: they are reported, not guessed.
    """
    from sci.build.inputs import Resolver
    from sci.build import keys as keys_mod
    from sci.remote.transfer import TransferStats, fetch_action, pull as run_pull

    loaded = load(ws)
    graph = loaded.graph
    selected = graph.select(list(targets or []), ws.root)
    store = _store(loaded)
    stat_cache = StatCache(ws.state_dir / "statcache")
    env = environment_records(loaded, stat_cache, [graph.nodes[n] for n in selected])
    resolver = Resolver(ws.root, graph, stat_cache, store, env)
    rem = _remote(loaded, remote)
    total = TransferStats()
    fetched, absent, unknown = [], [], []
    known_keys: dict[str, Any] = {}
    for name in selected:
        node = graph.nodes[name]
        if any(u not in resolver.outputs for u in graph.upstream[name]):
            unknown.append(name)
            continue
        extra = None
        if node.kind == "dossier":
            from sci.evidence import dossier

            extra, _ = dossier.prepare(node, known_keys, graph, store, loaded.experiment, env["cpu"], ws.root)
        key = keys_mod.key_of(resolver.components(node, extra))
        action = fetch_action(store, rem, key)
        if action is None:
            absent.append(name)
            continue
        stats = run_pull(store, rem, [key], outputs=True, jobs=jobs, progress=progress)
        for k, v in stats.to_json().items():
            if isinstance(v, int):
                setattr(total, k, getattr(total, k) + v)
        resolver.outputs[name] = action["outputs"]
        known_keys[name] = KeyOnly(key)
        fetched.append(name)
    stat_cache.save()
    return {"pulled_nodes": fetched, "not_on_remote": absent, "unknown": unknown, **total.to_json()}


