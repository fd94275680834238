"""The declared environments of one build (or status): each resolved once, prepared on first need.

Fingerprint records are keyed by `record_key(node)`:

    "cpu" / "gpu"                   the workspace's default environment (the caller's PATH)
    "env:NAME" / "env:NAME+gpu"     a declared environment (SPEC §10)

Each record is {"digest", "components"}, plus "name" for a declared environment: the
components hold its identity, the digest enters the key of every node that runs there, and
the record is what the node's StepResult keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the build's hot modules import record_key: the rest loads when an environment is declared
    from sci.envs.declared import Declared, Resolved
    from sci.envs.prepare import Prepared
    from sci.store.hashing import StatCache


def record_key(node) -> str:
    """Which fingerprint record a node's key takes (module docstring)."""
    base = "cpu" if node.environment is None else f"env:{node.environment}"
    if node.needs_gpu:
        return "gpu" if base == "cpu" else f"{base}+gpu"
    return base


class Environments:
    """Declared environments of a workspace, resolved and prepared at most once each."""

    def __init__(self, root: Path, state_dir: Path, env_spec: dict, stat_cache: StatCache):
        self.root, self.state_dir, self.env_spec, self.stat_cache = root, state_dir, env_spec, stat_cache
        self.declared: dict[str, Declared] = {}
        if env_spec.get("environments"):  # a build without any never imports them (~0.5 ms)
            from sci.envs.declared import declared

            self.declared = declared(env_spec)
        self._resolved: dict[str, Resolved] = {}
        self._prepared: dict[str, Prepared] = {}

    def resolved(self, name: str) -> Resolved:
        hit = self._resolved.get(name)
        if hit is None:
            from sci.envs.declared import resolve

            hit = self._resolved[name] = resolve(self.root, self.declared[name], self.stat_cache,
                                                 self.state_dir / "cache")
        return hit

    def records(self) -> dict[str, dict]:
        """"env:NAME" → the fingerprint record of every declared environment."""
        from sci.build import fingerprint

        spec = self.env_spec
        out = {}
        for name in self.declared:
            identity = self.resolved(name).identity
            comps = fingerprint.environment(self.root, spec["files"], spec["vars"], spec["tools"],
                                            stat_cache=self.stat_cache, cache_dir=self.state_dir / "cache",
                                            identity=identity)
            out[f"env:{name}"] = {"digest": fingerprint.digest(comps), "components": comps, "name": name}
        return out

    def setup(self, name: str, emit=None) -> Prepared:
        """The environment `name`, prepared now if it is not yet (emits `environment_prepared`)."""
        hit = self._prepared.get(name)
        if hit is None:
            import time

            from sci.envs.prepare import prepare

            t0 = time.perf_counter()
            hit, made = prepare(self.state_dir, self.root, self.resolved(name))
            if made and emit is not None:
                emit("environment_prepared", None, environment=name, directory=hit.directory,
                     duration_s=round(time.perf_counter() - t0, 3))
            self._prepared[name] = hit
        return hit
