"""Stage subtitles: SubRip and WebVTT files from a transcript (or, later, a translation).

A Whisper segment can run 30 s; a readable cue is at most two lines of ~42 characters
shown for at most ~7 s. Cues are cut at word boundaries using the word timestamps, so each
cue appears exactly while its words are spoken, preferring breaks after punctuation.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pysubs2

from atomic import write_text

STAGE = "subtitles"
BREAK_AFTER = tuple(".,;:?!…。，、？！")
MIN_CUE_S = 1.0
log = logging.getLogger(__name__)


@dataclass
class Cue:
    start: float
    end: float
    text: str  # lines joined with "\n"


def timed_words(segment: dict) -> list[tuple[float, float, str]]:
    """The segment's words with their times.

    The text is the source of truth: someone who corrects a misheard word edits
    ``text`` in transcript.json. Word times are used only while the words still spell
    that text; otherwise the text is spread over the segment by length.
    """
    words = [w for w in segment.get("words") or [] if w["word"].strip()]
    if words and "".join(w["word"] for w in words).split() == segment["text"].split():
        return [(w["start"], w["end"], w["word"]) for w in words]
    tokens = [" " + t for t in segment["text"].split()]
    total = sum(len(t) for t in tokens) or 1
    span = segment["end"] - segment["start"]
    out, t = [], segment["start"]
    for token in tokens:
        length = span * len(token) / total
        out.append((t, t + length, token))
        t += length
    return out


def wrap(text: str, max_chars: int, max_lines: int) -> str:
    """Break text into at most max_lines lines, as balanced as word boundaries allow."""
    if len(text) <= max_chars or max_lines == 1 or " " not in text:
        return text
    words = text.split(" ")
    best, best_width = text, len(text)
    for i in range(1, len(words)):
        first, rest = " ".join(words[:i]), " ".join(words[i:])
        rest = wrap(rest, max_chars, max_lines - 1)
        width = max(len(line) for line in [first, *rest.split("\n")])
        if width < best_width:
            best, best_width = f"{first}\n{rest}", width
    return best


def segment_cues(segment: dict, max_chars: int, max_lines: int, max_duration: float) -> list[Cue]:
    """Greedy cue building over words, closing early after punctuation past half a cue."""
    budget = max_chars * max_lines
    cues: list[Cue] = []
    current: list[tuple[float, float, str]] = []

    def close() -> None:
        if current:
            text = "".join(w for _, _, w in current).strip()
            cues.append(Cue(current[0][0], current[-1][1], wrap(text, max_chars, max_lines)))
            current.clear()

    for word in timed_words(segment):
        candidate = "".join(w for _, _, w in current + [word]).strip()
        too_long = len(candidate) > budget or (current and word[1] - current[0][0] > max_duration)
        if current and too_long:
            close()
        current.append(word)
        text = "".join(w for _, _, w in current).strip()
        if text.endswith(BREAK_AFTER) and len(text) > budget / 2:
            close()
    close()
    return cues


def build_cues(segments: list[dict], max_chars: int, max_lines: int,
               max_duration: float) -> list[Cue]:
    cues = [c for s in segments for c in segment_cues(s, max_chars, max_lines, max_duration)]
    # Very short cues flash by: hold each for MIN_CUE_S, but never into the next one.
    for cue, following in zip(cues, cues[1:] + [None]):
        limit = following.start if following else cue.start + MIN_CUE_S
        cue.end = max(cue.end, min(cue.start + MIN_CUE_S, limit))
    return cues


def to_ssafile(cues: list[Cue]) -> pysubs2.SSAFile:
    subs = pysubs2.SSAFile()
    for cue in cues:
        subs.append(pysubs2.SSAEvent(
            start=pysubs2.make_time(s=cue.start),
            end=pysubs2.make_time(s=cue.end),
            text=cue.text.replace("\n", r"\N"),
        ))
    return subs


def run(text_json: str | Path, srt_path: str | Path, vtt_path: str | Path,
        subtitles: dict) -> list[Cue]:
    """Read segments (transcript) or lines (translation) and write both formats."""
    document = json.loads(Path(text_json).read_text(encoding="utf-8"))
    segments = document.get("segments", document.get("lines", []))
    cues = build_cues(segments, subtitles["max_chars_per_line"], subtitles["max_lines"],
                      subtitles["max_duration_s"])
    subs = to_ssafile(cues)
    write_text(srt_path, subs.to_string("srt"))
    write_text(vtt_path, subs.to_string("vtt"))
    log.info("%d segments -> %d cues", len(segments), len(cues))
    return cues


if "snakemake" in globals():
    from rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        run,
        text_json=sm.input.text,
        srt_path=sm.output.srt,
        vtt_path=sm.output.vtt,
        subtitles=sm.params.subtitles,
    )
