"""The determinism policy (SPEC §5): step seeds, the environment a step runs in, RNG and flag set-up.

Two modes. `strict` makes every source of randomness sci can reach depend only on the step's
seed: Python `random`, NumPy's legacy global RNG, PyTorch (CPU and CUDA) and CuPy are seeded,
PyTorch is switched to deterministic algorithms with cuDNN autotuning off, hash randomization
is pinned through PYTHONHASHSEED, cuBLAS gets a fixed workspace, and thread counts are fixed.
`fast` seeds the same generators (free, and it keeps `--seed` sensitivity runs meaningful) but
sets no determinism flag, so GPU kernels may pick faster, nondeterministic algorithms; records
label such nodes and repro-check reports them as `nondeterministic-declared`.

What strict mode cannot promise is written down in docs/determinism.md.

sci never imports NumPy, PyTorch or CuPy for a step: importing torch costs seconds, which a
thousand small steps that never use it should not pay. A library the process has already
imported is set up at once; one it has not is set up by a post-import hook the moment the step
first imports it — before any of the step's code can draw a number from it — so the outcome
is the same as seeding up front. A library that is not installed is never touched.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from enum import Enum
from types import ModuleType
from typing import Any, Callable, Iterator

from sci import canonical
from sci.errors import UserError

try:
    from sci.store.hashing import digest_bytes
except ImportError:  # a step's own interpreter (the fn runner, a script's apply()) may lack blake3
    digest_bytes = None  # type: ignore[assignment]


class Mode(str, Enum):
    """A step's determinism mode; the value is what sci.yaml and records spell."""

    STRICT = "strict"
    FAST = "fast"


# Bump when derive_seed's pre-image changes: every derived seed, and so every key, changes too.
SEED_TAG = "sci.seed"
SEED_FORMAT = 1
SEED_MODULUS = 2**32  # NumPy's legacy seed and PYTHONHASHSEED both take [0, 2**32)
# cuBLAS reproducibility needs a fixed workspace (NVIDIA cuBLAS docs, "Results reproducibility").
CUBLAS_WORKSPACE = ":4096:8"
# Every thread-pool knob the common numeric libraries read at start-up.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
ENV_SEED = "SCI_SEED"
ENV_MODE = "SCI_DETERMINISM"


def parse_mode(value: str | Mode) -> Mode:
    try:
        return Mode(value)
    except ValueError:
        raise UserError(f"unknown determinism mode {value!r}",
                        hint="use `strict` or `fast`") from None


def derive_seed(root_seed: int, node_name: str) -> int:
    """A node's seed: BLAKE3 of the tagged (root seed, node name), its first 4 bytes, in [0, 2**32).

    Nodes get independent-looking seeds, stable across hosts and sci runs, and renaming a node
    (not reordering the pipeline) is the only thing that changes its seed.
    """
    if isinstance(root_seed, bool) or not isinstance(root_seed, int):
        raise TypeError(f"root seed must be an int, not {type(root_seed).__name__}")
    pre = canonical.dumps({"type": SEED_TAG, "format": SEED_FORMAT, "root": root_seed,
                           "node": node_name})
    return int(digest_bytes(pre)[:8], 16)


def _seed32(seed: int) -> int:
    """An explicit seed outside [0, 2**32) folded into the range NumPy and PYTHONHASHSEED take."""
    return seed % SEED_MODULUS


