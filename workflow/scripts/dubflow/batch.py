"""What happened to each video of a batch run, and what the run was configured with.

Snakemake's own summary is per job; a person running a season wants one line per video:
done, or failed with the reason and the log to read. The reason is the one-sentence error
the stage recorded (stage_record.py, written by the rule runner), or, for a job killed from
outside, what the scheduler said (out of memory, time limit, cancelled: cluster.py), so
nothing here parses log text.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import yaml

from dubflow import cluster, stage_record
from dubflow.atomic import write_text
from dubflow.redaction import masked_config


@dataclass
class VideoStatus:
    name: str
    status: str  # done | failed | not built
    reason: str
    log: str


def failure(record: stage_record.StageRecord, slurm_logs: Path) -> tuple[str, str]:
    """The sentence and the log to read for a stage that did not finish."""
    if record.status == "failed":
        return record.reason, record.log
    if record.slurm_job_id:
        kill = cluster.why_killed(record.slurm_job_id, slurm_logs)
        if kill.reason:
            detail = f", {kill.detail}" if kill.detail else ""
            return (f"stage {record.stage} was killed by SLURM: {kill.reason} "
                    f"(job {record.slurm_job_id}{detail})", kill.log or record.log)
        return (f"stage {record.stage} was ended by SLURM (job {record.slurm_job_id}) "
                f"without a reason in its log", kill.log or record.log)
    if record.status == "stopped":
        return f"stage {record.stage} was stopped (SIGTERM) before it finished", record.log
    return (f"stage {record.stage} was killed before it finished (out of memory or a signal; "
            f"the machine's kernel log says which)", record.log)


def video_status(name: str, out_dir: str | Path = "out", logs_dir: str | Path = "logs",
                 slurm_logs: Path = cluster.SLURM_LOGS) -> VideoStatus:
    """A video failed when a stage did not finish after its mkv was last built."""
    mkv = Path(out_dir) / f"{name}.mkv"
    built = mkv.stat().st_mtime if mkv.is_file() else None
    records = stage_record.read_all(logs_dir, name)
    failures = [(record.started, *failure(record, slurm_logs)) for record in records
                if record.status != "done" and (built is None or record.started > built)]
    recorded_jobs = {record.slurm_job_id for record in records}
    for when, rule, job_id, log in cluster.failed_job_logs(name, slurm_logs, since=built):
        retried = any(record.stage == rule and record.status == "done" and record.started > when
                      for record in records)
        if not retried and job_id.split("_")[0] not in recorded_jobs:  # died before it started
            kill = cluster.why_killed(job_id, slurm_logs, log)
            why = f"killed by SLURM: {kill.reason}" if kill.reason else "failed before the stage started"
            failures.append((when, f"the SLURM job of {rule} {why} (job {job_id}); its log "
                                   f"says more", str(log)))
    if failures:
        _, reason, log = min(failures)  # the first failure explains the rest
        return VideoStatus(name, "failed", reason, log)
    if built is not None:
        return VideoStatus(name, "done", "", str(mkv))
    return VideoStatus(name, "not built", "no stage has run or failed for it yet", "")


def summarise(names: list[str], out_dir: str | Path = "out",
              logs_dir: str | Path = "logs") -> list[VideoStatus]:
    return [video_status(name, out_dir, logs_dir) for name in names]


def write_summary(rows: list[VideoStatus], path: str | Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["name", "status", "reason", "log"])
    writer.writerows([row.name, row.status, row.reason, row.log] for row in rows)
    write_text(path, buffer.getvalue())


def format_summary(rows: list[VideoStatus]) -> str:
    counts = {s: sum(r.status == s for r in rows) for s in ("done", "failed", "not built")}
    lines = [f"dubflow batch: {counts['done']} done, {counts['failed']} failed, "
             f"{counts['not built']} not built"]
    for row in rows:
        detail = f": {row.reason} (log: {row.log})" if row.status == "failed" else ""
        lines.append(f"  {row.name}: {row.status}{detail}")
    return "\n".join(lines)


def write_effective_config(config: dict, path: str | Path) -> None:
    """The merged config this run uses, with secrets masked, for the record."""
    text = "# effective dubflow config of the last run (secrets masked)\n"
    text += yaml.safe_dump(masked_config(config), sort_keys=False, allow_unicode=True)
    write_text(path, text)
