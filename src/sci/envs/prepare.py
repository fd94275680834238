"""Preparing declared environments: once, in a cache keyed by identity, safe under concurrency.

    .sci/envs/
      analysis-3f9c…/          one prepared environment: NAME-<identity digest, 16 hex>
        venv/                  a uv project's or a script's virtual environment
        sci-env.json           written last: the environment is ready (its identity, its python)
      analysis-3f9c….lock      held while it is prepared: a second build waits, then finds it ready

A directory without `sci-env.json` is a preparation that died: the next one removes it and
starts again. Once ready nothing calls uv or the network: a build looks for `sci-env.json`.
`sci gc` removes every prepared environment whose identity no declared environment has now.

    uv project   uv venv --python <the interpreter resolve() found>; then
                 UV_PROJECT_ENVIRONMENT=venv uv sync --frozen --no-default-groups
                 --no-install-project [--group G] [--extra E] (the project's own code is workspace
                 code: steps count it through `code:`)
    script       uv venv …; then the script's lock exported to pinned requirements
                 (uv export --script S --frozen) — or, without a lock, its declared
                 dependencies — installed with uv pip install
    container    podman (or docker) pulls the image unless it is present already
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sci import canonical
from sci.envs.declared import Resolved, last_line, run_uv, uv_env, uv_executable
from sci.errors import WorkFailed
from sci.store.hashing import digest_bytes
from sci.values import Value

ENVS_DIR = "envs"
READY = "sci-env.json"
# Bump when the layout of a prepared environment changes (a new one is then prepared).
PREPARED_FORMAT = 1
ENGINES = ("podman", "docker")


class PrepareFailed(WorkFailed):
    """An environment could not be prepared (the index or the image is unreachable, a build
    of a package failed): the nodes that run in it fail, exit 1."""


class Prepared(Value):
    """A ready environment: where it is, the interpreter of its `fn` steps, the variables its
    steps get (PATH with its bin/ first, VIRTUAL_ENV), or its container engine and image."""

    __slots__ = _FIELDS = ("name", "directory", "python", "environ", "engine", "image")

    def __init__(self, name: str, directory: str, python: str | None, environ: dict[str, str],
                 engine: str | None = None, image: str | None = None):
        self.name, self.directory, self.python, self.environ = name, directory, python, environ
        self.engine, self.image = engine, image


def identity_digest(identity: dict) -> str:
    return digest_bytes(canonical.dumps({"type": "sci.env-identity", "identity": identity}))


def location(state_dir: Path, resolved: Resolved) -> Path:
    return state_dir / ENVS_DIR / f"{resolved.decl.name}-{identity_digest(resolved.identity)[:16]}"


def ready(state_dir: Path, resolved: Resolved) -> Prepared | None:
    """The prepared environment, when it is there and whole; else None."""
    where = location(state_dir, resolved)
    try:
        doc = canonical.loads((where / READY).read_bytes())
    except (OSError, ValueError):
        return None
    if (not isinstance(doc, dict) or doc.get("format") != PREPARED_FORMAT or doc.get("directory") != str(where)
            or doc.get("identity") != resolved.identity):
        return None  # another layout, or a workspace moved since (a venv's paths are absolute)
    prepared = _prepared(resolved, where, doc.get("engine"))
    if prepared.python is not None and not os.path.exists(prepared.python):
        return None
    return prepared


def _prepared(resolved: Resolved, where: Path, engine: str | None) -> Prepared:
    decl = resolved.decl
    if decl.kind == "container":
        return Prepared(decl.name, str(where), None, {}, engine=engine, image=decl.image)
    venv = where / "venv"
    environ = {"PATH": f"{venv}/bin{os.pathsep}{os.environ.get('PATH', os.defpath)}", "VIRTUAL_ENV": str(venv)}
    return Prepared(decl.name, str(where), str(venv / "bin" / "python"), environ)


def prepare(state_dir: Path, root: Path, resolved: Resolved) -> tuple[Prepared, bool]:
    """The environment, prepared now unless it was already; the flag says whether it was made
    now. Two processes preparing the same environment: one prepares, the other waits for it
    (a file lock), then finds it ready. Raises PrepareFailed."""
    found = ready(state_dir, resolved)
    if found is not None:
        return found, False
    from filelock import FileLock

    where = location(state_dir, resolved)
    where.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{where}.lock"):
        found = ready(state_dir, resolved)
        if found is not None:
            return found, False
        shutil.rmtree(where, ignore_errors=True)  # what a preparation that died left
        where.mkdir()
        try:
            engine = _make(root, resolved, where)
        except BaseException:
            shutil.rmtree(where, ignore_errors=True)
            raise
        doc = {"format": PREPARED_FORMAT, "name": resolved.decl.name, "kind": resolved.decl.kind,
               "directory": str(where), "identity": resolved.identity, "engine": engine}
        tmp = where / f".{READY}.tmp"
        tmp.write_bytes(canonical.dumps(doc))
        os.replace(tmp, where / READY)  # last: from now on the environment is ready
    return _prepared(resolved, where, engine), True


def _make(root: Path, resolved: Resolved, where: Path) -> str | None:
    decl = resolved.decl
    if decl.kind == "container":
        return _pull(decl.name, decl.image)
    uv = uv_executable()
    venv = where / "venv"
    _uv(decl.name, [uv, "venv", "-q", "--python", resolved.python, str(venv)])
    python = str(venv / "bin" / "python")
    if decl.kind == "uv":
        args = [uv, "sync", "-q", "--frozen", "--no-default-groups", "--no-install-project",
                "--project", str(root / decl.path),
                "--python", python]
        for group in decl.groups:
            args += ["--group", group]
        for extra in decl.extras:
            args += ["--extra", extra]
        _uv(decl.name, args, env={**uv_env(), "UV_PROJECT_ENVIRONMENT": str(venv)})
        return None
    script = str(root / decl.path)
    requirements = where / "requirements.txt"
    if "requirements" in resolved.identity:
        requirements.write_text("".join(f"{r}\n" for r in resolved.identity["requirements"]), encoding="utf-8")
    else:
        _uv(decl.name, [uv, "export", "-q", "--script", script, "--frozen", "--no-hashes",
                        "--format", "requirements-txt", "-o", str(requirements)])
    if requirements.read_text(encoding="utf-8").strip():
        _uv(decl.name, [uv, "pip", "install", "-q", "--python", python, "-r", str(requirements)])
    return None


def _uv(name: str, args: list[str], env: dict | None = None) -> None:
    proc = run_uv(args, env=env)
    if proc.returncode != 0:
        raise PrepareFailed(f"environment {name} could not be prepared: `uv {args[1]}` failed: "
                            f"{last_line(proc.stderr) or last_line(proc.stdout)}",
                            hint="check the network to the package index (the first preparation downloads; "
                                 "later builds are offline), then run `sci env prepare`")


def engine() -> str | None:
    """The container engine sci runs images with: podman, else docker (the first installed)."""
    for name in ENGINES:
        if shutil.which(name):
            return name
    return None


def _pull(name: str, image: str) -> str:
    import subprocess

    found = engine()
    if found is None:
        raise PrepareFailed(f"environment {name} is a container, and neither podman nor docker is installed",
                            hint="install podman (docs/environments.md says how on Debian)")
    exe = shutil.which(found)
    try:
        present = subprocess.run([exe, "image", "inspect", image], capture_output=True, timeout=60,
                                 stdin=subprocess.DEVNULL)
        if present.returncode == 0:
            return found
        pulled = subprocess.run([exe, "pull", "-q", image], capture_output=True, text=True, timeout=1800,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PrepareFailed(f"environment {name}: {found} failed: {exc}") from None
    if pulled.returncode != 0:
        raise PrepareFailed(f"environment {name}: `{found} pull {image}` failed: {last_line(pulled.stderr)}",
                            hint="check the registry is reachable, or load the image (`podman load`)")
    return found


def prepared_dirs(state_dir: Path) -> list[Path]:
    """Every prepared (or half-prepared) environment directory."""
    base = state_dir / ENVS_DIR
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir())


def _size(where: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(where):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def remove_unused(state_dir: Path, keep: set[str], dry_run: bool = False) -> list[tuple[Path, int]]:
    """Remove the prepared environments whose directory name is not in `keep`: (directory,
    bytes) of each that went (would go, with `dry_run`). One being prepared now is left."""
    from filelock import FileLock, Timeout

    gone = []
    for where in prepared_dirs(state_dir):
        if where.name in keep:
            continue
        size = _size(where)
        if dry_run:
            gone.append((where, size))
            continue
        try:
            with FileLock(f"{where}.lock", timeout=0):
                shutil.rmtree(where, ignore_errors=True)
        except Timeout:
            continue
        gone.append((where, size))
        try:
            os.unlink(f"{where}.lock")
        except FileNotFoundError:
            pass
    return gone
