"""The environment fingerprint (SPEC §5): what outside the workspace can change a step's bytes.

Every component is recorded separately so `diff` can name what changed ("packages.numpy:
1.26.4 → 2.0.0") and `sci status` can say why a node would re-run. Components:

    python          "3.11.7": the version of the interpreter a step's `python3` is — the first
                    python3 on the step's PATH (the caller's PATH as given, SPEC §10), which is
                    not necessarily the one running sci; "none" when there is no python3
    implementation  "cpython" (sys.implementation.name of that interpreter)
    os              "Linux" (platform.system) — the kernel release is left out on purpose:
                    it changes with every security update, differs between CI runners that
                    share a cache, and almost never changes a step's output bytes
    libc            "glibc 2.36" (the C library that does change float formatting, locale,
                    math functions); on macOS "macOS 14.4", elsewhere ""
    machine         "x86_64" (platform.machine)
    sci             sci.__version__
    files           env.files: workspace path → BLAKE3 digest
    packages        installed version of every package a lock among env.files (uv.lock,
                    poetry.lock, pylock*.toml, *requirements*.txt) installs without its dev
                    group (envs/locks.py: for uv.lock the closure of the project's own
                    dependencies, so a dev tool changes nothing), as the step's python3 sees
                    it; "not-installed" for a locked package it does not have
    vars            env.vars: name → value (None when unset); a secret-looking name
                    (`is_secret_name`) is recorded only as {"secret": true, "set": bool}
    tools           env.tools: name → {"digest": BLAKE3 of the executable the step runs
                    (resolved on the step's PATH),
                    "version": first line of `NAME --version`} (the path is left out: where
                    a tool is installed differs between hosts, what it is does not)
    gpu             added by the caller for GPU steps only: `gpu_components()`

Speed: this runs on every `sci build` and `sci status`. The warm path spawns no process and
parses no lock: tool versions are cached in `cache_dir` by the executable's digest, the
package names of a lock by the lock's digest, and installed versions are read from the
`*.dist-info` directory names in one scandir per sys.path entry (not by opening every
METADATA file as importlib.metadata does).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

from sci import canonical
from sci.errors import UserError
from sci.redact import SECRET_MARKERS, env_value, is_secret_name  # noqa: F401 - sci.redact decides what is secret
from sci.store.hashing import RACY_WINDOW_NS, StatCache, digest_bytes

# Bump when a component's meaning or encoding changes: the digest of every environment
# changes with it, so every cache key does too (sci.KEY_FORMAT need not move as well).
FINGERPRINT_FORMAT = 2  # 2: python/packages/tools of the step's PATH; a lock's packages are its closure
FINGERPRINT_TAG = "sci.env"
# Bump when the layout or content of the files under cache_dir/<CACHE_SUBDIR> changes.
CACHE_SUBDIR = "fingerprint-v2"
NOT_INSTALLED = "not-installed"
VERSION_TIMEOUT_S = 20.0

_MAPPING_COMPONENTS = ("files", "packages", "vars", "tools", "gpu", "environment")

# Per-process memos in front of the on-disk caches (sci status then build in one process, tests).
_lock_names_memo: dict[tuple[str, str], list[str]] = {}
_tool_version_memo: dict[str, str] = {}
_installed_memo: dict[tuple, dict[str, str]] = {}


def clear_memos() -> None:
    """Forget this process's memos (lock names, tool versions, installed versions); the
    on-disk cache in cache_dir is untouched. For long-lived processes and tests."""
    _lock_names_memo.clear()
    _tool_version_memo.clear()
    _installed_memo.clear()
    _interpreter_memo.clear()



# -- built-in components ---------------------------------------------------------------------
@cache
def _platform_components() -> dict[str, str]:
    """What `platform` answers, asked of the C library and the kernel directly where they answer:
    `import platform` compiles a dozen patterns (~3 ms of every build's start); it is imported
    only where they do not (a C library other than glibc, macOS)."""
    uname = os.uname()
    system, libc = uname.sysname, _glibc()
    if libc is None:
        import platform

        lib, lib_version = platform.libc_ver()
        if lib:
            libc = f"{lib} {lib_version}".strip()
        elif system == "Darwin":
            libc = f"macOS {platform.mac_ver()[0]}".strip()
        else:
            libc = ""
    return {
        "python": python_version(),
        "implementation": sys.implementation.name,
        "os": system,
        "libc": libc,
        "machine": uname.machine,
    }


def _glibc() -> str | None:
    """The C library's name and version ("glibc 2.36") as platform.libc_ver() gives them (it
    asks the same confstr first); None when the C library does not say."""
    try:
        parts = (os.confstr("CS_GNU_LIBC_VERSION") or "").split(maxsplit=1)
    except (AttributeError, ValueError, OSError):
        return None
    return " ".join(parts) if len(parts) == 2 else None


def python_version() -> str:
    """This interpreter's version as platform.python_version() gives it: the first word of
    sys.version ("3.11.7", "3.14.0a1+"), never two components."""
    version = sys.version.split(maxsplit=1)[0]
    return version + ".0" if version.count(".") == 1 else version


_PROBE = ("import json, platform, sys; print(json.dumps([platform.python_version(), "
          "sys.implementation.name, sys.path]))")
NO_PYTHON = "none"
_interpreter_memo: dict[tuple, tuple[str, str, list[str]]] = {}
_pending_probes: dict[str, Any] = {}  # executable -> its probe, started early (Popen), not yet collected


def step_path() -> str:
    """The PATH a step in the workspace's default environment gets: the caller's, as given."""
    return os.environ.get("PATH", os.defpath)


def find_python(path: str) -> str | None:
    """The first `python3` (then `python`) on `path`: what `python3` in a step runs."""
    return shutil.which("python3", path=path) or shutil.which("python", path=path)


def interpreter(path: str, stat_cache: StatCache, cache_dir: Path | None,
                workspace: Path | None = None) -> tuple[str, str, list[str]]:
    """(version, implementation, sys.path) of the python3 a step on `path` runs (probe_python);
    ("none", "none", []) when there is none."""
    exe = find_python(path)
    if exe is None:
        return NO_PYTHON, NO_PYTHON, []
    return probe_python(exe, stat_cache, cache_dir, workspace)


def probe_python(exe: str, stat_cache: StatCache, cache_dir: Path | None,
                 workspace: Path | None = None) -> tuple[str, str, list[str]]:
    """(version, implementation, sys.path) of the interpreter `exe`.

    The interpreter running sci answers for itself when it is `exe` (the usual `uv run sci …`);
    another one is asked once — `python3 -E -s -c …`, as a step starts it: no PYTHON* variables,
    no user site (a step's HOME is its box) — and the answer is cached under the executable's
    digest, its path (a venv's site-packages follow from where its `python` link lives) and its
    venv's pyvenv.cfg. Given the `workspace`, it is asked where that workspace's sandboxed steps
    run (its scratch directory, outside it): a shim that picks an interpreter by directory (pyenv
    and a `.python-version`) answers as it will for them. A probe `prefetch_interpreter` started
    earlier is collected, not repeated."""
    own = _own_answer(exe)
    if own is not None:
        return own
    key, entry = _probe_key(exe, stat_cache, cache_dir)
    hit = _interpreter_memo.get(key)
    if hit is not None:
        return hit
    found = _cached_answer(entry)
    if found is None:
        pending = _pending_probes.pop(exe, None)
        found = _collect_probe(pending if pending is not None else _start_probe(exe, workspace), exe)
        if entry:
            _write_json(entry, list(found))
    _interpreter_memo[key] = found
    return found


def prefetch_interpreter(stat_cache: StatCache, cache_dir: Path | None, workspace: Path | None = None,
                         path: str | None = None) -> None:
    """Start asking the step's python3 for its identity now, when no cache knows it, so that
    the answer comes while the build reads its plan: a pyenv shim takes ~0.1 s to answer,
    once per fresh workspace. `probe_python` collects it; `drop_prefetched` ends any left."""
    exe = find_python(step_path() if path is None else path)
    if exe is None or exe in _pending_probes or _own_answer(exe) is not None:
        return
    try:
        key, entry = _probe_key(exe, stat_cache, cache_dir)
    except OSError:  # probe_python words it, when the build gets there
        return
    if key in _interpreter_memo:
        return
    found = _cached_answer(entry)
    if found is not None:
        _interpreter_memo[key] = found
    else:
        _pending_probes[exe] = _start_probe(exe, workspace)


def ask_interpreter_early(cache_dir: Path, workspace: Path) -> None:
    """In a workspace whose cache holds no interpreter's answer yet (its first build), start the
    probe of the step's python3 before anything else — it runs beside sci's own start-up and
    planning, on another core. Elsewhere the cached answer is found when the build starts
    (prefetch_interpreter). The probe is collected by probe_python like any other."""
    if os.path.isdir(cache_dir / CACHE_SUBDIR / "interpreters"):
        return
    exe = find_python(step_path())
    if exe is not None and exe not in _pending_probes and _own_answer(exe) is None:
        _pending_probes[exe] = _start_probe(exe, workspace)


def probing() -> bool:
    """Whether a probe prefetch_interpreter started is still to be collected."""
    return bool(_pending_probes)


def drop_prefetched() -> None:
    """End the probes started and never collected (a build that failed before its keys)."""
    while _pending_probes:
        _key, proc = _pending_probes.popitem()
        if proc is not None:
            proc.kill()
            proc.communicate()


def _own_answer(exe: str) -> tuple[str, str, list[str]] | None:
    here = os.path.realpath(sys.executable)
    if os.path.realpath(exe) == here and os.path.dirname(os.path.dirname(os.path.abspath(exe))) == sys.prefix:
        cwd = os.getcwd()  # sys.path[0] of `python -m sci`: where sci was started, not a step's
        return python_version(), sys.implementation.name, [p for p in sys.path if p and p != cwd]
    return None


def _probe_key(exe: str, stat_cache: StatCache, cache_dir: Path | None) -> tuple[tuple, Path | None]:
    """The memo key of `exe`'s answer and its cache file: the executable's path and digest, and
    its venv's pyvenv.cfg."""
    real = os.path.realpath(exe)
    digest = stat_cache.file_digest(real, real)
    cfg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(exe))), "pyvenv.cfg")
    try:
        cfg_digest = stat_cache.file_digest(cfg, cfg)
    except OSError:
        cfg_digest = None
    key = (exe, digest, cfg_digest)
    # -2: asked from the scratch directory, where sandboxed steps run (answers asked elsewhere go)
    cache_key = digest_bytes(canonical.dumps(["sci.interpreter-2", *key]))
    return key, (cache_dir / CACHE_SUBDIR / "interpreters" / f"{cache_key}.json" if cache_dir else None)


