"""Steps → nodes: `foreach` expansion, placeholder rendering, path checks (the spec's "plan")."""

from __future__ import annotations

import itertools
import posixpath
import re
import shlex
from typing import Any

from sci.spec import params as params_mod
from sci.errors import SpecError
from sci.spec.limits import check_plan_size
from sci.spec.load import Positions
from sci.spec.placeholders import TOKEN as PLACEHOLDER
from sci.spec.placeholders import foreach_param, lone_brace_error
from sci.values import Value
from sci.workspace import owns

GLOB_CHARS = re.compile(r"[*?\[]")
# `{gpus}` is only known at dispatch time: rendering leaves this marker, the executor fills it.
GPUS_MARK = "\x1egpus\x1e"
DOSSIER_FN = "sci.evidence.dossier:build_step"


class Node(Value):
    """One runnable unit: a step, or one `foreach` combination of it.

    `deps` maps each dep name to its rendered path or glob (list-form deps are named by their
    path); graph building resolves globs into `dep_paths`. `outs` maps names to normalized
    workspace-relative POSIX paths. `origin` is the step's path in sci.yaml, for errors.
    `kind` is "cmd", "fn" or "dossier". `metrics` maps the names of the outputs that are metrics
    files (SPEC §11) to their paths: each is in `outs` too, under the same name. `environment`
    names the declared software environment it runs in (SPEC §10), None for the workspace's own
    (the caller's PATH).
    """

    __slots__ = _FIELDS = ("name", "step", "kind", "template", "fn", "deps", "deps_named", "outs", "outs_named",
                           "code", "params", "seed", "resources", "determinism", "sandbox", "env", "item", "origin",
                           "dossier_steps", "evidence", "dep_paths", "cmd", "metrics", "environment")

    def __init__(self, name: str, step: str, kind: str, template: str | None, fn: str | None,
                 deps: dict[str, str], deps_named: bool, outs: dict[str, str], outs_named: bool, code: list[str],
                 params: dict[str, Any], seed: int, resources: dict[str, float], determinism: str, sandbox: bool,
                 env: list[str], item: dict[str, Any], origin: tuple, dossier_steps: list[str] | None = None,
                 evidence: list[str] | None = None, dep_paths: dict[str, list[str]] | None = None,
                 cmd: str | None = None, metrics: dict[str, str] | None = None, environment: str | None = None):
        self.name, self.step, self.kind, self.template, self.fn = name, step, kind, template, fn
        self.deps, self.deps_named, self.outs, self.outs_named = deps, deps_named, outs, outs_named
        self.code, self.params, self.seed, self.resources = code, params, seed, resources
        self.determinism, self.sandbox, self.env, self.item, self.origin = determinism, sandbox, env, item, origin
        self.dossier_steps = dossier_steps if dossier_steps is not None else []
        self.evidence = evidence if evidence is not None else []
        self.dep_paths = dep_paths if dep_paths is not None else {}
        self.cmd = cmd
        self.metrics = metrics if metrics is not None else {}
        self.environment = environment  # a name under `environments:`, or None: the workspace's own

    @property
    def needs_gpu(self) -> bool:
        return self.resources.get("gpu", 0) > 0

    def all_dep_paths(self) -> list[str]:
        return [p for paths in self.dep_paths.values() for p in paths]

    def __reduce__(self):
        # Pickled as one constructor call: the plan cache of 10,000 nodes loads in half the
        # time it takes through the slots state.
        return (Node, tuple(getattr(self, name) for name in _NODE_FIELDS))


_NODE_FIELDS = Node._FIELDS


def item_label(item: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in item.items())


def _fmt(value: Any) -> str:
    return str(value)


def check_path(raw: str, pos: Positions, where: tuple, reserved: tuple[str, ...], *, what: str) -> str:
    """Normalize a workspace-relative path; reject absolute paths, `..` escapes and sci's own dirs."""
    text = raw.strip()
    if not text:
        raise SpecError(f"empty {what} path", location=pos.at(where), hint="give a path relative to the workspace")
    if text.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", text):
        raise SpecError(f"{what} path {text!r} is absolute", location=pos.at(where),
                        hint="paths must be relative to the workspace root")
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../"):
        raise SpecError(f"{what} path {text!r} escapes the workspace", location=pos.at(where),
                        hint="keep every path inside the workspace (no ..)")
    owner = owns(norm, reserved)
    if owner is not None:
        raise SpecError(f"{what} path {text!r} lies in {owner}/, which sci owns", location=pos.at(where),
                        hint="put data and results elsewhere in the workspace")
    return norm


# Files sci itself reads, besides the params file: no output may be one of them or hold one.
# (The directories sci owns, .sci/, runs/ and the store's, are refused by workspace.owns.)
SCI_FILES = ("sci.yaml", "config/hardware.yaml")


