"""Pydantic models of sci's persistent records, and the JSON Schemas generated from them.

The engine writes records as plain dicts in canonical JSON (it is faster and keeps pydantic
off the start-up path); these models are the contract those dicts must meet. They are used
to generate the published schemas (`sci schema`, docs/schemas/) and to validate records in
tests. Field names here are the record field names, exactly. Every model forbids extra
fields, so a record that grows a field without its model (and schema) changing is caught.

Import this module lazily (inside a function): it imports pydantic at top level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from sci.determinism import Mode
from sci.records.run import DOSSIER_FORMAT, NodeStatus

# Bump with the record formats the engine writes (records.RECORD_FORMAT); the schemas pin it
# as a constant, so regenerating docs/schemas/ is part of any format change.
RECORD_FORMAT = 1
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_HEX64 = r"^[0-9a-f]{64}$"
_ORCID = r"^[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{3}[0-9X]$"
Digest = Annotated[str, Field(pattern=_HEX64, description="A BLAKE3 digest, 64 lowercase hex digits.")]
# A metric is a number (SPEC §11): bool first, so JSON true stays a bool and is not read as 1.
Metrics = dict[str, StrictBool | StrictInt | StrictFloat]


def _check_orcid(value: str | None) -> str | None:
    """An ORCID iD's last character is an ISO 7064 MOD 11-2 check digit: a typo fails here."""
    if value is None:
        return value
    digits = value.replace("-", "")
    total = 0
    for ch in digits[:-1]:
        total = (total + int(ch)) * 2
    check = (12 - total % 11) % 11
    expected = "X" if check == 10 else str(check)
    if digits[-1] != expected:
        raise ValueError(f"ORCID iD {value} has a wrong check digit (expected {expected})")
    return value


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The enums the engine itself uses, so a record and its schema can never disagree on a value.
Determinism = Mode


class Author(_Record):
    """One author of an experiment, as written in sci.yaml."""

    name: str = Field(min_length=1, description="Full name as it should be cited, e.g. 'Ada Lovelace'.")
    orcid: Annotated[str, Field(pattern=_ORCID), AfterValidator(_check_orcid)] | None = Field(
        default=None,
        description="ORCID iD without the resolver, e.g. '0000-0002-1825-0097'; its check digit is verified.")
    affiliation: str | None = Field(default=None, min_length=1, description="Institution or company.")
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]{2,}$",
                              description="Contact e-mail address.")


class ExperimentRequest(_Record):
    """The `experiment:` block of sci.yaml: what is investigated, by whom, under which license."""

    title: str = Field(min_length=1, description="Title of the investigation, as it should be cited.")
    question: str = Field(min_length=1, description="The scientific question the pipeline answers.")
    authors: list[Author] = Field(min_length=1, description="Authors, in citation order.")
    license: str = Field(
        pattern=r"^[A-Za-z0-9.+-]+(?: (?:AND|OR|WITH) [A-Za-z0-9.+-]+)*$",
        description="SPDX license identifier or simple expression of the results, e.g. 'CC-BY-4.0'.",
    )
    keywords: list[str] = Field(default_factory=list, description="Subject keywords, in the author's order.")
    description: str | None = Field(default=None, description="Longer free-text description (optional).")
    url: str | None = Field(default=None, pattern=r"^(https?|ftp|sftp)://\S+$",
                            description="Where the experiment lives, e.g. its repository (optional).")
    doi: str | None = Field(default=None, pattern=r"^10\.[0-9]{4,9}(\.[0-9]+)?/\S+$",
                            description="DOI of the experiment or its publication, without resolver (optional).")


class OutputEntry(_Record):
    """One declared output of a node after it ran: a file (blob) or a directory (tree)."""

    path: str = Field(description="Workspace-relative POSIX path the output is materialized at.")
    type: Literal["file", "tree"] = Field(description="'file' for a blob, 'tree' for a directory.")
    digest: Digest = Field(description="BLAKE3 of the file, or of the tree's canonical listing.")
    size: int = Field(ge=0, description="Bytes of the file, or of all files in the tree.")


class KeyComponents(_Record):
    """The pre-image of a node's cache key, kept so a changed key can be explained."""

    format: int = Field(ge=1, description="Key-format version (sci.KEY_FORMAT).")
    definition: dict[str, Any] = Field(
        description="The node's normalized definition: rendered command or function reference, "
                    "output names and paths, sandbox and determinism mode, passed env var values.")
    deps: dict[str, Digest] = Field(description="Dep path -> content digest.")
    code: dict[str, Digest] = Field(description="Code file path -> content digest.")
    params: dict[str, Any] = Field(description="Declared dotted param key -> value.")
    environment: Digest = Field(description="Digest of the environment fingerprint.")
    seed: int = Field(description="The node's seed.")
    inputs: dict[str, Digest] | None = Field(
        default=None, description="Extra inputs by digest: the dossier step's input document ('dossier_input').")


