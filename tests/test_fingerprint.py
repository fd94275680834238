"""The environment fingerprint: components, caching (no subprocess when warm), secrets, diff."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Sci
from sci import canonical
from sci.build import fingerprint
from sci.build import gpu
from sci.envs import locks
from sci.errors import UserError
from sci.build.gpu import GpuRequired
from sci.store.hashing import StatCache


@pytest.fixture(autouse=True)
def _fresh_memos():
    fingerprint.clear_memos()
    yield
    fingerprint.clear_memos()


def write_tool(bindir: Path, name: str, body: str) -> Path:
    """An executable shell script `name` in bindir."""
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


UV_LOCK = """\
version = 1
requires-python = ">=3.11"

[[package]]
name = "NumPy"
version = "0.0.1"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "blake3"
version = "0.0.1"

[[package]]
name = "sci-surely-not-installed_pkg"
version = "1.0"
"""


# -- built-in components ---------------------------------------------------------------------
def test_builtin_components_name_the_interpreter_os_and_architecture(workspace):
    c = fingerprint.environment(workspace, [], [], [])
    assert c["python"] == platform.python_version()
    assert c["implementation"] == sys.implementation.name
    assert c["os"] == platform.system()
    assert c["machine"] == platform.machine()
    from sci import __version__
    assert c["sci"] == __version__
    # host-specific facts that cannot change output bytes stay out (kernel release, hostname)
    flat = canonical.dumps_text(c)
    assert platform.release() not in flat
    assert platform.node() not in flat
    assert c["files"] == {} and c["packages"] == {} and c["vars"] == {} and c["tools"] == {}


def test_files_are_content_digests_and_a_missing_file_is_named(workspace):
    (workspace / "uv.lock").write_text(UV_LOCK)
    (workspace / "conf").mkdir()
    (workspace / "conf" / "a.txt").write_text("a")
    c = fingerprint.environment(workspace, ["uv.lock", "conf"], [], [])
    assert c["files"]["uv.lock"] == blake3(UV_LOCK.encode()).hexdigest()
    assert len(c["files"]["conf"]) == 64
    with pytest.raises(UserError) as err:
        fingerprint.environment(workspace, ["missing.lock"], [], [])
    assert "missing.lock" in err.value.message and err.value.hint
    assert err.value.exit_code == 2


# -- packages --------------------------------------------------------------------------------
def test_uv_lock_packages_get_installed_versions_or_not_installed(workspace):
    (workspace / "uv.lock").write_text(UV_LOCK)
    c = fingerprint.environment(workspace, ["uv.lock"], [], [])
    assert c["packages"] == {
        "blake3": importlib.metadata.version("blake3"),
        "numpy": importlib.metadata.version("numpy"),
        "sci-surely-not-installed-pkg": fingerprint.NOT_INSTALLED,
    }


def test_requirements_poetry_and_pylock_are_read(workspace):
    (workspace / "requirements-dev.txt").write_text(
        "# pinned\n"
        "click==8.1.7 ; python_version >= '3.8'  # the CLI\n"
        "Ruamel.YAML[jinja2]>=0.18 \\\n    --hash=sha256:abc\n"
        "-r other-requirements.txt\n"
        "-e .\n"
        "--index-url https://example.invalid/simple\n"
        "filelock @ https://example.invalid/filelock.whl\n"
        "\n")
    (workspace / "poetry.lock").write_text('[[package]]\nname = "networkx"\nversion = "3"\n')
    (workspace / "pylock.toml").write_text('lock-version = "1.0"\n[[packages]]\nname = "pydantic"\n')
    files = ["requirements-dev.txt", "poetry.lock", "pylock.toml"]
    c = fingerprint.environment(workspace, files, [], [])
    assert sorted(c["packages"]) == ["click", "filelock", "networkx", "pydantic", "ruamel-yaml"]
    assert c["packages"]["click"] == importlib.metadata.version("click")
    assert c["packages"]["ruamel-yaml"] == importlib.metadata.version("ruamel.yaml")


def test_a_file_that_is_not_a_lock_lists_no_packages(workspace):
    (workspace / "notes.txt").write_text("numpy\n")
    assert fingerprint.environment(workspace, ["notes.txt"], [], [])["packages"] == {}


def test_a_broken_lock_is_a_user_error(workspace):
    (workspace / "uv.lock").write_text("[[package]\nname=")
    with pytest.raises(UserError, match="uv lock"):
        fingerprint.environment(workspace, ["uv.lock"], [], [])


_names = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,6}([-_.][A-Za-z0-9]{1,4}){0,2}", fullmatch=True)
_specs = st.sampled_from(["", "==1.0", ">=2", "[extra]>=1,<3", " ; sys_platform == 'linux'", "~=0.4"])


@given(st.lists(st.tuples(_names, _specs), max_size=8))
def test_requirements_names_round_trip(reqs):
    text = "\n".join(f"{name}{spec}" for name, spec in reqs).encode()
    expected = sorted({locks.normalize_name(name) for name, _ in reqs})
    assert locks.parse_lock_names("requirements", text) == expected


def test_installed_versions_agree_with_importlib_metadata():
    installed = fingerprint.installed_versions()
    for dist in ("numpy", "blake3", "click", "pydantic", "hypothesis"):
        assert installed[locks.normalize_name(dist)] == importlib.metadata.version(dist)


def test_installed_versions_are_cached_until_sys_path_changes(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = fingerprint.installed_versions(cache)
    assert (cache / fingerprint.CACHE_SUBDIR / "installed.json").is_file()
    fingerprint.clear_memos()  # a new sci process

    def no_scan(_dirs):
        raise AssertionError("an unchanged sys.path was scanned again")

    monkeypatch.setattr(fingerprint, "_scan_installed", no_scan)
    assert fingerprint.installed_versions(cache) == first
    monkeypatch.undo()

    # an install: a new distribution appears in a sys.path directory (first entry wins)
    site = tmp_path / "site"
    (site / "numpy-0.0.1.dist-info").mkdir(parents=True)
    (site / "Fake_Pkg-9.9.post1.dist-info").mkdir()
    (site / "legacy_tool-1.2-py3.11.egg-info").mkdir()
    monkeypatch.syspath_prepend(str(site))
    after = fingerprint.installed_versions(cache)
    assert after["fake-pkg"] == "9.9.post1"
    assert after["legacy-tool"] == "1.2"
    assert after["numpy"] == "0.0.1"


def test_a_lock_is_parsed_only_when_its_digest_changes(workspace, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (workspace / "uv.lock").write_text(UV_LOCK)
    first = fingerprint.environment(workspace, ["uv.lock"], [], [], cache_dir=cache)
    fingerprint.clear_memos()  # a new sci process: only the on-disk cache remains

    def no_parse(*_a, **_k):
        raise AssertionError("an unchanged lock was parsed again")

    monkeypatch.setattr(locks, "parse_lock_names", no_parse)
    assert fingerprint.environment(workspace, ["uv.lock"], [], [], cache_dir=cache) == first
    monkeypatch.undo()

    (workspace / "uv.lock").write_text(UV_LOCK + '\n[[package]]\nname = "click"\n')
    fingerprint.clear_memos()
    assert "click" in fingerprint.environment(workspace, ["uv.lock"], [], [], cache_dir=cache)["packages"]


def test_a_damaged_cache_entry_is_only_recomputed(workspace, tmp_path):
    cache = tmp_path / "cache"
    (workspace / "uv.lock").write_text(UV_LOCK)
    first = fingerprint.environment(workspace, ["uv.lock"], [], [], cache_dir=cache)
    for entry in (cache / fingerprint.CACHE_SUBDIR).rglob("*.json"):
        entry.write_bytes(b"\x00garbage")
    fingerprint.clear_memos()
    assert fingerprint.environment(workspace, ["uv.lock"], [], [], cache_dir=cache) == first


# -- vars and secrets ------------------------------------------------------------------------
@pytest.mark.parametrize("name, secret", [
    ("GITHUB_TOKEN", True), ("aws_secret_access_key", True), ("DB_Password", True),
    ("API_KEY", True), ("MYSQL_PASSWD", True), ("MY_SOLVER_FLAG", False), ("OMP_NUM_THREADS", False),
    ("PATH", False),
])
def test_is_secret_name(name, secret):
    assert fingerprint.is_secret_name(name) is secret


@given(st.text(alphabet="abcXYZ_09", max_size=6), st.sampled_from(["token", "Secret", "PASSWORD", "kEy"]),
       st.text(alphabet="abcXYZ_09", max_size=6))
def test_any_name_containing_a_secret_marker_is_secret(prefix, marker, suffix):
    assert fingerprint.is_secret_name(prefix + marker + suffix)


def test_vars_record_values_but_secrets_only_by_presence(workspace, monkeypatch):
    monkeypatch.setenv("MY_SOLVER_FLAG", "fast-path")
    monkeypatch.setenv("MY_API_TOKEN", "hunter2-very-secret-value")
    monkeypatch.delenv("UNSET_FLAG", raising=False)
    monkeypatch.delenv("UNSET_SECRET", raising=False)
    c = fingerprint.environment(workspace, [], ["MY_SOLVER_FLAG", "MY_API_TOKEN", "UNSET_FLAG",
                                               "UNSET_SECRET"], [])
    assert c["vars"] == {
        "MY_SOLVER_FLAG": "fast-path",
        "MY_API_TOKEN": {"secret": True, "set": True},
        "UNSET_FLAG": None,
        "UNSET_SECRET": {"secret": True, "set": False},
    }
    assert b"hunter2" not in canonical.dumps(c)
    before = fingerprint.digest(c)
    monkeypatch.setenv("MY_API_TOKEN", "another-value")
    assert fingerprint.digest(fingerprint.environment(
        workspace, [], ["MY_SOLVER_FLAG", "MY_API_TOKEN", "UNSET_FLAG", "UNSET_SECRET"], [])) == before


# -- tools -----------------------------------------------------------------------------------
@pytest.fixture
def counted_tool(tmp_path, monkeypatch):
    """A tool `fakealign` on PATH that counts how often it runs in calls.txt."""
    bindir = tmp_path / "bin"
    calls = tmp_path / "calls.txt"
    tool = write_tool(bindir, "fakealign", f'echo run >> "{calls}"\necho "fakealign 1.2.3"\necho extra\n')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return tool, calls


def test_tools_record_digest_and_version_and_cache_the_version(workspace, tmp_path, counted_tool):
    tool, calls = counted_tool
    cache = tmp_path / "cache"
    sc = StatCache(tmp_path / "stat")
    c = fingerprint.environment(workspace, [], [], ["fakealign"], stat_cache=sc, cache_dir=cache)
    assert c["tools"] == {"fakealign": {"digest": blake3(tool.read_bytes()).hexdigest(),
                                        "version": "fakealign 1.2.3"}}
    assert str(tool.parent) not in canonical.dumps_text(c)  # where it lives is host-specific
    fingerprint.clear_memos()
    assert fingerprint.environment(workspace, [], [], ["fakealign"], stat_cache=sc, cache_dir=cache) == c
    assert calls.read_text().count("run") == 1  # the second (new-process) call hit the cache

    tool.write_text(tool.read_text().replace("1.2.3", "1.3.0"))
    c2 = fingerprint.environment(workspace, [], [], ["fakealign"], stat_cache=sc, cache_dir=cache)
    assert c2["tools"]["fakealign"]["version"] == "fakealign 1.3.0"
    assert c2["tools"]["fakealign"]["digest"] != c["tools"]["fakealign"]["digest"]


def test_a_tool_that_prints_its_version_on_stderr_and_fails(workspace, tmp_path, monkeypatch):
    write_tool(tmp_path / "bin", "oldtool", 'echo "" >&2\necho "Program: oldtool 0.7" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    c = fingerprint.environment(workspace, [], [], ["oldtool"])
    assert c["tools"]["oldtool"]["version"] == "Program: oldtool 0.7"


def test_a_tool_not_on_path_is_a_user_error_naming_it(workspace):
    with pytest.raises(UserError) as err:
        fingerprint.environment(workspace, [], [], ["sci-no-such-tool-xyz"])
    assert "sci-no-such-tool-xyz" in err.value.message and "PATH" in err.value.message


def test_the_warm_path_spawns_no_process(workspace, tmp_path, counted_tool, monkeypatch):
    (workspace / "uv.lock").write_text(UV_LOCK)
    cache = tmp_path / "cache"
    sc = StatCache(tmp_path / "stat")
    args = (workspace, ["uv.lock"], ["MY_SOLVER_FLAG"], ["fakealign", "sh"])
    cold = fingerprint.environment(*args, stat_cache=sc, cache_dir=cache)
    sc.save()
    fingerprint.clear_memos()

    def no_process(*_a, **_k):
        raise AssertionError("the warm fingerprint started a process")

    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    warm = fingerprint.environment(*args, stat_cache=StatCache(tmp_path / "stat"), cache_dir=cache)
    assert warm == cold


# -- gpu -------------------------------------------------------------------------------------
@pytest.fixture
def fake_gpu(tmp_path, monkeypatch):
    write_tool(tmp_path / "gbin", "nvidia-smi", """\
