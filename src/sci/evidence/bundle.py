"""Sealed bundles: one target's results, objects, pipeline, code, sources and environment in a
deterministic zip whose MANIFEST.json lists every member's BLAKE3 digest (docs/bundles.md).

Layout (BUNDLE_FORMAT 1):

    MANIFEST.json                      canonical JSON: target, closure keys, every member
    environment.json                   the environment fingerprint the results were built in
    workspace/<path>                   sci.yaml, params, config/hardware.yaml, env files,
                                       code and source deps, and the target's outputs
    store/{blobs,trees,actions}/<xx>/<name>   the CAS objects the closure's results need

Import trusts nothing in the archive: every name and header is checked before a byte is read,
every member is hashed against the manifest before anything is admitted, and every store object
is checked again against its own address (blobs and trees by digest, action results by
recomputing their key) as it enters the store.
"""

from __future__ import annotations

import os
import shutil
import stat as stat_mod
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from blake3 import blake3

from sci import canonical
from sci.errors import StoreError, UserError
from sci.evidence import signing
from sci.evidence.admit import admit, check_member_paths
# The archive format and its safe reading live in archive.py (signing needs them too); the
# names are here as well, where docs/bundles.md and callers know them.
from sci.evidence.archive import (BUNDLE_FORMAT, BUNDLE_TYPE, CHUNK, DEFAULT_LIMITS, ENVIRONMENT,  # noqa: F401
                                  MANIFEST, STORE_PREFIX, WS_PREFIX, Limits, archive_listing, check_bundle,
                                  extract_verified, manifest_listing, name_problem, open_checked, read_manifest)
from sci.store.hashing import digest_bytes, digest_file
from sci.values import Value
from sci.workspace import Workspace

# Zip's earliest timestamp: every member carries it, so bytes never depend on when or where.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_UNIX = 3  # zip "version made by" host: Unix, so external_attr holds a POSIX mode


class _Member(Value):
    """One export member: its bytes come from `source` (a file) or `data`."""

    __slots__ = _FIELDS = ("path", "digest", "size", "executable", "source", "data")

    def __init__(self, path: str, digest: str, size: int, executable: bool = False, source: Path | None = None,
                 data: bytes | None = None):
        self.path, self.digest, self.size, self.executable = path, digest, size, executable
        self.source, self.data = source, data

    def row(self) -> dict:
        return {"path": self.path, "digest": self.digest, "size": self.size, "executable": self.executable}


# -- export ------------------------------------------------------------------------------------
def export_bundle(ws: Workspace, target: str, out: Path) -> dict:
    """Seal TARGET (built and up to date) and its closure into the zip `out`; same target,
    same bytes. Raises UserError when something in the closure is not built."""
    from sci.build.status import built_closure
    from sci.plan.pipeline import environment_records
    from sci.store.hashing import StatCache
    from sci.store.cas import Store

    out = Path(out)
    with ws.lock():
        loaded, keys = built_closure(ws, target)
        graph = loaded.graph
        store = Store(ws.store_root(loaded.store_config), create=False)
        actions = {n: store.get_action(k) for n, k in keys.items()}
        selected = set(keys)
        roots = [n for n in keys if not set(graph.downstream[n]) & selected]
        env = environment_records(loaded, StatCache(ws.state_dir / "statcache"),
                                      [graph.nodes[n] for n in keys])
        members = _workspace_members(ws, loaded, actions, roots, store)
        members += _store_members(store, keys, actions)
        members.append(_data_member(ENVIRONMENT, canonical.dumps(env)))
        members.sort(key=lambda m: m.path)
        manifest = {
            "type": BUNDLE_TYPE,
            "format": BUNDLE_FORMAT,
            "sci_version": _sci_version(),
            "target": target,
            "targets": roots,
            "nodes": keys,
            "environment": env["cpu"]["digest"],
            "members": [m.row() for m in members],
        }
        data = canonical.dumps(manifest)
        _write_zip(out, [_data_member(MANIFEST, data)] + members)
    return {"bundle": str(out), "target": target, "nodes": len(keys), "members": len(members) + 1,
            "bytes": out.stat().st_size, "digest": digest_file(out), "manifest_digest": digest_bytes(data)}


