"""What the QA page shows, read from the stages' files and joined line by line.

Kept apart from the rendering (report.py) and the plot (qa_timeline.py) so that the
page's clips (report_clips.py) join lines exactly as the page does, and so that this part
imports nothing heavier than the standard library.

translation.json and fit.json are read through dubflow.records, which reads a figure a
half-finished or older fit.json lacks as None: it shows as "–", not a crash.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

from dubflow import records
from dubflow.errors import InputError
from dubflow.records import FitRow, TranslationLine, language_of, number
from dubflow.rttm import Turn

STAGE_ORDER = ("extract", "separate", "diarize", "speaker_ids", "transcribe", "translate",
               "subtitles", "synthesize", "mix", "mux", "report")
NO_SPEAKER = "(unlabelled)"  # diarization off or failed: lines still get a row
#: Flags in the order the page shows them; others follow, sorted.
FLAG_ORDER = ("condensed", "voice_faster", "borrowed", "led", "sped_up", "trimmed", "unvoiced")
LOUDNESS_TOLERANCE_LU = 1.0
#: What a DubLine takes from its fit.json row as it is (None where the row lacks it).
FIT_FIGURES = ("slot_s", "available_s", "natural_s", "borrowed_s", "speed", "trimmed_s", "played_s")
MANIFEST = "clips.json"  # in the clips folder: language -> line key -> clip files
log = logging.getLogger(__name__)


@dataclass
class DubLine:
    """One translated line joined with how the mix placed it (fit.json may lack any key)."""

    id: str
    speaker: str
    start: float
    end: float  # end of the source slot, from the translation
    source: str
    text: str
    edited: bool = False
    voice: str = ""
    slot_s: float | None = None
    available_s: float | None = None  # slot plus the silence after it that may be borrowed
    natural_s: float | None = None
    borrowed_s: float | None = None
    speed: float | None = None
    trimmed_s: float | None = None
    played_s: float | None = None
    played_start: float | None = None  # fit.json's start: the line's start minus any lead
    placed: bool = True  # False: fit.json has no row for it, so no audio was placed
    flags: list[str] = field(default_factory=list)
    low_confidence: bool = False
    confidence_note: str = ""
    full_text: str = ""  # the whole translation when the voiced text was condensed
    dropped_words: str = ""  # what a cut line lost (estimated)

    @property
    def key(self) -> str:
        """The line's id, or its start time when it has none: what the clips are filed by."""
        return self.id or f"@{self.start:.3f}"

    @property
    def placed_end(self) -> float:
        """Where the dubbed audio stops: natural length at its speed, minus any trim.

        fit.json's ``played_s`` says it directly; without it the figures are combined, and
        the mix never plays past the available time; without a natural length the slot is
        the best guess.
        """
        if self.played_s is not None:
            return self.start + max(self.played_s, 0.0)
        if self.natural_s is None:
            return self.start + (self.slot_s if self.slot_s is not None else self.end - self.start)
        played = self.natural_s / (self.speed or 1.0) - (self.trimmed_s or 0.0)
        if self.available_s is not None:
            played = min(played, self.available_s)
        return self.start + max(played, 0.0)


@dataclass
class Language:
    code: str
    backend: str = ""
    model: str = ""
    lines: list[DubLine] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    loudness: dict = field(default_factory=dict)
    has_fit: bool = False
    voices: dict = field(default_factory=dict)  # speaker -> source F0, voice, voice F0


@dataclass
class Timing:
    stage: str
    seconds: float
    max_rss_mb: float | None


# --- reading ------------------------------------------------------------------------------


def load_json(path: str | Path, producer: str) -> dict:
    """A JSON object another stage wrote, or one sentence naming it and that stage."""
    document = records.read_json(path, "report", producer)
    if not isinstance(document, dict):
        raise InputError(
            f"{path} is JSON but not an object; delete it and re-run so the {producer} stage "
            f"writes it again"
        )
    return document


def segment_index(segments: list[dict]) -> tuple[list[float], list[dict]]:
    ordered = sorted((s for s in segments if number(s.get("start")) is not None),
                     key=lambda s: number(s["start"]))
    return [number(s["start"]) for s in ordered], ordered


def source_segment(index: tuple[list[float], list[dict]], start: float, end: float) -> dict | None:
    """The transcript segment a line was translated from: the one it overlaps most.

    Lines keep their segment's times, but a hand edit may shift them a little, so this
    looks at overlap rather than equality; segments are sorted, so only neighbours count.
    """
    starts, ordered = index
    best, best_overlap = None, 0.0
    i = bisect_right(starts, end)
    for segment in ordered[max(0, i - 8):i]:
        seg_start = number(segment["start"])
        seg_end = number(segment.get("end"))
        overlap = min(end, seg_end if seg_end is not None else seg_start) - max(start, seg_start)
        if overlap > best_overlap:
            best, best_overlap = segment, overlap
    return best


