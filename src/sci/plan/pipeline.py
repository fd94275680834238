"""sci.yaml → a planned pipeline (`Loaded`): validated, expanded into nodes, graphed, cached.

Two caches under `.sci/` keep this off the hot path: the validated sci.yaml by its bytes
(pydantic runs only after an edit), and the whole plan by everything it is a function of
(`plan_key`). Also here: the pipeline's store and its environment fingerprint records.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import sci
from sci import canonical
from sci.store.hashing import StatCache, digest_bytes
from sci.plan.loaded import Loaded
from sci.workspace import Workspace, owns

if TYPE_CHECKING:  # for annotations only: the no-op path never imports the planner
    from sci.build.resources import Hardware
    from sci.spec.load import Positions

PLAN_CACHE = "plan.pickle"
PLAN_CACHE_FORMAT = 18  # plan/cache.py CACHE_FORMAT's number, changed together; 16: journal frames; 17: Node.metrics; 18: environments


def read_bytes(path: Path) -> bytes:
    """The bytes of sci.yaml or the params file, for the plan key: b"" when it is missing or
    not a regular file (never blocking on a FIFO or device), at most one byte past the size
    limit. Loading the pipeline then reads the file again and words what is wrong."""
    from sci.spec.limits import MAX_FILE_BYTES

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(MAX_FILE_BYTES + 1)
    except OSError:
        return b""
    finally:
        os.close(fd)


PIPELINE_CACHE = "pipeline.pickle"
# Its format (store/journal.py frames it: one frame, a pickle of (key, doc, positions)). Bump
# when the validated document's shape or Positions changes.
PIPELINE_CACHE_FORMAT = "sci-pipeline-3"  # 3: environments


def _pipeline_doc(ws: Workspace, yaml_bytes: bytes) -> tuple[dict, Positions]:
    """sci.yaml validated into plain data; cached by its bytes so pydantic runs only on edits."""
    import pickle  # here, not at the top: a no-op build never plans (~2 ms of start-up)

    from sci.spec.load import load_yaml_text
    from sci.store import journal

    key = digest_bytes(sci.__version__.encode() + b"\0" + yaml_bytes)
    cache = ws.state_dir / PIPELINE_CACHE
    found = journal.read(cache, PIPELINE_CACHE_FORMAT)
    if found is not None and found.whole and len(found.bodies) == 1:
        try:
            stored, doc, pos = pickle.loads(found.bodies[0])
            if stored == key:
                return doc, pos
        except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, TypeError, ImportError, IndexError):
            pass
    from sci.errors import Location, SpecError
    from sci.spec.limits import MAX_FILE_BYTES
    from sci.spec.plain import plain_pipeline_doc

    if len(yaml_bytes) > MAX_FILE_BYTES:
        raise SpecError(f"sci.yaml is over sci's limit of {MAX_FILE_BYTES} bytes", location=Location("sci.yaml"),
                        hint="keep large data in deps or a params file, not in sci.yaml")
    try:
        text = yaml_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", location=Location("sci.yaml"),
                        hint="save sci.yaml as UTF-8") from None
    data, pos = load_yaml_text(text, "sci.yaml")
    doc = plain_pipeline_doc(data)  # a plainly valid file needs no pydantic import
    if doc is None:  # unusual or wrong: pydantic accepts it or words the error
        from sci.spec.model import validate_pipeline

        pipeline = validate_pipeline(data, pos)
        doc = pipeline.model_dump()
        doc["experiment"] = pipeline.experiment.model_dump(exclude_none=True) if pipeline.experiment else None
    journal.write(cache, PIPELINE_CACHE_FORMAT, [pickle.dumps((key, doc, pos), protocol=pickle.HIGHEST_PROTOCOL)])
    return doc, pos


def _parse(ws: Workspace, overrides: list[str], yaml_bytes: bytes, seed: int | None = None,
           previous: Loaded | None = None) -> tuple[Loaded, bool]:
    """Plan from scratch; or, when `previous` was planned from the same sci.yaml and hardware
    and only parameters differ, patch it (replan.py). The flag says which."""
    import pickle

    from sci.spec import params as params_mod
    from sci.determinism import derive_seed
    from sci.plan.graph import build_graph, check_code
    from sci.plan.nodes import expand, owned_files, param_reads, render_commands
    from sci.plan.replan import ReadIndex
    from sci.build.resources import load_hardware

    if not yaml_bytes and not ws.pipeline_file.exists():
        from sci.errors import SpecError

        raise SpecError("sci.yaml not found", hint="create it (see docs/format.md)")
    structure = structure_key(ws, seed, yaml_bytes)
    if previous is not None and previous.structure_key == structure and previous.step_docs is not None:
        from sci.plan import replan

        known = (previous.params_text, previous.params) if previous.params_text is not None and not overrides else None
        read = params_mod.load(ws.root, previous.doc_head["params"], previous.pos, known)
        try:
            patched = replan.patch(previous, params_mod.apply_overrides(read.data, overrides),
                                   derive_seed=derive_seed, changed=read.changed)
        except ValueError:  # a value no key can hold (inf, nan): planning whole names it below
            patched = None
        if patched is not None:
            patched.ws = ws
            patched.params_text = None if overrides else read.text
            return patched, True
    doc, pos = _pipeline_doc(ws, yaml_bytes)
    if seed is not None:  # `repro-check --seed N`: replay under another root seed
        doc = dict(doc, defaults=dict(doc["defaults"], seed=seed))
    read = params_mod.load(ws.root, doc["params"], pos)
    params = params_mod.apply_overrides(read.data, overrides)
    store_cfg = doc["store"]
    _check_paths(ws, doc, pos)
    reserved = ws.owned(store_cfg)
    nodes = expand(doc, params, pos, reserved=reserved, derive_seed=derive_seed, owned=owned_files(doc["params"]))
    if ws.scope is not None:  # repro-check: the targets' closure only (Workspace.scope)
        nodes = scoped_nodes(nodes, ws, pos, reserved)
    graph = build_graph(nodes, ws.root, pos, reserved=reserved)
    check_code(nodes, ws.root, pos)
    if doc.get("environments"):
        from sci.envs.declared import check as check_environments

        check_environments(doc["environments"], nodes, pos, reserved)
    render_commands(list(graph.nodes.values()), params, pos)
    params_json = params_mod.to_json(params, read, pos, overrides)
    return Loaded(
        ws=ws, graph=graph, pos=pos, params=params, params_digest=digest_bytes(params_json), params_json=params_json,
        pipeline_digest=yaml_digest(yaml_bytes),
        experiment=doc["experiment"],
        env_spec=dict(doc["env"], environments=doc.get("environments") or {}),
        root_seed=doc["defaults"]["seed"], determinism=doc["defaults"]["determinism"],
        store_config=store_cfg,
        remotes={k: (v if isinstance(v, str) else {a: b for a, b in v.items() if b is not None})
                 for k, v in (doc["remotes"] or {}).items()},
        hardware=load_hardware(ws.root),
        reserved=reserved, reads=ReadIndex({name: param_reads(step) for name, step in doc["steps"].items()}),
        structure_key=structure, doc_head={"defaults": doc["defaults"], "params": doc["params"]},
        step_docs={name: pickle.dumps(step, protocol=pickle.HIGHEST_PROTOCOL) for name, step in doc["steps"].items()},
        params_text=None if overrides else read.text,
    ), False


def scoped_nodes(nodes: list, ws: Workspace, pos: Positions, reserved: tuple[str, ...]) -> list:
    """The nodes of `ws.scope`'s closure. Inputs missing outside it are no error (SPEC §7:
    repro-check needs only the closure's sources); the closure's first missing input, in
    build order, is the error it would be in a full plan."""
    from sci.errors import GraphError
    from sci.plan.graph import build_graph

    missing: dict[str, GraphError] = {}
    full = build_graph(nodes, ws.root, pos, reserved=reserved, missing=missing)
    keep = full.closure(full.requested(sorted(ws.scope or ()), ws.root))
    for name in full.order:
        if name in keep and name in missing:
            raise missing[name]
    return [n for n in nodes if n.name in keep]


def _check_paths(ws: Workspace, doc: dict, pos: Positions) -> None:
    """The paths of sci.yaml that are not a step's: env.files stay inside the workspace (SPEC §2),
    and the store (which may be shared, and so outside) is a directory, or not there yet."""
    from sci.errors import SpecError, UserError
    from sci.workspace import escape_problem

    for i, rel in enumerate(doc["env"]["files"]):
        problem = escape_problem(rel)
        if problem:
            raise SpecError(f"env.files: {rel!r} {problem}", location=pos.at(("env", "files", i)),
                            hint="list files inside the workspace, relative to it")
    root = ws.store_root(doc["store"])
    if os.path.lexists(root) and not root.is_dir():
        if os.environ.get("SCI_CAS"):
            raise UserError(f"SCI_CAS names {root}, which is not a directory",
                            hint="point SCI_CAS at a store directory (created if missing)")
        raise SpecError(f"the store {root} is not a directory", location=pos.at(("store",)) if doc["store"] else None,
                        hint="name a directory (created if missing) under store:, or leave it out for cas/")


def plan_key(ws: Workspace, overrides: list[str], seed: int | None, yaml_bytes: bytes | None = None) -> str:
    """Digest of everything a plan is a function of, besides the filesystem: the bytes of
    sci.yaml, the params file and config/hardware.yaml, the overrides, the store location,
    the seed override and sci's version."""
    yaml_bytes = read_bytes(ws.pipeline_file) if yaml_bytes is None else yaml_bytes
    params_path = _params_path(ws, yaml_bytes)
    params = read_bytes(params_path) if params_path else b""
    return digest_bytes(b"\0sci\0".join([structure_key(ws, seed, yaml_bytes).encode(), params,
                                          "\0".join(overrides).encode()]))


