"""The SLURM executor: each node that must run is a batch job; the driver keeps every decision.

What crosses to a job: a task file (the `Task` as JSON, with the names but never the values of
the declared environment variables: the job inherits them from the driver, as `sbatch` exports
the submitting environment) in `.sci/slurm/<run id>/tasks/`, and a small worker,
`python -m sci.executors.slurm_worker`, that runs the node exactly as the local executor does
(`run_task`: the sandbox, the environment, the determinism policy), writes its outputs into the
shared store by path, and its `TaskResult` as JSON into `.sci/slurm/<run id>/results/`. Keys,
records and dossiers are made by the driver from that same `TaskResult`, so a SLURM build is
identical, digest for digest, to a local one; only `volatile` (host, executor) differs. The raw
SLURM output of each job (the worker's own messages, `module load` noise, slurmstepd's
"CANCELLED DUE TO TIME LIMIT") stays in `runs/<run id>/slurm/`, beside the submitted scripts;
the step's own stdout and stderr go into the store as for a local build.

Talking to SLURM goes through its command-line tools only (sbatch, squeue, scancel, scontrol,
and sacct where accounting is on): they are the interface that stays stable across versions.
One thread submits and watches: submissions that arrive together are grouped, by step and
resources, into job arrays; results are picked up from the results directory as they appear
(a directory listing, not a scheduler query); and one `squeue` per interval, for all of the
build's jobs, finds the jobs that ended without a usable result (FAILED, TIMEOUT, CANCELLED,
OUT_OF_MEMORY, NODE_FAIL, …). A job gone from the queue is resolved from `sacct`, the
job-completion file or `scontrol`, in that order, in one query each for all such jobs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from sci.errors import ResourceError, UserError
from sci.executors.task import Task, TaskResult

if TYPE_CHECKING:
    from sci.build.resources import Hardware

COMMANDS = ("sbatch", "squeue", "scancel", "scontrol")
KEYS = ("partition", "account", "qos", "time", "setup", "options", "arrays", "poll_s")
DEFAULT_POLL_S = 2.0
# How often the results directory is listed while jobs run (a filesystem look, not a query).
SCAN_S = 0.05
# The scheduler calls `flush` once a pass has started all it could: those tasks go out together
# (one array per step). Without that call, submissions that arrive within GATHER_S of each
# other do.
GATHER_S = 0.05
GATHER_MAX_S = 1.0
# A job must be missing from this many queue queries in a row before it counts as gone.
MISSING_POLLS = 2
# How long a COMPLETED job's result may take to appear (a shared filesystem's attribute cache).
RESULT_GRACE_S = 60.0
CLI_TIMEOUT_S = 120.0
# The most jobs (array tasks included) one build keeps in the queue unless -j says otherwise
# (SLURM's default MaxJobCount is 10,000).
IN_FLIGHT = 10000
MIB = 1024
# Job states: still in the queue, ended well, ended badly.
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "POWER_UP_NODE", "UPDATE_DB"}
FAILED_STATES = {"FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED",
                 "REVOKED", "SPECIAL_EXIT"}
# Pending reasons that never clear by themselves: the job would wait for ever.
NEVER_REASONS = {"PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidAccount", "InvalidQOS",
                 "QOSMaxWallDurationPerJobLimit", "AccountNotAllowed", "QOSNotAllowed", "PartitionDown",
                 "ReqNodeNotAvail, UnavailableNodes"}
WORKER = "sci.executors.slurm_worker"


# -- settings --------------------------------------------------------------------------------
def settings(ws, yaml_bytes: bytes | None, cli: dict[str, Any]) -> dict[str, Any]:
    """The SLURM settings of this build: config/executors.yaml, then sci.yaml's `executors:
    {slurm: …}`, then `--executor-option K=V`, each key taken from the last that sets it."""
    from sci.spec.load import load_yaml_text

    merged: dict[str, Any] = {}
    root = Path(ws.root) if ws is not None else None
    site = root / "config" / "executors.yaml" if root is not None else None
    if site is not None and site.is_file():
        data, pos = load_yaml_text(site.read_text(encoding="utf-8"), "config/executors.yaml")
        merged.update(_validated(data if data is not None else {}, pos, "config/executors.yaml"))
    if yaml_bytes:
        data, pos = load_yaml_text(yaml_bytes.decode("utf-8"), "sci.yaml")
        if isinstance(data, dict) and data.get("executors") is not None:
            merged.update(_validated(data["executors"], pos, "sci.yaml", prefix=("executors",)))
    merged.update(_from_command_line(cli))
    out = {"partition": None, "account": None, "qos": None, "time": None, "setup": [], "options": [],
           "arrays": True, "poll_s": None}
    out.update(merged)
    if out["time"] is not None:
        out["time"] = str(out["time"])
        parse_time(out["time"])  # a wrong form is the user's to fix, before anything is submitted
    out["poll_s"] = float(out["poll_s"]) if out["poll_s"] else DEFAULT_POLL_S
    return out


def _validated(data: Any, pos, file: str, prefix: tuple = ()) -> dict[str, Any]:
    """The keys of `slurm:` that `data` (an `executors:` mapping) sets, validated."""
    from pydantic import ValidationError

    from sci.errors import SpecError
    from sci.spec.model import Executors

    try:
        model = Executors.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in ("int", "str")))
        where = ".".join(str(p) for p in (*prefix, *loc))
        if err["type"] == "extra_forbidden":
            raise SpecError(f"unknown key '{loc[-1]}' in {where.rpartition('.')[0] or 'executors'}",
                            location=pos.at(prefix + loc, key=True),
                            hint=f"valid keys here: {', '.join(KEYS if len(loc) > 1 else ('slurm',))}") from None
        msg = err["msg"].removeprefix("Value error, ")
        raise SpecError(f"{where}: {msg}", location=pos.at(prefix + loc), hint="see docs/slurm.md") from None
    return model.model_dump(exclude_unset=True).get("slurm") or {}


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _from_command_line(cli: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cli.items():
        values = value if isinstance(value, list) else [value]
        if key not in KEYS:
            raise UserError(f"unknown --executor-option {key!r} for --executor slurm",
                            hint=f"valid keys: {', '.join(KEYS)}")
        if key == "setup":
            out[key] = list(values)
            continue
        if key == "options":
            out[key] = [a for v in values for a in shlex.split(v)]
            continue
        if len(values) > 1:
            raise UserError(f"--executor-option {key} is given {len(values)} times", hint="give it once")
        v = values[0].strip()
        if key == "arrays":
            if v.lower() not in _TRUE + _FALSE:
                raise UserError(f"--executor-option arrays={v!r} is not a yes or no", hint="use arrays=true or arrays=false")
            out[key] = v.lower() in _TRUE
        elif key == "poll_s":
            try:
                out[key] = float(v)
            except ValueError:
                out[key] = -1.0
            if not out[key] > 0:
                raise UserError(f"--executor-option poll_s={v!r} is not a positive number of seconds",
                                hint="e.g. poll_s=5")
        else:
            out[key] = v
    return out


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(text: str) -> int | None:
    """Seconds of a SLURM time limit (`minutes`, `m:s`, `h:m:s`, `d-h`, `d-h:m`, `d-h:m:s`);
    None for no limit (UNLIMITED / INFINITE). A wrong form is a UserError."""
    t = str(text).strip()
    if t.upper() in ("UNLIMITED", "INFINITE", "NONE"):
        return None
    m = _TIME.match(t)
    if not m:
        raise UserError(f"time limit {text!r} is not a SLURM time",
                        hint="use minutes (90), h:m:s (1:30:00) or d-h:m:s (1-12:00:00)")
    days, a, b, c = m.groups()
    a, b, c = int(a), int(b) if b else None, int(c) if c else None
    if days is not None:  # d-h, d-h:m, d-h:m:s
        return int(days) * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    if b is None:  # minutes
        return a * 60
    if c is None:  # minutes:seconds
        return a * 60 + b
    return a * 3600 + b * 60 + c


def _fmt_time(seconds: int | None) -> str:
    if seconds is None:
        return "UNLIMITED"
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{d}-" if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


# -- the cluster's shape ---------------------------------------------------------------------
class ClusterNode:
    """One compute node as `scontrol show node` describes it."""

    __slots__ = ("name", "cpus", "mem_mb", "gpus", "partitions", "state")

    def __init__(self, name: str, cpus: int, mem_mb: int, gpus: int, partitions: list[str], state: str = ""):
        self.name, self.cpus, self.mem_mb, self.gpus = name, cpus, mem_mb, gpus
        self.partitions, self.state = partitions, state

    def describe(self) -> str:
        return f"{self.name} ({self.cpus} CPU, {self.gpus} GPU, {self.mem_mb / MIB:.1f} GiB memory)"

    def __repr__(self) -> str:
        return f"ClusterNode({self.describe()})"


class Partition:
    """One partition: its limits and its nodes."""

    __slots__ = ("name", "default", "state", "max_time_s", "max_cpus", "max_mem_mb", "nodes")

    def __init__(self, name: str, default: bool = False, state: str = "UP", max_time_s: int | None = None,
                 max_cpus: int | None = None, max_mem_mb: int | None = None,
                 nodes: list[ClusterNode] | None = None):
        self.name, self.default, self.state, self.max_time_s = name, default, state, max_time_s
        self.max_cpus, self.max_mem_mb = max_cpus, max_mem_mb
        self.nodes = nodes if nodes is not None else []

    def __repr__(self) -> str:
        return f"Partition({self.name!r}, nodes={len(self.nodes)})"


_FIELD = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:.]*)=")


def fields(line: str) -> dict[str, str]:
    """The KEY=VALUE pairs of one `scontrol … --oneliner` line (values may hold spaces)."""
    marks = list(_FIELD.finditer(line))
    out = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(line)
        out[m.group(1)] = line[m.end():end].strip()
    return out


def _count(value: str | None) -> int | None:
    if value is None or not value.strip() or value.upper() in ("UNLIMITED", "INFINITE", "N/A", "(NULL)"):
        return None
    m = re.match(r"\d+", value.strip())
    return int(m.group()) if m else None


def gpu_count(gres: str | None) -> int:
    """GPUs in a node's `Gres=` (gpu:4, gpu:a100:4(S:0-1), gpu:fake:2,gpu:v100:1, …)."""
    total = 0
    for item in re.split(r",(?![^()]*\))", gres or ""):
        parts = re.sub(r"\(.*\)$", "", item.strip()).split(":")
        if parts and parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def parse_nodes(text: str) -> list[ClusterNode]:
    out = []
    for line in text.splitlines():
        f = fields(line)
        if "NodeName" not in f:
            continue
        out.append(ClusterNode(f["NodeName"], _count(f.get("CPUTot")) or 0, _count(f.get("RealMemory")) or 0,
                               gpu_count(f.get("Gres")), [p for p in f.get("Partitions", "").split(",") if p],
                               f.get("State", "")))
    return out


def parse_partitions(text: str, nodes: list[ClusterNode]) -> list[Partition]:
    out = []
    for line in text.splitlines():
        f = fields(line)
        name = f.get("PartitionName")
        if not name:
            continue
        max_time = f.get("MaxTime", "UNLIMITED")
        try:
            max_time_s = parse_time(max_time)
        except UserError:
            max_time_s = None
        out.append(Partition(name, f.get("Default") == "YES", f.get("State", "UP"), max_time_s,
                             _count(f.get("MaxCPUsPerNode")), _count(f.get("MaxMemPerNode")),
                             [n for n in nodes if name in n.partitions]))
    return out


def _cli(argv: list[str], *, timeout: float = CLI_TIMEOUT_S, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run one SLURM command. In its own session, so a Ctrl-C meant for sci does not kill an
    `sbatch` half-way (its job id would be lost); sci cancels what it submitted itself."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=stdin,
                          start_new_session=True)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[0] if lines else ""


def require_commands() -> None:
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise UserError(f"--executor slurm needs SLURM's commands on PATH; {', '.join(missing)} not found",
                        hint="run sci on a login node of the cluster (or load its SLURM module)")


def _scontrol(*args: str) -> str:
    try:
        proc = _cli(["scontrol", *args], timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UserError(f"cannot ask the SLURM controller (scontrol {' '.join(args)}): {exc}",
                        hint="check that slurmctld is up (`sinfo`) and SLURM_CONF points at the cluster") from None
    if proc.returncode != 0:
        raise UserError(f"cannot ask the SLURM controller: {_first_line(proc.stderr) or 'scontrol exited %d' % proc.returncode}",
                        hint="check that slurmctld is up (`sinfo`) and SLURM_CONF points at the cluster")
    return proc.stdout


def read_config() -> dict[str, str]:
    """`scontrol show config` as a mapping (MaxArraySize, JobCompType, AccountingStorageType, …)."""
    out = {}
    for line in _scontrol("show", "config").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def read_cluster() -> list[Partition]:
    # -a: hidden partitions too (a site may hide one that its users name explicitly)
    nodes = parse_nodes(_scontrol("-a", "-o", "show", "node"))
    return parse_partitions(_scontrol("-a", "-o", "show", "partition"), nodes)


# -- what a node asks for --------------------------------------------------------------------
def job_resources(resources: dict) -> tuple[int, int, int]:
    """(CPUs, memory in MiB or 0 for the site's default, GPUs) of a node's `resources`."""
    cpu = max(1, int(resources.get("cpu") or 1))
    mem = resources.get("mem_gb") or 0
    mem_mb = int(-(-float(mem) * MIB // 1)) if mem > 0 else 0  # GiB → MiB, rounded up
    return cpu, mem_mb, int(resources.get("gpu") or 0)


def resource_args(resources: dict) -> list[str]:
    cpu, mem_mb, gpu = job_resources(resources)
    args = ["--nodes=1", "--ntasks=1", f"--cpus-per-task={cpu}"]
    if mem_mb:
        args.append(f"--mem={mem_mb}M")
    if gpu:
        args.append(f"--gres=gpu:{gpu}")
    return args


def site_args(cfg: dict[str, Any]) -> list[str]:
    args = []
    for key, flag in (("partition", "--partition"), ("account", "--account"), ("qos", "--qos"), ("time", "--time")):
        if cfg.get(key):
            args.append(f"{flag}={cfg[key]}")
    return args + list(cfg.get("options") or [])


def candidate_partitions(cluster: list[Partition], cfg: dict[str, Any]) -> list[Partition]:
    """The partitions a job may land in: those named in `partition`, else the default one."""
    names = [p.strip() for p in (cfg.get("partition") or "").split(",") if p.strip()]
    by_name = {p.name: p for p in cluster}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ResourceError(f"the SLURM cluster has no partition {unknown[0]!r}",
                                hint=f"its partitions: {', '.join(sorted(by_name)) or 'none'}")
        return [by_name[n] for n in names]
    default = [p for p in cluster if p.default]
    if not default:
        raise ResourceError("the SLURM cluster has no default partition",
                            hint="name one: executors: {slurm: {partition: NAME}} or --executor-option partition=NAME")
    return default


def _fits(req: tuple[int, int, int], part: Partition, node: ClusterNode) -> bool:
    cpu, mem_mb, gpu = req
    max_cpu = min(node.cpus, part.max_cpus) if part.max_cpus else node.cpus
    max_mem = min(node.mem_mb, part.max_mem_mb) if part.max_mem_mb else node.mem_mb
    return cpu <= max_cpu and mem_mb <= max_mem and gpu <= node.gpus


def check_cluster_fits(nodes: Iterable, cluster: list[Partition], cfg: dict[str, Any], pos=None) -> list[Partition]:
    """Reject, before anything is submitted, a node no candidate partition can hold (exit 2),
    and a time limit above every candidate's MaxTime (the job would pend for ever). Returns
    the candidate partitions."""
    parts = candidate_partitions(cluster, cfg)
    names = ", ".join(p.name for p in parts)
    where = f"partition{'s' if len(parts) > 1 else ''} {names}"
    if cfg.get("time"):
        want = parse_time(cfg["time"])
        limits = [p.max_time_s for p in parts]
        if want is not None and all(lim is not None and want > lim for lim in limits):
            raise ResourceError(f"the time limit {cfg['time']} exceeds the MaxTime of {where} "
                                f"({', '.join(_fmt_time(lim) for lim in limits)})",
                                hint="lower executors.slurm.time or choose another partition")
    members = [(p, n) for p in parts for n in p.nodes]
    if not members:
        raise ResourceError(f"{where} of the SLURM cluster {'has' if len(parts) == 1 else 'have'} no node",
                            hint="choose another partition")
    largest = max((n for _, n in members), key=lambda n: (n.cpus, n.gpus, n.mem_mb, n.name))
    for node in nodes:
        req = job_resources(node.resources)
        if any(_fits(req, p, n) for p, n in members):
            continue
        asks = [f"{req[0]} CPU"]
        if req[2]:
            asks.append(f"{req[2]} GPU")
        if req[1]:
            asks.append(f"{node.resources['mem_gb']:g} GB memory")
        loc = pos.at(node.origin + ("resources",)) if pos is not None and getattr(node, "origin", None) else None
        raise ResourceError(f"{node.name} asks for {', '.join(asks)} but no node of {where} has that; "
                            f"the largest is {largest.describe()}",
                            location=loc, hint="lower the step's resources or choose a partition with larger nodes")
    return parts


# -- the executor ----------------------------------------------------------------------------
class _Job:
    """One node's job: a whole job, or one task of an array."""

    __slots__ = ("node", "fut", "name", "base", "job_id", "out", "missing", "result", "completed_at", "state")

    def __init__(self, node: str, fut: Future, name: str):
        self.node, self.fut, self.name = node, fut, name
        self.base = self.job_id = self.out = ""
        self.missing = 0
        self.result: TaskResult | None = None  # a failed result waits for the job's final state
        self.completed_at: float | None = None
        self.state = "PENDING"


class SlurmExecutor:
    """Submits each task as a SLURM job and settles its future from the worker's result file
    or the job's final state (see the module's docstring)."""

    name = "slurm"

    def __init__(self, *, settings: dict[str, Any], nodes: Iterable = (), pos=None, workspace=None, run_dir=None):
        require_commands()
        self.cfg = settings
        self.config = read_config()
        self.cluster = read_cluster()
        nodes = list(nodes)
        self.partitions = check_cluster_fits(nodes, self.cluster, settings, pos)
        self._nodes = {n.name: (n.step, tuple(resource_args(n.resources)), job_resources(n.resources)[2])
                       for n in nodes}
        self._site = site_args(settings)
        self.max_array = max(1, _count(self.config.get("MaxArraySize")) or 1001)
        self.accounting = self.config.get("AccountingStorageType", "accounting_storage/none") != "accounting_storage/none"
        self.jobcomp = (self.config.get("JobCompLoc") if self.config.get("JobCompType") == "jobcomp/filetxt" else None)
        self._jobcomp_at = 0
        self._completions: dict[str, tuple[str, str]] = {}  # job id -> (state, exit code), from that file
        run_dir = Path(run_dir) if run_dir is not None else None
        self.workspace = str(workspace) if workspace is not None else os.getcwd()
        run_id = run_dir.name if run_dir is not None else f"{os.getpid()}"
        self.jobdir = Path(self.workspace) / ".sci" / "slurm" / run_id
        self.outdir = (run_dir if run_dir is not None else self.jobdir) / "slurm"
        self.cluster_name = self.config.get("ClusterName", "slurm")
        from sci.executors.task import identity

        self._expect = identity()
        self._cv = threading.Condition()
        self._submitting = threading.Lock()  # held while sbatch runs: cancel_all waits for it
        self._queue: list[tuple[Task, Future]] = []
        self._queue_since = self._last_submit = 0.0
        self._jobs: dict[str, _Job] = {}  # result file name -> job, until settled
        self._batches = 0
        self._thread: threading.Thread | None = None
        self._stop = self._cancelled = self._flush_now = False
        self._made_dirs = False
        # What this build asked of SLURM, written to runs/<id>/slurm/executor.json at the end:
        # commands run, jobs and arrays submitted, seconds spent submitting (task files,
        # scripts and sbatch) and watching (first submission to last result).
        self.stats: dict[str, Any] = {"sbatch": 0, "squeue": 0, "sacct": 0, "scontrol": 0, "scancel": 0, "jobs": 0,
                                      "arrays": 0, "submit_s": 0.0, "watch_s": 0.0}
        self._first_submit: float | None = None
        self._job_ids: dict[str, str] = {}  # node -> its job id, for executor.json

    # -- what the scheduler sees ---------------------------------------------------------
    def hardware(self) -> "Hardware":
        """Pools for the driver: SLURM queues jobs itself, so only `-j` (jobs in the queue at
        once) and the candidate partitions' GPUs bound what is submitted."""
        from sci.build.resources import Gpu, Hardware

        gpus = sum(n.gpus for n in {n.name: n for p in self.partitions for n in p.nodes}.values())
        return Hardware(cpu=IN_FLIGHT, mem_gb=0.0, gpus=[Gpu(i, 0.0) for i in range(gpus)],
                        source=f"slurm cluster {self.cluster_name}")

    def submit(self, task: Task) -> "Future[TaskResult]":
        fut: Future = Future()
        fut.set_running_or_notify_cancel()
        with self._cv:
            if self._cancelled:
                fut.set_result(_cancelled(task.node))
                return fut
            if not self._queue:
                self._queue_since = time.monotonic()
            self._queue.append((task, fut))
            self._last_submit = time.monotonic()
            if self._thread is None:
                self._start()
            self._cv.notify_all()
        return fut

    def flush(self) -> None:
        """The scheduler started all it could for now: submit what was handed over."""
        with self._cv:
            if self._queue:
                self._flush_now = True
                self._cv.notify_all()

    def cancel_all(self) -> None:
        """scancel every job this build submitted and has not seen end; their nodes fail at once
        as cancelled (the driver writes no action result for them)."""
        with self._cv:
            self._cancelled = True
            queued, self._queue = self._queue, []
            for task, fut in queued:
                if not fut.done():
                    fut.set_result(_cancelled(task.node))
            self._cv.notify_all()
        with self._submitting:  # an sbatch under way finishes first: its job is cancelled too
            with self._cv:
                jobs = list(self._jobs.values())
                self._jobs.clear()
                for job in jobs:
                    if not job.fut.done():
                        job.fut.set_result(_cancelled(job.node, job.job_id))
        self._scancel(sorted({j.base for j in jobs if j.base}))

    def close(self) -> None:
        """Stop watching; cancel whatever is still queued (nothing, after a normal end)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=CLI_TIMEOUT_S)
        with self._cv:
            left = [j for j in self._jobs.values() if j.base]
        if left:
            self.cancel_all()
        self._drop_empty_outputs()
        if self._made_dirs:
            try:
                doc: dict[str, Any] = {k: round(v, 6) if isinstance(v, float) else v for k, v in self.stats.items()}
                doc["nodes"] = dict(sorted(self._job_ids.items()))
                _write_json(self.outdir / "executor.json", doc)
            except OSError:
                pass
        if os.environ.get("SCI_KEEP_SCRATCH") != "1":
            shutil.rmtree(self.jobdir, ignore_errors=True)
            try:
                self.jobdir.parent.rmdir()
            except OSError:
                pass

    def _drop_empty_outputs(self) -> None:
        """A job that printed nothing leaves an empty SLURM output file: a thousand of them
        would say nothing, so only the ones with something in them stay in runs/<id>/slurm/."""
        try:
            entries = list(os.scandir(self.outdir))
        except OSError:
            return
        for e in entries:
            try:
                if e.name.endswith(".out") and e.stat().st_size == 0:
                    os.unlink(e.path)
            except OSError:
                pass

    # -- the watching thread -------------------------------------------------------------
    def _start(self) -> None:
        # SIGTERM ends the build as Ctrl-C does, and the scheduler cancels every job (SPEC §12):
        # the build session stops on it whatever the executor (build/session.py).
        self._thread = threading.Thread(target=self._loop, name="sci-slurm", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        next_poll = time.monotonic() + self.cfg["poll_s"]
        while True:
            with self._cv:
                while not self._stop and not self._queue and not self._jobs:
                    self._cv.wait()
                if self._stop:
                    return
                while self._queue and not self._stop and not self._flush_now:
                    now = time.monotonic()
                    if now - self._last_submit >= GATHER_S or now - self._queue_since >= GATHER_MAX_S:
                        break
                    self._cv.wait(GATHER_S)
                batch, self._queue, self._flush_now = self._queue, [], False
            try:
                if batch:
                    self._flush(batch)
                self._scan_results()
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + self.cfg["poll_s"]
                    if self._jobs:
                        self._poll()
            except Exception as exc:  # noqa: BLE001 - never die silently: fail what is waiting
                self._fail_all(f"the SLURM executor failed: {type(exc).__name__}: {exc}")
            with self._cv:
                if not self._queue and not self._stop:
                    self._cv.wait(SCAN_S)

    def _fail_all(self, error: str) -> None:
        with self._cv:
            jobs = list(self._jobs.values())
            self._jobs.clear()
            for job in jobs:
                if not job.fut.done():
                    job.fut.set_result(TaskResult(node=job.node, ok=False, exit_status=-1, error=error))
        self._scancel(sorted({j.base for j in jobs if j.base}))

    # -- submitting ----------------------------------------------------------------------
    def _dirs(self) -> None:
        if not self._made_dirs:
            for d in (self.jobdir / "tasks", self.jobdir / "results", self.outdir):
                d.mkdir(parents=True, exist_ok=True)
            self._made_dirs = True

    def _flush(self, batch: list[tuple[Task, Future]]) -> None:
        """Submit what arrived together: one array per step and resources, or a job each."""
        groups: dict[tuple, list[tuple[Task, Future]]] = {}
        for task, fut in batch:
            step, args, _ = self._nodes.get(task.node) or (task.node, tuple(resource_args(
                {"cpu": task.threads, "gpu": len(task.gpus)})), len(task.gpus))
            groups.setdefault((step, args), []).append((task, fut))
        with self._submitting:
            self._dirs()
            for (step, args), items in groups.items():
                size = self.max_array if self.cfg["arrays"] else 1
                for i in range(0, len(items), size):
                    if self._cancelled:  # what this batch has not submitted yet is cancelled too
                        with self._cv:
                            submitted = {id(j.fut) for j in self._jobs.values()}
                            for group in groups.values():
                                for task, fut in group:
                                    if not fut.done() and id(fut) not in submitted:
                                        fut.set_result(_cancelled(task.node))
                        return
                    self._submit(step, list(args), items[i:i + size])

    def _submit(self, step: str, args: list[str], items: list[tuple[Task, Future]]) -> None:
        t0 = time.perf_counter()
        if self._first_submit is None:
            self._first_submit = t0
        try:
            self._submit_now(step, args, items)
        finally:
            self.stats["submit_s"] += time.perf_counter() - t0

    def _submit_now(self, step: str, args: list[str], items: list[tuple[Task, Future]]) -> None:
        self._batches += 1
        tag = f"b{self._batches:05d}"
        array = len(items) > 1
        jobs = []
        for i, (task, fut) in enumerate(items):
            job = _Job(task.node, fut, f"{tag}-{i}")
            _write_json(self.jobdir / "tasks" / f"{job.name}.json", self._task_doc(task))
            jobs.append(job)
        script = self.outdir / f"{tag}.sh"
        script.write_text(self._script(step, tag, [t.node for t, _ in items]), encoding="utf-8")
        out = str(self.outdir).replace("%", "%%") + ("/%A_%a.out" if array else "/%j.out")  # %: SLURM's patterns
        argv = ["sbatch", "--parsable", f"--job-name=sci-{step}", f"--chdir={self.workspace}", f"--output={out}",
                *args, *self._site, *([f"--array=0-{len(items) - 1}"] if array else []), str(script)]
        proc = None
        for attempt in range(3):
            try:
                proc = _cli(argv)
            except (OSError, subprocess.SubprocessError) as exc:
                proc = subprocess.CompletedProcess(argv, -1, "", f"{exc}")
            self.stats["sbatch"] += 1
            if proc.returncode == 0 or not _transient(proc.stderr):
                break
            time.sleep(1 + attempt)
        if proc.returncode != 0:
            why = _first_line(proc.stderr).removeprefix("sbatch: error: ") or f"sbatch exited {proc.returncode}"
            with self._cv:
                for job in jobs:
                    if not job.fut.done():
                        job.fut.set_result(TaskResult(node=job.node, ok=False, exit_status=-1,
                                                      error=f"sbatch refused the job: {why}"))
            return
        base = proc.stdout.strip().split(";")[0].strip()
        self.stats["jobs"] += len(items)
        self.stats["arrays"] += int(array)
        with self._cv:
            for i, job in enumerate(jobs):
                job.base = base
                job.job_id = f"{base}_{i}" if array else base
                job.out = str(self.outdir / (f"{base}_{i}.out" if array else f"{base}.out"))
                self._job_ids[job.node] = job.job_id
                if not job.fut.done():
                    self._jobs[job.name] = job

    def _task_doc(self, task: Task) -> dict:
        doc = {name: getattr(task, name) for name in Task.__slots__ if name != "env"}
        return {"task": doc, "env": sorted(task.env), "gpus": self._nodes.get(task.node, (0, 0, len(task.gpus)))[2],
                "expect": self._expect}

    def _script(self, step: str, tag: str, nodes: list[str]) -> str:
        shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        python = shlex.quote(sys.executable)
        lines = [f"#!{shell}", f"# sci: {len(nodes)} node(s) of step {step}: {', '.join(nodes[:5])}"
                 + (", …" if len(nodes) > 5 else "")]
        lines += list(self.cfg.get("setup") or [])
        lines.append(f"exec {python} -m {WORKER} {shlex.quote(str(self.jobdir))} {tag}")
        return "\n".join(lines) + "\n"

    # -- watching ------------------------------------------------------------------------
    def _scan_results(self) -> None:
        """Take every result the workers wrote since last time (one directory listing)."""
        if not self._jobs:
            return
        try:
            names = os.listdir(self.jobdir / "results")
        except OSError:
            return
        for fname in names:
            if fname.startswith(".") or not fname.endswith(".json"):
                continue
            job = self._jobs.get(fname[:-5])
            if job is None or job.result is not None:
                continue
            result = self._read_result(job)
            if result is None:
                continue
            if result.ok:
                self._settle(job, result)
            else:
                job.result = result  # named by the job's final state, once the queue says it

    def _read_result(self, job: _Job) -> TaskResult | None:
        try:
            with open(self.jobdir / "results" / f"{job.name}.json", encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return None
        data.pop("signal", None)
        return TaskResult(**data)

    def _settle(self, job: _Job, result: TaskResult) -> None:
        if self._first_submit is not None:
            self.stats["watch_s"] = time.perf_counter() - self._first_submit
        with self._cv:
            if self._jobs.get(job.name) is job:
                del self._jobs[job.name]
            if not job.fut.done():
                job.fut.set_result(result)

    def _poll(self) -> None:
        """One squeue for every job of this build still out; then resolve those gone from it."""
        with self._cv:
            jobs = list(self._jobs.values())
        bases = sorted({j.base for j in jobs if j.base}, key=_job_order)
        if not bases:
            return
        states = self._squeue(bases)
        if states is None:
            return  # the controller did not answer: ask again next interval
        gone = []
        for job in jobs:
            seen = states.get(job.job_id)
            if seen is None:
                job.missing += 1
                if job.missing >= MISSING_POLLS:
                    gone.append(job)
                continue
            job.missing = 0
            state, reason = seen
            job.state = state
            self._ended(job, state, reason)
        if gone:
            self._resolve(gone)

    def _ended(self, job: _Job, state: str, reason: str = "", exit_code: str = "") -> None:
        """Settle `job` if `state` is final; a pending reason that never clears fails it too."""
        if state in ACTIVE:
            if state == "PENDING" and reason in NEVER_REASONS:
                self._scancel([job.job_id])
                self._settle(job, TaskResult(node=job.node, ok=False, exit_status=-1,
                                             error=f"slurm job {job.job_id} can never start ({reason}); cancelled"))
            return
        if state == "COMPLETED":
            result = job.result or self._read_result(job)
            if result is not None:
                self._settle(job, result)
                return
            now = time.monotonic()
            job.completed_at = job.completed_at or now
            if now - job.completed_at >= RESULT_GRACE_S:
                self._settle(job, TaskResult(
                    node=job.node, ok=False, exit_status=-1, stderr_tail=_tail(job.out),
                    error=f"slurm job {job.job_id} COMPLETED but left no result in {self.jobdir / 'results'}: "
                          f"the compute node must see the workspace at the same path"))
            return
        result = job.result or self._read_result(job)
        what = f"slurm job {job.job_id} {state}"
        if exit_code and exit_code not in ("0:0", ""):
            what += f" (exit code {exit_code})"
        if state == "TIMEOUT" and self.cfg.get("time"):
            what += f" (time limit {self.cfg['time']})"
        if result is not None and result.error:
            error = f"{what}: {result.error}"
        elif state == "CANCELLED":
            error = f"{what}: cancelled outside this build (scancel, an administrator or a preemption)"
        else:
            error = what
        self._settle(job, TaskResult(
            node=job.node, ok=False, exit_status=result.exit_status if result is not None else -1,
            stdout=result.stdout if result else "", stderr=result.stderr if result else "",
            start=result.start if result else "", end=result.end if result else "",
            duration_s=result.duration_s if result else 0.0, host=result.host if result else "",
            stderr_tail=(result.stderr_tail if result is not None and result.stderr_tail else _tail(job.out)),
            error=error))

    def _squeue(self, bases: list[str]) -> dict[str, tuple[str, str]] | None:
        """job id (array tasks as BASE_INDEX) -> (state, reason) for these jobs, in one query."""
        try:
            proc = _cli(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(bases), "-o", "%i|%T|%r"], timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        self.stats["squeue"] += 1
        if proc.returncode != 0:
            # Every id unknown: they all left the controller's memory (MinJobAge). Anything else
            # (a timeout, the controller restarting) is asked again next interval.
            return {} if "Invalid job id" in proc.stderr else None
        out = {}
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2:
                out[parts[0]] = (parts[1].split()[0] if parts[1] else "", parts[2] if len(parts) > 2 else "")
        return out

    def _resolve(self, gone: list[_Job]) -> None:
        """Jobs the queue no longer knows: their result file, else sacct, the job-completion
        file, scontrol; one query each for all of them. Unknowable: the node fails saying so."""
        left = []
        for job in gone:
            result = self._read_result(job)
            if result is not None and result.ok:
                self._settle(job, result)
            else:
                job.result = job.result or result
                left.append(job)
        for source in (self._from_sacct, self._from_jobcomp, self._from_scontrol):
            if not left:
                return
            found = source([j.job_id for j in left])
            rest = []
            for job in left:
                if job.job_id in found:
                    state, code = found[job.job_id]
                    self._ended(job, state, exit_code=code)
                    if state in ACTIVE:  # requeued, say: back to watching it
                        job.missing = 0
                else:
                    rest.append(job)
            left = rest
        for job in left:
            if job.result is not None:
                self._settle(job, TaskResult(**{**_result_fields(job.result),
                                                "error": f"slurm job {job.job_id} ended: {job.result.error}"}))
            else:
                self._settle(job, TaskResult(node=job.node, ok=False, exit_status=-1, stderr_tail=_tail(job.out),
                                             error=f"slurm job {job.job_id} left the queue and no record says "
                                                   f"how it ended (no sacct, job-completion file or scontrol entry)"))

    def _from_sacct(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        if not self.accounting or shutil.which("sacct") is None:
            return {}
        try:
            proc = _cli(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State,ExitCode"], timeout=60)
        except (OSError, subprocess.SubprocessError):
            return {}
        self.stats["sacct"] += 1
        out = {}
        if proc.returncode == 0:
            for line in proc.stdout.splitlines():
                parts = line.split("|")
                if len(parts) >= 3 and parts[1]:
                    out[parts[0]] = (parts[1].split()[0], parts[2])
        return out

    def _from_jobcomp(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """The job-completion file (jobcomp/filetxt), read from where the last read stopped."""
        if not self.jobcomp:
            return {}
        try:
            with open(self.jobcomp, "rb") as fh:
                fh.seek(self._jobcomp_at)
                chunk = fh.read()
        except OSError:
            return {}
        end = chunk.rfind(b"\n") + 1
        self._jobcomp_at += end
        for line in chunk[:end].decode("utf-8", "replace").splitlines():
            f = fields(line)
            jid = f.get("JobId", "")
            if f.get("ArrayJobId") and f.get("ArrayTaskId") not in (None, "", "4294967294"):
                jid = f"{f['ArrayJobId']}_{f['ArrayTaskId']}"
            if jid:
                self._completions[jid] = (f.get("JobState", "").split()[0] if f.get("JobState") else "",
                                          f.get("ExitCode", ""))
        return {i: self._completions[i] for i in ids if i in self._completions}

    def _from_scontrol(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        out = {}
        for jid in ids:  # only jobs nothing else knew: rare, so one call each is fine
            try:
                proc = _cli(["scontrol", "show", "job", jid, "--oneliner"], timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            self.stats["scontrol"] += 1
            if proc.returncode == 0:
                f = fields(_first_line(proc.stdout))
                if f.get("JobState"):
                    out[jid] = (f["JobState"], f.get("ExitCode", ""))
        return out

    def _scancel(self, ids: list[str]) -> None:
        if not ids:
            return
        try:
            _cli(["scancel", *ids], timeout=60)
            self.stats["scancel"] += 1
        except (OSError, subprocess.SubprocessError):
            pass


def _cancelled(node: str, job_id: str = "") -> TaskResult:
    which = f" (slurm job {job_id} cancelled)" if job_id else ""
    return TaskResult(node=node, ok=False, exit_status=-1,
                      error=f"cancelled: the build stopped (a node failed without --keep-going, or it was interrupted)"
                            f"{which}")


def _transient(stderr: str) -> bool:
    s = stderr.lower()
    return any(w in s for w in ("temporarily", "timed out", "try again", "connection refused", "unable to contact"))


def _job_order(job_id: str) -> tuple:
    return (len(job_id), job_id)


def _result_fields(r: TaskResult) -> dict:
    return {name: getattr(r, name) for name in TaskResult.__slots__}


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _write_json(path: Path, data: Any) -> None:
    """Write `path` whole or not at all: the reader on another machine never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, separators=(",", ":"))
    os.replace(tmp, path)


# -- sci doctor ------------------------------------------------------------------------------
def cluster_report() -> dict[str, Any]:
    """What `sci doctor` says about the SLURM cluster it sees: its partitions and their nodes'
    CPUs, memory and GPUs; or why it cannot see one."""
    try:
        config = read_config()
        parts = read_cluster()
    except UserError as exc:
        return {"error": exc.message}
    nodes = {n.name: n for p in parts for n in p.nodes}
    return {
        "cluster": config.get("ClusterName", ""),
        "version": config.get("SLURM_VERSION", ""),
        "accounting": config.get("AccountingStorageType", "accounting_storage/none") != "accounting_storage/none",
        "nodes": len(nodes),
        "cpus": sum(n.cpus for n in nodes.values()),
        "gpus": sum(n.gpus for n in nodes.values()),
        "partitions": [{"name": p.name, "default": p.default, "state": p.state, "nodes": len(p.nodes),
                        "cpus": sum(n.cpus for n in p.nodes), "gpus": sum(n.gpus for n in p.nodes),
                        "mem_gb": round(sum(n.mem_mb for n in p.nodes) / MIB, 1),
                        "max_time": _fmt_time(p.max_time_s)} for p in parts],
    }


__all__ = ["SlurmExecutor", "Partition", "ClusterNode", "check_cluster_fits", "cluster_report", "parse_nodes",
           "parse_partitions", "parse_time", "resource_args", "settings"]
