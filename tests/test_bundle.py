"""Sealed bundles: export → import round trip on the real investigation, determinism, and every
way a hostile or damaged archive is refused before anything is written.

The investigation (copied from the repository, built once per module):

    simulate[noise=…] ──▶ fit[noise=…] ──▶ summarize ──▶ figure ──▶ dossier
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, Sci, write
from hypothesis import given
from hypothesis import strategies as st

from sci import canonical
from sci.evidence import bundle
from sci.evidence.bundle import MANIFEST, Limits, export_bundle
from sci.errors import UserError, WorkFailed
from sci.store.hashing import digest_bytes
from sci.workspace import Workspace

INVESTIGATION = ["sci.yaml", "params.yaml", "uv.lock", "pyproject.toml", "rules"]


@pytest.fixture(scope="module", autouse=True)
def _no_shared_store():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SCI_CAS", raising=False)
        mp.delenv("SCI_REMOTE", raising=False)
        yield


@pytest.fixture(scope="module")
def investigation(tmp_path_factory) -> Path:
    """The bundled investigation, copied and built once (scaled down): its workspace root."""
    root = tmp_path_factory.mktemp("investigation")
    for name in INVESTIGATION:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, root / name)
    # Fewer recordings and resamples than the shipped study: same pipeline, a faster build.
    params = (root / "params.yaml").read_text()
    for old, new in (("replicates: 200", "replicates: 20"), ("bootstrap: 2000", "bootstrap: 200")):
        assert old in params
        params = params.replace(old, new)
    (root / "params.yaml").write_text(params)
    Sci(root).build("dossier")
    return root


@pytest.fixture(scope="module")
def sealed(investigation, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "dossier.zip"
    export_bundle(Workspace(investigation), "dossier", out)
    return out


def import_bundle(*args, **kw) -> dict:
    """These tests are about everything but who signed a bundle (test_bundle_forgery.py and
    test_signing.py are about that): they import with --unsigned."""
    return bundle.import_bundle(*args, **{"unsigned": True, **kw})


def entries(path: Path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(info, zf.read(info)) for info in zf.infolist()]


def rezip(src: Path, dst: Path, *, replace: dict[str, bytes] | None = None,
          add: list[tuple[zipfile.ZipInfo | str, bytes]] = (), fix_manifest: bool = False) -> Path:
    """Copy a bundle, replacing some members' bytes and adding others. With `fix_manifest`
    the manifest is rewritten to match (a consistent forgery, not just a damaged copy)."""
    replace = dict(replace or {})
    items = [(info.filename, replace.pop(info.filename, data)) for info, data in entries(src)]
    added = [(a if isinstance(a, zipfile.ZipInfo) else zipfile.ZipInfo(a), d) for a, d in add]
    if fix_manifest:
        manifest = canonical.loads(dict(items)[MANIFEST])
        rows = {r["path"]: r for r in manifest["members"]}
        for name, data in items + [(i.filename, d) for i, d in added]:
            if name != MANIFEST:
                rows[name] = {"path": name, "digest": digest_bytes(data), "size": len(data),
                              "executable": rows.get(name, {}).get("executable", False)}
        manifest["members"] = sorted(rows.values(), key=lambda r: r["path"])
        items = [(n, canonical.dumps(manifest) if n == MANIFEST else d) for n, d in items]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in items:
            zf.writestr(name, data)
        for info, data in added:
            zf.writestr(info, data)
    return dst


def member(path: Path, prefix: str) -> str:
    return next(info.filename for info, _ in entries(path) if info.filename.startswith(prefix))


def assert_nothing_imported(ws_dir: Path) -> None:
    assert not (ws_dir / "sci.yaml").exists()
    blobs = ws_dir / "cas" / "blobs"
    assert not blobs.exists() or not any(blobs.rglob("*")), "objects were admitted"


# -- the round trip ----------------------------------------------------------------------------
def test_import_into_an_empty_directory_then_build_runs_nothing(sealed, tmp_path):
    ws_dir = tmp_path / "fresh"
    report = import_bundle(ws_dir, sealed)
    assert report["target"] == "dossier" and report["nodes"] == 15
    assert "sci.yaml" in report["files_written"] and "rules/fit.py" in report["files_written"]
    assert "dossier/index.html" in report["files_written"]  # the target is readable at once
    assert report["environment_drift"] == []
    assert report["signature"] is None
    built = Sci(ws_dir).build("dossier")
    assert built["executed"] == []
    assert len(built["cached"]) == 15


def test_import_again_changes_nothing(sealed, tmp_path):
    ws_dir = tmp_path / "twice"
    first = import_bundle(ws_dir, sealed)
    again = import_bundle(ws_dir, sealed)
    assert again["files_written"] == []
    assert again["files_unchanged"] == len(first["files_written"])
    assert again["objects_admitted"] == 0 and again["objects_present"] == first["objects_admitted"]


@pytest.mark.skipif(importlib.util.find_spec("sci.evidence.repro") is None, reason="sci repro-check is not available yet")
def test_repro_check_passes_in_the_imported_workspace(sealed, tmp_path):
    ws_dir = tmp_path / "repro"
    import_bundle(ws_dir, sealed)
    proc = Sci(ws_dir)("repro-check", "dossier", timeout=300)
    assert proc.returncode == 0


def test_export_is_byte_for_byte_deterministic(investigation, tmp_path):
    first, again = tmp_path / "first.zip", tmp_path / "again.zip"
    export_bundle(Workspace(investigation), "dossier", first)
    export_bundle(Workspace(investigation), "dossier", again)
    assert again.read_bytes() == first.read_bytes()
    infos = [info for info, _ in entries(first)]
    assert infos[0].filename == MANIFEST
    assert [i.filename for i in infos[1:]] == sorted(i.filename for i in infos[1:])
    assert {i.date_time for i in infos} == {bundle.ZIP_EPOCH}
    assert {stat.S_IMODE(i.external_attr >> 16) for i in infos} <= {0o644, 0o755}
    assert all(stat.S_ISREG(i.external_attr >> 16) for i in infos)


def test_manifest_lists_every_member_with_its_digest(sealed):
    items = {i.filename: d for i, d in entries(sealed)}
    manifest = canonical.loads(items.pop(MANIFEST))
    assert canonical.dumps(manifest) == {i.filename: d for i, d in entries(sealed)}[MANIFEST]
    rows = {r["path"]: r for r in manifest["members"]}
    assert set(rows) == set(items)
    for name, data in items.items():
        assert rows[name]["digest"] == digest_bytes(data) and rows[name]["size"] == len(data)
    assert set(manifest["nodes"]) >= {"dossier", "figure", "summarize", "fit[noise=0.1]", "simulate[noise=0.0]"}
    assert "environment.json" in items and "workspace/uv.lock" in items and "workspace/params.yaml" in items
    assert sum(n.startswith("store/actions/") for n in items) == 15
    assert bundle.check_bundle(sealed)["members"] == len(items) + 1


def test_export_refuses_a_target_that_is_not_built(ws, tmp_path, monkeypatch):
    sci = ws({"sci.yaml": """
        version: 1
        steps:
          up:
            cmd: tr a-z A-Z < {deps} > {outs}
            deps: [in.txt]
            outs: [out.txt]
        """, "in.txt": "hello\n"})
    with pytest.raises(UserError, match="up is not built"):
        export_bundle(Workspace(sci.root), "up", tmp_path / "x.zip")
    sci.build("up")
    export_bundle(Workspace(sci.root), "up", tmp_path / "x.zip")
    (sci.root / "in.txt").write_text("changed\n")
    with pytest.raises(UserError, match=r"not built \(dep changed: in.txt\)"):
        export_bundle(Workspace(sci.root), "up", tmp_path / "y.zip")
    assert not (tmp_path / "y.zip").exists()


# -- tampering ---------------------------------------------------------------------------------
def test_one_byte_of_one_member_changed_is_named(sealed, tmp_path):
    name = "workspace/rules/fit.py"
    data = {i.filename: d for i, d in entries(sealed)}[name]
    bad = rezip(sealed, tmp_path / "bad.zip", replace={name: bytes([data[0] ^ 1]) + data[1:]})
    with pytest.raises(WorkFailed, match="rules/fit.py.*does not match its digest"):
        import_bundle(tmp_path / "ws", bad)
    assert_nothing_imported(tmp_path / "ws")
    with pytest.raises(WorkFailed, match="rules/fit.py"):
        bundle.check_bundle(bad)


def test_a_flipped_byte_in_the_archive_is_named(sealed, tmp_path):
    bad = tmp_path / "flipped.zip"
    shutil.copy(sealed, bad)
    with zipfile.ZipFile(sealed) as zf:
        info = zf.getinfo("workspace/uv.lock")
    raw = bytearray(bad.read_bytes())
    header = info.header_offset
    name_len = int.from_bytes(raw[header + 26:header + 28], "little")
    extra_len = int.from_bytes(raw[header + 28:header + 30], "little")
    raw[header + 30 + name_len + extra_len + info.compress_size // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(WorkFailed, match="workspace/uv.lock"):
        import_bundle(tmp_path / "ws", bad)
    assert_nothing_imported(tmp_path / "ws")


def test_a_file_added_after_export_is_refused_by_name(sealed, tmp_path):
    bad = rezip(sealed, tmp_path / "added.zip", add=[("workspace/rules/extra.py", b"import os\n")])
    with pytest.raises(UserError, match="workspace/rules/extra.py.*not in MANIFEST.json"):
        import_bundle(tmp_path / "ws", bad)
    assert_nothing_imported(tmp_path / "ws")


def test_an_edited_manifest_names_the_member_that_no_longer_matches(sealed, tmp_path):
    items = {i.filename: d for i, d in entries(sealed)}
    manifest = canonical.loads(items[MANIFEST])
    row = next(r for r in manifest["members"] if r["path"] == "workspace/params.yaml")
    row["digest"] = digest_bytes(b"something else")
    bad = rezip(sealed, tmp_path / "edited.zip", replace={MANIFEST: canonical.dumps(manifest)})
    with pytest.raises(WorkFailed, match="workspace/params.yaml"):
        import_bundle(tmp_path / "ws", bad)
    assert_nothing_imported(tmp_path / "ws")


def test_a_damaged_manifest_is_refused(sealed, tmp_path):
    bad = rezip(sealed, tmp_path / "damaged.zip", replace={MANIFEST: b"{not json"})
    with pytest.raises(WorkFailed, match="MANIFEST.json is damaged"):
        import_bundle(tmp_path / "ws", bad)


def test_a_forged_store_object_with_a_matching_manifest_is_still_refused(sealed, tmp_path):
    """Re-signing nothing, but fixing the manifest: objects are checked against their addresses."""
    blob = member(sealed, "store/blobs/")
    forged = rezip(sealed, tmp_path / "blob.zip", replace={blob: b"forged"}, fix_manifest=True)
    with pytest.raises(WorkFailed, match=f"{blob}.*does not match its name"):
        import_bundle(tmp_path / "ws1", forged)
    assert_nothing_imported(tmp_path / "ws1")
    action = member(sealed, "store/actions/")
    doc = canonical.loads({i.filename: d for i, d in entries(sealed)}[action])
    doc["seed"] = doc["components"]["seed"] = doc["components"]["seed"] + 1
    forged = rezip(sealed, tmp_path / "action.zip", replace={action: canonical.dumps(doc)}, fix_manifest=True)
    with pytest.raises(WorkFailed, match="key does not match its components"):
        import_bundle(tmp_path / "ws2", forged)
    assert_nothing_imported(tmp_path / "ws2")


def test_a_bundle_missing_an_object_its_results_need_is_refused(sealed, tmp_path):
    blob = member(sealed, "store/blobs/")
    items = [(i.filename, d) for i, d in entries(sealed) if i.filename != blob]
    manifest = canonical.loads(dict(items)[MANIFEST])
    manifest["members"] = [r for r in manifest["members"] if r["path"] != blob]
    bad = tmp_path / "incomplete.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for name, data in items:
            zf.writestr(name, canonical.dumps(manifest) if name == MANIFEST else data)
    with pytest.raises(WorkFailed, match=f"blob {blob.rsplit('/', 1)[1][:12]} needed by .* is missing"):
        import_bundle(tmp_path / "ws", bad)
    assert_nothing_imported(tmp_path / "ws")


# -- hostile archives --------------------------------------------------------------------------
@pytest.mark.parametrize("name, problem", [
    ("workspace/../../evil.txt", "zip-slip"),
    ("../evil.txt", "zip-slip"),
    ("/tmp/sci-evil-absolute.txt", "absolute path"),
    ("C:/evil.txt", "absolute path"),
    ("workspace/a\\..\\..\\evil.txt", "backslash"),
])
def test_unsafe_names_are_refused(sealed, tmp_path, name, problem):
    bad = rezip(sealed, tmp_path / "evil.zip", add=[(name, b"pwned\n")], fix_manifest=True)
    with pytest.raises(UserError, match=problem):
        import_bundle(tmp_path / "a" / "ws", bad)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "a" / "evil.txt").exists()
    assert not Path("/tmp/sci-evil-absolute.txt").exists()
    assert_nothing_imported(tmp_path / "a" / "ws")


def test_a_symlink_member_is_refused(sealed, tmp_path):
    link = zipfile.ZipInfo("workspace/rules/link.py")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    bad = rezip(sealed, tmp_path / "link.zip", add=[(link, b"/etc/passwd")], fix_manifest=True)
    with pytest.raises(UserError, match="symbolic link"):
        import_bundle(tmp_path / "ws", bad)
    assert not (tmp_path / "ws" / "rules" / "link.py").is_symlink()
    assert_nothing_imported(tmp_path / "ws")


def test_duplicate_names_are_refused(sealed, tmp_path):
    with pytest.warns(UserWarning, match="Duplicate name"):
        bad = rezip(sealed, tmp_path / "dup.zip", add=[("workspace/sci.yaml", b"version: 1\nsteps: {}\n")])
    with pytest.raises(UserError, match="duplicate name"):
        import_bundle(tmp_path / "ws", bad)
    assert_nothing_imported(tmp_path / "ws")


def test_a_member_writing_into_sci_state_is_refused(sealed, tmp_path):
    bad = rezip(sealed, tmp_path / "state.zip", add=[("workspace/.sci/state", b"{}")], fix_manifest=True)
    with pytest.raises(UserError, match=r"\.sci/"):
        import_bundle(tmp_path / "ws", bad)


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, canonical.dumps({"type": "sci.bundle", "format": 1, "members": []}))
        zf.writestr("workspace/zeros.bin", bytes(16 * 1024 * 1024))
    with pytest.raises(UserError, match="zip bomb"):
        import_bundle(tmp_path / "ws", bomb)
    assert not (tmp_path / "ws").exists()


def test_overlapping_members_are_refused(tmp_path):
    """One compressed stream listed under many names is how a non-recursive bomb grows."""
    bomb = tmp_path / "overlap.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("workspace/a.txt", b"abc" * 1000)
        first = zf.getinfo("workspace/a.txt")
        for i in range(3):
            twin = zipfile.ZipInfo(f"workspace/b{i}.txt")
            for attr in ("header_offset", "compress_size", "file_size", "CRC", "compress_type"):
                setattr(twin, attr, getattr(first, attr))
            zf.filelist.append(twin)
            zf.NameToInfo[twin.filename] = twin
    with pytest.raises(UserError, match="overlaps"):
        import_bundle(tmp_path / "ws", bomb)


def test_the_total_size_limit_is_enforced(sealed, tmp_path):
    with pytest.raises(UserError, match="more than 1048576 bytes"):
        import_bundle(tmp_path / "ws", sealed, limits=Limits(max_total=1024 * 1024))
    assert_nothing_imported(tmp_path / "ws")


def test_not_a_zip_is_a_user_error(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(UserError, match="not a readable zip"):
        import_bundle(tmp_path / "ws", junk)


@given(st.lists(st.sampled_from(["a", "b.txt", "..", ".", "", "rules", "x..y"]), min_size=1, max_size=6))
def test_name_problem_flags_exactly_the_unsafe_paths(parts):
    name = "/".join(parts)
    unsafe = any(p in ("", ".", "..") for p in parts)
    assert (bundle.name_problem(name) is not None) == unsafe
    assert bundle.name_problem("/" + name) is not None


# -- the destination workspace -----------------------------------------------------------------
def test_existing_files_that_differ_are_kept_unless_forced(sealed, tmp_path):
    ws_dir = tmp_path / "mine"
    write(ws_dir, {"params.yaml": "mine: true\n", "notes.txt": "keep me\n"})
    with pytest.raises(UserError, match="params.yaml already exist"):
        import_bundle(ws_dir, sealed)
    assert (ws_dir / "params.yaml").read_text() == "mine: true\n"
    assert_nothing_imported(ws_dir)
    report = import_bundle(ws_dir, sealed, force=True)
    assert "params.yaml" in report["files_written"]
    assert (ws_dir / "params.yaml").read_text() != "mine: true\n"
    assert (ws_dir / "notes.txt").read_text() == "keep me\n"


def test_a_symlinked_directory_in_the_workspace_is_not_written_through(sealed, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    ws_dir = tmp_path / "ws"
    ws_dir.mkdir()
    os.symlink(outside, ws_dir / "rules")
    with pytest.raises(UserError, match="symbolic link"):
        import_bundle(ws_dir, sealed, force=True)
    assert list(outside.iterdir()) == []


def test_a_store_outside_the_workspace_is_refused(investigation, tmp_path):
    ws_dir = tmp_path / "src"
    shutil.copytree(investigation, ws_dir, ignore=shutil.ignore_patterns("cas", "runs", ".sci"))
    text = (ws_dir / "sci.yaml").read_text()
    (ws_dir / "sci.yaml").write_text(text.replace("version: 1\n", f"version: 1\nstore: {tmp_path / 'elsewhere'}\n", 1))
    shutil.copytree(investigation / "cas", tmp_path / "elsewhere")
    out = tmp_path / "b.zip"
    export_bundle(Workspace(ws_dir), "figure", out)
    with pytest.raises(UserError, match="store outside the workspace"):
        import_bundle(tmp_path / "dest", out)
    assert not (tmp_path / "dest" / "sci.yaml").exists()


# -- through the CLI (once `sci export` / `sci import` are wired; the flags are docs/bundles.md's) --




def test_cli_export_then_import_builds_nothing(investigation, tmp_path):
    out = tmp_path / "cli.zip"
    Sci(investigation)("export", "dossier", "-o", str(out))
    assert bundle.check_bundle(out)["target"] == "dossier"
    Sci(tmp_path)("import", "--unsigned", str(out), str(tmp_path / "ws"))
    assert Sci(tmp_path / "ws").build("dossier")["executed"] == []


def test_cli_exit_codes_name_the_member(sealed, tmp_path):
    from conftest import no_traceback

    name = "workspace/rules/fit.py"
    data = {i.filename: d for i, d in entries(sealed)}[name]
    tampered = rezip(sealed, tmp_path / "bad.zip", replace={name: data + b"\n# tampered\n"})
    proc = Sci(tmp_path)("import", "--unsigned", str(tampered), str(tmp_path / "ws1"), check=1)
    assert "rules/fit.py" in proc.stderr and no_traceback(proc.stderr)
    evil = rezip(sealed, tmp_path / "evil.zip", add=[("workspace/../../evil.txt", b"x")], fix_manifest=True)
    proc = Sci(tmp_path)("import", "--unsigned", str(evil), str(tmp_path / "ws2"), check=2)
    assert "zip-slip" in proc.stderr and no_traceback(proc.stderr)


def test_the_investigation_reports_metrics_and_plots_its_sweep(investigation):
    """Issue 18: the fits and simulations emit metrics; the dossier draws each against the noise."""
    import json

    sci = Sci(investigation)
    fit = json.loads(sci("metrics", "fit", "--format", "json").stdout)
    assert [r["noise"] for r in fit["rows"]] == [0.0, 0.01, 0.02, 0.05, 0.1, 0.2]
    assert all(isinstance(r[f"{m}.bias"], float) for r in fit["rows"] for m in ("ar2", "logdec", "nls"))
    assert fit["rows"][-1]["ar2.bias"] > 0 > fit["rows"][-1]["logdec.bias"]  # the investigation's answer
    sim = json.loads(sci("metrics", "simulate", "--format", "json").stdout)
    assert all(abs(r["noise.measured"] - r["noise"]) <= 0.1 * r["noise"] for r in sim["rows"])  # the noise drawn
    page = (investigation / "dossier" / "index.html").read_text()
    for label in ("ar2.bias against noise", "nls.bias against noise", "noise.measured against noise"):
        assert f'aria-label="{label}"' in page
