"""BuildReport: what one build did, as `sci.api.build` returns it and `--json` prints it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sci.records.run import Outcomes
from sci.values import Value


class BuildReport(Value):
    """What a build did: its run, every selected node's outcome (`order`: the selection in plan
    order), its manifest, and what the remote cache did (look-ups, hits, objects and bytes)."""

    __slots__ = _FIELDS = ("run_id", "run_dir", "outcomes", "order", "manifest", "remote")

    def __init__(self, run_id: str | None, run_dir: Path | None, outcomes: Mapping[str, Any], order: list[str],
                 manifest: dict | None = None, remote: dict | None = None):
        self.run_id, self.run_dir, self.outcomes, self.order = run_id, run_dir, outcomes, order
        self.manifest, self.remote = manifest, remote

    @property
    def ok(self) -> bool:
        counts = self.counts()
        return not counts["failed"] and not counts["skipped"]

    def counts(self) -> dict[str, int]:
        outcomes = self.outcomes
        return (outcomes if isinstance(outcomes, Outcomes) else Outcomes(outcomes)).counts()

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "counts": self.counts(),
            "nodes": [{"node": n, "status": self.outcomes[n].status.value, "key": self.outcomes[n].key,
                       "error": self.outcomes[n].error} for n in self.order],
            "remote": self.remote,
        }
