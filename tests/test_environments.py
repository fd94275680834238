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


# -- declared environments: a uv project, a PEP 723 script -----------------------------------
DECLARED = {
    "sci.yaml": """
        version: 1
        environments:
          analysis: {python: envs/analysis}
          plot: {script: rules/plot.py}
        steps:
          shell:
            environment: analysis
            cmd: python -c "import sys, tabulate; print(sys.prefix); print(tabulate.__version__)" > {outs.out}
            outs: {out: shell.txt}
          py:
            environment: analysis
            fn: rules.where:where
            outs: {out: py.txt}
          plot:
            environment: plot
            cmd: python rules/plot.py > {outs.out}
            code: [rules/plot.py]
            outs: {out: plot.txt}
          plain:
            cmd: python3 -c "import sys; print(sys.prefix)" > {outs.out}
            outs: {out: plain.txt}
        """,
    "rules/__init__.py": "",
    "rules/where.py": PIPELINE["rules/where.py"],
    "rules/plot.py": """
        # /// script
        # requires-python = ">=3.11"
        # dependencies = ["termcolor==2.4.0"]
        # ///
        import sys
        import termcolor
        print(sys.prefix, termcolor.__name__)
        """,
}


def declared_workspace(ws, tabulate: str = "0.9.0") -> Sci:
    sci = ws(DECLARED)
    project = sci.root / "envs" / "analysis"
    project.mkdir(parents=True)
    uv_project(project, [f"tabulate=={tabulate}"], ["termcolor"], name="analysis")
    return sci


def test_steps_run_in_their_declared_environments(ws):
    """A cmd and an fn step import a package of a uv project environment, a script step one of
    its PEP 723 metadata; none of them is sci's, and a step without an environment runs the
    caller's python3. Nothing runs the second time, and `sci env list` says where they are."""
    sci = declared_workspace(ws)
    out = sci.build()
    assert out["executed"] == ["plain", "plot", "py", "shell"]
    assert "prepared  environment analysis" in out["stderr"] and "prepared  environment plot" in out["stderr"]
    shell = (sci.root / "shell.txt").read_text().split()
    py = (sci.root / "py.txt").read_text().split()
    envs_dir = sci.root / ".sci" / "envs"
    assert shell[0].startswith(str(envs_dir / "analysis-")) and shell[1] == "0.9.0"
    assert py[0].startswith(str(envs_dir / "analysis-")) and py[1] == "0.9.0"
    assert (sci.root / "plot.txt").read_text().split()[0].startswith(str(envs_dir / "plot-"))
    assert not (sci.root / "plain.txt").read_text().startswith(str(envs_dir))
    # the dev group is not in the environment (nor in its identity)
    venv_python = Path(py[0])
    assert subprocess.run([str(venv_python), "-c", "import termcolor"], capture_output=True).returncode != 0
    assert sci.build()["executed"] == []
    listed = json.loads(sci("env", "list", "--json").stdout)["environments"]
    by_name = {e["name"]: e for e in listed}
    assert by_name["analysis"]["packages"] == {"tabulate": "0.9.0"}
    assert by_name["plot"]["requirements"] == ["termcolor==2.4.0"]
    assert all(e["prepared"] for e in listed)
    # each StepResult names the environment its node ran in
    manifest = json.loads((sorted((sci.root / "runs").iterdir())[-2] / "manifest.json").read_text())
    assert {p["node"] for p in manifest["plan"]} == {"plain", "plot", "py", "shell"}


