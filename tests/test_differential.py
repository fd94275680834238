"""A generated differential test (issue 14): sci's shortcuts never serve a stale result.

Hypothesis makes a small pipeline (two to four steps: commands, a directory output, an `fn` step
whose module imports a local helper, a `foreach` sweep, a glob dep, a params subtree, a step
`env:` variable, an `env.vars` variable, sometimes config/hardware.yaml) and then plays what users
do to it: edit a parameter and undo the edit, `--set`, rewrite / touch a source, add a file a glob
matches, edit code, change an environment variable, rewrite sci.yaml, delete or edit an output,
drop or damage a store object, build a subset of targets, kill a build.

Every action ends in a build, run three times from the same files:

    the workspace as it is (.sci/ hints and all)  ─┐ executed set, every manifest plan entry
    a copy of it without .sci/ (same store)        ─┘ (key, status, outputs), every byte under out/: equal
    a copy of its sources alone (empty store)      ── keys, output digests and bytes: equal

and, on some builds, `sci status` taken just before must agree with what the build then did:
"would run" nodes execute, "up to date" and "restore" nodes do not (SPEC §7; a node whose store
object the test damaged may run instead: status does not read object bytes, and SPEC §3 has the
build drop a damaged object and rebuild), and every key status names is the build's key.
After a killed build the store must pass `sci fsck` (SPEC §8.6), apart from what the test
itself damaged or dropped.

Knobs: SCI_DIFF_EXAMPLES (default 200) examples, spread over the shards below so that
`pytest -n 2` runs them side by side; SCI_DIFF_STEPS (default 6) actions per example;
SCI_DIFF_TMP=DIR where the workspaces go (default /dev/shm where writable);
SCI_DIFF_STATS=FILE appends one JSON line per example (builds, executed nodes, which shortcuts
answered, seconds per kind of build) for a benchmark run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from blake3 import blake3
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, precondition, rule,
                                 run_state_machine_as_test)

from differential_support import (ENV_VARS, GLOBAL_FLAG, NOT_SOURCES, PARAM_KEYS, SET_KEYS, STEP_FLAG,
                                  Outcome, Pipeline, Step, copy_workspace, remove_tree, render_fn_module,
                                  render_helper, render_params, render_yaml, run_build, run_status,
                                  sources_digest, write_file)
from sci import api
from sci.workspace import Workspace

EXAMPLES = int(os.environ.get("SCI_DIFF_EXAMPLES", "200"))
STEPS = int(os.environ.get("SCI_DIFF_STEPS", "6"))
STATS = os.environ.get("SCI_DIFF_STATS")
SHARDS = 4
# Workspaces live in memory where there is a tmpfs: builds there are 3-4x faster (mkdir, rmdir
# and small writes cost milliseconds each on a busy disk). SCI_DIFF_TMP picks another place.
TMP_ROOT = os.environ.get("SCI_DIFF_TMP") or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
RACY_S = 0.07  # a file changed this long ago is trusted by the stat cache (hashing.RACY_WINDOW_NS: 50 ms)


# -- strategies --------------------------------------------------------------------------------
@st.composite
def pipelines(draw) -> Pipeline:
    """Two to four steps; every step reads something; at least one edge; at most one fn step
    (each of its runs starts a Python)."""
    n = draw(st.integers(2, 4))
    steps: list[Step] = []
    for i in range(n):
        kind = draw(st.sampled_from(["cmd", "dir", "fn"]))
        if kind == "fn" and any(s.kind == "fn" for s in steps):
            kind = "cmd"
        ups = tuple(sorted(draw(st.sets(st.integers(0, i - 1), max_size=2)))) if i else ()
        if i == 1 and not ups and not any(s.ups for s in steps):
            ups = (0,)  # the pipeline has an edge
        source = draw(st.sampled_from(["glob", "file", None]))
        if not ups and source is None:
            source = "glob"
        steps.append(Step(name=f"s{i}", kind=kind, foreach=draw(st.booleans()), ups=ups, source=source,
                          param=draw(st.sampled_from([None, "leaf", "tree", "n"])), env=draw(st.booleans())))
    return Pipeline(tuple(steps), global_env=draw(st.booleans()))


ENV_VALUES = st.sampled_from([None, "one", "two"])
# Which output or store object an action picks: an index drawn whatever the workspace holds,
# taken modulo what is there. What is there can differ between two runs of the same actions (a
# killed build stops at a moment of its own), and a draw whose range or presence followed it
# would make hypothesis stop with FlakyStrategyDefinition (seen once in 1,500 examples).
PICK = st.integers(0, 63)


# -- comparisons -------------------------------------------------------------------------------
def _short(b: bytes | None) -> str:
    return "<absent>" if b is None else repr(b[:120])


def _plan_diff(a: dict | None, b: dict | None, fields: tuple[str, ...]) -> list[str]:
    a, b = a or {}, b or {}
    out = []
    for node in sorted(set(a) | set(b)):
        ea = {f: a[node][f] for f in fields} if node in a else None
        eb = {f: b[node][f] for f in fields} if node in b else None
        if ea != eb:
            out.append(f"  {node}:\n    this build:  {ea}\n    other build: {eb}")
    return out


def _bytes_diff(a: dict[str, bytes], b: dict[str, bytes], paths: set[str] | None = None) -> list[str]:
    keys = (set(a) | set(b)) if paths is None else paths
    return [f"  {p}: this build {_short(a.get(p))} / other build {_short(b.get(p))}"
            for p in sorted(keys) if a.get(p) != b.get(p)]


def _describe(o: Outcome) -> str:
    return (f"error={o.error} {o.message[:200]!r} executed={sorted(o.executed)} "
            f"cached={sorted(n for n, s in o.statuses.items() if s == 'cached')}")


def check_same_as_without_state(real: Outcome, oracle: Outcome) -> None:
    """The workspace with its .sci/ hints decides exactly as a copy without them."""
    problems = []
    if real.error != oracle.error or real.statuses != oracle.statuses:
        problems.append(f"outcomes differ:\n  with .sci/:    {_describe(real)}\n  without .sci/: {_describe(oracle)}")
    problems += _plan_diff(real.plan, oracle.plan, ("key", "status", "outputs"))
    problems += _bytes_diff(real.outputs, oracle.outputs)
    assert not problems, ("the build with .sci/ state differs from the same build without it "
                          "(this build: with .sci/; other build: without):\n" + "\n".join(problems))


def check_same_as_scratch(real: Outcome, scratch: Outcome, outputs_of: dict[str, str]) -> None:
    """Keys, output digests and output bytes equal a from-scratch build's (fresh sources, empty
    store): a shortcut or a store object can never hand out a stale or damaged result."""
    problems = []
    if real.error or scratch.error:
        if real.error != scratch.error:
            problems.append(f"errors differ:\n  workspace:    {_describe(real)}\n  from scratch: {_describe(scratch)}")
    else:
        problems += _plan_diff(real.plan, scratch.plan, ("key", "outputs"))
        paths = {p for n in (scratch.plan or {}) for p in real.outputs.keys() | scratch.outputs.keys()
                 if p == outputs_of[n] or p.startswith(outputs_of[n] + "/")}
        problems += _bytes_diff(real.outputs, scratch.outputs, paths)
    assert not problems, ("the build differs from a from-scratch build of the same sources "
                          "(this build: the workspace's; other build: from scratch):\n" + "\n".join(problems))


# What each `sci status` state promises about the build that follows (SPEC §7). "recorded" (an
# answer taken from the last build's record) is "up to date" said from the record; "would
# fetch" needs a remote, which these workspaces do not have.
RUNS, STAYS, WAITS = {"would run"}, {"up to date", "restore", "recorded", "would fetch"}, {"waits"}


def _rows(rows: dict | str) -> dict | str:
    """node → (state, key), "recorded" read as "up to date"; an error class stays as it is."""
    if not isinstance(rows, dict):
        return rows
    return {n: ("up to date" if state == "recorded" else state, key) for n, (state, key, _) in rows.items()}


def check_status_agrees(before: dict | str, before_oracle: dict | str, real: Outcome, damaged: set[str],
                        outputs_of: dict[str, str]) -> None:
    """`sci status` just before the build says the same with and without .sci/, and what the
    build then did: a "would run" node executes, an "up to date" or "restore" node does not
    (unless a store object it stands on was damaged: status does not read object bytes, and the
    build must drop a damaged object and rebuild, SPEC §3), a waiting node may do either; every
    key status names is the build's key."""
    assert _rows(before) == _rows(before_oracle), (f"sci status differs with and without .sci/:\n"
                                                   f"  with:    {before}\n  without: {before_oracle}")
    if real.error or not isinstance(before, dict):
        return
    problems = []
    for node, (state, key, reasons) in before.items():
        done = real.statuses.get(node)
        entry = (real.plan or {}).get(node)
        if state not in RUNS | STAYS | WAITS:
            problems.append(f"  {node}: status state {state!r} is not one this test knows what to expect of")
        if key is not None and entry is not None and entry["key"] != key:
            problems.append(f"  {node}: status key {key[:16]} but the build's key {entry['key'][:16]}")
        if state in RUNS and done != "executed":
            problems.append(f"  {node}: status said {state!r} {list(reasons)} but the build says {done}")
        if state in STAYS and done != "cached":
            prefix = outputs_of[node]
            digests = {r["digest"] for r in (entry or {}).get("outputs", {}).values()}
            digests |= {blake3(b).hexdigest() for p, b in real.outputs.items() if p.startswith(prefix + "/")}
            if not digests & damaged:
                problems.append(f"  {node}: status said {state!r} {list(reasons)} but the build says {done}")
    assert not problems, ("sci status disagrees with the build that followed it:\n" + "\n".join(problems)
                          + f"\n  status: {before}\n  build:  {_describe(real)}")


