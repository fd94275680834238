"""The small value classes that cross process boundaries: plain classes and named tuples
(cheaper to import than dataclasses) still compare, hash and pickle as values."""

from __future__ import annotations


def test_the_plain_value_classes_compare_hash_and_pickle_as_values(tmp_path):
    """Workspace, Task and TaskResult are plain classes (cheaper to import than dataclasses)."""
    import pickle

    import pytest

    from sci.executors.task import Task, TaskResult
    from sci.store.cas import OutputRecord
    from sci.workspace import Workspace

    ws = Workspace(tmp_path)
    assert ws == Workspace(tmp_path) and hash(ws) == hash(Workspace(tmp_path)) and ws != Workspace(tmp_path / "x")
    assert pickle.loads(pickle.dumps(ws)) == ws
    with pytest.raises(AttributeError):
        ws.root = tmp_path / "x"
    task = Task(node="n", kind="cmd", cmd="echo", fn=None, workspace="w", store="s", scratch_root="r", sandbox=True,
                deps=["d"], code=[], outs={"o": "o.txt"}, ctx_deps={}, params={"x": 1}, seed=7, determinism="strict",
                threads=1, env={})
    back = pickle.loads(pickle.dumps(task))
    assert [getattr(back, f) for f in Task.__slots__] == [getattr(task, f) for f in Task.__slots__]
    assert back.gpus == [] and back.files == {} and back.materialize is None
    result = pickle.loads(pickle.dumps(TaskResult("n", True, 0, outputs={"o": {"digest": "d"}})))
    assert (result.node, result.ok, result.outputs, result.metrics, result.error) == ("n", True, {"o": {"digest": "d"}}, {}, None)
    rec = OutputRecord("file", "ab", 3)
    assert OutputRecord.from_json(rec.to_json()) == rec and {rec: 1}[OutputRecord("file", "ab", 3)] == 1


def test_value_classes_compare_by_field_and_replace_through_init():
    from sci.records.run import NodeStatus, Outcome
    from sci.build.resources import Gpu, Hardware

    hw = Hardware(2, 8.0, [Gpu(0, 16.0, "A")])
    assert hw == Hardware(2, 8.0, [Gpu(0, 16.0, "A")]) and hw != Hardware(2, 8.0) and hw != (2, 8.0)
    assert repr(hw) == "Hardware(cpu=2, mem_gb=8.0, gpus=[Gpu(index=0, vram_gb=16.0, name='A')], source='detected')"
    moved = hw.replace(cpu=4)
    assert moved.cpu == 4 and moved.gpus == hw.gpus and hw.cpu == 2
    import pytest

    with pytest.raises(TypeError):
        hw.replace(cpus=4)
    with pytest.raises(TypeError):
        hash(Outcome("n", NodeStatus.CACHED))  # mutable: unhashable, as a dataclass
    assert Outcome("n", NodeStatus.CACHED).outputs == {} and Outcome("n", NodeStatus.CACHED) == Outcome("n", NodeStatus.CACHED)


def test_src_defines_records_as_values_or_pydantic_models_only():
    """Two record idioms (README, Development): no `dataclasses` import and no `typing.NamedTuple`
    class anywhere in src/sci, so no command pays for inspect, ast, dis and tokenize."""
    import ast
    from pathlib import Path

    import sci

    offenders = []
    for path in sorted(Path(sci.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import) and any(a.name == "dataclasses" for a in node.names):
                offenders.append(f"{path.name}:{node.lineno} imports dataclasses")
            elif isinstance(node, ast.ImportFrom) and node.module == "dataclasses":
                offenders.append(f"{path.name}:{node.lineno} imports from dataclasses")
            elif isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", getattr(b, "attr", None)) == "NamedTuple" for b in node.bases):
                offenders.append(f"{path.name}:{node.lineno} class {node.name} is a NamedTuple")
    assert offenders == []


def test_the_step_context_keeps_its_dataclass_surface():
    """`ctx` is user-facing: the same fields and defaults, fresh lists and dicts per instance,
    and a step may still keep its own attributes on it."""
    from pathlib import Path

    from sci.executors.context import StepContext

    a = StepContext("n", {"d": Path("d.txt")}, {"o": Path("o.txt")}, {"k": 1}, 7)
    b = StepContext(node="n", deps={"d": Path("d.txt")}, outs={"o": Path("o.txt")}, params={"k": 1}, seed=7)
    assert a == b and (a.gpus, a.determinism, a.metrics) == ([], "strict", {})
    a.log_metric("loss", 0.5)
    a.gpus.append(0)
    assert a.metrics == {"loss": 0.5} and b.metrics == {} and b.gpus == [] and a != b
    a.cache = "mine"  # a step's own attribute
    assert a.cache == "mine"
    assert repr(b).startswith("StepContext(node='n', deps=")


def test_converted_records_get_fresh_defaults_and_field_access():
    from sci.evidence.archive import DEFAULT_LIMITS, Limits
    from sci.remote.transfer import TransferStats
    from sci.store.journal import Frames
    from sci.store.maintenance import FsckReport, GcReport

    one, two = FsckReport(), FsckReport()
    one.bad.append(("blob", "x", "bad"))
    assert two.bad == [] and not one.ok and two.ok and GcReport().deleted is not GcReport().deleted
    stats = TransferStats()
    assert stats.by_kind is not TransferStats().by_kind and stats.to_json()["objects"] == 0
    assert Limits() == DEFAULT_LIMITS and Limits(max_total=1).replace(max_ratio=2) == Limits(1, 2)
    frames = Frames([], True, 13)
    assert (frames.bodies, frames.whole, frames.end) == ([], True, 13)
