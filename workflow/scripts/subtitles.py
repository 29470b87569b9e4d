"""Stage subtitles: SubRip and WebVTT files from a transcript (or, later, a translation).

A Whisper segment can run 30 s; a readable cue is at most two lines of ~42 characters
shown for at most ~7 s. Cues are cut at word boundaries using the word timestamps, so each
cue appears exactly while its words are spoken, preferring breaks after punctuation.
"""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pysubs2

from dubflow import records
from dubflow.atomic import write_text

STAGE = "subtitles"
BREAK_AFTER = tuple(".,;:?!…。，、？！")
MIN_CUE_S = 1.0
log = logging.getLogger(__name__)


@dataclass
class Cue:
    start: float
    end: float
    text: str  # lines joined with "\n"
    speaker: str | None = None


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


def speaker_label(speaker: str | None, names: dict | None) -> str:
    """A viewer-facing label: a configured name, else "Speaker 1" for SPEAKER_00."""
    if not speaker:
        return ""
    if names and speaker in names:
        return str(names[speaker])
    digits = "".join(ch for ch in speaker if ch.isdigit())
    return f"Speaker {int(digits) + 1}" if digits else speaker


def segment_cues(segment: dict, max_chars: int, max_lines: int, max_duration: float,
                 label: str = "") -> list[Cue]:
    """Greedy cue building over words, closing early after punctuation past half a cue.

    A speaker label rides along as a zero-length first word, so it counts against the
    line budget like any other text and is wrapped with it.
    """
    budget = max_chars * max_lines
    cues: list[Cue] = []
    current: list[tuple[float, float, str]] = []
    speaker = segment.get("speaker")

    def close() -> None:
        if current:
            text = "".join(w for _, _, w in current).strip()
            cues.append(Cue(current[0][0], current[-1][1], wrap(text, max_chars, max_lines),
                            speaker))
            current.clear()

    words = timed_words(segment)
    if label and words:
        words.insert(0, (words[0][0], words[0][0], f"{label}:"))
    for word in words:
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


def reading_time(cue: Cue, max_cps: float) -> float:
    """Seconds a viewer needs to read the cue at max_cps characters per second."""
    return len(cue.text) / max_cps


def pace(cues: list[Cue], max_chars: int, max_lines: int, max_duration: float,
         max_cps: float, min_gap: float) -> list[Cue]:
    """Give fast cues time to be read, without ever overlapping the next cue.

    A cue that is too fast is first extended into the silence after it (keeping a small
    gap, and at most max_duration); if that is not enough, it is merged with the next cue
    of the same speaker when the two fit one cue's budget, so the pair shares their time.
    Speech is never delayed: starts stay where the words start.
    """
    budget = max_chars * max_lines
    out: list[Cue] = []
    i = 0
    while i < len(cues):
        cue = Cue(cues[i].start, cues[i].end, cues[i].text, cues[i].speaker)
        i += 1
        while True:
            following = cues[i] if i < len(cues) else None
            limit = following.start - min_gap if following else cue.start + max_duration
            wanted = cue.start + max(MIN_CUE_S, reading_time(cue, max_cps))
            cue.end = max(cue.end, min(wanted, limit, cue.start + max_duration))
            if cue.end - cue.start >= reading_time(cue, max_cps) or following is None:
                break
            joined = f"{cue.text} {following.text}".replace("\n", " ")
            if (following.speaker != cue.speaker or len(joined) > budget
                    or following.end - cue.start > max_duration):
                break
            cue = Cue(cue.start, following.end, wrap(joined, max_chars, max_lines), cue.speaker)
            i += 1
        out.append(cue)
    # Words can touch across segments; a cue never runs into the next one.
    for cue, following in zip(out, out[1:]):
        cue.end = max(cue.start, min(cue.end, following.start))
    return out


def readable_text(segment: dict, max_cps: float) -> dict:
    """A condensed line (translate voiced a shorter ``text`` and kept ``full_text``) shows
    its full translation when that can be read in the time it is spoken, else what is
    heard."""
    full = segment.get("full_text")
    span = max(segment["end"] - segment["start"], 1e-3)
    if full and len(full) / span <= max_cps:
        return {**segment, "text": full, "words": []}
    return segment


