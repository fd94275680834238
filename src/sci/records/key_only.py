"""A stand-in for a node's outcome that carries only its key: what `dossier.prepare` needs from
nodes that were keyed but not built (by `status` and `pull`)."""

from __future__ import annotations

from collections import namedtuple


class KeyOnly(namedtuple("KeyOnly", "key result", defaults=(None,))):
    __slots__ = ()
