"""`.sci/state` and `.sci/noop`: written whole, then a parameter edit's changes appended.

A build after a parameter edit changes a few nodes: it appends them instead of rewriting files
that hold every node. These tests check that readers see the newest entries, that a torn append
loses only itself (the state keeps what came before; the no-op record is dropped and the next
build takes the normal path), that a damaged file is not believed at all, and that a long series
of appends is folded back into one whole file. The framing itself: test_journal.py.
"""

from __future__ import annotations

import marshal

import pytest

from sci.records import run as records
from sci.store import journal
from test_param_edits import PIPELINE, edit, last_log


def frames(path) -> int:
    return len(journal.read(path, records.STATE_FORMAT).bodies)


def manifest_keys(root) -> dict[str, str]:
    import json

    run = sorted((root / "runs").iterdir())[-1]
    return {p["node"]: p["key"] for p in json.loads((run / "manifest.json").read_text())["plan"]}


def test_an_edit_build_appends_its_changes_and_a_reader_sees_the_newest_keys(ws):
    sci = ws(PIPELINE)
    sci.build()
    path = ws.root / ".sci" / "state"
    assert frames(path) == 1
    edit(ws.root, "y: 2", "y: 5")
    assert sci.build()["executed"] == ["b"]
    assert frames(path) == 2  # appended, not rewritten
    state = records.State(path)
    assert {n: state.get(n)["key"] for n in manifest_keys(ws.root)} == manifest_keys(ws.root)


def test_a_torn_last_frame_loses_only_itself_and_the_next_save_rewrites_the_file(tmp_path):
    path = tmp_path / "state"
    first = records.State(path)
    first.put("a", "k1", {"o": {"path": "a.txt"}})
    first.put("b", "k2", {})
    first.save()
    second = records.State(path)
    second.put("a", "k3", {})  # appended without reading the table
    second.save()
    whole = path.read_bytes()
    path.write_bytes(whole[:-3])  # a writer killed mid-append
    torn = records.State(path)
    assert torn.get("a")["key"] == "k1" and torn.get("b")["key"] == "k2"
    torn.put("c", "k4", {})
    torn.save()  # it found damage, so it rewrites: one clean frame
    assert frames(path) == 1
    again = records.State(path)
    assert {n: again.get(n)["key"] for n in "abc"} == {"a": "k1", "b": "k2", "c": "k4"}


def test_a_damaged_frame_is_not_believed_and_the_next_save_rewrites_the_file(tmp_path):
    path = tmp_path / "state"
    s = records.State(path)
    s.put("a", "k1", {})
    s.put("b", "k0", {})
    s.save()
    s2 = records.State(path)
    s2.put("a", "k2", {})
    s2.save()
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF  # a flipped byte in the appended frame: its checksum no longer matches
    path.write_bytes(bytes(data))
    damaged = records.State(path)
    assert damaged.get("a") is None and damaged.get("b") is None  # nothing in a damaged file is believed
    damaged.put("c", "k3", {})
    damaged.save()  # not appended after the damage: written whole
    assert frames(path) == 1 and records.State(path).nodes == {"c": {"key": "k3", "outputs": {}}}


def test_a_long_journal_is_folded_into_one_table(tmp_path):
    """Builds that only append (a parameter edit never loads the table) fold the file into one
    table once it holds _COMPACT_AFTER frames: a workspace that only sees edits does not grow
    its state file, nor the check before each append, without end."""
    path = tmp_path / "state"
    counts = []
    for i in range(records._COMPACT_AFTER + 2):
        s = records.State(path)
        s.put(f"n{i}", f"k{i}", {})
        s.save()
        counts.append(frames(path))
    assert counts == [*range(1, records._COMPACT_AFTER + 1), 1, 2]
    assert records.State(path).nodes == {f"n{i}": {"key": f"k{i}", "outputs": {}}
                                         for i in range(records._COMPACT_AFTER + 2)}


def test_a_load_that_finds_many_frames_rewrites_the_file_whole(tmp_path):
    path = tmp_path / "state"
    first = records.State(path)
    first.put("n0", "k0", {})
    first.save()
    for i in range(1, records._COMPACT_AFTER + 2):  # appended past the cap (an older sci did)
        assert journal.append(path, records.STATE_FORMAT, [marshal.dumps({f"n{i}": {"key": f"k{i}", "outputs": {}}})])
    reader = records.State(path)
    assert reader.get("n0")["key"] == "k0"
    reader.put("n0", "new", {})
    reader.save()
    assert frames(path) == 1
    assert records.State(path).nodes == {**{f"n{i}": {"key": f"k{i}", "outputs": {}}
                                            for i in range(records._COMPACT_AFTER + 2)},
                                         "n0": {"key": "new", "outputs": {}}}


