"""SLURM facts dubflow needs: can a run learn when its jobs end, do its jobs fit a node, and
why the scheduler killed a job.

The SLURM executor plugin learns that a job ended from ``sacct`` (needs an accounting
database) or ``squeue`` (remembers finished jobs only for ``MinJobAge`` seconds). On a
cluster without accounting where ``MinJobAge`` is short, neither answers and the plugin waits
forever, silently; and a job asking for more CPUs or memory than any node has stays PENDING
forever, silently. Both are checked before the first job is submitted (``preflight``).

A job killed by the scheduler writes no dubflow sentence; slurmstepd writes its own line into
the job's log (``.snakemake/slurm_logs/<rule>/<wildcards>/<jobid>.log``), with or without an
accounting database: that line is the reason the batch summary shows.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dubflow.errors import ConfigError

SLURM_LOGS = Path(".snakemake/slurm_logs")
# the plugin's own rule: squeue is used only when MinJobAge >= 3 x its first poll (40 s)
SQUEUE_MIN_JOB_AGE = 120

# slurmstepd's lines in a job log, most specific first
KILL_LINES = (
    (re.compile(r"exceeded memory limit \((\d+) > (\d+)\)"), "out of memory"),
    (re.compile(r"oom[-_ ]kill|Out Of Memory|Exceeded job memory limit", re.I), "out of memory"),
    (re.compile(r"CANCELLED AT \S+ DUE TO TIME LIMIT"), "time limit"),
    (re.compile(r"CANCELLED AT \S+ DUE TO PREEMPTION"), "preempted"),
    (re.compile(r"CANCELLED AT \S+ DUE TO NODE FAIL"), "node failure"),
    (re.compile(r"CANCELLED AT \S+"), "cancelled"),
)
SQUEUE_STATES = {"OUT_OF_MEMORY": "out of memory", "TIMEOUT": "time limit",
                 "CANCELLED": "cancelled", "PREEMPTED": "preempted", "NODE_FAIL": "node failure",
                 "DEADLINE": "deadline", "BOOT_FAIL": "node failure"}


@dataclass
class Kill:
    reason: str  # out of memory | time limit | cancelled | ... | "" when unknown
    detail: str  # e.g. "used 615 MB of 200 MB"
    log: str  # the job's SLURM log, if found


def job_log(job_id: str, logs_dir: Path = SLURM_LOGS) -> Path | None:
    """The SLURM log the executor plugin asked sbatch to write for this job."""
    if not job_id or not logs_dir.is_dir():
        return None
    found = sorted(logs_dir.rglob(f"{job_id}.log")) or sorted(logs_dir.rglob(f"{job_id}_*.log"))
    return found[-1] if found else None


def kill_from_log(text: str) -> tuple[str, str]:
    """The scheduler's reason and detail from slurmstepd's lines in a job log."""
    for pattern, reason in KILL_LINES:
        if match := pattern.search(text):
            if reason == "out of memory" and match.groups():
                used, limit = (int(value) / 2**20 for value in match.groups())
                return reason, f"used {used:.0f} MB of its {limit:.0f} MB"
            return reason, ""
    return "", ""


def slurm_output(command: list[str]) -> str:
    """What a SLURM command printed; '' when it is missing, fails or hangs."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def squeue_state(job_id: str) -> str:
    """The job's state while slurmctld still remembers it (MinJobAge), else ''."""
    if not job_id:
        return ""
    output = slurm_output(["squeue", "-h", "--states=all", "-j", job_id, "-o", "%T"]).strip()
    return output.splitlines()[0] if output else ""


def why_killed(job_id: str, logs_dir: Path = SLURM_LOGS, log: Path | None = None) -> Kill:
    """Why SLURM ended this job: its log's slurmstepd line, else squeue's state.

    ``log`` when the caller already found the job's log (no second search of logs_dir).
    """
    log = log or job_log(job_id, logs_dir)
    reason = detail = ""
    if log is not None:
        reason, detail = kill_from_log(log.read_text(encoding="utf-8", errors="replace"))
    if not reason:
        reason = SQUEUE_STATES.get(squeue_state(job_id), "")
    return Kill(reason, detail, str(log) if log else "")


def failed_job_logs(name: str, logs_dir: Path = SLURM_LOGS, since: float | None = None
                    ) -> list[tuple[float, str, str, Path]]:
    """(time, rule, job id, log) of this video's SLURM jobs whose logs remain.

    The plugin deletes the log of every job that completed, so a log left over belongs to a
    job that failed (or still runs) - also one that died before dubflow's code started
    (a node without the shared filesystem, a broken srun), which left no stage record.
    The folder is the job's wildcards joined by '_': the video's name, then its language.
    """
    found = []
    for log in logs_dir.glob("*/*/*.log"):  # none when there is no such folder
        wildcards, rule = log.parent.name, log.parent.parent.name
        if not re.fullmatch(rf"{re.escape(name)}(_[a-z]{{2,3}})?", wildcards):
            continue
        mtime = log.stat().st_mtime
        if since is None or mtime > since:
            found.append((mtime, rule.split("_", 1)[-1], log.stem, log))
    return sorted(found)