def owned_files(params_spec: Any) -> tuple[str, ...]:
    """The workspace files an output may not be or contain: sci.yaml, config/hardware.yaml and
    the params file (when `params:` names one)."""
    if isinstance(params_spec, str) and params_spec.strip():
        return (*SCI_FILES, posixpath.normpath(params_spec.strip()))
    return SCI_FILES


def check_output_path(path: str, pos: Positions, where: tuple, owned: tuple[str, ...]) -> None:
    """Refuse an output that would replace the workspace, a file sci reads, or git's folder."""
    if path == ".":
        raise SpecError("output '.' is the workspace itself", location=pos.at(where),
                        hint="name a file or a directory inside the workspace")
    if path.split("/", 1)[0] == ".git":
        raise SpecError(f"output {path!r} lies in .git/, which git owns", location=pos.at(where),
                        hint="put results elsewhere in the workspace")
    for f in owned:
        if f == path or f.startswith(path + "/"):
            what = "is" if f == path else "would replace the directory holding"
            raise SpecError(f"output {path!r} {what} {f}, which sci reads", location=pos.at(where),
                            hint="put results elsewhere in the workspace")


def render(template: str, values: dict[str, Any], pos: Positions, where: tuple, *, allowed: set[str],
           quote_paths: bool = True) -> str:
    """Fill `{name}` placeholders from `values`; `{{`/`}}` are literal braces."""

    def sub(m: re.Match) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        if len(tok) == 1:  # the validators reject this first; a plan cached before they did may not
            raise lone_brace_error(template, m.start(), pos, where)
        name = m.group(1).strip()
        root = name.split(".", 1)[0]
        if root not in allowed:
            valid = ", ".join(sorted("{" + a + "}" for a in allowed))
            raise SpecError(f"unknown placeholder {{{name}}}", location=pos.at(where),
                            hint=f"placeholders allowed here: {valid}; write {{{{ and }}}} for literal braces")
        if name == "gpus":
            return GPUS_MARK
        if root in ("deps", "outs"):
            table: dict[str, list[str]] = values[root]
            if name == root:
                paths = [p for ps in table.values() for p in ps]
            else:
                sub_name = name[len(root) + 1:]
                if sub_name not in table:
                    names = ", ".join(sorted(table)) or "none"
                    raise SpecError(f"unknown placeholder {{{name}}}: no {root} named {sub_name!r}",
                                    location=pos.at(where), hint=f"{root} names here: {names}")
                paths = table[sub_name]
            return " ".join(shlex.quote(p) if quote_paths else p for p in paths)
        if root == "params":
            try:
                return _fmt(params_mod.lookup(values["params"], name[len("params."):]))
            except KeyError:
                raise SpecError(f"unknown placeholder {{{name}}}: no such parameter", location=pos.at(where),
                                hint=params_mod.missing_key_hint(values["params"], name[len("params."):])) from None
        if root == "item":
            key = name[len("item."):]
            if key not in values["item"]:
                raise SpecError(f"unknown placeholder {{{name}}}", location=pos.at(where),
                                hint="{item.K} needs a foreach key K" if not values["item"]
                                else f"foreach keys: {', '.join(values['item'])}")
            return _fmt(values["item"][key])
        if root == "resources":
            key = name[len("resources."):]
            if key not in values["resources"]:
                raise SpecError(f"unknown placeholder {{{name}}}", location=pos.at(where),
                                hint="resources keys: cpu, mem_gb, gpu, vram_gb")
            return _fmt(values["resources"][key])
        if name == "seed":
            return str(values["seed"])
        raise SpecError(f"unknown placeholder {{{name}}}", location=pos.at(where), hint="see docs/format.md")

    return PLACEHOLDER.sub(sub, template)


def _resources(defaults: dict, step: dict) -> dict[str, float]:
    out = {"cpu": 1, "mem_gb": 0.0, "gpu": 0, "vram_gb": 0.0}
    for src in (defaults, step):
        for k in out:
            v = src.get(k)
            if v is not None:
                out[k] = v
    return out


def _as_map(value, *, prefix: str) -> tuple[dict[str, str], bool]:
    if value is None:
        return {}, True
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}, True
    return {str(v): str(v) for v in value}, False


class _Fields:
    """Attribute view of a validated, dumped step mapping (spec.Step.model_dump())."""

    __slots__ = ("_d",)

    def __init__(self, d: dict):
        self._d = d

    def __getattr__(self, name: str):
        return self._d[name]


