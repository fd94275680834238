"""How a recorded output and its rebuild differ: the drill-down of `sci repro-check`.

For every file that differs: both digests and sizes, the first differing byte (and, for
text, the line and column it is on and that line on both sides), a short unified diff of
the differing region, or for binary data a hex window around it. For directories: which
entries were added, removed or changed, each changed one explained like a file. With
`--diffoscope`, diffoscope's own report of each differing file is stored beside repro.json.
Everything is bounded (lines, characters, files), so a 1 GiB output explains itself in a
few lines and a few reads of 64 KiB, never by loading it whole.

The files are read from the two stores (the workspace's and the scratch rebuild's), never
from the workspace, whose copies a user may have edited.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from sci.errors import SciError
from sci.store.cas import Store

CHUNK = 1 << 16  # bytes compared at a time when looking for the first difference
TEXT_LIMIT = 1 << 20  # a file larger than this gets no unified diff, only the differing lines
DIFF_LINES = 24  # lines of unified diff kept per file
LINE_CHARS = 240  # characters kept of any one line shown
HEX_WINDOW = 16  # bytes shown on each side of a binary difference
MAX_ENTRIES = 50  # directory entries listed per output (the rest are counted)
DIFFOSCOPE_FILES = 20  # files given to diffoscope per check
DIFFOSCOPE_TIMEOUT = 300


def _clip(line: str) -> str:
    return line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + "…"


def _blob(store: Store, digest: str) -> Path | None:
    path = store.blob_path(digest)
    return path if path.is_file() else None


def first_difference(a: Path, b: Path) -> int | None:
    """Offset of the first byte where the files differ (the shorter one's length when one is
    a prefix of the other); None when they are equal. Reads both in 64 KiB chunks."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        offset = 0
        while True:
            ca, cb = fa.read(CHUNK), fb.read(CHUNK)
            if ca != cb:
                n = min(len(ca), len(cb))
                i = next((i for i in range(n) if ca[i] != cb[i]), n)
                return offset + i
            if not ca:
                return None
            offset += len(ca)


def _is_text(data: bytes) -> bool:
    """Whether a window of a file reads as UTF-8 text (its edges may cut a character)."""
    if b"\0" in data:
        return False
    i = 0
    while i < 3 and i < len(data) and 0x80 <= data[i] <= 0xBF:  # the tail of a character cut at the start
        i += 1
    data = data[i:]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the window's edge is still text
        return exc.start >= len(data) - 3 and exc.reason == "unexpected end of data"
    return True


def _line_at(path: Path, offset: int) -> tuple[int, int, str]:
    """(line number, column, the line's text) of byte `offset`, counted from 1; reads the file
    up to the offset's line only."""
    line_no, line_start, pos = 1, 0, 0
    with open(path, "rb") as fh:
        while pos <= offset:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            upto = min(len(chunk), offset - pos)
            count = chunk.count(b"\n", 0, upto)
            if count:
                line_no += count
                line_start = pos + chunk.rindex(b"\n", 0, upto) + 1
            pos += len(chunk)
        fh.seek(line_start)
        raw = fh.read(LINE_CHARS * 4 + 1)
    text = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    column = len((raw[:offset - line_start]).decode("utf-8", errors="replace")) + 1
    return line_no, column, _clip(text)


def _hex_window(path: Path, offset: int) -> str:
    start = max(0, offset - HEX_WINDOW)
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(2 * HEX_WINDOW)
    return data.hex(" ")


def _unified(a: Path, b: Path) -> list[str]:
    """A unified diff of two small text files, cut to DIFF_LINES lines of LINE_CHARS each."""
    old = a.read_bytes().decode("utf-8", errors="replace").splitlines()
    new = b.read_bytes().decode("utf-8", errors="replace").splitlines()
    diff = [_clip(line) for line in difflib.unified_diff(old, new, "recorded", "rebuilt", lineterm="", n=1)]
    return diff[:DIFF_LINES] + ([f"… {len(diff) - DIFF_LINES} more diff lines"] if len(diff) > DIFF_LINES else [])


