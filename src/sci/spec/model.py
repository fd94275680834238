"""The sci.yaml (version 1) model: pydantic models, and their errors mapped to file:line:col."""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sci import canonical
from sci.errors import Location, SpecError
from sci.spec.load import Positions
from sci.spec.placeholders import FIELDS as PLACEHOLDER_FIELDS
from sci.spec.placeholders import foreach_param
from sci.spec.placeholders import lone_brace, lone_brace_error, step_values

SPEC_VERSION = 1
STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Author(_Strict):
    name: str = Field(description="Full name as it should appear in a citation.")
    orcid: Optional[str] = Field(None, description="ORCID iD, e.g. 0000-0002-1825-0097.")
    affiliation: Optional[str] = Field(None, description="Institution or company.")
    email: Optional[str] = Field(None, description="Contact address.")

    @field_validator("orcid", mode="before")
    @classmethod
    def _orcid_text(cls, v: Any) -> Any:
        return None if v is None else str(v)


class Experiment(_Strict):
    """The ExperimentRequest: what is investigated, by whom, under which license."""

    title: str = Field(description="One-line title of the investigation.")
    question: str = Field(description="The scientific question the pipeline answers.")
    authors: list[Author] = Field(default_factory=list, description="Authors, in citation order.")
    license: Optional[str] = Field(None, description="SPDX license of the results, e.g. CC-BY-4.0.")
    keywords: list[str] = Field(default_factory=list, description="Free keywords.")
    description: Optional[str] = Field(None, description="A longer abstract.")
    url: Optional[str] = Field(None, description="Where the investigation lives.")
    doi: Optional[str] = Field(None, description="DOI of the investigation, if it has one.")


class Resources(_Strict):
    cpu: Optional[int] = Field(None, ge=0, description="CPU cores (default 1).")
    mem_gb: Optional[float] = Field(None, ge=0, description="Memory in GB.")
    gpu: Optional[int] = Field(None, ge=0, description="Number of GPUs (default 0).")
    vram_gb: Optional[float] = Field(None, ge=0, description="GPU memory needed on each GPU, in GB.")


class Defaults(_Strict):
    seed: int = Field(0, description="Root seed; each node's seed derives from it and the node name.")
    determinism: Literal["strict", "fast"] = Field("strict", description="Default determinism mode.")
    resources: Resources = Field(default_factory=Resources, description="Default resources of a step.")
    environment: Optional[str] = Field(None, description="The software environment of a step that names none "
                                                         "(default: the workspace's own, the caller's PATH).")


class Environment(_Strict):
    """One entry of `environments:` (SPEC §10): exactly one of python, script, container."""

    python: Optional[str] = Field(None, description="A uv project directory (pyproject.toml + uv.lock), synced frozen.")
    script: Optional[str] = Field(None, description="A PEP 723 script: its inline metadata (and its .lock) make the environment.")
    container: Optional[str] = Field(None, description="A container image, by digest (IMAGE@sha256:...).")
    groups: list[str] = Field(default_factory=list, description="uv project: dependency groups to include (dev only if named).")
    extras: list[str] = Field(default_factory=list, description="uv project: optional extras to include.")

    @model_validator(mode="after")
    def _one_kind(self) -> "Environment":
        given = [k for k in ("python", "script", "container") if getattr(self, k) is not None]
        if len(given) != 1:
            if not given:
                raise ValueError("an environment needs exactly one of python (a uv project directory), "
                                 "script (a PEP 723 script) or container (an image by digest)")
            raise ValueError(f"an environment takes exactly one of python, script or container, not {' and '.join(given)}")
        if (self.groups or self.extras) and self.python is None:
            raise ValueError("groups and extras belong to a uv project environment (python:)")
        return self


class EnvSpec(_Strict):
    files: list[str] = Field(default_factory=list, description="Files whose content is fingerprinted (e.g. uv.lock).")
    vars: list[str] = Field(default_factory=list, description="Environment variables whose values are fingerprinted.")
    tools: list[str] = Field(default_factory=list, description="Executables on PATH whose digest and --version are fingerprinted.")