# -- the machine ---------------------------------------------------------------------------------
class DifferentialMachine(RuleBasedStateMachine):
    scratch_memo: dict[tuple, Outcome] = {}  # a from-scratch build is a function of its key

    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="sci-diff-", dir=TMP_ROOT))
        self.ws = self.tmp / "ws"
        self.saved_env = {k: os.environ.get(k) for k in (*ENV_VARS, "SCI_CAS", "SCI_REMOTE", "SCI_LINK")}
        for k in ("SCI_CAS", "SCI_REMOTE", "SCI_LINK"):
            os.environ.pop(k, None)
        self.env: dict[str, str | None] = {k: None for k in ENV_VARS}
        self.apply_env()
        self.builds = self.executed = self.kills = 0
        self.times: dict[str, float] = {}  # seconds spent per kind of build
        self.shortcuts: dict[str, int] = {}  # builds a shortcut decided (noop.py), by kind
        self.damaged: set[str] = set()  # digests of store objects the test overwrote
        self.dropped: set[str] = set()  # ... and deleted
        self.last_write = self.last_build = 0.0
        self.started = time.perf_counter()

    # the model's files ---------------------------------------------------------------------
    def apply_env(self) -> None:
        for k, v in self.env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def put(self, rel: str, text: str | bytes) -> None:
        write_file(self.ws / rel, text.encode() if isinstance(text, str) else text)
        self.last_write = time.time()

    def write_yaml(self) -> None:
        self.put("sci.yaml", render_yaml(self.p, self.variants, self.order))

    def write_code(self) -> None:
        self.put("rules/helper.py", render_helper(self.helper_version, self.helper_comment))
        for s in self.p.fn_steps:
            self.put(f"rules/{s.name}.py", render_fn_module(s, self.fn_comment))

    def write_hardware(self) -> None:
        path = self.ws / "config" / "hardware.yaml"
        if self.hardware is None:
            path.unlink(missing_ok=True)
        else:
            self.put("config/hardware.yaml", f"cpu: {self.hardware}\n")

    def sources(self) -> list[str]:
        return sorted(p.relative_to(self.ws).as_posix() for d in ("data", "src") for p in (self.ws / d).iterdir())

    def store_objects(self) -> list[Path]:
        cas = self.ws / "cas"
        return sorted(p for kind in ("blobs", "trees") for p in (cas / kind).glob("*/*") if p.is_file())

    # building and checking -------------------------------------------------------------------
    def draw_request(self, data) -> tuple[list[str], list[str], bool, bool]:
        targets = data.draw(st.one_of(st.just([]), st.lists(st.sampled_from(self.p.targets()), min_size=1,
                                                            max_size=2, unique=True)), label="targets")
        sets = data.draw(st.lists(st.tuples(st.sampled_from(SET_KEYS), st.integers(0, 3)), max_size=1,
                                  unique_by=lambda kv: kv[0]), label="--set")
        settle = data.draw(st.booleans(), label="settle (files older than the racy window)")
        with_status = data.draw(st.booleans(), label="sci status first")
        return targets, [f"{k}={v}" for k, v in sets], settle, with_status

    def build(self, data) -> None:
        targets, overrides, settle, with_status = self.draw_request(data)
        if settle:
            time.sleep(max(0.0, self.last_write + RACY_S - time.time()))
        self.check_build(targets, overrides, with_status)

    def check_build(self, targets: list[str], overrides: list[str], with_status: bool) -> None:
        self.builds += 1
        oracle = self.tmp / f"oracle-{self.builds}"
        copy_workspace(self.ws, oracle, (".sci",))
        memo_key = (sources_digest(self.ws), tuple(sorted(self.env.items(), key=lambda kv: kv[0])),
                    tuple(targets), tuple(overrides))
        scratch = self.scratch_memo.get(memo_key)
        # Before the first build the copy without .sci/ is a from-scratch copy too: no store, no outputs.
        pristine = not any((self.ws / d).exists() for d in NOT_SOURCES)
        fresh = None
        if scratch is None and not pristine:
            fresh = self.tmp / f"scratch-{self.builds}"
            copy_workspace(self.ws, fresh, NOT_SOURCES)
        try:
            before = before_oracle = None
            t0 = time.perf_counter()
            if with_status:
                before = run_status(self.ws, targets, overrides)
                before_oracle = run_status(oracle, targets, overrides)
                remove_tree(oracle / ".sci")  # status leaves a stat cache there
            t1 = time.perf_counter()
            real = run_build(self.ws, targets, overrides)
            self.last_write = self.last_build = time.time()
            t2 = time.perf_counter()
            other = run_build(oracle, targets, overrides)
            t3 = time.perf_counter()
            if scratch is None:
                scratch = other if pristine else run_build(fresh, targets, overrides)
                if len(self.scratch_memo) > 2000:
                    self.scratch_memo.clear()
                self.scratch_memo[memo_key] = scratch
        finally:
            remove_tree(oracle)
            if fresh is not None:
                remove_tree(fresh)
        self.executed += len(real.executed)
        for part, dt in (("status", t1 - t0), ("real", t2 - t1), ("oracle", t3 - t2),
                         ("scratch", time.perf_counter() - t3)):
            self.times[part] = self.times.get(part, 0) + dt
        if real.shortcut:
            self.shortcuts[real.shortcut] = self.shortcuts.get(real.shortcut, 0) + 1
        outputs_of = self.p.outputs_of()
        check_same_as_without_state(real, other)
        check_same_as_scratch(real, scratch, outputs_of)
        if with_status:
            check_status_agrees(before, before_oracle, real, self.damaged, outputs_of)

    # rules -------------------------------------------------------------------------------------
    @initialize(p=pipelines(), data=st.data())
    def start(self, p: Pipeline, data) -> None:
        self.p = p
        self.variants: dict[str, int] = {}
        self.order = 0
        self.params = {"fit.tol": 1, "fit.k": 2, "n": 3, "unused": 0}
        self.param_history: list[dict] = []
        self.helper_version = self.helper_comment = self.fn_comment = 0
        self.hardware = data.draw(st.sampled_from([None, 1, 2]), label="hardware.yaml cpu")
        self.data_files = 1
        self.env = {STEP_FLAG: data.draw(ENV_VALUES, label=STEP_FLAG),
                    GLOBAL_FLAG: data.draw(ENV_VALUES, label=GLOBAL_FLAG)}
        self.apply_env()
        self.write_yaml()
        self.put("params.yaml", render_params(self.params))
        self.put("data/f0.txt", "alpha\n")
        self.put("src/s.txt", "source\n")
        self.put("rules/__init__.py", "")
        self.write_code()
        self.write_hardware()
        self.build(data)

    @rule(data=st.data())
    def build_again(self, data) -> None:
        self.build(data)

    @rule(key=st.sampled_from(PARAM_KEYS), value=st.integers(0, 3), data=st.data())
    def edit_param(self, key: str, value: int, data) -> None:
        self.param_history.append(dict(self.params))
        self.params[key] = value
        self.put("params.yaml", render_params(self.params))
        self.build(data)

    @precondition(lambda self: self.param_history)
    @rule(data=st.data())
    def undo_param_edit(self, data) -> None:
        self.params = self.param_history.pop()
        self.put("params.yaml", render_params(self.params))
        self.build(data)

    @rule(data=st.data(), how=st.sampled_from(["new content", "same content", "touch"]))
    def rewrite_source(self, data, how: str) -> None:
        rel = data.draw(st.sampled_from(self.sources()), label="source")
        path = self.ws / rel
        if how == "touch":
            os.utime(path)
            self.last_write = time.time()
        elif how == "same content":
            self.put(rel, path.read_bytes())
        else:
            self.put(rel, data.draw(st.sampled_from(["alpha\n", "beta\n", "gamma\n", "alphb\n"]), label="text"))
        self.build(data)

    @rule(data=st.data(), matching=st.booleans())
    def add_data_file(self, data, matching: bool) -> None:
        name = f"data/f{self.data_files}.{'txt' if matching else 'csv'}"
        self.data_files += 1
        self.put(name, f"added {self.data_files}\n")
        self.build(data)

    @precondition(lambda self: self.p.fn_steps)
    @rule(data=st.data(), what=st.sampled_from(["helper behaviour", "helper comment", "fn module comment",
                                                "new module beside"]))
    def edit_code(self, data, what: str) -> None:
        if what == "helper behaviour":
            self.helper_version += 1
        elif what == "helper comment":
            self.helper_comment += 1
        elif what == "fn module comment":
            self.fn_comment += 1
        else:
            self.put(f"rules/extra{self.helper_comment + self.fn_comment}.py", "X = 1\n")
        self.write_code()
        self.build(data)

    @rule(data=st.data(), var=st.sampled_from(ENV_VARS), value=ENV_VALUES)
    def change_env(self, data, var: str, value: str | None) -> None:
        self.env[var] = value
        self.apply_env()
        self.build(data)

    @rule(data=st.data(), how=st.sampled_from(["reorder keys", "change a cmd"]))
    def edit_sci_yaml(self, data, how: str) -> None:
        if how == "reorder keys" or not self.p.cmd_steps:
            self.order += 1
        else:
            step = data.draw(st.sampled_from(self.p.cmd_steps), label="step")
            self.variants[step.name] = self.variants.get(step.name, 0) + 1
        self.write_yaml()
        self.build(data)

    @rule(data=st.data(), cpu=st.sampled_from([None, 1, 2]))
    def change_hardware(self, data, cpu: int | None) -> None:
        self.hardware = cpu
        self.write_hardware()
        self.build(data)

    @rule(data=st.data(), edit=st.booleans())
    def delete_or_edit_output(self, data, edit: bool) -> None:
        present = sorted(p.relative_to(self.ws).as_posix() for p in (self.ws / "out").rglob("*")
                         if p.is_file()) if (self.ws / "out").is_dir() else []
        pick = data.draw(PICK, label="output file (index)")  # drawn whatever is there: see PICK
        edited = data.draw(st.sampled_from([b"edited\n", b"zeros", b"appended"]), label="bytes")
        rmdir = data.draw(st.booleans(), label="rmdir")
        if present:
            rel = present[pick % len(present)]
            # sci remembers the stat signature of an output it writes, racily fresh or not: an
            # edit to the same size within one timestamp tick of that write is the documented
            # blind spot of every stat cache (hashing.StatCache.remember), not what is tested here.
            time.sleep(max(0.0, self.last_build + 0.02 - time.time()))
            if edit:
                old = (self.ws / rel).read_bytes()
                self.put(rel, {b"zeros": bytes(len(old)), b"appended": old + b"x"}.get(edited, edited))
            else:
                (self.ws / rel).unlink()
                if rmdir and not any((self.ws / rel).parent.iterdir()):
                    (self.ws / rel).parent.rmdir()
        self.build(data)

    @rule(data=st.data(), damage=st.booleans())
    def drop_or_damage_store_object(self, data, damage: bool) -> None:
        objects = self.store_objects()
        pick = data.draw(PICK, label="store object (index)")
        damaged = data.draw(st.sampled_from([b"damaged\n", b"zeros", b"appended"]), label="bytes")
        if objects:
            path = objects[pick % len(objects)]
            if damage:
                old = path.read_bytes()
                write_file(path, {b"zeros": bytes(len(old)), b"appended": old + b"\n"}.get(damaged, damaged))
                self.damaged.add(path.name)
            else:
                path.unlink()
                self.dropped.add(path.name)
        self.build(data)

    @precondition(lambda self: self.kills < 1)  # rare: a subprocess and a wait
    @rule(data=st.data(), delay=st.floats(0.05, 0.6))
    def kill_a_build(self, data, delay: float) -> None:
        self.kills += 1
        self.put("src/s.txt", f"before a kill {self.builds}\n")  # something to build when killed
        self.put(f"data/f{self.data_files}.txt", "more\n")
        self.data_files += 1
        env = dict(os.environ, NO_COLOR="1")
        proc = subprocess.Popen([sys.executable, "-m", "sci.cli", "build"], cwd=self.ws, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.last_write = time.time()
        report = api.fsck(Workspace(self.ws))
        bad = [(k, n, why) for k, n, why in report.bad if n not in self.damaged]
        dangling = [(a, m) for a, m in report.dangling if m not in self.dropped | self.damaged]
        assert not bad and not dangling, (f"after SIGKILL at {delay:.2f}s, sci fsck finds bad objects {bad} "
                                          f"and dangling results {dangling} (SPEC §8.6)")
        self.build(data)

    def teardown(self) -> None:
        for k, v in self.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        remove_tree(self.tmp)
        if STATS:
            with open(STATS, "a") as fh:
                fh.write(json.dumps({"builds": self.builds, "executed": self.executed, "shortcuts": self.shortcuts,
                                     "times": {k: round(v, 3) for k, v in self.times.items()},
                                     "steps": len(self.p.steps) if hasattr(self, "p") else 0,
                                     "seconds": round(time.perf_counter() - self.started, 3)}) + "\n")


@pytest.mark.parametrize("shard", range(SHARDS))
def test_shortcuts_decide_as_a_build_without_state(shard: int) -> None:
    """Each shard runs its share of the examples, so `pytest -n 2` spreads them."""
    per_shard = max(1, EXAMPLES // SHARDS + (1 if shard < EXAMPLES % SHARDS else 0))
    run_state_machine_as_test(DifferentialMachine, settings=settings(
        max_examples=per_shard, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]))
