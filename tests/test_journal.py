"""The one framing of `.sci/` state files (store/journal.py), and what sci does with a damaged one.

The framing's properties are checked on bytes (round trip; a cut keeps exactly the whole frames
before it; any flipped byte makes the file unreadable, never a different value), then through
each reader (State, StatCache, the no-op record). Through the CLI, each state file is damaged
(a flipped byte, a cut, garbage, a directory in its place): the next `sci build` must decide
exactly what a build with no `.sci/` decides — executed set, manifest keys, output bytes — and
leave a sound file behind. Also here: the one `owns` rule for the paths sci reserves.
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sci.build import noop
from sci.plan import cache as plan_cache
from sci.plan import pipeline
from sci.records import run as records
from sci.store import journal
from sci.store.hashing import StatCache, stat_signature
from sci.workspace import RESERVED, Workspace, owns, store_setting
from conftest import Sci, write

FMT = "sci-test-1"
SHORTCUTS_ON = os.environ.get("SCI_SHORTCUTS", "on") == "on"  # off|verify: no shortcut answers
BODIES = st.lists(st.binary(max_size=80), max_size=6)


def encoded(bodies: list[bytes], fmt: str = FMT) -> bytes:
    return journal.header(fmt) + b"".join(journal.frame(b) for b in bodies)


def frame_ends(bodies: list[bytes], fmt: str = FMT) -> list[int]:
    ends, at = [], len(journal.header(fmt))
    for b in bodies:
        at += len(journal.frame(b))
        ends.append(at)
    return ends


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A fresh directory per call: hypothesis runs many examples in one test function."""
    base = tmp_path_factory.mktemp("journal")
    return lambda: Path(tempfile.mkdtemp(dir=base))


# -- the framing -----------------------------------------------------------------------------

@given(BODIES)
def test_what_is_written_is_read_back(bodies):
    data = encoded(bodies)
    found = journal.parse(data, FMT)
    assert [bytes(b) for b in found.bodies] == bodies
    assert found.whole and found.end == len(data)


@given(BODIES, st.data())
def test_a_cut_keeps_exactly_the_whole_frames_before_it(bodies, data):
    whole = encoded(bodies)
    cut = data.draw(st.integers(0, len(whole)))
    found = journal.parse(whole[:cut], FMT)
    head = len(journal.header(FMT))
    if cut < head:
        assert found is None  # not even the header: no file of this format
        return
    ends = frame_ends(bodies)
    kept = [b for b, end in zip(bodies, ends) if end <= cut]
    assert [bytes(b) for b in found.bodies] == kept
    assert found.whole == (cut == head or cut in ends)
    assert found.end == (ends[len(kept) - 1] if kept else head)


@given(BODIES, st.data())
def test_any_flipped_byte_makes_the_file_unreadable(bodies, data):
    raw = bytearray(encoded(bodies))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    assert journal.parse(bytes(raw), FMT) is None


@given(BODIES, st.binary(min_size=1, max_size=40))
def test_bytes_after_the_last_frame_are_a_cut_frame_or_damage_never_a_frame(bodies, tail):
    found = journal.parse(encoded(bodies) + tail, FMT)
    assert found is None or ([bytes(b) for b in found.bodies] == bodies and not found.whole)


def test_another_journal_version_or_format_is_not_read():
    data = encoded([b"x"])
    assert journal.parse(data, "sci-test-2") is None
    assert journal.parse(data.replace(journal.JOURNAL, b"sci-journal-0"), FMT) is None
    assert journal.parse(b"", FMT) is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(BODIES, min_size=1, max_size=4))
def test_appends_add_frames_and_a_reader_sees_them_all(scratch, batches):
    path = scratch() / "j"
    assert journal.write(path, FMT, batches[0])
    for batch in batches[1:]:
        assert journal.append(path, FMT, batch)
    found = journal.read(path, FMT)
    assert [bytes(b) for b in found.bodies] == [b for batch in batches for b in batch] and found.whole