def merge_lines(lines: list[TranslationLine], fit: records.Fit | None,
                segments: list[dict]) -> list[DubLine]:
    """Translation lines with their fit figures and the confidence of their source segment;
    a fit row whose line is gone from the translation still gets a row."""
    fits = {row.id: row for row in fit.lines} if fit else {}
    by_id = {line.id: line for line in lines}
    index = segment_index(segments)
    merged = []
    for key in [*by_id, *(key for key in fits if key not in by_id)]:
        line, f = by_id.get(key), fits.get(key) or FitRow(key)
        start = (line.start if line else 0.0) or f.start or 0.0
        end = line.end if line else start + (f.slot_s or 0.0)
        flags = set(f.flags) | {flag for flag, on in (
            ("unvoiced", fit and key not in fits),  # the mix had nothing to play, e.g. empty text
            ("condensed", line and line.full_text),
            ("voice_faster", f.engine_speed)) if on}
        segment = source_segment(index, start, end) or {}
        logprob = number(segment.get("avg_logprob"))
        merged.append(DubLine(
            id=key,
            speaker=(line and line.speaker) or f.speaker or NO_SPEAKER,
            start=start,
            end=end,
            source=line.source if line else "",
            text=(line and line.text) or f.text or "",
            edited=bool(line and line.edited),
            voice=f.voice or "",
            **{name: getattr(f, name) for name in FIT_FIGURES},
            played_start=f.start if key in fits else None,
            placed=key in fits,
            flags=[flag for flag in FLAG_ORDER if flag in flags]
            + sorted(flags - set(FLAG_ORDER)),
            low_confidence=bool(segment.get("low_confidence")),
            confidence_note=f"avg log-prob {logprob:.2f}" if logprob is not None else "",
            full_text=(line and line.full_text) or "",
            dropped_words=str((f.cut or {}).get("dropped_words") or ""),
        ))
    return sorted(merged, key=lambda line: (line.start, line.id))


def load_languages(translations: list, fits: list, segments: list[dict],
                   stage: str = "report") -> list[Language]:
    """One Language per translation, paired with the fit.json from the same folder."""
    fit_docs = {language_of(p): records.read_fit(p, stage) for p in fits}
    languages = []
    for path in translations:
        doc = records.read_translation(path, stage)
        code = language_of(path) or doc.target_language
        fit = fit_docs.get(code)
        languages.append(Language(
            code=doc.target_language or code,
            backend=doc.backend,
            model=doc.model,
            lines=merge_lines(doc.lines, fit, segments),
            summary=fit.summary if fit else {},
            loudness=fit.loudness if fit else {},
            has_fit=fit is not None,
            voices=fit.voices if fit else {},
        ))
    return languages


def read_benchmarks(files: list) -> list[Timing]:
    """Snakemake's benchmark files; unreadable or half-written ones are left out, not fatal.

    The rule declares them as inputs (so the table does not depend on which jobs happened
    to finish first), but a file from an older Snakemake or a hand edit may still be
    broken. With ``benchmark: repeat(...)`` a file has several rows; their mean time and
    peak memory are shown.
    """
    timings = []
    for tsv in map(Path, files):
        try:
            with open(tsv, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle, delimiter="\t"))
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            log.warning("skipping benchmark %s: %s", tsv, error)
            continue
        seconds = [s for s in (number(r.get("s")) for r in rows) if s is not None]
        if not seconds:
            log.warning("skipping benchmark %s: no 's' column with a number", tsv)
            continue
        rss = [m for m in (number(r.get("max_rss")) for r in rows) if m is not None]
        timings.append(Timing(tsv.stem, sum(seconds) / len(seconds), max(rss) if rss else None))
    return sorted(timings, key=stage_rank)


def stage_rank(timing: Timing) -> tuple[int, str]:
    """Pipeline order (extract before transcribe ...), so the table reads like the graph."""
    base = timing.stage.split(".")[0]
    return (STAGE_ORDER.index(base) if base in STAGE_ORDER else len(STAGE_ORDER), timing.stage)


def video_duration(transcript: dict, turns: list[Turn],
                   languages: list[Language]) -> tuple[float, bool]:
    """(seconds, estimated): transcript.json's duration, else the end of the last speech."""
    recorded = number(transcript.get("duration_s"))
    if recorded is not None and recorded > 0:
        return recorded, False
    ends = [t.end for t in turns]
    ends += [number(s.get("end")) or 0.0 for s in transcript.get("segments") or []]
    ends += [max(line.end, line.placed_end) for lang in languages for line in lang.lines]
    return max(ends, default=0.0), True


