"""GPU discovery: what NVIDIA GPUs this machine has, asked of `nvidia-smi`, never of torch or cupy.

Importing torch or cupy costs a second or more and may initialise CUDA; sci asks about GPUs on
every plan (resource validation, the fingerprint of GPU steps, `sci doctor`), so it asks the
driver's own tool instead. The answer is cached for the life of the process: GPUs do not come
and go while one sci command runs. When `nvidia-smi` is absent the machine has no usable
NVIDIA GPU as far as sci is concerned; when it is present but fails, the list is empty too and
`gpu_unavailable_reason()` says why, so `sci doctor` and "needs a GPU" errors can name the cause
instead of a bare "no GPU".
"""

from __future__ import annotations

import os
import re
import shutil
import threading

from sci.errors import ResourceError
from sci.values import Value

# The columns asked of `nvidia-smi --query-gpu`, in the order the parser reads them. The CUDA
# version is not a query field (the driver prints it only in its header and in `-q`), so it
# is read by a second call, once per process.
QUERY_FIELDS = ("index", "name", "memory.total", "driver_version", "uuid")
# A hung driver must not hang sci: nvidia-smi answers in well under a second when healthy.
TIMEOUT_S = 15.0
# `nvidia-smi -q` prints "CUDA Version : 12.4"; drivers from 2026 on print "CUDA UMD Version".
_CUDA_LINE = re.compile(r"^\s*CUDA (?:UMD )?Version\s*:\s*(\S+)", re.MULTILINE)


class GpuRequired(ResourceError):
    """Work asked for a GPU (or a GPU fact) and this machine cannot give one. Exit 2."""


class GpuInfo(Value):
    """One GPU as the driver reports it. `vram_gb` is total memory in GiB (MiB / 1024);
    `cuda_version` is the newest CUDA the driver supports ("" when the driver did not say)."""

    __slots__ = _FIELDS = ("index", "name", "vram_gb", "driver", "cuda_version", "uuid")

    def __init__(self, index: int, name: str, vram_gb: float, driver: str, cuda_version: str, uuid: str):
        self.index, self.name, self.vram_gb, self.driver = index, name, vram_gb, driver
        self.cuda_version, self.uuid = cuda_version, uuid

    def to_json(self) -> dict:
        return {f: getattr(self, f) for f in self._FIELDS}


_lock = threading.Lock()
_cached: tuple[list[GpuInfo], str | None] | None = None


def _run(argv: list[str]) -> str:
    """stdout of argv; raises OSError / SubprocessError / ValueError with a readable message."""
    import subprocess  # not on sci's start-up path: only a GPU question spawns anything

    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          encoding="utf-8", errors="replace",
                          timeout=TIMEOUT_S, env={**os.environ, "LC_ALL": "C"})
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ValueError(f"exited with status {proc.returncode}"
                         + (f": {detail[0]}" if detail else ""))
    return proc.stdout


def parse_query(text: str, cuda_version: str = "") -> list[GpuInfo]:
    """Parse `--query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits` output."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(QUERY_FIELDS):
            raise ValueError(f"unexpected line {line.strip()!r}")
        index, name, mem_mib, driver, uuid = cells
        try:
            vram_gb = round(float(mem_mib) / 1024.0, 3)
        except ValueError:
            vram_gb = 0.0  # "[N/A]" on some MIG / vGPU setups: the GPU is there, its size unknown
        gpus.append(GpuInfo(int(index), name, vram_gb, driver, cuda_version, uuid))
    gpus.sort(key=lambda g: g.index)
    return gpus


def parse_cuda_version(text: str) -> str:
    """The driver's CUDA version from `nvidia-smi -q` (or its plain header); "" if absent."""
    match = _CUDA_LINE.search(text)
    if match is None:
        match = re.search(r"CUDA Version:\s*(\S+)", text)
    return match.group(1) if match else ""


def _discover() -> tuple[list[GpuInfo], str | None]:
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [], "nvidia-smi is not on PATH (no NVIDIA driver installed)"
    try:
        query = _run([exe, f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"])
    except subprocess.TimeoutExpired:
        return [], f"nvidia-smi did not answer within {TIMEOUT_S:g} s"
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return [], f"nvidia-smi failed: {exc}"
    try:
        cuda = parse_cuda_version(_run([exe, "-q"]))
    except (OSError, subprocess.SubprocessError, ValueError):
        cuda = ""  # the GPUs are usable; only the CUDA version stays unknown
    try:
        gpus = parse_query(query, cuda)
    except ValueError as exc:
        return [], f"cannot read nvidia-smi output: {exc}"
    if not gpus:
        return [], "nvidia-smi lists no GPU"
    return gpus, None


def detect_gpus(*, refresh: bool = False) -> list[GpuInfo]:
    """The machine's NVIDIA GPUs by index (empty when there are none or nvidia-smi fails).

    Asked once per process; `refresh=True` asks again (tests, long-lived drivers).
    CUDA_VISIBLE_DEVICES is deliberately ignored: sci itself assigns GPUs to steps through it.
    """
    global _cached
    with _lock:
        if _cached is None or refresh:
            _cached = _discover()
        return list(_cached[0])


def gpu_unavailable_reason() -> str | None:
    """Why `detect_gpus()` is empty, or None when it found at least one GPU."""
    detect_gpus()
    assert _cached is not None
    return _cached[1]


def require_gpus(count: int = 1) -> list[GpuInfo]:
    """The GPUs, or `GpuRequired` naming the reason when fewer than `count` exist."""
    gpus = detect_gpus()
    if len(gpus) >= count:
        return gpus
    reason = gpu_unavailable_reason() or f"this machine has {len(gpus)} GPU(s)"
    raise GpuRequired(f"{count} GPU(s) needed, none usable: {reason}" if not gpus
                      else f"{count} GPU(s) needed, but {reason}",
                      hint="run on a machine with an NVIDIA GPU and driver, or set resources.gpu: 0")