def _sci_version() -> str:
    import sci

    return sci.__version__


def _data_member(path: str, data: bytes) -> _Member:
    return _Member(path, digest_bytes(data), len(data), data=data)


def _file_member(path: str, source: Path, digest: str | None = None) -> _Member:
    st = os.stat(source)
    return _Member(path, digest or digest_file(source, st.st_size), st.st_size,
                   bool(st.st_mode & 0o111), source=source)


def _expand(root: Path, rel: str) -> Iterator[str]:
    """A workspace path, or every regular file under it when it is a directory."""
    full = root / rel
    if not full.is_dir():
        yield rel
        return
    for dirpath, dirnames, filenames in os.walk(full):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file():
                yield path.relative_to(root).as_posix()


def _workspace_members(ws: Workspace, loaded, actions: dict[str, dict], roots: list[str], store) -> list[_Member]:
    """The files a fresh workspace needs to load the pipeline and rebuild the closure, plus
    the target's outputs (from the store, so a deleted or edited copy does not matter)."""
    from sci.spec.load import load_yaml

    root = ws.root
    wanted: set[str] = {"sci.yaml"}
    doc, _ = load_yaml(ws.pipeline_file, "sci.yaml")
    if isinstance(doc, dict) and isinstance(doc.get("params"), str):
        wanted.add(doc["params"])
    if (root / "config" / "hardware.yaml").is_file():
        wanted.add("config/hardware.yaml")
    from sci.envs.declared import workspace_files

    wanted.update(workspace_files(loaded.env_spec, root))
    # Every node's source deps, not only the closure's: the pipeline must load, and loading
    # checks that each declared source exists.
    for sources in loaded.graph.sources.values():
        wanted.update(s.path for s in sources if s.producer is None)
    recorded: dict[str, str] = {}
    for action in actions.values():
        recorded.update(action["components"]["code"])
    wanted.update(recorded)
    outputs: dict[str, _Member] = {}
    for name in roots:
        for rec in actions[name]["outputs"].values():
            for rel, digest, size, executable in _output_files(store, rec):
                path = WS_PREFIX + rel
                outputs[path] = _Member(path, digest, size, executable, source=store.blob_path(digest))
    members: dict[str, _Member] = {}
    for rel in sorted(wanted):
        if not (root / rel).exists():
            raise UserError(f"cannot export: {rel} is missing from the workspace",
                            hint="restore it, or run `sci build` to see what the pipeline needs")
        for f in _expand(root, rel):
            m = _file_member(WS_PREFIX + f, root / f)
            if f in recorded and recorded[f] != m.digest:
                raise UserError(f"cannot export: {f} changed since the closure was built",
                                hint="run `sci build` again, then export")
            members[m.path] = m
    members.update(outputs)
    return list(members.values())


def _output_files(store, rec: dict) -> Iterator[tuple[str, str, int, bool]]:
    if rec["type"] == "file":
        yield rec["path"], rec["digest"], rec["size"], False
        return
    for e in store.get_tree(rec["digest"]):
        yield f"{rec['path']}/{e.path}", e.digest, e.size, e.executable


def _store_members(store, keys: dict[str, str], actions: dict[str, dict]) -> list[_Member]:
    from sci.store.maintenance import needed_objects

    members: dict[str, _Member] = {}
    for node, key in keys.items():
        members[f"{STORE_PREFIX}actions/{key[:2]}/{key}"] = _data_member(
            f"{STORE_PREFIX}actions/{key[:2]}/{key}", store.action_bytes(key))
        for kind, digest in needed_objects(store, actions[node]):
            path = f"{STORE_PREFIX}{kind}s/{digest[:2]}/{digest}"
            src = store.blob_path(digest) if kind == "blob" else store.tree_path(digest)
            if not src.exists():
                raise StoreError(f"{kind} {digest[:12]} needed by {node} is missing from the store",
                                 hint=f"run `sci build {node}` to restore it")
            # The object's name is its digest; `_write_zip` checks the bytes as it copies them.
            members[path] = _Member(path, digest, src.stat().st_size, source=src)
    return list(members.values())


