"""The pieces of the differential test (test_differential.py): a small generated pipeline and its
workspace files, and one build of it run in-process and reduced to what is compared.

A workspace here keeps sources and outputs apart, so a from-scratch copy is easy to take:

    sci.yaml  params.yaml  config/hardware.yaml   the request
    data/*.txt  src/s.txt                         sources (a glob dep and a plain file dep)
    rules/__init__.py  rules/helper.py            fn step code: rules/<step>.py imports rules.helper
    out/                                          every declared output, nothing else
    cas/  runs/  .sci/                            sci's store, records and hints
"""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from blake3 import blake3

from sci import api
from sci.errors import SciError
from sci.workspace import Workspace

STEP_FLAG = "STEP_FLAG"  # a step's `env:` variable: its value enters the step's key
GLOBAL_FLAG = "DIFF_GLOBAL"  # an `env.vars` variable: its value enters the environment fingerprint
ENV_VARS = (STEP_FLAG, GLOBAL_FLAG)
PARAM_KEYS = ("fit.tol", "fit.k", "n", "unused")  # what params.yaml holds (`unused`: read by no step)
SET_KEYS = ("fit.tol", "fit.k", "n")  # what `--set` may name
NOT_SOURCES = (".sci", "runs", "cas", "out")  # top-level entries a from-scratch copy leaves out


