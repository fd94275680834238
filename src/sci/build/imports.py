"""The code closure of a Python step: its module and the workspace-local modules it imports.

Imports are read with `ast` (nothing is executed) and followed transitively; a module counts
when it resolves to a file inside the workspace (`a.b` → `a/b.py` or `a/b/__init__.py`), and so
do the `__init__.py` files of the packages on the way, since importing runs them too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from sci.errors import UserError


def _module_file(root: Path, module: str) -> str | None:
    base = root.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand.relative_to(root).as_posix()
    return None


def _with_packages(root: Path, module: str) -> list[str]:
    """The module's file plus the __init__.py of each enclosing package in the workspace."""
    out = []
    parts = module.split(".")
    for i in range(1, len(parts)):
        init = root.joinpath(*parts[:i], "__init__.py")
        if init.is_file():
            out.append(init.relative_to(root).as_posix())
    f = _module_file(root, module)
    if f:
        out.append(f)
    return out


def _imported_modules(source: bytes, module: str, is_package: bool) -> list[str]:
    tree = ast.parse(source)
    pkg_parts = module.split(".") if is_package else module.split(".")[:-1]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                prefix = ".".join(base)
                mod = f"{prefix}.{node.module}" if node.module else prefix
            else:
                mod = node.module or ""
            if mod:
                found.append(mod)
                found.extend(f"{mod}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def closure(root: Path, module: str) -> list[str]:
    """Workspace-relative paths of every workspace-local file `import module` would run."""
    if _module_file(root, module) is None:
        raise UserError(f"Python step module {module!r} is not a file in the workspace",
                        hint=f"create {module.replace('.', '/')}.py, or fix the fn: module name")
    seen_mods: set[str] = set()
    files: set[str] = set()
    stack = [module]
    while stack:
        mod = stack.pop()
        if mod in seen_mods:
            continue
        seen_mods.add(mod)
        owned = _with_packages(root, mod)
        if not owned:
            continue
        for f in owned:
            if f in files:
                continue
            files.add(f)
            f_mod = f[:-len("/__init__.py")].replace("/", ".") if f.endswith("/__init__.py") else f[:-3].replace("/", ".")
            try:
                src = (root / f).read_bytes()
                stack.extend(_imported_modules(src, f_mod, f.endswith("__init__.py")))
            except SyntaxError as exc:
                raise UserError(f"{f}:{exc.lineno}: syntax error in step code: {exc.msg}",
                                hint="fix the Python syntax") from None
    return sorted(files)
