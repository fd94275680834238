"""Properties of sci's content digests: files equal b3sum, trees are Merkle nodes, and the stat
cache only ever saves work, never changes an answer."""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

import pytest
from blake3 import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sci import canonical
from sci.store import hashing
from sci.store.hashing import MMAP_THRESHOLD, StatCache, TreeEntry

# Long enough that a file written before it is no longer "racily clean" for the stat cache.
PAST_RACY_WINDOW_S = hashing.RACY_WINDOW_NS / 1e9 + 0.02

fs_settings = settings(max_examples=40, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A fresh directory per call; hypothesis runs many examples in one test function."""
    base = tmp_path_factory.mktemp("hashing")
    return lambda: Path(tempfile.mkdtemp(dir=base))


class ReadCounter:
    """Wraps hashing.digest_file to count the files the stat cache let through to be read."""

    def __init__(self, monkeypatch):
        self.reads: list[str] = []
        real = hashing.digest_file

        def counting(path, size=None):
            self.reads.append(os.fspath(path))
            return real(path, size)

        monkeypatch.setattr(hashing, "digest_file", counting)


def b3(data: bytes) -> str:
    return blake3(data).hexdigest()


def write(path: Path, data: bytes, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755 if executable else 0o644)


# -- files --------------------------------------------------------------------------------

def test_known_digests():
    assert hashing.digest_bytes(b"") == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert hashing.digest_bytes(b"abc") == "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"


@fs_settings
@given(st.binary(max_size=70_000))
def test_digest_file_equals_blake3_of_bytes(scratch, data):
    path = scratch() / "f"
    path.write_bytes(data)
    assert hashing.digest_file(path) == b3(data)
    assert hashing.digest_file(path, len(data)) == b3(data)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delta=st.integers(-2, 2), seed=st.integers(0, 2**32 - 1))
def test_digest_file_around_mmap_threshold(scratch, delta, seed):
    """Both code paths (whole read below the threshold, threaded mmap at and above it) agree."""
    data = random.Random(seed).randbytes(MMAP_THRESHOLD + delta)
    path = scratch() / "f"
    path.write_bytes(data)
    assert hashing.digest_file(path) == b3(data)


@fs_settings
@given(st.binary(max_size=5000), st.integers(0, 10_000))
def test_digest_file_with_a_stale_size_hint(scratch, data, hint):
    """A file that grew or shrank after the caller's stat is still hashed whole."""
    if hint >= MMAP_THRESHOLD:
        hint = 0
    path = scratch() / "f"
    path.write_bytes(data)
    assert hashing.digest_file(path, hint) == b3(data)


def test_digest_file_missing_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        hashing.digest_file(tmp_path / "absent")


# -- trees --------------------------------------------------------------------------------

names = st.text(alphabet="abcxyz.-_é", min_size=1, max_size=4).filter(lambda n: n not in (".", ".."))
rel_paths = st.lists(names, min_size=1, max_size=3).map("/".join)


def no_prefix_clash(paths) -> bool:
    """A path may not be both a file and a directory of another path."""
    ps = set(paths)
    return not any("/".join(p.split("/")[:i]) in ps for p in ps for i in range(1, p.count("/") + 1))


trees = st.dictionaries(rel_paths, st.tuples(st.binary(max_size=64), st.booleans()),
                        min_size=1, max_size=8).filter(lambda d: no_prefix_clash(d))


def build(root: Path, tree: dict, order: list[str] | None = None) -> Path:
    for rel in order or sorted(tree):
        data, executable = tree[rel]
        write(root / rel, data, executable)
    return root


def tree_digest_of(root: Path) -> str:
    return StatCache().path_digest(root)


@fs_settings
@given(trees, st.randoms(use_true_random=False))
def test_tree_digest_independent_of_creation_order(scratch, tree, rng):
    order = list(tree)
    rng.shuffle(order)
    a = build(scratch(), tree)
    b = build(scratch(), tree, order)
    assert tree_digest_of(a) == tree_digest_of(b)


@fs_settings
@given(trees)
def test_tree_digest_is_the_digest_of_its_listing(scratch, tree):
    root = build(scratch(), tree)
    entries = [TreeEntry(rel, b3(data), len(data), executable) for rel, (data, executable) in tree.items()]
    doc = hashing.tree_document(entries)
    assert doc["type"] == hashing.TREE_TAG
    assert [row[0] for row in doc["entries"]] == sorted(tree)
    assert tree_digest_of(root) == hashing.digest_bytes(canonical.dumps(doc))
    assert hashing.entries_from_document(canonical.loads(canonical.dumps(doc))) == sorted(
        entries, key=lambda e: e.path)


@fs_settings
@given(trees, st.data())
def test_any_byte_change_changes_tree_digest(scratch, tree, data):
    rel = data.draw(st.sampled_from(sorted(tree)))
    content, executable = tree[rel]
    if content:
        i = data.draw(st.integers(0, len(content) - 1))
        flip = data.draw(st.integers(1, 255))
        changed = content[:i] + bytes([content[i] ^ flip]) + content[i + 1:]
    else:
        changed = b"\0"
    before = tree_digest_of(build(scratch(), tree))
    after = tree_digest_of(build(scratch(), {**tree, rel: (changed, executable)}))
    assert before != after


@fs_settings
@given(trees, st.data())
def test_renaming_a_file_changes_tree_digest(scratch, tree, data):
    rel = data.draw(st.sampled_from(sorted(tree)))
    new_rel = data.draw(rel_paths.filter(lambda p: p not in tree and no_prefix_clash([*tree, p])))
    renamed = {k: v for k, v in tree.items() if k != rel}
    renamed[new_rel] = tree[rel]
    assert tree_digest_of(build(scratch(), tree)) != tree_digest_of(build(scratch(), renamed))


@fs_settings
@given(trees, st.data())
def test_exec_bit_changes_tree_digest(scratch, tree, data):
    rel = data.draw(st.sampled_from(sorted(tree)))
    content, executable = tree[rel]
    toggled = {**tree, rel: (content, not executable)}
    assert tree_digest_of(build(scratch(), tree)) != tree_digest_of(build(scratch(), toggled))


@fs_settings
@given(trees)
def test_adding_an_empty_file_changes_tree_digest(scratch, tree):
    extra = "zzzz-extra"
    assert extra not in tree
    root = build(scratch(), tree)
    before = tree_digest_of(root)
    write(root / extra, b"")
    assert tree_digest_of(root) != before


def test_tree_digest_pinned():
    """A golden digest: changing it changes every directory output sci ever recorded."""
    entries = [TreeEntry("b/c.txt", b3(b"c"), 1, False), TreeEntry("a.sh", b3(b"#!"), 2, True)]
    assert canonical.dumps(hashing.tree_document(entries)).startswith(
        b'{"entries":[["a.sh","')
    assert hashing.tree_digest(entries) == "c6f680bea5846483554b33a4db8632f283e398dd5866c4ab513ab9c1359b18ed"


def test_entries_from_document_rejects_other_documents():
    with pytest.raises(ValueError):
        hashing.entries_from_document({"type": "sci.key", "entries": []})


# -- the stat cache ----------------------------------------------------------------------

def test_stat_cache_skips_unchanged_files(tmp_path, monkeypatch):
    reads = ReadCounter(monkeypatch)
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    time.sleep(PAST_RACY_WINDOW_S)
    cache = StatCache()
    assert cache.file_digest(path) == b3(b"hello")
    assert cache.file_digest(path) == b3(b"hello")
    assert reads.reads == [str(path)]


def test_stat_cache_sees_same_size_rewrite(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"aaaa")
    time.sleep(PAST_RACY_WINDOW_S)
    cache = StatCache()
    assert cache.file_digest(path) == b3(b"aaaa")
    path.write_bytes(b"bbbb")
    assert cache.file_digest(path) == b3(b"bbbb")


def test_stat_cache_sees_rewrite_that_restores_mtime(tmp_path):
    """Tools that preserve mtimes (cp -p, rsync -t, tar) cannot hide an edit: ctime moves."""
    path = tmp_path / "f"
    path.write_bytes(b"aaaa")
    st = path.stat()
    time.sleep(PAST_RACY_WINDOW_S)
    cache = StatCache()
    assert cache.file_digest(path) == b3(b"aaaa")
    path.write_bytes(b"bbbb")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.file_digest(path) == b3(b"bbbb")


def test_stat_cache_does_not_trust_racily_recent_files(tmp_path, monkeypatch):
    """A file hashed right after it was written may change again within the same timestamp
    tick, so its digest is not kept; a same-size rewrite straight away is still seen."""
    reads = ReadCounter(monkeypatch)
    path = tmp_path / "f"
    cache = StatCache()
    for content in (b"aaaa", b"bbbb", b"cccc"):
        path.write_bytes(content)
        assert cache.file_digest(path) == b3(content)
    assert len(reads.reads) == 3


def test_stat_cache_tree_rehashes_only_changed_files(tmp_path, monkeypatch):
    tree = {f"d{i % 3}/f{i}": (bytes([i]) * 10, False) for i in range(12)}
    root = build(tmp_path / "t", tree)
    time.sleep(PAST_RACY_WINDOW_S)
    cache = StatCache()
    first = cache.path_digest(root, "t")
    reads = ReadCounter(monkeypatch)
    assert cache.path_digest(root, "t") == first
    assert reads.reads == []
    (root / "d1/f4").write_bytes(b"X" * 10)
    changed = cache.path_digest(root, "t")
    assert changed != first
    assert reads.reads == [str(root / "d1/f4")]
    assert changed == tree_digest_of(root)


def test_persisted_cache_survives_save_and_load(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"content")
    time.sleep(PAST_RACY_WINDOW_S)
    cache_file = tmp_path / ".sci" / "statcache"
    first = StatCache(cache_file)
    digest = first.file_digest(path, "f")
    first.save()
    assert cache_file.exists()
    reads = ReadCounter(monkeypatch)
    second = StatCache(cache_file)
    assert second.file_digest(path, "f") == digest == b3(b"content")
    assert reads.reads == []


def test_remember_and_forget(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"made by sci")
    cache = StatCache(tmp_path / "cache")
    cache.remember(path, b3(b"made by sci"), "f")
    cache.save()
    reads = ReadCounter(monkeypatch)
    loaded = StatCache(tmp_path / "cache")
    assert loaded.file_digest(path, "f") == b3(b"made by sci")
    assert reads.reads == []
    loaded.forget("f")
    assert loaded.file_digest(path, "f") == b3(b"made by sci")
    assert reads.reads == [str(path)]


def saved_cache(directory: Path) -> tuple[Path, Path, str]:
    target = directory / "data"
    target.write_bytes(b"payload bytes")
    time.sleep(PAST_RACY_WINDOW_S)
    cache_file = directory / "statcache"
    cache = StatCache(cache_file)
    digest = cache.file_digest(target, "data")
    cache.save()
    return cache_file, target, digest


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_corrupted_cache_file_is_ignored(scratch, monkeypatch, data):
    cache_file, target, digest = saved_cache(scratch())
    raw = bytearray(cache_file.read_bytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "garbage", "empty"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif how == "garbage":
        raw = bytearray(data.draw(st.binary(min_size=1, max_size=200)))
    else:
        raw = bytearray()
    cache_file.write_bytes(bytes(raw))
    with monkeypatch.context() as m:
        reads = ReadCounter(m)
        loaded = StatCache(cache_file)
        assert loaded.file_digest(target, "data") == digest
        assert reads.reads == [str(target)]  # nothing trusted from the damaged file


def test_old_format_cache_file_is_ignored(tmp_path, monkeypatch):
    import marshal

    target = tmp_path / "data"
    target.write_bytes(b"real")
    st = target.stat()
    sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    cache_file = tmp_path / "statcache"
    cache_file.write_bytes(marshal.dumps(("sci-statcache-1", {"data": (sig, b3(b"wrong"))})))
    assert StatCache(cache_file).file_digest(target, "data") == b3(b"real")


def test_unreadable_cache_path_is_ignored(tmp_path):
    (tmp_path / "dir-not-file").mkdir()
    cache = StatCache(tmp_path / "dir-not-file")
    target = tmp_path / "x"
    target.write_bytes(b"x")
    assert cache.file_digest(target) == b3(b"x")


def _aged(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_save_appends_what_changed_and_a_reader_sees_it_all(tmp_path, monkeypatch):
    files = {name: _aged(tmp_path / name, name.encode() * 3) for name in ("a", "b", "c")}
    time.sleep(PAST_RACY_WINDOW_S)
    cache_file = tmp_path / "statcache"
    first = StatCache(cache_file)
    for name in ("a", "b"):
        first.file_digest(files[name], name)
    first.save()
    whole = cache_file.stat().st_size
    second = StatCache(cache_file)
    second.file_digest(files["c"], "c")
    second.forget("a")
    second.save()
    assert whole < cache_file.stat().st_size < 2 * whole  # a frame of two changes, not the table again
    reads = ReadCounter(monkeypatch)
    third = StatCache(cache_file)
    assert {name: third.file_digest(files[name], name) for name in files} == \
        {name: b3(name.encode() * 3) for name in files}
    assert reads.reads == [str(files["a"])]  # forgotten, so read again; b and c from the cache


def test_a_torn_appended_frame_keeps_the_frames_before_it(tmp_path, monkeypatch):
    files = {name: _aged(tmp_path / name, name.encode()) for name in ("a", "b")}
    time.sleep(PAST_RACY_WINDOW_S)
    cache_file = tmp_path / "statcache"
    first = StatCache(cache_file)
    first.file_digest(files["a"], "a")
    first.save()
    sound = cache_file.stat().st_size
    second = StatCache(cache_file)
    second.file_digest(files["b"], "b")
    second.save()
    with open(cache_file, "r+b") as fh:
        fh.truncate(cache_file.stat().st_size - 3)  # the appended frame, cut short by a crash
    with monkeypatch.context() as m:
        reads = ReadCounter(m)
        third = StatCache(cache_file)
        assert third.file_digest(files["a"], "a") == b3(b"a") and third.file_digest(files["b"], "b") == b3(b"b")
        assert reads.reads == [str(files["b"])]
    third.save()  # the torn tail makes this save write the file whole again
    assert cache_file.stat().st_size > sound
    with monkeypatch.context() as m:
        reads = ReadCounter(m)
        fourth = StatCache(cache_file)
        assert fourth.file_digest(files["a"], "a") == b3(b"a") and fourth.file_digest(files["b"], "b") == b3(b"b")
        assert reads.reads == []


def test_many_appended_frames_are_compacted(tmp_path):
    files = [_aged(tmp_path / f"f{i}", str(i).encode()) for i in range(StatCache._COMPACT_AFTER + 3)]
    time.sleep(PAST_RACY_WINDOW_S)
    cache_file = tmp_path / "statcache"
    sizes = []
    for i, path in enumerate(files):
        cache = StatCache(cache_file)
        cache.file_digest(path, f"f{i}")
        cache.save()
        sizes.append(cache_file.stat().st_size)
    assert any(later < earlier for earlier, later in zip(sizes, sizes[1:])), "never written whole again"
    final = StatCache(cache_file)
    assert set(final.entries) == {f"f{i}" for i in range(len(files))}
