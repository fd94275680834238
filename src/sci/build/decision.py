"""The rebuild decision: the one place that says what a node needs.

For a node whose key is known, `decide` answers one of the verdicts below, with the key, the
reasons and the proof it used. The scheduler carries the answer out, `sci status` and
`sci build -n` print it (the same decision driven without an executor), and every shortcut
is a cache of it that carries its proof (`Decision.proof`):

    verdict      when                                                       the build then
    up to date   the store holds the key's action result and the workspace   nothing (or re-stores
                 holds exactly its outputs                                   objects the store lost,
                                                                             from the workspace)
    restore      the store holds the result; some outputs are missing or     copies them from the
                 edited in the workspace and the store has their objects     store, verified
    recorded     a shortcut proved the node's key and outputs unchanged     nothing
                 since the last build (build/noop.py says how)
    fetch        a remote store holds the key's result                      downloads what it needs
    run          none of the above (the reasons say why), or --force        runs the node
    waits        an upstream node's outputs are not known yet (status only: a build keys the node
                 once its upstream nodes are done)

The decision reads only the workspace's files and the store (`.sci/state` only to explain a
change: which key the node had before), so a build's outcome is a pure function of them.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import Any

from sci.build.keys import outputs_problem
from sci.errors import DamagedObject
from sci.store.cas import OutputRecord, Store
from sci.store.hashing import StatCache
from sci.values import Value

FULL_PROOF = "key computed from the node's inputs; store and workspace checked"


class Verdict(str, Enum):
    UP_TO_DATE = "up to date"
    RESTORE = "restore"
    RECORDED = "recorded"
    FETCH = "fetch"
    RUN = "run"
    WAITS = "waits"


class Decision(Value):
    """One node's answer. `outputs`: the output records the verdict stands on (the stored
    result's); `restore`: the output paths to copy from the store; `lost`: outputs the
    workspace holds but the store lost (re-stored from the workspace); `reasons`: why it must
    run (or what else is worth telling); `proof`: what the answer rests on; `damaged`: what
    the look found damaged in the store (and, in a build, dropped), for a warning each."""

    __slots__ = _FIELDS = ("node", "verdict", "key", "outputs", "reasons", "restore", "lost", "proof", "waits_on",
                           "damaged")

    def __init__(self, node: str, verdict: Verdict, key: str | None = None, outputs: dict | None = None,
                 reasons: list[str] | None = None, restore: list[str] | None = None, lost: list[str] | None = None,
                 proof: str = FULL_PROOF, waits_on: list[str] | None = None, damaged: list[str] | None = None):
        self.node, self.verdict, self.key = node, verdict, key
        self.outputs = outputs if outputs is not None else {}
        self.reasons = reasons if reasons is not None else []
        self.restore = restore if restore is not None else []
        self.lost = lost if lost is not None else []
        self.proof, self.waits_on = proof, waits_on if waits_on is not None else []
        self.damaged = damaged if damaged is not None else []

    @property
    def cached(self) -> bool:
        """Nothing runs: the node's stored result stands (maybe after a restore)."""
        return self.verdict in (Verdict.UP_TO_DATE, Verdict.RESTORE, Verdict.RECORDED)


def decide(name: str, key: str, *, root: str, store: Store, stat_cache: StatCache, forced: bool = False,
           explain=None, drop_damaged: bool = False) -> Decision:
    """The decision for node `name` with key `key` (local store only: a remote is consulted by
    the caller on `run`). `explain()` gives the reasons for a miss (called only then).

    A damaged store object is never served: a damaged tree counts as absent (with
    `drop_damaged`, a build's look, it is also removed from the store and named in
    `damaged`); a damaged blob is found as it is copied out (the scheduler then runs the
    node, and the blob is dropped)."""
    if forced:
        return Decision(name, Verdict.RUN, key, reasons=["forced (--force)"])
    action = store.get_action(key)
    if action is None or action.get("key") != key:
        return Decision(name, Verdict.RUN, key, reasons=explain() if explain is not None else [])
    problem = outputs_problem(action)
    if problem is not None:  # written into a shared store by hand or by a forger: never served
        return Decision(name, Verdict.RUN, key, reasons=[f"stored result unusable: {problem} (it runs again)"])
    outputs = action["outputs"]
    restore, lost, gone, damaged = [], [], [], []
    for rec in outputs.values():
        path = rec["path"]
        in_workspace = _workspace_holds(root, path, rec, stat_cache)
        try:
            in_store = store.has_output(OutputRecord.from_json(rec), drop=drop_damaged,
                                        needed_for=f"{root}/{path}")
        except DamagedObject as exc:
            in_store = False
            damaged.append(exc.message)
        if in_workspace and not in_store:
            lost.append(path)
        elif not in_workspace:
            (restore if in_store else gone).append(path)
    if gone:
        return Decision(name, Verdict.RUN, key, reasons=[f"stored output lost: {p} (neither the store nor the "
                                                         "workspace holds its bytes)" for p in gone],
                        damaged=damaged)
    if restore:
        return Decision(name, Verdict.RESTORE, key, outputs, restore=restore, lost=lost,
                        reasons=[f"outputs missing or edited: {p} (restored from the store, nothing runs)"
                                 for p in restore], damaged=damaged)
    return Decision(name, Verdict.UP_TO_DATE, key, outputs, lost=lost,
                    reasons=[f"the store lost the objects of {p}: stored again from the workspace, nothing runs"
                             for p in lost], damaged=damaged)


