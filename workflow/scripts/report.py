"""Stage report: one HTML page per video, for a reviewer checking a dub.

The reviewer usually has the page and little else (a mail attachment, a USB stick,
``snakemake --report``), so the page carries everything itself: the CSS, the timeline as
a base64 PNG, no scripts, fonts or network links. The one exception is the per-line audio
(``out/<name>.report/``, cut by the report_clips stage): a film's clips would make the
page tens of MB, so they are files beside it, and without them the page still works.

Transcript and translation text is untrusted (it comes from the audio and from hand
edits), so the page is rendered by Jinja2 with autoescape (``workflow/report/``): a value
reaches the page unescaped only where this module marks it ``Markup``.

What is shown is read and joined in ``dubflow.qa_data``; the plot is ``dubflow.qa_timeline``.
"""

import base64
import logging
import math
import os
from pathlib import Path
from urllib.parse import quote

import jinja2
from markupsafe import Markup, escape

from dubflow.atomic import write_text
from dubflow.errors import InputError
from dubflow.languages import language_name
from dubflow.qa_data import (LOUDNESS_TOLERANCE_LU, NO_SPEAKER, DubLine, Language, Timing,
                             clock, load_json, load_languages, loudness_verdict, number,
                             read_benchmarks, read_manifest, speaker_order, summary_counts, video_duration)
from dubflow.qa_timeline import PALETTE, panel_length, timeline_png
from dubflow.records import read_transcript
from dubflow.rttm import Turn, read_rttm

STAGE = "report"
TEMPLATES = Path(__file__).resolve().parents[1] / "report"
TEMPLATE = "qa_page.html.j2"
# flag -> (badge class, label); k-sp and k-tr are the badges of the row highlights
FLAG_LABELS = {"condensed": ("bo", "condensed"), "voice_faster": ("bo", "voice faster"),
               "borrowed": ("bo", "borrowed"), "led": ("bo", "started early"),
               "sped_up": ("sp", "sped up"), "trimmed": ("tr", "trimmed"),
               "unvoiced": ("bo", "not voiced")}
log = logging.getLogger(__name__)


def fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return pattern.format(value) if value is not None else "–"


def breakable(spec: str) -> Markup:
    """A voice spec escaped, with line-break chances after its : + @ and commas, so a long
    blend wraps between its parts instead of widening the table."""
    return Markup("").join(escape(ch) + Markup("<wbr>") if ch in ":+@," else escape(ch)
                           for ch in spec)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(clock=clock, fmt=fmt, breakable=breakable)
    return env


# --- what each part of the page shows ---------------------------------------------------


def facts(name: str, transcript: dict, turns: list[Turn], languages: list[Language],
          duration: float, estimated: bool, streams: dict | None) -> list[tuple[str, str]]:
    source = str(transcript.get("language") or "unknown")
    probability = number(transcript.get("language_probability"))
    source_text = f"{source} — {language_name(source)}"
    if probability is not None:
        source_text += f" (p = {probability:.2f})"
    targets = ", ".join(f"{lang.code} — {language_name(lang.code)}"
                        for lang in languages) or "none"
    named = {t.speaker for t in turns} - {NO_SPEAKER}
    length = f"{clock(duration)} ({duration:.1f} s)"
    if estimated:
        length += ", estimated from the last speech: transcript.json has no duration_s"
    segments = transcript.get("segments") or []
    low = sum(1 for s in segments if s.get("low_confidence"))
    rows = [
        ("Video", name),
        ("Source language", source_text),
        ("Target languages", targets),
        ("Speakers", str(len(named)) if named else "not labelled (no diarization)"),
        ("Duration", length),
        ("Source segments", f"{len(segments)} ({low} low-confidence)"),
    ]
    dubbed = (streams or {}).get("dubbed")
    if dubbed:
        rows.insert(2, ("Dubbed audio stream", (
            f"#{dubbed.get('index')} {dubbed.get('codec')}, {dubbed.get('channels')} ch, "
            f"{dubbed.get('language') or 'untagged'}"
            + (f" '{dubbed['title']}'" if dubbed.get("title") else "")
            + f": {dubbed.get('why')} (of {streams.get('audio_streams')} audio streams)")))
    return rows