def _cached_answer(entry: Path | None) -> tuple[str, str, list[str]] | None:
    cached = _read_json(entry) if entry else None
    if isinstance(cached, list) and len(cached) == 3:
        return cached[0], cached[1], list(cached[2])
    return None


def _start_probe(exe: str, workspace: Path | None = None):
    """The probe, running (a Popen), or None when `exe` cannot be started. With the `workspace`,
    it runs in that workspace's scratch directory, where its sandboxed steps' boxes are."""
    import subprocess  # only on a cache miss

    cwd = None
    if workspace is not None:
        from sci.workspace import Workspace

        cwd = Workspace(workspace).scratch_dir
        try:
            cwd.mkdir(parents=True, exist_ok=True)
        except OSError:  # no scratch directory yet and none can be made: the build will say so
            cwd = None
    try:
        return subprocess.Popen([exe, "-E", "-s", "-c", _PROBE], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=cwd,
                                env={"PATH": os.pathsep.join([os.path.dirname(exe), step_path()]), "LC_ALL": "C"})
    except OSError:
        return None


def _collect_probe(proc, exe: str) -> tuple[str, str, list[str]]:
    import subprocess

    if proc is not None:
        try:
            out, _err = proc.communicate(timeout=VERSION_TIMEOUT_S)
            version, impl, paths = canonical.loads(out.strip().splitlines()[-1])
            return str(version), str(impl), [str(p) for p in paths if p]
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        except (OSError, ValueError, IndexError, TypeError):
            pass
    return f"<{exe} did not answer>", "unknown", []