def structure_key(ws: Workspace, seed: int | None, yaml_bytes: bytes) -> str:
    """The part of plan_key that is not parameters: what a plan patched after a params edit
    (replan.py) must share with the plan it patches."""
    parts = [sci.__version__.encode(), str(PLAN_CACHE_FORMAT).encode(), yaml_digest(yaml_bytes).encode(),
             read_bytes(ws.root / "config" / "hardware.yaml"), os.environ.get("SCI_CAS", "").encode(),
             str(seed).encode()]
    if ws.scope is not None:  # a scoped plan (repro-check's scratch) is another plan
        parts.append("\0".join(sorted(ws.scope)).encode())
    return digest_bytes(b"\0sci\0".join(parts))


_YAML_DIGEST: tuple[bytes | None, str] = (None, "")


def yaml_digest(yaml_bytes: bytes) -> str:
    """BLAKE3 of sci.yaml's bytes, computed once for the bytes a build read: the plan key, the
    structure key and the pipeline digest all need it (~1 ms each for a 10,000-step file)."""
    global _YAML_DIGEST
    cached = _YAML_DIGEST  # one read: another thread may replace it meanwhile
    if cached[0] is yaml_bytes:
        return cached[1]
    digest = digest_bytes(yaml_bytes)
    _YAML_DIGEST = (yaml_bytes, digest)
    return digest


