"""Signing and verifying dossiers and bundles (Ed25519), on a real built dossier:

    in.txt ──▶ count ──▶ results/count.txt ──▶ dossier ──▶ dossier/{dossier.json,index.html,…}
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("cryptography", reason="signing needs the optional `cryptography` package (sci[sign])")

from conftest import Sci, write

from sci import canonical
from sci.evidence import signing
from sci.evidence.bundle import MANIFEST, export_bundle, import_bundle
from sci.errors import UserError, WorkFailed
from sci.workspace import Workspace

PIPELINE = {
    "sci.yaml": """
        version: 1
        experiment:
          title: Counting characters
          question: How many characters does the input hold?
          authors: [{name: Ada Lovelace}]
          license: CC-BY-4.0
        steps:
          count:
            cmd: wc -c < {deps} > {outs}
            deps: [in.txt]
            outs: [results/count.txt]
          dossier:
            kind: dossier
            steps: [count]
            evidence: [results/count.txt]
            outs: [dossier/]
        """,
    "in.txt": "hello, reviewer\n",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A workspace whose dossier is built, plus a key pair and a bundle of the dossier."""
    root = tmp_path_factory.mktemp("signing")
    ws_root = root / "ws"
    write(ws_root, PIPELINE)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SCI_CAS", raising=False)
        Sci(ws_root).build("dossier")
        export_bundle(Workspace(ws_root), "dossier", root / "dossier.zip")
    signing.generate_key(root / "keys" / "signer.pem")
    signing.generate_key(root / "keys" / "other.pem")
    return root


@pytest.fixture
def copy(built, tmp_path) -> Path:
    """A fresh copy of the dossier directory and the bundle, safe to tamper with."""
    shutil.copytree(built / "ws" / "dossier", tmp_path / "dossier")
    shutil.copy(built / "dossier.zip", tmp_path / "dossier.zip")
    return tmp_path


def key(built: Path, name: str = "signer") -> Path:
    return built / "keys" / f"{name}.pem"


# -- keys --------------------------------------------------------------------------------------
def test_generated_key_is_private_and_has_a_public_half(built):
    private = key(built)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert private.with_name("signer.pem.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(UserError, match="already exists"):
        signing.generate_key(private)


def test_generate_key_force_replaces_the_key(tmp_path):
    first = signing.generate_key(tmp_path / "k.pem")
    second = signing.generate_key(tmp_path / "k.pem", force=True)
    assert first["key_id"] != second["key_id"]
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


def test_a_key_that_is_not_ed25519_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "ec.pem").write_bytes(pem)
    with pytest.raises(UserError, match="not an Ed25519 key"):
        signing.load_private_key(tmp_path / "ec.pem")


def test_no_key_anywhere_is_a_user_error(monkeypatch, copy):
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    with pytest.raises(UserError, match="no signing key"):
        signing.sign(copy / "dossier")


# -- dossiers ----------------------------------------------------------------------------------
def test_sign_then_verify_a_dossier(built, copy):
    sig = signing.sign(copy / "dossier", key(built))
    assert sig == copy / "dossier.SIGNATURE.json"
    doc = canonical.loads(sig.read_bytes())
    assert doc["algorithm"] == "ed25519"
    assert [r[0] for r in doc["payload"]["files"]] == ["CITATION.cff", "citation.bib", "dossier.json", "index.html",
                                                      "pipeline.sci.yaml", "ro-crate-metadata.json"]
    text = sig.read_text()
    private = key(built).read_text()
    body = "".join(private.strip().splitlines()[1:-1])
    seed = base64.b64encode(base64.b64decode(body)[-32:]).decode()  # the raw private key
    assert "PRIVATE" not in text and body not in text and seed not in text
    report = signing.verify(copy / "dossier")
    assert report["ok"] and report["kind"] == "dossier" and report["trusted"] is False
    trusted = signing.verify(copy / "dossier", public_key=key(built).with_name("signer.pem.pub"))
    assert trusted["trusted"] is True and trusted["key_id"] == doc["key_id"]


def test_a_changed_byte_after_signing_names_the_file(built, copy):
    signing.sign(copy / "dossier", key(built))
    page = copy / "dossier" / "index.html"
    data = page.read_bytes()
    page.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.raises(WorkFailed, match="index.html was altered after signing"):
        signing.verify(copy / "dossier")


def test_added_and_removed_files_are_named(built, copy):
    signing.sign(copy / "dossier", key(built))
    (copy / "dossier" / "extra.png").write_bytes(b"\x89PNG")
    (copy / "dossier" / "citation.bib").unlink()
    with pytest.raises(WorkFailed, match="extra.png was added; citation.bib was removed"):
        signing.verify(copy / "dossier")


def test_a_wrong_public_key_is_a_signature_error(built, copy):
    signing.sign(copy / "dossier", key(built))
    with pytest.raises(WorkFailed, match="signature does not match the given public key") as err:
        signing.verify(copy / "dossier", public_key=key(built, "other").with_name("other.pem.pub"))
    assert "made with key" in err.value.hint


def test_an_edited_signature_file_does_not_match(built, copy):
    sig = signing.sign(copy / "dossier", key(built))
    doc = canonical.loads(sig.read_bytes())
    doc["payload"]["files"][0][1] = "0" * 64  # make the listing agree with some other content
    sig.write_bytes(canonical.dumps(doc))
    with pytest.raises(WorkFailed, match="signature does not match"):
        signing.verify(copy / "dossier")