def test_bumping_a_locked_version_reruns_exactly_that_environments_nodes(ws):
    sci = declared_workspace(ws)
    sci.build()
    project = sci.root / "envs" / "analysis"
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace("tabulate==0.9.0", "tabulate==0.8.10"))
    proc = sci("status", check=2)  # the lock no longer matches its pyproject.toml: never re-resolved
    assert "envs/analysis/uv.lock does not match envs/analysis/pyproject.toml" in proc.stderr
    assert "uv lock" in proc.stderr and "Traceback" not in proc.stderr
    subprocess.run([UV, "lock", "-q", "--python", sys.executable], cwd=project, check=True)
    status = sci("status").stdout
    assert "would run   shell: env changed: environment analysis: tabulate 0.9.0 → 0.8.10" in status
    assert "would run   py: env changed: environment analysis: tabulate 0.9.0 → 0.8.10" in status
    assert "up to date  plot" in status and "up to date  plain" in status
    out = sci.build()
    assert out["executed"] == ["py", "shell"]
    assert (sci.root / "shell.txt").read_text().split()[1] == "0.8.10"
    assert "environment analysis: tabulate 0.9.0 → 0.8.10" in sci("diff").stdout  # the last two builds
    # the environment of the old identity is unused now: gc removes it, and only it
    envs_dir = sci.root / ".sci" / "envs"
    before = sorted(p.name for p in envs_dir.iterdir() if p.is_dir())
    assert len([n for n in before if n.startswith("analysis-")]) == 2
    gc = json.loads(sci("gc", "--json").stdout)
    gone = [o["object"] for o in gc["objects"] if o["kind"] == "environment"]
    assert len(gone) == 1 and gone[0].startswith("analysis-")
    after = sorted(p.name for p in envs_dir.iterdir() if p.is_dir())
    assert after == sorted(set(before) - set(gone))
    assert sci.build()["executed"] == []  # what gc kept is what the pipeline uses


def test_a_prepared_environment_needs_no_network_and_no_uv(ws, tmp_path):
    """Prepared once: later builds neither call uv nor reach the index (uv is off the PATH and
    every proxy points nowhere), even after the outputs are deleted and the nodes re-run."""
    sci = declared_workspace(ws)
    assert sci("env", "prepare").stdout.count("prepared in") == 2
    assert sci("env", "prepare").stdout.count("ready") == 2
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "python3", "cat", "env"):  # what the steps need, and no uv
        found = shutil.which(tool)
        if found:
            os.symlink(found, bare / tool)
    offline = Sci(sci.root, {"PATH": str(bare), "UV_OFFLINE": "1", "HTTPS_PROXY": "http://127.0.0.1:9",
                             "HTTP_PROXY": "http://127.0.0.1:9"})
    out = offline.build()
    assert out["executed"] == ["plain", "plot", "py", "shell"]
    assert "prepared  environment" not in out["stderr"]


