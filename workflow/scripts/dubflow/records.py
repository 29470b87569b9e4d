"""The records stages pass to each other, one definition each, with one reader and one writer.

transcript.json is written by transcribe and speaker_split; translation.json by translate,
read by synthesize, subtitles, the report and review; tts/lines.json by synthesize, read by
mix and review; fit.json by mix, read by the report, report_clips and review. Readers read
each field by its declared type, so a field is added in one place. A reader takes the
reading stage's name: a file no stage could have written is one sentence naming the file,
that stage and the fix, never a traceback. Writers write atomically, keys in field order:
byte for byte what the stages wrote before they shared this module. Nothing here imports a
stage or anything outside the standard library, so every env has it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dubflow.atomic import write_json
from dubflow.errors import InputError

#: A line id names its WAV in tts/ and its row in an edits file.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --- transcript.json -----------------------------------------------------------------------


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


def read_transcript(path: str | Path, stage: str) -> dict[str, Any]:
    """transcript.json as the stages read it: a mapping whose segments are a list."""
    data = read_json(path, stage, "transcribe")
    if not isinstance(data, dict) or not isinstance(data.get("segments", []), list):
        raise InputError(f"{path} has no 'segments' list (stage {stage}); it was not written by "
                         f"the transcribe stage, so delete it and re-run")
    return data


# --- translation.json ----------------------------------------------------------------------


@dataclass
class TranslationLine:
    """One line per transcript segment, its number the id, so that edits and the TTS cache
    keep pointing at the same line. ``speaker`` is None without diarization."""

    id: str
    speaker: str | None
    start: float
    end: float
    source: str
    text: str = ""
    edited: bool = False
    full_text: str | None = None  # the whole translation, when ``text`` had to be condensed
    condensed_source: str | None = None  # the source without fillers, when that was used


@dataclass
class Translation:
    source_language: str
    target_language: str
    duration_s: float | None  # the media's, from the transcript
    backend: str
    model: str
    lines: list[TranslationLine] = field(default_factory=list)


def read_translation(path: str | Path, stage: str, data: Any = None) -> Translation:
    """``data``: the file already loaded (subtitles reads transcripts too, and looks first).
    A line without times starts and ends at 0 (the synthesize stage always allowed that)."""
    data = read_json(path, stage, "translate") if data is None else data
    lines = _rows(data, "lines", path, stage, "translate",
                  lambda item: TranslationLine(**_values(TranslationLine, item, start=0, end=0)))
    return Translation(**_values(Translation, data, {"lines": lines}))


def write_translation(path: str | Path, translation: Translation) -> dict[str, Any]:
    """Write translation.json; return what was written."""
    return _written(path, asdict(translation))


# --- tts/lines.json ------------------------------------------------------------------------


@dataclass
class TtsLine:
    """A line as the synthesize stage voiced it (``wav`` None: not voiced, e.g. no text)."""

    id: str
    speaker: str
    start: float
    end: float
    text: str
    voice: str  # the voice spec, e.g. "kokoro:jm_kumo@speed=0.92"
    backend: str
    wav: str | None = None  # a file name in tts/
    duration_s: float | None = None
    sample_rate: int | None = None
    cache_key: str | None = None
    cached: bool = False
    # written only when the voice was asked to speak faster than tts.speed
    engine_speed: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _without_none(asdict(self), "engine_speed")


def read_tts_lines(path: str | Path, stage: str) -> list[TtsLine]:
    """tts/lines.json; the WAVs it names are not opened here (the mix stage measures them)."""
    return _rows(read_json(path, stage, "synthesize"), None, path, stage, "synthesize",
                 lambda item: TtsLine(**_values(TtsLine, item)))


def write_tts_lines(path: str | Path, lines: list[TtsLine]) -> list[dict[str, Any]]:
    """Write tts/lines.json; return what was written."""
    return _written(path, [line.to_dict() for line in lines])


# --- fit.json ------------------------------------------------------------------------------


@dataclass
class FitRow:
    """How the mix placed a voiced line (dubflow.fit.Placement, times to the millisecond,
    speed to four decimals) and what the line says. The mix stage keeps adding figures,
    and a half-finished or older fit.json may lack any: a figure that is missing, null,
    text or NaN reads as None (the QA page shows "–"), never as a refused file."""

    id: str
    start: float | None = None  # where the line starts playing: its source start - lead_s
    slot_s: float | None = None
    available_s: float | None = None
    natural_s: float | None = None
    borrowed_s: float | None = None
    speed: float | None = None
    trimmed_s: float | None = None
    flags: list[str] = field(default_factory=list)
    lead_s: float | None = None
    played_s: float | None = None
    text: str | None = None
    speaker: str | None = None
    voice: str | None = None
    engine_speed: float | None = None
    cut: dict | None = None  # written only for a line cut short (mix.cut_record)

    def to_dict(self) -> dict[str, Any]:
        return _without_none(asdict(self), "cut")


@dataclass
class Fit:
    """The placed (voiced) lines, their counts (dubflow.fit.summary), the spans where the
    original dialogue was restored, voices.json, and the loudness figures."""

    lines: list[FitRow] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    restored: list = field(default_factory=list)
    voices: dict = field(default_factory=dict)
    loudness: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lines": [row.to_dict() for row in self.lines]}


def read_fit(path: str | Path, stage: str) -> Fit:
    data = read_json(path, stage, "mix")
    return Fit(**_values(Fit, data, {"lines": _rows(data, "lines", path, stage, "mix", _fit_row)}))


def _fit_row(item: Any) -> FitRow:
    row = FitRow(**_values(FitRow, item))
    if not isinstance(item.get("flags"), list):  # older files: the flags its figures imply
        row.flags = [flag for flag, on in (("borrowed", (row.borrowed_s or 0.0) > 0.005),
                                           ("sped_up", (row.speed or 1.0) > 1.005),
                                           ("trimmed", (row.trimmed_s or 0.0) > 0.005)) if on]
    return row


def write_fit(path: str | Path, fit: Fit) -> dict[str, Any]:
    """Write fit.json; return what was written."""
    return _written(path, fit.to_dict())


# --- reading, shared -------------------------------------------------------------------------


def read_json(path: str | Path, stage: str, producer: str) -> Any:
    """A stage's JSON output, or one sentence naming it, the reading stage and the fix."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} is missing (stage {stage}); run the {producer} stage first "
                         f"(snakemake {path})") from None
    except (OSError, ValueError) as error:
        raise InputError(
            f"{path} cannot be read as JSON (stage {stage}): {error}; delete it and re-run "
            f"so the {producer} stage writes it again"
        ) from None


