"""The determinism policy: derived seeds, step environments, applied()/apply() set and restore."""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sci import determinism
from sci.determinism import Mode
from sci.errors import UserError

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch (install the CPU wheel)")
POLICY_VARS = ("SCI_SEED", "SCI_DETERMINISM", "PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG",
               *determinism.THREAD_VARS)


# -- seeds -----------------------------------------------------------------------------------
def test_derived_seeds_are_pinned():
    # Changing these changes every node's seed and key: bump SEED_FORMAT deliberately.
    assert determinism.derive_seed(20261122, "simulate[noise=0.05]") == 736208290
    assert determinism.derive_seed(20261122, "fit") == 1980554982
    assert determinism.derive_seed(0, "fit") == 1607566035


@given(st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=40))
def test_derived_seeds_are_stable_and_in_range(root, name):
    seed = determinism.derive_seed(root, name)
    assert 0 <= seed < 2**32
    assert seed == determinism.derive_seed(root, name)


def test_derived_seeds_differ_between_nodes_and_roots():
    names = [f"simulate[noise={i / 100}]" for i in range(50)]
    assert len({determinism.derive_seed(1, n) for n in names}) == len(names)
    assert determinism.derive_seed(1, "fit") != determinism.derive_seed(2, "fit")


def test_derive_seed_rejects_non_integers():
    with pytest.raises(TypeError):
        determinism.derive_seed("1", "fit")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        determinism.derive_seed(True, "fit")


# -- command environment ---------------------------------------------------------------------
def test_strict_command_env():
    env = determinism.command_env(123, "strict", [], 4)
    assert env == {
        "SCI_SEED": "123", "SCI_DETERMINISM": "strict", "PYTHONHASHSEED": "123",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "4",
        "NUMEXPR_NUM_THREADS": "4", "VECLIB_MAXIMUM_THREADS": "4",
    }


def test_fast_command_env_pins_no_hash_seed_and_gpus_are_listed():
    env = determinism.command_env(7, Mode.FAST, [0, 2], 1)
    assert env["SCI_DETERMINISM"] == "fast"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert "PYTHONHASHSEED" not in env and "CUBLAS_WORKSPACE_CONFIG" not in env


@given(st.integers(min_value=-(2**80), max_value=2**80))
def test_any_explicit_seed_gives_a_valid_pythonhashseed(seed):
    env = determinism.command_env(seed, "strict", [], 1)
    assert env["SCI_SEED"] == str(seed)
    assert 0 <= int(env["PYTHONHASHSEED"]) < 2**32


def test_unknown_mode_is_a_user_error():
    with pytest.raises(UserError, match="determinism mode"):
        determinism.command_env(1, "sloppy", [], 1)


# -- applied() -------------------------------------------------------------------------------
def test_applied_seeds_python_and_numpy_and_restores_their_states():
    random.seed(999)
    np.random.seed(999)
    untouched_py = random.Random(999).random()
    untouched_np = np.random.RandomState(999).random_sample()
    with determinism.applied(42, "strict") as seed:
        assert seed == 42
        assert random.random() == random.Random(42).random()
        assert np.random.random_sample() == np.random.RandomState(42).random_sample()
    # the outer program's streams continue as if the block never ran
    assert random.random() == untouched_py
    assert np.random.random_sample() == untouched_np


