"""Shorter wording for lines that would not fit their time: fillers out, short phrasings in.

Portuguese runs 20-30 % longer than English, and a dubbed line has only the time its
speaker took. Before any audio is made, the translate stage predicts each translation's
spoken length from its characters and the voice's pace; a line that would not fit even
at the faster pace the voice may use is condensed, in this order:

1. fillers and discourse markers ("you know", "I mean", "well", "oh") are dropped from
   the *source* where they stand as fillers (at the start, or set off by commas), and the
   shorter source is translated again;
2. a per-language table replaces long phrasings in the translation with shorter ones
   ("neste momento" -> "agora").

The condensed text is voiced; the full one is kept (``full_text``) for the QA page and for
subtitles that have time to show it. Pure functions: strings and numbers in and out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A filler counts only where it is one: at the start of the line or after a sentence or
# clause mark, and followed by a comma, a sentence mark or the end.
_BEFORE = r"(?:^|(?<=[.!?;:,—–]))\s*"
_AFTER = r"\s*(?:,|(?=[.!?;:—–])|$)"


@dataclass(frozen=True)
class Span:
    """What the budget needs of a line: its id and source times."""

    id: str
    start: float
    end: float


def rooms(spans: list[Span], gap_s: float = 0.05) -> dict[str, float]:
    """Seconds each line may last before the next one starts: its slot and the silence
    after it (the mix may also lead into the silence before; that is not counted here)."""
    ordered = sorted(spans, key=lambda s: (s.start, s.id))
    out = {}
    for span, following in zip(ordered, ordered[1:] + [None]):
        limit = following.start - gap_s if following else float("inf")
        out[span.id] = max(span.end - span.start, limit - span.start, 0.0)
    return out


def predicted_s(text: str, chars_per_second: float) -> float:
    """Spoken length of ``text`` at the voice's own pace (letters and digits only count:
    spaces and punctuation take little time)."""
    return sum(ch.isalnum() for ch in text) / chars_per_second


def drop_fillers(text: str, fillers: list[str]) -> str:
    """``text`` without the fillers that stand as fillers; unchanged if there are none."""
    words = [re.escape(f) for f in sorted(fillers, key=len, reverse=True)]
    out, before = text, None
    while out != before:  # "Well, I mean, ..." loses both, one after the other
        before = out
        for word in words:
            out = re.sub(_BEFORE + word + _AFTER, " ", out, flags=re.IGNORECASE).lstrip()
    for word in words:  # "it is, you know, fine": one comma goes with the filler
        out = re.sub(rf",\s*{word}\s*,", " ", out, flags=re.IGNORECASE)
    for filler in fillers:  # "At least you know, they...": a phrase set off by its comma
        if " " in filler.strip():
            out = re.sub(rf"(?<!\w){re.escape(filler)}\s*,\s*", "", out, flags=re.IGNORECASE)
    out = re.sub(r"\s+([,.!?;:])", r"\1", out)
    out = re.sub(r"([,;:])\s*(?=[,.!?;:])", "", out)
    out = re.sub(r"^[\s,;:.!?]+", "", re.sub(r"\s{2,}", " ", out)).strip()
    if out and text[:1].isupper() and out[:1].islower():
        out = out[0].upper() + out[1:]
    return out if any(ch.isalnum() for ch in out) else text


def shorten(text: str, table: dict[str, str]) -> str:
    """Whole-phrase replacements from the language's shortening table, longest first."""
    def same_case(short: str):
        return lambda m: short[:1].upper() + short[1:] if m.group(0)[:1].isupper() else short

    out = text
    for long, short in sorted(table.items(), key=lambda item: len(item[0]), reverse=True):
        out = re.sub(rf"(?<!\w){re.escape(long)}(?!\w)", same_case(short), out,
                     flags=re.IGNORECASE)
    return re.sub(r"\s{2,}", " ", re.sub(r"\s+([,.!?;:])", r"\1", out)).strip()