def speaker_order(turns: list[Turn], segments: list[dict], languages: list[Language]) -> list[str]:
    """Speakers by first appearance, so colours and rows follow the story, not the labels."""
    first: dict[str, float] = {}
    items = [(t.start, t.speaker) for t in turns]
    items += [(number(s.get("start")) or 0.0, s.get("speaker") or NO_SPEAKER) for s in segments]
    items += [(line.start, line.speaker) for lang in languages for line in lang.lines]
    for start, speaker in items:
        first[str(speaker)] = min(start, first.get(str(speaker), math.inf))
    return sorted(first, key=lambda s: (first[s], s))


def summary_counts(lang: Language) -> dict:
    """fit.json's summary where present, else counted from the lines themselves.

    fit.json counts only voiced lines ("lines"); the table has every translated line.
    """
    speeds = [line.speed for line in lang.lines if line.speed is not None]
    counted = {
        "lines": sum(line.placed for line in lang.lines),
        "borrowed": sum("borrowed" in line.flags for line in lang.lines),
        "sped_up": sum("sped_up" in line.flags for line in lang.lines),
        "trimmed": sum("trimmed" in line.flags for line in lang.lines),
        "max_speed": max(speeds, default=None),
    }
    return {key: lang.summary.get(key, value) if lang.summary.get(key) is not None else value
            for key, value in counted.items()}


def loudness_verdict(loudness: dict) -> tuple[str, str]:
    """(css class, text): pass needs output within ±1 LU of target and true peak ≤ limit."""
    out_i, target = number(loudness.get("output_i")), number(loudness.get("target_lufs"))
    out_tp, limit = number(loudness.get("output_tp")), number(loudness.get("true_peak_db"))
    problems, unknown = [], []
    if out_i is None or target is None:
        unknown.append("loudness")
    elif abs(out_i - target) > LOUDNESS_TOLERANCE_LU + 1e-9:
        problems.append(f"{out_i - target:+.1f} LU off target")
    if out_tp is None or limit is None:
        unknown.append("true peak")
    elif out_tp > limit + 1e-9:
        problems.append(f"true peak {out_tp - limit:+.1f} dB over limit")
    if problems:
        return "fail", "✗ fail: " + ", ".join(problems)
    if unknown:
        return "na", "not measured: " + " and ".join(unknown)
    return "pass", "✓ pass"


def clock(seconds: float, decimals: int = 1) -> str:
    """h:mm:ss.s for long films, m:ss.s otherwise: what a reviewer types into a player."""
    minutes, secs = divmod(round(max(seconds, 0.0), decimals), 60)
    hours, minutes = divmod(int(minutes), 60)
    width = 3 + decimals if decimals else 2
    secs_text = f"{secs:0{width}.{decimals}f}"
    return f"{hours}:{minutes:02d}:{secs_text}" if hours else f"{minutes}:{secs_text}"


def read_manifest(folder: str | Path | None) -> dict:
    """language -> line key -> clip files; empty without a folder (the page then has no
    players), and one sentence when the folder is there but its manifest is not."""
    if not folder:
        return {}
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} cannot be read ({error}); delete {folder} and re-run so the "
                         f"report_clips stage cuts the clips again") from None
    return manifest if isinstance(manifest, dict) else {}


def benchmark_files(name: str, settings: dict, source: str, rules) -> list[str]:
    """The benchmark files the page's timing table shows: every stage of the video but the
    report's own (written after the page). The report rule declares them, so the table is
    the same whichever jobs happened to finish first (and the page comes after the mkv).

    ``rules`` is Snakemake's ``rules`` object (each rule's benchmark pattern, with any
    module prefix); anything with those attributes does in a test.
    """
    targets = list(settings["target_languages"])
    spoken = [source] + [lang for lang in targets if lang != source]
    once = [rules.extract, rules.diarize, rules.speaker_ids, rules.transcribe, rules.mux,
            rules.report_clips]
    if settings["mix"]["separation"] != "none":
        once.append(rules.separate)
    per_language = [(rule, targets) for rule in (rules.translate, rules.synthesize, rules.mix)]
    per_language.append((rules.subtitles, spoken))
    if "ass" in settings["subtitles"]["formats"]:
        per_language.append((rules.subtitles_ass, spoken))
    files = [str(rule.benchmark).format(name=name) for rule in once]
    files += [str(rule.benchmark).format(name=name, lang=lang)
              for rule, languages in per_language for lang in languages]
    return files