def test_append_refuses_what_it_cannot_extend_soundly(tmp_path):
    path = tmp_path / "j"
    assert not journal.append(path, FMT, [b"x"])  # absent
    journal.write(path, FMT, [b"first"])
    sound = path.read_bytes()
    assert not journal.append(path, "sci-test-2", [b"x"])  # another format
    path.write_bytes(sound[:-2])
    assert not journal.append(path, FMT, [b"x"])  # cut short: the frame would follow torn bytes
    damaged = bytearray(sound)
    damaged[-1] ^= 1
    path.write_bytes(bytes(damaged))
    assert not journal.append(path, FMT, [b"x"])  # a bad checksum, found without decoding
    path.write_bytes(sound)
    assert not journal.append(path, FMT, [b"x"], end=len(sound) - 1)  # not where the caller left it
    assert journal.append(path, FMT, [b"x"], end=len(sound))
    assert [bytes(b) for b in journal.read(path, FMT).bodies] == [b"first", b"x"]
    assert path.read_bytes() == sound + journal.frame(b"x")
    assert not path.with_name(f"j.{__import__('os').getpid()}.tmp").exists()


def test_a_write_replaces_a_directory_in_the_files_place(tmp_path):
    path = tmp_path / "j"
    (path / "inner").mkdir(parents=True)
    (path / "inner" / "f").write_text("x")
    assert journal.write(path, FMT, [b"ok"])
    assert [bytes(b) for b in journal.read(path, FMT).bodies] == [b"ok"]


# -- each reader, given a file with one flipped byte, believes nothing in it ----------------

FLIP = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def flip(path: Path, data) -> None:
    raw = bytearray(path.read_bytes())
    i = data.draw(st.integers(0, len(raw) - 1), label="byte")
    raw[i] ^= data.draw(st.integers(1, 255), label="xor")
    path.write_bytes(bytes(raw))


@settings(**FLIP)
@given(st.data())
def test_state_with_a_flipped_byte_is_empty(scratch, data):
    path = scratch() / "state"
    first = records.State(path)
    first.put("a", "k" * 64, {"o": {"path": "a.txt"}})
    first.save()
    second = records.State(path)
    second.put("b", "j" * 64, {})  # appended
    second.save()
    flip(path, data)
    assert records.State(path).nodes == {}


@settings(**FLIP)
@given(st.data())
def test_stat_cache_with_a_flipped_byte_is_empty(scratch, data):
    root = scratch()
    (root / "f").write_bytes(b"x")
    path = root / "statcache"
    cache = StatCache(path)
    cache.remember(root / "f", "d" * 64, "f")
    cache.save()
    again = StatCache(path)
    again.remember(root / "f", "e" * 64, "g")  # appended
    again.save()
    flip(path, data)
    assert StatCache(path).entries == {}


@settings(**FLIP)
@given(st.data())
def test_noop_record_with_a_flipped_byte_is_no_record(scratch, data):
    state_dir = scratch()
    header = {"format": noop.NOOP_FORMAT, "plan": "p" * 64, "targets": []}
    noop._write(state_dir, header, {"manifest": {"plan": [{"node": "a", "key": "0123abcd" * 8}]}})
    assert noop.read_record(state_dir) is not None
    flip(state_dir / noop.NOOP_FILE, data)
    assert noop.read_record(state_dir) is None


# -- damaged state files through the CLI -----------------------------------------------------