def _rows(data: Any, key: str | None, path: str | Path, stage: str, producer: str,
          make) -> list:
    """``make`` of each item of ``data[key]`` (of ``data`` for None), ids checked."""
    raw = data if key is None else data.get(key) if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise InputError(
            f"{path} has no {f'{key!r} list' if key else 'list of lines'} (stage {stage}); "
            f"it was not written by the {producer} stage, so delete it and re-run"
        )
    records, seen = [], set()
    for row_number, item in enumerate(raw, start=1):
        try:
            record = make(item)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InputError(
                f"line {row_number} of {path} lacks an 'id' or has non-numeric times (stage "
                f"{stage}); fix that line or re-run the {producer} stage"
            ) from None
        if not SAFE_ID.match(record.id) or record.id in seen:
            problem = "is used twice" if record.id in seen else "cannot name a file"
            raise InputError(
                f"line id {record.id!r} in {path} {problem} (stage {stage}); ids must be "
                f"unique and made of letters, digits, '_', '-' or '.', like 0001"
            )
        seen.add(record.id)
        records.append(record)
    return records


def number(value: Any) -> float | None:
    """A finite float, or None for absent, null, text or NaN (figures that may be missing)."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _seconds(value: Any) -> float:
    """A time: a finite number, else ValueError (the row is refused)."""
    if not math.isfinite(result := float(value)):
        raise ValueError(f"{value!r} is not a time")
    return result


#: How a field of each declared type is read from JSON: times are required, a figure that
#: is not a number is None, and a missing text, flag, list or mapping is empty.
READ_AS = {
    "float": _seconds,
    "float | None": number,
    "str": lambda value: "" if value is None else str(value),
    "str | None": lambda value: None if value is None else str(value),
    "int | None": lambda value: None if value is None else int(value),
    "bool": bool,
    "list[str]": lambda value: [str(x) for x in value] if isinstance(value, list) else [],
    "list": lambda value: value if isinstance(value, list) else [],
    "dict": lambda value: value if isinstance(value, dict) else {},
    "dict | None": lambda value: value if isinstance(value, dict) else None,
}


def _values(cls: type, item: Any, given: dict | None = None, **missing: Any) -> dict:
    """The fields of ``cls`` read from JSON object ``item`` by their declared types, but
    those ``given``; ``missing`` are read when ``item`` lacks them. An id is required."""
    values = dict(given or {})
    for f in fields(cls):
        if f.name not in values:
            value = item[f.name] if f.name == "id" else item.get(f.name, missing.get(f.name))
            values[f.name] = READ_AS[f.type](value)
    return values


def _written(path: str | Path, data: Any) -> Any:
    write_json(path, data)  # atomic
    return data


def _without_none(row: dict[str, Any], key: str) -> dict[str, Any]:
    """``row`` without ``key`` when it is None: a key older files never had stays out."""
    if row[key] is None:
        del row[key]
    return row


def language_of(path: str | Path) -> str:
    """The language a per-language file is for: work/{name}/{lang}/fit.json (dub.mka,
    translation.json ...) -> its folder's name; out/{name}.{lang}.srt -> the part before
    the suffix (a video's name may itself contain dots)."""
    parts = Path(path).name.rsplit(".", 2)
    return parts[1] if len(parts) == 3 else Path(path).parent.name
