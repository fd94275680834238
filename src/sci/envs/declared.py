"""Declared software environments (SPEC §10): what each is, its identity, and its checks.

    environments:
      analysis: {python: envs/analysis}        a uv project: pyproject.toml + uv.lock
      plot:     {script: rules/plot.py}        a PEP 723 script (and rules/plot.py.lock)
      align:    {container: "img@sha256:…"}    an image by digest

An environment's **identity** is what its steps' bytes can depend on: the locked set of
packages it installs (envs/locks.py: without the dev group unless `groups` names it), the
interpreter version, and the platform (which every fingerprint holds) — for a container, the
image digest. It is computed from the lock without preparing anything: `sci status` can key
a node in an environment never prepared on this machine. Finding the interpreter (`uv python
find`) and checking the lock against pyproject.toml (`uv lock --check`) run uv, so their answer
is cached under the digests of the files they read (`.sci/cache/…/envs/`); the warm path is a
few stats. Preparing an environment is envs/prepare.py's.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sci import canonical
from sci.errors import SpecError, UserError
from sci.store.hashing import StatCache, digest_bytes
from sci.values import Value

if TYPE_CHECKING:
    import subprocess

KINDS = ("python", "script", "container")
# Bump when an identity's meaning or the cached resolution's layout changes.
RESOLUTION_FORMAT = 1
_DIGEST_REF = re.compile(r"@sha256:[0-9a-f]{64}$")
UV_TIMEOUT_S = 120.0


class Declared(Value):
    """One entry of `environments:`. `kind` is "uv", "script" or "container"; `path` the
    project directory or the script (workspace-relative), `image` the container reference."""

    __slots__ = _FIELDS = ("name", "kind", "path", "image", "groups", "extras")

    def __init__(self, name: str, kind: str, path: str | None = None, image: str | None = None,
                 groups: tuple[str, ...] = (), extras: tuple[str, ...] = ()):
        self.name, self.kind, self.path, self.image = name, kind, path, image
        self.groups, self.extras = tuple(groups), tuple(extras)

    @classmethod
    def of(cls, name: str, doc: dict) -> Declared:
        if doc.get("python") is not None:
            return cls(name, "uv", path=_norm(doc["python"]), groups=tuple(doc.get("groups") or ()),
                       extras=tuple(doc.get("extras") or ()))
        if doc.get("script") is not None:
            return cls(name, "script", path=_norm(doc["script"]))
        return cls(name, "container", image=doc["container"])

    def files(self, root: Path) -> list[str]:
        """The workspace files the identity is read from (copied by repro-check and bundles)."""
        if self.kind == "uv":
            base = "" if self.path == "." else f"{self.path}/"
            out = [f"{base}pyproject.toml", f"{base}uv.lock"]
            if (root / f"{base}.python-version").is_file():
                out.append(f"{base}.python-version")
            return out
        if self.kind == "script":
            return [self.path] + ([f"{self.path}.lock"] if (root / f"{self.path}.lock").is_file() else [])
        return []


def _norm(path: str) -> str:
    import posixpath

    return posixpath.normpath(path.strip()) if path.strip() else path


def declared(env_spec: dict) -> dict[str, Declared]:
    """The declared environments of a validated sci.yaml's env spec (`Loaded.env_spec`)."""
    return {name: Declared.of(name, doc) for name, doc in (env_spec.get("environments") or {}).items()}


def workspace_files(env_spec: dict, root: Path) -> list[str]:
    """The files the environment fingerprints read: env.files, and each declared environment's
    pyproject.toml, lock, .python-version or script (repro-check and bundles copy them)."""
    out = list(env_spec.get("files") or [])
    for decl in declared(env_spec).values():
        out.extend(f for f in decl.files(root) if f not in out)
    return out


def check(environments: dict[str, dict], nodes, pos, reserved: tuple[str, ...]) -> None:
    """Plan-time checks, with the line and column of the fault: paths inside the workspace,
    and a container given by tag (no digest) refused for a step under strict determinism."""
    from sci.plan.nodes import check_path

    for name, doc in environments.items():
        for field in ("python", "script"):
            if doc.get(field) is not None:
                check_path(doc[field], pos, ("environments", name, field), (), what=f"environment {name}")
    strict = {n.environment for n in nodes if n.environment is not None and n.determinism == "strict"}
    for name in sorted(strict):
        image = environments[name].get("container")
        if image is not None and not _DIGEST_REF.search(image):
            raise SpecError(f"environment {name}: container {image!r} is given by tag, not by digest",
                            location=pos.at(("environments", name, "container")),
                            hint="under strict determinism name the image by digest (IMAGE@sha256:…; "
                                 "`podman images --digests` shows it), or make its steps determinism: fast")


