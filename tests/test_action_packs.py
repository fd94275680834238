"""Action packs (sci.store.packs): a build's action results appended to one file.

Through the CLI on real workspaces: where results go, what a torn or damaged pack does to
builds, fsck and gc; and the reader against the writer on generated records."""

from __future__ import annotations

import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import no_traceback
from sci import canonical
from sci.store import packs as action_packs
from sci.store.packs import INDEX_MAGIC, INDEX_SUFFIX, MAGIC, PackIndex, PackWriter, read_record, scan
from sci.store.cas import Store

PIPELINE = {
    "sci.yaml": """
        version: 1
        steps:
          make:
            foreach: {i: [1, 2, 3, 4]}
            cmd: echo {item.i} > {outs}
            outs: ["out/{item.i}.txt"]
          join:
            cmd: cat {deps} > {outs}
            deps: ["out/*.txt"]
            outs: [all.txt]
        """,
}
NODES = {f"make[i={i}]" for i in (1, 2, 3, 4)} | {"join"}


def _packs(root):
    return sorted((root / "cas" / "actions" / "packs").glob("*.pack"))


def _loose(root):
    return [p for p in (root / "cas" / "actions").glob("*/*") if p.parent.name != "packs"]


def _keys(out):
    return {n["node"]: n["key"] for n in out["nodes"]}


def test_a_build_writes_one_pack_and_a_no_op_build_none(ws):
    sci = ws(PIPELINE)
    out = sci.build()
    assert set(out["executed"]) == NODES
    (pack,) = _packs(ws.root)
    assert _loose(ws.root) == []
    store = Store(ws.root / "cas", create=False)
    for node, key in _keys(out).items():
        action = store.get_action(key)
        assert action["node"] == node and action["key"] == key
        assert store.action_file(key) == str(pack)
    assert sci.build()["executed"] == []
    assert _packs(ws.root) == [pack]  # nothing executed, nothing written
    (ws.root / "out" / "2.txt").unlink()
    assert sci.build()["executed"] == []  # restored from the store, not re-run
    (ws.root / "sci.yaml").write_text((ws.root / "sci.yaml").read_text().replace("echo {item.i}", "echo x{item.i}"))
    assert set(sci.build()["executed"]) == NODES
    assert len(_packs(ws.root)) == 2


def test_a_torn_last_record_is_skipped_and_is_not_damage(ws):
    """What a build killed in the middle of an append leaves: readers take the whole records."""
    sci = ws(PIPELINE)
    out = sci.build()
    (pack,) = _packs(ws.root)
    os.chmod(pack, 0o644)
    with open(pack, "ab") as fh:
        fh.write(b"f" * 64 + b" 5000\n{\"components\":")
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
    assert sci.build()["executed"] == []
    store = Store(ws.root / "cas", create=False)
    assert all(store.get_action(k) is not None for k in _keys(out).values())


def test_a_damaged_record_is_reported_and_repair_keeps_the_sound_ones(ws):
    sci = ws(PIPELINE)
    out = sci.build()
    keys = _keys(out)
    (pack,) = _packs(ws.root)
    data = pack.read_bytes()
    victim = keys["make[i=3]"]
    at = data.index(victim.encode() + b" ")
    body = data.index(b"\n", at) + 1
    os.chmod(pack, 0o644)
    pack.write_bytes(data[:body] + b"X" + data[body + 1:])  # the record's JSON no longer parses
    proc = sci("fsck", check=1)
    assert pack.name in proc.stderr + proc.stdout and no_traceback(proc.stderr)
    sci("fsck", "--repair")
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
    assert not pack.exists() and len(_packs(ws.root)) == 1  # rewritten under a new name
    store = Store(ws.root / "cas", create=False)
    assert store.get_action(victim) is None
    assert all(store.get_action(k) is not None for n, k in keys.items() if n != "make[i=3]")
    assert sci.build()["executed"] == ["make[i=3]"]  # only the lost result is made again