def test_two_builds_preparing_one_environment_one_waits(ws):
    """Two processes preparing the same environment at once: one prepares it, the other waits
    for it and finds it ready (never two half-made venvs in one place)."""
    sci = declared_workspace(ws)
    procs = [subprocess.Popen([sys.executable, "-m", "sci.cli", "env", "prepare", "analysis", "--json"],
                              cwd=sci.root, env=sci.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results.append(json.loads(out)["environments"][0])
    assert sorted(r["prepared"] for r in results) == [False, True]
    assert results[0]["directory"] == results[1]["directory"]
    assert sci.build()["executed"] == ["plain", "plot", "py", "shell"]


def test_environment_mistakes_are_one_line_exit_2(ws):
    sci = ws({"sci.yaml": """
        version: 1
        environments:
          analysis: {python: envs/analysis}
        steps:
          a:
            environment: analysiss
            cmd: echo > {outs}
            outs: [a.txt]
        """})
    proc = sci("build", check=2)
    assert "sci.yaml:6:18: step a: unknown environment 'analysiss' (hint: environments declared: analysis)" \
        in proc.stderr
    (sci.root / "sci.yaml").write_text((sci.root / "sci.yaml").read_text().replace("analysiss", "analysis"))
    proc = sci("build", check=2)
    assert "envs/analysis/pyproject.toml does not exist" in proc.stderr and "Traceback" not in proc.stderr
    (sci.root / "sci.yaml").write_text("version: 1\nenvironments:\n  x: {python: a, script: b.py}\n"
                                       "steps:\n  a:\n    cmd: echo > {outs}\n    outs: [a.txt]\n")
    proc = sci("build", check=2)
    assert "exactly one of python, script or container" in proc.stderr
    (sci.root / "sci.yaml").write_text("version: 1\nenvironments:\n  box: {container: 'debian:bookworm'}\n"
                                       "steps:\n  a:\n    environment: box\n    cmd: echo > {outs}\n"
                                       "    outs: [a.txt]\n")
    proc = sci("build", check=2)
    assert "sci.yaml:3:20: environment box: container 'debian:bookworm' is given by tag, not by digest" \
        in proc.stderr


# -- containers ------------------------------------------------------------------------------
PODMAN = shutil.which("podman")
BUSYBOX = shutil.which("busybox")
# The recipe that works on these machines (cgroup v1 hybrid, root, no registry): runc, the
# cgroupfs manager, no default ulimits (docs/environments.md).
CONTAINERS_CONF = '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n'


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two tiny local images (a busybox rootfs, then one with a marker file), by digest."""
    if PODMAN is None or BUSYBOX is None:
        pytest.skip("podman or busybox is not installed (.ci/setup installs them on Debian)")
    base = tmp_path_factory.mktemp("images")
    conf = base / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    tag = f"localhost/sci-test-{os.getpid()}"
    digests = []
    for version in (1, 2):
        rootfs = base / f"rootfs{version}"
        (rootfs / "bin").mkdir(parents=True)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for tool in ("sh", "cat", "echo", "ls"):
            os.symlink("busybox", rootfs / "bin" / tool)
        (rootfs / "etc").mkdir()
        (rootfs / "etc" / "image-version").write_text(f"{version}\n")
        tar = base / f"rootfs{version}.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
        imported = subprocess.run([PODMAN, "import", "-q", str(tar), f"{tag}:{version}"], env=env,
                                  capture_output=True, text=True)
        if imported.returncode != 0:
            pytest.skip(f"podman cannot import an image here: {imported.stderr.strip()[-200:]}")
        digest = subprocess.run([PODMAN, "images", "--digests", "--format", "{{.Digest}}", f"{tag}:{version}"],
                                env=env, capture_output=True, text=True, check=True).stdout.split()[0]
        digests.append(f"{tag}@{digest}")
    probe = subprocess.run([PODMAN, "run", "--rm", "--network=none", digests[0], "/bin/cat", "/etc/image-version"],
                           env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {probe.stderr.strip()[-200:]}")
    yield digests, str(conf)
    subprocess.run([PODMAN, "rmi", "-f", f"{tag}:1", f"{tag}:2"], env=env, capture_output=True)


def test_a_step_runs_in_a_container_by_digest(ws, images):
    """A cmd step in a container: it reads its dep through the read-only workspace mount, sees
    the image's files, writes its output into its box; a new image digest re-runs it, named."""
    (first, second), conf = images
    sci = ws({"sci.yaml": f"""
        version: 1
        environments:
          box: {{container: "{first}"}}
        steps:
          inside:
            environment: box
            deps: [in.txt]
            cmd: cat {{deps}} /etc/image-version > {{outs}}
            outs: [out.txt]
          outside:
            cmd: echo host > {{outs}}
            outs: [host.txt]
        """, "in.txt": "hello\n"}, env={"CONTAINERS_CONF": conf})
    out = sci.build()
    assert out["executed"] == ["inside", "outside"]
    assert (sci.root / "out.txt").read_text() == "hello\n1\n"
    assert sci.build()["executed"] == []
    text = (sci.root / "sci.yaml").read_text()
    (sci.root / "sci.yaml").write_text(text.replace(first, second))
    status = sci("status").stdout
    assert f"would run   inside: env changed: environment box: image {first} → {second}" in status
    assert "up to date  outside" in status
    assert sci.build()["executed"] == ["inside"]
    assert (sci.root / "out.txt").read_text() == "hello\n2\n"
