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
