"""spec_plain's fast path agrees with pydantic: it accepts only what sci.spec accepts, dumps it
identically (key order and value types too), and is actually taken for ordinary sci.yaml files."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, no_traceback
from sci.spec import model as spec
from sci.spec import plain as spec_plain
from sci.errors import SpecError
from sci.spec.load import Positions, load_yaml_text

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pydantic_doc(data: Any) -> dict | None:
    """What pipeline._pipeline_doc computes through pydantic; None when pydantic rejects."""
    try:
        pipeline = spec.validate_pipeline(data, Positions("sci.yaml"))
    except SpecError:
        return None
    doc = pipeline.model_dump()
    doc["experiment"] = pipeline.experiment.model_dump(exclude_none=True) if pipeline.experiment else None
    return doc


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Equal values of exactly the same types, with mappings in the same key order."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} {a!r} vs {type(b).__name__} {b!r}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} vs {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def containers(value: Any) -> set[int]:
    found: set[int] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            found.add(id(v))
            stack.extend(v.values())
        elif isinstance(v, list):
            found.add(id(v))
            stack.extend(v)
    return found


def check(data: Any) -> dict | None:
    """The property: a dict from the fast path means pydantic accepts and dumps the same."""
    before = copy.deepcopy(data)
    plain = spec_plain.plain_pipeline_doc(data)
    assert_same(data, before, "input")  # the fast path never edits what it is given
    if plain is not None:
        slow = pydantic_doc(data)
        assert slow is not None, "fast path accepted what pydantic rejects"
        assert json.dumps(plain) == json.dumps(slow)
        assert_same(plain, slow)
        # like model_dump, the result shares no list or mapping with the input (YAML anchors)
        assert not containers(plain) & containers(data)
    return plain


# --- strategies --------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,8}", fullmatch=True)
texts = st.text(max_size=12)
# placeholder-holding values: every brace opens or closes a placeholder, or is doubled
# (a lone brace is an error; near_valid_docs and test_lone_brace_* put one in)
templates = st.lists(st.one_of(st.text(st.characters(exclude_characters="{}"), max_size=6),
                               st.sampled_from(["{outs}", "{deps.x}", "{params.a.b}", "{ item.n }", "{{", "}}"])),
                     max_size=4).map("".join)
paths = st.from_regex(r"[a-z]{1,6}(/([a-z0-9_.*-]{1,8}|\{item\.n\}|\{\{|\}\})){0,2}", fullmatch=True)
path_lists = st.lists(paths, max_size=3)
path_maps = st.one_of(path_lists, st.dictionaries(names, paths, max_size=3))
fns = st.from_regex(r"[a-z_][a-z0-9_.]{0,6}:[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
counts = st.integers(0, 64)
amounts = st.one_of(st.floats(0, 1e6, allow_nan=False), st.integers(0, 1024))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=False), texts)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)), max_leaves=8)
determinisms = st.sampled_from(["strict", "fast"])


def optional_dict(required: dict, optional: dict) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(required, optional=optional)


resources = optional_dict({}, {"cpu": st.one_of(st.none(), counts), "mem_gb": st.one_of(st.none(), amounts),
                               "gpu": st.one_of(st.none(), counts), "vram_gb": st.one_of(st.none(), amounts)})
authors = optional_dict({"name": texts}, {
    "orcid": st.one_of(st.from_regex(r"\d{4}-\d{4}-\d{4}-\d{3}[\dX]", fullmatch=True), st.integers(0, 10**16)),
    "affiliation": texts, "email": texts})
experiments = optional_dict({"title": texts, "question": texts, "authors": st.lists(authors, min_size=1, max_size=3),
                             "license": st.sampled_from(["CC-BY-4.0", "MIT", "CC0-1.0"])},
                            {"keywords": st.lists(texts, max_size=3), "description": texts,
                             "url": st.one_of(st.none(), texts), "doi": texts})
defaults = optional_dict({}, {"seed": st.integers(-2**40, 2**70), "determinism": determinisms,
                              "resources": resources, "environment": st.one_of(st.none(), names)})
envs = optional_dict({}, {"files": path_lists, "vars": st.lists(names, max_size=3),
                          "tools": st.lists(names, max_size=3)})
environment_decls = st.dictionaries(names, st.one_of(
    optional_dict({"python": paths}, {"groups": st.lists(names, max_size=2), "extras": st.lists(names, max_size=2)}),
    st.fixed_dictionaries({"script": paths}), st.fixed_dictionaries({"container": texts})), max_size=2)
remotes = st.dictionaries(names, st.one_of(
    texts, optional_dict({"url": texts}, {"endpoint_url": st.one_of(st.none(), texts),
                                          "region": st.one_of(st.none(), texts)})), max_size=2)
slurms = optional_dict({}, {
    "partition": st.one_of(st.none(), texts), "account": st.one_of(st.none(), texts),
    "qos": st.one_of(st.none(), texts), "time": st.one_of(st.none(), st.integers(0, 10**6), texts),
    "setup": st.lists(texts, max_size=2), "options": st.lists(texts, max_size=2), "arrays": st.booleans(),
    "poll_s": st.one_of(st.none(), st.floats(0.01, 1e3), st.integers(1, 100))})
executors = optional_dict({}, {"slurm": st.one_of(st.none(), slurms)})
step_common = {
    "deps": st.one_of(st.none(), path_maps), "outs": st.one_of(st.none(), path_maps), "code": path_lists,
    "params": st.lists(names, max_size=3), "seed": st.one_of(st.none(), st.integers(-2**40, 2**40)),
    "resources": resources, "determinism": st.one_of(st.none(), determinisms),
    "foreach": st.one_of(st.none(), st.dictionaries(names, st.lists(json_values, max_size=3), max_size=2)),
    "sandbox": st.booleans(), "env": st.lists(names, max_size=2), "environment": st.one_of(st.none(), names),
}
metrics_maps = {"metrics": st.one_of(st.none(), path_maps)}  # cmd and fn steps only
cmd_steps = optional_dict({"cmd": templates}, {**step_common, **metrics_maps, "fn": st.none(), "kind": st.none(),
                                           "steps": st.none(), "evidence": st.just([])})
fn_steps = optional_dict({"fn": fns}, {**step_common, **metrics_maps, "cmd": st.none()})
dossier_steps = optional_dict({"kind": st.just("dossier")},
                              {**step_common, "steps": st.one_of(st.none(), st.lists(names, max_size=3)),
                               "evidence": path_lists})


@st.composite
def valid_docs(draw) -> dict:
    steps = draw(st.dictionaries(names, st.one_of(cmd_steps, fn_steps), max_size=5))
    experiment = draw(st.one_of(st.none(), experiments))
    if experiment is not None and draw(st.booleans()):
        steps.update(draw(st.dictionaries(names, dossier_steps, min_size=1, max_size=2)))
    optional = {"defaults": defaults, "env": envs, "environments": environment_decls,
                "params": st.one_of(st.none(), paths, st.dictionaries(names, json_values, max_size=4)),
                "store": st.one_of(st.none(), paths), "remotes": remotes, "executors": executors}
    head = draw(optional_dict({"version": st.just(1)}, optional))
    if experiment is not None or draw(st.booleans()):
        head["experiment"] = experiment
    # key order of the input must not matter for the mappings that are models
    items = list(head.items()) + [("steps", steps)]
    order = draw(st.permutations(range(len(items))))
    return {items[i][0]: items[i][1] for i in order}


# The kinds of wrong (or merely coercible) values one mutation puts somewhere.
WRONG = [True, False, 0, 1, 2, -1, 1.0, 1.5, -0.5, float("nan"), float("inf"), 2**70, 2**2000, "", "x",
         "1", "strict", "dossier", "m:f", "not a function", None, [], [None], ["x"], [1], {}, {"k": None},
         {"k": "v"}, {1: "v"}, {"url": "u"}, ("a",)]


def slots(value: Any, path: tuple = ()) -> list[tuple]:
    """Every (path to a container, key or index) in a document, for mutations."""
    out: list[tuple] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((path, k))
            out.extend(slots(v, path + (k,)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((path, i))
            out.extend(slots(v, path + (i,)))
    return out


def at(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def near_valid_docs(draw) -> Any:
    doc = copy.deepcopy(draw(valid_docs()))
    how = draw(st.sampled_from(["replace", "replace", "replace", "unknown-key", "delete", "two-actions",
                                "bad-name", "bad-fn", "dossier", "version", "whole", "lone-brace"]))
    spots = slots(doc)
    if how == "replace" and spots:
        where, key = draw(st.sampled_from(spots))
        at(doc, where)[key] = copy.deepcopy(draw(st.sampled_from(WRONG)))
    elif how == "unknown-key":
        mappings = [()] + [where + (key,) for where, key in spots if isinstance(at(doc, where)[key], dict)]
        target = at(doc, draw(st.sampled_from(mappings)))
        target[draw(st.sampled_from(["cmmd", "resource", "seeds", "depz", "1", "Version", "url"]))] = "x"
    elif how == "delete" and spots:
        where, key = draw(st.sampled_from(spots))
        del at(doc, where)[key]
    elif how in ("two-actions", "bad-fn") and doc["steps"]:
        step = doc["steps"][draw(st.sampled_from(sorted(doc["steps"])))]
        if how == "two-actions":
            step.update(draw(st.sampled_from([{"cmd": "x", "fn": "m:f"}, {"cmd": "x", "kind": "dossier"},
                                              {"fn": "m:f", "kind": "dossier"}, {"kind": "other"},
                                              {"cmd": None, "fn": None, "kind": "dossier", "metrics": ["m.json"]}])))
        else:
            for k in ("cmd", "kind"):
                step.pop(k, None)
            step["fn"] = draw(st.sampled_from(["m", "m:", ":f", "1m:f", "m:1f", "m:f.g", "m-x:f", "m:f ", " m:f"]))
    elif how == "bad-name":
        doc["steps"][draw(st.sampled_from(["1a", "-a", "a b", "", "a/b", "a\n", ".a", "é"]))] = {"cmd": "x"}
    elif how == "dossier":
        doc["steps"]["d"] = {"kind": "dossier"}
        exp = doc.get("experiment")
        if isinstance(exp, dict):
            draw(st.sampled_from([lambda e: e.pop("license", None), lambda e: e.update(license=""),
                                  lambda e: e.update(authors=[]), lambda e: e.update(license=None)]))(exp)
    elif how == "version":
        doc["version"] = draw(st.sampled_from([2, True, 1.0, "1", None, 0]))
    elif how == "lone-brace" and doc["steps"]:
        put_lone_brace(draw, doc)
    elif how == "whole":
        return draw(st.sampled_from([None, [], "version: 1", 1, {"version": 1}, {"steps": {}}]))
    return doc


def put_lone_brace(draw, doc: dict) -> None:
    """A `{` or `}` that opens or closes no placeholder, in one step's cmd, deps, outs or code."""
    step = doc["steps"][draw(st.sampled_from(sorted(doc["steps"])))]
    brace = draw(st.sampled_from(["{", "}", "{outs", "x}", "{{{", "}}}"]))
    field = draw(st.sampled_from(["cmd", "deps", "outs", "code"]))
    if field == "cmd":
        if step.get("cmd") is not None:
            step["cmd"] += " " + brace
            return
        field = "code"  # an fn or dossier step
    value = step.get(field)
    if isinstance(value, dict) and value:
        value[sorted(value)[0]] += brace
    else:
        step[field] = list(value or []) + ["p" + brace]