case "$1" in
  --query-gpu=*) echo "0, NVIDIA A100-SXM4-80GB, 81920, 550.54.15, GPU-aaaa"
                 echo "1, NVIDIA A100-SXM4-80GB, 81920, 550.54.15, GPU-bbbb" ;;
  -q) echo "Driver Version                            : 550.54.15"
      echo "CUDA Version                              : 12.4" ;;
esac
""")
    monkeypatch.setenv("PATH", f"{tmp_path / 'gbin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(gpu, "_cached", None)


def test_gpu_components_name_model_driver_and_cuda(fake_gpu):
    assert fingerprint.gpu_components() == {
        "model": ["NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB"],
        "driver": "550.54.15",
        "cuda": "12.4",
    }


def test_gpu_components_without_a_gpu_raise_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(gpu, "_cached", None)
    with pytest.raises(GpuRequired, match="nvidia-smi is not on PATH") as err:
        fingerprint.gpu_components()
    assert err.value.exit_code == 2


# -- digest and diff -------------------------------------------------------------------------
FIXED = {
    "python": "3.11.7", "implementation": "cpython", "os": "Linux", "libc": "glibc 2.36",
    "machine": "x86_64", "sci": "0.1.0",
    "files": {"uv.lock": "ab" * 32},
    "packages": {"numpy": "1.26.4", "torch": "not-installed"},
    "vars": {"MY_FLAG": "1", "HF_TOKEN": {"secret": True, "set": True}},
    "tools": {"bwa": {"digest": "cd" * 32, "version": "bwa 0.7.17"}},
}


def test_digest_is_pinned():
    # A change here changes every cache key: bump FINGERPRINT_FORMAT and say so in the changelog.
    assert fingerprint.digest(FIXED) == "ce85e0ad6d88ce40f7720e83750f262443f75b222ad8aa3108f02afbced8750b"


def test_digest_ignores_dict_order_and_sees_every_component():
    reordered = dict(reversed(list(FIXED.items())))
    assert fingerprint.digest(reordered) == fingerprint.digest(FIXED)
    seen = {fingerprint.digest(FIXED)}
    for key in FIXED:
        changed = {**FIXED, key: "other"}
        seen.add(fingerprint.digest(changed))
    assert len(seen) == len(FIXED) + 1


def test_diff_names_each_changed_entry():
    new = canonical.loads(canonical.dumps(FIXED))
    new["python"] = "3.12.1"
    new["packages"]["numpy"] = "2.0.0"
    new["packages"]["scipy"] = "1.13.0"
    del new["packages"]["torch"]
    new["files"]["uv.lock"] = "ef" * 32
    new["vars"]["MY_FLAG"] = "2"
    new["vars"]["HF_TOKEN"] = {"secret": True, "set": False}
    new["tools"]["bwa"] = {"digest": "00" * 32, "version": "bwa 0.7.18"}
    new["gpu"] = {"model": ["NVIDIA L4"], "driver": "550", "cuda": "12.4"}
    assert fingerprint.diff(FIXED, new) == [
        "files.uv.lock",
        'gpu: added',
        "packages.numpy: 1.26.4 → 2.0.0",
        "packages.scipy: added (1.13.0)",
        "packages.torch: removed",
        "python: 3.11.7 → 3.12.1",
        "tools.bwa: bwa 0.7.17 → bwa 0.7.18",
        "vars.HF_TOKEN: set → unset",
        "vars.MY_FLAG: 1 → 2",
    ]
    assert fingerprint.diff(FIXED, FIXED) == []


def test_diff_of_gpu_and_same_version_tools():
    old = {"gpu": {"model": ["NVIDIA A100"], "driver": "535", "cuda": "12.2"},
           "tools": {"sam": {"digest": "a", "version": "1"}}, "vars": {"X": None}}
    new = {"gpu": {"model": ["NVIDIA H100"], "driver": "550", "cuda": "12.2"},
           "tools": {"sam": {"digest": "b", "version": "1"}}, "vars": {"X": " padded"}}
    assert fingerprint.diff(old, new) == [
        "gpu.driver: 535 → 550",
        "gpu.model: NVIDIA A100 → NVIDIA H100",
        "tools.sam: executable changed (same --version)",
        "vars.X: unset → ' padded'",
    ]


@settings(max_examples=50)
@given(st.dictionaries(st.sampled_from(["numpy", "torch", "click"]), st.sampled_from(["1", "2"])),
       st.dictionaries(st.sampled_from(["numpy", "torch", "click"]), st.sampled_from(["1", "2"])))
def test_diff_is_empty_exactly_when_digests_match(a, b):
    old, new = {**FIXED, "packages": a}, {**FIXED, "packages": b}
    assert (fingerprint.diff(old, new) == []) == (fingerprint.digest(old) == fingerprint.digest(new))


# -- what a uv.lock contributes: the closure of the project's own dependencies ----------------
PROJECT_LOCK = """\
version = 1
requires-python = ">=3.11"

