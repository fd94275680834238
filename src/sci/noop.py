"""The no-op fast path: prove from file stats alone that a build would run nothing.

After a build in which every selected node succeeded, sci writes `.sci/noop` (marshal): the
plan key (sci.yaml, params, hardware, overrides, store), the environment fingerprint's
digests, the stat signature of every file the nodes read or wrote (sources, code, outputs;
files inside directories included), the glob matches over workspace files, and the manifest
that run would give as a no-op. The next build with the same request first checks that
record: same plan key and targets, same environment digest, every signature unchanged, every
action result still in the store. Then every key is provably the same as last time, and the
build writes its records without loading the plan or hashing anything. Any doubt falls back to
the normal path, which rewrites the record. Signatures come from the stat cache, so they are
exactly what was seen when the files were hashed; a file too fresh to be trusted there
("racily clean") has none, and the fast path waits for the next build.
"""

from __future__ import annotations

import glob as glob_mod
import marshal
import os
from pathlib import Path
from typing import Any

NOOP_FILE = "noop"
NOOP_FORMAT = "sci-noop-1"


def _sig(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def record(state_dir: Path, *, plan_key: str, targets: list[str], env_digests: dict[str, str],
           env_spec: dict, paths: list[str], stat_entries: dict, globs: dict[str, list[str]],
           manifest: dict, action_paths: list[str]) -> bool:
    """Write the record; False (and no record) when some path has no trusted signature."""
    sigs: dict[str, tuple] = {}
    wanted_dirs = []
    for p in paths:
        hit = stat_entries.get(p)
        if hit is not None:
            sigs[p] = hit[0]
        else:
            wanted_dirs.append(p.rstrip("/") + "/")
    if wanted_dirs:  # directories: their files, as the stat cache saw them when hashing
        prefixes = tuple(wanted_dirs)
        found = {d: False for d in wanted_dirs}
        for key, (sig, _digest) in stat_entries.items():
            if key.startswith(prefixes):
                sigs[key] = sig
                for d in wanted_dirs:
                    if key.startswith(d):
                        found[d] = True
        if not all(found.values()):
            discard(state_dir)
            return False
    doc = {"format": NOOP_FORMAT, "plan": plan_key, "targets": list(targets), "env": env_digests,
           "env_spec": env_spec, "sigs": sigs, "globs": globs, "manifest": manifest,
           "actions": action_paths}
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f"{NOOP_FILE}.{os.getpid()}.tmp"
    tmp.write_bytes(marshal.dumps(doc))
    os.replace(tmp, state_dir / NOOP_FILE)
    return True


def discard(state_dir: Path) -> None:
    try:
        os.unlink(state_dir / NOOP_FILE)
    except FileNotFoundError:
        pass


def check(state_dir: Path, root: Path, *, plan_key: str, targets: list[str]) -> dict | None:
    """The recorded document if nothing that could change a key has changed, else None.

    The caller still compares the environment digests (they need the fingerprint)."""
    try:
        doc: dict[str, Any] = marshal.loads((state_dir / NOOP_FILE).read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if doc.get("format") != NOOP_FORMAT or doc["plan"] != plan_key or doc["targets"] != list(targets):
        return None
    prefix = str(root) + os.sep
    for path, sig in doc["sigs"].items():
        if _sig(prefix + path) != sig:
            return None
    for pattern, matches in doc["globs"].items():
        found = sorted(m for m in glob_mod.glob(pattern, root_dir=root, recursive=True)
                       if m.split("/", 1)[0] not in (".sci", "runs"))
        if found != matches:
            return None
    for action in doc["actions"]:
        if not os.path.exists(action):
            return None
    return doc
