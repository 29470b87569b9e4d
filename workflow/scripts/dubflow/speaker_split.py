"""Give every word a speaker and cut segments where the speaker changes.

Whisper segments follow pauses, not people: one segment often holds the end of one
speaker's line and the start of the reply. The dub needs one voice per line, so a word
belongs to the speaker whose turn overlaps it most (or, for a word that falls in a gap
between turns, the nearest turn), and a segment never spans two speakers.

Whisper's word timestamps are loosest at sentence edges: the first word after a pause is
often stamped from the end of the previous word, across the whole pause and into the
previous speaker's turn ("recordings. The studio" gave "The" 27.03-28.13 s for a reply that
started at 28.07 s). So a sentence's first word belongs to the turn that holds its end,
and a sentence's last word to the turn that holds its start; the overlap rule decides
only when that point lies in no turn, and for every word inside a sentence.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import replace

from dubflow.rttm import Turn
from dubflow.records import Segment, Word
from dubflow.sentences import SENTENCE_END

# A word further than this from any turn is left unassigned and takes its neighbours'.
MAX_GAP_S = 1.0
# Turns starting before a word that are still checked for overlap (long turns with
# interjections inside them are the reason this is more than one).
LOOKBACK_TURNS = 64

# How far inside a word its anchor point lies, so a turn that merely touches it is not taken.
ANCHOR_INSET_S = 0.03
# A word edge this far outside its turn is moved to the turn's edge; closer ones are kept,
# because diarization's own boundaries are only this exact.
CLIP_TOLERANCE_S = 0.1


def anchor_turn(word: Word, turns: list[Turn], starts: list[float], anchor: str) -> Turn | None:
    """The innermost turn holding the word's ``anchor`` ("start" or "end") point, if any."""
    inset = min(ANCHOR_INSET_S, (word.end - word.start) / 2)
    point = word.start + inset if anchor == "start" else word.end - inset
    j = bisect.bisect_right(starts, point)
    holding = [t for t in turns[max(0, j - LOOKBACK_TURNS):j] if t.end > point]
    return max(holding, key=lambda t: t.start) if holding else None


def clip_to_turn(word: Word, turn: Turn, anchor: str) -> Word:
    """A sentence-edge word stretched across a pause, cut back to the turn that holds it,
    so the line (and its dub) does not start inside the previous speaker's turn."""
    if anchor == "end" and word.start < turn.start - CLIP_TOLERANCE_S:
        return replace(word, start=turn.start)
    if anchor == "start" and word.end > turn.end + CLIP_TOLERANCE_S:
        return replace(word, end=turn.end)
    return word


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
        words, labels = [], []
        for k, word in enumerate(segment.words):
            anchor = _anchor(segment.words, k)
            turn = anchor and anchor_turn(word, turns, starts, anchor)
            words.append(clip_to_turn(word, turn, anchor) if turn else word)
            labels.append(turn.speaker if turn else word_speaker(word, turns, starts))
        runs = itertools.groupby(zip(words, _fill_unassigned(labels)), key=lambda pair: pair[1])
        for speaker, pairs in runs:
            run = [word for word, _ in pairs]
            result.append(replace(
                segment,
                start=run[0].start,
                end=run[-1].end,
                text="".join(w.word for w in run).strip(),
                words=run,
                speaker=speaker,
            ))
    for index, segment in enumerate(result):
        segment.id = index
    return result


def _anchor(words: list[Word], k: int) -> str | None:
    """"end" for a sentence's first word, "start" for its last, None inside or for both."""
    first = k == 0 or words[k - 1].word.strip().endswith(SENTENCE_END)
    last = words[k].word.strip().endswith(SENTENCE_END)
    if first == last:
        return None
    return "end" if first else "start"


def _fill_unassigned(labels: list[str | None]) -> list[str | None]:
    """A word with no turn nearby takes the previous word's speaker (or the next one's)."""
    filled = list(itertools.accumulate(labels, lambda prev, label: prev if label is None else label))
    first = next((label for label in filled if label is not None), None)  # only leading Nones left
    return [first if label is None else label for label in filled]
