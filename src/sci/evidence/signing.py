"""Ed25519 signatures over a dossier directory or a bundle: keys, SIGNATURE.json, verification.

What is signed is a canonical payload listing every file's path, BLAKE3 digest and size (for a
bundle: every member, MANIFEST.json included), so `verify` can name the file that changed and
the signature covers every byte. The signature is detached: it lives next to what it signs,
as `<name>.SIGNATURE.json` — inside a dossier directory the next `sci build` would restore the
directory from the store and drop it, and inside a zip it would change the signed bytes.
A signature file holds the public key and never anything secret. Private keys come from a
path or SCI_SIGNING_KEY (a path or PEM text), never from records. See docs/bundles.md.
"""

from __future__ import annotations

import base64
import os
import stat as stat_mod
import zipfile
from pathlib import Path
from typing import Any

from sci import canonical
from sci.errors import UserError, WorkFailed
from sci.evidence import archive
from sci.store.hashing import digest_bytes, digest_file

# Bump when the payload or the SIGNATURE.json fields change; verify refuses other formats.
SIGNATURE_FORMAT = 1
SIGNATURE_TYPE = "sci.signature"
PAYLOAD_TYPE = "sci.signed"
ALGORITHM = "ed25519"
SUFFIX = ".SIGNATURE.json"
INNER_NAME = "SIGNATURE.json"  # accepted inside a dossier directory that was copied elsewhere
KEY_ENV = "SCI_SIGNING_KEY"
TRUST_ENV = "SCI_TRUSTED_KEYS"  # ':'-separated key files (or keys) whose bundles `sci import` admits
_PEM = "-----BEGIN"
_MAX_KEY_FILE = 64 * 1024  # a key file is a few hundred bytes; never read a large or endless one


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise UserError("signing needs the `cryptography` package", hint="pip install 'sci[sign]'") from None
    return serialization, ed25519


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def key_id(raw_public: bytes) -> str:
    """A short name for a public key: the first 16 hex digits of its BLAKE3."""
    return digest_bytes(raw_public)[:16]


def _raw_public(public) -> bytes:
    serialization, _ = _crypto()
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# -- keys --------------------------------------------------------------------------------------
def generate_key(path: Path, *, force: bool = False) -> dict:
    """Write a new Ed25519 private key (PEM, mode 0600) to `path` and its public key to
    `path.pub`. Refuses to overwrite an existing key unless `force`."""
    serialization, ed25519 = _crypto()
    path = Path(path)
    pub_path = path.with_name(path.name + ".pub")
    if path.exists() and not force:
        raise UserError(f"{path} already exists", hint="choose another path, or pass --force to replace the key")
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    # O_EXCL + 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
    finally:
        os.close(fd)
    public = private.public_key()
    pub_path.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo))
    raw = _raw_public(public)
    return {"key": str(path), "public_key_file": str(pub_path), "public_key": _b64(raw), "key_id": key_id(raw)}


def load_private_key(key: Any = None):
    """An Ed25519 private key from a key object, a path, PEM text, or (when `key` is None)
    SCI_SIGNING_KEY holding a path or PEM text. A key's text is never part of an error: from
    the environment, not even the path is shown (it is a secret's value, SPEC §7)."""
    serialization, ed25519 = _crypto()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    where = "the key"
    if key is None:
        key = os.environ.get(KEY_ENV)
        where = KEY_ENV
        if not key:
            raise UserError("no signing key given", hint=f"pass --key PATH or set {KEY_ENV} to a key path or PEM text")
    if isinstance(key, (bytes, bytearray)):
        pem = bytes(key)
    elif isinstance(key, str) and key.lstrip().startswith(_PEM):
        pem = key.encode()
    else:
        shown = f"the key file named by {KEY_ENV}" if where == KEY_ENV else f"the key file {os.fspath(key)}"
        pem = _read_key_file(key, shown)
        where = shown if where == KEY_ENV else os.fspath(key)
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise UserError(f"{where} is encrypted; sci reads unencrypted keys only",
                        hint="keep the key file private (mode 0600) instead of encrypting it") from None
    except (ValueError, UnicodeError):
        raise UserError(f"{where} is not a PEM private key",
                        hint="create one with `sci sign --generate-key PATH`") from None
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise UserError(f"{where} is not an Ed25519 key", hint="create one with `sci sign --generate-key PATH`")
    return private