def _sci_version() -> str:
    from sci import __version__

    return __version__


# -- files -----------------------------------------------------------------------------------
def _file_digests(root: Path, files: list[str], stat_cache: StatCache) -> dict[str, str]:
    out = {}
    for rel in files:
        path = root / rel
        try:
            st = os.stat(path)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):  # /dev/zero would never end
                raise UserError(f"env.files: {rel} is not a regular file or directory",
                                hint="list lock files and other regular files under env.files")
            out[rel] = stat_cache.path_digest(path, rel)
        except FileNotFoundError:
            raise UserError(f"env.files: {rel} does not exist in the workspace {root}",
                            hint="create it, or remove it from env.files in sci.yaml") from None
        except OSError as exc:
            raise UserError(f"env.files: cannot read {rel}: {exc.strerror or exc}") from None
    return out


# -- packages --------------------------------------------------------------------------------
# What a lock contributes is the packages an environment synced from it installs (envs/locks.py).
CACHE_FORMAT = "sci-fingerprint-cache-1"


def _read_json(path: Path) -> Any:
    """A cache entry, checksummed like every .sci/ file (store/journal.py): a missing, damaged or
    foreign entry only costs recomputing it, never a wrong answer."""
    from sci.store import journal

    return journal.read_value(path, CACHE_FORMAT)


