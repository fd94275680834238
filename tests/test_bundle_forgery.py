"""Forged bundles (tests/forge.py): a real bundle from `sci export`, changed as an attacker would
and sealed again consistently, must be refused by `sci import` with exit 1 and one line, and
nothing may be written outside the workspace — a sentinel directory next to it stays empty.

    in.txt ──▶ upper ──▶ results/upper.txt ──▶ count ──▶ results/count.txt ──▶ dossier (a tree)

What is forged: trees whose paths escape (absolute, `..`, duplicated, a file that is also a
directory, empty components, NUL); results whose outputs were renamed or moved (with and
without a consistently recomputed key); a result for a node sci.yaml does not have; a
non-canonical manifest; and a result whose output digest was swapped for attacker bytes — which
no content check can see, so only a trusted signature keeps it out. Each content forgery is
tried twice: imported with --unsigned, and signed by the trusted key (a valid signature over
forged content still does not make it admissible).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("cryptography", reason="signing needs the optional `cryptography` package (sci[sign])")

from conftest import Sci, no_traceback, write
from forge import MANIFEST, Forgery

from sci import canonical
from sci.evidence import signing
from sci.store.cas import Store
from sci.store.hashing import digest_bytes

PIPELINE = {
    "sci.yaml": """
        version: 1
        experiment:
          title: Shouting and counting
          question: How many characters does the shouted input hold?
          authors: [{name: Ada Lovelace}]
          license: CC-BY-4.0
        steps:
          upper:
            cmd: tr a-z A-Z < {deps} > {outs}
            deps: [in.txt]
            outs: [results/upper.txt]
          count:
            cmd: wc -c < {deps} > {outs}
            deps: [results/upper.txt]
            outs: [results/count.txt]
          dossier:
            kind: dossier
            steps: [upper, count]
            evidence: [results/count.txt]
            outs: [dossier/]
        """,
    "in.txt": "hello, reviewer\n",
}


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> SimpleNamespace:
    """A built workspace, its bundle (exported through the CLI), a trusted and an attacker's key."""
    root = tmp_path_factory.mktemp("forgery")
    write(root / "ws", PIPELINE)
    sci = Sci(root / "ws")
    sci.build("dossier")
    sci("export", "dossier", "-o", str(root / "real.zip"))
    signing.generate_key(root / "keys" / "trusted.pem")
    signing.generate_key(root / "keys" / "attacker.pem")
    return SimpleNamespace(root=root, ws=root / "ws", bundle=root / "real.zip",
                           trusted=root / "keys" / "trusted.pem", trusted_pub=root / "keys" / "trusted.pem.pub",
                           attacker=root / "keys" / "attacker.pem", attacker_pub=root / "keys" / "attacker.pem.pub")


@pytest.fixture
def place(tmp_path) -> SimpleNamespace:
    """Where a forgery is imported (`dest`, not yet there) and the sentinel beside it."""
    (tmp_path / "sentinel").mkdir()
    return SimpleNamespace(tmp=tmp_path, dest=tmp_path / "site" / "dest", sentinel=tmp_path / "sentinel")


def sci_import(place, bundle: Path, *flags: str, check: int, env: dict | None = None):
    sci = Sci(place.tmp, env)
    return sci("import", *flags, str(bundle), str(place.dest), check=check)


def refused(place, bundle: Path, *flags: str, env: dict | None = None) -> str:
    """Import must exit 1 with one line, admit nothing and write nothing outside `dest`."""
    proc = sci_import(place, bundle, *flags, check=1, env=env)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sci: error: "), proc.stderr
    assert no_traceback(proc.stderr)
    assert list(place.sentinel.iterdir()) == []
    assert not (place.dest / "sci.yaml").exists()
    blobs = place.dest / "cas" / "blobs"
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*")), "objects were admitted"
    return lines[0]


def signed_copy(bundle: Path, dst: Path, key: Path) -> Path:
    shutil.copy(bundle, dst)
    signing.sign(dst, key)
    return dst


# -- content forgeries: refused whoever signed them --------------------------------------------
def _tree_with(entries_of):
    """A forgery of the dossier's output tree: `entries_of(entries, place, blob)` gives the rows."""
    def forge(f: Forgery, place) -> None:
        act = f.result("dossier")
        out = act["outputs"]["dossier"]
        blob = f.put_blob(b"pwned\n")
        out["digest"] = f.put_tree(entries_of(f.tree(out["digest"]), place, blob))
        f.set_result(act)
    return forge


