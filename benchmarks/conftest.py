"""Shared data and reporting for sci's microbenchmarks (pytest-benchmark).

Run with `.venv/bin/python -m pytest benchmarks --benchmark-only`. The normal test run never
collects this folder (pyproject's `testpaths = ["tests"]`).

`SCI_BENCH_SIZE` picks the data sizes: `full` (default; 1 GiB of hashing input) or `quick`
(a few MiB, for checking the benchmarks themselves). At the end of the run a table compares
each sci benchmark with its raw baseline from the same run ("sci reaches N% of raw").
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass

import pytest

from bench_support import PAIRS


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark's data is."""

    big_file_bytes: int      # one file, hashed by threaded mmap
    many_files: int          # number of files in the many-small-files tree
    many_total_bytes: int    # their total size
    plan_nodes: int          # nodes in the plan-like structure for canonical JSON
    store_files: int         # small files put into / materialized from the store
    rounds: int              # timed rounds of each heavy benchmark


SIZES = {
    "full": Sizes(1 << 30, 10_000, 1 << 30, 10_000, 1_000, 5),
    "quick": Sizes(16 << 20, 1_000, 16 << 20, 1_000, 200, 3),
}


def _sizes() -> Sizes:
    name = os.environ.get("SCI_BENCH_SIZE", "full")
    if name not in SIZES:
        raise pytest.UsageError(f"SCI_BENCH_SIZE={name!r}: use one of {', '.join(SIZES)}")
    return SIZES[name]


@pytest.fixture(scope="session")
def sizes() -> Sizes:
    return _sizes()


def _random_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


@pytest.fixture(scope="session")
def big_file(tmp_path_factory, sizes):
    """One file of `big_file_bytes` random bytes (written in 16 MiB pieces)."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    rng = random.Random(1)
    piece = 16 << 20
    with open(path, "wb") as fh:
        left = sizes.big_file_bytes
        while left:
            n = min(piece, left)
            fh.write(_random_bytes(rng, n))
            left -= n
    yield path
    path.unlink()  # pytest keeps its last three temp dirs; 1 GiB each is too much to leave


@pytest.fixture(scope="session")
def many_files(tmp_path_factory, sizes):
    """A tree of `many_files` files in 100-file folders; gives (root, sorted file paths)."""
    root = tmp_path_factory.mktemp("many") / "tree"
    rng = random.Random(2)
    each = sizes.many_total_bytes // sizes.many_files
    paths = []
    for i in range(sizes.many_files):
        folder = root / f"d{i // 100:04d}"
        if i % 100 == 0:
            folder.mkdir(parents=True)
        path = folder / f"f{i:06d}.bin"
        path.write_bytes(_random_bytes(rng, each))
        paths.append(str(path))
    yield root, sorted(paths)
    shutil.rmtree(root)


# -- the sci-versus-raw summary --------------------------------------------------------------

_MEDIANS: dict[str, float] = {}
# (label, sci benchmark, raw benchmark, which input: "big" or "many")
COMPARISONS: list[tuple[str, str, str, str]] = [
    ("1 file, sci cold", "test_sci_big_file_cold", "test_raw_big_file", "big"),
    ("1 file, sci warm (stat cache)", "test_sci_big_file_warm", "test_raw_big_file", "big"),
    ("many files, sci cold tree", "test_sci_many_files_cold", "test_raw_many_files", "many"),
    ("many files, sci warm tree (in memory)", "test_sci_many_files_warm", "test_raw_many_files", "many"),
    ("many files, sci warm tree (cache file)", "test_sci_many_files_warm_persisted",
     "test_raw_many_files", "many"),
]


@pytest.fixture
def record(request, benchmark):
    """Use instead of `benchmark` to have the median remembered for the summary table."""
    yield benchmark
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        _MEDIANS[request.node.originalname] = stats.stats.median


def pytest_terminal_summary(terminalreporter, config):
    sizes = _sizes()
    volume = {"big": sizes.big_file_bytes, "many": sizes.many_total_bytes}
    rows = [(label + " (alternating)", sci, raw, volume[which]) for label, sci, raw, which in PAIRS]
    rows += [(label, _MEDIANS[sci], _MEDIANS[raw], volume[which])
             for label, sci, raw, which in COMPARISONS if sci in _MEDIANS and raw in _MEDIANS]
    if not rows:
        return
    tr = terminalreporter
    tr.section("sci hashing versus raw BLAKE3 (medians of the same run; GB/s = 1e9 bytes/s)")
    for label, sci, raw, nbytes in rows:
        tr.write_line(f"{label:48s} sci {sci:8.4f} s {nbytes / sci / 1e9:7.2f} GB/s   "
                      f"raw {raw:8.4f} s {nbytes / raw / 1e9:6.2f} GB/s   sci/raw throughput {raw / sci:7.1%}")
