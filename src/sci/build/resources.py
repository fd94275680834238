"""Machine limits and the CPU / RAM / GPU / VRAM pools the scheduler draws from."""

from __future__ import annotations

import os
from pathlib import Path

from sci.errors import Location, ResourceError, SpecError
from sci.values import Value

HARDWARE_FILE = "config/hardware.yaml"


class Gpu(Value):
    __slots__ = _FIELDS = ("index", "vram_gb", "name")

    def __init__(self, index: int, vram_gb: float, name: str = ""):
        self.index, self.vram_gb, self.name = index, vram_gb, name


class Hardware(Value):
    """What this machine offers: from config/hardware.yaml, else detected."""

    __slots__ = _FIELDS = ("cpu", "mem_gb", "gpus", "source")

    def __init__(self, cpu: int, mem_gb: float, gpus: list[Gpu] | None = None, source: str = "detected"):
        self.cpu, self.mem_gb = cpu, mem_gb
        self.gpus = gpus if gpus is not None else []
        self.source = source


def _detect_mem_gb() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 2)
    except OSError:
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 2)
    except (ValueError, OSError):
        return 0.0


def detect() -> Hardware:
    cpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    gpus: list[Gpu] = []
    try:
        from sci.build.gpu import detect_gpus

        gpus = [Gpu(g.index, float(g.vram_gb), g.name) for g in detect_gpus()]
    except ImportError:
        pass
    return Hardware(cpu=cpu, mem_gb=_detect_mem_gb(), gpus=gpus)


def load_hardware(root: Path) -> Hardware:
    """config/hardware.yaml if present (cpu, mem_gb, gpus: [{vram_gb, name}]), else detect()."""
    path = root / HARDWARE_FILE
    if not path.is_file():
        return detect()
    from sci.spec.load import load_yaml

    data, pos = load_yaml(path, HARDWARE_FILE)
    data = data or {}
    if not isinstance(data, dict):
        raise SpecError("hardware.yaml must be a mapping", location=Location(HARDWARE_FILE, 1, 1),
                        hint="write cpu:, mem_gb: and gpus:")
    detected = None
    unknown = set(data) - {"cpu", "mem_gb", "gpus"}
    if unknown:
        bad = sorted(unknown)[0]
        raise SpecError(f"unknown key '{bad}'", location=pos.at((bad,), key=True), hint="valid keys: cpu, mem_gb, gpus")

    def num(key, kind):
        v = data[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise SpecError(f"{key} must be a non-negative number", location=pos.at((key,)), hint="e.g. cpu: 8")
        return kind(v)

    if "cpu" not in data or "mem_gb" not in data or "gpus" not in data:
        detected = detect()
    cpu = num("cpu", int) if "cpu" in data else detected.cpu
    mem = num("mem_gb", float) if "mem_gb" in data else detected.mem_gb
    gpus = []
    if "gpus" not in data:
        return Hardware(cpu=cpu, mem_gb=mem, gpus=list(detected.gpus), source=HARDWARE_FILE)
    raw_gpus = data["gpus"] or []
    if isinstance(raw_gpus, int):
        raw_gpus = [{}] * raw_gpus
    if not isinstance(raw_gpus, list):
        raise SpecError("gpus must be a list of {vram_gb: N}", location=pos.at(("gpus",)), hint="e.g. gpus: [{vram_gb: 24}]")
    for i, g in enumerate(raw_gpus):
        g = g or {}
        if not isinstance(g, dict):
            raise SpecError("each GPU is a mapping like {vram_gb: 24}", location=pos.at(("gpus", i)), hint="e.g. - {vram_gb: 24}")
        gpus.append(Gpu(index=int(g.get("index", i)), vram_gb=float(g.get("vram_gb", 0)), name=str(g.get("name", ""))))
    return Hardware(cpu=cpu, mem_gb=mem, gpus=gpus, source=HARDWARE_FILE)


def check_fits(nodes, hw: Hardware, pos=None) -> None:
    """Reject, before anything runs, a node no amount of waiting could satisfy (exit 2)."""
    for n in nodes:
        r = n.resources
        if (r["gpu"] == 0 and r["cpu"] <= hw.cpu and (not hw.mem_gb or r["mem_gb"] <= hw.mem_gb)):
            continue  # the common case; positions are only worth computing for an error
        loc = pos.at(n.origin + ("resources",)) if pos is not None else None
        where = f"{n.name} asks for"
        if r["gpu"] > 0 and not hw.gpus:
            raise ResourceError(f"{where} {int(r['gpu'])} GPU(s) but this machine has none ({hw.source})",
                                location=loc, hint="run it on a machine with a GPU; sci never falls back to the CPU")
        if r["gpu"] > len(hw.gpus):
            raise ResourceError(f"{where} {int(r['gpu'])} GPUs but this machine has {len(hw.gpus)}", location=loc,
                                hint="lower resources.gpu")
        if r["gpu"] > 0 and r["vram_gb"] > 0:
            fitting = [g for g in hw.gpus if g.vram_gb >= r["vram_gb"] or g.vram_gb == 0]
            if len(fitting) < r["gpu"]:
                raise ResourceError(f"{where} {r['vram_gb']} GB VRAM per GPU; the GPUs here have "
                                    f"{', '.join(str(g.vram_gb) for g in hw.gpus)} GB", location=loc,
                                    hint="lower resources.vram_gb or use a larger GPU")
        if r["cpu"] > hw.cpu:
            raise ResourceError(f"{where} {r['cpu']} CPUs but this machine has {hw.cpu}", location=loc,
                                hint=f"lower resources.cpu to at most {hw.cpu} (or edit {HARDWARE_FILE})")
        if hw.mem_gb and r["mem_gb"] > hw.mem_gb:
            raise ResourceError(f"{where} {r['mem_gb']} GB of memory but this machine has {hw.mem_gb} GB",
                                location=loc, hint="lower resources.mem_gb")


class Pools:
    """Counting semaphores for CPU, RAM, node slots (-j) and a set of free GPUs.

    Only the scheduler thread touches a Pools object, so it needs no locking. GPUs are handed
    out lowest free index first (with enough VRAM), a fixed tie-break so runs are repeatable.
    """

    def __init__(self, hw: Hardware, jobs: int):
        self.cpu = hw.cpu
        self.mem = hw.mem_gb if hw.mem_gb else float("inf")
        self.slots = jobs
        self.gpus = {g.index: g for g in hw.gpus}
        self.free_gpus = sorted(self.gpus)

    def _pick_gpus(self, res: dict) -> list[int] | None:
        want = int(res["gpu"])
        if want == 0:
            return []
        picked = [i for i in self.free_gpus
                  if res["vram_gb"] <= 0 or self.gpus[i].vram_gb == 0 or self.gpus[i].vram_gb >= res["vram_gb"]][:want]
        return picked if len(picked) == want else None

    def try_acquire(self, res: dict) -> list[int] | None:
        """GPU ids (possibly empty) if the node fits now, else None."""
        if self.slots < 1 or res["cpu"] > self.cpu or res["mem_gb"] > self.mem:
            return None
        gpus = self._pick_gpus(res)
        if gpus is None:
            return None
        self.slots -= 1
        self.cpu -= res["cpu"]
        self.mem -= res["mem_gb"]
        for g in gpus:
            self.free_gpus.remove(g)
        return gpus

    def release(self, res: dict, gpus: list[int]) -> None:
        self.slots += 1
        self.cpu += res["cpu"]
        self.mem += res["mem_gb"]
        self.free_gpus = sorted(self.free_gpus + gpus)