def param_reads(step: dict) -> list[str]:
    """The dotted parameter keys a step's expansion reads: its `params:` and `{params.…}` placeholders."""
    reads = list(step["params"])
    for items in (step["foreach"] or {}).values():
        match = foreach_param(items) if isinstance(items, str) else None
        if match is not None:
            reads.append(match.group(1))  # a sweep over a parameter's list: re-planned when it changes
    texts = [step["cmd"] or "", *step["code"]]
    for table in (step["deps"], step["outs"], step.get("metrics")):
        if table:
            texts.extend(table.values() if isinstance(table, dict) else table)
    for text in texts:
        for m in PLACEHOLDER.finditer(str(text)):
            name = (m.group(1) or "").strip()
            if name.startswith("params."):
                reads.append(name[len("params."):])
    return reads


def expand(pipeline: dict, params: dict, pos: Positions, *, reserved: tuple[str, ...], derive_seed,
           owned: tuple[str, ...] = SCI_FILES) -> list[Node]:
    """Every step's nodes, in declaration order (foreach combinations in declaration order).
    `owned`: the files no output may be or hold (`owned_files`).

    `pipeline` is the validated sci.yaml as plain data (spec.Pipeline.model_dump()), so a
    cached pipeline can be expanded again without importing pydantic.
    """
    nodes: list[Node] = []
    defaults = pipeline["defaults"]
    all_steps = pipeline["steps"]
    envs = pipeline.get("environments")  # None when replan.patch re-expands a few steps
    if envs is not None:
        _check_default_environment(defaults, envs, pos)
    for step_name, step_data in all_steps.items():
        step = _Fields(step_data)
        origin = ("steps", step_name)
        declared: dict[str, Any] = {}
        for i, key in enumerate(step.params):
            try:
                declared[key] = params_mod.lookup(params, key)
            except KeyError:
                raise SpecError(f"step {step_name}: parameter '{key}' is not defined",
                                location=pos.at(origin + ("params", i)),
                                hint=params_mod.missing_key_hint(params, key)) from None
        if step.foreach:
            keys = list(step.foreach)
            count = 1
            lists = {k: _foreach_items(step_name, k, step.foreach[k], params, pos, origin) for k in keys}
            for k in keys:
                if not lists[k]:
                    raise SpecError(f"step {step_name}: foreach list '{k}' is empty",
                                    location=pos.at(origin + ("foreach", k)), hint="give at least one value")
                count *= len(lists[k])
            check_plan_size(len(nodes) + count, step_name, pos.at(origin + ("foreach",)))
            combos = [dict(zip(keys, vals)) for vals in itertools.product(*(lists[k] for k in keys))]
        else:
            combos = [{}]
        kind = "cmd" if step.cmd is not None else "fn" if step.fn is not None else "dossier"
        environment = None if kind == "dossier" else (step.environment or defaults.get("environment"))
        if environment is not None and envs is not None and environment not in envs:
            where = origin + ("environment",) if step.environment else ("defaults", "environment")
            raise SpecError(f"step {step_name}: unknown environment {environment!r}", location=pos.at(where),
                            hint=_environments_hint(envs))
        resources = _resources(defaults["resources"], step.resources)
        determinism = step.determinism or defaults["determinism"]
        step_outs: dict[str, str] = {}
        for item in combos:
            name = f"{step_name}[{item_label(item)}]" if step.foreach else step_name
            seed = step.seed if step.seed is not None else derive_seed(defaults["seed"], name)
            values = {"item": item, "params": params, "seed": seed}
            path_allowed = {"item", "params", "seed"}
            raw_deps, deps_named = _as_map(step.deps, prefix="dep")
            raw_outs, outs_named = _as_map(step.outs, prefix="out")
            deps: dict[str, str] = {}
            for dname, raw in raw_deps.items():
                where = origin + ("deps", dname if deps_named else list(raw_deps).index(dname))
                rendered = render(raw, values, pos, where, allowed=path_allowed)
                deps[rendered if not deps_named else dname] = check_path(rendered, pos, where, reserved, what="dep")
            outs: dict[str, str] = {}
            for oname, raw in raw_outs.items():
                where = origin + ("outs", oname if outs_named else list(raw_outs).index(oname))
                rendered = render(raw, values, pos, where, allowed=path_allowed)
                path = check_path(rendered, pos, where, reserved, what="output")
                check_output_path(path, pos, where, owned)
                if GLOB_CHARS.search(path):
                    raise SpecError(f"output {path!r} is a glob", location=pos.at(where),
                                    hint="outputs must be exact paths; use a directory output for many files")
                if step.foreach and path in step_outs.values():
                    raise SpecError(f"step {step_name}: foreach items write the same output {path!r}",
                                    location=pos.at(where),
                                    hint="put {item.KEY} in the output path so each item writes its own file")
                outs[oname if outs_named else path] = path
            metrics: dict[str, str] = {}
            raw_metrics, metrics_named = _as_map(step_data.get("metrics"), prefix="metric")
            for mname, raw in raw_metrics.items():
                where = origin + ("metrics", mname if metrics_named else list(raw_metrics).index(mname))
                rendered = render(raw, values, pos, where, allowed=path_allowed)
                path = check_path(rendered, pos, where, reserved, what="metrics")
                if GLOB_CHARS.search(path):
                    raise SpecError(f"metrics file {path!r} is a glob", location=pos.at(where),
                                    hint="name each metrics file exactly")
                key = mname if metrics_named else path
                if key in outs or path in outs.values():
                    raise SpecError(f"step {step_name}: metrics file {path!r} is also declared under outs"
                                    if path in outs.values() else
                                    f"step {step_name}: the name {key!r} is both an output and a metrics file",
                                    location=pos.at(where),
                                    hint="a metrics file is an output already: declare it once, under metrics:")
                if step.foreach and path in step_outs.values():
                    raise SpecError(f"step {step_name}: foreach items write the same metrics file {path!r}",
                                    location=pos.at(where),
                                    hint="put {item.KEY} in the path so each item writes its own file")
                metrics[key] = outs[key] = path
            step_outs.update({f"{name}:{k}": v for k, v in outs.items()})
            code = [check_path(render(c, values, pos, origin + ("code", i), allowed=path_allowed), pos,
                               origin + ("code", i), reserved, what="code") for i, c in enumerate(step.code)]
            if kind != "dossier" and not outs:
                raise SpecError(f"step {step_name} declares no outputs", location=pos.at(origin, key=True),
                                hint="add outs: with the files the step writes")
            evidence = []
            if kind == "dossier":
                if len(outs) != 1:
                    raise SpecError(f"dossier step {step_name} needs exactly one output directory",
                                    location=pos.at(origin + ("outs",)), hint="write outs: [dossier/]")
                evidence = [check_path(e, pos, origin + ("evidence", i), reserved, what="evidence")
                            for i, e in enumerate(step.evidence)]
                for i, s in enumerate(step.steps or []):
                    if s not in all_steps:
                        raise SpecError(f"dossier step {step_name} indexes unknown step {s!r}",
                                        location=pos.at(origin + ("steps", i)),
                                        hint=f"steps: {', '.join(all_steps)}")
            nodes.append(Node(
                name=name, step=step_name, kind=kind, template=step.cmd,
                fn=step.fn if kind == "fn" else (DOSSIER_FN if kind == "dossier" else None),
                deps=deps, deps_named=deps_named, outs=outs, outs_named=outs_named, code=code,
                params=declared, seed=seed, resources=resources, determinism=determinism,
                sandbox=step.sandbox, env=list(step.env), item=item, origin=origin,
                dossier_steps=list(step.steps or []), evidence=evidence, metrics=metrics, environment=environment,
            ))
    return nodes