def recorded(name: str, entry: dict, proof: str) -> Decision:
    """A shortcut's answer: the node's last recorded plan entry stands (`proof` says why)."""
    return Decision(name, Verdict.RECORDED, entry["key"], entry["outputs"], proof=proof)


def agree(shortcut: Decision, full: Decision) -> bool:
    """A shortcut's `recorded` answer stands when the full path finds the node up to date with
    the same key and outputs, and nothing to put back into the store."""
    return (full.verdict is Verdict.UP_TO_DATE and not full.lost and shortcut.key == full.key
            and shortcut.outputs == full.outputs)


def disagreement(shortcut: Decision, full: Decision) -> str:
    """Both answers, for SCI_SHORTCUTS=verify's report."""
    why = f" ({'; '.join(full.reasons)})" if full.reasons else ""
    return (f"{full.node}: the shortcut ({shortcut.proof}) says {shortcut.verdict.value} with key "
            f"{(shortcut.key or '')[:12]}; the full path says {full.verdict.value} with key {(full.key or '')[:12]}{why}")


def waits(name: str, upstream: list[str], built_before: bool) -> Decision:
    """Status only: an upstream node would run, so this node's inputs are not known yet."""
    reasons = [] if built_before else ["never built"]
    return Decision(name, Verdict.WAITS, reasons=reasons, waits_on=upstream)


def _workspace_holds(root: str, path: str, rec: dict, stat_cache: StatCache) -> bool:
    try:
        return stat_cache.path_digest(f"{root}/{path}", path) == rec["digest"]
    except OSError:
        return False


def store_again(store: Store, root: str, decision: Decision) -> bool:
    """Put back into the store the objects it lost, from the workspace's verified copies.
    False when a workspace copy no longer hashes to the recorded digest (the node must run)."""
    for rec in decision.outputs.values():
        if rec["path"] not in decision.lost:
            continue
        try:
            got = store.put_output(os.path.join(root, rec["path"]))
        except OSError:
            return False
        if got.digest != rec["digest"]:
            return False
    return True


def explain_miss(name: str, comp: dict[str, Any], prev: dict | None, store: Store,
                 env_record: dict | None) -> list[str]:
    """Why a node with these key components has no stored result: the differences from the
    result it had last time in this workspace (`prev`: its `.sci/state` entry), or never built.
    `env_record`: the fingerprint record the node's key took now (its components, and the
    name of its declared environment)."""
    from sci.build import fingerprint, keys

    old = store.get_action(prev["key"]) if prev else None
    if old is None:
        if prev and prev.get("key") == comp_key(comp):
            return ["the store holds no result for this key any more (removed by gc, or lost)"]
        return ["never built"]
    env_diff = None
    old_env = old.get("environment", {}).get("components")
    if old_env is not None and env_record is not None \
            and old["components"].get("environment") != comp["environment"]:
        env_diff = fingerprint.diff(old_env, env_record["components"], env_record.get("name"))
    return [str(r) for r in keys.explain(old["components"], comp, env_diff)] or [
        "the store holds no result for this key any more (removed by gc, or lost)"]


def comp_key(comp: dict[str, Any]) -> str:
    from sci.build import keys

    return keys.key_of(comp)