def test_gc_rewrites_the_packs_keeping_what_the_pipeline_needs(ws):
    sci = ws(PIPELINE)
    first = _keys(sci.build())
    (ws.root / "sci.yaml").write_text((ws.root / "sci.yaml").read_text().replace("cat {deps}", "sort {deps}"))
    second = _keys(sci.build())
    assert first["join"] != second["join"]
    old_packs = _packs(ws.root)
    assert len(old_packs) == 2
    dry = json.loads(sci("gc", "--keep-runs", "0", "--dry-run", "--json").stdout)
    assert _packs(ws.root) == old_packs  # a dry run changes nothing
    done = json.loads(sci("gc", "--keep-runs", "0", "--json").stdout)
    assert done["deleted_objects"] == dry["deleted_objects"]
    assert {o["object"] for o in done["objects"] if o["kind"] == "action"} == {first["join"]}
    (pack,) = _packs(ws.root)
    assert pack not in old_packs
    store = Store(ws.root / "cas", create=False)
    assert store.get_action(first["join"]) is None
    assert all(store.get_action(k) is not None for k in second.values())
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
    assert sci.build()["executed"] == []


def _index_of(pack):
    return pack.with_name(pack.name + INDEX_SUFFIX)


def test_a_closed_pack_has_a_key_index_and_a_missing_key_is_found_missing_without_a_scan(ws, monkeypatch):
    sci = ws(PIPELINE)
    keys = _keys(sci.build())
    (pack,) = _packs(ws.root)
    index = _index_of(pack)
    assert index.read_bytes().startswith(INDEX_MAGIC) and len(index.read_bytes()) == len(INDEX_MAGIC) + 44 * len(NODES)
    monkeypatch.setattr(action_packs, "_map", lambda path: (_ for _ in ()).throw(AssertionError(f"scanned {path}")))
    store = Store(ws.root / "cas", create=False)
    assert store.get_action("ab" * 32) is None  # bisected, never scanned
    assert {n: store.get_action(k)["key"] for n, k in keys.items()} == keys


def test_a_key_index_that_lies_is_not_believed_and_fsck_repairs_it(ws):
    sci = ws(PIPELINE)
    keys = _keys(sci.build())
    (pack,) = _packs(ws.root)
    index = _index_of(pack)
    raw = bytearray(index.read_bytes())
    body = raw[len(INDEX_MAGIC):]
    rows = [body[i:i + 44] for i in range(0, len(body), 44)]
    rows = [r[:32] + rows[(i + 1) % len(rows)][32:] for i, r in enumerate(rows)]  # every offset off by one row
    os.chmod(index, 0o644)
    index.write_bytes(INDEX_MAGIC + b"".join(rows))
    store = Store(ws.root / "cas", create=False)
    assert {n: store.get_action(k)["key"] for n, k in keys.items()} == keys  # found by scanning instead
    proc = sci("fsck", check=1)
    assert "key index does not match" in proc.stdout + proc.stderr and no_traceback(proc.stderr)
    sci("fsck", "--repair")
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
    (new_pack,) = _packs(ws.root)
    assert not index.exists() and _index_of(new_pack).exists()
    assert sci.build()["executed"] == []


def test_a_pack_without_its_index_is_scanned_and_gc_leaves_no_orphan_index(ws):
    sci = ws(PIPELINE)
    keys = _keys(sci.build())
    (pack,) = _packs(ws.root)
    os.chmod(_index_of(pack), 0o644)
    _index_of(pack).unlink()  # its writer was killed between closing the pack and indexing it
    orphan = pack.with_name("20000101T000000-1-dead-0.pack" + INDEX_SUFFIX)
    orphan.write_bytes(INDEX_MAGIC)
    store = Store(ws.root / "cas", create=False)
    assert {n: store.get_action(k)["key"] for n, k in keys.items()} == keys
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
    sci("gc", "--keep-runs", "0")
    assert not orphan.exists() and all(_index_of(p).exists() for p in _packs(ws.root))
    assert sci.build()["executed"] == []


def test_a_pack_that_cannot_be_created_fails_the_build_in_one_line(ws):
    sci = ws(PIPELINE)
    sci("fsck")
    (ws.root / "cas" / "actions" / "packs").write_text("in the way\n")
    proc = sci("build", check=1)
    assert "could not write an action result" in proc.stderr and no_traceback(proc.stderr)