def command_env(seed: int, mode: str | Mode, gpus: list[int], threads: int) -> dict[str, str]:
    """The environment variables a step's process gets (on top of PATH and its declared env).

    CUDA_VISIBLE_DEVICES is always set — to "" when no GPU is assigned — so a CPU step never
    sees (or silently uses) a GPU. PYTHONHASHSEED and CUBLAS_WORKSPACE_CONFIG only in strict
    mode: in fast mode hash order and cuBLAS workspaces stay as Python and CUDA choose.
    """
    mode = parse_mode(mode)
    if threads < 1:
        raise ValueError("threads must be at least 1")
    env = {
        ENV_SEED: str(seed),
        ENV_MODE: mode.value,
        "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus),
    }
    env.update({name: str(threads) for name in THREAD_VARS})
    if mode is Mode.STRICT:
        env["PYTHONHASHSEED"] = str(_seed32(seed))
        env["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    return env


class _Undo:
    """The restore actions of one `applied()` block, run in reverse order on exit."""

    def __init__(self) -> None:
        self._actions: list[Callable[[], None]] = []

    def push(self, action: Callable[[], None]) -> None:
        self._actions.append(action)

    def run(self) -> None:
        errors = []
        while self._actions:
            try:
                self._actions.pop()()
            except Exception as exc:  # noqa: BLE001 - restore everything else, then report
                errors.append(exc)
        if errors:
            raise errors[0]


class _ChainedLoader:
    """Runs the real loader, then the callback, and leaves the module looking untouched."""

    def __init__(self, loader: Any, callback: Callable[[ModuleType], None]):
        self._loader = loader
        self._callback = callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        # What the library sees of itself stays its own loader (importlib.resources uses it).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._callback(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _WhenImported:  # a meta path finder by protocol: importlib.abc costs every build ~1.5 ms to import
    """A sys.meta_path entry that calls `callback(module)` right after `name` is first imported.

    It finds nothing itself: it asks the finders after it for the real spec and wraps the
    loader. Disarmed (removed) when the `applied()` block that installed it ends.
    """

    def __init__(self, name: str, callback: Callable[[ModuleType], None]):
        self.name = name
        self.callback = callback
        self._busy = threading.local()

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name or getattr(self._busy, "on", False):
            return None
        self._busy.on = True  # the look-up below walks sys.meta_path again, this finder too
        try:
            from importlib.util import find_spec

            spec = find_spec(fullname)
        finally:
            self._busy.on = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _ChainedLoader(spec.loader, self.callback)
        return spec


def _when_imported(undo: _Undo, name: str, setup: Callable[[ModuleType], None]) -> None:
    """Run `setup(module)` now if `name` is imported, else as soon as it is (within the block)."""
    module = sys.modules.get(name)
    if module is not None:
        setup(module)
        return
    hook = _WhenImported(name, setup)
    sys.meta_path.insert(0, hook)

    def disarm() -> None:
        try:
            sys.meta_path.remove(hook)
        except ValueError:
            pass

    undo.push(disarm)


def _set_env(undo: _Undo, values: dict[str, str]) -> None:
    previous = {name: os.environ.get(name) for name in values}

    def restore() -> None:
        for name, old in previous.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old

    undo.push(restore)
    os.environ.update(values)


def _seed_python(undo: _Undo, seed: int) -> None:
    import random  # only where a step is seeded in-process (fn steps), not for every plan

    state = random.getstate()
    undo.push(lambda: random.setstate(state))
    random.seed(seed)


def _seed_numpy(undo: _Undo, seed: int, np: ModuleType) -> None:
    state = np.random.get_state()
    undo.push(lambda: np.random.set_state(state))
    np.random.seed(_seed32(seed))


def _setup_torch(undo: _Undo, seed: int, strict: bool, threads: int, torch: ModuleType) -> None:
    cpu_state = torch.random.get_rng_state()
    undo.push(lambda: torch.random.set_rng_state(cpu_state))
    # Only touch CUDA when it is already usable: initialising it here would cost seconds and
    # memory in a CPU step (whose CUDA_VISIBLE_DEVICES is "" anyway).
    if torch.cuda.is_available():
        cuda_states = torch.cuda.get_rng_state_all()
        undo.push(lambda: torch.cuda.set_rng_state_all(cuda_states))
    torch.manual_seed(seed % 2**64)  # seeds the CPU and every CUDA device

    num_threads = torch.get_num_threads()
    undo.push(lambda: torch.set_num_threads(num_threads))
    torch.set_num_threads(threads)

    if strict:
        det = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        undo.push(lambda: torch.use_deterministic_algorithms(det, warn_only=warn_only))
        torch.use_deterministic_algorithms(True)
        cudnn = torch.backends.cudnn
        cudnn_det, cudnn_bench = cudnn.deterministic, cudnn.benchmark

        def restore_cudnn() -> None:
            cudnn.deterministic, cudnn.benchmark = cudnn_det, cudnn_bench

        undo.push(restore_cudnn)
        cudnn.deterministic, cudnn.benchmark = True, False


def _seed_cupy(undo: _Undo, seed: int, cupy: ModuleType) -> None:
    try:
        if not cupy.cuda.is_available():
            return
        previous = cupy.random.get_random_state()
        fresh = cupy.random.RandomState(_seed32(seed))
    except Exception:  # noqa: BLE001 - CuPy without a working CUDA: there is nothing to seed
        return
    undo.push(lambda: cupy.random.set_random_state(previous))
    cupy.random.set_random_state(fresh)


@contextmanager
def applied(seed: int, mode: str | Mode, threads: int = 1) -> Iterator[int]:
    """Apply the determinism policy for the block and restore everything it changed on exit.

    Sets SCI_SEED, SCI_DETERMINISM, the thread variables (and in strict mode PYTHONHASHSEED,
    CUBLAS_WORKSPACE_CONFIG) in os.environ — for child processes and for libraries that read
    them at import, which is why they are set first — then seeds `random`, NumPy's global RNG,
    PyTorch and CuPy (now if imported, else on their first import inside the block), and in
    strict mode turns on PyTorch's deterministic algorithms with cuDNN deterministic and not
    benchmarking. Restored on exit: RNG states, flags, thread count, variables, import hooks.
    Yields the seed.

    PYTHONHASHSEED cannot change the hashing of the running interpreter: a Python step is run
    in a fresh process started with `command_env`, which is what pins it.
    """
    mode = parse_mode(mode)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, not {type(seed).__name__}")
    strict = mode is Mode.STRICT
    env = command_env(seed, mode, [], threads)
    del env["CUDA_VISIBLE_DEVICES"]  # which GPUs a process sees is decided when it starts
    undo = _Undo()
    try:
        _set_env(undo, env)
        _seed_python(undo, seed)
        _when_imported(undo, "numpy", lambda m: _seed_numpy(undo, seed, m))
        _when_imported(undo, "torch", lambda m: _setup_torch(undo, seed, strict, threads, m))
        _when_imported(undo, "cupy", lambda m: _seed_cupy(undo, seed, m))
    except BaseException:
        undo.run()
        raise
    try:
        yield seed
    finally:
        undo.run()


_process_policy: Any = None  # the `applied()` block `apply()` entered and never leaves


def apply(*, default_seed: int | None = None, threads: int | None = None) -> int:
    """The one call a `cmd` step's script makes: apply sci's policy for the rest of the process.

    Reads SCI_SEED and SCI_DETERMINISM (set by sci for every step) and returns the seed.
    Outside sci, `default_seed` stands in for SCI_SEED (and strict mode is assumed); without
    it a missing SCI_SEED is an error. `threads` defaults to OMP_NUM_THREADS, else 1.

        import sci.determinism
        seed = sci.determinism.apply()
    """
    global _process_policy
    raw = os.environ.get(ENV_SEED)
    if raw is None:
        if default_seed is None:
            raise UserError(f"{ENV_SEED} is not set: this script is not running as a sci step",
                            hint="run it through `sci build`, or call apply(default_seed=N)")
        seed = default_seed
    else:
        try:
            seed = int(raw)
        except ValueError:
            raise UserError(f"{ENV_SEED}={raw!r} is not an integer") from None
    mode = parse_mode(os.environ.get(ENV_MODE, Mode.STRICT.value))
    if threads is None:
        try:
            threads = max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
        except ValueError:
            threads = 1
    if _process_policy is not None:  # a second apply() replaces the first, it does not stack
        _process_policy.__exit__(None, None, None)
        _process_policy = None
    policy = applied(seed, mode, threads)
    policy.__enter__()
    _process_policy = policy
    return seed
