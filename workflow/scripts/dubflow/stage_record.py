"""What each stage job did, as a small JSON record beside its log.

The rule runner writes ``running`` when a stage starts and ``done`` or ``failed`` (with the
one-sentence reason) when it ends. A record still saying ``running`` after the run is over
belongs to a job that was killed from outside: SIGKILL by the out-of-memory killer, a
cluster's time limit or ``scancel``. Its SLURM job id lets the batch summary ask the
scheduler why (see cluster.py). The batch summary reads these records, never log text.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dubflow.atomic import write_text


@dataclass
class StageRecord:
    stage: str
    name: str
    status: str  # running | done | failed | stopped
    log: str
    started: float
    ended: float | None = None
    reason: str = ""
    slurm_job_id: str = ""
    host: str = ""


def record_path(log_path: str | Path) -> Path:
    """logs/ep/mix.pt.log → logs/ep/mix.pt.status.json"""
    log_path = Path(log_path)
    return log_path.with_name(log_path.name.removesuffix(".log") + ".status.json")


def write(record: StageRecord) -> None:
    write_text(record_path(record.log), json.dumps(asdict(record), indent=1) + "\n")


def started(stage: str, name: str, log_path: str | Path) -> StageRecord:
    record = StageRecord(stage=stage, name=name, status="running", log=str(log_path),
                         started=time.time(), slurm_job_id=os.environ.get("SLURM_JOB_ID", ""),
                         host=socket.gethostname())
    write(record)
    return record


def finished(record: StageRecord, status: str, reason: str = "") -> None:
    record.status, record.reason, record.ended = status, reason, time.time()
    write(record)


def read_all(logs_dir: str | Path, name: str) -> list[StageRecord]:
    """Every stage record of one video; unreadable ones (a foreign file) are skipped."""
    records = []
    for path in sorted(Path(logs_dir, name).glob("*.status.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            records.append(StageRecord(**json.loads(path.read_text(encoding="utf-8"))))
    return records