def _escape(place) -> str:
    """From the dossier's directory in `dest` to the sentinel, with `..`."""
    return os.path.relpath(place.sentinel / "pwned", place.dest / "dossier")


def _move_output(path_of, *, consistent: bool):
    def forge(f: Forgery, place) -> None:
        act = f.result("upper")
        path = path_of(place)
        act["outputs"] = {name: dict(rec, path=path) for name, rec in act["outputs"].items()}
        if consistent:  # the definition too, so the key is recomputed and the result names it
            act["components"]["definition"]["outs"] = {n: path for n in act["components"]["definition"]["outs"]}
        f.set_result(act)
    return forge


def _rename_output(f: Forgery, place) -> None:
    act = f.result("upper")
    act["outputs"] = {"renamed": rec for rec in act["outputs"].values()}
    f.set_result(act)


def _ghost_node(f: Forgery, place) -> None:
    manifest = f.manifest
    manifest["nodes"]["ghost"] = manifest["nodes"]["upper"]
    f.set_manifest(manifest)


CONTENT_FORGERIES = {
    "tree entry climbs out with ..": (_tree_with(lambda e, p, b: e + [[_escape(p), b, 6, False]]), "tree entry"),
    "tree entry is absolute": (_tree_with(lambda e, p, b: e + [[str(p.sentinel / "pwned"), b, 6, False]]),
                               "tree entry"),
    "tree entry listed twice": (_tree_with(lambda e, p, b: e + [[e[0][0], b, 6, False]]), "listed twice"),
    "tree entry is a file and a directory": (_tree_with(lambda e, p, b: e + [[e[0][0] + "/x", b, 6, False]]),
                                             "which is a file"),
    "tree entry with an empty component": (_tree_with(lambda e, p, b: e + [["a//pwned", b, 6, False]]),
                                           "tree entry"),
    "tree entry with a NUL": (_tree_with(lambda e, p, b: e + [["a\x00b", b, 6, False]]), "tree entry"),
    "tree entry is ..": (_tree_with(lambda e, p, b: e + [["..", b, 6, False]]), "tree entry"),
    "output moved out of the workspace": (_move_output(lambda p: "../../sentinel/pwned", consistent=False),
                                          "output"),
    "output moved, key recomputed": (_move_output(lambda p: "../../sentinel/pwned", consistent=True), "unsafe path"),
    "output moved inside, key recomputed": (_move_output(lambda p: "results/elsewhere.txt", consistent=True),
                                            "its sci.yaml declares"),
    "output moved inside": (_move_output(lambda p: "results/elsewhere.txt", consistent=False),
                            "its step declares"),
    "output moved into .sci, key recomputed": (_move_output(lambda p: ".sci/state", consistent=True), "unsafe path"),
    "output renamed": (_rename_output, "not the ones its step declares"),
    "a result for a node sci.yaml lacks": (_ghost_node, "ghost"),
}


@pytest.mark.parametrize("how", ["--unsigned", "signed by the trusted key"])
@pytest.mark.parametrize("name", list(CONTENT_FORGERIES))
def test_a_content_forgery_is_refused_with_or_without_a_valid_signature(real, place, name, how):
    change, said = CONTENT_FORGERIES[name]
    f = Forgery.read(real.bundle)
    change(f, place)
    forged = f.write(place.tmp / "forged.zip")
    if how == "--unsigned":
        line = refused(place, forged, "--unsigned")
    else:
        signing.sign(forged, real.trusted)  # the signer vouches for it: still not admissible
        line = refused(place, forged, "--trust", str(real.trusted_pub))
    assert said in line


def test_a_non_canonical_manifest_is_refused(real, place):
    f = Forgery.read(real.bundle)
    manifest = f.manifest
    pretty = json.dumps(manifest, indent=1, sort_keys=True).encode()
    forged = f.write(place.tmp / "pretty.zip", manifest_bytes=pretty)
    assert canonical.loads(pretty) == canonical.loads(f.items[MANIFEST])  # the same data, other bytes
    assert "not canonical" in refused(place, forged, "--unsigned")