# --- properties --------------------------------------------------------------------------

@SETTINGS
@given(valid_docs())
def test_valid_documents_take_the_fast_path_and_dump_like_pydantic(doc):
    assert check(doc) is not None


@SETTINGS
@given(near_valid_docs())
def test_fast_path_never_accepts_what_pydantic_rejects(doc):
    check(doc)


@SETTINGS
@given(st.text(max_size=12))
def test_fn_and_step_name_checks_agree_with_pydantic(text):
    for doc in ({"version": 1, "steps": {"a": {"fn": text}}}, {"version": 1, "steps": {text: {"cmd": "x"}}}):
        plain = check(doc)
        assert (plain is not None) == (pydantic_doc(doc) is not None), doc


@SETTINGS
@given(st.data())
def test_a_lone_brace_is_rejected_by_both_validators(data):
    doc = copy.deepcopy(data.draw(valid_docs()))
    if not doc["steps"]:
        doc["steps"]["a"] = {"cmd": "x"}
    put_lone_brace(data.draw, doc)
    assert check(doc) is None
    assert pydantic_doc(doc) is None


@pytest.mark.parametrize("text, index", [("{outs", 0), ("a}", 1), ("{outs}}", 6), ("{{{outs}", None), ("{{{", 2), ("{x{y}", 0),
                                         ("{{}}", None), ("{outs} {{ }}", None), ("{ outs }", None), ("", None)])