[[package]]
name = "demo"
version = "0.1.0"
source = { virtual = "." }
dependencies = [
    { name = "alpha" },
    { name = "beta", extra = ["fast"] },
    { name = "gamma", version = "1.0", source = { registry = "https://pypi.org/simple" }, marker = "python_full_version < '3.12'" },
    { name = "gamma", version = "2.0", source = { registry = "https://pypi.org/simple" }, marker = "python_full_version >= '3.12'" },
]

[package.optional-dependencies]
plot = [{ name = "plotlib" }]

[package.dev-dependencies]
dev = [{ name = "pytest" }]

[[package]]
name = "alpha"
version = "1.2.3"
source = { registry = "https://pypi.org/simple" }
dependencies = [{ name = "alpha-core" }]

[[package]]
name = "alpha_core"
version = "0.9"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "beta"
version = "4.0"
source = { registry = "https://pypi.org/simple" }

[package.optional-dependencies]
fast = [{ name = "speedup" }]
slow = [{ name = "never" }]

[[package]]
name = "speedup"
version = "0.1"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "never"
version = "0.1"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "gamma"
version = "1.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "gamma"
version = "2.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "plotlib"
version = "3.3"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "pytest"
version = "8.0"
source = { registry = "https://pypi.org/simple" }
dependencies = [{ name = "pluggy" }]

