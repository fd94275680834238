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
