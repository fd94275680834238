"""The fast path of sci.yaml validation: a well-formed document checked without pydantic.

`sci.spec.model` (pydantic) stays the one place that rejects input and words errors; importing it
costs about as much as a cold build of a few hundred nodes. Most sci.yaml files are plainly
valid, so this module recognises exactly that case with plain loops and returns what
`Pipeline.model_dump()` would. It answers None whenever it is not certain (unknown keys, wrong
or merely coercible types, bools where numbers are wanted, ...): None means "ask pydantic",
which then accepts the coercion or raises the worded SpecError. It must never accept what
pydantic rejects, and must equal pydantic's dump, key order and value types included.
"""

from __future__ import annotations

import re
from typing import Any

from sci.spec.placeholders import any_lone_brace, foreach_param

# Mirrors of sci.spec.model (not imported from there: that module imports pydantic).
# tests/test_spec_plain.py checks they stay equal.
STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
FN_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")

PIPELINE_KEYS = ("version", "experiment", "defaults", "env", "environments", "params", "store", "remotes", "executors",
                 "steps")
EXPERIMENT_KEYS = ("title", "question", "authors", "license", "keywords", "description", "url", "doi")
AUTHOR_KEYS = ("name", "orcid", "affiliation", "email")
RESOURCES_KEYS = ("cpu", "mem_gb", "gpu", "vram_gb")
DEFAULTS_KEYS = ("seed", "determinism", "resources", "environment")
ENVIRONMENT_KEYS = ("python", "script", "container", "groups", "extras")
ENV_KEYS = ("files", "vars", "tools")
REMOTE_KEYS = ("url", "endpoint_url", "region")
EXECUTORS_KEYS = ("slurm",)
SLURM_KEYS = ("partition", "account", "qos", "time", "setup", "options", "arrays", "poll_s")
STEP_KEYS = ("cmd", "fn", "kind", "deps", "outs", "metrics", "code", "params", "seed", "resources", "determinism",
             "foreach", "sandbox", "env", "steps", "evidence", "environment")

_PIPELINE = frozenset(PIPELINE_KEYS)
_EXPERIMENT = frozenset(EXPERIMENT_KEYS)
_AUTHOR = frozenset(AUTHOR_KEYS)
_RESOURCES = frozenset(RESOURCES_KEYS)
_DEFAULTS = frozenset(DEFAULTS_KEYS)
_ENV = frozenset(ENV_KEYS)
_ENVIRONMENT = frozenset(ENVIRONMENT_KEYS)
_REMOTE = frozenset(REMOTE_KEYS)
_EXECUTORS = frozenset(EXECUTORS_KEYS)
_SLURM = frozenset(SLURM_KEYS)
_STEP = frozenset(STEP_KEYS)
_DETERMINISM = ("strict", "fast")
_FLOAT_EXACT = 2 ** 53  # ints up to here become floats exactly; larger ones are pydantic's call


class _Unsure(Exception):
    """Internal: the data is not certainly valid; pydantic decides."""


def plain_pipeline_doc(data: Any) -> dict | None:
    """What `Pipeline.model_dump()` gives for `data` (with `experiment` dumped without None
    fields), when `data` is certainly a valid sci.yaml; None when pydantic must decide."""
    try:
        return _pipeline(data)
    except _Unsure:
        return None


def _keys(mapping: Any, allowed: frozenset) -> dict:
    """A model's mapping: a dict whose keys are all field names (anything else is not a name)."""
    if type(mapping) is not dict or not allowed.issuperset(mapping):
        raise _Unsure
    return mapping


def _str(v: Any) -> str:
    if type(v) is not str:
        raise _Unsure
    return v


def _opt_str(v: Any) -> str | None:
    if v is not None and type(v) is not str:
        raise _Unsure
    return v


def _str_list(v: Any) -> list[str]:
    if type(v) is not list:
        raise _Unsure
    for x in v:
        if type(x) is not str:
            raise _Unsure
    return v[:]


def _int(v: Any) -> int:
    if type(v) is not int:  # bools, floats and numeric text are coercions: pydantic's call
        raise _Unsure
    return v


def _count(v: Any) -> int | None:
    """Optional[int] with ge=0."""
    if v is None:
        return None
    if type(v) is not int or v < 0:
        raise _Unsure
    return v


def _amount(v: Any) -> float | None:
    """Optional[float] with ge=0: pydantic turns an int into a float."""
    if v is None:
        return None
    t = type(v)
    if t is float:
        if v >= 0:  # False for nan
            return v
    elif t is int and 0 <= v <= _FLOAT_EXACT:
        return float(v)
    raise _Unsure


def _any(v: Any) -> Any:
    """A value under `Any`: JSON-like data, copied (as model_dump copies containers)."""
    t = type(v)
    if t is str or t is int or t is float or t is bool or v is None:
        return v
    if t is list:
        return [_any(x) for x in v]
    if t is dict:
        out = {}
        for k, x in v.items():
            if type(k) is not str:
                raise _Unsure
            out[k] = _any(x)
        return out
    raise _Unsure


