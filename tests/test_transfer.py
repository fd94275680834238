"""push / pull / fetch against real remotes (a directory, moto's S3, nginx's WebDAV).

The store used here holds three action results:

    k_fit    outputs: table (file), figure (file)          + stdout, stderr
    k_sim    outputs: samples (tree of 3 files)             + stdout, stderr
    k_big    outputs: blob (a file past the threaded-write size) + stdout, stderr

Properties checked: a push then a pull into an empty store gives identical objects; a pull of
a subset moves exactly the objects those keys need; a damaged or missing remote object is
named and never admitted; concurrent pushers leave a consistent remote; action results travel
after their objects.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servers import aws_env, dav_server, directory_site, s3_endpoint, site  # noqa: F401
from sci import canonical
from sci.errors import StoreError
from sci.store.hashing import TreeEntry, digest_bytes
from sci.remote.stores import Remote
from sci.store.cas import Store
from sci.remote.transfer import (CorruptObject, MissingObject, ObjectKind, Outcome, TransferFailed,
                          THREADED_WRITE_AFTER, fetch_action, fetch_output, object_path, pull, push)


def key_of(name: str) -> str:
    return digest_bytes(f"key:{name}".encode())


def add_action(store: Store, name: str, files: dict[str, bytes] | None = None,
               trees: dict[str, dict[str, bytes]] | None = None) -> str:
    """Store outputs and an action result the way the engine does; return its key."""
    key = key_of(name)
    outputs = {}
    for out, data in (files or {}).items():
        outputs[out] = {"path": f"out/{out}", "type": "file", "digest": store.put_bytes(data),
                        "size": len(data)}
    for out, members in (trees or {}).items():
        entries = [TreeEntry(rel, store.put_bytes(data), len(data), False)
                   for rel, data in sorted(members.items())]
        outputs[out] = {"path": f"out/{out}", "type": "tree", "digest": store.put_tree(entries),
                        "size": sum(e.size for e in entries)}
    # (the outputs a result records are those its definition declares: transfer checks that)
    store.put_action(key, {"format": 1, "type": "sci.step_result", "key": key, "node": name,
                           "components": {"definition": {"outs": {o: r["path"] for o, r in outputs.items()}}},
                           "outputs": outputs, "stdout": store.put_bytes(f"out {name}\n".encode()),
                           "stderr": store.put_bytes(f"err {name}\n".encode())})
    return key


def objects(store: Store) -> dict[tuple[str, str], bytes]:
    return {(kind, path.name): path.read_bytes() for kind, path in store.iter_objects()}


@pytest.fixture
def source(tmp_path):
    store = Store(tmp_path / "src")
    keys = {
        "fit": add_action(store, "fit", files={"table": b"a,b\n1,2\n", "figure": b"\x89PNG" + b"x" * 3000}),
        "sim": add_action(store, "sim", trees={"samples": {"a.npy": b"A" * 100, "sub/b.npy": b"B" * 200,
                                                           "c.npy": b"x" * 3000}}),
        "big": add_action(store, "big", files={"blob": os.urandom(THREADED_WRITE_AFTER + 3 * 1024 * 1024 + 7)}),
    }
    return store, keys


def test_push_then_pull_gives_identical_objects(source, site, tmp_path):
    store, keys = source
    events = []
    stats = push(store, site.open(), keys.values(), jobs=4, progress=events.append)
    # blobs: table, figure, sim's 3 members, big's blob and 6 logs; one tree; 3 actions
    assert stats.by_kind == {"action": 3, "tree": 1, "blob": 12}
    assert stats.skipped == 0 and stats.failed == 0
    assert len(events) == stats.objects and all(e.outcome is Outcome.SENT for e in events)
    last_objects = max(i for i, e in enumerate(events) if e.kind is not ObjectKind.ACTION)
    assert all(e.kind is ObjectKind.ACTION for e in events[last_objects + 1:])

    again = push(store, site.open(), keys.values())
    assert again.objects == 0 and again.skipped == stats.objects

    fresh = Store(tmp_path / "fresh")
    got = pull(fresh, site.open(), keys.values(), jobs=4)
    assert objects(fresh) == objects(store)
    assert got.objects == stats.objects and got.bytes == stats.bytes
    assert fresh.verify_all() == []
    assert not list(fresh.tmp.iterdir())


def test_pull_of_a_subset_fetches_exactly_what_it_needs(source, tmp_path):
    store, keys = source
    site = directory_site(tmp_path / "remote")
    push(store, site.open(), keys.values())
    fresh = Store(tmp_path / "fresh")
    stats = pull(fresh, site.open(), [keys["sim"]])
    action = store.action_path(keys["sim"]).read_bytes()
    tree_digest = canonical.loads(action)["outputs"]["samples"]["digest"]
    tree = store.tree_path(tree_digest).read_bytes()
    # one action, one tree, three members and two logs
    assert stats.by_kind == {"action": 1, "tree": 1, "blob": 5}
    assert stats.bytes == len(action) + len(tree) + 100 + 200 + 3000 + len(b"out sim\n") + len(b"err sim\n")
    assert {kind for kind, _ in objects(fresh)} == {"action", "tree", "blob"}
    assert len(objects(fresh)) == 7

    # outputs limited by name: the table and the logs, not the figure
    only = pull(fresh, site.open(), [keys["fit"]], outputs={"table"})
    assert only.by_kind == {"action": 1, "blob": 3}
    assert only.bytes == len(store.action_path(keys["fit"]).read_bytes()) + len(b"a,b\n1,2\n") + 16
    # action results alone
    bare = pull(Store(tmp_path / "bare"), site.open(), keys.values(), outputs=False)
    assert bare.by_kind == {"action": 3}

    # everything again: what is local is skipped, only the missing objects move
    rest = pull(fresh, site.open(), keys.values())
    assert rest.skipped == 2 + 1 + 5 + 3  # two actions; sim's tree and 5 blobs; fit's 3 blobs
    assert rest.by_kind == {"action": 1, "blob": 4}  # big's action; figure, big's blob and logs
    assert objects(fresh) == objects(store)


def _corrupt_target(store: Store, keys: dict, what: str) -> tuple[ObjectKind, str]:
    doc = canonical.loads(store.action_path(keys["fit"]).read_bytes())
    if what == "blob":
        return ObjectKind.BLOB, doc["outputs"]["table"]["digest"]
    if what == "action":
        return ObjectKind.ACTION, keys["fit"]
    sim = canonical.loads(store.action_path(keys["sim"]).read_bytes())
    return ObjectKind.TREE, sim["outputs"]["samples"]["digest"]


@pytest.mark.parametrize("what", ["blob", "tree", "action"])
def test_corrupt_remote_object_is_named_and_not_admitted(source, site, tmp_path, what):
    store, keys = source
    push(store, site.open(name="lab"), keys.values())
    kind, name = _corrupt_target(store, keys, what)
    relpath = object_path(kind, name)
    original = site.read(relpath)
    site.write(relpath, original[:-1] + bytes([original[-1] ^ 1]))

    fresh = Store(tmp_path / "fresh")
    with pytest.raises(TransferFailed) as info:
        pull(fresh, site.open(name="lab"), keys.values())
    err = info.value
    assert err.exit_code == 1
    assert [type(e) for e in err.errors] == [CorruptObject]
    assert err.errors[0].kind is kind and err.errors[0].name == name
    line = err.one_line()
    assert name in line and "'lab'" in line and "not admitted" in line
    bad_key = keys["sim"] if what == "tree" else keys["fit"]
    assert fresh.get_action(bad_key) is None  # its action result was not admitted either
    if kind is ObjectKind.BLOB:
        assert not fresh.has_blob(name)
    if kind is ObjectKind.TREE:
        assert not fresh.has_tree(name)
    assert fresh.get_action(keys["big"]) is not None  # the sound ones arrived
    assert fresh.verify_all() == []
    assert not list(fresh.tmp.iterdir())


def test_oversized_remote_blob_is_cut_short(source, tmp_path):
    store, keys = source
    site = directory_site(tmp_path / "remote")
    push(store, site.open(), keys.values())
    doc = canonical.loads(store.action_path(keys["big"]).read_bytes())
    digest = doc["outputs"]["blob"]["digest"]
    site.write(object_path(ObjectKind.BLOB, digest), b"\0" * (doc["outputs"]["blob"]["size"] * 2))
    fresh = Store(tmp_path / "fresh")
    with pytest.raises(TransferFailed, match="larger than its recorded size"):
        pull(fresh, site.open(), [keys["big"]])
    assert not fresh.has_blob(digest) and fresh.get_action(keys["big"]) is None


def test_unsafe_tree_is_refused(tmp_path):
    """A tree whose digest matches but whose entries would escape the output directory."""
    store = Store(tmp_path / "src")
    blob = store.put_bytes(b"evil")
    tree = store.put_tree([TreeEntry("../../escape", blob, 4, False)])
    key = key_of("evil")
    store.put_action(key, {"key": key, "components": {"definition": {"outs": {"o": "o"}}},
                           "outputs": {"o": {"path": "o", "type": "tree", "digest": tree, "size": 4}}})
    site = directory_site(tmp_path / "remote")
    with pytest.raises(TransferFailed, match=r"\.\./\.\./escape"):  # never sent from a store either
        push(store, site.open(), [key])
    # a hostile remote holds it anyway
    site.write(object_path(ObjectKind.BLOB, blob), b"evil")
    site.write(object_path(ObjectKind.TREE, tree), store.tree_path(tree).read_bytes())
    site.write(object_path(ObjectKind.ACTION, key), store.action_bytes(key))
    with pytest.raises(TransferFailed, match="unsafe or malformed entry"):
        pull(Store(tmp_path / "fresh"), site.open(), [key])


def test_missing_remote_objects_give_clear_errors(source, site, tmp_path):
    store, keys = source
    push(store, site.open(name="lab"), [keys["fit"]])
    doc = canonical.loads(store.action_path(keys["fit"]).read_bytes())
    site.delete(object_path(ObjectKind.BLOB, doc["outputs"]["figure"]["digest"]))
    fresh = Store(tmp_path / "fresh")
    with pytest.raises(TransferFailed) as info:
        pull(fresh, site.open(name="lab"), [keys["fit"], keys["sim"]])
    errors = {(type(e), e.kind, e.name) for e in info.value.errors}
    assert errors == {(MissingObject, ObjectKind.BLOB, doc["outputs"]["figure"]["digest"]),
                      (MissingObject, ObjectKind.ACTION, keys["sim"])}
    assert all("'lab'" in e.one_line() and "missing" in e.one_line() for e in info.value.errors)
    assert fresh.get_action(keys["fit"]) is None
    assert fresh.has_blob(doc["outputs"]["table"]["digest"])  # what could arrive did


def test_push_refuses_actions_whose_objects_are_gone(source, tmp_path):
    store, keys = source
    doc = canonical.loads(store.action_path(keys["fit"]).read_bytes())
    store.blob_path(doc["outputs"]["table"]["digest"]).unlink()
    site = directory_site(tmp_path / "remote")
    with pytest.raises(TransferFailed, match="missing from the local store"):
        push(store, site.open(), [keys["fit"], keys["sim"], key_of("never-built")])
    assert site.read(object_path(ObjectKind.ACTION, keys["fit"])) is None
    assert site.read(object_path(ObjectKind.ACTION, keys["sim"])) is not None

    damaged = store.action_path(keys["big"])
    damaged.chmod(0o644)
    damaged.write_bytes(b"{truncated")
    with pytest.raises(TransferFailed, match=f"action {keys['big']} in the local store"):
        push(store, site.open(), [keys["big"]])
    assert site.read(object_path(ObjectKind.ACTION, keys["big"])) is None


def test_two_clients_pushing_at_once_leave_the_remote_consistent(site, tmp_path):
    # Two stores sharing most objects, pushing the same and different keys at the same time.
    stores, all_keys = [], set()
    for who in ("a", "b"):
        store = Store(tmp_path / who)
        keys = [add_action(store, f"shared{i}", files={"f": f"shared {i}".encode() * 50},
                           trees={"t": {f"m{j}": f"member {i} {j}".encode() for j in range(4)}})
                for i in range(6)]
        keys += [add_action(store, f"only-{who}{i}", files={"f": f"{who} {i}".encode()}) for i in range(3)]
        stores.append((store, keys))
        all_keys.update(keys)
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def run(store, keys):
        try:
            remote = site.open()
            barrier.wait()
            push(store, remote, keys, jobs=6)
        except BaseException as exc:  # reported below, on the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    check = Store(tmp_path / "check")
    stats = pull(check, site.open(), sorted(all_keys))
    assert stats.failed == 0 and check.verify_all() == []
    union = {**objects(stores[0][0]), **objects(stores[1][0])}
    assert objects(check) == union


class RecordingRemote(Remote):
    """An in-memory remote that remembers the order of writes."""

    def __init__(self):
        super().__init__("memory://", "rec")
        self.data: dict[str, bytes] = {}
        self.writes: list[str] = []
        self.lock = threading.Lock()

    def download(self, relpath, write):
        if relpath not in self.data:
            return False
        write(self.data[relpath])
        return True

    def exists(self, relpath):
        return relpath in self.data

    def put(self, relpath, data):
        payload = bytes(data) if isinstance(data, (bytes, bytearray)) else Path(data).read_bytes()
        with self.lock:
            self.data[relpath] = payload
            self.writes.append(relpath)


def test_action_results_are_uploaded_after_their_objects(source):
    store, keys = source
    remote = RecordingRemote()
    push(store, remote, keys.values(), jobs=8)
    first_action = min(i for i, p in enumerate(remote.writes) if p.startswith("actions/"))
    assert all(p.startswith("actions/") for p in remote.writes[first_action:])
    trees = [i for i, p in enumerate(remote.writes) if p.startswith("trees/")]
    last_blob = max(i for i, p in enumerate(remote.writes) if p.startswith("blobs/"))
    assert trees and min(trees) > last_blob


def test_remote_of_another_format_is_refused(source, tmp_path):
    store, keys = source
    site = directory_site(tmp_path / "remote")
    site.write("FORMAT", b"sci-store 99\n")
    with pytest.raises(StoreError, match="sci-store 99"):
        pull(Store(tmp_path / "fresh"), site.open(), keys.values())
    with pytest.raises(StoreError, match="sci-store 99"):
        push(store, site.open(), keys.values())


def test_fetch_action_and_output_download_only_what_is_asked(source, site, tmp_path):
    store, keys = source
    push(store, site.open(), keys.values())
    fresh = Store(tmp_path / "fresh")
    remote = site.open()
    assert fetch_action(fresh, remote, key_of("unknown")) is None
    doc = fetch_action(fresh, remote, keys["sim"])
    assert doc == canonical.loads(store.action_path(keys["sim"]).read_bytes())
    assert fresh.get_action(keys["sim"]) is None  # returned, not admitted
    samples = doc["outputs"]["samples"]
    got = fetch_output(fresh, remote, samples)
    tree_size = len(store.tree_path(samples["digest"]).read_bytes())
    assert got == samples["size"] + tree_size
    assert {k for k, _ in objects(fresh)} == {"tree", "blob"} and len(objects(fresh)) == 4
    assert fetch_output(fresh, remote, samples) == 0  # nothing more to fetch


def test_fetch_output_reports_corruption(source, tmp_path):
    store, keys = source
    site = directory_site(tmp_path / "remote")
    push(store, site.open(), keys.values())
    fit = canonical.loads(store.action_path(keys["fit"]).read_bytes())
    table = fit["outputs"]["table"]
    site.write(object_path(ObjectKind.BLOB, table["digest"]), b"a,b\n1,3\n")
    fresh = Store(tmp_path / "fresh")
    with pytest.raises(TransferFailed, match="does not match its digest") as info:
        fetch_output(fresh, site.open(), table)
    assert isinstance(info.value.errors[0], CorruptObject)
    assert not fresh.has_blob(table["digest"])
    site.write(object_path(ObjectKind.ACTION, keys["fit"]), b"{not json")
    with pytest.raises(CorruptObject, match="not valid JSON"):
        fetch_action(fresh, site.open(), keys["fit"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.binary(max_size=2048),
                             min_size=1, max_size=5),
       members=st.dictionaries(st.from_regex(r"[a-z]{1,6}(/[a-z]{1,6})?", fullmatch=True),
                               st.binary(max_size=512), max_size=5)
       # a directory's tree: no path is a file and a folder at once (such a tree is refused)
       .filter(lambda m: not any(p.split("/")[0] in m for p in m if "/" in p)))
def test_round_trip_property(tmp_path_factory, files, members):
    base = tmp_path_factory.mktemp("prop")
    store = Store(base / "src")
    key = add_action(store, "p", files={f"f-{n}": d for n, d in files.items()},
                     trees={"tree": members} if members else None)
    site = directory_site(base / "remote")
    push(store, site.open(), [key])
    fresh = Store(base / "dst")
    pull(fresh, site.open(), [key])
    assert objects(fresh) == objects(store)


@pytest.mark.parametrize("path", ["../../escape.csv", "elsewhere.csv", ".sci/state"])
def test_a_remote_result_whose_output_path_was_changed_is_refused(tmp_path, path):
    """The outputs a result records must be the ones its key's definition declares: else a
    remote could make the next build write anywhere (or crash looking for the declared one)."""
    store = Store(tmp_path / "src")
    key = add_action(store, "fit", files={"table": b"a,b\n"})
    site = directory_site(tmp_path / "remote")
    push(store, site.open(), [key])
    doc = canonical.loads(store.action_bytes(key))
    doc["outputs"]["table"]["path"] = path
    site.write(object_path(ObjectKind.ACTION, key), canonical.dumps(doc))
    fresh = Store(tmp_path / "fresh")
    with pytest.raises(TransferFailed, match="output 'table'"):
        pull(fresh, site.open(), [key])
    assert fresh.get_action(key) is None