class StepVolatile(_Record):
    """What differs between two identical executions of a node: never compared, never hashed."""

    start: str = Field(description="When the step started, ISO 8601 UTC, e.g. '2026-11-22T10:00:00.123456Z'.")
    end: str = Field(description="When the step ended, ISO 8601 UTC.")
    duration_s: float = Field(ge=0, description="Wall-clock seconds the step ran.")
    host: str = Field(description="Host name of the machine that ran the step.")
    executor: str = Field(description="Executor that ran the step, e.g. 'local' or 'ray'.")


class EnvironmentFingerprint(_Record):
    """The environment fingerprint, each component separately so a change can be named."""

    components: dict[str, Any] = Field(description="Component name -> value (versions, digests, ...).")
    digest: Digest = Field(description="BLAKE3 of the canonical components.")
    name: Optional[str] = Field(None, description="The declared software environment (environments: in sci.yaml) "
                                                  "the node ran in; absent for the workspace's own.")


class StepRecord(_Record):
    """A StepResult without its volatile part: what a Dossier lists for each node."""

    format: Literal[RECORD_FORMAT] = Field(description="Record format version.")
    type: Literal["sci.step_result"] = Field(description="Record type tag.")
    key: Digest = Field(description="The node's cache key (BLAKE3 of the canonical key components).")
    node: str = Field(min_length=1, description="Node name, e.g. 'simulate[noise=0.05]'.")
    step: str = Field(min_length=1, description="Name of the step the node expands from.")
    components: KeyComponents = Field(description="The key's pre-image components.")
    outputs: dict[str, OutputEntry] = Field(description="Output name -> what it is.")
    exit_status: int = Field(description="Process exit status (0 on success).")
    seed: int = Field(description="The seed the node ran with.")
    determinism: Determinism = Field(description="'strict', or 'fast' when declared nondeterministic.")
    stdout: Digest = Field(description="Digest of the captured standard output (a blob).")
    stderr: Digest = Field(description="Digest of the captured standard error (a blob).")
    metrics: Metrics = Field(description="The step's metrics: name -> number (int, float or bool), from its "
                                         "metrics: files (nested keys joined with '.') and, for a Python step, "
                                         "ctx.metrics.")
    environment: EnvironmentFingerprint = Field(
        description="The environment fingerprint the node ran in, component by component (its digest is in the key).")


class StepResult(StepRecord):
    """An action result: the CAS's record of one executed node, stored under its key."""

    volatile: StepVolatile = Field(description="Timestamps, host and executor: excluded from comparisons.")


class PlanEntry(_Record):
    """One node of a run's plan and what became of it."""

    node: str = Field(min_length=1, description="Node name.")
    step: str = Field(min_length=1, description="Step name.")
    key: Digest | None = Field(description="The node's key; null when it could not be computed "
                                           "(an upstream node failed).")
    status: NodeStatus = Field(description="cached | executed | failed | skipped.")
    outputs: dict[str, OutputEntry] = Field(description="Output name -> record; empty unless the node succeeded.")
    determinism: Optional[Literal["fast"]] = Field(
        default=None, description="\"fast\" for a node declared nondeterministic (SPEC §5); absent for strict.")
    metrics: Metrics = Field(default_factory=dict,
                             description="The node's metrics, as in its StepResult; absent when it has none.")


class RunVolatile(_Record):
    """The parts of a manifest that differ between two runs of the same command."""

    run_id: str = Field(description="The run's id (its folder under runs/); sorts by time.")
    started: str = Field(description="When the run started, ISO 8601 UTC.")
    finished: str = Field(description="When the run finished, ISO 8601 UTC.")
    duration_s: float = Field(ge=0, description="Wall-clock seconds of the whole run.")
    host: str = Field(description="Host name of the machine that ran sci.")
    executor: str = Field(description="Executor used, e.g. 'local' or 'ray'.")
    durations: dict[str, float] = Field(description="Node -> seconds it ran (executed nodes only).")
    python_executable: str = Field(description="The Python interpreter that ran sci.")


