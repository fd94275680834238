"""Reading a bundle zip without trusting it: member names and headers checked before a byte is
read, the manifest validated, every member streamed against its manifest digest. What both
`bundle` (export and import) and `signing` (what a bundle's signature covers) need, in one
place. docs/bundles.md describes the format; BUNDLE_FORMAT is its version.
"""

from __future__ import annotations

import os
import re
import stat as stat_mod
import zipfile
import zlib
from itertools import pairwise
from pathlib import Path

from blake3 import blake3

from sci import canonical
from sci.errors import UserError, WorkFailed
from sci.store.hashing import digest_bytes
from sci.values import Value

# Bump when the layout or a MANIFEST field changes; import refuses any other format, and
# docs/bundles.md describes each one.
BUNDLE_FORMAT = 1
BUNDLE_TYPE = "sci.bundle"
MANIFEST = "MANIFEST.json"
ENVIRONMENT = "environment.json"
WS_PREFIX = "workspace/"
STORE_PREFIX = "store/"
CHUNK = 1024 * 1024


class Limits(Value):
    """What import accepts. A member counts as a bomb when it inflates more than `max_ratio`
    times and to more than `ratio_floor` bytes (small members may compress well harmlessly)."""

    __slots__ = _FIELDS = ("max_total", "max_ratio", "ratio_floor", "max_members", "max_manifest")

    def __init__(self, max_total: int = 4 * 1024**3, max_ratio: int = 100, ratio_floor: int = 1024**2,
                 max_members: int = 500_000, max_manifest: int = 64 * 1024**2):
        self.max_total, self.max_ratio, self.ratio_floor = max_total, max_ratio, ratio_floor
        self.max_members, self.max_manifest = max_members, max_manifest


DEFAULT_LIMITS = Limits()


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
    if canonical.dumps(manifest) != data:  # sci writes one byte encoding; any other was made elsewhere
        raise WorkFailed(f"{bundle}: {MANIFEST} is not canonical JSON (it was edited after export)",
                         hint="export the bundle again")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise UserError(f"{bundle}: bundle format {manifest.get('format')!r}, this sci reads {BUNDLE_FORMAT}",
                        hint="import it with the sci version that exported it")
    listed: set[str] = set()
    for row in rows:
        if not (isinstance(row, dict) and isinstance(row.get("path"), str) and isinstance(row.get("digest"), str)
                and isinstance(row.get("size"), int)):
            raise WorkFailed(f"{bundle}: {MANIFEST} has a malformed member entry: {repr(row)[:80]}")
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


def extract_verified(bundle: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, row: dict, dest: Path | None) -> None:
    """Stream one member (to `dest`, or nowhere) and check its size and digest (WorkFailed)."""
    hasher, size = blake3(), 0
    try:
        with zf.open(info) as src, open(dest if dest is not None else os.devnull, "wb") as fh:
            while chunk := src.read(CHUNK):
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
            extract_verified(bundle, zf, infos[row["path"]], row, None)
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
                    while chunk := src.read(CHUNK):
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
