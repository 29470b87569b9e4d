"""A real single-node SLURM cluster on this machine, for `make test-cluster`.

Debian's slurm-wlm and munge, started by hand (CI machines have no systemd), configured the
way a small cluster without an accounting database is: `accounting_storage/none`, so `sacct`
exists but cannot answer, which is the case that used to hang a run. Memory is enforced
without cgroups (containers rarely delegate them): `jobacct_gather/linux` samples each job
every second and `OverMemoryKill` kills a job past its `--mem`, as SLURM does on clusters
without the cgroup plugin.

Spool, state and daemon logs live in one folder. The config goes where SLURM looks by
default, /etc/slurm/slurm.conf (any file there is kept aside and put back on stop): a
`SLURM_CONF` variable is not enough, because Snakemake's jobstep plugin removes every
SLURM_* variable but the job's identity before its nested `srun`, which then finds no
configuration. Only the daemons this module started are stopped.

With ``accounting=True`` the cluster also has an accounting database, as most production
clusters do: MariaDB (its own data folder and port, started by hand) behind slurmdbd, so
``sacct`` answers. Debian's mariadb-server and slurmdbd packages provide both.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
SLURMDBD_CONF = SLURM_CONF.with_name("slurmdbd.conf")
MARIADB_PORT = 16306
SLURMDBD_PORT = 16819
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def missing_tools(accounting: bool = False) -> list[str]:
    """The binaries a single-node cluster needs that this machine lacks."""
    needed = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
    if accounting:
        needed += ("slurmdbd", "sacct", "sacctmgr", "mariadbd", "mariadb-install-db", "mariadb")
    return [tool for tool in needed if shutil.which(tool) is None]


def node_hardware() -> tuple[str, int, int]:
    """Host name, CPUs and memory (MB) as slurmd itself detects them."""
    text = subprocess.run(["slurmd", "-C"], capture_output=True, text=True,
                          check=True, timeout=30).stdout
    cpus = int(re.search(r"\bCPUs=(\d+)", text)[1])
    memory = int(re.search(r"\bRealMemory=(\d+)", text)[1])
    return socket.gethostname().split(".")[0], cpus, memory


def slurm_conf(folder: Path, host: str, cpus: int, memory_mb: int, min_job_age: int,
               accounting: bool = False) -> str:
    # config_overrides: the node may be declared with more CPUs than the machine has
    storage = (f"accounting_storage/slurmdbd\nAccountingStorageHost=localhost\n"
               f"AccountingStoragePort={SLURMDBD_PORT}" if accounting else "accounting_storage/none")
    return f"""\
ClusterName=dubflowtest
SlurmdParameters=config_overrides
SlurmctldHost={host}
SlurmUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType={storage}
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
MinJobAge={min_job_age}
KillWait=5
ReturnToService=2
SchedulerType=sched/backfill
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmNode:
    """A running single-node cluster; `env` is what client commands need."""

    folder: Path
    host: str
    cpus: int
    memory_mb: int
    started: list[subprocess.Popen | int] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(SLURM_CONF)}

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> str:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True,
                              check=check, timeout=timeout).stdout

    def stop(self) -> None:
        """Stop the daemons this node started (newest first), and nothing else."""
        for pid_file in ("slurmd.pid", "slurmctld.pid", "slurmdbd.pid", "mariadb.pid"):
            _terminate(_read_pid(self.folder / pid_file))
        for started in reversed(self.started):
            _terminate(started if isinstance(started, int) else started.pid)
        self.started.clear()
        for conf in (SLURM_CONF, SLURMDBD_CONF):
            _put_back(conf, self.folder)


def _put_aside(conf: Path, folder: Path, text: str) -> None:
    """Write ``text`` to ``conf``, keeping any file already there in ``folder``."""
    (folder / conf.name).write_text(text, encoding="utf-8")
    if conf.is_file():
        shutil.move(conf, folder / f"{conf.name}.kept")
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(text, encoding="utf-8")
    conf.chmod(0o600 if conf == SLURMDBD_CONF else 0o644)  # slurmdbd refuses a readable one


def _put_back(conf: Path, folder: Path) -> None:
    kept = folder / f"{conf.name}.kept"
    if kept.is_file():
        shutil.move(kept, conf)
    elif conf.is_file() and (folder / conf.name).is_file() and \
            conf.read_text() == (folder / conf.name).read_text():
        conf.unlink()