# -- the pipeline ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One generated step. `kind`: "cmd" (a file output), "dir" (a directory output, by a
    command), "fn" (a Python function in rules/<name>.py that imports rules.helper). `ups`: the
    earlier steps whose outputs it reads (the DAG's edges). `source`: "glob" (data/*.txt),
    "file" (src/s.txt) or None. `param`: "leaf" (reads fit.tol), "tree" (declares the subtree
    fit), "n" (a cmd placeholder only), or None. `env`: declares `env: [STEP_FLAG]`."""

    name: str
    kind: str
    foreach: bool
    ups: tuple[int, ...]
    source: str | None
    param: str | None
    env: bool

    @property
    def items(self) -> list[int]:
        return [1, 2] if self.foreach else [0]

    def node_names(self) -> list[str]:
        return [f"{self.name}[i={i}]" for i in self.items] if self.foreach else [self.name]

    def out_path(self, item: int | str = "{item.i}") -> str:
        stem = f"out/{self.name}-{item}" if self.foreach else f"out/{self.name}"
        return stem if self.kind == "dir" else stem + ".txt"

    def out_paths(self) -> list[str]:
        return [self.out_path(i) for i in self.items]


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]
    global_env: bool  # sci.yaml declares `env: {vars: [DIFF_GLOBAL]}`

    @property
    def fn_steps(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "fn"]

    @property
    def cmd_steps(self) -> list[Step]:
        return [s for s in self.steps if s.kind != "fn"]

    def nodes(self) -> list[str]:
        return [n for s in self.steps for n in s.node_names()]

    def outputs_of(self) -> dict[str, str]:
        """node → its output path."""
        return {n: s.out_path(i) if s.foreach else s.out_path()
                for s in self.steps for n, i in zip(s.node_names(), s.items)}

    def closure(self, targets: list[str]) -> set[str]:
        """The nodes a build of `targets` (step names, node names or output paths) selects."""
        if not targets:
            return set(self.nodes())
        outs = self.outputs_of()
        by_step = {s.name: s for s in self.steps}
        wanted: set[str] = set()
        for t in targets:
            if t in by_step:
                wanted.update(by_step[t].node_names())
            elif t in outs:
                wanted.add(t)
            else:
                wanted.update(n for n, p in outs.items() if p == t)
        ups = {n: [u for i in s.ups for u in self.steps[i].node_names()]
               for s in self.steps for n in s.node_names()}
        stack = list(wanted)
        while stack:
            for u in ups[stack.pop()]:
                if u not in wanted:
                    wanted.add(u)
                    stack.append(u)
        return wanted

    def targets(self) -> list[str]:
        """Every way to name a target: steps, sweep nodes, output paths."""
        out = [s.name for s in self.steps]
        out += [n for s in self.steps if s.foreach for n in s.node_names()]
        out += [p for s in self.steps for p in s.out_paths()]
        return out


def _q(text: str) -> str:
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def _dep_paths(p: Pipeline, step: Step) -> list[str]:
    deps = [path for i in step.ups for path in p.steps[i].out_paths()]
    if step.source == "glob":
        deps.append("data/*.txt")
    elif step.source == "file":
        deps.append("src/s.txt")
    return deps


def _shell(step: Step, variant: int) -> str:
    """The command of a cmd or dir step: every dep's bytes (a directory's files in order), then a
    line naming what else it depends on."""
    read = "for f in {deps}; do if [ -d $f ]; then cat $f/*; else cat $f; fi; done"
    line = f"echo {step.name} v{variant}"
    if step.param == "leaf":
        line += " tol={params.fit.tol}"
    elif step.param == "tree":
        line += " k={params.fit.k}"
    elif step.param == "n":
        line += " n={params.n}"
    if step.env:
        line += f" flag=${STEP_FLAG}"
    if step.foreach:
        line += " item={item.i}"
    if step.kind == "dir":
        return f"mkdir -p {{outs.o}} && {read} > {{outs.o}}/body.txt && {line} > {{outs.o}}/meta.txt"
    return f"{read} > {{outs.o}} && {line} >> {{outs.o}}"


def render_yaml(p: Pipeline, variants: dict[str, int], order: int) -> str:
    """sci.yaml. `variants` changes a cmd step's command; `order` shuffles the steps and each
    step's keys (the same pipeline, written differently: no key may change)."""
    rng = random.Random(order)
    head = ["version: 1", "defaults: {seed: 7}", "params: params.yaml"]
    if p.global_env:
        head.append(f"env: {{vars: [{GLOBAL_FLAG}]}}")
    blocks = []
    for step in p.steps:
        deps = _dep_paths(p, step)
        keys: list[str] = []
        if step.kind == "fn":
            keys.append(f"fn: rules.{step.name}:run")
            keys.append("deps: {" + ", ".join(f"d{i}: {_q(d)}" for i, d in enumerate(deps)) + "}")
        else:
            keys.append(f"cmd: {_q(_shell(step, variants.get(step.name, 0)))}")
            keys.append("deps: [" + ", ".join(_q(d) for d in deps) + "]")
        keys.append(f"outs: {{o: {_q(step.out_path())}}}")
        if step.param == "leaf":
            keys.append("params: [fit.tol]")
        elif step.param == "tree":
            keys.append("params: [fit]")
        if step.env:
            keys.append(f"env: [{STEP_FLAG}]")
        if step.foreach:
            keys.append("foreach: {i: [1, 2]}")
        if order:
            rng.shuffle(keys)
        blocks.append([f"  {step.name}:"] + [f"    {k}" for k in keys])
    if order:
        rng.shuffle(blocks)
    return "\n".join(head + ["steps:"] + [line for b in blocks for line in b]) + "\n"


def render_params(values: dict[str, int]) -> str:
    return (f"fit:\n  tol: {values['fit.tol']}\n  k: {values['fit.k']}\n"
            f"n: {values['n']}\nunused: {values['unused']}\n")


HELPER = '''"""Helpers of the fn steps (a local import: part of every fn step's code)."""
VERSION = {version}
{comment}

def read(p):
    if isinstance(p, list):
        return "".join(read(x) for x in p)
    if p.is_dir():
        return "".join(read(x) for x in sorted(p.iterdir()))
    return p.read_text()


def render(ctx, name, env):
    import os
    text = "".join(read(ctx.deps[k]) for k in sorted(ctx.deps))
    line = f"{{name}} h{{VERSION}} seed={{ctx.seed}} params={{sorted(ctx.params.items())}}"
    if env:
        line += f" flag={{os.environ.get('STEP_FLAG')}}"
    return text + line + "\\n"
'''