def timeline(turns: list[Turn], languages: list[Language], speakers: list[str],
             duration: float) -> dict | None:
    if duration <= 0 or not speakers:
        return None
    png = base64.b64encode(timeline_png(turns, languages, speakers, duration)).decode("ascii")
    span = panel_length(duration)
    note = ("Each row is one speaker: first the source speech from the diarization, then "
            "each target language's dub lines where the mix placed them.")
    if span < duration:
        note += f" The video is cut into panels of {clock(span, 0)}, read top to bottom."
    return {"png": png, "note": note}


def line_row(line: DubLine, clips: dict) -> dict:
    """What one table row needs beyond the line; kept small, a film has thousands."""
    marks = (("sp", "sped_up" in line.flags), ("tr", "trimmed" in line.flags),
             ("uv", "unvoiced" in line.flags), ("lc", line.low_confidence))
    classes = [c for c, hit in marks if hit]
    if "sp" in classes and "tr" in classes:
        classes.remove("sp")  # one highlight per row: trimmed is the stronger warning
    over = (line.natural_s is not None and line.slot_s is not None
            and line.natural_s > line.slot_s + 1e-3)
    return {
        "line": line,
        "classes": classes,
        "over": over,
        "confidence": (f"low ASR confidence ({line.confidence_note})"
                       if line.confidence_note else "low ASR confidence"),
        "borrowed": fmt(line.borrowed_s) if line.borrowed_s else "",
        # ×1.00 on every untouched line would only hide the ones that were sped up.
        "speed": fmt(line.speed, "×{:.2f}") if line.speed and abs(line.speed - 1) >= 0.005
        else "",
        "clips": {"source": clips.get("source"), "dub": clips.get("dub")},
    }


def voice_rows(voices: dict) -> list[dict]:
    """Who dubs whom: each speaker's pitch in the source beside their dub voice's."""
    rows = []
    for speaker, v in sorted(voices.items()):
        source, dub = number(v.get("source_f0_hz")), number(v.get("voice_f0_hz"))
        rows.append({"speaker": speaker, "source_f0": fmt(source, "{:.0f}"),
                     "voice": str(v.get("voice")), "voice_f0": fmt(dub, "{:.0f}"),
                     "apart": f"{abs(math.log2(dub / source)):.2f}" if source and dub else "–"})
    return rows


def language_view(lang: Language, clips: dict) -> dict:
    counts = summary_counts(lang)
    max_speed = number(counts["max_speed"])
    low = sum(line.low_confidence for line in lang.lines)
    model = " / ".join(x for x in (lang.backend, lang.model) if x)
    sped_up = number(counts["sped_up"])
    shown = [f"{len(lang.lines)} lines", f"translated by {model}" if model else "",
             f"{counts['lines']} voiced" if lang.has_fit else "",
             f"{counts['borrowed']} borrowed silence",
             f"{counts['sped_up']} sped up"
             + (f" (max ×{max_speed:.2f})" if max_speed is not None and sped_up else ""),
             f"{counts['trimmed']} trimmed", f"{low} from low-confidence source"]
    return {"code": lang.code, "title": language_name(lang.code), "has_fit": lang.has_fit,
            "facts": " · ".join(fact for fact in shown if fact),
            "voices": voice_rows(lang.voices),
            "rows": [line_row(line, clips.get(line.key) or {}) for line in lang.lines]}


def loudness_rows(languages: list[Language]) -> list[dict]:
    rows = []
    for lang in languages:
        verdict_class, verdict = loudness_verdict(lang.loudness)
        rows.append({"code": lang.code, "verdict_class": verdict_class, "verdict": verdict,
                     "cells": [fmt(number(lang.loudness.get(k)), "{:.1f}") for k in
                               ("input_i", "output_i", "target_lufs", "output_tp",
                                "true_peak_db")]})
    return rows