def test_applied_sets_and_restores_environment_variables(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    for name in POLICY_VARS:
        if name != "OMP_NUM_THREADS":
            monkeypatch.delenv(name, raising=False)
    with determinism.applied(5, "strict", threads=2):
        assert os.environ["SCI_SEED"] == "5"
        assert os.environ["SCI_DETERMINISM"] == "strict"
        assert os.environ["PYTHONHASHSEED"] == "5"
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert os.environ["OMP_NUM_THREADS"] == "2"
    assert os.environ["OMP_NUM_THREADS"] == "8"
    assert all(name not in os.environ for name in POLICY_VARS if name != "OMP_NUM_THREADS")


def test_applied_restores_even_when_the_block_raises(monkeypatch):
    monkeypatch.delenv("SCI_SEED", raising=False)
    state = random.getstate()
    with pytest.raises(RuntimeError):
        with determinism.applied(1, "strict"):
            random.random()
            raise RuntimeError("step failed")
    assert random.getstate() == state
    assert "SCI_SEED" not in os.environ


def _sample_bytes() -> bytes:
    """Bytes from every RNG the policy seeds, as a step would produce them."""
    parts = [repr([random.random() for _ in range(5)]).encode(), np.random.random_sample(5).tobytes()]
    if HAS_TORCH:
        import torch

        parts.append(torch.rand(5).numpy().tobytes())
        parts.append(torch.randn(3, 3).matmul(torch.randn(3, 3)).numpy().tobytes())
    return b"|".join(parts)


def test_two_strict_runs_with_one_seed_give_identical_bytes():
    with determinism.applied(2026, "strict"):
        first = _sample_bytes()
    random.random()  # disturb the global streams between the runs
    np.random.random_sample()
    with determinism.applied(2026, "strict"):
        second = _sample_bytes()
    with determinism.applied(2027, "strict"):
        other = _sample_bytes()
    assert first == second
    assert first != other


@needs_torch
def test_strict_mode_sets_torch_flags_and_restores_them():
    import torch

    cudnn = torch.backends.cudnn
    torch.use_deterministic_algorithms(False)
    cudnn.deterministic, cudnn.benchmark = False, True
    threads = torch.get_num_threads()
    rng = torch.random.get_rng_state()
    try:
        with determinism.applied(11, "strict", threads=1):
            assert torch.are_deterministic_algorithms_enabled()
            assert cudnn.deterministic is True and cudnn.benchmark is False
            assert torch.get_num_threads() == 1
            inside = torch.rand(3)
        assert torch.equal(inside, torch.rand(3, generator=torch.Generator().manual_seed(11)))
        assert not torch.are_deterministic_algorithms_enabled()
        assert cudnn.deterministic is False and cudnn.benchmark is True
        assert torch.get_num_threads() == threads
        assert torch.equal(torch.random.get_rng_state(), rng)
    finally:
        cudnn.deterministic, cudnn.benchmark = False, False


@needs_torch
def test_fast_mode_seeds_torch_but_sets_no_determinism_flag():
    import torch

    torch.use_deterministic_algorithms(False)
    with determinism.applied(3, "fast"):
        assert not torch.are_deterministic_algorithms_enabled()
        a = torch.rand(4)
    with determinism.applied(3, "fast"):
        b = torch.rand(4)
    assert torch.equal(a, b)


def test_a_library_imported_inside_the_block_is_set_up_on_import(tmp_path, monkeypatch):
    (tmp_path / "sci_probe_lib.py").write_text("import random\nSTATE = []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sci_probe_lib", raising=False)
    seen = []
    undo = determinism._Undo()
    determinism._when_imported(undo, "sci_probe_lib", seen.append)
    assert seen == []  # nothing imported it yet
    import sci_probe_lib

    assert seen == [sci_probe_lib]
    assert type(sci_probe_lib.__loader__).__name__ == "SourceFileLoader"  # looks untouched
    undo.run()
    assert not any(isinstance(f, determinism._WhenImported) for f in sys.meta_path)
    monkeypatch.delitem(sys.modules, "sci_probe_lib")
    import sci_probe_lib  # noqa: F811 - a re-import after the block: no callback any more

    assert len(seen) == 1


# -- apply() in a cmd step's process ---------------------------------------------------------
SCRIPT = textwrap.dedent("""\
    import random, sys
    import numpy as np
    import sci.determinism

    seed = sci.determinism.apply()
    out = [str(seed), repr(random.random()), np.random.random_sample(3).tobytes().hex(),
           # set iteration order of strings depends on the hash seed: PYTHONHASHSEED pins it
           ",".join({f"item-{i}" for i in range(20)}),
           # apply() must not make a step pay for importing a framework it does not use
           str("torch" in sys.modules)]
    if len(sys.argv) > 1:
        import torch
        out.append(str(torch.are_deterministic_algorithms_enabled()))
        out.append(torch.rand(4).numpy().tobytes().hex())
    sys.stdout.write("\\n".join(out))
""")


def _run_step(tmp_path, seed: int, mode: str = "strict", torch_too: bool = False) -> str:
    script = tmp_path / "step.py"
    script.write_text(SCRIPT)
    env = {"PATH": os.environ.get("PATH", ""), **determinism.command_env(seed, mode, [], 1)}
    argv = [sys.executable, str(script)] + (["torch"] if torch_too else [])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_cmd_step_calling_apply_is_reproducible_across_processes(tmp_path):
    first = _run_step(tmp_path, 77)
    assert first == _run_step(tmp_path, 77)
    assert first.splitlines()[0] == "77"
    assert first.splitlines()[4] == "False"
    other = _run_step(tmp_path, 78).splitlines()
    assert other[1:3] != first.splitlines()[1:3]


@needs_torch
def test_a_cmd_step_with_torch_is_reproducible_and_deterministic(tmp_path):
    first = _run_step(tmp_path, 5, torch_too=True)
    assert first == _run_step(tmp_path, 5, torch_too=True)
    assert first.splitlines()[5] == "True"


def test_apply_outside_sci_needs_a_default_seed(monkeypatch):
    monkeypatch.delenv("SCI_SEED", raising=False)
    with pytest.raises(UserError, match="SCI_SEED is not set"):
        determinism.apply()


def test_apply_reads_the_environment_and_a_second_call_replaces_the_first(monkeypatch):
    monkeypatch.setenv("SCI_SEED", "31")
    monkeypatch.setenv("SCI_DETERMINISM", "strict")
    outer = random.getstate()
    try:
        assert determinism.apply() == 31
        assert random.random() == random.Random(31).random()
        monkeypatch.setenv("SCI_SEED", "32")
        assert determinism.apply() == 32
        assert random.random() == random.Random(32).random()
    finally:
        determinism._process_policy.__exit__(None, None, None)
        determinism._process_policy = None
    assert random.getstate() == outer


def test_apply_rejects_a_malformed_seed(monkeypatch):
    monkeypatch.setenv("SCI_SEED", "twelve")
    with pytest.raises(UserError, match="not an integer"):
        determinism.apply()
