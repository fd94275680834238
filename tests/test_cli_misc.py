"""doctor, schema and --version through the CLI."""

from __future__ import annotations

import json

from conftest import REPO, Sci, no_traceback


def test_version(tmp_path):
    proc = Sci(tmp_path)("--version")
    assert proc.stdout.strip().startswith("sci ")


def test_doctor_json_and_require_gpu(ws):
    sci = ws({"sci.yaml": "version: 1\nsteps:\n  a:\n    cmd: echo > {outs}\n    outs: [a.txt]\n"})
    sci.build()
    report = json.loads(sci("doctor", "--json").stdout)
    assert report["python"]["version"].count(".") == 2
    assert report["store"]["format"] == "sci-store 1"
    text = sci("doctor").stdout
    assert "store" in text and "python" in text
    if not report["gpus"]:
        proc = sci("doctor", "--require-gpu", check=2)
        assert "no usable GPU" in proc.stderr and no_traceback(proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 or "sci: error" in proc.stderr.splitlines()[-1]


def test_schema_command_matches_the_published_schemas(tmp_path):
    sci = Sci(tmp_path)
    printed = json.loads(sci("schema").stdout)
    assert set(printed) == {"ExperimentRequest", "RunManifest", "StepResult", "Dossier"}
    sci("schema", "-o", str(tmp_path / "out"))
    for name in printed:
        written = (tmp_path / "out" / f"{name}.schema.json").read_text()
        assert written == (REPO / "docs" / "schemas" / f"{name}.schema.json").read_text()
    proc = sci("schema", "Nope", check=2)
    assert "no schema named 'Nope'" in proc.stderr


def test_cite_every_format_from_the_built_dossier(ws):
    from test_citation import _check_cff, _parse_bibtex
    from test_remote_build import PIPELINE

    sci = ws({"sci.yaml": PIPELINE})
    proc = sci("cite", check=2)
    assert "is not built for the current pipeline" in proc.stderr and "sci build dossier" in proc.stderr
    sci.build("dossier")
    dossier = json.loads((ws.root / "dossier" / "dossier.json").read_text())
    version = dossier["citation"]["version"]
    entries = _parse_bibtex(sci("cite").stdout)
    assert entries[0]["version"] == version and "Tiny" in entries[0]["title"]
    assert len(entries) == 1 + len(dossier["evidence"])  # the evidence files as parent artifacts
    csl = json.loads(sci("cite", "dossier", "--format", "csl-json").stdout)
    assert csl["version"] == version and csl["author"][0]["family"] == "Lovelace"
    cff = _check_cff(sci("cite", "--format", "cff").stdout + "\n")
    assert cff["version"] == version and len(cff["references"]) == len(dossier["evidence"])
    assert version in sci("cite", "--format", "markdown").stdout
    assert (ws.root / "dossier" / "CITATION.cff").read_text() == sci("cite", "--format", "cff").stdout
    assert "is not a dossier node" in sci("cite", "gen", check=2).stderr


def test_progress_display_on_a_terminal_and_plain_lines_otherwise(ws):
    """On a terminal sci draws a live progress bar (rich) on stderr; piped, it prints plain lines."""
    import os
    import pty
    import subprocess
    import sys

    sci = ws({"sci.yaml": "version: 1\nsteps:\n  a:\n    foreach: {i: [1, 2, 3]}\n"
                          "    cmd: sleep 0.3 && echo {item.i} > {outs}\n    outs: ['o/{item.i}.txt']\n"})
    master, slave = pty.openpty()
    env = dict(sci.env, TERM="xterm", COLUMNS="100")
    proc = subprocess.Popen([sys.executable, "-m", "sci.cli", "build", "-j", "1"], cwd=ws.root, env=env,
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0
    assert "sci build" in screen and "/3" in screen and "running" in screen  # the live bar
    assert "executed  a[i=1]" in screen
    (ws.root / "o" / "1.txt").unlink()
    plain = sci("build", "--force", "a[i=2]")
    assert "\x1b[" not in plain.stderr and "executed  a[i=2]" in plain.stderr


# -- the entry point's own parser for the common `sci build` (sci/cli.py) -------------------------
def test_plain_build_command_lines_are_parsed_without_click_and_others_are_left_to_it():
    from sci.cli.main import plain_build

    assert plain_build(["build"]) == {"targets": [], "jobs": None, "keep_going": False, "verbose": False,
                                      "as_json": False}
    for argv in (["build", "-j", "2", "a", "b"], ["build", "-j2", "a", "b"], ["build", "--jobs=2", "a", "b"],
                 ["build", "a", "--jobs", "2", "b"]):
        assert plain_build(argv) == {"targets": ["a", "b"], "jobs": 2, "keep_going": False, "verbose": False,
                                     "as_json": False}, argv
    assert plain_build(["build", "-k", "--json", "-v", "x"]) == {"targets": ["x"], "jobs": None, "keep_going": True,
                                                                "verbose": True, "as_json": True}
    # anything else goes to click, which parses it or words the error
    for argv in (["status"], [], ["build", "-j"], ["build", "-j", "0"], ["build", "-j", "two"], ["build", "-j", "²"],
                 ["build", "--set", "x=1"], ["build", "-n"], ["build", "--"], ["build", "-h"], ["build", ""],
                 ["build", "-jk"]):
        assert plain_build(argv) is None, argv


def test_a_plain_build_imports_no_click_and_both_parsers_build_alike(ws):
    import subprocess
    import sys

    sci = ws({"sci.yaml": "version: 1\nparams: params.yaml\nsteps:\n  a:\n    cmd: echo {params.x} > {outs}\n    params: [x]\n"
                          "    outs: [a.txt]\n", "params.yaml": "x: 1\n"})
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "sci.cli", "build", "-j", "2"], cwd=ws.root,
                          env=sci.env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "sci.api" in imported and "click" not in imported
    assert sci.build("--jobs", "2", "--set", "x=2")["executed"] == ["a"]  # --set: through click
    assert (ws.root / "a.txt").read_text() == "2\n"
    out = sci.build("-j2")  # plain: the entry point's parser; x: 1 again, restored from the store
    assert out["cached"] == ["a"] and out["counts"] == {"cached": 1, "executed": 0, "failed": 0, "skipped": 0}
    assert (ws.root / "a.txt").read_text() == "1\n"
    bad = sci("build", "-j", "0", check=2)  # left to click: its usage error, exit 2
    assert "Invalid value for '-j'" in bad.stderr and no_traceback(bad.stderr)


def test_plain_status_command_lines_are_parsed_without_click_and_others_are_left_to_it():
    from sci.cli.main import plain_status

    assert plain_status(["status"]) == {"targets": [], "as_json": False}
    assert plain_status(["status", "a", "--json", "b"]) == {"targets": ["a", "b"], "as_json": True}
    for argv in (["build"], [], ["status", "--set", "x=1"], ["status", "-h"], ["status", "--"], ["status", ""],
                 ["status", "--jsonx"]):
        assert plain_status(argv) is None, argv


def test_a_plain_status_imports_no_click_and_says_what_the_click_one_says(ws):
    import subprocess
    import sys

    sci = ws({"sci.yaml": "version: 1\nparams: params.yaml\nsteps:\n  a:\n    cmd: echo {params.x} > {outs}\n"
                          "    params: [x]\n    outs: [a.txt]\n  b:\n    cmd: cat {deps} > {outs}\n"
                          "    deps: [a.txt]\n    outs: [b.txt]\n", "params.yaml": "x: 1\n"})
    sci.build("a")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "sci.cli", "status", "--json"], cwd=ws.root,
                          env=sci.env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "sci.api" in imported and "click" not in imported
    plain = json.loads(proc.stdout)
    assert [(n["node"], n["state"]) for n in plain["nodes"]] == [("a", "up to date"), ("b", "would run")]
    assert json.loads(sci("status", "--json", "--set", "x=1").stdout) == plain  # --set: through click
    assert sci("status").stdout == sci("status", "--set", "x=1").stdout
    assert sci("status", "a").stdout == "  up to date  a\n" == sci("status", "a", "--set", "x=1").stdout
    bad = sci("status", "nope", check=2)  # plain: the same one line and exit code as through click
    assert bad.stderr == sci("status", "nope", "--set", "x=1", check=2).stderr
    assert bad.stderr.startswith("sci: error: target 'nope'") and no_traceback(bad.stderr)


