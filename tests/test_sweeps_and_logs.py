"""Habits a Snakemake or DVC user brings (issue 16): sweeps from a parameters list, sweeps listed
in declaration order, a step's captured output on demand, progress a CI log can show."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from conftest import no_traceback

SWEEP = {
    "sci.yaml": """
        version: 1
        params: params.yaml
        steps:
          count:
            foreach: {sample: "{params.samples}"}
            cmd: echo {item.sample} > {outs}
            outs: ["counts/{item.sample}.txt"]
          merge:
            deps: {counts: "counts/*.txt"}
            cmd: cat {deps.counts} > {outs}
            outs: [merged.txt]
        """,
    "params.yaml": "samples: [s2, s10, s1]\nother: 1\n",
}


def test_a_sweep_over_a_parameters_list(ws):
    """`foreach: {sample: "{params.samples}"}`: one node per item of the list; `--set` changes
    the list — a new item runs, the others stay cached, a dropped one leaves the plan."""
    sci = ws(SWEEP)
    out = sci.build()
    assert out["executed"] == ["count[sample=s10]", "count[sample=s1]", "count[sample=s2]", "merge"]
    grown = sci.build("--set", "samples=[s2, s10, s1, s3]")
    assert grown["executed"] == ["count[sample=s3]", "merge"]
    assert grown["cached"] == ["count[sample=s10]", "count[sample=s1]", "count[sample=s2]"]
    shrunk = sci.build("--set", "samples=[s2, s1]")
    assert [n["node"] for n in shrunk["nodes"]] == ["count[sample=s2]", "count[sample=s1]", "merge"]
    # an edit of params.yaml is a parameter edit like any other; back to the first list: all cached
    (sci.root / "params.yaml").write_text("samples: [s2, s10, s1]\nother: 2\n")
    assert sci.build()["executed"] == []


def test_a_sweep_parameter_that_is_no_list_is_one_line_at_its_place(ws):
    sci = ws({**SWEEP, "params.yaml": "samples: s1\n"})
    proc = sci("build", check=2)
    assert "sci.yaml:5:23: step count: foreach sample: parameter 'samples' is a str, not a list" in proc.stderr
    (sci.root / "params.yaml").write_text("sample: [a]\n")
    proc = sci("build", check=2)
    assert "parameter 'samples' is not defined (hint: did you mean 'sample'?)" in proc.stderr
    (sci.root / "sci.yaml").write_text(SWEEP["sci.yaml"].replace('"{params.samples}"', '"samples"'))
    proc = sci("build", check=2)
    assert "foreach sample: give a list, or a list in the parameters as \"{params.KEY}\"" in proc.stderr
    assert no_traceback(proc.stderr)


ORDER = {
    "sci.yaml": """
        version: 1
        steps:
          sim:
            foreach: {noise: [0.0, 0.05, 0.1, 0.2, 1, 10, 2]}
            cmd: echo {item.noise} > {outs}
            outs: ["s-{item.noise}.txt"]
          fit:
            deps: ["s-*.txt"]
            cmd: cat {deps} > {outs}
            outs: [fit.txt]
        """,
}
DECLARED = [f"sim[noise={v}]" for v in ("0.0", "0.05", "0.1", "0.2", "1", "10", "2")]


def test_a_sweep_is_listed_in_declaration_order_everywhere(ws):
    """Never string order (`noise=0.0` after `noise=0.05`, `10` before `2`): the build's lines,
    its --json nodes, the manifest's plan, status and dag list a sweep as declared."""
    sci = ws(ORDER)
    proc = sci("build", "-j", "1")
    executed = [line.split()[1] for line in proc.stderr.splitlines() if line.strip().startswith("executed")]
    assert executed == DECLARED + ["fit"]
    out = sci.build("--force", "sim")
    assert [n["node"] for n in out["nodes"]] == DECLARED + ["fit"]
    run = sorted((sci.root / "runs").iterdir())[-1]
    assert [p["node"] for p in json.loads((run / "manifest.json").read_text())["plan"]] == DECLARED + ["fit"]
    status = [line.split()[-1] for line in sci("status").stdout.splitlines()]
    assert status == DECLARED + ["fit"]
    dag = sci("dag").stdout.splitlines()
    assert [line.split()[0] for line in dag] == DECLARED + ["fit"]
    assert dag[-1] == "fit  <- " + ", ".join(DECLARED)


def test_sci_log_prints_what_a_step_wrote(ws):
    """`sci log NODE`: the captured stdout and stderr of its latest execution — a successful one
    too — and of a failed one; `--run ID` an earlier one; `--stderr` the bytes alone."""
    sci = ws({"sci.yaml": """
        version: 1
        params: {n: 1}
        steps:
          talk:
            params: [n]
            cmd: echo "out {params.n}"; echo "warning {params.n}" >&2; echo x > {outs}
            outs: [t.txt]
          bad:
            cmd: echo partial; echo boom >&2; exit 3
            outs: [b.txt]
        """})
    sci("build", "-k", check=1)
    first = sorted(p.name for p in (sci.root / "runs").iterdir())[-1]
    text = sci("log", "talk").stdout
    assert "== talk stdout (executed" in text and "out 1\n" in text and "warning 1\n" in text
    assert sci("log", "talk", "--stderr").stdout == "warning 1\n"
    failed = sci("log", "bad").stdout
    assert "(failed, run " in failed and "partial\n" in failed and "boom\n" in failed
    sci("build", "talk", "--set", "n=2")
    assert sci("log", "talk", "--stdout").stdout == "out 2\n"
    assert sci("log", "talk", "--run", first, "--stdout").stdout == "out 1\n"
    proc = sci("log", "tlak", check=2)
    assert "no node named 'tlak' (hint: did you mean 'talk'?)" in proc.stderr


def test_progress_lines_without_a_terminal_and_node_names_on_one(ws):
    """Piped (CI): one line per finished node with how far the build is. On a terminal the
    live bar names the running nodes — `a[i=2]`, not `a` (brackets are not markup)."""
    sci = ws({"sci.yaml": "version: 1\nsteps:\n  a:\n    foreach: {i: [1, 2, 3]}\n"
                          "    cmd: sleep 0.4 && echo {item.i} > {outs}\n    outs: ['o/{item.i}.txt']\n"})
    lines = sci("build", "-j", "1").stderr.splitlines()
    assert [line.split()[-1] for line in lines if line.startswith("  executed")] == ["[1/3]", "[2/3]", "[3/3]"]
    master, slave = pty.openpty()
    env = dict(sci.env, TERM="xterm", COLUMNS="120")
    proc = subprocess.Popen([sys.executable, "-m", "sci.cli", "build", "-j", "1", "--force", "a"], cwd=sci.root,
                            env=env, stdin=slave, stdout=slave, stderr=slave)
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
    assert "running 1: a[i=" in screen, screen
