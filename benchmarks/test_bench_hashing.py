"""BLAKE3 hashing: sci's file and tree digests side by side with raw blake3 on the same data.

Raw baselines are the fastest plain use of the blake3 package: `update_mmap` with
`max_threads=AUTO` for the big file, and whole-file reads on one thread over a precomputed,
sorted list of paths for the many files (so raw pays no directory walk and no stat; sci's tree
digest pays both). Both run on page-cache-warm data: "cold" means sci's stat cache is empty,
"warm" that it already knows every file.
"""

from __future__ import annotations

import statistics
import time

import pytest
from blake3 import blake3

from bench_support import record_pair, wait_out_racy_window
from sci.store import hashing
from sci.store.hashing import StatCache


def _raw_many(paths: list[str]) -> list[bytes]:
    out = []
    for path in paths:
        with open(path, "rb") as fh:
            out.append(blake3(fh.read()).digest())
    return out


@pytest.mark.benchmark(group="hash: 1 big file")
def test_raw_big_file(record, big_file, sizes):
    record.pedantic(lambda: blake3(max_threads=blake3.AUTO).update_mmap(big_file).digest(),
                    rounds=sizes.rounds, warmup_rounds=1)


@pytest.mark.benchmark(group="hash: 1 big file")
def test_sci_big_file_cold(record, big_file, sizes):
    digest = record.pedantic(lambda: StatCache().path_digest(big_file),
                             rounds=sizes.rounds, warmup_rounds=1)
    assert digest == blake3(max_threads=blake3.AUTO).update_mmap(big_file).hexdigest()


@pytest.mark.benchmark(group="hash: 1 big file")
def test_sci_big_file_warm(record, big_file, sizes):
    wait_out_racy_window()
    cache = StatCache()
    expected = cache.path_digest(big_file)
    assert record.pedantic(lambda: cache.path_digest(big_file), rounds=sizes.rounds) == expected


@pytest.mark.benchmark(group="hash: many files")
def test_raw_many_files(record, many_files, sizes):
    _, paths = many_files
    digests = record.pedantic(_raw_many, args=(paths,), rounds=sizes.rounds, warmup_rounds=1)
    assert len(digests) == sizes.many_files


@pytest.mark.benchmark(group="hash: many files")
def test_sci_many_files_cold(record, many_files, sizes):
    root, paths = many_files
    digest = record.pedantic(lambda: StatCache().path_digest(root),
                             rounds=sizes.rounds, warmup_rounds=1)
    entries = StatCache().tree_entries(root)
    assert len(entries) == len(paths)
    assert digest == hashing.tree_digest(entries)


@pytest.mark.benchmark(group="hash: many files")
def test_sci_many_files_warm(record, many_files, sizes):
    root, _ = many_files
    wait_out_racy_window()
    cache = StatCache()
    expected = cache.path_digest(root)
    assert record.pedantic(lambda: cache.path_digest(root), rounds=sizes.rounds) == expected


@pytest.mark.benchmark(group="hash: many files")
def test_sci_many_files_warm_persisted(record, many_files, sizes, tmp_path):
    """What a fresh `sci` process pays: load the cache file, stat every file, hash the listing."""
    root, _ = many_files
    wait_out_racy_window()
    cache_file = tmp_path / "statcache"
    cache = StatCache(cache_file)
    expected = cache.path_digest(root)
    cache.save()
    assert record.pedantic(lambda: StatCache(cache_file).path_digest(root),
                           rounds=sizes.rounds) == expected


def _alternate(first, second, rounds: int) -> tuple[list[float], list[float]]:
    """Time `first` and `second` alternately; the order flips each round."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(rounds):
        order = ((0, first), (1, second)) if i % 2 == 0 else ((1, second), (0, first))
        for slot, fn in order:
            start = time.perf_counter()
            fn()
            times[slot].append(time.perf_counter() - start)
    return times


@pytest.mark.benchmark(group="hash: alternating pairs")
def test_pair_big_file(benchmark, big_file, sizes):
    raw = lambda: blake3(max_threads=blake3.AUTO).update_mmap(big_file).digest()  # noqa: E731
    sci = lambda: StatCache().path_digest(big_file)  # noqa: E731
    raw(), sci()  # warm-up: page cache
    raw_t, sci_t = benchmark.pedantic(_alternate, args=(raw, sci, 2 * sizes.rounds + 1), rounds=1)
    record_pair("1 file, sci cold vs raw", statistics.median(sci_t), statistics.median(raw_t), "big")


@pytest.mark.benchmark(group="hash: alternating pairs")
def test_pair_many_files(benchmark, many_files, sizes):
    root, paths = many_files
    raw = lambda: _raw_many(paths)  # noqa: E731
    sci = lambda: StatCache().path_digest(root)  # noqa: E731
    raw(), sci()
    raw_t, sci_t = benchmark.pedantic(_alternate, args=(raw, sci, 2 * sizes.rounds + 1), rounds=1)
    record_pair("many files, sci cold tree vs raw", statistics.median(sci_t), statistics.median(raw_t), "many")