# -- identity ----------------------------------------------------------------------------------
class Resolved(Value):
    """An environment's identity and the interpreter it is prepared with (None: a container)."""

    __slots__ = _FIELDS = ("decl", "identity", "python")

    def __init__(self, decl: Declared, identity: dict, python: str | None):
        self.decl, self.identity, self.python = decl, identity, python


def _digest_of(root: Path, rel: str, stat_cache: StatCache, *, required: bool, hint: str = "") -> str | None:
    try:
        return stat_cache.file_digest(root / rel, rel)
    except FileNotFoundError:
        if required:
            raise UserError(f"{rel} does not exist", hint=hint) from None
        return None
    except IsADirectoryError:
        raise UserError(f"{rel} is a directory, not a file", hint=hint) from None


def resolve(root: Path, decl: Declared, stat_cache: StatCache, cache_dir: Path | None) -> Resolved:
    """The identity of `decl` in workspace `root` (module docstring). Raises UserError (exit 2)
    for a missing pyproject.toml or lock, a lock that does not match its pyproject.toml, or no
    interpreter that satisfies the environment's Python requirement."""
    if decl.kind == "container":
        return Resolved(decl, {"kind": "container", "image": decl.image}, None)
    if decl.kind == "uv":
        base = "" if decl.path == "." else f"{decl.path}/"
        where = "the workspace root" if decl.path == "." else f"{decl.path}/"
        hint = f"environment {decl.name} is a uv project: put pyproject.toml and uv.lock (`uv lock`) in {where}"
        inputs = [_digest_of(root, f"{base}pyproject.toml", stat_cache, required=True, hint=hint),
                  _digest_of(root, f"{base}uv.lock", stat_cache, required=True, hint=hint),
                  _digest_of(root, f"{base}.python-version", stat_cache, required=False)]
        lock = f"{base}uv.lock"
    else:
        hint = f"environment {decl.name} is a PEP 723 script: create {decl.path}"
        inputs = [_digest_of(root, decl.path, stat_cache, required=True, hint=hint),
                  _digest_of(root, f"{decl.path}.lock", stat_cache, required=False)]
        lock = f"{decl.path}.lock" if inputs[1] is not None else None
    request = digest_bytes(canonical.dumps(["sci.env-request", RESOLUTION_FORMAT, decl.kind, decl.path, inputs,
                                            list(decl.groups), list(decl.extras), os.environ.get("UV_PYTHON")]))
    entry = cache_dir / "envs" / f"{request}.json" if cache_dir else None
    cached = _read(entry)
    if cached is not None and _still_there(cached.get("python"), cached.get("python_digest"), stat_cache):
        return Resolved(decl, cached["identity"], cached["python"])
    uv = uv_executable()
    if decl.kind == "uv":
        _check_lock(uv, root, decl)
        python = _find_python(uv, ["--project", str(root / decl.path)], decl)
    else:
        python = _find_python(uv, ["--script", str(root / decl.path)], decl)
    from sci.build import fingerprint
    from sci.envs.locks import locked_packages

    version, implementation, _ = fingerprint.probe_python(python, stat_cache, cache_dir)
    identity: dict[str, Any] = {"kind": decl.kind, "python": version, "implementation": implementation}
    if lock is not None:
        identity["packages"] = locked_packages("uv", (root / lock).read_bytes(), decl.groups, decl.extras)
    else:  # an unlocked script: what it asks for is all that is known before installing
        identity["packages"] = {}
        identity["requirements"] = script_requirements((root / decl.path).read_text(encoding="utf-8"), decl)
    if decl.kind == "uv":
        identity["groups"], identity["extras"] = list(decl.groups), list(decl.extras)
    real = os.path.realpath(python)
    if entry is not None:
        _write(entry, {"identity": identity, "python": python,
                       "python_digest": stat_cache.file_digest(real, real)})
    return Resolved(decl, identity, python)


