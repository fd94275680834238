"""Array backends: xp() picks CuPy or NumPy, DLPack round trips share memory, the host guard."""

from __future__ import annotations

import importlib.util
import types

import numpy as np
import pytest

from sci import backends
from sci.backends import GUARDED_FUNCTIONS, GUARDED_METHODS, HostTransferError, no_host_transfer
from sci.errors import ResourceError, UserError
from sci.build.gpu import GpuRequired

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch (install the CPU wheel)")
HAS_CUDA = backends.cuda_available()
needs_gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
no_gpu_only = pytest.mark.skipif(HAS_CUDA, reason="checks the behaviour on a machine without a GPU")


# -- xp --------------------------------------------------------------------------------------
@no_gpu_only
def test_xp_is_numpy_without_cuda():
    assert backends.xp() is np


@no_gpu_only
def test_require_gpu_without_one_fails_loudly_and_says_why():
    with pytest.raises(GpuRequired) as err:
        backends.xp(require_gpu=True)
    assert isinstance(err.value, ResourceError) and isinstance(err.value, UserError)
    assert err.value.exit_code == 2
    assert "requires a GPU" in err.value.message
    # the reason names the missing piece (CuPy absent, or CUDA unreachable)
    assert "CuPy" in err.value.message or "CUDA" in err.value.message
    assert err.value.hint


@needs_gpu
def test_xp_is_cupy_with_cuda():
    import cupy

    assert backends.xp() is cupy
    assert backends.xp(require_gpu=True) is cupy


# -- DLPack ----------------------------------------------------------------------------------
@needs_torch
def test_numpy_to_torch_and_back_shares_memory():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensor = backends.to_torch(arr)
    assert tensor.data_ptr() == arr.__array_interface__["data"][0]
    tensor[0, 0] = 42.0  # a write through one view is seen by the other: no copy was made
    assert arr[0, 0] == 42.0
    back = backends.from_torch(tensor)
    assert isinstance(back, np.ndarray)
    assert back.__array_interface__["data"][0] == arr.__array_interface__["data"][0]


@needs_torch
def test_from_torch_accepts_a_tensor_that_records_gradients():
    import torch

    t = torch.ones(3, requires_grad=True)
    arr = backends.from_torch(t)
    assert arr.__array_interface__["data"][0] == t.data_ptr()
    assert arr.tolist() == [1.0, 1.0, 1.0]


@needs_gpu
@needs_torch
def test_cupy_to_torch_and_back_stays_on_the_device_without_a_copy():
    import cupy

    arr = cupy.arange(10, dtype=cupy.float32)
    tensor = backends.to_torch(arr)
    assert tensor.is_cuda
    assert tensor.data_ptr() == arr.data.ptr
    back = backends.from_torch(tensor)
    assert isinstance(back, cupy.ndarray)
    assert back.data.ptr == arr.data.ptr


# -- the host-transfer guard, against a stand-in array library -------------------------------
def make_tiny_library() -> types.ModuleType:
    """A minimal array module shaped like CuPy: an ndarray class and asnumpy()."""
    lib = types.ModuleType("tinyarray")

    class Base:
        def get(self):  # inherited by ndarray, as in CuPy (_ndarray_base)
            return list(self.data)

    class ndarray(Base):
        def __init__(self, data):
            self.data = list(data)

        def tolist(self):
            return list(self.data)

        def item(self):
            return self.data[0]

        def __array__(self, dtype=None, copy=None):
            return np.array(self.data, dtype=dtype)

        def __float__(self):
            return float(self.data[0])

        def __bool__(self):
            return bool(self.data)

        def __len__(self):
            return len(self.data)

    def asnumpy(a):
        return np.array(a.data)

    lib.Base, lib.ndarray, lib.asnumpy = Base, ndarray, asnumpy
    return lib


def transfers(lib, a):
    """Every host-transfer path of the tiny library, as callables."""
    return {
        "get": lambda: a.get(),
        "tolist": lambda: a.tolist(),
        "item": lambda: a.item(),
        "__array__": lambda: np.asarray(a),
        "__float__": lambda: float(a),
        "__bool__": lambda: bool(a),
        "asnumpy": lambda: lib.asnumpy(a),
    }


def test_every_transfer_path_raises_inside_the_guard_and_works_after():
    lib = make_tiny_library()
    a = lib.ndarray([3, 4])
    with no_host_transfer(lib):
        for name, call in transfers(lib, a).items():
            with pytest.raises(HostTransferError, match="tinyarray") as err:
                call()
            assert err.value.exit_code == 1, name
        assert len(a) == 2  # metadata is not a transfer
    assert a.get() == [3, 4]
    assert float(a) == 3.0
    assert np.asarray(a).tolist() == [3, 4]
    assert lib.asnumpy(a).tolist() == [3, 4]


def test_the_guard_leaves_the_library_exactly_as_it_found_it():
    lib = make_tiny_library()
    before_cls = dict(vars(lib.ndarray))
    before_mod = dict(vars(lib))
    with pytest.raises(HostTransferError):
        with no_host_transfer(lib):
            lib.ndarray([1]).get()
    assert dict(vars(lib.ndarray)) == before_cls
    assert "get" not in vars(lib.ndarray)  # the inherited method is exposed again, not copied
    assert dict(vars(lib)) == before_mod


def test_nested_guards_patch_once_and_restore_at_the_outermost_exit():
    lib = make_tiny_library()
    a = lib.ndarray([1])
    with no_host_transfer(lib):
        with no_host_transfer(lib):
            with pytest.raises(HostTransferError):
                a.tolist()
        with pytest.raises(HostTransferError):  # still guarded: the outer block is open
            a.tolist()
    assert a.tolist() == [1]


def test_guards_on_two_libraries_are_independent():
    one, two = make_tiny_library(), make_tiny_library()
    with no_host_transfer(one):
        with pytest.raises(HostTransferError):
            one.ndarray([1]).get()
        assert two.ndarray([1]).get() == [1]


def test_a_library_whose_type_cannot_be_patched_is_refused_and_left_intact():
    fake = types.ModuleType("frozenlib")
    fake.ndarray = np.ndarray  # a built-in type: its attributes cannot be replaced
    fake.asnumpy = np.asarray
    with pytest.raises(TypeError):
        with no_host_transfer(fake):
            pass
    assert fake.asnumpy is np.asarray
    assert np.ndarray.tolist is not None and np.arange(2).tolist() == [0, 1]


def test_guarded_names_cover_cupys_transfer_paths():
    assert {"get", "__array__", "tolist", "item", "__float__", "__bool__"} <= set(GUARDED_METHODS)
    assert GUARDED_FUNCTIONS == ("asnumpy",)


@no_gpu_only
def test_the_default_guard_without_cuda_guards_nothing():
    arr = np.arange(3)
    with no_host_transfer():
        assert np.asarray(arr).tolist() == [0, 1, 2]


@needs_gpu
def test_the_default_guard_catches_a_real_cupy_transfer():
    import cupy

    a = cupy.arange(4)
    with no_host_transfer():
        b = a * 2  # device work is fine
        with pytest.raises(HostTransferError):
            b.get()
        with pytest.raises(HostTransferError):
            cupy.asnumpy(b)
        with pytest.raises(HostTransferError):
            float(b[0])
    assert b.get().tolist() == [0, 2, 4, 6]
