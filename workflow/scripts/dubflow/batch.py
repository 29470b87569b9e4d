"""What happened to each video of a batch run, and what the run was configured with.

Snakemake's own summary is per job; a person running a season wants one line per video:
done, or failed with the reason and the log to read. The reason is the one-sentence error
the stage wrote to its log (see rule_runner.py), so nothing here has to guess.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from dubflow.atomic import write_text
from dubflow.redaction import masked_config

ERROR_LINE = re.compile(r"^\S+ \S+ ERROR [\w.]+: (?!detail:)(?P<sentence>.+)$")


@dataclass
class VideoStatus:
    name: str
    status: str  # done | failed | not built
    reason: str
    log: str


def first_error(log: Path) -> str | None:
    """The first error sentence a stage wrote to its log, if any."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        match = ERROR_LINE.match(line)
        if match:
            return match["sentence"].strip()
    return None


def video_status(name: str, out_dir: str | Path = "out", logs_dir: str | Path = "logs") -> VideoStatus:
    """A video failed when a stage logged an error after its mkv was last built."""
    mkv = Path(out_dir) / f"{name}.mkv"
    built = mkv.stat().st_mtime if mkv.is_file() else None
    failures = []
    for log in Path(logs_dir, name).glob("*.log"):
        sentence = first_error(log)
        if sentence and (built is None or log.stat().st_mtime > built):
            failures.append((log.stat().st_mtime, log, sentence))
    if failures:
        _, log, sentence = min(failures)  # the first stage that failed explains the rest
        return VideoStatus(name, "failed", sentence, str(log))
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
    for row in rows:
        writer.writerow([row.name, row.status, row.reason, row.log])
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
