"""Software environments (SPEC §10): what a step runs with.

The workspace's default environment is the caller's PATH as given: a step's `python` is the
caller's, never sci's own interpreter, and `env.tools` fingerprints the executable the step
runs. Real interpreters and real packages from the package index (uv), no mocks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from blake3 import blake3

from conftest import Sci, write

UV = shutil.which("uv")
pytestmark = [pytest.mark.skipif(UV is None, reason="uv is not installed (it makes the environments)"),
              pytest.mark.xdist_group("environments")]


def venv(where: Path, *packages: str) -> Path:
    """A fresh virtual environment (uv venv) with `packages` installed from the index; its bin/."""
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(where)], check=True)
    if packages:
        subprocess.run([UV, "pip", "install", "-q", "--python", str(where / "bin" / "python"), *packages],
                       check=True)
    return where / "bin"


@pytest.fixture(scope="module")
def other_python(tmp_path_factory) -> Path:
    """A venv that has tabulate (which sci's own environment lacks) and none of sci's dependencies."""
    bin_dir = venv(tmp_path_factory.mktemp("other") / "venv", "tabulate==0.9.0")
    probe = subprocess.run([str(bin_dir / "python"), "-c", "import numpy"], capture_output=True)
    assert probe.returncode != 0, "the test venv must not see sci's packages"
    return bin_dir


def test_sci_has_no_tabulate():
    """The point of the tests below: the package the steps import is not sci's."""
    with pytest.raises(ImportError):
        __import__("tabulate")


def with_path(first: Path) -> dict[str, str]:
    """The caller's environment with `first` at the head of PATH (as `source venv/bin/activate`)."""
    path = os.environ["PATH"].split(os.pathsep)
    path = [p for p in path if p != os.path.dirname(sys.executable)]  # sci's own bin/ is not the caller's
    return {"PATH": os.pathsep.join([str(first), *path])}


PIPELINE = {
    "sci.yaml": """
        version: 1
        env:
          tools: [python3]
        steps:
          shell:
            cmd: python3 -c "import sys, tabulate; print(sys.executable); print(tabulate.__version__)" > {outs.out}
            outs: {out: shell.txt}
          py:
            fn: rules.where:where
            outs: {out: py.txt}
        """,
    "rules/__init__.py": "",
    "rules/where.py": """
        import sys

        def where(ctx):
            import tabulate
            ctx.outs["out"].write_text(f"{sys.executable}\\n{tabulate.__version__}\\n{ctx.seed}\\n")
            ctx.log_metric("rows", 3)
        """,
}


def test_a_step_runs_the_callers_python_not_scis(ws, other_python):
    """cmd and fn steps both run the first python3 on the caller's PATH, which has a package
    sci's environment lacks and none of sci's dependencies; the fn step still gets its ctx."""
    sci = ws(PIPELINE, env=with_path(other_python))
    out = sci.build()
    assert out["executed"] == ["py", "shell"]
    shell = (sci.root / "shell.txt").read_text().split()
    py = (sci.root / "py.txt").read_text().split()
    assert shell[0] == py[0] == str(other_python / "python3")
    assert shell[1] == py[1] == "0.9.0"
    # env.tools fingerprints that python3 (the step's), by the content of what it runs
    run = sorted((sci.root / "runs").iterdir())[-1]
    manifest = json.loads((run / "manifest.json").read_text())
    comps = manifest["environment"]["components"]
    real = os.path.realpath(other_python / "python3")
    assert comps["tools"]["python3"]["digest"] == blake3(Path(real).read_bytes()).hexdigest()
    assert sci.build()["executed"] == []


def test_without_a_python_on_path_an_fn_step_fails_with_one_line(ws, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    sci = ws({"sci.yaml": """
        version: 1
        steps:
          py:
            fn: rules.where:where
            outs: {out: py.txt}
        """, "rules/__init__.py": "", "rules/where.py": "def where(ctx):\n    pass\n"},
        env={"PATH": str(empty)})
    proc = sci("build", check=1)
    assert "found no python3 on the step's PATH" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_changing_which_python_the_caller_has_is_named_by_status(ws, other_python, tmp_path):
    """env.tools: [python3] follows the caller's PATH: another python3 first on it changes the
    fingerprint, and status names the tool (the step would run another interpreter)."""
    sci = ws(PIPELINE, env=with_path(other_python))
    sci.build()
    second = venv(tmp_path / "second", "tabulate==0.9.0")
    # a copy, not a link: another executable (a venv links its python to the same binary)
    target = second / "python3"
    real = Path(os.path.realpath(target))
    target.unlink()
    shutil.copy2(real, target)
    with open(target, "ab") as fh:
        fh.write(b"\0")  # other bytes: another build of the interpreter
    proc = Sci(sci.root, with_path(second))("status")
    assert "env changed: tools.python3: executable changed" in proc.stdout


# -- what a lock contributes: the packages the environment installs, not its dev group ---------
def uv_project(root: Path, deps: list[str], dev: list[str], name: str = "demo") -> None:
    """A virtual uv project (pyproject.toml + a real uv.lock resolved from the index)."""
    dev_list = ", ".join(f'"{d}"' for d in dev)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "0"\nrequires-python = ">=3.11"\n'
        f"dependencies = [{', '.join(repr(d) for d in deps)}]\n\n"
        f"[dependency-groups]\ndev = [{dev_list}]\n\n[tool.uv]\npackage = false\n")
    subprocess.run([UV, "lock", "-q", "--python", sys.executable], cwd=root, check=True)


def sync(root: Path, *args: str) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    subprocess.run([UV, "sync", "-q", "--frozen", "--python", sys.executable, *args], cwd=root, check=True, env=env)
    return root / ".venv" / "bin"


LOCKED_STEP = {
    "sci.yaml": """
        version: 1
        env:
          files: [uv.lock]
        steps:
          table:
            cmd: python3 -c "import tabulate; print(tabulate.tabulate([[1, 2]]))" > {outs.out}
            outs: {out: table.txt}
        """,
}


def test_installing_the_dev_group_changes_no_key(ws):
    """The README's quick start in small: sync without the dev group, build, then sync with it
    (what `uv run` does): every node stays cached, and status says so."""
    sci = ws(LOCKED_STEP)
    uv_project(sci.root, ["tabulate==0.9.0"], ["termcolor"])
    bin_dir = sync(sci.root, "--no-dev")
    caller = Sci(sci.root, with_path(bin_dir))
    assert caller.build()["executed"] == ["table"]
    run = sorted((sci.root / "runs").iterdir())[-1]
    packages = json.loads((run / "manifest.json").read_text())["environment"]["components"]["packages"]
    assert packages == {"tabulate": "0.9.0"}  # the lock's closure: not termcolor, the dev group's
    sync(sci.root)  # the dev group too
    assert (bin_dir / "python").exists()
    assert subprocess.run([str(bin_dir / "python"), "-c", "import termcolor"]).returncode == 0
    assert "up to date  table" in caller("status").stdout
    assert caller.build()["executed"] == []
    # a locked package of the project's own that changes does change the key, and is named
    subprocess.run([UV, "pip", "install", "-q", "--python", str(bin_dir / "python"), "tabulate==0.8.10"],
                   check=True)
    assert "env changed: packages.tabulate: 0.9.0 → 0.8.10" in caller("status").stdout
    assert caller.build()["executed"] == ["table"]


def test_a_python_without_the_locked_packages_is_one_line_not_a_wall(ws, tmp_path):
    """The step's python3 changes to one that has none of the locked packages: status sums the
    change up in one line per node instead of one line per package."""
    sci = ws({**LOCKED_STEP, "sci.yaml": LOCKED_STEP["sci.yaml"].replace(
        'python3 -c "import tabulate; print(tabulate.tabulate([[1, 2]]))"', "echo hi")})
    (sci.root / "uv.lock").write_bytes((Path(__file__).parents[1] / "uv.lock").read_bytes())
    (sci.root / "pyproject.toml").write_bytes((Path(__file__).parents[1] / "pyproject.toml").read_bytes())
    sci.build()
    bare = venv(tmp_path / "bare")
    lines = [line for line in Sci(sci.root, with_path(bare))("status").stdout.splitlines() if "env changed" in line]
    assert any("locked packages not installed any more (annotated-types, blake3, click, …)" in line
               for line in lines), lines
    assert len(lines) <= 8, lines


@pytest.mark.slow
def test_the_readme_quick_start_keeps_its_cache(tmp_path):
    """Exactly as README.md says: `uv sync --frozen --no-dev && uv run --frozen --no-sync sci
    build dossier`, then `uv run sci status` (which installs the dev group): every node is up
    to date, and building again runs nothing."""
    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    quick = next(line for line in readme.splitlines() if "uv sync --frozen --no-dev" in line)
    command = quick.split("#", 1)[0].strip().removeprefix("pip install uv && ")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                           capture_output=True, check=True).stdout.decode().split("\0")
    clone = tmp_path / "clone"
    for rel in filter(None, files):
        if (repo / rel).is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, clone / rel)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "SCI_CAS")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != os.path.dirname(sys.executable))

    def sh(cmd: str) -> str:
        proc = subprocess.run(["bash", "-c", cmd], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr

    assert "15 executed" in sh(command)
    status = sh("uv run sci status")
    assert "would run" not in status and "env changed" not in status, status
    assert status.count("up to date") == 15
    assert "15 cached" in sh("uv run --frozen --no-sync sci build dossier")
