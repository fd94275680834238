"""Reading a step's parameters, whether it declared a dotted key or the mapping holding it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MISSING = object()


def lookup(params: Mapping[str, Any], dotted: str, default: Any = _MISSING) -> Any:
    """The value of `dotted` (e.g. "fit.ar2_lag") in a step's `ctx.params`.

    sci hands a step each key it declared: a leaf (`params: [fit.ar2_lag]`) arrives under its
    own dotted name, a mapping (`params: [fit]`) as a subtree. Either spelling of the
    declaration works here, so a step's code does not care how sci.yaml chose to list it.
    """
    if dotted in params:
        return params[dotted]
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in params:
            node: Any = params[prefix]
            for part in parts[cut:]:
                if not isinstance(node, Mapping) or part not in node:
                    node = _MISSING
                    break
                node = node[part]
            if node is not _MISSING:
                return node
    if default is not _MISSING:
        return default
    raise KeyError(f"parameter {dotted!r} is not among the step's declared params {sorted(params)}")
