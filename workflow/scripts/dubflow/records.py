"""The records stages pass to each other, one definition each.

A transcript (transcript.json) is read by translate, subtitles and the report and written
by transcribe and speaker_split; they all use these classes, so a field is added in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: list[Word]
    avg_logprob: float
    no_speech_prob: float
    speaker: str | None = None
    low_confidence: bool = False


@dataclass
class Transcript:
    language: str
    language_probability: float | None
    language_source: str  # "detected", "configured" or "undetermined" (no speech)
    duration_s: float
    model: str
    segments: list[Segment] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
