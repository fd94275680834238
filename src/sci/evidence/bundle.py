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
import re
import shutil
import stat as stat_mod
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from blake3 import blake3

from sci import canonical
from sci.errors import StoreError, UserError, WorkFailed
from sci.store.hashing import digest_bytes, digest_file, entries_from_document
from sci.workspace import RESERVED, Workspace, owns

# Bump when the layout or a MANIFEST field changes; import refuses any other format, and
# docs/bundles.md describes each one.
BUNDLE_FORMAT = 1
BUNDLE_TYPE = "sci.bundle"
MANIFEST = "MANIFEST.json"
ENVIRONMENT = "environment.json"
WS_PREFIX = "workspace/"
STORE_PREFIX = "store/"
# Zip's earliest timestamp: every member carries it, so bytes never depend on when or where.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_UNIX = 3  # zip "version made by" host: Unix, so external_attr holds a POSIX mode
_CHUNK = 1024 * 1024
_STORE_NAME = re.compile(r"^store/(blobs|trees|actions)/([0-9a-f]{2})/([0-9a-f]{64})$")
_NEVER_WRITTEN = (".git", *RESERVED)  # and the store's directory, once it is known (_admit)


@dataclass(frozen=True)
class Limits:
    """What import accepts. A member counts as a bomb when it inflates more than `max_ratio`
    times and to more than `ratio_floor` bytes (small members may compress well harmlessly)."""

    max_total: int = 4 * 1024**3
    max_ratio: int = 100
    ratio_floor: int = 1024**2
    max_members: int = 500_000
    max_manifest: int = 64 * 1024**2


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class _Member:
    """One export member: its bytes come from `source` (a file) or `data`."""

    path: str
    digest: str
    size: int
    executable: bool = False
    source: Path | None = None
    data: bytes | None = None

    def row(self) -> dict:
        return {"path": self.path, "digest": self.digest, "size": self.size, "executable": self.executable}