def load(ws: Workspace, overrides: list[str] | None = None, *, seed: int | None = None,
         yaml_bytes: bytes | None = None, cache_key: str | None = None) -> Loaded:
    """Parse and plan the pipeline, reusing `.sci/plan.pickle` when its inputs are unchanged.

    The cache is keyed by the bytes of sci.yaml, the params file, config/hardware.yaml, the
    overrides and sci's version; glob matches over workspace files and source deps are
    re-checked on every load, since they depend on the filesystem, not on those bytes.
    """
    overrides = list(overrides or [])
    if yaml_bytes is None or cache_key is None:  # a build passes the ones it read once
        yaml_bytes = read_bytes(ws.pipeline_file)
        cache_key = plan_key(ws, overrides, seed, yaml_bytes)
    cache_file = ws.state_dir / PLAN_CACHE
    from sci.plan import cache as plan_cache

    previous = None
    cached = plan_cache.read(cache_file, cache_key)
    if cached is not None:
        stored_key, previous = cached
        previous.ws = ws
        valid = _still_valid(previous)
        if stored_key == cache_key and valid:
            return previous
        if not valid:  # globs or sources moved: a patch could not be trusted either
            previous = None
    loaded, patched = _parse(ws, overrides, yaml_bytes, seed, previous)
    if not patched:  # a patched plan is as quick to make again as to load: keep the one it came from
        plan_cache.write(cache_file, cache_key, loaded)
    return loaded


