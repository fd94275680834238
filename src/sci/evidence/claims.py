"""What a dossier may claim about reproduction, earned from `sci repro-check` records only.

A dossier states "reproduced" only when a repro-check record (runs/<id>/repro.json) matched
every node the dossier indexes, each under the key the dossier shows; otherwise it says
what was declared and not yet checked. The claim is part of the dossier's input document, so
its digest enters the dossier node's key — and must be a function of facts that do not move
when nothing changes:

- the check cited is the *earliest* record that matched all the indexed nodes' current keys
  (a later check of the same keys adds nothing, so it does not rebuild the dossier);
- the first record that found one of those keys not reproducing is cited too: a later
  mismatch is never hidden behind an earlier match;
- per node, the earliest record that checked that key.

`sci repro-check dossier` copies exactly the records used (`records_used`) into its scratch
workspace, so the rebuilt dossier makes the same claim and matches byte for byte. Records
are read only if they are format 2 and not `--seed` sensitivity reports. Deleting runs/
folders by hand can change the claim (the dossier then rebuilds to say so).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPORT = "repro.json"
PROVEN = ("match",)  # a node's verdicts that count as reproduced
EXEMPT = ("nondeterministic-declared",)  # rebuilt but, as declared, not compared
DISPROVEN = ("mismatch", "env-drift")  # env-drift only with differing files (see _disproves)


def _records(runs_dir: Path) -> list[dict]:
    """Readable format-2 repro.json records, oldest first (run ids sort by time)."""
    out = []
    try:
        names = sorted(e.name for e in os.scandir(runs_dir) if e.is_dir())
    except OSError:
        return out
    for name in names:
        try:
            doc = json.loads((runs_dir / name / REPORT).read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("format") != 2 or doc.get("seed") is not None:
            continue
        doc["run_id"] = name  # the folder names the check, whatever the file says
        out.append(doc)
    return out


def _disproves(entry: dict) -> bool:
    return entry.get("status") == "mismatch" or (entry.get("status") == "env-drift" and bool(entry.get("files")))


def _ref(doc: dict) -> dict:
    return {"run_id": doc["run_id"], "checked_at": doc.get("checked_at", ""), "target": doc.get("target", ""),
            "environment": doc.get("environment")}


def claim(runs_dir: Path, keys: dict[str, str]) -> dict:
    """The reproduction claim for nodes `keys` (node → current key); see the module docstring.

    `state`: `reproduced` (a check matched them all and none found a difference), `mismatch`
    (a check found one of these keys not reproducing), `partly-checked` (some nodes matched),
    or `not-checked`."""
    check = mismatch = None
    per_node: dict[str, dict] = {}
    if keys:
        for doc in _records(runs_dir):
            seen = {e.get("node"): e for e in doc.get("nodes") or [] if isinstance(e, dict)}
            ours = {n: e for n, e in seen.items() if n in keys and e.get("key") == keys[n]}
            if not ours:
                continue
            for n, e in sorted(ours.items()):
                if n not in per_node and e.get("status") in PROVEN + EXEMPT + DISPROVEN:
                    per_node[n] = {"status": e["status"], "run_id": doc["run_id"]}
            bad = sorted(n for n, e in ours.items() if _disproves(e))
            if bad and mismatch is None:
                mismatch = dict(_ref(doc), nodes=bad)
            if check is None and len(ours) == len(keys) and all(e.get("status") in PROVEN + EXEMPT
                                                                for e in ours.values()):
                exempt = sorted(n for n, e in ours.items() if e.get("status") in EXEMPT)
                check = dict(_ref(doc), nodes=len(ours) - len(exempt), nondeterministic=exempt)
    if mismatch is not None:
        state = "mismatch"
    elif check is not None:
        state = "reproduced"
    elif any(v["status"] in PROVEN for v in per_node.values()):
        state = "partly-checked"
    else:
        state = "not-checked"
    return {"state": state, "check": check, "mismatch": mismatch, "nodes": per_node}


def records_used(runs_dir: Path, keys: dict[str, str]) -> list[str]:
    """The run ids whose records `claim` cites for `keys`: what a rebuild must see to agree."""
    c = claim(runs_dir, keys)
    runs = {v["run_id"] for v in c["nodes"].values()}
    for part in ("check", "mismatch"):
        if c[part]:
            runs.add(c[part]["run_id"])
    return sorted(runs)