# ---- preflight ---------------------------------------------------------------------------


def slurm_config() -> dict[str, str]:
    """`scontrol show config` as a dict (empty when there is no reachable controller)."""
    text = slurm_output(["scontrol", "show", "config"])
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def min_job_age_s(value: str) -> int | None:
    match = re.match(r"(\d+)\s*([a-z]*)", value.lower())
    if not match:
        return None
    return int(match[1]) * (3600 if match[2] in ("h", "hour", "hours") else 1)


def status_method(requested: str, conf: dict[str, str]) -> tuple[str, str]:
    """Which command the plugin will really poll, and a sentence when that cannot work.

    Mirrors the plugin's choice: it falls back from squeue to sacct when MinJobAge is below
    120 s, and sacct answers nothing without an accounting database.
    """
    age = min_job_age_s(conf.get("MinJobAge", ""))
    accounting = conf.get("AccountingStorageType", "") not in ("", "accounting_storage/none")
    method = requested or "sacct"
    if method == "squeue" and (age is None or age < SQUEUE_MIN_JOB_AGE) and shutil.which("sacct"):
        method = "sacct"
    if method == "sacct" and not shutil.which("sacct"):
        method = "squeue"
    if method == "sacct" and not accounting:
        return method, (
            f"this SLURM cluster has no accounting database and forgets finished jobs after "
            f"MinJobAge={age if age is not None else '?'} s, so Snakemake could never learn that "
            f"a job ended and the run would hang; ask the administrators to set MinJobAge to "
            f"at least {SQUEUE_MIN_JOB_AGE} s in slurm.conf (or to enable slurmdbd)")
    if method == "squeue" and (age is None or age < SQUEUE_MIN_JOB_AGE):
        return method, (
            f"this SLURM cluster forgets finished jobs after MinJobAge={age} s, too soon for "
            f"Snakemake's job status polls (every 40 s or more); ask the administrators to set "
            f"MinJobAge to at least {SQUEUE_MIN_JOB_AGE} s in slurm.conf")
    return method, ""


def node_limits() -> dict[str, tuple[int, int]]:
    """Per partition, the largest node's CPUs and memory (MB); '' is the default partition."""
    limits: dict[str, tuple[int, int]] = {}
    for line in slurm_output(["sinfo", "-h", "-o", "%P|%c|%m"]).splitlines():
        try:
            partition, cpus, memory = line.strip().split("|")
            cpus_n, memory_mb = int(cpus.rstrip("+")), int(memory.rstrip("+"))
        except ValueError:
            continue
        names = [partition.rstrip("*")] + ([""] if partition.endswith("*") else [])
        for name in names:
            old = limits.get(name, (0, 0))
            limits[name] = (max(old[0], cpus_n), max(old[1], memory_mb))
    return limits


def oversized_jobs(jobs: list[tuple[str, str, int, int]],
                   limits: dict[str, tuple[int, int]]) -> list[str]:
    """Sentences for jobs (rule, partition, threads, mem_mb) no node of their partition can run."""
    problems = []
    for rule, partition, threads, mem_mb in jobs:
        if partition not in limits:
            continue
        cpus, memory = limits[partition]
        where = f"partition {partition}" if partition else "the default partition"
        if threads > cpus:
            problems.append(f"rule {rule} asks for {threads} CPUs but the largest node of "
                            f"{where} has {cpus}; run with --cores {cpus} (it caps every job's "
                            f"threads) or lower set-threads in profiles/slurm")
        if mem_mb > memory:
            problems.append(f"rule {rule} asks for {mem_mb} MB but the largest node of {where} "
                            f"has {memory} MB; lower its mem_mb in profiles/slurm (set-resources)")
    return sorted(set(problems))  # one sentence per rule, not per video


def preflight(status_command: str, jobs: list[tuple[str, str, int, int]]) -> list[str]:
    """Check a SLURM run before its first job: log lines to print; ConfigError when it cannot work."""
    conf = slurm_config()
    if not conf:
        return ["dubflow: no SLURM controller answered `scontrol show config`; "
                "the status and node checks were skipped"]
    method, problem = status_method(status_command, conf)
    if problem:
        raise ConfigError(problem)
    problems = oversized_jobs(jobs, node_limits())
    if problems:
        raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more)" if problems[1:] else ""))
    accounting = conf.get("AccountingStorageType", "?").removeprefix("accounting_storage/")
    return [f"dubflow: job status from {method} (accounting: {accounting}; "
            f"MinJobAge {conf.get('MinJobAge', '?')}); every job fits a node"]


def check_workflow(workflow) -> list[str]:
    """`preflight` for a Snakemake run, from `onstart`; nothing unless the executor is slurm."""
    plugin = getattr(workflow, "executor_plugin", None)
    if plugin is None or getattr(plugin, "name", "") != "slurm":
        return []
    jobs = [(job.rule.name, str(job.resources.get("slurm_partition", "") or ""),
             int(job.threads), int(job.resources.get("mem_mb", 0) or 0))
            for job in workflow.dag.needrun_jobs()]
    return preflight(getattr(workflow.executor_settings, "status_command", "") or "", jobs)