def _params_path(ws: Workspace, yaml_bytes: bytes) -> Path | None:
    """Find `params: FILE` cheaply (without parsing YAML) so the plan cache key can include it:
    the first top-level `params:` line naming a file, found by a search, not a split of sci.yaml."""
    import re

    for match in re.finditer(rb"^params:(.*)$", yaml_bytes, re.M):
        value = match[1].decode("utf-8", "replace").split("#", 1)[0].strip().strip("'\"")
        if value and not value.startswith("{"):
            from sci.workspace import escape_problem

            return None if escape_problem(value) else ws.root / value
    return None


def _still_valid(loaded: Loaded) -> bool:
    import glob as glob_mod

    root = loaded.ws.root
    for pattern, matches in loaded.graph.globs.items():
        found = sorted(m for m in glob_mod.glob(pattern, root_dir=root, recursive=True)
                       if not owns(m, loaded.reserved))
        if found != matches:
            return False
    prefix = f"{root}/"
    for path in loaded.graph.source_paths:
        if not os.path.exists(prefix + path):
            return False  # re-plan, so the missing dep is reported with its location
    for path in loaded.graph.code_paths:
        if not os.path.exists(prefix + path):
            return False
    return True


# -- environment ---------------------------------------------------------------------------
def environment_records(loaded: Loaded, stat_cache: StatCache, nodes, envs=None) -> dict[str, dict]:
    """The fingerprint records (envs/runtime.py names their keys): "cpu", the workspace's own
    environment; "gpu" when one of `nodes` needs a GPU; "env:NAME" for every declared
    environment, and "env:NAME+gpu" for one a GPU node of `nodes` runs in. `envs`: the
    build's envs.runtime.Environments (one is made when not given)."""
    from sci.build import fingerprint

    spec = loaded.env_spec
    comps = fingerprint.environment(loaded.ws.root, spec["files"], spec["vars"], spec["tools"],
                                    stat_cache=stat_cache, cache_dir=loaded.ws.state_dir / "cache")
    out = {"cpu": {"digest": fingerprint.digest(comps), "components": comps}}
    if spec.get("environments"):
        if envs is None:
            envs = environments_of(loaded, stat_cache)
        out.update(envs.records())
    gpu_nodes = [n for n in nodes if n.needs_gpu]
    if gpu_nodes:
        gpu = _gpu_components(loaded.hardware)
        for key in sorted({"cpu" if n.environment is None else f"env:{n.environment}" for n in gpu_nodes}):
            base = out[key]
            gcomps = dict(base["components"], gpu=gpu)
            record = {"digest": fingerprint.digest(gcomps), "components": gcomps}
            if "name" in base:
                record["name"] = base["name"]
            out["gpu" if key == "cpu" else f"{key}+gpu"] = record
    return out


def environments_of(loaded: Loaded, stat_cache: StatCache):
    """The declared environments of `loaded`, resolved and prepared on first need."""
    from sci.envs.runtime import Environments

    return Environments(loaded.ws.root, loaded.ws.state_dir, loaded.env_spec, stat_cache)


def _gpu_components(hw: Hardware) -> dict:
    """The GPU part of the fingerprint: detected, or as declared in config/hardware.yaml.

    A machine whose hardware.yaml declares GPUs that no driver reports (a test rig, a
    container without nvidia-smi) is taken at its word for scheduling; the fingerprint then
    says the GPUs were declared, not detected, so results never pass for detected-GPU ones.
    """
    from sci.build import fingerprint
    from sci.errors import SciError as _SciError

    try:
        return fingerprint.gpu_components()
    except _SciError:
        if hw.gpus and hw.source != "detected":
            return {"model": [g.name or "declared" for g in hw.gpus], "driver": "undetected",
                    "cuda": "undetected", "declared_in": hw.source}
        raise



def store_of(loaded: Loaded, override: Path | None = None):
    from sci.store.cas import Store

    return Store(override or loaded.ws.store_root(loaded.store_config))