def _deflate_ratio(path: Path, size: int) -> float:
    """How many times zip's deflate shrinks the file (same zlib settings as zipfile)."""
    comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    total = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            total += len(comp.compress(chunk))
    total += len(comp.flush())
    return size / max(total, 1)


def _write_zip(out: Path, members: list[_Member]) -> None:
    """Write members in the given order with fixed times and modes; atomically replace `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for m in members:
                _write_member(zf, m)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_member(zf: zipfile.ZipFile, m: _Member) -> None:
    info = zipfile.ZipInfo(m.path, date_time=ZIP_EPOCH)
    info.create_system = _UNIX
    info.external_attr = (stat_mod.S_IFREG | (0o755 if m.executable else 0o644)) << 16
    info.file_size = m.size  # lets zipfile pick zip64 up front, deterministically
    info.compress_type = zipfile.ZIP_DEFLATED
    limits = DEFAULT_LIMITS
    # A member our own import would take for a bomb (e.g. a large all-zero array) is stored.
    if m.source is not None and m.size > limits.ratio_floor and _deflate_ratio(m.source, m.size) > limits.max_ratio:
        info.compress_type = zipfile.ZIP_STORED
    hasher, written = blake3(), 0
    with zf.open(info, "w") as dst:
        if m.data is not None:
            dst.write(m.data)
            hasher.update(m.data)
            written = len(m.data)
        else:
            with open(m.source, "rb") as src:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    hasher.update(chunk)
                    written += len(chunk)
    if hasher.hexdigest() != m.digest or written != m.size:
        if m.path.startswith(STORE_PREFIX):
            raise StoreError(f"store object {m.source} does not match its digest; nothing was exported",
                             hint="run `sci fsck --repair`, then `sci build`")
        raise UserError(f"{m.path[len(WS_PREFIX):]} changed while it was being exported",
                        hint="run the export again once nothing writes to the workspace")


# -- import ------------------------------------------------------------------------------------
def import_bundle(ws_dir: Path, bundle: Path, *, force: bool = False, trust: Iterable[Any] = (),
                  unsigned: bool = False, public_key: Any = None, limits: Limits = DEFAULT_LIMITS) -> dict:
    """Check, verify and unpack a bundle into the workspace `ws_dir` (created if needed) and
    admit its objects into that workspace's store. Nothing is written unless every check
    passes. The bundle must be signed by a trusted key — one of `trust` (anything
    `signing.load_public_key` reads; `public_key` is one more) or of SCI_TRUSTED_KEYS — unless
    `unsigned` (then a signature that is there is still checked). Existing files that differ
    are refused unless `force`."""
    ws_dir, bundle = Path(ws_dir).absolute(), Path(bundle)
    trusted = signing.trusted_keys([*trust, *([public_key] if public_key is not None else [])])
    if ws_dir.exists() and not ws_dir.is_dir():
        raise UserError(f"{ws_dir} is not a directory", hint="import into a new or existing workspace directory")
    zf, infos = open_checked(bundle, limits)
    with zf:
        manifest, data = read_manifest(bundle, zf, infos, limits)
        signature = signing.check_bundle_signature(bundle, manifest_listing(manifest, data), trusted,
                                                   unsigned=unsigned)
        rows = {r["path"]: r for r in manifest["members"]}
        check_member_paths(bundle, rows)
        ws_dir.mkdir(parents=True, exist_ok=True)
        ws = Workspace(ws_dir)
        with ws.lock():
            ws.state_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=ws.state_dir, prefix="import-"))
            try:
                for path, row in rows.items():
                    dest = staging / path
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    extract_verified(bundle, zf, infos[path], row, dest)
                report = admit(ws, bundle, manifest, rows, staging, force)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    report["signature"] = signature
    return report