def separation_view(separation: dict | None) -> dict | None:
    """How much of the original dialogue the bed under the dub still holds."""
    if not separation:
        return None
    bleed = number(separation.get("bleed_db"))
    return {"method": str(separation.get("method")),
            "rtf": fmt(number(separation.get("rtf")), "{:.3f}"),
            "figure": (f"{bleed:.1f} dB relative to the source's" if bleed is not None
                       else "not measured (no speech found in the first minutes)")}


def render(name: str, transcript: dict, turns: list[Turn], languages: list[Language],
           timings: list[Timing], separation: dict | None = None,
           streams: dict | None = None, clips: dict | None = None,
           clips_url: str = "") -> str:
    """The whole page as one string; pure, so tests need no files but the template.

    ``clips`` is the clips folder's manifest (language -> line key -> files) and
    ``clips_url`` that folder relative to the page, already URL-quoted.
    """
    segments = transcript.get("segments") or []
    speakers = speaker_order(turns, segments, languages)
    if not turns:
        # An empty RTTM (diarization off or failed quietly): fall back to the transcript.
        turns = [Turn(number(s.get("start")) or 0.0, number(s.get("end")) or 0.0,
                      str(s.get("speaker") or NO_SPEAKER)) for s in segments]
    duration, estimated = video_duration(transcript, turns, languages)
    clips = clips or {}
    return environment().get_template(TEMPLATE).render(
        name=name,
        palette=PALETTE,
        colours={speaker: i for i, speaker in enumerate(speakers)},
        facts=facts(name, transcript, turns, languages, duration, estimated, streams),
        timeline=timeline(turns, languages, speakers, duration),
        languages=[language_view(lang, clips.get(lang.code) or {}) for lang in languages],
        flag_labels=FLAG_LABELS,
        clips_url=clips_url,
        loudness=loudness_rows(languages),
        tolerance=f"{LOUDNESS_TOLERANCE_LU:g}",
        separation=separation_view(separation),
        timings=timings,
        total_s=sum(t.seconds for t in timings),
        duration=duration,
    )


def relative_url(folder: str | Path, page: str | Path) -> str:
    """The clips folder as a URL relative to the page (both in out/: "<name>.report")."""
    relative = os.path.relpath(Path(folder).resolve(), Path(page).resolve().parent)
    return "/".join(quote(part) for part in Path(relative).parts)


def build(name: str, transcript: str | Path, rttm: str | Path, translations: list,
          fits: list, benchmarks: list, output_html: str | Path,
          separation: list | None = None, streams: str | Path | None = None,
          clips: str | Path | None = None) -> None:
    """Read every stage's output for one video and write out/{name}.report.html."""
    transcript_doc = read_transcript(transcript, STAGE)
    if not Path(rttm).is_file():
        raise InputError(
            f"{rttm} is missing, so the report stage cannot draw who speaks when; run the "
            f"diarize stage first (snakemake {rttm})"
        )
    turns = read_rttm(rttm)
    languages = load_languages(translations, fits, transcript_doc.get("segments") or [])
    timings = read_benchmarks(benchmarks)
    separation_doc = load_json(separation[0], "separate") if separation else None
    streams_doc = load_json(streams, "extract") if streams else None
    page = render(name, transcript_doc, turns, languages, timings, separation_doc,
                  streams_doc, read_manifest(clips),
                  relative_url(clips, output_html) if clips else "")
    write_text(output_html, page)
    log.info("%s: %d languages, %d lines, %d benchmark files, %.0f kB",
             output_html, len(languages), sum(len(lang.lines) for lang in languages),
             len(timings), len(page.encode("utf-8")) / 1024)


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        build,
        name=sm.wildcards.name,
        transcript=sm.input.transcript,
        rttm=sm.input.rttm,
        translations=list(sm.input.translations),
        fits=list(sm.input.fits),
        benchmarks=list(sm.input.benchmarks),
        output_html=sm.output.html,
        separation=list(sm.input.separation),
        streams=sm.input.streams,
        clips=sm.input.clips,
    )