def _write_json(path: Path, value: Any) -> None:
    """Atomic: concurrent sci processes may write the same entry; each write is whole. A
    read-only cache_dir fails nothing (the cache is an accelerator)."""
    from sci.store import journal

    journal.write_value(path, CACHE_FORMAT, value)


def _lock_names(kind: str, path: Path, digest: str, cache_dir: Path | None) -> list[str]:
    memo_key = (kind, digest)
    names = _lock_names_memo.get(memo_key)
    if names is not None:
        return names
    entry = cache_dir / CACHE_SUBDIR / "locks" / f"{kind}-{digest}.json" if cache_dir else None
    cached = _read_json(entry) if entry else None
    if isinstance(cached, dict) and isinstance(cached.get("names"), list):
        names = cached["names"]
    else:
        from sci.envs import locks

        names = locks.parse_lock_names(kind, path.read_bytes())
        if entry:
            _write_json(entry, {"kind": kind, "digest": digest, "names": names})
    _lock_names_memo[memo_key] = names
    return names


def _dist_name_version(entry: str) -> tuple[str, str | None] | None:
    """(normalized name, version or None) from a `*.dist-info` / `*.egg-info` entry name."""
    if entry.endswith(".dist-info"):
        stem = entry[: -len(".dist-info")]
    elif entry.endswith(".egg-info"):
        stem = entry[: -len(".egg-info")]
    else:
        return None
    # Wheel rule: the name part has "-" escaped to "_", so the first "-" ends the name.
    from sci.envs.locks import normalize_name

    name, sep, rest = stem.partition("-")
    if not sep:
        return normalize_name(name), None  # "foo.egg-info" of a develop install: no version
    version = rest.split("-", 1)[0] if entry.endswith(".egg-info") else rest
    return normalize_name(name), version


def installed_versions(cache_dir: Path | None = None, paths: list[str] | None = None) -> dict[str, str]:
    """normalized name → version of every distribution visible on `paths` (default: sys.path).

    The first entry holding a distribution wins, as with importlib.metadata. The result is
    cached (in the process, and in `cache_dir` when given) under the signature of the
    directories — path, mtime, inode — which changes whenever a `*.dist-info` directory is
    added, removed or renamed (an install, uninstall or upgrade).
    """
    dirs = []
    now = time.time_ns()
    racy = False
    for entry in (sys.path if paths is None else paths):
        try:
            st = os.stat(entry or ".")
        except OSError:
            continue
        dirs.append((entry or ".", st.st_mtime_ns, st.st_ino))
        # Changed within the timestamp tick: it may change again unseen, so do not persist.
        racy = racy or now - st.st_mtime_ns < RACY_WINDOW_NS
    signature = tuple(dirs)
    hit = _installed_memo.get(signature)
    if hit is not None:
        return hit
    name = "installed.json" if paths is None else \
        f"installed-{digest_bytes(canonical.dumps(sorted(set(d[0] for d in dirs))))[:16]}.json"
    entry_path = cache_dir / CACHE_SUBDIR / name if cache_dir else None
    cached = _read_json(entry_path) if entry_path else None
    if (isinstance(cached, dict) and cached.get("signature") == [list(d) for d in dirs]
            and isinstance(cached.get("versions"), dict)):
        _installed_memo[signature] = cached["versions"]
        return cached["versions"]
    found = _scan_installed(dirs)
    if entry_path and not racy:
        _write_json(entry_path, {"signature": [list(d) for d in dirs], "versions": found})
    _installed_memo[signature] = found
    return found