def _resources(v: Any) -> dict:
    _keys(v, _RESOURCES)
    g = v.get
    return {"cpu": _count(g("cpu")), "mem_gb": _amount(g("mem_gb")),
            "gpu": _count(g("gpu")), "vram_gb": _amount(g("vram_gb"))}


def _no_resources() -> dict:
    return {"cpu": None, "mem_gb": None, "gpu": None, "vram_gb": None}


def _path_map(v: Any) -> list[str] | dict[str, str] | None:
    if v is None:
        return None
    t = type(v)
    if t is list:
        return _str_list(v)
    if t is dict:
        for k, x in v.items():
            if type(k) is not str or type(x) is not str:
                raise _Unsure
        return dict(v)
    raise _Unsure


def _foreach(v: Any) -> dict[str, list] | None:
    if v is None:
        return None
    if type(v) is not dict:
        raise _Unsure
    out: dict[str, Any] = {}
    for k, items in v.items():
        if type(k) is not str:
            raise _Unsure
        if type(items) is str and foreach_param(items):
            out[k] = items  # a list named in the parameters: plan.nodes.expand reads it
            continue
        if type(items) is not list:
            raise _Unsure
        out[k] = [_any(x) for x in items]
    return out


def _author(v: Any) -> dict:
    _keys(v, _AUTHOR)
    out = {"name": _str(v.get("name"))}
    orcid = v.get("orcid")
    if orcid is not None:
        t = type(orcid)
        if t is not str and t is not int and t is not float and t is not bool:
            raise _Unsure
        out["orcid"] = str(orcid)  # sci.spec.model's before-validator: an ORCID read as a number is text
    for key in ("affiliation", "email"):
        x = v.get(key)
        if x is not None:
            out[key] = _str(x)
    return out


def _experiment(v: Any) -> dict | None:
    """Dumped the way _pipeline_doc dumps it: model_dump(exclude_none=True)."""
    if v is None:
        return None
    _keys(v, _EXPERIMENT)
    g = v.get
    out: dict[str, Any] = {"title": _str(g("title")), "question": _str(g("question"))}
    authors = g("authors", [])
    if type(authors) is not list:
        raise _Unsure
    out["authors"] = [_author(a) for a in authors]
    if g("license") is not None:
        out["license"] = _str(g("license"))
    out["keywords"] = _str_list(v["keywords"]) if "keywords" in v else []
    for key in ("description", "url", "doi"):
        x = g(key)
        if x is not None:
            out[key] = _str(x)
    return out


def _defaults(v: Any) -> dict:
    _keys(v, _DEFAULTS)
    determinism = v.get("determinism", "strict")
    if type(determinism) is not str or determinism not in _DETERMINISM:
        raise _Unsure
    return {"seed": _int(v["seed"]) if "seed" in v else 0, "determinism": determinism,
            "resources": _resources(v["resources"]) if "resources" in v else _no_resources(),
            "environment": _opt_str(v.get("environment"))}


def _env(v: Any) -> dict:
    _keys(v, _ENV)
    return {k: _str_list(v[k]) if k in v else [] for k in ENV_KEYS}


def _environments(v: Any) -> dict:
    if type(v) is not dict:
        raise _Unsure
    out: dict[str, Any] = {}
    for name, e in v.items():
        if type(name) is not str:
            raise _Unsure
        _keys(e, _ENVIRONMENT)
        kinds = [k for k in ("python", "script", "container") if e.get(k) is not None]
        groups = _str_list(e["groups"]) if "groups" in e else []
        extras = _str_list(e["extras"]) if "extras" in e else []
        if len(kinds) != 1 or ((groups or extras) and kinds[0] != "python"):
            raise _Unsure
        out[name] = {"python": _opt_str(e.get("python")), "script": _opt_str(e.get("script")),
                     "container": _opt_str(e.get("container")), "groups": groups, "extras": extras}
    return out


def _remotes(v: Any) -> dict:
    if type(v) is not dict:
        raise _Unsure
    out: dict[str, Any] = {}
    for name, r in v.items():
        if type(name) is not str:
            raise _Unsure
        if type(r) is str:
            out[name] = r
        else:
            _keys(r, _REMOTE)
            out[name] = {"url": _str(r.get("url")), "endpoint_url": _opt_str(r.get("endpoint_url")),
                         "region": _opt_str(r.get("region"))}
    return out