keys_st = st.text("0123456789abcdef", min_size=64, max_size=64)
docs_st = st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.integers(), st.text(max_size=40)), max_size=5)


@settings(max_examples=60, deadline=None)
@given(records=st.lists(st.tuples(keys_st, docs_st), max_size=12), cut=st.integers(min_value=0, max_value=400))
def test_the_reader_finds_every_whole_record_the_writer_appended(tmp_path_factory, records, cut):
    """Property: scanning a pack returns exactly the appended records; cutting the file
    anywhere inside its last record loses that record only, and is not reported as damage."""
    d = str(tmp_path_factory.mktemp("packs"))
    writer = PackWriter(d)
    bodies = {}
    for key, doc in records:
        bodies[key] = canonical.dumps({"key": key, **doc})
        writer.append(key, bodies[key])
    writer.close()
    if not records:
        assert PackIndex(d).entries() == {}
        return
    (name,) = [n for n in os.listdir(d) if n.endswith(".pack")]
    path = f"{d}/{name}"
    found, problem = scan(path)
    assert problem is None
    data = open(path, "rb").read()
    assert data.startswith(MAGIC)
    assert {k: data[o:o + n] for k, (o, n) in found.items()} == bodies
    last_key = records[-1][0]
    last_start = data.rindex(last_key.encode() + b" ")
    size = last_start + cut % (len(data) - last_start)
    os.chmod(path, 0o644)
    os.truncate(path, size)
    torn, problem = scan(path)
    assert problem is None
    assert set(torn) == {k for k, _ in records[:-1]}  # a key written twice keeps its first record


@settings(max_examples=60, deadline=None)
@given(packs=st.lists(st.lists(st.tuples(st.sampled_from(["a" * 64, "b" * 64, "c" * 64, "d" * 64]), docs_st),
                               max_size=5), min_size=1, max_size=3),
       torn=st.booleans())
def test_searching_and_indexing_the_packs_find_the_same_records(tmp_path_factory, packs, torn):
    """Property: a PackIndex that searches the packs' bytes (few lookups) and one that indexes
    every record (many lookups) answer alike: a record written under the key, or None."""
    d = str(tmp_path_factory.mktemp("packs"))
    written: dict[str, set[bytes]] = {}
    for records in packs:
        writer = PackWriter(d)
        for key, doc in records:
            body = canonical.dumps({"key": key, **doc})
            writer.append(key, body)
            written.setdefault(key, set()).add(body)
        writer.close()
    if torn and written:  # a killed writer's half record at the end of one more pack
        path = f"{d}/zz-torn.pack"
        with open(path, "wb") as fh:
            fh.write(MAGIC + b"e" * 64 + b" 900\n{\"key\":")
    searching, indexing, too_big = PackIndex(d), PackIndex(d), PackIndex(d)
    searching.SEARCHES, indexing.SEARCHES = 100, 0
    too_big.SEARCH_BYTES = 0  # more pack bytes than a search is worth: indexed at once
    for key in ("a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64):
        found = []
        for index in (searching, indexing, too_big):
            entry = index.lookup(key)
            found.append(None if entry is None else read_record(*entry))
        if key in written:
            assert all(f in written[key] for f in found)
        else:
            assert found == [None, None, None]


def test_many_packs_are_merged_by_the_next_build_but_never_one_being_written(tmp_path):
    store = Store(tmp_path / "cas")
    store.MERGE_PACKS_ABOVE = 4
    busy = PackWriter(str(tmp_path / "cas" / "actions" / "packs"))  # another build, still writing
    busy.append("f" * 64, canonical.dumps({"key": "f" * 64}))
    keys = []
    for i in range(9):
        store.start_pack()
        key = f"{i:064x}"
        store.put_action(key, {"key": key, "n": i})
        store.finish_pack()
        keys.append(key)
        assert len(_packs(tmp_path)) <= 4 + 2  # the merged pack, the busy one, and new ones
    assert busy.path in map(str, _packs(tmp_path))  # left alone while open
    busy.close()
    fresh = Store(tmp_path / "cas", create=False)
    assert [fresh.get_action(k)["n"] for k in keys] == list(range(9))
    assert fresh.get_action("f" * 64) == {"key": "f" * 64}