class RunManifest(_Record):
    """runs/<run_id>/manifest.json: what one invocation planned and what happened."""

    format: Literal[RECORD_FORMAT] = Field(description="Record format version.")
    type: Literal["sci.run_manifest"] = Field(description="Record type tag.")
    kind: Literal["build", "repro-check"] = Field(description="What the run did: a build, or a repro-check's rebuild.")
    sci_version: str = Field(description="Version of sci that wrote the manifest.")
    git_commit: str | None = Field(description="HEAD commit of the workspace's git repository, or null.")
    pipeline_digest: Digest = Field(description="BLAKE3 of sci.yaml.")
    params_digest: Digest = Field(description="BLAKE3 of the canonical parameters in effect.")
    environment: EnvironmentFingerprint = Field(description="The environment fingerprint.")
    determinism: Determinism = Field(description="Default determinism mode of the pipeline.")
    root_seed: int = Field(description="The root seed node seeds are derived from.")
    command: list[str] = Field(description="The command line, argv[1:] of sci.")
    targets: list[str] = Field(description="The targets asked for (empty: every node).")
    plan: list[PlanEntry] = Field(description="Every planned node, in plan order.")
    params: dict[str, Any] | None = Field(
        default=None, description="The parameters in effect, --set overrides applied (values of secret-looking "
                                  "keys redacted); what `sci diff` compares.")
    environments: dict[str, EnvironmentFingerprint] | None = Field(
        default=None, description="The declared software environments (environments: in sci.yaml), by name: "
                                  "each one's fingerprint, its identity included; absent when none is declared.")
    volatile: RunVolatile = Field(description="Run id, times, host, executor, durations.")


class EvidenceEntry(_Record):
    """One evidence file shown inline in the dossier page."""

    path: str = Field(description="Workspace-relative POSIX path.")
    digest: Digest = Field(description="BLAKE3 of the file's bytes.")
    size: int = Field(ge=0, description="Size in bytes.")
    media_type: str = Field(pattern=r"^[a-z]+/[a-z0-9.+-]+$",
                            description="IANA media type, e.g. 'image/png', 'text/csv'.")


class LineageInput(_Record):
    """One edge of a lineage graph: a file a node read, and the node that wrote it."""

    node: str = Field(description="The node that read the file.")
    path: str = Field(description="Workspace-relative path of the file (or directory).")
    digest: Digest = Field(description="BLAKE3 of its content as the node read it.")
    producer: str | None = Field(description="The node that wrote it; null for a workspace source.")


class UpstreamFile(_Record):
    """A file written by a node outside the dossier's `steps:`: not a source, its producer named."""

    node: str = Field(description="The node that wrote it.")
    digest: Digest = Field(description="BLAKE3 of its content.")


class Lineage(_Record):
    """How one evidence file came to be: a graph back to workspace sources."""

    producer: str | None = Field(description="The indexed node that wrote the file; null when it is a source "
                                             "or written by a node outside the dossier's steps.")
    nodes: list[str] = Field(description="Every indexed node the file transitively comes from (its producer "
                                         "included), upstream first, ties in declaration order.")
    inputs: list[LineageInput] = Field(description="The graph's edges: each file each of those nodes read.")
    code: dict[str, Digest] = Field(description="Code file path -> digest, over all those nodes.")
    params: dict[str, Any] = Field(description="Param key -> value, over all those nodes.")
    seeds: dict[str, int] = Field(description="Node -> seed.")
    sources: dict[str, Digest] = Field(description="Workspace source file (a dep no node produces) -> digest.")
    upstream: dict[str, UpstreamFile] = Field(description="File written by a node outside the dossier's steps "
                                                          "-> that node and the digest.")


class CheckRef(_Record):
    """A `sci repro-check` run cited by a dossier."""

    run_id: str = Field(description="The check's run id (runs/<run_id>/repro.json).")
    checked_at: str = Field(description="When the check started (ISO 8601 UTC).")
    target: str = Field(description="The target the check was run on.")
    environment: Digest | None = Field(description="Environment fingerprint digest of the check's rebuild.")


class ReproducedCheck(CheckRef):
    nodes: int = Field(ge=0, description="Nodes the check matched bit for bit.")
    nondeterministic: list[str] = Field(description="Nodes declared nondeterministic: rebuilt, not compared.")


class MismatchCheck(CheckRef):
    nodes: list[str] = Field(description="Nodes whose outputs did not reproduce in that check.")


class NodeCheck(_Record):
    status: str = Field(description="The node's verdict in that check (match, mismatch, env-drift, "
                                    "nondeterministic-declared).")
    run_id: str = Field(description="The earliest check of this node's current key.")