def test_lone_brace_scan(text, index):
    from sci.spec.placeholders import lone_brace

    assert lone_brace(text) == index


def test_patterns_mirror_sci_spec():
    assert spec_plain.STEP_NAME.pattern == spec.STEP_NAME.pattern
    # field order: the dump's key order comes from these tuples
    assert list(spec_plain.PIPELINE_KEYS) == list(spec.Pipeline.model_fields)
    assert list(spec_plain.STEP_KEYS) == list(spec.Step.model_fields)
    assert list(spec_plain.EXPERIMENT_KEYS) == list(spec.Experiment.model_fields)
    assert list(spec_plain.AUTHOR_KEYS) == list(spec.Author.model_fields)
    assert list(spec_plain.RESOURCES_KEYS) == list(spec.Resources.model_fields)
    assert list(spec_plain.DEFAULTS_KEYS) == list(spec.Defaults.model_fields)
    assert list(spec_plain.ENV_KEYS) == list(spec.EnvSpec.model_fields)
    assert list(spec_plain.ENVIRONMENT_KEYS) == list(spec.Environment.model_fields)
    assert list(spec_plain.REMOTE_KEYS) == list(spec.RemoteSpec.model_fields)
    assert list(spec_plain.EXECUTORS_KEYS) == list(spec.Executors.model_fields)
    assert list(spec_plain.SLURM_KEYS) == list(spec.SlurmSpec.model_fields)


