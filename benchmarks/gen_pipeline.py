"""Benchmark workloads: the same pipeline of N trivial shell nodes, written for each tool.

A workload is a chain (node i reads node i-1's output) or a fan-out (every node reads one
source file). Node i writes `out/nNNNNN.txt`. With parameters (the default), node i also owns
one parameter `p.node<i>` whose value it writes into its output:

    { head -n 1 DEP; echo VALUE; } > OUT          # every output is two lines, whatever N

so editing one parameter changes exactly one node's output. In a chain the next node then
re-runs (its input bytes changed) and writes the same bytes as before, so a content-addressed
tool stops there (early cutoff): the expected re-run set is {i, i+1}; an mtime tool (make,
Snakemake) re-runs everything downstream. Without parameters every node is `cat DEP > OUT`.

Writers exist for sci (SPEC §2 `sci.yaml`), GNU make, Snakemake, DVC and doit, each in that
tool's idiomatic form (explicit rules for make and DVC, one wildcard rule for Snakemake, a task
generator for doit). Run `python benchmarks/gen_pipeline.py --help` for the command line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SHAPES = ("chain", "fanout")
TOOLS = ("sci", "make", "snakemake", "dvc", "doit")
SOURCE = "data/source.txt"
SOURCE_TEXT = "source line\nsecond line\n"


@dataclass(frozen=True)
class Workload:
    """What every tool is asked to build: `n` nodes of one shape, with or without params."""

    shape: str
    n: int
    params: bool = True
    # When set, every node also appends its name to this file (an absolute path outside the
    # workspace), so the harness learns which nodes ran whatever the tool reports.
    runlog: str | None = None

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, not {self.shape!r}")
        if self.n < 1:
            raise ValueError("a workload needs at least one node")

    def name(self, i: int) -> str:
        return f"n{i:05d}"

    def out(self, i: int) -> str:
        return f"out/{self.name(i)}.txt"

    def dep(self, i: int) -> str:
        return SOURCE if self.shape == "fanout" or i == 0 else self.out(i - 1)

    def param_key(self, i: int) -> str:
        return f"p.node{i}"

    def affected(self, i: int) -> list[str]:
        """Nodes a content-addressed tool must re-run after node i's parameter changed."""
        names = [self.name(i)]
        if self.shape == "chain" and i + 1 < self.n:
            names.append(self.name(i + 1))
        return names

    def edit_index(self) -> int:
        """The node whose parameter the incremental benchmark edits: the middle one."""
        return self.n // 2


# -- shared pieces ---------------------------------------------------------------------------

def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _params_yaml(values: list[int | str]) -> str:
    lines = ["p:"] + [f"  node{i}: {v}" for i, v in enumerate(values)]
    return "\n".join(lines) + "\n"


def _common(tool: str, w: Workload, dest: Path) -> None:
    _write(dest / SOURCE, SOURCE_TEXT)
    # Only sci and Snakemake create output folders themselves; the others would fail.
    (dest / "out").mkdir()
    if w.params and tool != "make":
        _write(dest / "params.yaml", _params_yaml([0] * w.n))


def _shell(w: Workload, i: int, dep: str, out: str, value: str) -> str:
    """Node i's command with its paths and its parameter's text already substituted."""
    cmd = f"{{ head -n 1 {dep}; echo {value}; }} > {out}" if w.params else f"cat {dep} > {out}"
    return cmd + _log(w, i)


def _log(w: Workload, i: int) -> str:
    return f" && echo {w.name(i)} >> {w.runlog}" if w.runlog else ""


def ran(w: Workload) -> list[str]:
    """Names of the nodes that ran since the run log was last cleared (sorted, with repeats)."""
    try:
        return sorted(Path(w.runlog).read_text().split())
    except FileNotFoundError:
        return []


def clear_runlog(w: Workload) -> None:
    Path(w.runlog).write_text("")


# -- one writer per tool -----------------------------------------------------------------------

def write_sci(w: Workload, dest: Path) -> None:
    lines = ["version: 1", "defaults:", "  seed: 1"]
    if w.params:
        lines.append("params: params.yaml")
    lines.append("steps:")
    for i in range(w.n):
        if w.params:
            cmd = f"{{{{ head -n 1 {{deps}}; echo {{params.{w.param_key(i)}}}; }}}} > {{outs}}"
        else:
            cmd = "cat {deps} > {outs}"
        cmd += _log(w, i)
        lines += [f"  {w.name(i)}:",
                  f"    cmd: {json.dumps(cmd)}",
                  f"    deps: [{w.dep(i)}]",
                  f"    outs: [{w.out(i)}]"]
        if w.params:
            lines.append(f"    params: [{w.param_key(i)}]")
    _write(dest / "sci.yaml", "\n".join(lines) + "\n")


def write_make(w: Workload, dest: Path) -> None:
    """Make has no parameters: each node's value lives in `params/node<i>.txt`, a prerequisite."""
    # No built-in rules: otherwise make tries a dozen implicit rules (RCS, SCCS, ...) for every
    # source and parameter file, which costs seconds at N = 10,000 and no Makefile tuned for
    # speed keeps.
    lines = ["MAKEFLAGS += --no-builtin-rules", ".SUFFIXES:", ".DELETE_ON_ERROR:",
             f"all: {' '.join(w.out(i) for i in range(w.n))}", ""]
    for i in range(w.n):
        if w.params:
            pfile = f"params/node{i}.txt"
            lines += [f"{w.out(i)}: {w.dep(i)} {pfile}",
                      f"\t{{ head -n 1 $<; cat {pfile}; }} > $@{_log(w, i)}"]
        else:
            lines += [f"{w.out(i)}: {w.dep(i)}", f"\tcat $< > $@{_log(w, i)}"]
    _write(dest / "Makefile", "\n".join(lines) + "\n")
    if w.params:
        for i in range(w.n):
            _write(dest / f"params/node{i}.txt", "0\n")


