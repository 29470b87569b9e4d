"""Give every word a speaker and cut segments where the speaker changes.

Whisper segments follow pauses, not people: one segment often holds the end of one
speaker's line and the start of the reply. The dub needs one voice per line, so a word
belongs to the speaker whose turn overlaps it most (or, for a word that falls in a gap
between turns, the nearest turn), and a segment never spans two speakers.
"""

from __future__ import annotations

import bisect
from dataclasses import replace

from rttm import Turn
from transcribe import Segment, Word

# A word further than this from any turn is left unassigned and takes its neighbours'.
MAX_GAP_S = 1.0
# Turns starting before a word that are still checked for overlap (long turns with
# interjections inside them are the reason this is more than one).
LOOKBACK_TURNS = 64


def word_speaker(word: Word, turns: list[Turn], starts: list[float]) -> str | None:
    """Speaker with the most overlap; else the nearest turn within MAX_GAP_S."""
    i = bisect.bisect_right(starts, word.end)
    best, best_overlap, nearest, nearest_gap = None, 0.0, None, MAX_GAP_S
    # Turns that start before the word ends; walk back while they can still overlap.
    for turn in reversed(turns[max(0, i - LOOKBACK_TURNS):i]):
        overlap = min(word.end, turn.end) - max(word.start, turn.start)
        if overlap > best_overlap:
            best, best_overlap = turn.speaker, overlap
        gap = max(turn.start - word.end, word.start - turn.end, 0.0)
        if gap < nearest_gap:
            nearest, nearest_gap = turn.speaker, gap
    if i < len(turns) and turns[i].start - word.end < nearest_gap:
        nearest = turns[i].speaker
    return best or nearest


def split_by_speaker(segments: list[Segment], turns: list[Turn]) -> list[Segment]:
    """Segments re-cut at speaker changes, each labelled, ids renumbered in time order."""
    if not turns:
        return segments
    turns = sorted(turns, key=lambda t: t.start)
    starts = [t.start for t in turns]
    result: list[Segment] = []
    for segment in segments:
        if not segment.words:
            mid = Word(segment.start, segment.end, segment.text, 1.0)
            result.append(replace(segment, speaker=word_speaker(mid, turns, starts)))
            continue
        labels = [word_speaker(w, turns, starts) for w in segment.words]
        labels = _fill_unassigned(labels)
        run_start = 0
        for i in range(1, len(labels) + 1):
            if i == len(labels) or labels[i] != labels[run_start]:
                words = segment.words[run_start:i]
                result.append(replace(
                    segment,
                    start=words[0].start,
                    end=words[-1].end,
                    text="".join(w.word for w in words).strip(),
                    words=words,
                    speaker=labels[run_start],
                ))
                run_start = i
    for index, segment in enumerate(result):
        segment.id = index
    return result


def _fill_unassigned(labels: list[str | None]) -> list[str | None]:
    """A word with no turn nearby takes the previous word's speaker (or the next one's)."""
    filled = list(labels)
    for i in range(1, len(filled)):
        if filled[i] is None:
            filled[i] = filled[i - 1]
    for i in range(len(filled) - 2, -1, -1):
        if filled[i] is None:
            filled[i] = filled[i + 1]
    return filled
