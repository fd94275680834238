"""sci.api is the top of the library: the operations call down into build/, evidence/, store/,
never back up. A module it reaches that imported sci.api again (even inside a function) would
make a cycle, the kind that breaks on the first import-order change."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sci"


def _imports() -> dict[str, set[str]]:
    """Every module of src/sci with the sci modules it imports, at any depth of its body."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        parts = ("sci",) + path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "sci" or node.module.startswith("sci."):
                    deps.add(node.module)
                    deps |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from sci.x import mod`
            elif isinstance(node, ast.Import):
                deps |= {alias.name for alias in node.names if alias.name.startswith("sci.")}
        found[name] = deps
    return {name: deps & set(found) for name, deps in found.items()}


def _path(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A chain of imports from `start` to `goal`, or None."""
    came: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        here = todo.pop()
        for nxt in sorted(graph[here]):
            if nxt == goal:
                chain = [here]
                while came[chain[-1]] is not None:
                    chain.append(came[chain[-1]])  # type: ignore[arg-type]
                return chain[::-1] + [goal]
            if nxt not in came:
                came[nxt] = here
                todo.append(nxt)
    return None


def test_the_api_is_on_no_import_cycle():
    graph = _imports()
    assert "sci.evidence.repro" in graph["sci.api"]  # the scan sees function-level imports
    cycles = {dep: chain for dep in graph["sci.api"] if (chain := _path(graph, dep, "sci.api"))}
    assert not cycles, "\n".join(" -> ".join(["sci.api", *chain]) for chain in cycles.values())


def test_evidence_modules_the_api_calls_reach_no_api():
    graph = _imports()
    for module in ("sci.evidence.repro", "sci.evidence.export", "sci.evidence.provenance"):
        assert _path(graph, module, "sci.api") is None, module
