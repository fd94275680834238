"""A stand-in for a node's outcome that carries only its key: what `dossier.prepare` needs from
nodes that were keyed but not built (by `status` and `pull`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeyOnly:
    key: str
    result: dict | None = None
