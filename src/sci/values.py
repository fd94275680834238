"""Value: the base of sci's small record classes (a plan, a node, an outcome, a report).

Not dataclasses: importing `dataclasses` pulls in inspect, ast, dis and tokenize (~7 ms of
every command's start-up) and making each class costs another 0.3–0.7 ms, while a hand-written
`__init__` is compiled once into the .pyc. A subclass lists its fields in `_FIELDS` (its
`__init__` sets them) and gets equality, a repr and `replace` over them.
"""

from __future__ import annotations

from typing import Any


class Value:
    __slots__ = ()
    _FIELDS: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass without frozen=True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in self._FIELDS)})"

    def replace(self, **changes: Any):
        """A new instance with `changes` applied (as dataclasses.replace: through __init__)."""
        unknown = set(changes) - set(self._FIELDS)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {sorted(unknown)[0]!r}")
        return type(self)(**{f: changes[f] if f in changes else getattr(self, f) for f in self._FIELDS})


class NameIndex:
    """Where each name sits in a list. The first few look-ups search the list (a parameter edit
    asks for one or two); more build a dict of it once (~0.7 ms for 10,000 names)."""

    __slots__ = ("names", "_at", "_asked")
    SEARCHES = 8

    def __init__(self, names: list[str]):
        self.names = names
        self._at: dict[str, int] | None = None
        self._asked = 0

    def find(self, name: str) -> int | None:
        if self._at is None:
            if self._asked < self.SEARCHES:
                self._asked += 1
                try:
                    return self.names.index(name)
                except ValueError:
                    return None
            self._at = dict(zip(self.names, range(len(self.names))))
        return self._at.get(name)