def lead_in(cues: list[Cue], hard_max_cps: float, max_lead: float, min_gap: float) -> None:
    """A cue still too fast to read appears up to ``max_lead`` s before its words: in the
    silence before it, then in time the previous cue can spare (it keeps what it needs
    to be read at ``hard_max_cps``). Shown a moment early beats shown unreadable."""
    for i, cue in enumerate(cues):
        need = reading_time(cue, hard_max_cps) - (cue.end - cue.start)
        if need <= 0:
            continue
        wanted = max(cue.start - min(need, max_lead), 0.0)
        if i:
            previous = cues[i - 1]
            spare_end = previous.start + reading_time(previous, hard_max_cps)
            previous.end = min(previous.end, max(spare_end, wanted - min_gap))
            wanted = max(wanted, previous.end + min_gap)
        cue.start = min(cue.start, wanted)


def within_media(cues: list[Cue], media_end: float | None) -> list[Cue]:
    """No cue runs past the end of the media: a cue there would lengthen the mkv."""
    if not media_end:
        return cues
    kept = [cue for cue in cues if cue.start < media_end - 0.05]
    for cue in kept:
        cue.end = min(cue.end, media_end)
    return kept


def build_cues(segments: list[dict], subtitles: dict,
               media_end: float | None = None) -> list[Cue]:
    """Cues for ``segments`` as the ``subtitles:`` config section asks (reading speed,
    lines, early starts), none past ``media_end``."""
    max_chars, max_lines = subtitles["max_chars_per_line"], subtitles["max_lines"]
    max_duration, hard_max_cps = subtitles["max_duration_s"], subtitles["hard_max_cps"]
    cues: list[Cue] = []
    previous = None
    for segment in segments:
        segment = readable_text(segment, hard_max_cps)
        speaker = segment.get("speaker")
        label = (speaker_label(speaker, subtitles["speaker_names"])
                 if subtitles["speaker_labels"] and speaker != previous else "")
        previous = speaker
        cues += segment_cues(segment, max_chars, max_lines, max_duration, label)
    cues = pace(cues, max_chars, max_lines, max_duration, subtitles["max_cps"],
                subtitles["min_gap_s"])
    lead_in(cues, hard_max_cps, subtitles["max_lead_s"], subtitles["min_gap_s"])
    return within_media(cues, media_end)


def cps(cue: Cue) -> float:
    """Characters per second of a cue as shown (line breaks count as a space)."""
    return len(cue.text) / max(cue.end - cue.start, 1e-3)


def to_ssafile(cues: list[Cue]) -> pysubs2.SSAFile:
    subs = pysubs2.SSAFile()
    subs.extend(pysubs2.SSAEvent(start=pysubs2.make_time(s=cue.start),
                                 end=pysubs2.make_time(s=cue.end),
                                 text=cue.text.replace("\n", r"\N")) for cue in cues)
    return subs


def cues_for(text_json: str | Path, subtitles: dict) -> tuple[list[dict], list[Cue]]:
    """Read segments (transcript) or lines (translation) and cut them into cues."""
    document = records.read_json(text_json, STAGE, "transcribe or translate")
    if isinstance(document, dict) and "lines" in document and "segments" not in document:
        document = asdict(records.read_translation(text_json, STAGE, document))
    segments = document.get("segments", document.get("lines", []))
    cues = build_cues(segments, subtitles, media_end=document.get("duration_s"))
    return segments, cues


def run(text_json: str | Path, subtitles: dict, srt_path: str | Path | None = None,
        vtt_path: str | Path | None = None, ass_path: str | Path | None = None) -> list[Cue]:
    """Write the asked-for formats (SubRip, WebVTT, Advanced SubStation) with the same cues."""
    segments, cues = cues_for(text_json, subtitles)
    subs = to_ssafile(cues)
    for path, fmt in ((srt_path, "srt"), (vtt_path, "vtt"), (ass_path, "ass")):
        if path:
            write_text(path, subs.to_string(fmt))
    fast = [c for c in cues if cps(c) > subtitles["hard_max_cps"] + 0.05]
    log.info("%d segments -> %d cues, fastest %.1f characters/s", len(segments), len(cues),
             max((cps(c) for c in cues), default=0.0))
    if fast:
        log.warning("%d cue(s) read faster than %s characters/s (first at %.1f s): the text "
                    "is longer than the time it is spoken; shorten it in edits/",
                    len(fast), subtitles["hard_max_cps"], fast[0].start)
    return cues


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        run,
        text_json=sm.input.text,
        subtitles=sm.params.subtitles,
        srt_path=sm.output.get("srt"),
        vtt_path=sm.output.get("vtt"),
        ass_path=sm.output.get("ass"),
    )