def _still_there(python: Any, digest: Any, stat_cache: StatCache) -> bool:
    """The cached interpreter is still the one found then (a removed or upgraded Python is
    looked for again)."""
    if not isinstance(python, str) or not isinstance(digest, str):
        return False
    try:
        real = os.path.realpath(python)
        return stat_cache.file_digest(real, real) == digest
    except OSError:
        return False


def uv_executable() -> str:
    uv = shutil.which("uv")
    if uv is None:
        raise UserError("uv is not installed: it makes sci's python and script environments",
                        hint="install it (`pip install uv`, or see https://docs.astral.sh/uv/)")
    return uv


def uv_env() -> dict[str, str]:
    """The environment uv runs in for sci: the caller's, less an active virtualenv (uv would
    warn that it is not the project's) and less a project environment override."""
    return {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}


def run_uv(args: list[str], *, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    import subprocess  # only when uv runs: a warm build spawns nothing

    try:
        return subprocess.run(args, cwd=cwd, env=env or uv_env(), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=UV_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"`{' '.join(args[:3])} …` did not finish in {UV_TIMEOUT_S:g} s",
                        hint="check the network to the package index, or run it by hand to see why") from None


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("hint:")]
    return lines[-1] if lines else ""


def _check_lock(uv: str, root: Path, decl: Declared) -> None:
    """A lock that does not match its pyproject.toml is an error, never a silent re-resolve."""
    project = root / decl.path
    proc = run_uv([uv, "lock", "--check", "--offline", "--project", str(project)])
    if proc.returncode != 0 and "needs to be updated" not in proc.stderr:
        proc = run_uv([uv, "lock", "--check", "--project", str(project)])  # metadata not cached: ask the index
    if proc.returncode == 0:
        return
    base = "" if decl.path == "." else f"{decl.path}/"
    if "needs to be updated" in proc.stderr:
        raise UserError(f"environment {decl.name}: {base}uv.lock does not match {base}pyproject.toml",
                        hint=f"run `uv lock` in {decl.path}/ and commit the lock (sci never re-resolves it)")
    raise UserError(f"environment {decl.name}: uv cannot read {base}uv.lock: {last_line(proc.stderr)}",
                    hint=f"run `uv lock --check` in {decl.path}/ to see why")


def _find_python(uv: str, where: list[str], decl: Declared) -> str:
    proc = run_uv([uv, "python", "find", *where])
    found = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not found:
        raise UserError(f"environment {decl.name}: no Python interpreter satisfies its requirement: "
                        f"{last_line(proc.stderr)}",
                        hint="install one (`uv python install`), or relax requires-python")
    return found[-1].strip()


# PEP 723's reference expression for a metadata block.
_SCRIPT_BLOCK = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")


def script_requirements(text: str, decl: Declared) -> list[str]:
    """The `dependencies` of a script's PEP 723 `# /// script` block, as written."""
    import tomllib

    match = next((m for m in _SCRIPT_BLOCK.finditer(text) if m["type"] == "script"), None)
    if match is None:
        raise UserError(f"environment {decl.name}: {decl.path} has no `# /// script` metadata block",
                        hint="add one (PEP 723), e.g. with `uv add --script " + decl.path + " PACKAGE`")
    body = "".join(line[2:] if line.startswith("# ") else line[1:]
                   for line in match["content"].splitlines(keepends=True))
    try:
        meta = tomllib.loads(body)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"environment {decl.name}: the script metadata of {decl.path} is not TOML: {exc}") from None
    deps = meta.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise UserError(f"environment {decl.name}: `dependencies` in {decl.path} must be a list of strings")
    return [" ".join(d.split()) for d in deps]


CACHE_FORMAT = "sci-env-identity-1"


def _read(path: Path | None) -> dict | None:
    """A cached identity, checksummed like every .sci/ file: a damaged entry is resolved again."""
    from sci.store import journal

    value = journal.read_value(path, CACHE_FORMAT) if path is not None else None
    return value if isinstance(value, dict) and isinstance(value.get("identity"), dict) else None


def _write(path: Path, value: dict) -> None:
    from sci.store import journal

    journal.write_value(path, CACHE_FORMAT, value)  # False on a read-only .sci/: resolve again next time