def _executors(v: Any) -> dict:
    _keys(v, _EXECUTORS)
    slurm = v.get("slurm")
    if slurm is None:
        return {"slurm": None}
    _keys(slurm, _SLURM)
    g = slurm.get
    time, arrays, poll = g("time"), g("arrays", True), g("poll_s")
    if time is not None and type(time) is not str and type(time) is not int:
        raise _Unsure
    if type(arrays) is not bool:
        raise _Unsure
    if poll is not None:
        poll = _amount(poll)
        if not poll > 0:
            raise _Unsure
    return {"slurm": {
        "partition": _opt_str(g("partition")), "account": _opt_str(g("account")), "qos": _opt_str(g("qos")),
        "time": time, "setup": _str_list(slurm["setup"]) if "setup" in slurm else [],
        "options": _str_list(slurm["options"]) if "options" in slurm else [], "arrays": arrays, "poll_s": poll}}


def _step(body: Any) -> dict:
    if type(body) is not dict or not _STEP.issuperset(body):
        raise _Unsure
    g = body.get
    cmd, fn, kind = g("cmd"), g("fn"), g("kind")
    actions = 0
    if cmd is not None:
        if type(cmd) is not str:
            raise _Unsure
        actions += 1
    if fn is not None:
        if type(fn) is not str or FN_PATTERN.fullmatch(fn) is None:
            raise _Unsure
        actions += 1
    if kind is not None:
        if type(kind) is not str or kind != "dossier":
            raise _Unsure
        actions += 1
    if actions != 1:
        raise _Unsure
    determinism = g("determinism")
    if determinism is not None and (type(determinism) is not str or determinism not in _DETERMINISM):
        raise _Unsure
    sandbox = g("sandbox", True)
    if type(sandbox) is not bool:
        raise _Unsure
    seed = g("seed")
    if seed is not None and type(seed) is not int:
        raise _Unsure
    steps = g("steps")
    if steps is not None:
        if kind is None:
            raise _Unsure
        steps = _str_list(steps)
    evidence = _str_list(body["evidence"]) if "evidence" in body else []
    if evidence and kind is None:
        raise _Unsure
    deps, outs, metrics = g("deps"), g("outs"), g("metrics")
    if metrics is not None and kind is not None:
        raise _Unsure
    return {
        "cmd": cmd, "fn": fn, "kind": kind,
        "deps": None if deps is None else _path_map(deps), "outs": None if outs is None else _path_map(outs),
        "metrics": None if metrics is None else _path_map(metrics),
        "code": _str_list(body["code"]) if "code" in body else [],
        "params": _str_list(body["params"]) if "params" in body else [],
        "seed": seed,
        "resources": _resources(body["resources"]) if "resources" in body else _no_resources(),
        "determinism": determinism,
        "foreach": _foreach(g("foreach")),
        "sandbox": sandbox,
        "env": _str_list(body["env"]) if "env" in body else [],
        "steps": steps,
        "evidence": evidence,
        "environment": _opt_str(g("environment")),
    }


def _placeholder_texts(steps: dict[str, dict]) -> list[str]:
    """Every cmd, deps, outs, metrics and code value of the (already type-checked) steps."""
    texts: list[str] = []
    add, extend = texts.append, texts.extend
    for step in steps.values():
        if step["cmd"] is not None:
            add(step["cmd"])
        for field in ("deps", "outs", "metrics"):
            table = step[field]
            if table is not None:
                extend(table.values() if type(table) is dict else table)
        extend(step["code"])
    return texts


def _pipeline(data: Any) -> dict:
    _keys(data, _PIPELINE)
    if "version" not in data or "steps" not in data:
        raise _Unsure
    version = data["version"]
    if type(version) is not int or version != 1:
        raise _Unsure
    steps_in = data["steps"]
    if type(steps_in) is not dict:
        raise _Unsure
    steps: dict[str, dict] = {}
    match = STEP_NAME.match
    dossier = False
    for name, body in steps_in.items():
        if type(name) is not str or match(name) is None:
            raise _Unsure
        step = _step(body)
        if step["kind"] is not None:
            dossier = True
        steps[name] = step
    if any_lone_brace(_placeholder_texts(steps)):  # an error that model.py locates at the brace
        raise _Unsure
    experiment = _experiment(data.get("experiment"))
    if dossier and (experiment is None or not experiment["authors"] or not experiment.get("license")):
        raise _Unsure
    params = data.get("params")
    if params is not None and type(params) is not str:
        if type(params) is not dict:
            raise _Unsure
        params = _any(params)
    return {
        "version": 1,
        "experiment": experiment,
        "defaults": _defaults(data["defaults"]) if "defaults" in data else
        {"seed": 0, "determinism": "strict", "resources": _no_resources(), "environment": None},
        "env": _env(data["env"]) if "env" in data else {"files": [], "vars": [], "tools": []},
        "environments": _environments(data["environments"]) if "environments" in data else {},
        "params": params,
        "store": _opt_str(data.get("store")),
        "remotes": _remotes(data["remotes"]) if "remotes" in data else {},
        "executors": _executors(data["executors"]) if "executors" in data else {"slurm": None},
        "steps": steps,
    }
