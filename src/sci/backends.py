"""Array backends for step code (SPEC §5): CuPy when CUDA works, else NumPy — never a silent fallback.

`xp()` hands step code one array module to write against. A step that needs the GPU says so
(`xp(require_gpu=True)`) and fails loudly with `GpuRequired` on a machine without one, rather
than quietly running a hundred times slower on the CPU. `to_torch` / `from_torch` pass arrays
between CuPy (or NumPy) and PyTorch through DLPack, sharing memory instead of copying through
the host. `no_host_transfer()` catches the other silent slowdown: device data quietly copied to
the host (`.get()`, `asnumpy`, `float(x)`, `if x.any():`) inside a block meant to stay on the GPU.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from importlib.util import find_spec
from types import ModuleType
from typing import Any, Iterator

from sci.errors import WorkFailed
from sci.build.gpu import GpuRequired

__all__ = ["GpuRequired", "HostTransferError", "cuda_available", "xp", "to_torch", "from_torch",
           "no_host_transfer", "GUARDED_METHODS", "GUARDED_FUNCTIONS"]

# Every way a CuPy array's data reaches host memory without the user writing a copy on purpose.
# Scalar conversions are included: `float(x)` and `if x.any():` synchronise and copy too.
# __repr__/__str__ are not: printing for debugging is visible, and a raising repr breaks
# tracebacks and loggers exactly when they are needed.
GUARDED_METHODS = ("get", "tolist", "item", "__array__", "__float__", "__int__", "__bool__",
                   "__complex__", "__index__")
GUARDED_FUNCTIONS = ("asnumpy",)


class HostTransferError(WorkFailed):
    """Device data was copied to the host inside a `no_host_transfer()` block. Exit 1."""


_probe: tuple[bool, str | None] | None = None
_probe_lock = threading.Lock()


def _probe_cupy() -> tuple[bool, str | None]:
    if find_spec("cupy") is None:
        return False, "CuPy is not installed (install sci[gpu] or cupy-cudaXXx)"
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - any CUDA failure means "no usable GPU", with why
        return False, f"CuPy cannot reach CUDA: {exc}"
    if count < 1:
        return False, "CUDA reports no device (is CUDA_VISIBLE_DEVICES empty?)"
    return True, None


def cuda_available(*, refresh: bool = False) -> bool:
    """Whether CuPy is installed and sees at least one CUDA device (asked once per process)."""
    global _probe
    with _probe_lock:
        if _probe is None or refresh:
            _probe = _probe_cupy()
        return _probe[0]


def xp(require_gpu: bool = False) -> ModuleType:
    """`cupy` when CUDA works, else `numpy`; with `require_gpu`, `GpuRequired` instead of numpy."""
    if cuda_available():
        import cupy

        return cupy
    if require_gpu:
        assert _probe is not None
        raise GpuRequired(f"this step requires a GPU: {_probe[1]}",
                          hint="declare resources: {gpu: 1} and run on a machine with a CUDA GPU")
    import numpy

    return numpy


def to_torch(array: Any):
    """A torch.Tensor sharing `array`'s memory (CuPy → CUDA tensor, NumPy → CPU tensor)."""
    import torch

    return torch.from_dlpack(array)


def from_torch(tensor: Any):
    """A CuPy (CUDA tensor) or NumPy (CPU tensor) array sharing the tensor's memory.

    The tensor is detached first: DLPack cannot export a tensor that records gradients, and
    the array shares the data either way.
    """
    tensor = tensor.detach()
    if tensor.device.type == "cuda":
        import cupy

        return cupy.from_dlpack(tensor)
    import numpy

    return numpy.from_dlpack(tensor)


class _Guard:
    """Process-wide patches of one array module, counted so nested blocks patch once.

    Invariant: while `depth > 0` the module's guarded attributes are the raising stand-ins
    and `saved` holds what to put back (`_MISSING` for a name the class did not define in its
    own __dict__, which is then deleted to expose the inherited one again).
    """

    def __init__(self, module: ModuleType):
        self.module = module
        self.depth = 0
        self.saved: list[tuple[Any, str, Any]] = []

    def _blocker(self, where: str):
        module_name = getattr(self.module, "__name__", "the array module")

        def blocked(*_args: Any, **_kwargs: Any):
            raise HostTransferError(
                f"{module_name}: {where} would copy device data to the host inside no_host_transfer()",
                hint="keep the computation on the device, or move the transfer after the block")

        blocked.__name__ = where
        return blocked

    def patch(self) -> None:
        cls = getattr(self.module, "ndarray", None)
        if cls is not None:
            for name in GUARDED_METHODS:
                if hasattr(cls, name):
                    self.saved.append((cls, name, cls.__dict__.get(name, _MISSING)))
                    setattr(cls, name, self._blocker(f"ndarray.{name}"))
        for name in GUARDED_FUNCTIONS:
            if hasattr(self.module, name):
                self.saved.append((self.module, name, self.module.__dict__.get(name, _MISSING)))
                setattr(self.module, name, self._blocker(name))

    def restore(self) -> None:
        while self.saved:
            owner, name, original = self.saved.pop()
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


_MISSING = object()
_guards: dict[int, _Guard] = {}
_guards_lock = threading.Lock()


@contextmanager
def no_host_transfer(module: ModuleType | None = None) -> Iterator[None]:
    """Inside the block, any device→host copy of `module`'s arrays raises HostTransferError.

    `module` defaults to CuPy when CUDA works. On a machine without one the block guards
    nothing — NumPy data is already on the host — so code written against `xp()` runs
    unchanged on both. The patches are process-wide (all threads) while any block is open;
    nested blocks are fine. Any module with an `ndarray` class and/or an `asnumpy` function
    can be guarded, which is how the guard is tested without a GPU.
    """
    if module is None:
        if not cuda_available():
            yield
            return
        import cupy as module
    with _guards_lock:
        guard = _guards.setdefault(id(module), _Guard(module))
        if guard.depth == 0:
            try:
                guard.patch()
            except BaseException:
                guard.restore()
                del _guards[id(module)]
                raise
        guard.depth += 1
    try:
        yield
    finally:
        with _guards_lock:
            guard.depth -= 1
            if guard.depth == 0:
                guard.restore()
                del _guards[id(module)]
