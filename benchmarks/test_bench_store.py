"""The store: putting and materializing many small files, as a step's outputs are."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest

from sci.store.cas import OutputRecord, Store


@pytest.fixture(scope="module")
def small_files(tmp_path_factory, sizes) -> list[Path]:
    src = tmp_path_factory.mktemp("small-src")
    paths = []
    for i in range(sizes.store_files):
        path = src / f"f{i:05d}.txt"
        path.write_bytes(f"result {i}\n".encode() * (1 + i % 50))
        paths.append(path)
    return paths


@pytest.fixture
def fresh(tmp_path):
    """A factory of empty directories, one per benchmark round."""
    counter = itertools.count()
    made = []

    def make() -> Path:
        path = tmp_path / f"round-{next(counter)}"
        path.mkdir()
        made.append(path)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.benchmark(group="store: small files")
def test_store_put_small_files(benchmark, small_files, fresh, sizes):
    def setup():
        return (Store(fresh() / "cas"),), {}

    def put_all(store):
        return [store.put_file(path) for path in small_files]

    digests = benchmark.pedantic(put_all, setup=setup, rounds=sizes.rounds)
    assert len(set(digests)) == len(small_files)


@pytest.mark.benchmark(group="store: small files")
def test_store_put_output_tree(benchmark, small_files, fresh, sizes):
    """One directory output holding every small file: blobs plus one tree object."""
    tree_src = small_files[0].parent

    def setup():
        return (Store(fresh() / "cas"),), {}

    record = benchmark.pedantic(lambda store: store.put_output(tree_src), setup=setup,
                                rounds=sizes.rounds)
    assert record.type == "tree"


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory, small_files) -> tuple[Store, list[OutputRecord]]:
    store = Store(tmp_path_factory.mktemp("filled") / "cas")
    records = [OutputRecord("file", store.put_file(p), p.stat().st_size) for p in small_files]
    return store, records


@pytest.mark.benchmark(group="store: small files")
def test_store_materialize_small_files(benchmark, filled_store, fresh, sizes):
    store, records = filled_store

    def setup():
        return (fresh(),), {}

    def materialize_all(dest):
        for i, rec in enumerate(records):
            store.materialize(rec, dest / f"out{i:05d}.txt")
        return dest

    dest = benchmark.pedantic(materialize_all, setup=setup, rounds=sizes.rounds)
    assert len(os.listdir(dest)) == len(records)


@pytest.mark.benchmark(group="store: small files")
def test_store_materialize_tree(benchmark, filled_store, small_files, fresh, sizes):
    store, _ = filled_store
    tree = store.put_output(small_files[0].parent)

    def setup():
        return (fresh() / "out",), {}

    benchmark.pedantic(lambda dest: store.materialize(tree, dest), setup=setup, rounds=sizes.rounds)


def _results(n: int) -> list[tuple[str, dict]]:
    """n StepResult-sized action results (~1.5 KB of canonical JSON each)."""
    out = []
    for i in range(n):
        key = f"{i:064x}"
        out.append((key, {"key": key, "node": f"n{i:05d}", "components": {"deps": {f"data/{j}.txt": "ab" * 32
                                                                                    for j in range(8)}},
                          "outputs": {"out": {"path": f"out/{i}.txt", "type": "file", "digest": "cd" * 32,
                                              "size": 14}}, "volatile": {"host": "bench", "duration_s": 0.01}}))
    return out


@pytest.mark.benchmark(group="store: action results")
@pytest.mark.parametrize("packed", [False, True], ids=["loose-files", "one-pack"])
def test_store_put_action_results(benchmark, fresh, sizes, packed):
    """A build's action results: a file each (loose) against appended to one pack."""
    results = _results(sizes.store_files)

    def setup():
        return (Store(fresh() / "cas"),), {}

    def put_all(store):
        if packed:
            store.start_pack()
        for key, doc in results:
            store.put_action(key, doc)
        store.finish_pack()
        return store

    store = benchmark.pedantic(put_all, setup=setup, rounds=sizes.rounds)
    assert store.get_action(results[-1][0]) == results[-1][1]


@pytest.fixture(scope="module")
def packed_store(tmp_path_factory, sizes) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("packed") / "cas"
    store = Store(root)
    store.start_pack()
    results = _results(max(sizes.store_files, 2000))
    for key, doc in results:
        store.put_action(key, doc)
    store.finish_pack()
    return root, [k for k, _ in results]


@pytest.mark.benchmark(group="store: action lookups")
@pytest.mark.parametrize("lookups", [1, 1000])
def test_store_packed_lookups(benchmark, packed_store, lookups):
    """A fresh process looking up `lookups` keys in a pack: one key is searched for in the
    pack's bytes, a thousand make it index every record once."""
    root, keys = packed_store
    wanted = keys[:: max(1, len(keys) // lookups)][:lookups]

    def look():
        store = Store(root, create=False)
        return sum(store.get_action(k) is not None for k in wanted)

    assert benchmark(look) == len(wanted)


@pytest.mark.benchmark(group="store: action lookups")
@pytest.mark.parametrize("indexed", [True, False], ids=["key-index", "scan"])
def test_store_packed_miss(benchmark, packed_store, indexed, tmp_path):
    """A fresh process looking up a key that is in no pack (every node an edit re-runs): the
    pack's key index is bisected, or — without one, as for a pack whose writer was killed —
    the pack's bytes are scanned. The ratio of the two is the index's worth."""
    import shutil

    root, _keys = packed_store
    copy = tmp_path / "cas"
    shutil.copytree(root, copy)
    if not indexed:
        for idx in (copy / "actions" / "packs").glob("*.idx"):
            idx.chmod(0o644)
            idx.unlink()

    def look():
        return Store(copy, create=False).get_action("ab" * 32)

    assert benchmark(look) is None


# -- a large blob copied out of the store: verified (what sci does) against a plain copy -------
@pytest.fixture(scope="module")
def big_blob(tmp_path_factory, big_file) -> tuple[Store, OutputRecord]:
    store = Store(tmp_path_factory.mktemp("big-store") / "cas")
    return store, OutputRecord("file", store.put_file(big_file), big_file.stat().st_size)


@pytest.mark.benchmark(group="store: a large blob out of the store")
def test_store_materialize_big_blob_verified(benchmark, big_blob, fresh, sizes):
    """SPEC §3: every blob is hashed as it is copied out (threaded BLAKE3 over a memory map,
    then a reflink or sendfile copy from the page cache)."""
    store, rec = big_blob

    def setup():
        return (fresh() / "out.bin",), {}

    benchmark.pedantic(lambda dest: store.materialize(rec, dest), setup=setup, rounds=sizes.rounds)


@pytest.mark.benchmark(group="store: a large blob out of the store")
def test_store_copy_big_blob_unverified(benchmark, big_blob, fresh, sizes):
    """The reference: the same bytes copied with no hashing (shutil.copyfile, sendfile)."""
    store, rec = big_blob

    def setup():
        return (fresh() / "out.bin",), {}

    benchmark.pedantic(lambda dest: shutil.copyfile(store.blob_path(rec.digest), dest), setup=setup,
                       rounds=sizes.rounds)