def describe_file(path: str, old_store: Store, old_digest: str, new_store: Store, new_digest: str) -> dict:
    """The drill-down of one differing file (see the module docstring)."""
    info: dict[str, Any] = {"path": path, "recorded": old_digest, "rebuilt": new_digest}
    a, b = _blob(old_store, old_digest), _blob(new_store, new_digest)
    if a is None or b is None:
        info["detail"] = "recorded bytes unavailable in the store" if a is None else "rebuilt bytes unavailable"
        return info
    info["recorded_size"], info["rebuilt_size"] = a.stat().st_size, b.stat().st_size
    offset = first_difference(a, b)
    info["first_difference"] = offset
    if offset is None:  # equal bytes under different digests: the store itself is damaged
        info["detail"] = "equal bytes, different digests: run `sci fsck`"
        return info
    with open(a, "rb") as fa, open(b, "rb") as fb:
        fa.seek(max(0, offset - CHUNK // 2))
        fb.seek(max(0, offset - CHUNK // 2))
        text = _is_text(fa.read(CHUNK)) and _is_text(fb.read(CHUNK))
    info["kind"] = "text" if text else "binary"
    if text:
        line, column, old_line = _line_at(a, offset)
        _, _, new_line = _line_at(b, offset)
        info.update(line=line, column=column, recorded_line=old_line, rebuilt_line=new_line)
        if info["recorded_size"] <= TEXT_LIMIT and info["rebuilt_size"] <= TEXT_LIMIT:
            info["diff"] = _unified(a, b)
    else:
        info["recorded_bytes"], info["rebuilt_bytes"] = _hex_window(a, offset), _hex_window(b, offset)
        info["window_start"] = max(0, offset - HEX_WINDOW)
    return info


def _entries(store: Store, digest: str) -> dict | None:
    try:
        return {e.path: e for e in store.get_tree(digest)}
    except SciError:
        return None


def compare_outputs(old_store: Store, new_store: Store, old: dict[str, dict], new: dict[str, dict]) -> list[dict]:
    """Every difference between a node's recorded outputs (`old`) and its rebuilt ones, by output."""
    diffs: list[dict] = []
    for name in sorted(set(old) | set(new)):
        o, n = old.get(name), new.get(name)
        if o is None or n is None:
            diffs.append({"path": (o or n)["path"], "detail": "rebuilt only" if o is None else "not rebuilt"})
            continue
        if o["digest"] == n["digest"]:
            continue
        if o["type"] != n["type"]:
            diffs.append({"path": o["path"], "recorded": o["digest"], "rebuilt": n["digest"],
                          "detail": f"was a {o['type']}, rebuilt as a {n['type']}"})
        elif o["type"] == "file":
            diffs.append(describe_file(o["path"], old_store, o["digest"], new_store, n["digest"]))
        else:
            diffs.append(describe_tree(o["path"], old_store, o["digest"], new_store, n["digest"]))
    return diffs


def describe_tree(path: str, old_store: Store, old_digest: str, new_store: Store, new_digest: str) -> dict:
    """A directory output: which entries were added, removed or changed; the changed ones explained."""
    info: dict[str, Any] = {"path": path, "kind": "directory", "recorded": old_digest, "rebuilt": new_digest}
    oe, ne = _entries(old_store, old_digest), _entries(new_store, new_digest)
    if oe is None or ne is None:
        info["detail"] = "recorded listing unavailable in the store" if oe is None else "rebuilt listing unavailable"
        return info
    added = sorted(set(ne) - set(oe))
    removed = sorted(set(oe) - set(ne))
    changed = sorted(p for p in set(oe) & set(ne) if oe[p].digest != ne[p].digest)
    mode = sorted(p for p in set(oe) & set(ne) if oe[p].digest == ne[p].digest
                  and oe[p].executable != ne[p].executable)
    info["added"], info["removed"] = added[:MAX_ENTRIES], removed[:MAX_ENTRIES]
    info["mode_changed"] = mode[:MAX_ENTRIES]
    info["changed"] = [describe_file(f"{path}/{p}", old_store, oe[p].digest, new_store, ne[p].digest)
                       for p in changed[:MAX_ENTRIES]]
    info["counts"] = {"added": len(added), "removed": len(removed), "changed": len(changed), "mode_changed": len(mode)}
    return info


def files_of(diffs: list[dict]) -> list[dict]:
    """The differing files among `diffs`, directory entries included (for diffoscope)."""
    out = []
    for d in diffs:
        if d.get("kind") == "directory":
            out.extend(c for c in d.get("changed", []) if "first_difference" in c)
        elif "first_difference" in d:
            out.append(d)
    return out


def diffoscope_available() -> str | None:
    return shutil.which("diffoscope")


def run_diffoscope(files: list[dict], old_store: Store, new_store: Store, out_dir: Path, rel_to: Path) -> str | None:
    """diffoscope's text report of each differing file, under `out_dir`; each file's dict gets
    `diffoscope` (the report's path relative to `rel_to`). Returns why it could not run, or None."""
    exe = diffoscope_available()
    if exe is None:
        return "diffoscope is not installed (Debian: apt-get install diffoscope-minimal)"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / ".inputs"
    try:
        for i, f in enumerate(files[:DIFFOSCOPE_FILES], 1):
            a, b = _blob(old_store, f["recorded"]), _blob(new_store, f["rebuilt"])
            if a is None or b is None:
                continue
            name = os.path.basename(f["path"]) or "output"
            pair = work / str(i)
            for side, src in (("recorded", a), ("rebuilt", b)):
                (pair / side).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, pair / side / name)  # diffoscope reads the name's suffix
            report = out_dir / f"{i:02d}-{name}.txt"
            try:
                proc = subprocess.run([exe, "--no-progress", "--text", str(report), str(pair / "recorded" / name),
                                       str(pair / "rebuilt" / name)], capture_output=True, text=True,
                                      timeout=DIFFOSCOPE_TIMEOUT, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                f["diffoscope_error"] = f"timed out after {DIFFOSCOPE_TIMEOUT}s"
                continue
            if proc.returncode == 2 or not report.exists():
                f["diffoscope_error"] = (proc.stderr.strip().splitlines() or ["failed"])[-1][:LINE_CHARS]
                continue
            f["diffoscope"] = report.relative_to(rel_to).as_posix()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return None


def summary_lines(f: dict, indent: str = "      ") -> list[str]:
    """A differing file (or directory) as a few terminal lines a reviewer can read."""
    out = [f"{indent}{f['path']}"]
    if f.get("kind") == "directory":
        c = f.get("counts", {})
        out[0] += (f": directory: {c.get('changed', 0)} changed, {c.get('added', 0)} only in the rebuild, "
                   f"{c.get('removed', 0)} only in the record")
        for p in f.get("added", []):
            out.append(f"{indent}  + {p} (only in the rebuild)")
        for p in f.get("removed", []):
            out.append(f"{indent}  - {p} (only in the record)")
        for p in f.get("mode_changed", []):
            out.append(f"{indent}  ~ {p} (executable bit changed)")
        for c2 in f.get("changed", []):
            out.extend(summary_lines(c2, indent + "  "))
        return out
    if "first_difference" in f and f["first_difference"] is not None:
        out[0] += (f": {f['recorded'][:12]} ({f['recorded_size']} B) → {f['rebuilt'][:12]} ({f['rebuilt_size']} B), "
                   f"first difference at byte {f['first_difference']}")
        if f.get("kind") == "text":
            out[0] += f" (line {f['line']}, column {f['column']})"
            out.append(f"{indent}  recorded: {f['recorded_line']}")
            out.append(f"{indent}  rebuilt:  {f['rebuilt_line']}")
        elif f.get("kind") == "binary":
            out.append(f"{indent}  recorded bytes from {f['window_start']}: {f['recorded_bytes']}")
            out.append(f"{indent}  rebuilt bytes from {f['window_start']}:  {f['rebuilt_bytes']}")
    elif "detail" in f:
        out[0] += f": {f['detail']}"
    for d in f.get("diff", []):
        out.append(f"{indent}  | {d}")
    if f.get("diffoscope"):
        out.append(f"{indent}  diffoscope report: {f['diffoscope']}")
    elif f.get("diffoscope_error"):
        out.append(f"{indent}  diffoscope: {f['diffoscope_error']}")
    return out
