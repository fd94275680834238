"""Cache keys: keying every node of a planned pipeline, as `sci build` and `sci status` do.

The pipeline has N one-command steps (1,000; quick: 200, the store benchmarks' counts); node i
reads its own 120-byte file `data/in/fNNNNN.txt` and owns one parameter `p.node<i>`. Keying a
node is `Resolver.components` (the dep's digest through the stat cache, the normalized
definition, params, environment digest, seed) and then `keys.key_of` (canonical JSON + BLAKE3),
node by node in graph order, exactly as `api.status` and the scheduler call them. The stat
cache is "warm" when it already knows every dep (one stat per node), "warm, from its file" when
it is first loaded from `.sci/statcache` (what a fresh `sci status` process pays), and "cold"
when it is empty (every dep is read and hashed; the files are in the page cache).
"""

from __future__ import annotations

import re

import pytest

from bench_support import wait_out_racy_window
from sci.build import keys
from sci.plan import pipeline
from sci.store.hashing import StatCache
from sci.build.inputs import Resolver
from sci.workspace import Workspace

HEX64 = re.compile(r"[0-9a-f]{64}")


def write_workspace(root, n: int) -> Workspace:
    """N steps `nNNNNN`, each reading its own input file and writing `out/nNNNNN.txt`."""
    (root / "data" / "in").mkdir(parents=True)
    lines = ["version: 1", "defaults:", "  seed: 1", "params: params.yaml", "steps:"]
    for i in range(n):
        (root / f"data/in/f{i:05d}.txt").write_bytes(f"input {i:05d}\n".encode() * 10)
        cmd = f"{{{{ head -n 1 {{deps}}; echo {{params.p.node{i}}}; }}}} > {{outs}}"
        lines += [f"  n{i:05d}:", f'    cmd: "{cmd}"', f"    deps: [data/in/f{i:05d}.txt]",
                  f"    outs: [out/n{i:05d}.txt]", f"    params: [p.node{i}]"]
    (root / "sci.yaml").write_text("\n".join(lines) + "\n")
    (root / "params.yaml").write_text("p:\n" + "".join(f"  node{i}: 0\n" for i in range(n)))
    return Workspace(root)


@pytest.fixture(scope="module")
def planned(tmp_path_factory, sizes):
    """(loaded pipeline, its store, environment records): the state `sci status` keys from."""
    ws = write_workspace(tmp_path_factory.mktemp("keys"), sizes.store_files)
    loaded = pipeline.load(ws)
    env = pipeline.environment_records(loaded, StatCache(), [])
    return loaded, pipeline.store_of(loaded), env


def key_all(resolver: Resolver, order: list[str]) -> list[str]:
    """Every node's key, in graph order (what `api.status` computes, without its store checks)."""
    nodes = resolver.graph.nodes
    return [keys.key_of(resolver.components(nodes[name])) for name in order]


def resolver_for(planned, stat_cache: StatCache) -> Resolver:
    loaded, store, env = planned
    return Resolver(loaded.ws.root, loaded.graph, stat_cache, store, env)


@pytest.fixture(scope="module")
def expected(planned) -> list[str]:
    wait_out_racy_window()  # from here on the stat cache may keep every input it sees
    return key_all(resolver_for(planned, StatCache()), planned[0].graph.order)


@pytest.mark.benchmark(group="keys")
def test_keys_warm_stat_cache(benchmark, planned, expected, sizes):
    cache = StatCache()
    resolver = resolver_for(planned, cache)
    order = planned[0].graph.order
    key_all(resolver, order)
    assert len(cache.entries) == sizes.store_files  # every dep is now known: one stat each
    got = benchmark(key_all, resolver, order)
    assert got == expected
    assert len(got) == sizes.store_files == len(set(got))
    assert all(HEX64.fullmatch(k) for k in got)
    # `--set p.node0=1` changes node 0's key and no other.
    changed = pipeline.load(planned[0].ws, ["p.node0=1"])
    again = key_all(resolver_for((changed,) + planned[1:], cache), changed.graph.order)
    assert again[0] != expected[0] and again[1:] == expected[1:]


@pytest.mark.benchmark(group="keys")
def test_keys_warm_stat_cache_from_file(benchmark, planned, expected, tmp_path):
    """A new process's view: the stat cache is loaded from its file before keying."""
    path = tmp_path / "statcache"
    cache = StatCache(path)
    key_all(resolver_for(planned, cache), planned[0].graph.order)
    cache.save()
    order = planned[0].graph.order
    got = benchmark(lambda: key_all(resolver_for(planned, StatCache(path)), order))
    assert got == expected


@pytest.mark.benchmark(group="keys")
def test_keys_cold_stat_cache(benchmark, planned, expected):
    """Every dep read and hashed: the first `sci status` in a fresh clone of the workspace."""
    order = planned[0].graph.order
    got = benchmark(lambda: key_all(resolver_for(planned, StatCache()), order))
    assert got == expected


@pytest.mark.benchmark(group="keys: one node")
def test_key_of_one_node(benchmark, planned, expected):
    """One node's pre-image (already resolved) → canonical JSON → BLAKE3 digest."""
    loaded = planned[0]
    first = loaded.graph.order[0]
    comp = resolver_for(planned, StatCache()).components(loaded.graph.nodes[first])
    key = benchmark(keys.key_of, comp)
    assert key == expected[0]
    assert HEX64.fullmatch(key)


@pytest.mark.benchmark(group="keys: one node")
def test_components_one_node_warm(benchmark, planned, expected):
    """One node's pre-image from a warm stat cache plus its digest: the per-node unit above."""
    loaded = planned[0]
    node = loaded.graph.nodes[loaded.graph.order[0]]
    resolver = resolver_for(planned, StatCache())
    resolver.components(node)
    assert benchmark(lambda: keys.key_of(resolver.components(node))) == expected[0]