def write_snakemake(w: Workload, dest: Path) -> None:
    """One wildcard rule, as a Snakemake user would write it; params from `params.yaml`."""
    if w.shape == "chain":
        dep = f'lambda wc: "{SOURCE}" if int(wc.i) == 0 else "out/n%05d.txt" % (int(wc.i) - 1)'
    else:
        dep = f'"{SOURCE}"'
    text = [f"N = {w.n}"]
    if w.params:
        text.append('configfile: "params.yaml"')
    text += ["", "rule all:", '    input: ["out/n%05d.txt" % i for i in range(N)]', "",
             "rule node:", f"    input: {dep}", '    output: "out/n{i}.txt"']
    log = f" && echo n{{wildcards.i}} >> {w.runlog}" if w.runlog else ""
    if w.params:
        text += ['    params: p=lambda wc: config["p"]["node%d" % int(wc.i)]',
                 f'    shell: "{{{{ head -n 1 {{input}}; echo {{params.p}}; }}}} > {{output}}{log}"']
    else:
        text.append(f'    shell: "cat {{input}} > {{output}}{log}"')
    _write(dest / "Snakefile", "\n".join(text) + "\n")


def write_dvc(w: Workload, dest: Path, dvc: str = "dvc") -> None:
    """Explicit stages in `dvc.yaml`; `${p.nodeI}` is DVC's own templating from params.yaml."""
    lines = ["stages:"]
    for i in range(w.n):
        cmd = _shell(w, i, w.dep(i), w.out(i), "${" + w.param_key(i) + "}")
        lines += [f"  {w.name(i)}:", f"    cmd: {json.dumps(cmd)}",
                  f"    deps: [{w.dep(i)}]", f"    outs: [{w.out(i)}]"]
        if w.params:
            lines.append(f"    params: [{w.param_key(i)}]")
    _write(dest / "dvc.yaml", "\n".join(lines) + "\n")
    if not (dest / ".dvc").exists():
        subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=dest, check=True)
        # Autostage/analytics off: nothing but the pipeline itself should cost time.
        subprocess.run([dvc, "config", "core.analytics", "false"], cwd=dest, check=True)


def write_doit(w: Workload, dest: Path) -> None:
    """A task generator, doit's idiom; params read from `params.yaml` on every run."""
    text = f'''import yaml
from doit.tools import config_changed

DOIT_CONFIG = {{"verbosity": 0}}
N, SHAPE, PARAMS, RUNLOG = {w.n}, {w.shape!r}, {w.params!r}, {w.runlog!r}
if PARAMS:
    with open("params.yaml") as fh:
        P = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["p"]


def task_node():
    for i in range(N):
        dep = "{SOURCE}" if SHAPE == "fanout" or i == 0 else "out/n%05d.txt" % (i - 1)
        out = "out/n%05d.txt" % i
        task = {{"name": "n%05d" % i, "file_dep": [dep], "targets": [out]}}
        if PARAMS:
            value = P["node%d" % i]
            action = "{{ head -n 1 %s; echo %s; }} > %s" % (dep, value, out)
            task["uptodate"] = [config_changed(str(value))]
        else:
            action = "cat %s > %s" % (dep, out)
        if RUNLOG:
            action += " && echo n%05d >> %s" % (i, RUNLOG)
        task["actions"] = [action]
        yield task
'''
    _write(dest / "dodo.py", text)


WRITERS = {"sci": write_sci, "make": write_make, "snakemake": write_snakemake,
           "dvc": write_dvc, "doit": write_doit}


def generate(tool: str, w: Workload, dest: Path, **kwargs) -> Path:
    """Write a fresh workspace for `tool` at `dest` (emptied first)."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _common(tool, w, dest)
    WRITERS[tool](w, dest, **kwargs)
    return dest


def edit_param(tool: str, w: Workload, dest: Path, index: int, value: int | str,
               values: list[int | str] | None = None) -> list[int | str]:
    """Set node `index`'s parameter to `value` the way a user of `tool` would; returns the values.

    `values` is the current value list (all zeros after `generate`), so the params file is
    rewritten without parsing it.
    """
    values = list(values) if values is not None else [0] * w.n
    values[index] = value
    if tool == "make":
        Path(dest, f"params/node{index}.txt").write_text(f"{value}\n")
    else:
        Path(dest, "params.yaml").write_text(_params_yaml(values))
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="directory to create (emptied if it exists)")
    parser.add_argument("--tool", choices=TOOLS, default="sci")
    parser.add_argument("--shape", choices=SHAPES, default="chain")
    parser.add_argument("-n", "--nodes", type=int, default=200)
    parser.add_argument("--no-params", action="store_true", help="plain `cat` nodes, no parameters")
    parser.add_argument("--runlog", help="absolute path every node appends its name to")
    parser.add_argument("--dvc", default="dvc", help="the dvc executable (for `dvc init`)")
    args = parser.parse_args(argv)
    w = Workload(args.shape, args.nodes, params=not args.no_params, runlog=args.runlog)
    kwargs = {"dvc": args.dvc} if args.tool == "dvc" else {}
    generate(args.tool, w, args.dest, **kwargs)
    print(f"wrote a {w.shape} of {w.n} {args.tool} nodes to {args.dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
