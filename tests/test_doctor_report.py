"""`sci doctor`'s report, and the GPU discovery it relies on (with a stand-in nvidia-smi)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sci import canonical, doctor
from sci.build import gpu
from sci.build.gpu import GpuInfo, GpuRequired
from sci.store.hashing import TreeEntry
from sci.store.cas import STORE_FORMAT, Store

SMI_OK = """\
#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.txt"
case "$1" in
  --query-gpu=*) echo "1, NVIDIA L4, 23034, 550.54.15, GPU-1111"
                 echo "0, NVIDIA L4, 23034, 550.54.15, GPU-0000" ;;
  -q) printf 'Driver Version : 550.54.15\\nCUDA UMD Version                : 12.4\\n' ;;
esac
"""
SMI_BROKEN = """\
#!/bin/sh
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2
exit 9
"""


def install_smi(tmp_path: Path, monkeypatch, script: str | None) -> Path:
    """Put a stand-in nvidia-smi (or none) alone on PATH and clear the process cache."""
    bindir = tmp_path / "smi-bin"
    bindir.mkdir()
    if script is not None:
        smi = bindir / "nvidia-smi"
        smi.write_text(script)
        smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setattr(gpu, "_cached", None)
    return bindir


# -- GPU discovery ---------------------------------------------------------------------------
def test_gpus_are_parsed_sorted_by_index_and_cached(tmp_path, monkeypatch):
    bindir = install_smi(tmp_path, monkeypatch, SMI_OK)
    gpus = gpu.detect_gpus()
    assert gpus == [
        GpuInfo(0, "NVIDIA L4", 22.494, "550.54.15", "12.4", "GPU-0000"),
        GpuInfo(1, "NVIDIA L4", 22.494, "550.54.15", "12.4", "GPU-1111"),
    ]
    assert gpu.gpu_unavailable_reason() is None
    gpu.detect_gpus()
    calls = (bindir / "calls.txt").read_text().splitlines()
    assert len(calls) == 2  # one query and one -q, once per process
    assert calls[0].startswith("--query-gpu=index,name,memory.total,driver_version,uuid")
    gpu.detect_gpus(refresh=True)
    assert len((bindir / "calls.txt").read_text().splitlines()) == 4


def test_no_nvidia_smi_means_no_gpu_with_a_reason(tmp_path, monkeypatch):
    install_smi(tmp_path, monkeypatch, None)
    assert gpu.detect_gpus() == []
    assert "nvidia-smi is not on PATH" in gpu.gpu_unavailable_reason()


def test_a_broken_nvidia_smi_gives_no_gpu_and_its_message(tmp_path, monkeypatch):
    install_smi(tmp_path, monkeypatch, SMI_BROKEN)
    assert gpu.detect_gpus() == []
    reason = gpu.gpu_unavailable_reason()
    assert "status 9" in reason and "couldn't communicate" in reason
    with pytest.raises(GpuRequired, match="couldn't communicate"):
        gpu.require_gpus(1)


def test_require_gpus_counts(tmp_path, monkeypatch):
    install_smi(tmp_path, monkeypatch, SMI_OK)
    assert len(gpu.require_gpus(2)) == 2
    with pytest.raises(GpuRequired, match="3 GPU"):
        gpu.require_gpus(3)


def test_parse_query_handles_unknown_memory_and_rejects_garbage():
    gpus = gpu.parse_query("0, NVIDIA A100 MIG 1g.10gb, [N/A], 535.1, MIG-abc\n\n", "12.2")
    assert gpus == [GpuInfo(0, "NVIDIA A100 MIG 1g.10gb", 0.0, "535.1", "12.2", "MIG-abc")]
    with pytest.raises(ValueError):
        gpu.parse_query("No devices were found")


def test_cuda_version_from_old_and_new_driver_output():
    assert gpu.parse_cuda_version("CUDA Version                              : 12.2") == "12.2"
    assert gpu.parse_cuda_version("    CUDA UMD Version : 13.1\n") == "13.1"
    assert gpu.parse_cuda_version("| NVIDIA-SMI 535.1  Driver Version: 535.1  CUDA Version: 12.2 |") == "12.2"
    assert gpu.parse_cuda_version("nothing here") == ""


# -- the report ------------------------------------------------------------------------------
def make_store(root: Path) -> Store:
    store = Store(root)
    blob = store.put_bytes(b"hello")
    store.put_tree([TreeEntry("a.txt", blob, 5, False)])
    store.put_action("k" * 64, {"key": "k" * 64})
    return store


def test_report_on_a_workspace_with_a_healthy_store(tmp_path, monkeypatch):
    install_smi(tmp_path, monkeypatch, SMI_OK)
    ws = tmp_path / "ws"
    ws.mkdir()
    make_store(ws / "cas")
    monkeypatch.delenv("SCI_CAS", raising=False)
    rep = doctor.report(ws, None)
    canonical.dumps(rep)  # JSON without NaN: what `--json` prints
    assert rep["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert rep["machine"]["cpu_count"] == os.cpu_count()
    assert rep["machine"]["ram_gb"] > 0
    assert rep["packages"]["blake3"] and rep["packages"]["click"]
    assert {"torch", "cupy", "ray"} <= set(rep["packages"])
    assert [g["uuid"] for g in rep["gpus"]] == ["GPU-0000", "GPU-1111"]
    assert rep["driver"] == "550.54.15" and rep["cuda"] == "12.4"
    store = rep["store"]
    assert store["exists"] and store["format"] == STORE_FORMAT and store["format_ok"]
    assert store["objects"] == {"blob": 1, "tree": 1, "action": 1}
    assert store["tmp_leftovers"] == 0 and store["problems"] == []
    assert rep["workspace"]["lock"]["exists"] is False
    doctor.require_gpu(rep)  # GPUs present: no error

    text = "\n".join(doctor.render(rep))
    assert "NVIDIA L4" in text and "driver 550.54.15, CUDA 12.4" in text
    assert "1 blobs, 1 trees, 1 actions" in text
    assert "no lock file" in text


def test_report_names_store_problems(tmp_path, monkeypatch):
    install_smi(tmp_path, monkeypatch, None)
    store = make_store(tmp_path / "cas")
    leftover = store.tmp / "w-killed"
    leftover.write_bytes(b"partial")
    old = time.time() - 2 * doctor.TMP_STALE_S
    os.utime(leftover, (old, old))
    (store.tmp / "w-writing-now").write_bytes(b"x")
    rep = doctor.report(None, store.root)
    assert rep["workspace"] is None
    assert rep["store"]["tmp_leftovers"] == 1 and rep["store"]["tmp_in_progress"] == 1
    assert any("leftover" in p for p in rep["store"]["problems"])

    (store.root / "FORMAT").chmod(0o644)
    (store.root / "FORMAT").write_text("sci-store 99\n")
    rep = doctor.report(None, store.root)
    assert rep["store"]["format_ok"] is False
    assert "not readable by this sci" in "\n".join(doctor.render(rep))


def test_report_on_a_missing_store_and_without_gpus(tmp_path, monkeypatch):
    install_smi(tmp_path, monkeypatch, None)
    rep = doctor.report(None, tmp_path / "nowhere")
    assert rep["store"]["exists"] is False and rep["store"]["objects"] is None
    assert rep["gpus"] == [] and rep["driver"] is None
    with pytest.raises(GpuRequired, match="nvidia-smi is not on PATH") as err:
        doctor.require_gpu(rep)
    assert err.value.exit_code == 2
    assert "gpus       none (nvidia-smi is not on PATH" in "\n".join(doctor.render(rep))


def test_sci_cas_names_the_store_when_none_is_given(tmp_path, monkeypatch):
    install_smi(tmp_path, monkeypatch, None)
    make_store(tmp_path / "shared")
    monkeypatch.setenv("SCI_CAS", str(tmp_path / "shared"))
    assert doctor.report(tmp_path, None)["store"]["path"] == str(tmp_path / "shared")


HOLD_LOCK = """\
import fcntl, sys, time
fh = open(sys.argv[1], "a+")
fcntl.flock(fh, fcntl.LOCK_EX)
fh.write("pid 4242 sci build"); fh.flush()
print("locked", flush=True)
sys.stdin.read()
"""


def test_lock_state_free_and_held_by_another_process(tmp_path):
    lock = tmp_path / doctor.LOCK_RELPATH
    lock.parent.mkdir()
    lock.write_text("")
    assert doctor.lock_state(tmp_path) == {"path": str(lock), "exists": True, "held": False,
                                           "holder": None}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        state = doctor.lock_state(tmp_path)
        assert state["held"] is True and state["holder"] == "pid 4242 sci build"
        line = [ln for ln in doctor.render({**doctor.report(None, None), "workspace":
                                            {"root": str(tmp_path), "lock": state}})
                if ln.startswith("  lock ")]
        assert line == ["  lock     held by a running sci process (pid 4242 sci build)"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert doctor.lock_state(tmp_path)["held"] is False
