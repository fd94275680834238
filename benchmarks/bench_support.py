"""Helpers the microbenchmarks share (a module of its own: `conftest` is a name tests/ uses too)."""

from __future__ import annotations

import time

# (label, sci median, raw median, which data set) of benchmarks that ran sci and raw alternately.
PAIRS: list[tuple[str, float, float, str]] = []


def record_pair(label: str, sci: float, raw: float, which: str) -> None:
    """Remember medians of sci and raw measured in alternation (see test_bench_hashing)."""
    PAIRS.append((label, sci, raw, which))


def wait_out_racy_window() -> None:
    """Let freshly written files age past the stat cache's racy window, so it may keep them."""
    from sci.store.hashing import RACY_WINDOW_NS

    time.sleep(RACY_WINDOW_NS / 1e9 + 0.05)