class RemoteSpec(_Strict):
    url: str = Field(description="Remote store URL: a directory, s3://, gs://, http(s)://.")
    endpoint_url: Optional[str] = Field(None, description="S3-compatible endpoint.")
    region: Optional[str] = Field(None, description="S3 region, where the server needs one.")


class SlurmSpec(_Strict):
    """`executors: {slurm: …}`: how `sci build --executor slurm` submits jobs (SPEC §12). None of it
    enters a key or a record: it says where nodes run, not what they compute."""

    partition: Optional[str] = Field(None, description="Partition(s) to submit to, comma-separated (default: the cluster's default).")
    account: Optional[str] = Field(None, description="Account to charge (sbatch --account).")
    qos: Optional[str] = Field(None, description="Quality of service (sbatch --qos).")
    time: Optional[Union[int, str]] = Field(None, description="Time limit of each job: minutes, or SLURM's form (2:00:00, 1-12:00:00).")
    setup: list[str] = Field(default_factory=list, description="Shell lines each job runs before its node, e.g. module load cuda/12.2.")
    options: list[str] = Field(default_factory=list, description="Extra sbatch options, one per item, e.g. --constraint=avx2.")
    arrays: bool = Field(True, description="Submit the nodes of one step that are ready together as one job array.")
    poll_s: Optional[float] = Field(None, gt=0, description="Seconds between two queue queries (default 2).")


class Executors(_Strict):
    slurm: Optional[SlurmSpec] = Field(None, description="Settings of --executor slurm.")


PathMap = Union[list[str], dict[str, str]]


class Step(_Strict):
    """One entry of `steps:`; becomes one node, or one per `foreach` combination."""

    cmd: Optional[str] = Field(None, description="Shell command with placeholders.")
    fn: Optional[str] = Field(None, description="Python step as module:function.")
    kind: Optional[Literal["dossier"]] = Field(None, description="Built-in step kind.")
    deps: Optional[PathMap] = Field(None, description="Input files, directories or globs.")
    outs: Optional[PathMap] = Field(None, description="Files or directories the step must produce.")
    metrics: Optional[PathMap] = Field(
        None, description="Files the step writes whose numbers are its metrics: JSON or YAML mappings (nested "
                          "keys joined with '.') or CSV with a header and one row. They are outputs too.")
    code: list[str] = Field(default_factory=list, description="Files, directories or globs counted as the step's code.")
    params: list[str] = Field(default_factory=list, description="Dotted parameter keys whose values enter the key.")
    seed: Optional[int] = Field(None, description="Explicit seed (else derived).")
    resources: Resources = Field(default_factory=Resources, description="Resources the step needs.")
    determinism: Optional[Literal["strict", "fast"]] = Field(None, description="strict or fast.")
    foreach: Optional[dict[str, Union[list[Any], str]]] = Field(
        None, description="name → list, or \"{params.KEY}\" naming a list in the parameters; one node per combination.")
    sandbox: bool = Field(True, description="Run in a scratch directory with only declared deps and code.")
    env: list[str] = Field(default_factory=list, description="Extra environment variables passed to the step.")
    steps: Optional[list[str]] = Field(None, description="kind: dossier — the steps it indexes.")
    evidence: list[str] = Field(default_factory=list, description="kind: dossier — files shown inline.")
    environment: Optional[str] = Field(None, description="The software environment the step runs in (a name under environments:).")

    @field_validator("foreach")
    @classmethod
    def _foreach_lists(cls, v: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        for name, items in (v or {}).items():
            if isinstance(items, str) and not foreach_param(items):
                raise ValueError(f"foreach {name}: give a list, or a list in the parameters as "
                                 f"\"{{params.KEY}}\", not {items!r}")
        return v

    @model_validator(mode="after")
    def _one_action(self) -> "Step":
        given = [k for k in ("cmd", "fn", "kind") if getattr(self, k) is not None]
        if len(given) != 1:
            if not given:
                raise ValueError("a step needs exactly one of cmd, fn or kind")
            raise ValueError(f"a step takes exactly one of cmd, fn or kind, not {' and '.join(given)}")
        if self.fn is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.fn):
            raise ValueError(f"fn must be module:function (e.g. rules.fit:fit), not {self.fn!r}")
        if self.kind is None and (self.steps is not None or self.evidence):
            raise ValueError("steps and evidence belong to kind: dossier steps")
        if self.kind is not None and self.metrics is not None:
            raise ValueError("a dossier step has no metrics: files; metrics belong to cmd and fn steps")
        for where, text in step_values({f: getattr(self, f) for f in PLACEHOLDER_FIELDS}):
            i = lone_brace(text)
            if i is not None:
                raise ValueError(f"lone {text[i]!r} in {where[0]}: it opens or closes no placeholder "
                                 "(write {{ or }} for a literal brace)")
        return self