COERCED = [
    # what pydantic accepts by coercion and the fast path leaves to it
    {"version": 1, "steps": {"a": {"cmd": "x", "resources": {"cpu": True}}}},
    {"version": 1, "steps": {"a": {"cmd": "x", "resources": {"cpu": 2.0}}}},
    {"version": 1, "steps": {"a": {"cmd": "x", "resources": {"mem_gb": True}}}},
    {"version": 1, "steps": {"a": {"cmd": "x", "resources": {"mem_gb": 2**60}}}},
    {"version": 1, "steps": {"a": {"cmd": "x", "sandbox": 0}}},
    {"version": 1, "steps": {"a": {"cmd": "x", "seed": "7"}}},
    {"version": 1, "steps": {"a": {"cmd": "x", "foreach": {"n": ("a", "b")}}}},
    {"version": 1, "experiment": {"title": "T", "question": "Q", "authors": [{"name": "A", "orcid": [1]}]},
     "steps": {}},
    {"version": 1, "executors": {"slurm": {"time": True}}, "steps": {}},
    {"version": 1, "executors": {"slurm": {"arrays": 1}}, "steps": {}},
]


@pytest.mark.parametrize("version", [True, 1.0, "1", False, None])
def test_only_the_integer_1_is_a_version(version):
    doc = {"version": version, "steps": {}}
    assert spec_plain.plain_pipeline_doc(doc) is None
    assert pydantic_doc(doc) is None
    with pytest.raises(ValueError, match="version must be the integer 1"):
        spec.Pipeline.model_validate(doc)  # the model itself, not only validate_pipeline's check


