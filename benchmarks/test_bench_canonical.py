"""Canonical JSON of a plan-sized structure: what a manifest or a batch of keys costs to encode."""

from __future__ import annotations

import json

import pytest

from sci import canonical
from sci.store import hashing


def plan_like(n: int) -> dict:
    """A RunManifest-shaped plan of `n` nodes: key, definition, deps, params, outputs."""
    nodes = {}
    for i in range(n):
        name = f"step[i={i}]"
        nodes[name] = {
            "key": f"{i:064x}",
            "status": "cached" if i % 3 else "executed",
            "definition": {
                "cmd": f"cat data/in-{i}.txt > data/out-{i}.txt",
                "outs": {"out": f"data/out-{i}.txt"},
                "sandbox": True,
                "determinism": "strict",
            },
            "deps": {f"data/in-{i}.txt": f"{i * 7:064x}"},
            "params": {f"p.node{i}": i * 0.5, "common.alpha": 0.05, "label": f"ü-{i}"},
            "seed": 20261122 + i,
            "outputs": {"out": {"type": "file", "digest": f"{i * 13:064x}", "size": 100 + i}},
        }
    return {"version": 1, "sci_version": "0.1.0", "plan": nodes, "volatile": {"run_id": "x"}}


@pytest.fixture(scope="module")
def plan(sizes):
    return plan_like(sizes.plan_nodes)


@pytest.mark.benchmark(group="canonical JSON")
def test_canonical_dumps_plan(benchmark, plan):
    data = benchmark(canonical.dumps, plan)
    assert canonical.loads(data) == plan


@pytest.mark.benchmark(group="canonical JSON")
def test_canonical_digest_plan(benchmark, plan):
    """Encoding plus BLAKE3, i.e. what hashing one plan-sized document costs."""
    digest = benchmark(lambda: hashing.digest_bytes(canonical.dumps(plan)))
    assert len(digest) == 64


@pytest.mark.benchmark(group="canonical JSON")
def test_canonical_dumps_per_node(benchmark, plan):
    """One small document per node, as when every node's key is computed separately."""
    nodes = list(plan["plan"].values())
    benchmark(lambda: [hashing.digest_bytes(canonical.dumps(node)) for node in nodes])


@pytest.mark.benchmark(group="canonical JSON")
def test_stdlib_json_dumps_plan_baseline(benchmark, plan):
    """Python's json with default settings (unsorted, ASCII-escaped): the floor to compare with."""
    benchmark(json.dumps, plan)


@pytest.mark.benchmark(group="canonical JSON")
def test_canonical_loads_plan(benchmark, plan):
    data = canonical.dumps(plan)
    assert benchmark(canonical.loads, data) == plan


@pytest.mark.benchmark(group="canonical JSON: a manifest")
@pytest.mark.parametrize("joined", [False, True], ids=["encoded", "joined"])
def test_manifest_bytes(benchmark, plan, joined):
    """A RunManifest of a plan-sized list: encoded whole, or joined from its entries' canonical
    JSON as kept in the no-op record (records.manifest_pieces, which no-op and edit builds write
    without joining them)."""
    from sci.records.run import manifest_pieces, plan_pieces

    manifest = {"format": 1, "command": ["build"], "plan": list(plan["plan"].values()), "volatile": {"run_id": "x"}}
    parts = [canonical.dumps(e) for e in manifest["plan"]]

    def pieced() -> bytes:
        return b"".join(manifest_pieces(manifest, {"plan": plan_pieces(parts)}))

    data = benchmark(pieced) if joined else benchmark(canonical.dumps, manifest)
    assert data == canonical.dumps(manifest)
