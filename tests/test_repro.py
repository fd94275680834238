"""`sci repro-check` (SPEC §7, §8.5): a strict pipeline reproduces; a clock, a flipped stored
byte or a changed environment is caught and named."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO, no_traceback
from sci.store.cas import Store

SEEDED = {
    "sci.yaml": """
        version: 1
        defaults: {seed: 5}
        env: {files: [lock.txt], vars: [MY_FLAG]}
        steps:
          draw:
            cmd: python -c "import random,sys; random.seed(int(sys.argv[1])); print(random.random())" {seed} > {outs}
            outs: [draw.txt]
          fixed:
            cmd: python -c "import random,sys; random.seed(int(sys.argv[1])); print(random.random())" {seed} > {outs}
            seed: 42
            outs: [fixed.txt]
          copy:
            cmd: cat {deps} > {outs}
            deps: [fixed.txt]
            outs: [copy.txt]
        """,
    "lock.txt": "numpy==2.0\n",
}


def test_strict_pipeline_reproduces(ws):
    sci = ws(SEEDED)
    sci.build()
    proc = sci("repro-check", "copy", "--json")
    rep = json.loads(proc.stdout)
    assert rep["ok"] is True
    assert {n["node"]: n["status"] for n in rep["nodes"]} == {"fixed": "match", "copy": "match"}
    run = next(p for p in (ws.root / "runs").iterdir() if (p / "repro.json").exists())
    assert json.loads((run / "repro.json").read_text())["ok"] is True
    assert not (ws.root / ".sci" / "repro").exists() or not any((ws.root / ".sci" / "repro").iterdir())


def test_clock_reading_step_is_a_named_mismatch_and_fast_declares_it(ws):
    clock = """
        version: 1
        steps:
          stamp:
            cmd: python -c "import time; print(time.time_ns())" > {outs}
            outs: [out/stamp.txt]
          {mode}
        """
    sci = ws({"sci.yaml": clock.replace("{mode}", "")})
    sci.build()
    proc = sci("repro-check", "stamp", check=1)
    assert "mismatch" in proc.stdout and "stamp" in proc.stdout and "out/stamp.txt" in proc.stdout
    assert "first difference at byte" in proc.stdout
    assert "repro-check stamp: NOT REPRODUCED: 1 node(s) differ from the record; first: stamp" in proc.stderr
    assert no_traceback(proc.stderr)
    (ws.root / "sci.yaml").write_text((ws.root / "sci.yaml").read_text().replace("outs: [out/stamp.txt]",
                                      "outs: [out/stamp.txt]\n    determinism: fast"))
    sci.build()
    rep = json.loads(sci("repro-check", "stamp", "--json").stdout)
    assert rep["ok"] is True and rep["nodes"][0]["status"] == "nondeterministic-declared"


def test_flipped_byte_in_a_stored_object_is_caught(ws):
    sci = ws(SEEDED)
    out = sci.build()
    key = next(n["key"] for n in out["nodes"] if n["node"] == "fixed")
    action = Store(ws.root / "cas", create=False).get_action(key)
    digest = action["outputs"]["fixed.txt"]["digest"]
    blob = ws.root / "cas/blobs" / digest[:2] / digest
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[0] ^= 1
    blob.write_bytes(bytes(data))
    proc = sci("repro-check", "fixed", check=1)
    assert "stored object does not match its digest" in proc.stdout and "fixed.txt" in proc.stdout


def test_seed_changes_only_the_outputs_of_seeded_steps(ws):
    sci = ws(SEEDED)
    sci.build()
    rep = json.loads(sci("repro-check", "draw", "--seed", "6", "--json").stdout)
    assert rep["ok"] is True and rep["seed"] == 6
    assert rep["nodes"][0]["files"], "a derived seed must change draw.txt"
    rep = json.loads(sci("repro-check", "copy", "--seed", "6", "--json").stdout)
    assert all(not n["files"] for n in rep["nodes"])  # explicit seed: fixed and copy unchanged


def test_changed_env_var_and_lock_file_are_named(ws):
    sci = ws(SEEDED, env={"MY_FLAG": "1"})
    sci.build()
    sci.env["MY_FLAG"] = "2"
    rows = {r["node"]: r for r in json.loads(sci("status", "--json").stdout)["nodes"]}
    assert rows["fixed"]["reasons"] == ["env changed: vars.MY_FLAG: 1 → 2"]
    rep = json.loads(sci("repro-check", "fixed", "--json").stdout)
    assert rep["nodes"][0]["status"] == "env-drift"
    assert rep["nodes"][0]["env_drift"] == ["vars.MY_FLAG: 1 → 2"]
    sci.env["MY_FLAG"] = "1"
    (ws.root / "lock.txt").write_text("numpy==2.1\n")
    rows = {r["node"]: r for r in json.loads(sci("status", "--json").stdout)["nodes"]}
    assert any(r.startswith("env changed: files.lock.txt") for r in rows["fixed"]["reasons"])


@pytest.mark.slow
def test_bundled_investigation_reproduces_dossier_included(tmp_path):
    from conftest import Sci

    root = tmp_path / "inv"
    root.mkdir()
    for name in ("sci.yaml", "params.yaml", "uv.lock", "pyproject.toml"):
        shutil.copy2(REPO / name, root / name)
    shutil.copytree(REPO / "rules", root / "rules", ignore=shutil.ignore_patterns("__pycache__"))
    sci = Sci(root)
    sci("build", "dossier")
    rep = json.loads(sci("repro-check", "dossier", "--json", timeout=600).stdout)
    assert rep["ok"] is True
    statuses = {n["node"]: n["status"] for n in rep["nodes"]}
    assert statuses["dossier"] == "match" and set(statuses.values()) == {"match"}
    assert (root / "dossier" / "index.html").exists() and (root / "dossier" / "dossier.json").exists()
    _validate_real_records(root)
    # the check is what the dossier may now claim: rebuilt, it says so, its crate is complete
    # (dated by the check), and the dossier making the claim reproduces too
    sci("build", "dossier")
    dossier = json.loads((root / "dossier" / "dossier.json").read_text())
    assert dossier["reproduction"]["state"] == "reproduced"
    assert dossier["reproduction"]["check"]["run_id"] == rep["run_id"]
    assert "Reproduced." in (root / "dossier" / "index.html").read_text()
    _validate_crates(sci, root)
    again = json.loads(sci("repro-check", "dossier", "--json", timeout=600).stdout)
    assert again["verdict"] == "reproduced"


def _validate_crates(sci, root: Path) -> None:
    """The investigation's dossier crate and its exported crate pass roc-validator's
    provenance-run-crate profile with no errors; its PROV reads back."""
    from rocrate_check import validate

    assert validate(root / "dossier") == []
    crate_dir = Path(sci("export", "dossier", "--format", "ro-crate").stdout.strip())
    assert validate(crate_dir) == []
    prov_file = Path(sci("export", "figure", "--format", "prov").stdout.strip())
    import prov.model as pm

    doc = pm.ProvDocument.deserialize(source=str(prov_file), format="json")
    assert len(list(doc.get_records(pm.ProvActivity))) == 14


def _validate_real_records(root: Path) -> None:
    """The records the investigation really wrote satisfy the published JSON Schemas."""
    import jsonschema

    schema = {name: json.loads((REPO / "docs" / "schemas" / f"{name}.schema.json").read_text())
              for name in ("StepResult", "RunManifest", "Dossier", "ExperimentRequest")}
    actions = [data for _key, data, _file in Store(root / "cas", create=False).iter_actions()]
    assert len(actions) >= 15
    for data in actions:
        jsonschema.validate(json.loads(data), schema["StepResult"])
    manifests = list((root / "runs").glob("*/manifest.json"))
    assert manifests
    for p in manifests:
        jsonschema.validate(json.loads(p.read_text()), schema["RunManifest"])
    dossier = json.loads((root / "dossier" / "dossier.json").read_text())
    jsonschema.validate(dossier, schema["Dossier"])
    jsonschema.validate(dossier["experiment"], schema["ExperimentRequest"])