@pytest.mark.parametrize("doc", COERCED, ids=range(len(COERCED)))
def test_coercions_are_left_to_pydantic(doc):
    assert spec_plain.plain_pipeline_doc(doc) is None
    assert pydantic_doc(doc) is not None


# --- realistic documents take the fast path ------------------------------------------------

def _load(text: str) -> Any:
    return load_yaml_text(text, "sci.yaml")[0]


def thousand_steps() -> str:
    lines = ["version: 1", "defaults: {seed: 7, resources: {cpu: 1}}", "params: {n: 3, scale: 0.5}", "steps:"]
    for i in range(1000):
        lines += [f"  s{i}:", "    cmd: echo {params.n} > {outs}", f"    deps: [in/{i}.txt]",
                  f"    outs: [out/{i}.txt]", "    params: [n]", "    resources: {cpu: 1, mem_gb: 0.5}"]
    return "\n".join(lines) + "\n"


REALISTIC = {
    "repository sci.yaml": (REPO / "sci.yaml").read_text(),
    "minimal": "version: 1\nsteps:\n  a:\n    cmd: echo hi > {outs}\n    outs: [a.txt]\n",
    "thousand steps": thousand_steps(),
    "everything": """
version: 1
experiment:
  title: T
  question: Q?
  authors:
    - {name: A B, orcid: 0000-0002-1825-0097, email: a@b.c}
    - name: C D
  license: MIT
defaults: {seed: 1, determinism: fast, resources: {cpu: 2, mem_gb: 4, gpu: 0}}
env: {files: [uv.lock], vars: [LANG], tools: [python]}
params: {fit: {lr: 0.1, epochs: 3}, grid: [1, 2, 3]}
store: /tmp/cas
remotes:
  default: s3://bucket/cas
  mirror: {url: "s3://b2/cas", endpoint_url: "http://localhost:9000", region: eu-west-1}
steps:
  prep:
    foreach: {n: [1, 2.5, x]}
    cmd: python prep.py {item.n} > {outs.table}
    code: [prep.py]
    outs: {table: "data/{item.n}.csv"}
    sandbox: false
    env: [HOME]
  fit:
    fn: rules.fit:fit
    deps: {tables: "data/*.csv"}
    outs: [model.json]
    params: [fit]
    seed: 42
    determinism: strict
    resources: {gpu: 1, vram_gb: 8}
  report:
    kind: dossier
    steps: [prep, fit]
    evidence: [model.json]
    outs: [dossier/]
""",
}


@pytest.mark.parametrize("name", list(REALISTIC))
def test_realistic_documents_take_the_fast_path(name):
    doc = check(_load(REALISTIC[name]))
    assert doc is not None, f"{name} fell back to pydantic"


# --- through the CLI -----------------------------------------------------------------------

def test_cold_build_of_a_plain_file_does_not_import_pydantic(ws):
    sci = ws({"sci.yaml": "version: 1\nsteps:\n  a:\n    cmd: echo hi > {outs}\n    outs: [a.txt]\n"},
             env={"PYTHONPROFILEIMPORTTIME": "1"})
    proc = sci("build")
    imported = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert imported, "no import profile: PYTHONPROFILEIMPORTTIME had no effect"
    assert not [line for line in imported if "pydantic" in line]
    assert (ws.root / "a.txt").read_text() == "hi\n"


def test_bad_file_still_gets_the_pydantic_worded_error(ws):
    sci = ws({"sci.yaml": "version: 1\nsteps:\n  a:\n    cmd: echo > {outs}\n    outs: [a.txt]\n"
                          "    resources: {cpu: -1}\n"})
    proc = sci("build", check=2)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and no_traceback(err), err
    assert "sci.yaml:6:" in err and "cpu" in err and "hint:" in err, err
    assert not (Path(ws.root) / "a.txt").exists()
