"""examples/variants (issue 16): a Snakemake read-mapping/variant-calling workflow ported to
sci.yaml runs from a fresh clone — shell steps with awk, sort and gzip, a plot step in its own
PEP 723 environment whose package (tabulate, from the package index) sci's own venv lacks.

Each test copies the example's tracked files (what a clone has, nothing a local build left)
into tmp_path and drives the real CLI there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, Sci

UV = shutil.which("uv")
pytestmark = [pytest.mark.skipif(UV is None, reason="uv is not installed (it makes the plot step's environment)"),
              pytest.mark.xdist_group("environments"), pytest.mark.slow]

EXAMPLE = REPO / "examples" / "variants"
SAMPLE_NODES = ["index[sample=A]", "index[sample=B]", "map[sample=A]", "map[sample=B]",
                "sort[sample=A]", "sort[sample=B]"]
ALL = sorted(["call", "plot", *SAMPLE_NODES])


def clone(where: Path) -> Sci:
    """The example as a fresh clone has it: the files git tracks (or would), no build outputs."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "."],
                            cwd=EXAMPLE, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (EXAMPLE / rel).is_file():
            (where / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(EXAMPLE / rel, where / rel)
    assert (where / "sci.yaml").is_file() and not (where / "results").exists()
    return Sci(where)


def sites(sci: Sci) -> list[tuple[int, str]]:
    """(position, genotypes) of each record of the VCF."""
    records = [line.split("\t") for line in (sci.root / "results" / "calls.vcf").read_text().splitlines()
               if not line.startswith("#")]
    return [(int(r[1]), " ".join(s.split(":")[0] for s in r[9:])) for r in records]


def outputs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "results").rglob("*")) if p.is_file()}


def test_sci_has_no_tabulate():
    """The point of the plot step's environment: its package is not sci's."""
    with pytest.raises(ImportError):
        __import__("tabulate")
    assert subprocess.run([sys.executable, "-c", "import tabulate"], capture_output=True).returncode != 0


def test_the_port_builds_from_a_fresh_clone_rebuilds_nothing_and_reproduces(tmp_path):
    sci = clone(tmp_path / "ws")
    out = sci.build()
    assert out["executed"] == ALL, out["stderr"]
    assert "prepared  environment plot" in out["stderr"]
    # the planted variants of samples A and B (data/generate.py), nothing else at min_frac 0.3
    assert sites(sci) == [(61, "0/1 0/1"), (151, "1/1 0/0"), (201, "0/0 1/1"), (231, "0/1 0/0")]
    header = (sci.root / "results" / "calls.vcf").read_text().splitlines()
    assert header[0] == "##fileformat=VCFv4.2" and "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tA\tB" in header
    # the plot step imported tabulate in its own prepared environment, not sci's interpreter
    log = sci("log", "plot").stdout
    assert "plot: tabulate 0.9.0 in " + str(sci.root / ".sci" / "envs" / "plot-") in log, log
    assert (sci.root / "results" / "plots" / "calls.md").read_text().startswith("| chrom   |   pos |")
    assert json.loads((sci.root / "results" / "plots" / "metrics.json").read_text())["sites"] == 4
    assert (sci.root / "results" / "plots" / "depth.svg").read_text().startswith("<svg ")

    assert sci.build()["executed"] == []
    proc = sci("repro-check", "results/calls.vcf")
    assert "REPRODUCED" in proc.stderr and "NOT REPRODUCED" not in proc.stderr, proc.stderr


def test_editing_min_frac_reruns_exactly_call_and_plot(tmp_path):
    sci = clone(tmp_path / "ws")
    sci.build()
    before = outputs(sci.root)
    params = sci.root / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace("min_frac: 0.3 ", "min_frac: 0.15"))
    edited = sci.build()
    assert edited["executed"] == ["call", "plot"] and edited["cached"] == SAMPLE_NODES
    assert len(sites(sci)) > 4   # the sequencing errors of a lower threshold
    params.write_text(text)
    undone = sci.build()
    assert undone["executed"] == [] and sorted(undone["cached"]) == ALL
    assert outputs(sci.root) == before


def test_adding_a_sample_runs_only_its_nodes_and_whats_downstream(tmp_path):
    sci = clone(tmp_path / "ws")
    sci.build()
    grown = sci.build("--set", "samples=[A, B, C]")
    assert grown["executed"] == ["call", "index[sample=C]", "map[sample=C]", "plot", "sort[sample=C]"]
    assert grown["cached"] == SAMPLE_NODES
    assert (101, "0/0 0/0 0/1") in sites(sci)   # C's own heterozygous site


def test_outputs_are_byte_stable_across_fresh_builds(tmp_path):
    """Two clones at different paths, built from scratch: every output byte for byte equal."""
    first, second = clone(tmp_path / "one"), clone(tmp_path / "two")
    assert first.build()["executed"] == ALL and second.build()["executed"] == ALL
    built = outputs(first.root)
    assert len(built) == 10 and built == outputs(second.root)
