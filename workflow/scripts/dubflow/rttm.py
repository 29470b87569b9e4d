"""RTTM, the standard "who spoke when" file (NIST), read and written without heavy imports.

Kept apart from the diarization code so that transcribe, the report and tests can read
speaker turns without importing torch and pyannote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dubflow.atomic import write_text
from dubflow.errors import InputError


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str


def recording_id(name: str) -> str:
    """RTTM fields are whitespace-separated, so a video name with spaces is folded."""
    return re.sub(r"\s+", "_", name.strip()) or "recording"


def format_rttm(turns: list[Turn], recording: str) -> str:
    uri = recording_id(recording)
    return "".join(
        f"SPEAKER {uri} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n"
        for t in sorted(turns, key=lambda t: (t.start, t.speaker))
    )


def write_rttm(path: str | Path, turns: list[Turn], recording: str) -> None:
    write_text(path, format_rttm(turns, recording))


def read_rttm(path: str | Path) -> list[Turn]:
    turns = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            start, duration, speaker = float(fields[3]), float(fields[4]), fields[7]
        except (IndexError, ValueError):
            raise InputError(
                f"{path} line {number} is not an RTTM SPEAKER line; delete the file and "
                f"re-run so the diarize stage writes it again"
            ) from None
        turns.append(Turn(start, start + duration, speaker))
    return sorted(turns, key=lambda t: t.start)