# -- a consistent forgery of results: only the signature keeps it out --------------------------
def _swapped_digest(real, place) -> Path:
    """upper's output swapped for attacker bytes: every address and key still checks out."""
    f = Forgery.read(real.bundle)
    act = f.result("upper")
    (rec,) = act["outputs"].values()
    rec["digest"], rec["size"] = f.put_blob(b"ATTACKER BYTES\n"), len(b"ATTACKER BYTES\n")
    f.set_result(act)
    return f.write(place.tmp / "swapped.zip")


def test_a_swapped_output_digest_needs_a_trusted_signature(real, place):
    forged = _swapped_digest(real, place)
    assert "is not signed" in refused(place, forged)
    assert "is not signed" in refused(place, forged, "--trust", str(real.trusted_pub))
    signing.sign(forged, real.attacker)
    assert "which is not trusted (no key is trusted)" in refused(place, forged)
    assert "which is not trusted (trusted: " in refused(place, forged, "--trust", str(real.trusted_pub))
    assert "which is not trusted" in refused(place, forged, env={"SCI_TRUSTED_KEYS": str(real.trusted_pub)})


def test_a_forgery_under_a_copied_trusted_signature_is_refused(real, place):
    genuine = signed_copy(real.bundle, place.tmp / "genuine.zip", real.trusted)
    forged = _swapped_digest(real, place)
    shutil.copy(signing.signature_path(genuine), signing.signature_path(forged))
    assert "after signing" in refused(place, forged, "--trust", str(real.trusted_pub))


def test_what_unsigned_gives_up_and_how_repro_check_finds_it(real, place):
    """--unsigned admits a consistent forgery (nothing but a signature or a rebuild can tell);
    the build then serves the attacker's bytes, and `sci repro-check` names the node."""
    forged = _swapped_digest(real, place)
    sci_import(place, forged, "--unsigned", check=0)
    built = Sci(place.dest).build()
    assert built["executed"] == ["count", "dossier"]  # downstream of the forged bytes
    assert (place.dest / "results" / "upper.txt").read_bytes() == b"ATTACKER BYTES\n"
    assert list(place.sentinel.iterdir()) == []
    proc = Sci(place.dest)("repro-check", "upper", check=1, timeout=300)
    assert "upper" in proc.stderr + proc.stdout and no_traceback(proc.stderr)


# -- trust: the genuine bundle ----------------------------------------------------------------
def test_a_bundle_signed_by_a_trusted_key_is_admitted(real, place):
    bundle = signed_copy(real.bundle, place.tmp / "signed.zip", real.trusted)
    refused(place, bundle)  # trusted by no one yet
    sci_import(place, bundle, "--trust", str(real.attacker_pub), "--trust", str(real.trusted_pub), check=0)
    assert Sci(place.dest).build("dossier")["executed"] == []


def test_trusted_keys_from_the_environment(real, place):
    bundle = signed_copy(real.bundle, place.tmp / "signed.zip", real.trusted)
    env = {"SCI_TRUSTED_KEYS": f"{real.attacker_pub}:{real.trusted_pub}"}
    sci_import(place, bundle, check=0, env=env)
    assert (place.dest / "sci.yaml").is_file()


@pytest.mark.parametrize("garbage", [b"not a key at all\n", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                                     b"\x00\xff" * 16, b""])
def test_a_garbage_key_file_is_one_clear_line(real, place, garbage):
    bad = place.tmp / "bad.pub"
    bad.write_bytes(garbage)
    bundle = signed_copy(real.bundle, place.tmp / "signed.zip", real.trusted)
    for args, env in ((["--trust", str(bad)], None), (["--public-key", str(bad)], None),
                      ([], {"SCI_TRUSTED_KEYS": f"{real.trusted_pub}:{bad}"})):
        proc = sci_import(place, bundle, *args, check=2, env=env)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "bad.pub" in lines[0] and "No such file" not in lines[0], proc.stderr
    proc = Sci(place.tmp)("verify", str(bundle), "--public-key", str(bad), check=2)
    assert len(proc.stderr.strip().splitlines()) == 1 and "No such file" not in proc.stderr


