"""StepContext: what a Python (`fn:`) step receives (SPEC §4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sci.values import Value


class StepContext(Value):
    """The view a `def step(ctx)` function has of its node.

    `deps` and `outs` map names to paths relative to the step's working directory (a glob dep
    maps to a sorted list of paths); `params` maps each declared dotted key to its value (the
    subtree for a key naming a mapping); `seed` is the node's seed; `gpus` the GPU indices
    assigned to it. Whatever the function puts in `metrics` (JSON values) is recorded in the
    node's StepResult.

    No `__slots__`: a step's function may keep its own attributes on `ctx`, as it could when
    this was a dataclass.
    """

    _FIELDS = ("node", "deps", "outs", "params", "seed", "gpus", "determinism", "metrics")

    def __init__(self, node: str, deps: dict[str, Any], outs: dict[str, Path], params: dict[str, Any], seed: int,
                 gpus: list[int] | None = None, determinism: str = "strict", metrics: dict[str, Any] | None = None):
        self.node, self.deps, self.outs, self.params, self.seed = node, deps, outs, params, seed
        self.gpus = gpus if gpus is not None else []
        self.determinism = determinism
        self.metrics = metrics if metrics is not None else {}

    def rng(self):
        """A NumPy Generator seeded from this node's seed (a fresh one on every call)."""
        import numpy as np

        return np.random.default_rng(self.seed)

    def log_metric(self, name: str, value: Any) -> None:
        self.metrics[name] = value