def _foreach_items(step_name: str, k: str, items: Any, params: dict, pos: Positions, origin: tuple) -> list:
    """A foreach list: as written, or the parameters' list that `"{params.KEY}"` names."""
    if not isinstance(items, str):
        return items
    match = foreach_param(items)
    where = pos.at(origin + ("foreach", k))
    if match is None:  # the validators refuse this first
        raise SpecError(f"step {step_name}: foreach {k}: give a list or \"{{params.KEY}}\"", location=where)
    key = match.group(1)
    try:
        value = params_mod.lookup(params, key)
    except KeyError:
        raise SpecError(f"step {step_name}: foreach {k}: parameter '{key}' is not defined", location=where,
                        hint=params_mod.missing_key_hint(params, key)) from None
    if not isinstance(value, list):
        raise SpecError(f"step {step_name}: foreach {k}: parameter '{key}' is a {type(value).__name__}, not a list",
                        location=where, hint=f"make {key} a list in the parameters (--set '{key}=[a, b]')")
    return value


def _environments_hint(declared: dict) -> str:
    if declared:
        return f"environments declared: {', '.join(declared)}"
    return "declare it under environments: (python: DIR, script: FILE or container: IMAGE@sha256:…)"


def _check_default_environment(defaults: dict, declared: dict, pos: Positions) -> None:
    name = defaults.get("environment")
    if name is not None and name not in declared:
        raise SpecError(f"defaults: unknown environment {name!r}", location=pos.at(("defaults", "environment")),
                        hint=_environments_hint(declared))


def render_commands(nodes: list[Node], params: dict, pos: Positions) -> None:
    """Fill every cmd template once globs are resolved (`{deps}` needs the matched paths)."""
    allowed = {"deps", "outs", "params", "seed", "item", "gpus", "resources"}
    for n in nodes:
        if n.kind != "cmd":
            continue
        values = {"deps": n.dep_paths, "outs": {k: [v] for k, v in n.outs.items()}, "params": params,
                  "seed": n.seed, "item": n.item, "resources": n.resources}
        n.cmd = render(n.template or "", values, pos, n.origin + ("cmd",), allowed=allowed)