PIPELINE = {
    "sci.yaml": """
        version: 1
        params: params.yaml
        env:
          files: [env.txt]
        steps:
          a:
            cmd: echo {params.x} > {outs}
            outs: [a.txt]
          b:
            cmd: cat {deps} > {outs}
            deps: [a.txt, "data/*.txt"]
            outs: [b.txt]
          c:
            cmd: echo {params.y} > {outs}
            outs: [c.txt]
        """,
    "params.yaml": "x: 1\ny: 2\n",
    "env.txt": "an environment file: the no-op hashes it through the stat cache\n",
    "data/one.txt": "one\n",
    "data/two.txt": "two\n",
}
OUTPUTS = ["a.txt", "b.txt", "c.txt"]
# file under .sci/ -> its journal format
FILES = {
    "noop": noop.NOOP_FORMAT,
    "state": records.STATE_FORMAT,
    "statcache": StatCache.FORMAT,
    "plan.pickle": plan_cache.CACHE_FORMAT,
    "pipeline.pickle": pipeline.PIPELINE_CACHE_FORMAT,
}
# What the damaged build does, chosen so that it reads the damaged file: a no-op (the no-op
# record, the stat cache), a parameter edit (state, stat cache, plan cache, no-op record), a
# build that must plan from sci.yaml (the validated sci.yaml).
CASES = [("noop", "nothing"), ("noop", "edit"), ("state", "edit"), ("statcache", "edit"),
         ("statcache", "nothing"), ("plan.pickle", "edit"), ("pipeline.pickle", "replan")]
DAMAGE = ["flip", "cut", "garbage", "directory", "fifo"]


def damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "flip":
        data = bytearray(raw)
        data[len(data) * 2 // 3] ^= 0x10
        path.write_bytes(bytes(data))
    elif how == "cut":
        path.write_bytes(raw[:len(raw) - 5])
    elif how == "garbage":
        path.write_bytes(bytes((i * 7 + 3) % 256 for i in range(len(raw))))
    elif how == "fifo":  # opened as a file would block a reader forever
        path.unlink()
        os.mkfifo(path)
    else:
        path.unlink()
        (path / "inside").mkdir(parents=True)
        (path / "inside" / "file").write_bytes(raw[:10])


def outcome(sci: Sci) -> dict:
    out = sci.build()
    run = sorted((sci.root / "runs").iterdir())[-1]
    manifest = json.loads((run / "manifest.json").read_text())
    return {"executed": out["executed"], "failed": out["failed"],
            "json keys": {n["node"]: n["key"] for n in out["nodes"]},
            "manifest keys": {p["node"]: p["key"] for p in manifest["plan"]},
            "outputs": {rel: (sci.root / rel).read_bytes() for rel in OUTPUTS}}


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("name,action", CASES)
def test_a_damaged_state_file_decides_nothing_and_is_written_again(ws, tmp_path, name, action, how):
    sci = ws(PIPELINE)
    sci.build()
    sci.build()  # every file written, the no-op record proven once
    if action == "edit":
        text = (ws.root / "params.yaml").read_text()
        (ws.root / "params.yaml").write_text(text.replace("x: 1", "x: 7"))
    elif action == "replan":  # no no-op record, no plan cache: the plan is made from sci.yaml
        (ws.root / ".sci" / "plan.pickle").unlink()
        (ws.root / ".sci" / "noop").unlink()
    twin = tmp_path / "twin"
    shutil.copytree(ws.root, twin, ignore=shutil.ignore_patterns(".sci"))
    path = ws.root / ".sci" / name
    damage(path, how)
    assert outcome(sci) == outcome(Sci(twin))
    found = journal.read(path, FILES[name])
    assert path.is_file() and found is not None and found.whole, f"{name} was not written again"
    if action == "nothing" and SHORTCUTS_ON:  # the rewritten record serves the next no-op
        assert sci.build()["executed"] == [] and "noop" in [e["event"] for e in last_log(ws.root)]


def last_log(root: Path) -> list[dict]:
    run = sorted(p for p in (root / "runs").iterdir() if p.is_dir())[-1]
    return [json.loads(line) for line in (run / "logs.jsonl").read_text().splitlines()]


def test_a_flipped_hex_digit_of_a_key_in_the_noop_record_never_reaches_a_manifest(ws):
    """The issue's case: the no-op record had no checksum, and a damaged key in it was written
    into the next no-op's manifest.json and `--json`."""
    sci = ws(PIPELINE)
    sci.build()
    time.sleep(0.07)  # past the stat cache's racy window (50 ms): the next build can write the record
    first = outcome(sci)
    key = first["manifest keys"]["b"]
    path = ws.root / ".sci" / "noop"
    raw = path.read_bytes()
    at = raw.index(key.encode()) + 10
    wrong = b"0" if raw[at:at + 1] != b"0" else b"1"
    path.write_bytes(raw[:at] + wrong + raw[at + 1:])
    assert (raw[:at] + wrong + raw[at + 1:]).count(key.encode()) < raw.count(key.encode())
    again = outcome(sci)
    assert again["executed"] == []
    assert again["json keys"] == again["manifest keys"] == first["manifest keys"]
    assert journal.read(path, noop.NOOP_FORMAT) is not None  # written again, sound


# -- the paths sci owns -----------------------------------------------------------------------

def test_owns_is_one_rule_for_directories_and_what_lies_in_them():
    owned = (*RESERVED, "data/cas")
    assert owns(".sci", owned) == ".sci" and owns("runs/x/manifest.json", owned) == "runs"
    assert owns("data/cas/blobs/ab", owned) == "data/cas" and owns("data/cas", owned) == "data/cas"
    assert owns("data/cast.txt", owned) is None and owns("data/x.txt", owned) is None
    assert owns(".scifi", owned) is None and owns("runsheet.txt", owned) is None


def test_the_store_is_owned_only_where_it_lies_inside_the_workspace(tmp_path, monkeypatch):
    monkeypatch.delenv("SCI_CAS", raising=False)
    w = Workspace(tmp_path)
    assert w.owned() == (*RESERVED, "cas")
    assert w.owned("data/cas") == (*RESERVED, "data/cas")
    assert w.owned(str(tmp_path.parent / "elsewhere")) == RESERVED
    monkeypatch.setenv("SCI_CAS", "store2")
    assert w.owned("data/cas") == (*RESERVED, "store2")


@pytest.mark.parametrize("text,setting", [
    ("version: 1\nstore: cas2\n", "cas2"), ("store: 'my store'  # here\n", "my store"),
    ("store: data/cas # c\n", "data/cas"), ("version: 1\nsteps: {}\n", None), ("store: ~\n", None),
    ("steps:\n  restore:\n    cmd: x\n", None)])
def test_the_store_setting_is_found_without_parsing_yaml(text, setting):
    assert store_setting(text.encode()) == setting


@pytest.mark.parametrize("text", [
    "store:\n  cas2\n", '"store": cas2\n', "{store: cas2}\n", "store: a#b\n", "<<: *defaults\n",
    "  store: indented\n", "store: &s cas2\n", "store: x\nrestore: y\n", "--- {store: cas2}\n"])
def test_a_store_setting_the_search_cannot_be_sure_of_owns_no_store(tmp_path, monkeypatch, text):
    """Owning less than the plan only costs the no-op a fallback; owning more could hide a new
    glob match from it, so an unsure search owns no store directory at all."""
    monkeypatch.delenv("SCI_CAS", raising=False)
    (tmp_path / "sci.yaml").write_text(text)
    assert Workspace(tmp_path).owned(read_config=True) == RESERVED


@pytest.mark.shortcut_mechanics
def test_a_glob_match_in_the_store_leaves_the_no_op_a_no_op(ws):
    """`*/*.txt` also matches files in `cas/`, which the plan leaves out: the no-op's check and the
    plan cache's must leave them out by the same rule, or every no-op re-plans."""
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              cat:
                cmd: cat {deps} > {outs}
                deps: ["*/*.txt"]
                outs: [out.txt]
            """,
        "data/a.txt": "a\n",
    })
    sci.build()
    sci.build()  # the no-op record proven once (as in the damaged-state test)
    (ws.root / "cas" / "note.txt").write_text("not a dep\n")
    (ws.root / "runs" / "0-note.txt").write_text("not a dep\n")
    plan_cache_stamp = stat_signature(ws.root / ".sci" / "plan.pickle")
    out = sci.build()
    assert out["executed"] == [] and "noop" in [e["event"] for e in last_log(ws.root)]
    (ws.root / ".sci" / "noop").unlink()  # the normal path: the plan cache must still hold
    sci.build()
    assert stat_signature(ws.root / ".sci" / "plan.pickle") == plan_cache_stamp, "re-planned"
    (ws.root / "data" / "b.txt").write_text("b\n")  # a real new match is still seen
    assert sci.build()["executed"] == ["cat"]
    assert (ws.root / "out.txt").read_text() == "a\nb\n"


def test_a_store_inside_a_folder_owns_only_its_own_directory(ws):
    sci = ws({
        "sci.yaml": """
            version: 1
            store: data/cas
            steps:
              cat:
                cmd: cat {deps} > {outs}
                deps: ["data/**/*.txt", data/raw.csv]
                outs: [out.txt]
              bad:
                cmd: echo > {outs}
                outs: [data/cas/x.txt]
            """,
        "data/a.txt": "a\n",
        "data/raw.csv": "1,2\n",
    })
    proc = sci("build", "cat", check=2)
    assert "output path 'data/cas/x.txt' lies in data/cas/, which sci owns" in proc.stderr
    write(ws.root, {"sci.yaml": (ws.root / "sci.yaml").read_text().split("  bad:")[0]})
    assert sci.build()["executed"] == ["cat"]
    assert (ws.root / "out.txt").read_text() == "a\n1,2\n"
    (ws.root / "data" / "cas" / "z.txt").write_text("in the store\n")
    assert sci.build()["executed"] == []
    if SHORTCUTS_ON:
        assert "noop" in [e["event"] for e in last_log(ws.root)]


def test_state_files_of_the_old_formats_are_ignored_and_rebuilt(ws):
    """Files in the framings before the journal: each is ignored and written again."""
    sci = ws(PIPELINE)
    first = outcome(sci)
    sci_dir = ws.root / ".sci"
    old = marshal.dumps({"format": "sci-noop-8"})
    (sci_dir / "noop").write_bytes(len(old).to_bytes(4, "little") + old + len(old).to_bytes(4, "little") + old)
    (sci_dir / "statcache").write_bytes(b"sci-statcache-3\n")
    (sci_dir / "state").write_bytes(b"\0" * 8)
    again = outcome(sci)
    assert again["executed"] == [] and again["manifest keys"] == first["manifest keys"]
    assert again["outputs"] == first["outputs"]
    for name in ("noop", "statcache", "state"):
        assert journal.read(sci_dir / name, FILES[name]) is not None, name



def _cache_format(entry: Path) -> str:
    from sci.build import fingerprint
    from sci.envs import declared

    return declared.CACHE_FORMAT if "envs" in entry.parts else fingerprint.CACHE_FORMAT


@pytest.mark.parametrize("how", DAMAGE)
def test_every_damaged_cache_entry_is_recomputed_not_trusted(ws, tmp_path, how):
    """The fingerprint's cache entries (.sci/cache/) are journals too: an entry with a flipped
    byte, cut, garbage or a directory in its place answers nothing, and the build after the
    damage decides exactly what a build without .sci/ decides."""
    sci = ws({**PIPELINE, "sci.yaml": PIPELINE["sci.yaml"].replace("files: [env.txt]",
                                                                    "files: [env.txt]\n          tools: [sh]")})
    sci.build()
    entries = sorted(p for p in (ws.root / ".sci" / "cache").rglob("*")
                     if p.is_file() and "pyshim" not in p.parts)
    assert entries, "the build wrote no cache entry to damage"
    for entry in entries:
        assert journal.read_value(entry, _cache_format(entry)) is not None, f"{entry} is not a whole entry"
        damage(entry, how)
        assert journal.read_value(entry, _cache_format(entry)) is None, f"damaged {entry} still answers"
    twin = tmp_path / "twin"
    shutil.copytree(ws.root, twin, ignore=shutil.ignore_patterns(".sci"))
    assert outcome(sci) == outcome(Sci(twin))