def test_a_missing_key_file_is_one_clear_line(real, place):
    proc = sci_import(place, real.bundle, "--trust", str(place.tmp / "nowhere.pub"), check=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere.pub" in lines[0], proc.stderr


# -- a forged tree already in a store ------------------------------------------------------------
def test_fsck_names_an_escaping_tree_and_build_never_follows_it(real, place):
    ws = place.tmp / "ws"
    shutil.copytree(real.ws, ws, ignore=shutil.ignore_patterns(".sci"))
    store = Store(ws / "cas")
    state = json.loads(Sci(ws)("status", "--json").stdout)
    key = next(n["key"] for n in state["nodes"] if n["node"] == "dossier")
    act = store.get_action(key)
    blob = store.put_bytes(b"pwned\n")
    rel = os.path.relpath(place.sentinel / "pwned", ws / "dossier")
    tree_doc = {"type": "sci.tree", "format": 1, "entries": [[rel, blob, 6, False]]}
    data = canonical.dumps(tree_doc)
    digest = digest_bytes(data)
    store.tree_path(digest).parent.mkdir(parents=True, exist_ok=True)
    store.tree_path(digest).write_bytes(data)
    act["outputs"]["dossier"]["digest"] = digest
    if store.action_path(key).exists():
        os.chmod(store.action_path(key), 0o644)
        store.action_path(key).unlink()
    for pack in (ws / "cas" / "actions" / "packs").glob("*"):
        pack.unlink()  # the other results go too: the build runs their nodes again
    store.put_action(key, act)
    proc = Sci(ws)("fsck", check=1)
    assert digest in proc.stderr and "tree entry" in proc.stderr and no_traceback(proc.stderr)
    shutil.rmtree(ws / "dossier")
    proc = Sci(ws)("build", "dossier", check=False)
    assert proc.returncode in (0, 1), proc.stderr  # never exit 3
    assert no_traceback(proc.stderr)
    assert list(place.sentinel.iterdir()) == []
    Sci(ws)("fsck", "--repair", check=False)
    Sci(ws)("fsck")


# -- a forged result already in a store (a shared store another user can write) -----------------
def _store_forgery(real, place, change) -> Path:
    """A copy of the built workspace whose store holds `change(action)` as upper's result."""
    ws = place.tmp / "ws"
    shutil.copytree(real.ws, ws, ignore=shutil.ignore_patterns(".sci"))
    store = Store(ws / "cas")
    state = json.loads(Sci(ws)("status", "--json").stdout)
    key = next(n["key"] for n in state["nodes"] if n["node"] == "upper")
    act = store.get_action(key)
    change(act, place)
    for pack in (ws / "cas" / "actions" / "packs").glob("*"):
        pack.unlink()  # the other results go too: their nodes run again
    if store.action_path(key).exists():
        os.chmod(store.action_path(key), 0o644)
        store.action_path(key).unlink()
    store.put_action(key, act)
    shutil.rmtree(ws / "results")
    return ws


def _moved(path_of):
    def change(act, place):
        act["outputs"] = {n: dict(rec, path=path_of(place)) for n, rec in act["outputs"].items()}
    return change


STORE_FORGERIES = {
    "output moved inside": (_moved(lambda p: "elsewhere.txt"), "is at 'elsewhere.txt'"),
    "output moved out": (_moved(lambda p: os.path.relpath(p.sentinel / "pwned", p.tmp / "ws")), "but its step declares"),
    "output absolute": (_moved(lambda p: str(p.sentinel / "pwned")), "but its step declares"),
    "output renamed": (lambda act, p: act.update(outputs={"other": next(iter(act["outputs"].values()))}),
                       "not the ones its step declares"),
    "output malformed": (lambda act, p: act.update(outputs={n: "x" for n in act["outputs"]}), "is malformed"),
}


@pytest.mark.parametrize("name", list(STORE_FORGERIES))
def test_a_result_edited_in_the_store_is_never_served(real, place, name):
    """Issue 15 item 5: a moved output made build and status crash (StopIteration, exit 3), and a
    moved path was written where the result said. The decision now refuses such a result: the
    node runs again, nothing is written where it pointed."""
    change, said = STORE_FORGERIES[name]
    ws = _store_forgery(real, place, change)
    proc = Sci(ws)("status", check=0)
    assert "upper: stored result unusable" in proc.stdout and said in proc.stdout, proc.stdout
    built = Sci(ws).build("dossier")
    assert "upper" in built["executed"] and no_traceback(built["stderr"])
    assert (ws / "results" / "upper.txt").read_text() == "HELLO, REVIEWER\n"
    assert not (ws / "elsewhere.txt").exists() and list(place.sentinel.iterdir()) == []
    assert Sci(ws).build("dossier")["executed"] == []  # the rebuilt result replaced the forged one
