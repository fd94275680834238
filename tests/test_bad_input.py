"""Every wrong request is exit 2 with one line naming file:line:col and a hint; nothing runs."""

from __future__ import annotations

import re

import pytest

from conftest import no_traceback

GOOD_STEP = """
  a:
    cmd: echo hi > {outs}
    outs: [a.txt]
"""


def _yaml(body: str) -> str:
    return "version: 1\nsteps:\n" + body


CASES = [
    # (id, sci.yaml text, extra files, expected fragment of the message, expected line)
    ("yaml-syntax", "version: 1\nsteps:\n  a:\n    cmd: [unclosed\n", {}, "YAML syntax error", 5),
    ("unknown-key", _yaml("  a:\n    cmmd: echo > {outs}\n    outs: [a.txt]\n"), {}, "unknown key 'cmmd'", 4),
    ("cmd-and-fn", _yaml("  a:\n    cmd: echo > {outs}\n    fn: m:f\n    outs: [a.txt]\n"), {},
     "exactly one of cmd, fn or kind", 5),
    ("unknown-placeholder", _yaml("  a:\n    cmd: echo {nope} > {outs}\n    outs: [a.txt]\n"), {},
     "unknown placeholder {nope}", 4),
    ("missing-param", "version: 1\nparams: {x: 1}\nsteps:\n  a:\n    cmd: echo > {outs}\n    params: [y]\n    outs: [a.txt]\n",
     {}, "parameter 'y' is not defined", 6),
    ("overlapping-outs", _yaml(GOOD_STEP + "  b:\n    cmd: echo > {outs}\n    outs: [a.txt]\n"), {},
     "both declare output 'a.txt'", 9),
    ("nested-outs", _yaml("  a:\n    cmd: mkdir -p {outs}\n    outs: [d]\n  b:\n    cmd: echo > {outs}\n    outs: [d/x.txt]\n"),
     {}, "lies inside output 'd'", 8),
    ("cycle", _yaml("  a:\n    cmd: cat {deps} > {outs}\n    deps: [b.txt]\n    outs: [a.txt]\n"
                    "  b:\n    cmd: cat {deps} > {outs}\n    deps: [a.txt]\n    outs: [b.txt]\n"), {},
     "cycle: a -> b -> a", 3),
    ("absolute-path", _yaml("  a:\n    cmd: echo > {outs}\n    outs: [/tmp/x.txt]\n"), {}, "is absolute", 5),
    ("dotdot-path", _yaml("  a:\n    cmd: cat {deps} > {outs}\n    deps: [../secret]\n    outs: [a.txt]\n"), {},
     "escapes the workspace", 5),
    ("foreach-collision", _yaml("  a:\n    foreach: {n: [1, 2]}\n    cmd: echo {item.n} > {outs}\n    outs: [same.txt]\n"),
     {}, "foreach items write the same output", 6),
    ("missing-dep", _yaml("  a:\n    cmd: cat {deps} > {outs}\n    deps: [nowhere.txt]\n    outs: [a.txt]\n"), {},
     "does not exist and no step produces it", 5),
    ("glob-matches-nothing", _yaml("  a:\n    cmd: cat {deps} > {outs}\n    deps: ['in/*.csv']\n    outs: [a.txt]\n"), {},
     "matches no file", 5),
    ("unknown-version", "version: 7\nsteps: {}\n", {}, "unknown sci.yaml version 7", 1),
    ("too-many-cpus", _yaml("  a:\n    cmd: echo > {outs}\n    outs: [a.txt]\n    resources: {cpu: 64}\n"),
     {"config/hardware.yaml": "cpu: 2\nmem_gb: 4\n"}, "asks for 64 CPUs but this machine has 2", 6),
    ("gpu-without-gpu", _yaml("  a:\n    cmd: echo > {outs}\n    outs: [a.txt]\n    resources: {gpu: 1}\n"),
     {"config/hardware.yaml": "cpu: 2\nmem_gb: 4\ngpus: []\n"}, "GPU(s) but this machine has none", 6),
    ("bad-fn", _yaml("  a:\n    fn: not a function\n    outs: [a.txt]\n"), {}, "fn must be module:function", 4),
    ("bad-resource-type", _yaml("  a:\n    cmd: echo > {outs}\n    outs: [a.txt]\n    resources: {cpu: lots}\n"), {},
     "cpu", 6),
    ("unknown-dossier-step", "version: 1\nexperiment: {title: T, question: Q, authors: [{name: A B}], license: MIT}\n"
     "steps:\n" + GOOD_STEP + "  d:\n    kind: dossier\n    steps: [nope]\n    outs: [dossier/]\n", {},
     "indexes unknown step 'nope'", 10),
    ("dossier-without-experiment", _yaml(GOOD_STEP + "  d:\n    kind: dossier\n    steps: [a]\n    outs: [dossier/]\n"), {},
     "a dossier step needs experiment:", 1),
    ("params-file-missing", "version: 1\nparams: nope.yaml\nsteps:\n" + GOOD_STEP, {}, "parameters file nope.yaml not found", 2),
    ("params-file-syntax", "version: 1\nparams: params.yaml\nsteps:\n" + GOOD_STEP, {"params.yaml": "a: [1,\n"},
     "params.yaml:", None),
    ("hardware-unknown-key", _yaml(GOOD_STEP), {"config/hardware.yaml": "cpus: 2\n"}, "unknown key 'cpus'", 1),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_location_and_hint(ws, case):
    _id, text, extra, fragment, line = case
    sci = ws({"sci.yaml": text, **extra})
    proc = sci("build", check=2)
    err = proc.stderr.strip()
    assert fragment in err, err
    assert len(err.splitlines()) == 1, err
    assert no_traceback(err)
    assert "hint:" in err
    if line is not None:
        m = re.search(r"(sci\.yaml|hardware\.yaml):(\d+):(\d+)", err)
        assert m, err
        assert int(m.group(2)) == line, err
    assert not (ws.root / "runs").exists()  # nothing ran
    assert not (ws.root / "a.txt").exists()


def test_misspelt_key_names_the_closest_valid_one(ws):
    sci = ws({"sci.yaml": _yaml("  a:\n    cmd: echo > {outs}\n    outz: [a.txt]\n")})
    err = sci("build", check=2).stderr
    assert "sci.yaml:5:5: unknown key 'outz' (hint: did you mean 'outs'?)" in err


def test_status_and_dag_report_the_same_errors(ws):
    sci = ws({"sci.yaml": _yaml("  a:\n    cmmd: x\n")})
    for cmd in ("status", "dag"):
        proc = sci(cmd, check=2)
        assert "unknown key 'cmmd'" in proc.stderr and no_traceback(proc.stderr)


def test_no_workspace_is_a_usage_error(tmp_path):
    from conftest import Sci

    proc = Sci(tmp_path)("build", check=2)
    assert "no sci.yaml" in proc.stderr and no_traceback(proc.stderr)


def test_unknown_target_is_a_usage_error(ws):
    sci = ws({"sci.yaml": _yaml(GOOD_STEP)})
    proc = sci("build", "b", check=2)
    assert "target 'b' names no node" in proc.stderr


def test_missing_code_path_and_fn_module_are_located_before_anything_runs(ws):
    sci = ws({"sci.yaml": _yaml("  a:\n    cmd: echo > {outs}\n    code: [nope.py]\n    outs: [a.txt]\n")})
    err = sci("build", check=2).stderr
    assert "sci.yaml:5:12: step a: code path 'nope.py' does not exist" in err
    (ws.root / "nope.py").write_text("")
    sci("build", "a")  # cached plan must notice the file going away again
    (ws.root / "nope.py").unlink()
    assert "code path 'nope.py' does not exist" in sci("build", "a", check=2).stderr
    (ws.root / "sci.yaml").write_text(_yaml("  b:\n    fn: rules.gone:run\n    outs: [b.txt]\n"))
    err = sci("build", check=2).stderr
    assert "sci.yaml:4:9: step b: module 'rules.gone' is not a file in the workspace" in err


def test_unknown_key_in_a_remote_names_the_remote_fields(ws):
    sci = ws({"sci.yaml": "version: 1\nremotes:\n  default: {url: /tmp/x, endpoint: y}\nsteps:\n" + GOOD_STEP})
    err = sci("build", check=2).stderr
    assert "unknown key 'endpoint'" in err and "did you mean 'endpoint_url'?" in err


def test_unknown_link_mode_is_a_usage_error(ws):
    sci = ws({"sci.yaml": _yaml(GOOD_STEP)}, env={"SCI_LINK": "reflonk"})
    assert "SCI_LINK='reflonk' is not a materialization mode" in sci("build", check=2).stderr


LONE_BRACES = [
    # (id, sci.yaml text, the exact error line)
    ("unclosed-placeholder", _yaml("  a:\n    cmd: python plot.py > {outs.fig\n    outs: {fig: fig.png}\n"),
     "sci.yaml:4:27: step a: lone '{' in cmd: it opens no placeholder "
     "(hint: close the placeholder ({outs.fig}) or write a literal brace as {{)"),
    ("stray-closing", _yaml("  a:\n    cmd: \"echo }x > {outs}\"\n    outs: [a.txt]\n"),
     "sci.yaml:4:16: step a: lone '}' in cmd: it closes no placeholder "
     "(hint: open the placeholder it closes, or write a literal brace as }})"),
    ("third-brace", _yaml("  a:\n    cmd: echo {{{outs}}}} > {outs}\n    outs: [a.txt]\n"),
     "sci.yaml:4:25: step a: lone '}' in cmd: it closes no placeholder "
     "(hint: open the placeholder it closes, or write a literal brace as }})"),
    ("block-scalar", _yaml("  a:\n    cmd: |\n      echo hi\n      echo {{ok}} {outs} {x\n    outs: [a.txt]\n"),
     "sci.yaml:6:26: step a: lone '{' in cmd: it opens no placeholder "
     "(hint: close the placeholder ({x}) or write a literal brace as {{)"),
    ("in-outs", _yaml("  a:\n    cmd: echo > {outs}\n    outs: [\"a{.txt\"]\n"),
     "sci.yaml:5:14: step a: lone '{' in outs: it opens no placeholder "
     "(hint: close the placeholder or write a literal brace as {{)"),
    ("in-named-deps", _yaml("  a:\n    cmd: cat {deps} > {outs}\n    deps: {x: \"d}.txt\"}\n    outs: [a.txt]\n"),
     "sci.yaml:5:17: step a: lone '}' in deps: it closes no placeholder "
     "(hint: open the placeholder it closes, or write a literal brace as }})"),
    ("in-code", _yaml("  a:\n    cmd: echo > {outs}\n    code: [\"x.py\", \"rules/{item.k.py\"]\n    outs: [a.txt]\n"),
     "sci.yaml:5:27: step a: lone '{' in code: it opens no placeholder "
     "(hint: close the placeholder ({item.k.py}) or write a literal brace as {{)"),
    ("in-metrics", _yaml("  a:\n    cmd: echo 1 > {outs.m}\n    metrics: {m: \"m{.json\"}\n"),
     "sci.yaml:5:20: step a: lone '{' in metrics: it opens no placeholder "
     "(hint: close the placeholder or write a literal brace as {{)"),
    ("flow-step", _yaml("  a: {cmd: \"echo {outs} }\", outs: [a.txt]}\n"),
     "sci.yaml:3:25: step a: lone '}' in cmd: it closes no placeholder "
     "(hint: open the placeholder it closes, or write a literal brace as }})"),
    # the fast validator (spec/plain.py) and pydantic see these as they are; the literal
    # brace case shows `{{`/`}}` are not lone
    ("version-true", "version: true\nsteps:\n" + GOOD_STEP,
     "sci.yaml:1:10: sci.yaml version must be the integer 1, not true (hint: write version: 1)"),
    ("version-float", "version: 1.0\nsteps:\n" + GOOD_STEP,
     "sci.yaml:1:10: sci.yaml version must be the integer 1, not 1.0 (hint: write version: 1)"),
    ("version-text", "version: \"1\"\nsteps:\n" + GOOD_STEP,
     "sci.yaml:1:10: sci.yaml version must be the integer 1, not \"1\" (hint: write version: 1)"),
]


@pytest.mark.parametrize("case", LONE_BRACES, ids=[c[0] for c in LONE_BRACES])
def test_lone_braces_and_a_non_integer_version_are_located_exactly(ws, case):
    _id, text, expected = case
    sci = ws({"sci.yaml": text})
    for command in ("build", "status"):
        proc = sci(command, check=2)
        err = proc.stderr.strip()
        assert err == f"sci: error: {expected}", err
        assert no_traceback(err)
    assert not (ws.root / "runs").exists() and not (ws.root / "a.txt").exists()


def test_doubled_braces_are_literal(ws):
    sci = ws({"sci.yaml": _yaml("  a:\n    cmd: \"echo '{{x}}' {{{{ }}}} > {outs}\"\n    outs: [a.txt]\n")})
    sci.build()
    assert (ws.root / "a.txt").read_text() == "{x} {{ }}\n"
