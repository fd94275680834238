"""CI cache restore (SPEC §8.4, §9): a fresh clone with a copied store or a remote rebuilds
nothing, fetches only what it needs, and never admits a corrupt object."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


from conftest import Sci, write
from servers import aws_env, dav_server, s3_endpoint, site  # noqa: F401 - fixtures: real remotes
from sci.store.cas import Store

PIPELINE = """
version: 1
experiment: {title: Tiny, question: Does the cache travel?, authors: [{name: Ada Lovelace}], license: CC-BY-4.0}
steps:
  gen:
    foreach: {i: [1, 2, 3]}
    cmd: python -c "import sys; open(sys.argv[1], 'w').write('x' * 1000 * int(sys.argv[2]))" {outs} {item.i}
    outs: ["data/{item.i}.txt"]
  summary:
    cmd: wc -c {deps} > {outs}
    deps: ["data/*.txt"]
    outs: [results/summary.txt]
  dossier:
    kind: dossier
    steps: [gen, summary]
    evidence: [results/summary.txt]
    outs: [dossier/]
"""


def _remote_yaml(spec) -> str:
    if isinstance(spec, dict):
        return "remotes:\n  default: " + json.dumps(spec) + "\n"
    return f"remotes:\n  default: {json.dumps(str(spec))}\n"


def _clone(src: Path, dst: Path) -> Sci:
    """What `git clone` gives: the tracked sources only, with new mtimes."""
    dst.mkdir()
    shutil.copy(src / "sci.yaml", dst / "sci.yaml")
    return Sci(dst)


def _objects(store: Path) -> set:
    """Every object in a store: blob and tree names, and action results (loose or packed) by key."""
    files = {p.name for p in store.glob("*/*/*") if p.parent.parent.name in ("blobs", "trees")}
    return files | {("action", key) for key, _data, _file in Store(store, create=False).iter_actions()}


def test_fresh_clone_with_a_copied_store_executes_nothing(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    write(a, {"sci.yaml": PIPELINE})
    first = Sci(a).build("dossier")
    assert len(first["executed"]) == 5
    b = tmp_path / "b"
    sci_b = _clone(a, b)
    shutil.copytree(a / "cas", b / "cas")  # e.g. restored by actions/cache
    out = sci_b.build("dossier")
    assert out["executed"] == [] and len(out["cached"]) == 5
    assert (b / "dossier" / "dossier.json").read_bytes() == (a / "dossier" / "dossier.json").read_bytes()


def test_fresh_clone_with_a_remote_fetches_only_what_the_target_needs(tmp_path, site):  # noqa: F811
    a = tmp_path / "a"
    a.mkdir()
    write(a, {"sci.yaml": PIPELINE + _remote_yaml(site.spec)})
    sci_a = Sci(a)
    sci_a.build("dossier")
    pushed = json.loads(sci_a("push", "--json").stdout)
    assert pushed["pushed_actions"] == 5 and pushed["failed"] == 0
    b = tmp_path / "b"
    sci_b = _clone(a, b)
    out = sci_b.build("dossier")
    assert out["executed"] == [] and len(out["cached"]) == 5
    # Only the dossier's own output came down: its tree and the files in it.
    key = next(n["key"] for n in out["nodes"] if n["node"] == "dossier")
    action = Store(a / "cas", create=False).get_action(key)
    tree = next(iter(action["outputs"].values()))["digest"]
    tree_doc = json.loads((a / "cas" / "trees" / tree[:2] / tree).read_text())
    want_objects = 1 + len(tree_doc["entries"])
    want_bytes = (a / "cas" / "trees" / tree[:2] / tree).stat().st_size + sum(e[2] for e in tree_doc["entries"])
    assert out["remote"]["objects"] == want_objects
    assert out["remote"]["bytes"] == want_bytes
    assert not (b / "data").exists() and not (b / "results").exists()
    assert (b / "dossier" / "dossier.json").read_bytes() == (a / "dossier" / "dossier.json").read_bytes()
    # A second build downloads nothing more (the dossier is local; the rest stays remote).
    again = sci_b.build("dossier")
    assert again["executed"] == [] and again["remote"]["objects"] == 0


def test_pull_then_build_needs_no_remote(tmp_path, site):  # noqa: F811
    a = tmp_path / "a"
    a.mkdir()
    write(a, {"sci.yaml": PIPELINE + _remote_yaml(site.spec)})
    Sci(a).build()
    Sci(a)("push")
    b = tmp_path / "b"
    sci_b = _clone(a, b)
    pulled = json.loads(sci_b("pull", "--json").stdout)
    assert len(pulled["pulled_nodes"]) == 5 and pulled["not_on_remote"] == []
    assert _objects(b / "cas") == _objects(a / "cas")
    out = sci_b.build("--no-remote")
    assert out["executed"] == [] and (b / "data" / "3.txt").stat().st_size == 3000


def test_corrupt_remote_object_is_never_admitted(tmp_path, site):  # noqa: F811
    a = tmp_path / "a"
    a.mkdir()
    write(a, {"sci.yaml": PIPELINE + _remote_yaml(site.spec)})
    out_a = Sci(a).build()
    Sci(a)("push")
    key = next(n["key"] for n in out_a["nodes"] if n["node"] == "gen[i=2]")
    digest = Store(a / "cas", create=False).get_action(key)["outputs"]["data/{item.i}.txt".replace("{item.i}", "2")]["digest"]
    rel = f"blobs/{digest[:2]}/{digest}"
    site.write(rel, b"y" * 2000)  # same size, wrong bytes
    b = tmp_path / "b"
    sci_b = _clone(a, b)
    pulled = sci_b("pull", "--json", check=1)
    assert digest in pulled.stderr or digest[:12] in pulled.stderr
    assert not (b / "cas" / "blobs" / digest[:2] / digest).exists()
    out = sci_b.build("gen[i=2]")  # asked for: its bytes are needed; the bad copy is refused
    assert out["executed"] == ["gen[i=2]"]
    assert "warning" in out["stderr"] and "gen[i=2]" in out["stderr"]
    assert (b / "data" / "2.txt").read_text() == "x" * 2000
    assert json.loads(sci_b("fsck", "--json").stdout)["ok"] is True


def test_two_workspaces_sharing_one_store_build_at_once(tmp_path):
    store = tmp_path / "shared"
    runs = []
    for name in ("w1", "w2"):
        root = tmp_path / name
        root.mkdir()
        write(root, {"sci.yaml": PIPELINE})
        runs.append(Sci(root, env={"SCI_CAS": str(store)}))
    procs = [subprocess.Popen([sys.executable, "-m", "sci.cli", "build", "--json"], cwd=s.root, env=s.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in runs]
    for p in procs:
        p.communicate(timeout=180)
        assert p.returncode == 0
    assert json.loads(runs[0]("fsck", "--json").stdout)["ok"] is True
    assert runs[1].build()["executed"] == []


def test_gc_keeps_what_the_current_pipeline_needs(ws):
    sci = ws({"sci.yaml": PIPELINE.replace("[1, 2, 3]", "[1, 2]")})
    sci.build()
    (ws.root / "sci.yaml").write_text((ws.root / "sci.yaml").read_text().replace("'x' * 1000", "'z' * 1000"))
    sci.build()
    dry = json.loads(sci("gc", "--keep-runs", "0", "--dry-run", "--json").stdout)
    assert dry["deleted_objects"] > 0
    before = _objects(ws.root / "cas")
    done = json.loads(sci("gc", "--keep-runs", "0", "--json").stdout)
    assert done["deleted_objects"] == dry["deleted_objects"] and done["deleted_bytes"] == dry["deleted_bytes"]
    after = _objects(ws.root / "cas")
    assert after < before and len(before - after) == done["deleted_objects"]
    assert {("action", o["object"]) for o in done["objects"] if o["kind"] == "action"} == {
        o for o in before - after if o[0] == "action"}
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
    for p in (ws.root / "data").iterdir():
        p.unlink()
    assert sci.build()["executed"] == []  # restored from what gc kept
