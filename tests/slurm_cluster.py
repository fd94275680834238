"""A real SLURM cluster on loopback, for tests and benchmarks (shared/recipes/slurm-on-loopback.md).

Debian's `munged`, `slurmctld` and `slurmd` are started by this module in one scratch directory,
on 127.0.0.1 and on ports picked free at start (so two sessions, or a cluster someone else
runs, never collide); fake GPUs are character devices listed in gres.conf. No systemd, no
cgroups. By default no accounting database: `sacct` is off, and finished jobs are found in the
queue for `MinJobAge` seconds and in the job-completion file (`jobcomp/filetxt`) for ever. With
`accounting=True`, a MariaDB of its own (data directory and socket under $D, 127.0.0.1) and
`slurmdbd` start first: `sacct` works, and there is no job-completion file.

Only the processes started here are stopped, by PID: first every job of this cluster is
cancelled (its `slurmstepd`s are children of our `slurmd`, not of us), then the daemons.

    pytest ─┬─ munged --foreground      (its own socket, key and pid file under $D/munge)
            ├─ slurmctld -D             (SLURM_CONF=$D/etc/slurm.conf)
            ├─ slurmd -D -N localhost   ──▶ slurmstepd ──▶ sci worker (one per job)
            └─ mariadbd, slurmdbd -D    (accounting=True only)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CPUS = 2
GPUS = 4
MEM_MB = 24000
# Job slots on the node (OverSubscribe=FORCE:N per core): many tiny jobs at once on 2 cores.
OVERSUBSCRIBE = 8
PARTITION = "debug"
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
INSTALL = "apt-get install slurmctld slurmd slurm-client munge (.ci/setup does)"
ACCOUNTING = ("slurmdbd", "sacct", "sacctmgr", "mariadbd", "mariadb-install-db", "mariadb")
INSTALL_ACCOUNTING = "apt-get install slurmdbd mariadb-server-core mariadb-client-core (.ci/setup does)"

SLURM_CONF = """\
ClusterName=scitest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/run/munge.socket
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation={d}/state/ctld
SlurmdSpoolDir={d}/state/d
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
{accounting}
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=5
JobAcctGatherParams=OverMemoryKill
{jobcomp}
ReturnToService=2
InactiveLimit=0
KillWait=2
MinJobAge=300
MaxJobCount=10000
MaxArraySize=10001
DefMemPerCPU=1000
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory={mem} Gres=gpu:fake:{gpus} State=UNKNOWN
PartitionName={partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:{over}
PartitionName=short Nodes=localhost Default=NO MaxTime=00:01:00 State=UP OverSubscribe=FORCE:{over}
"""

SLURMDBD_CONF = """\
AuthType=auth/munge
AuthInfo=socket={d}/munge/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
PidFile={d}/run/slurmdbd.pid
LogFile={d}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=slurm
StoragePass=sci-test
StorageLoc=slurm_acct_db
"""

GRES_CONF = """\
AutoDetect=off
NodeName=localhost Name=gpu Type=fake File={d}/fakegpu/nvidia[0-{last}]
"""


class Unavailable(Exception):
    """The cluster cannot run here (packages missing, not root): the reason, for a skip."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """One controller and one compute node (`localhost`) under a scratch directory."""

    def __init__(self, root: Path | None = None, accounting: bool = False) -> None:
        """`accounting`: slurmdbd on a MariaDB of its own, so `sacct` works (and no
        job-completion file); else neither, as on many small clusters."""
        self.accounting = accounting
        self.dir = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="sci-slurm-"))
        self.conf = self.dir / "etc" / "slurm.conf"
        self.jobcomp = self.dir / "log" / "jobcomp.txt"
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """What a client command (and `sci build --executor slurm`) needs: SLURM_CONF."""
        return {"SLURM_CONF": str(self.conf)}

    def client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    # -- start and stop -------------------------------------------------------------------
    def start(self) -> None:
        missing = [c for c in DAEMONS if shutil.which(c) is None and not Path(f"/usr/sbin/{c}").exists()]
        if missing:
            raise Unavailable(f"SLURM is not installed ({', '.join(missing)} missing): {INSTALL}")
        if self.accounting:
            missing = [c for c in ACCOUNTING if shutil.which(c) is None and not Path(f"/usr/sbin/{c}").exists()]
            if missing:
                raise Unavailable(f"SLURM accounting is not installed ({', '.join(missing)} missing): "
                                  f"{INSTALL_ACCOUNTING}")
        if os.geteuid() != 0:
            raise Unavailable("the test cluster's slurmd runs jobs as root: run the SLURM tests as root")
        d = self.dir
        for sub in ("munge/etc", "munge/run", "munge/log", "munge/lib", "etc", "state/ctld", "state/d", "log",
                    "run", "fakegpu"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
        os.chmod(d / "munge", 0o755)
        os.chmod(d / "munge" / "run", 0o755)  # munged refuses a socket directory others cannot enter
        key = d / "munge" / "etc" / "munge.key"
        subprocess.run([_sbin("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        key.chmod(0o600)
        for i in range(GPUS):  # fake GPUs must be character devices (/dev/null's numbers)
            dev = d / "fakegpu" / f"nvidia{i}"
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))
        self.ctld_port, self.d_port, self.dbd_port, self.db_port = (_free_port(), _free_port(), _free_port(),
                                                                    _free_port())
        if self.accounting:
            accounting = (f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\n"
                          f"AccountingStoragePort={self.dbd_port}\n"
                          # without it the clients' munge socket for slurmdbd is /run/munge's
                          f"AccountingStoragePass={d}/munge/run/munge.socket")
            jobcomp = "JobCompType=jobcomp/none"
        else:
            accounting = "AccountingStorageType=accounting_storage/none"
            jobcomp = f"JobCompType=jobcomp/filetxt\nJobCompLoc={self.jobcomp}"
        self.conf.write_text(SLURM_CONF.format(d=d, ctld_port=self.ctld_port, d_port=self.d_port, cpus=CPUS,
                                               mem=MEM_MB, gpus=GPUS, partition=PARTITION, over=OVERSUBSCRIBE,
                                               accounting=accounting, jobcomp=jobcomp))
        (d / "etc" / "gres.conf").write_text(GRES_CONF.format(d=d, last=GPUS - 1))
        log = open(d / "log" / "daemons.out", "ab")
        env = self.client_env()
        try:
            self.procs["munged"] = subprocess.Popen(
                [_sbin("munged"), "--foreground", f"--key-file={key}", f"--socket={d}/munge/run/munge.socket",
                 f"--pid-file={d}/munge/run/munged.pid", f"--log-file={d}/munge/log/munged.log",
                 f"--seed-file={d}/munge/lib/munged.seed"], stdout=log, stderr=log, env=env)
            _wait(lambda: (d / "munge" / "run" / "munge.socket").exists(), 10, "munged did not start")
            if self.accounting:
                self._start_accounting(log, env)
            self.procs["slurmctld"] = subprocess.Popen([_sbin("slurmctld"), "-D", "-f", str(self.conf)],
                                                       stdout=log, stderr=log, env=env)
            self.procs["slurmd"] = subprocess.Popen([_sbin("slurmd"), "-D", "-f", str(self.conf), "-N", "localhost"],
                                                    stdout=log, stderr=log, env=env)
            _wait(lambda: self.node_state() == "idle", 30, "the node did not become idle")
        except BaseException:
            self.stop()
            raise

    def _start_accounting(self, log, env: dict) -> None:
        """MariaDB on 127.0.0.1 (its own data directory and port), then slurmdbd, then the
        cluster's name in the accounting database."""
        d = self.dir
        data = d / "mysql"
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        sock = d / "run" / "mysql.sock"
        self.procs["mariadbd"] = subprocess.Popen(
            [_sbin("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={self.db_port}",
             "--bind-address=127.0.0.1", "--user=root", f"--pid-file={d}/run/mariadbd.pid",
             f"--log-error={d}/log/mariadbd.log", "--innodb-buffer-pool-size=64M", "--skip-log-bin"],
            stdout=log, stderr=log, env=env)
        sql = ("CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'sci-test'; "
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
        _wait(lambda: subprocess.run(["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root", "-e", sql],
                                     capture_output=True, timeout=10).returncode == 0, 60, "MariaDB did not start")
        dbd = d / "etc" / "slurmdbd.conf"
        dbd.write_text(SLURMDBD_CONF.format(d=d, dbd_port=self.dbd_port, db_port=self.db_port))
        dbd.chmod(0o600)
        self.procs["slurmdbd"] = subprocess.Popen([_sbin("slurmdbd"), "-D"], stdout=log, stderr=log, env=env)
        _wait(lambda: self.client("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0, 60,
              "slurmdbd did not start")
        self.client("sacctmgr", "-i", "add", "cluster", "scitest")

    def node_state(self) -> str:
        proc = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%T"], capture_output=True, text=True,
                              env=self.client_env(), timeout=10)
        return proc.stdout.strip()

    def stop(self) -> None:
        """Cancel every job of this cluster, let their steps end, then stop our daemons by PID."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.client("scancel", "--user", "root", "--full", check=False)
                _wait(lambda: not self.queue(), 30, "")
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- looking at it ---------------------------------------------------------------------
    def client(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(argv), capture_output=True, text=True, env=self.client_env(), timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def queue(self) -> list[dict[str, str]]:
        """The jobs still pending or running: id, name, state (array tasks one a line)."""
        out = self.client("squeue", "-h", "-r", "-o", "%i|%j|%T").stdout
        return [dict(zip(("id", "name", "state"), line.split("|"))) for line in out.splitlines() if line.strip()]

    def completed(self) -> list[dict[str, str]]:
        """Every finished job, from the job-completion file: one dict of its KEY=VALUE fields."""
        try:
            text = self.jobcomp.read_text()
        except FileNotFoundError:
            return []
        return [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in text.splitlines() if line]


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.1)
    if what:
        raise RuntimeError(what)


def wait_until(predicate, timeout_s: float = 30.0, step_s: float = 0.2) -> bool:
    """Poll `predicate` until it holds; a hang guard, not a timing assertion."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def slurm_cluster_fixture(accounting: bool = False):
    """A session-scoped fixture body: skip (with the reason) where SLURM cannot run here."""
    import pytest

    cluster = SlurmCluster(accounting=accounting)
    try:
        cluster.start()
    except Unavailable as exc:
        shutil.rmtree(cluster.dir, ignore_errors=True)
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.cleanup()