def test_a_state_file_of_another_format_is_ignored(tmp_path):
    path = tmp_path / "state"
    path.write_bytes(marshal.dumps({"format": "sci-state-2", "nodes": {"a": {"key": "k", "outputs": {}}}}))
    assert records.State(path).get("a") is None
    body = marshal.dumps({"format": "sci-state-3", "nodes": {"a": {"key": "k", "outputs": {}}}})
    import zlib

    path.write_bytes(len(body).to_bytes(4, "little") + zlib.crc32(body).to_bytes(4, "little") + body)
    assert records.State(path).nodes == {}  # the last format before the journal
    journal.write(path, "sci-state-3", [marshal.dumps({"a": {"key": "k", "outputs": {}}})])
    assert records.State(path).nodes == {}  # a journal of another format
    appender = records.State(path)
    appender.put("b", "k", {})
    appender.save()  # never appended to a file of another format
    assert records.State(path).nodes == {"b": {"key": "k", "outputs": {}}}


# -- the no-op record (.sci/noop): edits append their changes to it too ---------------------

def record_frames(root) -> int:
    from sci.build import noop

    return len(journal.read(root / ".sci" / "noop", noop.NOOP_FORMAT).bodies)


@pytest.mark.shortcut_mechanics
def test_edits_append_to_the_noop_record_until_it_is_rewritten_whole(ws):
    from sci.build import noop

    sci = ws(PIPELINE)
    sci.build()
    assert record_frames(ws.root) == 2  # header, document
    value = 2
    for i in range(noop._COMPACT_AFTER):
        edit(ws.root, f"y: {value}", f"y: {value + 1}")
        value += 1
        assert sci.build()["executed"] == ["b"]
        assert record_frames(ws.root) == 4 + 2 * i  # its changes and its parameters
    assert sci.build()["executed"] == []  # a no-op, decided from the record with its changes
    assert "noop" in [e["event"] for e in last_log(ws.root)]
    edit(ws.root, f"y: {value}", f"y: {value + 1}")
    assert sci.build()["executed"] == ["b"]
    assert record_frames(ws.root) == 2  # written whole again
    assert (ws.root / "b.txt").read_text() == f"{value + 1}\n"


@pytest.mark.shortcut_mechanics
def test_a_torn_append_to_the_noop_record_costs_one_normal_build(ws):
    sci = ws(PIPELINE)
    sci.build()
    edit(ws.root, "y: 2", "y: 5")
    sci.build()
    path = ws.root / ".sci" / "noop"
    path.write_bytes(path.read_bytes()[:-5])  # the edit build was killed while appending
    out = sci.build()
    assert out["executed"] == [] and "noop" not in [e["event"] for e in last_log(ws.root)]
    assert record_frames(ws.root) == 2  # the normal path wrote a whole record
    assert sci.build()["executed"] == [] and "noop" in [e["event"] for e in last_log(ws.root)]


def test_where_files_cannot_be_mapped_they_are_read_and_nothing_is_lost(ws, monkeypatch):
    """The plan cache and the action packs are memory-mapped (sci/mapped.py); on a filesystem
    that refuses mmap they are read whole instead, and every short path still works."""
    import mmap

    from sci import api
    from sci.workspace import Workspace

    def refused(*args, **kwargs):
        raise OSError(19, "mmap not supported here")

    def executed(report) -> list[str]:
        return sorted(n for n, o in report.outcomes.items() if o.status._value_ == "executed")

    ws(PIPELINE)
    w = Workspace(ws.root)
    api.build(w)
    monkeypatch.setattr(mmap, "mmap", refused)
    edit(ws.root, "y: 2", "y: 5")
    assert executed(api.build(w)) == ["b"]  # the plan cache read, patched
    edit(ws.root, "y: 5", "y: 2")
    report = api.build(w)  # b's first result is found in the pack, read whole
    assert executed(report) == [] and report.outcomes["b"].status._value_ == "cached"
    assert (ws.root / "b.txt").read_text() == "2\n"


@pytest.mark.shortcut_mechanics
@pytest.mark.parametrize("hidden", [False, True])
def test_the_manifest_after_appended_edits_holds_the_newest_parameters(ws, hidden):
    """An appended change leaves the parameters out of its manifest fields when nothing in them
    is hidden (the parameters frame after it holds them): every no-op's and every edit's
    manifest still records the parameters in effect, a secret-looking one masked."""
    import json

    from sci import canonical
    from sci.build import noop

    files = dict(PIPELINE)
    if hidden:
        files["params.yaml"] = files["params.yaml"].rstrip() + "\n        api_token: hunter2\n"
    sci = ws(files)
    sci.build()

    def recorded_params() -> dict:
        run = sorted(p for p in (ws.root / "runs").iterdir() if p.is_dir())[-1]
        text = (run / "manifest.json").read_bytes()  # written from kept pieces: still canonical JSON
        assert text == canonical.dumps(json.loads(text)) + b"\n"
        return json.loads(text)["params"]

    value = 2
    for i in range(noop._COMPACT_AFTER + 1):  # appended, then written whole again
        edit(ws.root, f"y: {value}", f"y: {value + 1}")
        value += 1
        assert sci.build()["executed"] == ["b"]
        assert recorded_params()["y"] == value
        assert sci.build()["executed"] == [] and "noop" in [e["event"] for e in last_log(ws.root)]
        params = recorded_params()
        assert params["y"] == value and params["x"] == 1 and params["z"] == {"k": 3}
        assert ("api_token" in params) is hidden and params.get("api_token") != "hunter2"