def test_nodes_run_one_at_a_time_need_no_thread_pool_and_several_get_one(ws):
    """A build whose nodes each are all there is to do (a chain, a parameter edit) runs them on
    the scheduler's thread and never imports concurrent.futures; independent nodes at -j 2 do."""
    import subprocess
    import sys

    def imported_modules() -> set[str]:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "sci.cli", "build", "-j", "2"],
                              cwd=ws.root, env=sci.env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}

    sci = ws({"sci.yaml": "version: 1\nparams: params.yaml\nsteps:\n"
                          "  a:\n    cmd: echo {params.x} > {outs}\n    params: [x]\n    outs: [a.txt]\n"
                          "  b:\n    cmd: cat {deps} > {outs}\n    deps: [a.txt]\n    outs: [b.txt]\n",
              "params.yaml": "x: 1\n"})
    assert "concurrent.futures" not in imported_modules()  # a chain of two: one at a time
    assert (ws.root / "b.txt").read_text() == "1\n"
    noop_imports = imported_modules()
    # sci's record classes are plain (sci.values): `dataclasses` would pull in inspect, ast, dis
    assert not {"dataclasses", "inspect"} & noop_imports
    (ws.root / "params.yaml").write_text("x: 2\n")
    edit_imports = imported_modules()
    assert "concurrent.futures" not in edit_imports  # the edit re-runs a, then b
    # nor what only cancelling or the tempfile module would need (sci.unique names scratch files)
    assert not {"tempfile", "random", "signal", "dataclasses", "inspect"} & edit_imports
    assert (ws.root / "b.txt").read_text() == "2\n"
    (ws.root / "sci.yaml").write_text((ws.root / "sci.yaml").read_text() + "  c:\n    cmd: sleep 0.2; echo c > {outs}\n"
                                      "    outs: [c.txt]\n  d:\n    cmd: sleep 0.2; echo d > {outs}\n    outs: [d.txt]\n")
    assert "concurrent.futures" in imported_modules()  # c and d side by side: the pool
    assert (ws.root / "c.txt").read_text() == "c\n" and (ws.root / "d.txt").read_text() == "d\n"