[[package]]
name = "pluggy"
version = "1.5"
source = { registry = "https://pypi.org/simple" }
"""


def test_a_uv_lock_contributes_what_its_project_installs_without_the_dev_group():
    from sci.envs.locks import locked_packages

    data = PROJECT_LOCK.encode()
    base = {"alpha": "1.2.3", "alpha-core": "0.9", "beta": "4.0", "speedup": "0.1", "gamma": "1.0 | 2.0"}
    assert locked_packages("uv", data) == base  # not pytest, pluggy (dev), plotlib (extra), never
    assert locked_packages("uv", data, groups=("dev",)) == {**base, "pytest": "8.0", "pluggy": "1.5"}
    assert locked_packages("uv", data, extras=("plot",)) == {**base, "plotlib": "3.3"}
    assert locks.parse_lock_names("uv", data) == sorted(base)


def test_many_package_changes_are_summed_up_never_a_wall():
    old = {"packages": {f"p{i:02d}": "1.0" for i in range(40)}}
    new = {"packages": {f"p{i:02d}": fingerprint.NOT_INSTALLED for i in range(40)}}
    assert fingerprint.diff(old, new) == ["packages: 40 locked packages not installed any more (p00, p01, p02, …)"]
    new["packages"]["p05"] = "2.0"
    lines = fingerprint.diff(old, new)
    assert lines == ["packages: 39 locked packages not installed any more (p00, p01, p02, …)",
                     "packages.p05: 1.0 → 2.0"]
    few = {"packages": dict(old["packages"], p01="1.1", p02="1.2")}
    assert fingerprint.diff(old, few) == ["packages.p01: 1.0 → 1.1", "packages.p02: 1.0 → 1.2"]
    many = {"packages": {k: "9" for k in old["packages"]}}
    lines = fingerprint.diff(old, many)
    assert len(lines) == fingerprint.MAX_ENTRY_LINES + 1 and lines[-1] == "packages: 34 more changed"


# -- the step's python3: asked once per workspace, while the plan is read -----------------------
def _shim_python(bindir: Path, calls: Path, answer: str | None = None) -> Path:
    """A `python3` on PATH that is a shell script (as a pyenv shim is): it notes each start in
    `calls`, then runs the real interpreter — or, given `answer`, prints that instead."""
    body = f'echo run >> "{calls}"\n'
    body += f"echo '{answer}'\n" if answer is not None else f'exec "{os.path.realpath(sys.executable)}" "$@"\n'
    return write_tool(bindir, "python3", body)


def _on_path(root: Path, bindir: Path) -> Sci:
    """sci in `root` with `bindir` first on the PATH its steps (and its probe) search."""
    return Sci(root, {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"})


def _interpreter_of_last_run(root: Path) -> dict:
    run = sorted((root / "runs").iterdir())[-1]
    comps = canonical.loads((run / "manifest.json").read_text())["environment"]["components"]
    return {k: comps[k] for k in ("python", "implementation")}


STEP = "version: 1\nsteps:\n  s:\n    cmd: \"echo ok > {outs}\"\n    outs: [out.txt]\n"


def test_the_steps_python3_is_asked_once_and_its_answer_enters_the_key(workspace, tmp_path):
    """The probe a build starts before it plans is the one whose answer is recorded; the next
    builds (a no-op, an edit) ask the cache, not the interpreter; another answer is another key."""
    calls = tmp_path / "calls.txt"
    bindir = tmp_path / "bin"
    _shim_python(bindir, calls)
    (workspace / "sci.yaml").write_text(STEP)
    sci = _on_path(workspace, bindir)
    sci.build()
    assert calls.read_text().count("run") == 1
    assert _interpreter_of_last_run(workspace) == {"python": platform.python_version(),
                                                   "implementation": sys.implementation.name}
    (workspace / "out.txt").unlink()  # not a no-op: the full path keys the node again
    assert sci.build()["cached"] == ["s"]
    assert calls.read_text().count("run") == 1
    # the same script path answering something else is another interpreter: another key
    _shim_python(bindir, calls, answer='["2.7.18", "cpython", []]')
    assert sci.build()["executed"] == ["s"]
    assert calls.read_text().count("run") == 2
    assert _interpreter_of_last_run(workspace)["python"] == "2.7.18"


def test_a_python3_that_answers_nonsense_is_recorded_as_not_answering(workspace, tmp_path):
    """A probe that prints no JSON names the interpreter as not answering, and the cmd step
    still builds; a build refused before its keys ends the probe it started."""
    calls = tmp_path / "calls.txt"
    bindir = tmp_path / "bin"
    shim = _shim_python(bindir, calls, answer="Python is not installed here")
    (workspace / "sci.yaml").write_text(STEP)
    sci = _on_path(workspace, bindir)
    sci.build()
    assert _interpreter_of_last_run(workspace) == {"python": f"<{shim} did not answer>", "implementation": "unknown"}
    # a slow interpreter, and a plan that is refused: the probe is ended, never left to finish
    write_tool(bindir, "python3", f'sleep 1\necho late >> "{calls}"\n')
    (workspace / "sci.yaml").write_text("version: 1\nsteps: {s: {cmd: 'echo {nope}', outs: [x]}}\n")
    (workspace / ".sci" / "cache").rename(tmp_path / "old-cache")  # nothing cached: the probe starts
    bad = sci("build", check=2)
    assert "Traceback" not in bad.stderr
    time.sleep(1.5)
    assert "late" not in calls.read_text()


def test_the_steps_python3_is_asked_where_sandboxed_steps_run(workspace, tmp_path):
    """A shim that picks its interpreter by directory (pyenv and a `.python-version`) is asked
    from the scratch directory, where a sandboxed step's box is: the record names the
    interpreter the step ran, not the one the workspace's own directory would pick."""
    bindir = tmp_path / "bin"
    write_tool(bindir, "python3", "if [ -f .python-version ]; then echo '[\"9.9.9\", \"cpython\", []]'; exit 0; fi\n"
                                  f'exec "{os.path.realpath(sys.executable)}" "$@"\n')
    (workspace / ".python-version").write_text("9.9.9\n")
    (workspace / "sci.yaml").write_text(
        "version: 1\nsteps:\n  v:\n    cmd: \"python3 -c 'import platform; print(platform.python_version())' > {outs}\"\n"
        "    outs: [v.txt]\n")
    _on_path(workspace, bindir).build()
    ran = (workspace / "v.txt").read_text().strip()
    assert ran == platform.python_version()
    assert _interpreter_of_last_run(workspace)["python"] == ran