# -- export ------------------------------------------------------------------------------------
def export_bundle(ws: Workspace, target: str, out: Path) -> dict:
    """Seal TARGET (built and up to date) and its closure into the zip `out`; same target,
    same bytes. Raises UserError when something in the closure is not built."""
    from sci import api
    from sci.store.hashing import StatCache
    from sci.store.cas import Store

    out = Path(out)
    with ws.lock():
        loaded = api.load(ws)
        graph = loaded.graph
        statuses = api.status(ws, [target])
        for st in statuses:
            if st.state not in ("up to date", "restore"):
                why = "; ".join(st.reasons) or (f"waits on {', '.join(st.waits_on)}" if st.waits_on else st.state)
                raise UserError(f"cannot export {target}: {st.node} is not built ({why})",
                                hint=f"run `sci build {target}` first")
        store = Store(ws.store_root(loaded.store_config), create=False)
        keys = {st.node: st.key for st in statuses}
        actions = {n: store.get_action(k) for n, k in keys.items()}
        selected = set(keys)
        roots = [n for n in keys if not set(graph.downstream[n]) & selected]
        env = api.environment_records(loaded, StatCache(ws.state_dir / "statcache"),
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
    wanted.update(loaded.env_spec.get("files") or [])
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
        while chunk := fh.read(_CHUNK):
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
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
                    hasher.update(chunk)
                    written += len(chunk)
    if hasher.hexdigest() != m.digest or written != m.size:
        if m.path.startswith(STORE_PREFIX):
            raise StoreError(f"store object {m.source} does not match its digest; nothing was exported",
                             hint="run `sci fsck --repair`, then `sci build`")
        raise UserError(f"{m.path[len(WS_PREFIX):]} changed while it was being exported",
                        hint="run the export again once nothing writes to the workspace")


# -- reading safely ----------------------------------------------------------------------------
def name_problem(name: str) -> str | None:
    """Why a member name is unsafe to extract, or None. Names are relative POSIX paths."""
    if not name:
        return "empty name"
    if "\x00" in name or "\\" in name:
        return "NUL or backslash in the name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "'..' in the path (zip-slip)"
    if any(p in ("", ".") for p in parts):
        return "empty or '.' path component"
    return None


def open_checked(bundle: Path, limits: Limits = DEFAULT_LIMITS) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """Open a zip and check every header before anything is read: names, links, duplicates,
    encryption, methods, overlapping members, sizes and compression ratios (UserError)."""
    try:
        zf = zipfile.ZipFile(bundle)
    except (OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"{bundle}: not a readable zip archive ({exc})", hint="pass a bundle made by `sci export`") from None
    try:
        return zf, _check_headers(bundle, zf.infolist(), limits)
    except BaseException:
        zf.close()
        raise


def _check_headers(bundle: Path, infos: list[zipfile.ZipInfo], limits: Limits) -> dict[str, zipfile.ZipInfo]:
    def bad(name: str, why: str) -> UserError:
        return UserError(f"{bundle}: unsafe member {name!r}: {why}", hint="this archive is refused; nothing was written")

    if len(infos) > limits.max_members:
        raise UserError(f"{bundle}: {len(infos)} members, over the limit of {limits.max_members}")
    by_name: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        for name in {info.filename, info.orig_filename}:
            problem = name_problem(name)
            if problem:
                raise bad(name, problem)
        mode = info.external_attr >> 16
        if stat_mod.S_ISLNK(mode):
            raise bad(info.filename, "symbolic link")
        if info.is_dir() or stat_mod.S_IFMT(mode) not in (0, stat_mod.S_IFREG):  # 0: no type given
            raise bad(info.filename, "not a regular file")
        if info.filename in by_name:
            raise bad(info.filename, "duplicate name")
        if info.flag_bits & 0x1:
            raise bad(info.filename, "encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise bad(info.filename, f"compression method {info.compress_type} (only stored or deflated)")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_floor and ratio > limits.max_ratio:
            raise bad(info.filename, f"inflates {ratio:.0f}:1, over the limit {limits.max_ratio}:1 (zip bomb)")
        total += info.file_size
        if total > limits.max_total:
            raise UserError(f"{bundle}: members add up to more than {limits.max_total} bytes uncompressed",
                            hint="this archive is refused (zip bomb?); nothing was written")
        by_name[info.filename] = info
    # Members whose data overlap are how non-recursive zip bombs reuse one stream many times.
    spans = sorted((i.header_offset, i.header_offset + 30 + _name_len(i) + i.compress_size, i.filename) for i in infos)
    for (_, end, name), (start, _, nxt) in pairwise(spans):
        if start < end:
            raise bad(nxt, f"its data overlaps {name!r} (zip bomb)")
    return by_name


def _name_len(info: zipfile.ZipInfo) -> int:
    """Bytes of the name in the local header (a lower bound on where the member's data starts)."""
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    try:
        return len(info.orig_filename.encode(encoding))
    except UnicodeEncodeError:
        return len(info.orig_filename.encode("utf-8"))


def read_manifest(bundle: Path, zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo],
                  limits: Limits = DEFAULT_LIMITS) -> tuple[dict, bytes]:
    """The validated manifest and its bytes; every zip member must be listed (UserError)."""
    info = infos.get(MANIFEST)
    if info is None:
        raise UserError(f"{bundle}: no {MANIFEST}", hint="pass a bundle made by `sci export`")
    if info.file_size > limits.max_manifest:
        raise UserError(f"{bundle}: {MANIFEST} is larger than {limits.max_manifest} bytes")
    data = _read_member(bundle, zf, info)
    try:
        manifest = canonical.loads(data)
        rows = manifest["members"]
        nodes = manifest.get("nodes")
        ok = (manifest.get("type") == BUNDLE_TYPE and isinstance(rows, list) and isinstance(nodes, dict)
              and all(isinstance(k, str) and re.fullmatch(r"[0-9a-f]{64}", str(v)) for k, v in nodes.items())
              and isinstance(manifest.get("target"), str))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise WorkFailed(f"{bundle}: {MANIFEST} is damaged or not a sci bundle manifest",
                         hint="export the bundle again")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise UserError(f"{bundle}: bundle format {manifest.get('format')!r}, this sci reads {BUNDLE_FORMAT}",
                        hint="import it with the sci version that exported it")
    listed: set[str] = set()
    for row in rows:
        if not (isinstance(row, dict) and isinstance(row.get("path"), str) and isinstance(row.get("digest"), str)
                and isinstance(row.get("size"), int)):
            raise WorkFailed(f"{bundle}: {MANIFEST} has a malformed member entry: {row!r}")
        problem = name_problem(row["path"])
        if problem or row["path"] in listed or row["path"] == MANIFEST:
            raise UserError(f"{bundle}: {MANIFEST} lists an unsafe member {row['path']!r}: {problem or 'duplicate'}")
        listed.add(row["path"])
    extra = sorted(set(infos) - listed - {MANIFEST})
    if extra:
        raise UserError(f"{bundle}: member {extra[0]!r} is not in {MANIFEST} (added after export?)",
                        hint="this archive is refused; nothing was written")
    missing = sorted(listed - set(infos))
    if missing:
        raise WorkFailed(f"{bundle}: member {missing[0]!r} listed in {MANIFEST} is missing from the archive")
    return manifest, data


def _read_member(bundle: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise WorkFailed(f"{bundle}: member {info.filename!r} is damaged ({exc})") from None


def _extract_verified(bundle: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, row: dict, dest: Path | None) -> None:
    """Stream one member (to `dest`, or nowhere) and check its size and digest (WorkFailed)."""
    hasher, size = blake3(), 0
    try:
        with zf.open(info) as src, open(dest if dest is not None else os.devnull, "wb") as fh:
            while chunk := src.read(_CHUNK):
                size += len(chunk)
                if size > row["size"]:
                    break
                hasher.update(chunk)
                fh.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise WorkFailed(f"{bundle}: member {info.filename!r} is damaged ({exc})") from None
    if size != row["size"] or hasher.hexdigest() != row["digest"]:
        raise WorkFailed(f"{bundle}: member {info.filename!r} does not match its digest in {MANIFEST}",
                         hint="the bundle was altered or damaged after export; nothing was imported")


def check_bundle(bundle: Path, *, limits: Limits = DEFAULT_LIMITS) -> dict:
    """Verify every member of a bundle against its manifest without writing anything."""
    bundle = Path(bundle)
    zf, infos = open_checked(bundle, limits)
    with zf:
        manifest, data = read_manifest(bundle, zf, infos, limits)
        for row in manifest["members"]:
            _extract_verified(bundle, zf, infos[row["path"]], row, None)
    return {"bundle": str(bundle), "target": manifest["target"], "members": len(manifest["members"]) + 1,
            "manifest_digest": digest_bytes(data)}


def archive_listing(bundle: Path, *, limits: Limits = DEFAULT_LIMITS) -> list[list]:
    """[path, digest, size] of every member as it is in the archive (headers checked first)."""
    zf, infos = open_checked(Path(bundle), limits)
    rows = []
    with zf:
        for name, info in sorted(infos.items()):
            hasher, size = blake3(), 0
            try:
                with zf.open(info) as src:
                    while chunk := src.read(_CHUNK):
                        hasher.update(chunk)
                        size += len(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise WorkFailed(f"{bundle}: member {name!r} is damaged ({exc})") from None
            rows.append([name, hasher.hexdigest(), size])
    return rows


def manifest_listing(manifest: dict, data: bytes) -> list[list]:
    """[path, digest, size] of every member, MANIFEST.json included: what a signature covers."""
    rows = [[r["path"], r["digest"], r["size"]] for r in manifest["members"]]
    rows.append([MANIFEST, digest_bytes(data), len(data)])
    return sorted(rows)


# -- import ------------------------------------------------------------------------------------
def import_bundle(ws_dir: Path, bundle: Path, *, force: bool = False, public_key: Any = None,
                  limits: Limits = DEFAULT_LIMITS) -> dict:
    """Check, verify and unpack a bundle into the workspace `ws_dir` (created if needed) and
    admit its objects into that workspace's store. Nothing is written unless every check
    passes. A signature next to the bundle (or a `public_key`, which makes one required) is
    verified first. Existing files that differ are refused unless `force`."""
    from sci.evidence import signing

    ws_dir, bundle = Path(ws_dir).absolute(), Path(bundle)
    if ws_dir.exists() and not ws_dir.is_dir():
        raise UserError(f"{ws_dir} is not a directory", hint="import into a new or existing workspace directory")
    zf, infos = open_checked(bundle, limits)
    with zf:
        manifest, data = read_manifest(bundle, zf, infos, limits)
        signature = signing.check_bundle_signature(bundle, manifest_listing(manifest, data), public_key)
        rows = {r["path"]: r for r in manifest["members"]}
        for path in rows:
            if path == ENVIRONMENT:
                continue
            if path.startswith(WS_PREFIX):
                top = owns(path[len(WS_PREFIX):], _NEVER_WRITTEN)
                if top is not None:
                    raise UserError(f"{bundle}: member {path!r} would write into {top}/, which sci owns")
            elif not _STORE_NAME.match(path) or path.split("/")[2] != path.split("/")[3][:2]:
                raise UserError(f"{bundle}: member {path!r} is neither a workspace file nor a store object")
        ws_dir.mkdir(parents=True, exist_ok=True)
        ws = Workspace(ws_dir)
        with ws.lock():
            ws.state_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=ws.state_dir, prefix="import-"))
            try:
                for path, row in rows.items():
                    dest = staging / path
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    _extract_verified(bundle, zf, infos[path], row, dest)
                report = _admit(ws, bundle, manifest, rows, staging, force)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    report["signature"] = signature
    return report


def _admit(ws: Workspace, bundle: Path, manifest: dict, rows: dict[str, dict], staging: Path, force: bool) -> dict:
    from sci.store.cas import Store

    objects, actions = _check_objects(bundle, manifest, rows, staging)
    staged_ws = staging / WS_PREFIX.rstrip("/")
    store_root = _store_root_for(ws, staged_ws)
    reserved = (".git", *ws.owned(str(store_root)))
    files = sorted(p[len(WS_PREFIX):] for p in rows if p.startswith(WS_PREFIX))
    written, unchanged, conflicts = [], 0, []
    for rel in files:
        if owns(rel, reserved):
            raise UserError(f"{bundle}: member workspace/{rel} would write into the store")
        state = _existing(ws.root, rel, rows[WS_PREFIX + rel]["digest"])
        if state == "same":
            unchanged += 1
        else:
            written.append(rel)
            if state == "differs":
                conflicts.append(rel)
    if conflicts and not force:
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise UserError(f"{ws.root}: {', '.join(conflicts[:3])}{more} already exist with other content",
                        hint="import into an empty directory, or pass --force to overwrite them")
    store = Store(store_root)
    admitted = present = 0
    # Blobs and trees first, action results last: a result never precedes its objects.
    for kind in ("blobs", "trees", "actions"):
        for name, staged in objects[kind]:
            if _admit_object(store, kind, name, staged, bundle):
                admitted += 1
            else:
                present += 1
    for rel in written:
        _place(staged_ws / rel, ws.root / rel, rows[WS_PREFIX + rel].get("executable") is True)
    # The bundle's results become this workspace's last results, as after a build: `status`
    # then explains any difference (e.g. another environment) and `repro-check` has a record.
    from sci.records import run as records

    state = records.state_of(ws)
    for node, key in sorted(manifest["nodes"].items()):
        state.put(node, key, actions[key]["outputs"])
    state.save()
    return {"workspace": str(ws.root), "store": str(store.root), "target": manifest["target"],
            "nodes": len(manifest["nodes"]), "files_written": written, "files_unchanged": unchanged,
            "objects_admitted": admitted, "objects_present": present,
            "environment_drift": _drift(ws, staging / ENVIRONMENT)}


def _drift(ws: Workspace, recorded: Path) -> list[str]:
    """How this machine's environment differs from the one the results were built in: any
    difference changes every key, so `sci build` would run the closure again."""
    from sci import api
    from sci.build import fingerprint
    from sci.store.hashing import StatCache

    try:
        old = canonical.loads(recorded.read_bytes())["cpu"]["components"]
    except (OSError, ValueError, KeyError, TypeError):
        return ["environment.json is missing or unreadable"]
    now = api.environment_records(api.load(ws), StatCache(ws.state_dir / "statcache"), [])
    return fingerprint.diff(old, now["cpu"]["components"])


def _check_objects(bundle: Path, manifest: dict, rows: dict[str, dict], staging: Path) -> tuple[dict, dict]:
    """Every staged store object matches its own address, and the bundle is complete: each
    closure node has its action result and every object that result needs (WorkFailed)."""
    from sci.build import keys as keys_mod
    from sci.store.maintenance import needed_objects

    objects: dict[str, list[tuple[str, Path]]] = {"blobs": [], "trees": [], "actions": []}
    trees: dict[str, list] = {}
    actions: dict[str, dict] = {}
    for path in sorted(rows):
        m = _STORE_NAME.match(path)
        if not m:
            continue
        kind, name, staged = m.group(1), m.group(3), staging / path
        data = staged.read_bytes() if kind != "blobs" else None
        problem = None
        if kind == "blobs" and rows[path]["digest"] != name:
            problem = "its content does not match its name"
        elif kind == "trees":
            try:
                trees[name] = entries_from_document(canonical.loads(data))
                problem = None if digest_bytes(data) == name else "its content does not match its name"
            except (ValueError, KeyError, TypeError):
                problem = "not a tree listing"
        elif kind == "actions":
            try:
                doc = canonical.loads(data)
                if canonical.dumps(doc) != data or doc.get("key") != name:
                    problem = "it does not name its own key"
                elif keys_mod.key_of(doc["components"]) != name:
                    problem = "its key does not match its components"
                actions[name] = doc
            except (ValueError, KeyError, TypeError, AttributeError):
                problem = "not an action result"
        if problem:
            raise WorkFailed(f"{bundle}: member {path!r} is not a valid store object: {problem}")
        objects[kind].append((name, staged))
    have = {("blob", n) for n, _ in objects["blobs"]} | {("tree", n) for n in trees}
    view = _TreeView(trees)
    for node, key in sorted(manifest["nodes"].items()):
        if key not in actions:
            raise WorkFailed(f"{bundle}: the action result of {node} ({key[:12]}) is missing")
        for need in needed_objects(view, actions[key]):
            if need not in have:
                raise WorkFailed(f"{bundle}: {need[0]} {need[1][:12]} needed by {node} is missing")
    return objects, actions


class _TreeView:
    """The two Store methods `needed_objects` calls, answered from staged tree listings."""

    def __init__(self, trees: dict[str, list]):
        self._trees = trees

    def has_tree(self, digest: str) -> bool:
        return digest in self._trees

    def get_tree(self, digest: str) -> list:
        return self._trees[digest]


def _store_root_for(ws: Workspace, staged_ws: Path) -> Path:
    """The store the imported pipeline will use; a `store:` outside the workspace is refused
    unless the user chose one with SCI_CAS (a bundle must not pick where we write)."""
    from sci import api

    loaded = api.load(Workspace(staged_ws))  # validates sci.yaml before any file is written
    root = ws.store_root(loaded.store_config)
    if loaded.store_config and not os.environ.get("SCI_CAS"):
        try:
            root.resolve().relative_to(ws.root.resolve())
        except ValueError:
            raise UserError(f"the bundle's sci.yaml puts the store outside the workspace ({loaded.store_config})",
                            hint="set SCI_CAS to the store you want, then import again") from None
    return root


def _existing(root: Path, rel: str, digest: str) -> str:
    """'new', 'same' or 'differs' for the workspace path `rel`; never follows a symlinked dir."""
    cur = root
    parts = rel.split("/")
    for part in parts[:-1]:
        cur = cur / part
        if cur.is_symlink():
            raise UserError(f"{root}: {cur.relative_to(root)} is a symbolic link; refusing to write through it")
        if cur.exists() and not cur.is_dir():
            raise UserError(f"{root}: {cur.relative_to(root)} is a file, but the bundle puts {rel} inside it")
    dest = root / rel
    if dest.is_symlink():
        return "differs"
    if dest.is_dir():
        raise UserError(f"{root}: {rel} is a directory, but the bundle holds a file there",
                        hint="move it away, then import again")
    if not dest.exists():
        return "new"
    return "same" if digest_file(dest) == digest else "differs"


def _admit_object(store, kind: str, name: str, staged: Path, bundle: Path) -> bool:
    """Put one verified object into the store (atomic writes); False if it was already there."""
    if kind == "blobs":
        if store.has_blob(name):
            return False
        if digest_file(staged) != name:  # checked again at the door: the staging dir is ours,
            raise WorkFailed(f"{bundle}: blob {name[:12]} changed while it was being imported")  # but disks lie
        store.put_file(staged, name, move=True)
        return True
    data = staged.read_bytes()
    if kind == "trees":
        if store.has_tree(name):
            return False
        if store.put_tree(entries_from_document(canonical.loads(data))) != name:
            raise WorkFailed(f"{bundle}: tree {name[:12]} does not match its digest")
        return True
    if store.has_action(name):
        return False
    store.put_action(name, canonical.loads(data))
    return True


def _place(staged: Path, dest: Path, executable: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.sci-import-{os.getpid()}")
    shutil.copyfile(staged, tmp)
    os.chmod(tmp, 0o755 if executable else 0o644)
    os.replace(tmp, dest)