def test_a_build_leaves_quickly_yet_runs_exit_handlers_and_keeps_its_output_and_code(ws):
    """`sci build` ends with os._exit after the exit handlers and a flush (no teardown of the
    plan's objects): what it printed, its exit code and registered handlers are all kept."""
    import subprocess
    import sys

    sci = ws({"sci.yaml": "version: 1\nsteps:\n  a:\n    cmd: echo hi > {outs}\n    outs: [a.txt]\n"
                          "  bad:\n    cmd: exit 3\n    outs: [bad.txt]\n"})
    script = ("import atexit, sys\n"
              "atexit.register(lambda: print('handler ran', file=sys.stderr))\n"
              "sys.argv = ['sci', 'build', '--json', *sys.argv[1:]]\n"
              "from sci.cli.main import main\n"
              "main()\n"
              "print('not reached', file=sys.stderr)\n")
    ok = subprocess.run([sys.executable, "-c", script, "a"], cwd=ws.root, env=sci.env, capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    assert "handler ran" in ok.stderr and "not reached" not in ok.stderr and "1 executed" in ok.stderr
    failed = subprocess.run([sys.executable, "-c", script, "bad"], cwd=ws.root, env=sci.env, capture_output=True,
                            text=True)
    assert failed.returncode == 1 and json.loads(failed.stdout)["ok"] is False
    assert "handler ran" in failed.stderr and "bad" in failed.stderr