def _read_key_file(path: Any, shown: str) -> bytes:
    """The bytes of a key file: a regular file of at most _MAX_KEY_FILE bytes (UserError)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError, TypeError) as exc:
        why = getattr(exc, "strerror", None) or "not a file name"
        raise UserError(f"cannot read {shown}: {why}", hint="create one with `sci sign --generate-key PATH`") from None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode) or st.st_size > _MAX_KEY_FILE:
            raise UserError(f"{shown} is not a key file (not a regular file of at most {_MAX_KEY_FILE} bytes)")
        return os.read(fd, _MAX_KEY_FILE + 1)
    finally:
        os.close(fd)


def load_public_key(value: Any, *, what: str = "public key"):
    """An Ed25519 public key from a key object, raw bytes, PEM text (a public or a private
    key), base64 of the raw 32-byte key, or the path of a file holding any of those. Anything
    else is one UserError naming `what` and saying which forms are read."""
    _, ed25519 = _crypto()
    if isinstance(value, ed25519.Ed25519PublicKey):
        return value
    if isinstance(value, ed25519.Ed25519PrivateKey):
        return value.public_key()
    if isinstance(value, (bytes, bytearray)) and len(value) == 32:
        return ed25519.Ed25519PublicKey.from_public_bytes(bytes(value))  # the raw key
    if isinstance(value, (bytes, bytearray)):
        key = _public_from_bytes(bytes(value), what)
        if key is None:
            raise UserError(f"the {what} given is not an Ed25519 key", hint=_KEY_FORMS)
        return key
    if not isinstance(value, (str, os.PathLike)):
        raise UserError(f"the {what} given is not a key ({type(value).__name__})", hint=_KEY_FORMS)
    text = os.fspath(value)
    if not text.lstrip().startswith(_PEM) and os.path.lexists(text):
        key = _public_from_bytes(_read_key_file(text, f"the {what} file {text}"), f"{what} file {text}")
        if key is None:
            raise UserError(f"the {what} file {text} holds no Ed25519 key", hint=_KEY_FORMS)
        return key
    key = _public_from_bytes(text.encode("utf-8", "replace"), what)
    if key is None:
        if "/" in text or text.endswith((".pub", ".pem")):
            raise UserError(f"the {what} file {text} does not exist", hint=_KEY_FORMS)
        raise UserError(f"{what} {text[:60]!r} is neither a key file nor a key", hint=_KEY_FORMS)
    return key


_KEY_FORMS = ("give a PEM public key file (the .pub that `sci sign --generate-key` writes), "
              "a PEM private key, or base64 of a raw Ed25519 key")


def _public_from_bytes(data: bytes, what: str):
    """A public key from PEM (public or private) or base64 text; None if it is neither.
    UserError if it is a key of another kind (RSA, say) or an encrypted one."""
    serialization, ed25519 = _crypto()
    text = data.strip()
    if text.startswith(_PEM.encode()):
        key = None
        try:
            key = serialization.load_pem_public_key(text)
        except (ValueError, UnicodeError):
            try:
                key = serialization.load_pem_private_key(text, password=None)
            except TypeError:
                raise UserError(f"the {what} is an encrypted private key", hint=_KEY_FORMS) from None
            except (ValueError, UnicodeError):
                return None
            key = key.public_key()
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise UserError(f"the {what} is not an Ed25519 key", hint=_KEY_FORMS)
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    if len(raw) != 32:
        return None
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


def trusted_keys(given: Any = (), *, environment: bool = True) -> list:
    """The public keys whose signatures `sci import` admits: each of `given` (`--trust`), and
    each entry of SCI_TRUSTED_KEYS (':'-separated), in any form `load_public_key` reads."""
    keys = [load_public_key(g, what="trusted key") for g in given]
    if environment:
        for item in os.environ.get(TRUST_ENV, "").split(":"):
            if item.strip():
                keys.append(load_public_key(item.strip(), what=f"key in {TRUST_ENV}"))
    return keys


# -- what is signed ----------------------------------------------------------------------------
def signature_path(target: Path) -> Path:
    """Where the detached signature of `target` lives: `<target>.SIGNATURE.json` beside it."""
    target = Path(target)
    return target.with_name(target.name + SUFFIX)


def _kind(target: Path) -> str:
    if target.is_dir():
        if not (target / "dossier.json").is_file():
            raise UserError(f"{target} is not a dossier directory (no dossier.json)",
                            hint="sign a dossier directory or a bundle made by `sci export`")
        return "dossier"
    if target.is_file() and zipfile.is_zipfile(target):
        return "bundle"
    raise UserError(f"{target} is neither a dossier directory nor a bundle",
                    hint="sign a dossier directory or a bundle made by `sci export`")


def _dossier_listing(root: Path) -> list[list]:
    """[path, digest, size] of every file under a dossier directory (a top-level
    SIGNATURE.json excepted); a symlink makes the listing fail (WorkFailed)."""
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            st = os.lstat(full)
            if stat_mod.S_ISLNK(st.st_mode):
                raise WorkFailed(f"{root}: {rel} is a symbolic link", hint="a signed dossier holds regular files only")
            if stat_mod.S_ISREG(st.st_mode) and rel != INNER_NAME:
                rows.append([rel, digest_file(full, st.st_size), st.st_size])
    return sorted(rows)


def _listing(target: Path, kind: str, *, signing: bool) -> list[list]:
    if kind == "dossier":
        return _dossier_listing(target)
    if signing:  # never sign a damaged bundle: every member must match its manifest
        archive.check_bundle(target)
        zf, infos = archive.open_checked(target)
        with zf:
            manifest, data = archive.read_manifest(target, zf, infos)
        return archive.manifest_listing(manifest, data)
    return archive.archive_listing(target)


def _payload(kind: str, rows: list[list]) -> dict:
    return {"type": PAYLOAD_TYPE, "format": SIGNATURE_FORMAT, "kind": kind, "files": rows}


# -- sign and verify ---------------------------------------------------------------------------
def sign(target_path: Path, key: Any = None, *, out: Path | None = None) -> Path:
    """Sign a dossier directory or a bundle; returns the SIGNATURE.json path written."""
    target = Path(target_path)
    kind = _kind(target)
    try:
        rows = _listing(target, kind, signing=True)
    except WorkFailed as exc:
        raise UserError(f"cannot sign: {exc.message}", hint=exc.hint) from None
    private = load_private_key(key)
    payload = _payload(kind, rows)
    raw = _raw_public(private.public_key())
    doc = {
        "type": SIGNATURE_TYPE,
        "format": SIGNATURE_FORMAT,
        "algorithm": ALGORITHM,
        "public_key": _b64(raw),
        "key_id": key_id(raw),
        "payload": payload,
        "signature": _b64(private.sign(canonical.dumps(payload))),
    }
    path = Path(out) if out is not None else signature_path(target)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(canonical.dumps(doc) + b"\n")
    os.replace(tmp, path)
    return path


def _find_signature(target: Path, signature: Path | None) -> Path:
    if signature is not None:
        candidates = [Path(signature)]
    else:
        candidates = [signature_path(target)] + ([target / INNER_NAME] if target.is_dir() else [])
    for c in candidates:
        if c.is_file():
            return c
    raise UserError(f"no signature for {target} (looked for {candidates[0]})",
                    hint=f"sign it with `sci sign {target}`, or pass the signature file")


def _read_signature(path: Path) -> dict:
    try:
        doc = canonical.loads(path.read_bytes().strip())
        ok = (isinstance(doc, dict) and doc.get("type") == SIGNATURE_TYPE and isinstance(doc.get("payload"), dict)
              and isinstance(doc["payload"].get("files"), list) and isinstance(doc.get("signature"), str)
              and isinstance(doc.get("public_key"), str))
    except (OSError, ValueError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise WorkFailed(f"{path} is damaged or not a sci signature")
    if doc.get("format") != SIGNATURE_FORMAT or doc.get("algorithm") != ALGORITHM:
        raise WorkFailed(f"{path}: unsupported signature format {doc.get('format')!r} / {doc.get('algorithm')!r}",
                         hint=f"sci verifies format {SIGNATURE_FORMAT} {ALGORITHM} signatures")
    return doc


def _check_signature(sig_path: Path, doc: dict, public_key: Any) -> dict:
    """Check the signature over the payload, with the given key or else the embedded one."""
    from cryptography.exceptions import InvalidSignature

    _, ed25519 = _crypto()
    try:
        embedded = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(doc["public_key"], validate=True))
        signature = base64.b64decode(doc["signature"], validate=True)
    except ValueError:
        raise WorkFailed(f"{sig_path} is damaged (bad base64 key or signature)") from None
    key = load_public_key(public_key) if public_key is not None else embedded
    raw = _raw_public(key)
    try:
        key.verify(signature, canonical.dumps(doc["payload"]))
    except InvalidSignature:
        other = _raw_public(embedded)
        hint = (f"it was made with key {key_id(other)}, not {key_id(raw)}" if other != raw
                else "the signature file was edited, or signed by another key")
        raise WorkFailed(f"{sig_path}: signature does not match"
                         + (" the given public key" if public_key is not None else ""), hint=hint) from None
    return {"signature": str(sig_path), "key_id": key_id(raw), "public_key": _b64(raw),
            "trusted": public_key is not None}


def compare(target: Path, signed: list[list], actual: list[list]) -> None:
    """Raise WorkFailed naming what changed between the signed and the actual listing."""
    was = {r[0]: (r[1], r[2]) for r in signed}
    now = {r[0]: (r[1], r[2]) for r in actual}
    changes = ([f"{p} was altered" for p in sorted(was.keys() & now.keys()) if was[p] != now[p]]
               + [f"{p} was added" for p in sorted(now.keys() - was.keys())]
               + [f"{p} was removed" for p in sorted(was.keys() - now.keys())])
    if changes:
        more = f" (and {len(changes) - 3} more changes)" if len(changes) > 3 else ""
        raise WorkFailed(f"{target}: {'; '.join(changes[:3])} after signing{more}",
                         hint="the signed content was changed; obtain an unaltered copy")


def verify(path: Path, public_key: Any = None, *, signature: Path | None = None) -> dict:
    """Check the signature and every file's digest; WorkFailed names what was altered (a file,
    or "signature does not match"). Without `public_key` the key embedded in the signature is
    used, which proves integrity but not who signed (`trusted` is False then)."""
    target = Path(path)
    kind = _kind(target)
    sig_path = _find_signature(target, signature)
    doc = _read_signature(sig_path)
    report = _check_signature(sig_path, doc, public_key)
    if doc["payload"].get("kind") != kind:
        raise WorkFailed(f"{sig_path} signs a {doc['payload'].get('kind')}, but {target} is a {kind}")
    compare(target, doc["payload"]["files"], _listing(target, kind, signing=False))
    return {"path": str(target), "kind": kind, "files": len(doc["payload"]["files"]), "ok": True, **report}


def check_bundle_signature(bundle: Path, listing: list[list], trusted: list, *, unsigned: bool = False) -> dict | None:
    """For import: the bundle's detached signature must be by one of the `trusted` keys and
    match its manifest listing (WorkFailed otherwise). With `unsigned`, a bundle without a
    signature is let through (None), and a signature by another key is still checked for
    integrity (`trusted` false in the report)."""
    sig_path = signature_path(Path(bundle))
    if not sig_path.is_file():
        if unsigned:
            return None
        raise WorkFailed(f"{bundle} is not signed; sci imports bundles signed by a trusted key",
                         hint=f"get its signature ({sig_path.name}) and the signer's public key (--trust), "
                              "or pass --unsigned to import it without knowing who made it")
    doc = _read_signature(sig_path)
    try:
        raw = base64.b64decode(doc["public_key"], validate=True)
    except ValueError:
        raise WorkFailed(f"{sig_path} is damaged (bad base64 key)") from None
    match = next((k for k in trusted if _raw_public(k) == raw), None)
    if match is None and not unsigned:
        ids = ", ".join(key_id(_raw_public(k)) for k in trusted)
        raise WorkFailed(f"{bundle} is signed by key {key_id(raw)}, which is not trusted"
                         + (f" (trusted: {ids})" if ids else " (no key is trusted)"),
                         hint=f"pass --trust with the signer's public key, or list it in {TRUST_ENV}, "
                              "once you know the key is theirs")
    report = _check_signature(sig_path, doc, match)
    if doc["payload"].get("kind") != "bundle":
        raise WorkFailed(f"{sig_path} does not sign a bundle")
    compare(Path(bundle), doc["payload"]["files"], listing)
    return report