def test_the_key_can_come_from_the_environment_as_path_or_pem(built, copy, monkeypatch):
    monkeypatch.setenv(signing.KEY_ENV, str(key(built)))
    first = canonical.loads(signing.sign(copy / "dossier").read_bytes())
    monkeypatch.setenv(signing.KEY_ENV, key(built).read_text())
    second = canonical.loads(signing.sign(copy / "dossier").read_bytes())
    assert first["key_id"] == second["key_id"]
    assert signing.verify(copy / "dossier", public_key=first["public_key"])["trusted"]


def test_a_signature_inside_a_copied_dossier_is_found_and_not_listed(built, copy):
    signing.sign(copy / "dossier", key(built), out=copy / "dossier" / "SIGNATURE.json")
    assert signing.verify(copy / "dossier")["files"] == 6  # the dossier's own files, the signature not among them


def test_verify_without_a_signature_is_a_user_error(copy):
    with pytest.raises(UserError, match="no signature"):
        signing.verify(copy / "dossier")


def test_a_directory_that_is_not_a_dossier_is_refused(built, tmp_path):
    (tmp_path / "random").mkdir()
    with pytest.raises(UserError, match="not a dossier directory"):
        signing.sign(tmp_path / "random", key(built))


# -- bundles -----------------------------------------------------------------------------------
def rewrite(src: Path, dst: Path, change: dict[str, bytes]) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, change.get(info.filename, zin.read(info)))


def test_sign_then_verify_a_bundle(built, copy):
    sig = signing.sign(copy / "dossier.zip", key(built))
    assert sig == copy / "dossier.zip.SIGNATURE.json"
    report = signing.verify(copy / "dossier.zip", public_key=key(built))
    assert report["kind"] == "bundle" and report["trusted"]
    with zipfile.ZipFile(copy / "dossier.zip") as zf:
        assert report["files"] == len(zf.infolist())


def test_a_tampered_bundle_member_is_named_by_verify_and_import(built, copy):
    signing.sign(copy / "dossier.zip", key(built))
    bundle = copy / "dossier.zip"
    tampered = copy / "tampered.zip"
    with zipfile.ZipFile(bundle) as zf:
        data = zf.read("workspace/in.txt")
    rewrite(bundle, tampered, {"workspace/in.txt": data.replace(b"hello", b"jello")})
    shutil.copy(signing.signature_path(bundle), signing.signature_path(tampered))
    with pytest.raises(WorkFailed, match="workspace/in.txt was altered after signing"):
        signing.verify(tampered)
    with pytest.raises(WorkFailed, match="workspace/in.txt"):
        import_bundle(copy / "ws", tampered, trust=[key(built)])
    assert not (copy / "ws" / "sci.yaml").exists()


def test_an_edited_manifest_of_a_signed_bundle_is_named(built, copy):
    bundle = copy / "dossier.zip"
    signing.sign(bundle, key(built))
    with zipfile.ZipFile(bundle) as zf:
        manifest = canonical.loads(zf.read(MANIFEST))
    manifest["target"] = "something else"
    edited = copy / "edited.zip"
    rewrite(bundle, edited, {MANIFEST: canonical.dumps(manifest)})
    shutil.copy(signing.signature_path(bundle), signing.signature_path(edited))
    with pytest.raises(WorkFailed, match="MANIFEST.json was altered after signing"):
        signing.verify(edited)
    with pytest.raises(WorkFailed, match="MANIFEST.json was altered after signing"):
        import_bundle(copy / "ws", edited, trust=[key(built)])


def test_import_checks_the_signature_and_the_signer(built, copy, monkeypatch):
    monkeypatch.delenv("SCI_CAS", raising=False)
    bundle = copy / "dossier.zip"
    with pytest.raises(WorkFailed, match="not signed"):
        import_bundle(copy / "ws0", bundle, public_key=key(built))
    signing.sign(bundle, key(built))
    with pytest.raises(WorkFailed, match="signed by key .* which is not trusted"):
        import_bundle(copy / "ws1", bundle, public_key=key(built, "other"))
    assert not (copy / "ws1" / "sci.yaml").exists()
    report = import_bundle(copy / "ws2", bundle, public_key=key(built).with_name("signer.pem.pub"))
    assert report["signature"]["trusted"] is True
    built_again = Sci(copy / "ws2").build("dossier")
    assert built_again["executed"] == []


def test_a_damaged_bundle_is_not_signed(built, copy):
    bundle = copy / "dossier.zip"
    broken = copy / "broken.zip"
    rewrite(bundle, broken, {"workspace/in.txt": b"changed\n"})
    with pytest.raises(UserError, match="cannot sign.*workspace/in.txt"):
        signing.sign(broken, key(built))
    assert not signing.signature_path(broken).exists()


def test_a_file_that_is_neither_is_refused(built, tmp_path):
    (tmp_path / "notes.txt").write_text("hi\n")
    with pytest.raises(UserError, match="neither a dossier directory nor a bundle"):
        signing.sign(tmp_path / "notes.txt", key(built))
    assert os.listdir(tmp_path) == ["notes.txt"]


# -- through the CLI (once `sci sign` / `sci verify` are wired; the flags are docs/bundles.md's) --


def test_cli_sign_verify_and_exit_codes(built, copy):
    from conftest import no_traceback

    sci = Sci(copy)
    sci("sign", "dossier", "--key", str(key(built)))
    sci("verify", "dossier", "--public-key", str(key(built).with_name("signer.pem.pub")))
    proc = sci("verify", "dossier", "--public-key", str(key(built, "other")), check=1)
    assert "signature does not match" in proc.stderr and no_traceback(proc.stderr)
    (copy / "dossier" / "dossier.json").write_text("{}")
    proc = sci("verify", "dossier", check=1)
    assert "dossier.json was altered" in proc.stderr and no_traceback(proc.stderr)
    proc = sci("verify", "nothing-here", check=2)
    assert no_traceback(proc.stderr)