def _scan_installed(dirs: list[tuple[str, int, int]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for directory, _, _ in dirs:
        try:
            with os.scandir(directory) as it:
                names = sorted(e.name for e in it)  # sorted: a fixed winner among duplicates
        except (NotADirectoryError, PermissionError, FileNotFoundError):
            continue
        for entry in names:
            parsed = _dist_name_version(entry)
            if parsed is None or parsed[0] in found:
                continue
            name, version = parsed
            if version is None:
                version = _metadata_version(os.path.join(directory, entry))
            if version is not None:
                found[name] = version
    return found


def _metadata_version(info_dir: str) -> str | None:
    """Version of an egg-info/dist-info directory whose name does not carry it (rare)."""
    from importlib.metadata import PathDistribution

    try:
        return PathDistribution(Path(info_dir)).version
    except Exception:  # noqa: BLE001 - a broken dist-info is "not installed", not a crash
        return None


def _packages(root: Path, file_digests: dict[str, str], cache_dir: Path | None,
              site: list[str] | None) -> dict[str, str]:
    if not file_digests:
        return {}  # no env file, so no lock: the lock module is not even imported
    from sci.envs.locks import lock_kind

    locked: set[str] = set()
    for rel, digest in file_digests.items():
        kind = lock_kind(rel)
        path = root / rel
        if kind is not None and path.is_file():
            locked.update(_lock_names(kind, path, digest, cache_dir))
    if not locked:
        return {}
    installed = installed_versions(cache_dir, site)
    return {name: installed.get(name, NOT_INSTALLED) for name in sorted(locked)}


# -- vars ------------------------------------------------------------------------------------
def _vars(names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        value = env_value(name)
        out[name] = {"secret": True, "set": value is not None} if is_secret_name(name) else value
    return out


# -- tools -----------------------------------------------------------------------------------
def _resolve_tool(root: Path, name: str, path: str) -> str:
    if os.sep in name:
        candidate = name if os.path.isabs(name) else os.fspath(root / name)
        found = candidate if os.access(candidate, os.X_OK) and os.path.isfile(candidate) else None
    else:
        found = shutil.which(name, path=path)
    if found is None:
        raise UserError(f"env.tools: {name} is not on PATH",
                        hint=f"install {name} or add its directory to the PATH sci is started with, "
                             "or remove it from env.tools in sci.yaml")
    return os.path.realpath(found)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def tool_version(exe: str, name: str) -> str:
    """First non-empty line `exe --version` prints (stdout, else stderr), whatever its exit
    status: some tools (bwa) print their version with a usage error, and the binary's digest
    is what identifies the tool anyway. Runs the tool; callers cache the answer."""
    import subprocess  # only on a cache miss: the warm path spawns nothing

    try:
        proc = subprocess.run([exe, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=VERSION_TIMEOUT_S, env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        return f"<{name} --version did not finish in {VERSION_TIMEOUT_S:g} s>"
    except OSError as exc:
        raise UserError(f"env.tools: cannot run {name} ({exe}): {exc.strerror or exc}") from None
    line = _first_line(proc.stdout.decode("utf-8", "replace"))
    return line or _first_line(proc.stderr.decode("utf-8", "replace"))


def _tools(root: Path, names: list[str], stat_cache: StatCache,
           cache_dir: Path | None, path: str) -> dict[str, dict[str, str]]:
    out = {}
    for name in names:
        exe = _resolve_tool(root, name, path)
        digest = stat_cache.file_digest(exe, exe)  # absolute key: never clashes with workspace paths
        # argv[0] matters to multi-call binaries (busybox), so the name is part of the cache key.
        cache_key = digest_bytes(canonical.dumps(["sci.tool-version", digest, os.path.basename(name)]))
        version = _tool_version_memo.get(cache_key)
        if version is None:
            entry = cache_dir / CACHE_SUBDIR / "tools" / f"{cache_key}.json" if cache_dir else None
            cached = _read_json(entry) if entry else None
            if isinstance(cached, dict) and isinstance(cached.get("version"), str):
                version = cached["version"]
            else:
                version = tool_version(exe, name)
                if entry:
                    _write_json(entry, {"tool": name, "digest": digest, "version": version})
            _tool_version_memo[cache_key] = version
        out[name] = {"digest": digest, "version": version}
    return out


# -- the fingerprint -------------------------------------------------------------------------
def environment(root: Path, files: list[str], vars: list[str], tools: list[str], *,
                stat_cache: StatCache | None = None, cache_dir: Path | None = None,
                path: str | None = None, identity: dict | None = None) -> dict:
    """The fingerprint components of the environment a step of this workspace runs in.

    `files` are workspace-relative paths (env.files), `vars` variable names (env.vars), `tools`
    executable names (env.tools). `path` is the step's PATH (default: the caller's, as given):
    the python3 and the tools found on it are the ones fingerprinted. `identity`: a declared
    environment's (envs/declared.py) — its interpreter and locked packages stand in for the
    caller's python3 and the installed packages; a container's image digest for the
    interpreter, the C library, the packages and the tools (all inside the image). Pass the
    workspace's StatCache and `.sci/` cache directory so that an unchanged environment costs a
    few stats and small reads; without them everything is recomputed. Raises UserError for a
    missing env file or tool.
    """
    root = Path(root)
    stat_cache = stat_cache if stat_cache is not None else StatCache()
    path = step_path() if path is None else path
    file_digests = _file_digests(root, list(files), stat_cache)
    components: dict[str, Any] = dict(_platform_components())
    components["sci"] = _sci_version()
    components["files"] = file_digests
    components["vars"] = _vars(list(vars))
    if identity is None:
        version, implementation, site = interpreter(path, stat_cache, cache_dir, root)
        components["python"], components["implementation"] = version, implementation
        components["packages"] = _packages(root, file_digests, cache_dir, site)
        components["tools"] = _tools(root, list(tools), stat_cache, cache_dir, path)
    elif identity["kind"] == "container":
        for name in ("python", "implementation", "libc"):
            del components[name]
        components["environment"] = dict(identity)
    else:
        components["python"], components["implementation"] = identity["python"], identity["implementation"]
        components["packages"] = dict(identity["packages"])
        components["tools"] = _tools(root, list(tools), stat_cache, cache_dir, path)
        components["environment"] = {k: v for k, v in identity.items()
                                     if k not in ("python", "implementation", "packages")}
    return components


def gpu_components() -> dict:
    """What a GPU step's output can depend on beyond the software: GPU models (by index),
    driver version, and the CUDA version the driver provides. The CUDA runtime libraries a
    step links come from its Python packages (torch's `+cu121`, `cupy-cuda12x`, nvidia-*),
    which the `packages` component already covers. Raises GpuRequired when there is no GPU."""
    from sci.build.gpu import GpuRequired, detect_gpus, gpu_unavailable_reason

    gpus = detect_gpus()
    if not gpus:
        raise GpuRequired(f"cannot fingerprint the GPU environment: {gpu_unavailable_reason()}",
                          hint="run GPU steps on a machine with an NVIDIA GPU and driver")
    return {
        "model": [g.name for g in gpus],
        "driver": gpus[0].driver,
        "cuda": gpus[0].cuda_version,
    }


def digest(components: dict) -> str:
    """BLAKE3 of the tagged canonical fingerprint: equal components, equal digest, any host."""
    return digest_bytes(canonical.dumps(
        {"type": FINGERPRINT_TAG, "format": FINGERPRINT_FORMAT, "components": components}))


# -- explaining a change ---------------------------------------------------------------------
def _show(value: Any) -> str:
    if isinstance(value, dict) and value.get("secret") is True:
        return "set" if value.get("set") else "unset"
    if value is None:
        return "unset"
    if isinstance(value, str):
        # Quoted only where plain text would hide something: empty or edge whitespace.
        return value if value and value.strip() == value else repr(value)
    return canonical.dumps_text(value)


def _diff_entry(component: str, name: str, old: Any, new: Any) -> str:
    label = f"{component}.{name}"
    if component == "files":
        return label  # digests say nothing to a person; the file's name says what to look at
    if component == "tools" and isinstance(old, dict) and isinstance(new, dict):
        if old.get("version") != new.get("version"):
            return f"{label}: {_show(old.get('version'))} → {_show(new.get('version'))}"
        return f"{label}: executable changed (same --version)"
    if component == "gpu" and isinstance(old, list) and isinstance(new, list):
        return f"{label}: {', '.join(map(str, old))} → {', '.join(map(str, new))}"
    return f"{label}: {_show(old)} → {_show(new)}"


# A component whose entries changed more than this is summed up, not listed entry by entry:
# after a new interpreter, 80 `not-installed → 1.2.3` lines say less than one.
MAX_ENTRY_LINES = 6


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", …" if len(names) > 3 else "")


def _entries(component: str, a: dict, b: dict) -> list[str]:
    """One line per changed entry of a mapping component; many changes summed up."""
    pairs, came, gone = [], set(), set()
    for name in sorted(set(a) | set(b)):
        if name not in a:
            pairs.append((name, f"{component}.{name}: added"
                          + ("" if component == "files" else f" ({_show(b[name])})")))
        elif name not in b:
            pairs.append((name, f"{component}.{name}: removed"))
        elif a[name] != b[name]:
            if component == "packages" and b[name] == NOT_INSTALLED:
                gone.add(name)
            elif component == "packages" and a[name] == NOT_INSTALLED:
                came.add(name)
            pairs.append((name, _diff_entry(component, name, a[name], b[name])))
    if len(pairs) <= MAX_ENTRY_LINES:
        return [line for _, line in pairs]
    out = []
    if gone:
        out.append(f"{component}: {len(gone)} locked packages not installed any more ({_names(sorted(gone))})")
    if came:
        out.append(f"{component}: {len(came)} locked packages installed now ({_names(sorted(came))})")
    rest = [line for name, line in pairs if name not in gone and name not in came]
    room = MAX_ENTRY_LINES - len(out)
    out.extend(rest[:room])
    if len(rest) > room:
        out.append(f"{component}: {len(rest) - room} more changed")
    return out


def diff(old: dict, new: dict, name: str | None = None) -> list[str]:
    """What changed between two fingerprints, one line per changed entry, sorted.

    `name`: the declared environment both belong to; what is its own (packages, interpreter,
    image) is then said of it: "environment analysis: numpy 2.1.0 → 2.1.1".

    Mapping components are compared entry by entry ("packages.numpy: 1.26.4 → 2.0.0",
    "files.uv.lock", "vars.MY_FLAG: 1 → 2", "tools.bwa: …"); an entry only on one side is
    "added"/"removed"; more than MAX_ENTRY_LINES changed entries of one component are summed
    up (never a wall of `not-installed`). Secret variables show only set/unset. Empty when
    nothing changed.
    """
    lines: list[str] = []
    for component in sorted(set(old) | set(new)):
        a, b = old.get(component), new.get(component)
        if a == b:
            continue
        if component in _MAPPING_COMPONENTS and isinstance(a, dict | None) and isinstance(b, dict | None):
            a, b = a or {}, b or {}
            if not a or not b:
                lines.append(f"{component}: {'added' if b else 'removed'}")
                continue
            lines.extend(_entries(component, a, b))
        elif a is None:
            lines.append(f"{component}: added ({_show(b)})")
        elif b is None:
            lines.append(f"{component}: removed")
        else:
            lines.append(f"{component}: {_show(a)} → {_show(b)}")
    return lines if name is None else [_of_environment(name, line) for line in lines]


_OWN = ("packages", "python", "implementation", "environment")


def _of_environment(name: str, line: str) -> str:
    """`packages.numpy: 1 → 2` of a declared environment → `environment NAME: numpy 1 → 2`."""
    head, sep, rest = line.partition(": ")
    component, _, entry = head.partition(".")
    if component not in _OWN:
        return line
    if component in ("packages", "environment"):
        return f"environment {name}: {entry} {rest}" if entry else f"environment {name}: {rest}"
    return f"environment {name}: {component} {rest}" if sep else f"environment {name}: {line}"