def start(folder: Path, min_job_age: int = 300, memory_mb: int | None = None,
          cpus: int | None = None, accounting: bool = False) -> SlurmNode:
    """Start munge (if not already running), slurmctld and slurmd; wait for the node to be idle.

    ``cpus`` above the machine's lets two 2-thread jobs share a 2-core machine: dubflow's
    jobs on short test videos mostly wait (job start-up, status polls), so running the two
    videos' jobs side by side halves the test's time without overloading the cores.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    host, detected_cpus, detected_mb = node_hardware()
    cpus = cpus or detected_cpus
    # Leave the rest of the machine's memory to the test process itself.
    node = SlurmNode(folder, host, cpus, memory_mb or detected_mb // 2)
    _put_aside(SLURM_CONF, folder,
               slurm_conf(folder, host, cpus, node.memory_mb, min_job_age, accounting))
    try:
        if not _munge_answers():
            node.started.append(_start_munge())
        if accounting:
            _start_accounting(node)
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(SLURM_CONF)], env=node.env,
                           check=True, timeout=30, capture_output=True)
        _wait_idle(node)
    except BaseException:
        node.stop()
        raise
    return node


def _start_accounting(node: SlurmNode) -> None:
    """MariaDB in the node's folder, a database user for slurmdbd, slurmdbd, the cluster."""
    data = node.folder / "mariadb"
    socket_path = node.folder / "mariadb.sock"
    if not data.is_dir():
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                        "--auth-root-authentication-method=socket"],
                       check=True, timeout=120, capture_output=True)
    subprocess.Popen(["mariadbd", "--no-defaults", f"--datadir={data}", "--user=root",
                      f"--socket={socket_path}", f"--port={MARIADB_PORT}",
                      "--bind-address=127.0.0.1", f"--pid-file={node.folder}/mariadb.pid",
                      f"--log-error={node.folder}/mariadb.log"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    sql = ("CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'dubflow-test';"
           "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
    _retry(lambda: subprocess.run(["mariadb", f"--socket={socket_path}", "-u", "root", "-e", sql],
                                  check=True, timeout=10, capture_output=True), "MariaDB")
    _put_aside(SLURMDBD_CONF, node.folder, f"""\
DbdHost=localhost
DbdPort={SLURMDBD_PORT}
SlurmUser=root
AuthType=auth/munge
PidFile={node.folder}/slurmdbd.pid
LogFile={node.folder}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={MARIADB_PORT}
StorageUser=slurm
StoragePass=dubflow-test
StorageLoc=slurm_acct_db
""")
    subprocess.run(["slurmdbd"], env=node.env, check=True, timeout=30, capture_output=True)
    # slurmctld registers with slurmdbd only as a cluster the database already knows
    _retry(lambda: node.run("sacctmgr", "-i", "show", "cluster"), "slurmdbd")
    node.run("sacctmgr", "-i", "add", "cluster", "dubflowtest", check=False)


def _retry(call, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            call()
            return
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer within {timeout_s:.0f} s: "
                                   f"{getattr(error, 'stderr', '')}") from error
            time.sleep(0.5)


def _munge_answers() -> bool:
    try:
        encoded = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        if encoded.returncode != 0:
            return False
        return subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_munge() -> int:
    MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.is_file():
        subprocess.run(["mungekey", "--create"], check=True, timeout=30)
        shutil.chown(key, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True, timeout=30)
    for _ in range(50):
        if _munge_answers():
            return int(Path("/run/munge/munged.pid").read_text().strip())
        time.sleep(0.2)
    raise RuntimeError("munged did not answer within 10 s")


def _wait_idle(node: SlurmNode, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = node.run("sinfo", "-h", "-N", "-o", "%T", check=False).strip()
        if state == "idle":
            return
        time.sleep(0.5)
    logs = "\n".join((node.folder / name).read_text(errors="replace")[-2000:]
                     for name in ("slurmctld.log", "slurmd.log")
                     if (node.folder / name).is_file())
    raise RuntimeError(f"the SLURM node is {state or 'unknown'} after {timeout_s:.0f} s:\n{logs}")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _terminate(pid: int | None, wait_s: float = 15) -> None:
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