class Reproduction(_Record):
    """What repro-check records say about the indexed nodes' current keys (evidence/claims.py)."""

    state: Literal["reproduced", "mismatch", "partly-checked", "not-checked"] = Field(
        description="reproduced: one check matched every indexed node and none found a difference; mismatch: "
                    "a check found one not reproducing; partly-checked: some nodes matched; not-checked.")
    check: ReproducedCheck | None = Field(description="The earliest check that matched every indexed node.")
    mismatch: MismatchCheck | None = Field(description="The earliest check that found a node not reproducing.")
    nodes: dict[str, NodeCheck] = Field(description="Node -> the earliest check of its current key.")


class SweepNode(_Record):
    """One node of a sweep and its `foreach` item."""

    node: str = Field(min_length=1, description="Node name, e.g. 'fit[noise=0.05]'.")
    item: dict[str, Any] = Field(description="The node's foreach values, key -> value as written in sci.yaml.")


class Sweep(_Record):
    """A `foreach` step among the indexed ones: what the page plots its metrics against."""

    step: str = Field(min_length=1, description="The step's name.")
    keys: list[str] = Field(min_length=1, description="Its foreach keys, in declaration order.")
    nodes: list[SweepNode] = Field(description="Its recorded nodes, in declaration order (never string order).")


class Citation(_Record):
    """Citation metadata of a dossier; no dates, so the dossier's bytes stay pure."""

    title: str = Field(min_length=1, description="Title to cite (the experiment's).")
    authors: list[Author] = Field(min_length=1, description="Authors to cite (the experiment's).")
    license: str = Field(description="SPDX license identifier or expression.")
    version: Digest = Field(description="BLAKE3 of the canonical dossier JSON with this field removed "
                                        "(see sci.evidence.citation.dossier_version).")
    keywords: list[str] = Field(description="Subject keywords.")


class WorkflowFile(_Record):
    """The pipeline file as the dossier was built from it (a copy sits beside dossier.json)."""

    path: str = Field(description="Its path in the workspace, sci.yaml.")
    copied_as: str = Field(description="The copy's name in the dossier directory (not sci.yaml, which would make "
                                  "the directory look like a workspace).")
    digest: Digest = Field(description="BLAKE3 of its bytes.")
    size: int = Field(ge=0, description="Size in bytes.")


class Dossier(_Record):
    """dossier/dossier.json: the auditable record an investigation is judged by."""

    format: Literal[DOSSIER_FORMAT] = Field(description="Record format version.")
    type: Literal["sci.dossier"] = Field(description="Record type tag.")
    experiment: ExperimentRequest = Field(description="What is investigated and by whom.")
    workflow: WorkflowFile = Field(description="The pipeline file, copied into the dossier directory.")
    nodes: list[StepRecord] = Field(description="Every indexed node's StepResult without volatile fields.")
    sweeps: list[Sweep] = Field(default_factory=list,
                                description="The indexed foreach steps and their nodes' items (the page plots "
                                            "each metric against each swept key).")
    edges: list[tuple[str, str]] = Field(description="[upstream node, downstream node] pairs among the nodes.")
    evidence: list[EvidenceEntry] = Field(description="Files shown inline in the page, in declared order.")
    lineage: dict[str, Lineage] = Field(description="Evidence path -> its lineage.")
    environment: EnvironmentFingerprint = Field(description="The environment fingerprint of the build.")
    reproduction: Reproduction = Field(description="What repro-check records prove (not part of the version "
                                                   "digest: a later check changes the claim, not the dossier).")
    citation: Citation = Field(description="How to cite this dossier.")
    reproduce: list[str] = Field(description="Shell commands that rebuild and check the dossier.")


MODELS: dict[str, type[BaseModel]] = {
    "ExperimentRequest": ExperimentRequest,
    "StepResult": StepResult,
    "RunManifest": RunManifest,
    "Dossier": Dossier,
}


def schemas() -> dict[str, dict]:
    """Name -> JSON Schema (draft 2020-12) of every published record model."""
    out: dict[str, dict] = {}
    for name, model in MODELS.items():
        schema = model.model_json_schema(mode="validation")
        out[name] = {"$schema": SCHEMA_DIALECT, **schema}
    return out


def schema_text(schema: dict) -> str:
    """The one text form of a schema file: sorted keys, 2-space indent, UTF-8, final newline.

    Sorted keys make the file a pure function of the models, so a stale committed schema
    shows up as a plain text difference.
    """
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(out_dir: Path) -> list[Path]:
    """Write <Name>.schema.json for every model into `out_dir`; return the paths, sorted.

    A file whose text is already right is left untouched (its mtime too).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in sorted(schemas().items()):
        path = out_dir / f"{name}.schema.json"
        text = schema_text(schema)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        written.append(path)
    return written