def render_helper(version: int, comment: int) -> str:
    return HELPER.format(version=version, comment=f"# revision {comment}" if comment else "")


def render_fn_module(step: Step, comment: int) -> str:
    extra = f"# revision {comment}\n" if comment else ""
    return (f"from rules.helper import render\n{extra}\n\n"
            f"def run(ctx):\n    ctx.outs['o'].write_text(render(ctx, {step.name!r}, {step.env!r}))\n")


# -- files -------------------------------------------------------------------------------------
def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not os.access(path, os.W_OK):
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    path.write_bytes(data)


def _writable(func, path, _exc) -> None:
    os.chmod(os.path.dirname(path), 0o755)
    os.chmod(path, 0o755)
    func(path)


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path, onerror=_writable)


def copy_workspace(src: Path, dst: Path, leave_out: tuple[str, ...]) -> None:
    shutil.copytree(src, dst, symlinks=True, ignore=lambda d, names: [n for n in names if Path(d) == src
                                                                      and n in leave_out])


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every regular file under `root` (relative POSIX path → bytes)."""
    out: dict[str, bytes] = {}
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in filenames:
            full = Path(dirpath, f)
            out[full.relative_to(root).as_posix()] = full.read_bytes()
    return out


def sources_digest(root: Path) -> str:
    """A digest of every source file of the workspace (what a from-scratch build is a function
    of, with the environment variables and the command)."""
    h = blake3()
    for top in sorted(os.listdir(root)):
        if top in NOT_SOURCES:
            continue
        full = root / top
        files = {top: full.read_bytes()} if full.is_file() else {
            f"{top}/{k}": v for k, v in tree_bytes(full).items() if "__pycache__" not in k}
        for rel in sorted(files):
            h.update(rel.encode() + b"\0" + blake3(files[rel]).digest())
    return h.hexdigest()


# -- one build, as compared ----------------------------------------------------------------------
@dataclass
class Outcome:
    """What one `sci build` did: the error class (None when it succeeded), each node's status,
    the manifest's plan (node → key, status, outputs) and the bytes of every file under out/."""

    error: str | None
    statuses: dict[str, str]
    plan: dict[str, dict] | None
    outputs: dict[str, bytes] = field(default_factory=dict)
    message: str = ""
    shortcut: str | None = None  # "noop" or "unchanged" when the run's log says a shortcut decided

    @property
    def executed(self) -> set[str]:
        return {n for n, s in self.statuses.items() if s == "executed"}


def run_build(root: Path, targets: list[str], overrides: list[str]) -> Outcome:
    argv = ["build", *targets, *(a for o in overrides for a in ("--set", o))]
    report, error, message = None, None, ""
    try:
        report = api.build(Workspace(root), list(targets), overrides=list(overrides), argv=argv)
    except SciError as exc:
        error, message = type(exc).__name__, str(exc)
        report = getattr(exc, "report", None)
    statuses, plan, shortcut = {}, None, None
    if report is not None:
        log = (report.run_dir / "logs.jsonl").read_text()
        shortcut = next((s for s in ("noop", "unchanged") if f'"event":"{s}"' in log.replace(" ", "")), None)
        statuses = {n["node"]: n["status"] for n in report.to_json()["nodes"]}
        manifest = json.loads((report.run_dir / "manifest.json").read_text())
        plan = {e["node"]: {"key": e["key"], "status": e["status"], "outputs": e["outputs"]}
                for e in manifest["plan"]}
    outputs = {f"out/{rel}": data for rel, data in tree_bytes(root / "out").items()}  # paths as sci.yaml names them
    return Outcome(error, statuses, plan, outputs, message, shortcut)


def run_status(root: Path, targets: list[str], overrides: list[str]) -> dict[str, tuple] | str:
    """`sci status` as node → (state, key, reasons); the error class when it fails."""
    try:
        rows = api.status(Workspace(root), list(targets), overrides=list(overrides))
    except SciError as exc:
        return type(exc).__name__
    return {r.node: (r.state, r.key, tuple(r.reasons)) for r in rows}