class Pipeline(_Strict):
    """sci.yaml, version 1."""

    version: Literal[1] = Field(description="Format version of sci.yaml; this sci reads 1.")
    experiment: Optional[Experiment] = Field(None, description="The ExperimentRequest.")
    defaults: Defaults = Field(default_factory=Defaults, description="Defaults for every step.")
    env: EnvSpec = Field(default_factory=EnvSpec, description="What makes up the environment fingerprint.")
    environments: dict[str, Environment] = Field(default_factory=dict, description="Declared software environments, by name.")
    params: Union[str, dict[str, Any], None] = Field(None, description="A parameters file path or an inline mapping.")
    store: Optional[str] = Field(None, description="Store location (default cas/; SCI_CAS overrides).")
    remotes: dict[str, Union[str, RemoteSpec]] = Field(default_factory=dict, description="Named remote stores.")
    executors: Executors = Field(default_factory=Executors, description="Settings of the executors (where nodes run).")
    steps: dict[str, Step] = Field(description="The steps, by name.")

    @field_validator("version", mode="before")
    @classmethod
    def _integer_version(cls, v: Any) -> Any:
        if type(v) is not int:  # Literal[1] alone takes true and 1.0
            raise ValueError(f"version must be the integer {SPEC_VERSION}, not {_shown(v)}")
        return v

    @model_validator(mode="after")
    def _dossier_needs_experiment(self) -> "Pipeline":
        if any(s.kind == "dossier" for s in self.steps.values()):
            exp = self.experiment
            if exp is None or not exp.authors or not exp.license:
                missing = "experiment:" if exp is None else "experiment.authors" if not exp.authors else "experiment.license"
                raise ValueError(f"a dossier step needs {missing} (a dossier is cited: title, question, "
                                 "at least one author and a license)")
        return self

    @field_validator("steps")
    @classmethod
    def _names(cls, steps: dict[str, Step]) -> dict[str, Step]:
        for name in steps:
            if not STEP_NAME.match(name):
                raise ValueError(f"step name {name!r} must start with a letter or _ and hold only letters, digits, _ . -")
        return steps


def _shown(value: Any) -> str:
    """A value as YAML/JSON writes it (true, 1.0, "1"), for messages."""
    try:
        return canonical.dumps_text(value)
    except (TypeError, ValueError):
        return repr(value)


_MODELS_BY_FIELD = {"steps": Step, "experiment": Experiment, "defaults": Defaults, "env": EnvSpec,
                    "resources": Resources, "authors": Author, "remotes": RemoteSpec,
                    "executors": Executors, "slurm": SlurmSpec, "environments": Environment}


def _fields_at(loc: tuple) -> list[str]:
    """The valid keys of the mapping that holds the last element of `loc` (for did-you-mean)."""
    model: type[BaseModel] = Pipeline
    i = 0
    parts = list(loc[:-1])
    while i < len(parts):
        part = parts[i]
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            i += 1
            continue
        nxt = _MODELS_BY_FIELD.get(str(part))
        if nxt is None:
            return list(model.model_fields)
        model = nxt
        # steps.<name>, authors.<index> are containers: skip the container key
        if part in ("steps", "authors", "remotes", "environments") and i + 1 < len(parts):
            i += 1
        i += 1
    return list(model.model_fields)


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's union-branch markers (e.g. 'list[str]', 'str') from an error location."""
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "bool", "RemoteSpec", "Environment")) and p not in ("steps",)))


