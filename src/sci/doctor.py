"""`sci doctor`: a report of the machine, the Python environment, the store and the workspace.

`report()` gathers plain data (what `--json` prints); `render()` turns it into lines for people.
It is cheap on purpose — no object is hashed (that is `sci fsck`) and neither torch nor cupy is
imported (GPUs come from nvidia-smi via sci.build.gpu) — so it can be the first thing a user runs
when something looks wrong, and the thing they paste into a bug report.
"""

from __future__ import annotations

import fcntl
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

from sci import __version__
from sci.build.fingerprint import installed_versions
from sci.envs.locks import normalize_name
from sci.build.gpu import GpuRequired, detect_gpus, gpu_unavailable_reason

# Where the workspace lock lives, relative to the workspace root (SPEC §1: `.sci/` holds it).
# Keep in step with sci.workspace.
LOCK_RELPATH = ".sci/lock"
# Packages worth naming even though sci does not depend on them: they decide what GPU and
# cluster steps can do.
EXTRA_PACKAGES = ("torch", "cupy", "ray")
# A tmp/ entry older than this is left over from a killed writer, not one still writing.
TMP_STALE_S = 3600


# -- machine ---------------------------------------------------------------------------------
def _meminfo() -> dict[str, float]:
    """MemTotal / MemAvailable in GiB from /proc/meminfo (Linux); sysconf elsewhere."""
    out: dict[str, float] = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    out[key] = int(rest.split()[0]) / 2**20  # kB → GiB
    except OSError:
        try:
            out["MemTotal"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        except (ValueError, OSError, AttributeError):
            pass
    return out


def _cgroup_limits() -> dict[str, float]:
    """Container limits (cgroup v2), which bind before the machine's own size does."""
    out: dict[str, float] = {}
    try:
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if raw != "max":
            out["mem_gb"] = int(raw) / 2**30
    except (OSError, ValueError):
        pass
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            out["cpus"] = int(quota) / int(period)
    except (OSError, ValueError):
        pass
    return out


def _machine() -> dict[str, Any]:
    mem = _meminfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    limits = _cgroup_limits()
    return {
        "os": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "cpu_limit": round(limits["cpus"], 2) if "cpus" in limits else None,
        "ram_gb": round(mem["MemTotal"], 2) if "MemTotal" in mem else None,
        "ram_available_gb": round(mem["MemAvailable"], 2) if "MemAvailable" in mem else None,
        "ram_limit_gb": round(limits["mem_gb"], 2) if "mem_gb" in limits else None,
    }


# -- software --------------------------------------------------------------------------------
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _dependency_names() -> list[str]:
    """sci's declared dependencies (extras included), read from its installed metadata."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = requires("sci") or []
    except PackageNotFoundError:
        reqs = []
    names = []
    for req in reqs:
        match = _REQ_NAME.match(req)
        if match:
            names.append(normalize_name(match.group(1)))
    return names


def _packages() -> dict[str, str | None]:
    installed = installed_versions()
    wanted = set(_dependency_names()) | set(EXTRA_PACKAGES)
    # CuPy ships as cupy-cuda11x, cupy-cuda12x, cupy-rocm-…: name whichever is installed.
    wanted |= {name for name in installed if name.startswith("cupy-")}
    return {name: installed.get(name) for name in sorted(wanted)}


# -- store -----------------------------------------------------------------------------------
def _count_objects(base: Path) -> int:
    count = 0
    try:
        with os.scandir(base) as shards:
            for shard in shards:
                if shard.is_dir(follow_symlinks=False):
                    with os.scandir(shard.path) as objects:
                        count += sum(1 for _ in objects)
    except FileNotFoundError:
        return 0
    return count


def store_health(store_root: Path) -> dict[str, Any]:
    """Whether the store exists and has the right format, how many objects and tmp leftovers.

    Objects are counted, not verified: verifying hashes every byte (`sci fsck`).
    """
    from sci.store.cas import STORE_FORMAT

    root = Path(store_root)
    info: dict[str, Any] = {"path": str(root), "exists": root.is_dir(), "format": None,
                            "format_ok": False, "objects": None, "tmp_leftovers": None,
                            "problems": []}
    if not info["exists"]:
        info["problems"].append("the store does not exist yet (the first build creates it)")
        return info
    try:
        info["format"] = (root / "FORMAT").read_text().strip()
    except OSError:
        info["problems"].append("FORMAT file is missing: this is not a sci store")
    else:
        info["format_ok"] = info["format"] == STORE_FORMAT
        if not info["format_ok"]:
            info["problems"].append(f"format {info['format']!r} is not {STORE_FORMAT!r}")
    info["objects"] = {kind: _count_objects(root / f"{kind}s") for kind in ("blob", "tree", "action")}
    now = time.time()
    stale = fresh = 0
    try:
        with os.scandir(root / "tmp") as it:
            for entry in it:
                try:
                    age = now - entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                if age > TMP_STALE_S:
                    stale += 1
                else:
                    fresh += 1
    except FileNotFoundError:
        pass
    info["tmp_leftovers"] = stale
    info["tmp_in_progress"] = fresh
    if stale:
        info["problems"].append(f"{stale} leftover temporary file(s) in tmp/ from killed writers "
                                "(harmless; `sci gc` removes them)")
    return info


# -- workspace -------------------------------------------------------------------------------
def lock_state(root: Path) -> dict[str, Any]:
    """Whether the workspace lock file exists and whether a sci process holds it now.

    Probed with a non-blocking *shared* flock, released at once: it never blocks, and a
    concurrent `sci build --no-wait` could only collide within that instant.
    """
    path = Path(root) / LOCK_RELPATH
    state: dict[str, Any] = {"path": str(path), "exists": path.exists(), "held": False, "holder": None}
    if not state["exists"]:
        return state
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        state["error"] = str(exc)
        return state
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            state["held"] = True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
        holder = os.read(fd, 200).decode("utf-8", "replace").strip()
        state["holder"] = holder or None
    finally:
        os.close(fd)
    return state


# -- a SLURM cluster -------------------------------------------------------------------------
def slurm_cluster() -> dict[str, Any] | None:
    """The SLURM cluster this machine submits to (partitions, nodes, CPUs, GPUs), where `sinfo`
    is on PATH; None elsewhere. A controller that does not answer is reported, not raised."""
    import shutil

    if shutil.which("sinfo") is None:
        return None
    from sci.executors.slurm import cluster_report

    return cluster_report()


# -- the report ------------------------------------------------------------------------------
def report(root: Path | None, store_root: Path | None) -> dict:
    """Everything `sci doctor --json` prints. `root` is the workspace (None outside one);
    `store_root` the resolved store (None: SCI_CAS, else `<root>/cas`, else no store section)."""
    if store_root is None:
        env_store = os.environ.get("SCI_CAS")
        store_root = Path(env_store) if env_store else (Path(root) / "cas" if root else None)
    gpus = detect_gpus()
    return {
        "sci": __version__,
        "python": {
            "version": platform.python_version(),
            "implementation": sys.implementation.name,
            "executable": sys.executable,
        },
        "machine": _machine(),
        "packages": _packages(),
        "gpus": [g.to_json() for g in gpus],
        "gpu_unavailable_reason": gpu_unavailable_reason(),
        "driver": gpus[0].driver if gpus else None,
        "cuda": (gpus[0].cuda_version or None) if gpus else None,
        "store": store_health(store_root) if store_root is not None else None,
        "workspace": ({"root": str(root), "lock": lock_state(Path(root))} if root is not None else None),
        "slurm": slurm_cluster(),
    }


def require_gpu(rep: dict) -> None:
    """For `sci doctor --require-gpu`: GpuRequired (exit 2) when the report found no GPU."""
    if not rep.get("gpus"):
        raise GpuRequired(f"no usable GPU: {rep.get('gpu_unavailable_reason') or 'none found'}",
                          hint="check the NVIDIA driver with `nvidia-smi`")


def _fmt_gb(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} GiB"


def render(rep: dict) -> list[str]:
    """The report as lines for a terminal, readable without colour."""
    py, m = rep["python"], rep["machine"]
    lines = [
        f"sci        {rep['sci']}",
        f"python     {py['version']} ({py['implementation']}) {py['executable']}",
        f"system     {m['os']} {m['release']} {m['machine']}",
    ]
    cpu = f"cpu        {m['cpu_usable']} usable of {m['cpu_count']}"
    if m.get("cpu_limit") is not None:
        cpu += f" (cgroup limit {m['cpu_limit']:g})"
    lines.append(cpu)
    ram = f"ram        {_fmt_gb(m['ram_gb'])} total, {_fmt_gb(m['ram_available_gb'])} available"
    if m.get("ram_limit_gb") is not None:
        ram += f" (cgroup limit {_fmt_gb(m['ram_limit_gb'])})"
    lines.append(ram)
    if rep["gpus"]:
        lines.append(f"gpus       {len(rep['gpus'])} (driver {rep['driver']}, CUDA {rep['cuda'] or '?'})")
        for g in rep["gpus"]:
            lines.append(f"  [{g['index']}] {g['name']}, {g['vram_gb']:.1f} GiB, {g['uuid']}")
    else:
        lines.append(f"gpus       none ({rep['gpu_unavailable_reason']})")
    lines.append("packages")
    width = max((len(n) for n in rep["packages"]), default=0)
    for name, version in rep["packages"].items():
        lines.append(f"  {name.ljust(width)}  {version or 'not installed'}")
    store = rep.get("store")
    if store is None:
        lines.append("store      none (not in a workspace and SCI_CAS unset)")
    else:
        lines.append(f"store      {store['path']}")
        if store["exists"]:
            objects = store["objects"] or {}
            lines.append(f"  format   {store['format'] or 'missing'}"
                         + ("" if store["format_ok"] else "  (not readable by this sci)"))
            lines.append("  objects  " + ", ".join(f"{objects.get(k, 0)} {k}s"
                                                  for k in ("blob", "tree", "action")))
        for problem in store["problems"]:
            lines.append(f"  problem: {problem}")
    ws = rep.get("workspace")
    if ws is not None:
        lock = ws["lock"]
        if not lock["exists"]:
            state = "no lock file (no build has run here yet)"
        elif lock["held"]:
            state = "held by a running sci process" + (f" ({lock['holder']})" if lock["holder"] else "")
        else:
            state = "free"
        lines.append(f"workspace  {ws['root']}")
        lines.append(f"  lock     {state}")
    slurm = rep.get("slurm")
    if slurm is not None:
        if "error" in slurm:
            lines.append(f"slurm      no answer: {slurm['error']}")
        else:
            lines.append(f"slurm      cluster {slurm['cluster']} (SLURM {slurm['version'] or '?'}): "
                         f"{slurm['nodes']} node(s), {slurm['cpus']} CPUs, {slurm['gpus']} GPUs, accounting "
                         f"{'on (sacct)' if slurm['accounting'] else 'off'}")
            for p in slurm["partitions"]:
                name = p["name"] + ("*" if p["default"] else "")
                lines.append(f"  {name:<12} {p['state'].lower():<5} {p['nodes']} node(s), {p['cpus']} CPUs, "
                             f"{p['gpus']} GPUs, {p['mem_gb']:g} GiB, max time {p['max_time']}")
    return lines
