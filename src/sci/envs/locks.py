"""Lock files read as the set of packages an environment installs from them.

A lock pins more than a step's environment holds: uv.lock also pins the dev group (pytest …),
every optional extra and every platform's variants. What enters a key is the part an
environment synced from the lock without its dev group actually installs — the closure of the
project's own dependencies — so that installing pytest changes no key (SPEC §10).

    uv.lock          the closure from the workspace's projects (`source = {editable|virtual}`,
                     or the `[manifest] members`): their `dependencies`, plus the dependency
                     groups and extras asked for, then every dependency's dependencies (and
                     the extras a dependency is asked with). Markers are not evaluated: a
                     package pinned for another platform or Python is in the set too (a change
                     to it re-runs, never the other way round).
    poetry.lock      the packages of the `main` group (`groups = [...]`, or the older
                     `category = "main"`); all of them when the lock says neither
    pylock*.toml     every package (the file is one environment's install list already)
    requirements     every requirement line (idem)
"""

from __future__ import annotations

import os
import re
from typing import Any

from sci.errors import UserError

# Bump when what a lock contributes changes (the on-disk cache of parsed locks is keyed by it).
LOCK_READER = 2


def normalize_name(name: str) -> str:
    """A package name in PEP 503 normal form: `Ruamel.YAML` and `ruamel_yaml` are `ruamel-yaml`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_kind(path: str) -> str | None:
    """Which lock format a file is, by its name; None when it is not a lock."""
    name = os.path.basename(path)
    if name == "uv.lock":
        return "uv"
    if name == "poetry.lock":
        return "poetry"
    if name.startswith("pylock.") and name.endswith(".toml"):
        return "pylock"
    if "requirements" in name and name.endswith(".txt"):
        return "requirements"
    if name.endswith(".py.lock"):  # a PEP 723 script's lock (`uv lock --script`): uv.lock's format
        return "uv"
    return None


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def _toml(kind: str, text: str) -> dict:
    import tomllib  # only when a lock changed: the warm path never parses one

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"cannot parse the {kind} lock file: {exc}") from None


def locked_packages(kind: str, data: bytes, groups: tuple[str, ...] = (), extras: tuple[str, ...] = ()
                    ) -> dict[str, str]:
    """normalized name → locked version ("" when the lock gives none; versions of one name
    pinned for different platforms joined with " | ") of what an environment synced from this
    lock installs: the project's dependencies, plus the dependency `groups` and optional
    `extras` named (uv.lock; poetry's groups), never the dev group otherwise (module docstring)."""
    text = data.decode("utf-8")
    if kind == "requirements":
        return _requirements(text)
    doc = _toml(kind, text)
    if kind == "uv":
        return _uv_closure(doc, groups, extras)
    table = doc.get("packages" if kind == "pylock" else "package", [])
    found: dict[str, set[str]] = {}
    for pkg in table if isinstance(table, list) else []:
        if not isinstance(pkg, dict) or not isinstance(pkg.get("name"), str):
            continue
        if kind == "poetry" and not _poetry_main(pkg, groups):
            continue
        found.setdefault(normalize_name(pkg["name"]), set()).add(str(pkg.get("version", "")))
    return _joined(found)


def parse_lock_names(kind: str, data: bytes) -> list[str]:
    """The normalized package names `locked_packages` gives, sorted."""
    if kind not in ("uv", "poetry", "pylock", "requirements"):
        raise ValueError(f"unknown lock kind {kind!r}")
    return sorted(locked_packages(kind, data))


def _joined(found: dict[str, set[str]]) -> dict[str, str]:
    return {name: " | ".join(sorted(v for v in versions if v) or [""]) for name, versions in sorted(found.items())}


def _requirements(text: str) -> dict[str, str]:
    """requirements files: one requirement a line; options (`-r`, `-c`, `-e`, `--hash` …) and
    comments are skipped. `-r other.txt` is not followed on purpose: the names would then
    depend on a file whose digest is not in the fingerprint, so list it in env.files too."""
    found: dict[str, set[str]] = {}
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        match = _REQ_NAME.match(line)
        if match and "://" not in line.split("@", 1)[0]:
            pinned = re.search(r"===?\s*([^\s;,\\]+)", line)
            found.setdefault(normalize_name(match.group(1)), set()).add(pinned.group(1) if pinned else "")
    return _joined(found)


def _poetry_main(pkg: dict, groups: tuple[str, ...]) -> bool:
    wanted = {"main", *groups}
    if isinstance(pkg.get("groups"), list):
        return bool(wanted & set(pkg["groups"]))
    if isinstance(pkg.get("category"), str):
        return pkg["category"] in wanted
    return True


def _is_project(pkg: dict) -> bool:
    source = pkg.get("source")
    return isinstance(source, dict) and ("editable" in source or "virtual" in source)


def _uv_closure(doc: dict, groups: tuple[str, ...], extras: tuple[str, ...]) -> dict[str, str]:
    packages = [p for p in doc.get("package", []) if isinstance(p, dict) and isinstance(p.get("name"), str)]
    by_name: dict[str, list[dict]] = {}
    for pkg in packages:
        by_name.setdefault(normalize_name(pkg["name"]), []).append(pkg)
    manifest = doc.get("manifest") if isinstance(doc.get("manifest"), dict) else {}
    members = {normalize_name(m) for m in manifest.get("members", []) if isinstance(m, str)}
    roots = [p for p in packages if normalize_name(p["name"]) in members] if members else \
        [p for p in packages if _is_project(p) and p["source"].get("editable", p["source"].get("virtual")) == "."]
    if not roots:  # a lock of no project (a script's): the packages it pins are what it installs
        roots = [p for p in packages if _is_project(p)]
    if not roots:
        return _joined({normalize_name(p["name"]): {str(p.get("version", ""))} for p in packages})
    root_ids = {id(p) for p in roots}

    def targets(dep: Any) -> list[dict]:
        if not isinstance(dep, dict) or not isinstance(dep.get("name"), str):
            return []
        cands = by_name.get(normalize_name(dep["name"]), [])
        if "version" in dep:
            cands = [c for c in cands if c.get("version") == dep["version"]]
        if "source" in dep:
            cands = [c for c in cands if c.get("source") == dep["source"]]
        return cands

    seen: dict[int, set[str]] = {}  # package id -> the extras of it already followed
    found: dict[str, set[str]] = {}
    stack: list[tuple[dict, list]] = []
    for root in roots:
        edges = list(root.get("dependencies", []))
        dev = root.get("dev-dependencies", {})
        for group in groups:
            edges.extend(dev.get(group, []) if isinstance(dev, dict) else [])
        for extra in extras:
            edges.extend((root.get("optional-dependencies") or {}).get(extra, []))
        stack.append((root, edges))
    while stack:
        _pkg, edges = stack.pop()
        for dep in edges:
            extras = [e for e in dep.get("extra", []) if isinstance(e, str)] if isinstance(dep, dict) else []
            for target in targets(dep):
                key = id(target)
                done = seen.get(key)
                new = [] if done is None else None
                if done is None:
                    done = seen[key] = set()
                    new = list(target.get("dependencies", []))
                    if key not in root_ids:
                        found.setdefault(normalize_name(target["name"]), set()).add(str(target.get("version", "")))
                optional = target.get("optional-dependencies") or {}
                for extra in extras:
                    if extra not in done:
                        done.add(extra)
                        new = (new or []) + list(optional.get(extra, []))
                if new:
                    stack.append((target, new))
    return _joined(found)