def spec_error_from_validation(exc: ValidationError, pos: Positions) -> SpecError:
    """The first pydantic error as one SpecError pointing into sci.yaml."""
    errors = exc.errors(include_url=False)
    # Prefer the most specific error: unknown keys and missing fields before union noise.
    errors.sort(key=lambda e: (e["type"] not in ("extra_forbidden", "missing", "value_error", "literal_error"), -len(e["loc"])))
    err = errors[0]
    loc = _clean_loc(tuple(err["loc"]))
    typ = err["type"]
    if typ == "extra_forbidden":
        bad = str(loc[-1])
        valid = _fields_at(loc)
        close = difflib.get_close_matches(bad, valid, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(valid)}"
        return SpecError(f"unknown key '{bad}'", location=pos.at(loc, key=True), hint=hint)
    if typ == "missing":
        return SpecError(f"missing required key '{loc[-1]}'", location=pos.at(loc[:-1], key=True),
                         hint=f"add '{loc[-1]}:' here")
    if typ == "literal_error" and loc and loc[-1] == "version":
        return SpecError(f"unknown sci.yaml version {err.get('input')!r}", location=pos.at(loc),
                         hint=f"this sci reads version: {SPEC_VERSION}")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    where = ".".join(str(p) for p in loc) or "sci.yaml"
    return SpecError(f"{where}: {msg}", location=pos.at(loc), hint=_hint_for(typ, loc))


def _hint_for(typ: str, loc: tuple) -> str:
    if typ.startswith("int") or typ.startswith("float"):
        return "give a number here"
    if typ in ("list_type", "dict_type"):
        return "see docs/format.md for the shape of this key"
    if loc and loc[-1] in ("cmd", "fn", "kind"):
        return "give exactly one of cmd:, fn: or kind: per step"
    return "see docs/format.md"


def validate_pipeline(data: Any, pos: Positions) -> Pipeline:
    if not isinstance(data, dict):
        raise SpecError("sci.yaml must be a mapping with version: and steps:", location=Location(pos.file, 1, 1),
                        hint="start from the example in docs/format.md")
    if "version" in data:
        version = data["version"]
        if type(version) is not int:  # a bool is not an int here, nor is 1.0
            raise SpecError(f"sci.yaml version must be the integer {SPEC_VERSION}, not {_shown(version)}",
                            location=pos.at(("version",)), hint=f"write version: {SPEC_VERSION}")
        if version != SPEC_VERSION:
            raise SpecError(f"unknown sci.yaml version {version!r}", location=pos.at(("version",)),
                            hint=f"this sci reads version: {SPEC_VERSION}")
    steps = data.get("steps")
    if isinstance(steps, dict):
        for name, body in steps.items():
            if isinstance(body, dict):
                given = [k for k in ("cmd", "fn", "kind") if body.get(k) is not None]
                fn = body.get("fn")
                if fn is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", str(fn)):
                    raise SpecError(f"step {name}: fn must be module:function (e.g. rules.fit:fit), not {fn!r}",
                                    location=pos.at(("steps", name, "fn")),
                                    hint="name a function in a workspace module, like rules.fit:fit")
                if len(given) > 1:
                    raise SpecError(f"step {name} takes exactly one of cmd, fn or kind, not {' and '.join(given)}",
                                    location=pos.at(("steps", name, given[1]), key=True),
                                    hint=f"remove '{given[1]}:' or split it into its own step")
                for where, text in step_values(body):
                    i = lone_brace(text)
                    if i is not None:
                        raise lone_brace_error(text, i, pos, ("steps", name) + where)
    try:
        return Pipeline.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(exc, pos) from None
