"""Lines shaped like sentences: the unit that is translated, voiced and subtitled.

Whisper cuts its segments at pauses and at its 30 s windows, not at sentences: on a real
phone call 4 of 9 segments ended mid-sentence ("At" | "least you know they all call me a
Yankee"), and each fragment, translated alone, lost its meaning before any voice spoke.
So the transcript's segments are rebuilt from Whisper's words: a line ends where a
sentence ends (its punctuation), where the speaker changes, or at a pause so long that
Whisper left the punctuation out. A sentence longer than a dub line should be is cut at
its clauses (, ; : —), else at its longest pause, never inside a word.

Pure: segments in, segments out; the words, their times and speakers are kept as they are.
"""

from __future__ import annotations

from dataclasses import replace

from dubflow.records import Segment, Word

# Punctuation that ends a sentence in Whisper's output (Latin, CJK, Arabic, Devanagari),
# possibly followed by a closing quote or bracket.
SENTENCE_END = tuple(".?!…。？！؟।")
CLOSERS = "\"'”’)]»"
# Punctuation after which a long sentence may be cut into clauses.
CLAUSE_END = tuple(",;:—–、，；：")


def ends_sentence(word: str) -> bool:
    return word.strip().rstrip(CLOSERS).endswith(SENTENCE_END)


def ends_clause(word: str) -> bool:
    return word.strip().rstrip(CLOSERS).endswith(CLAUSE_END)


def sentence_lines(segments: list[Segment], max_pause_s: float,
                   max_line_s: float) -> list[Segment]:
    """The segments' words regrouped into one-speaker sentences, ids renumbered in order.

    ``max_pause_s`` and ``max_line_s`` are asr.line_max_pause_s and asr.line_max_s.
    ``segments`` carry at most one speaker each (after speaker_split) or none. Segments
    without words (rare: Whisper gave text but no timings) are kept as they are.
    """
    pieces: list[tuple[Segment, list[Word]]] = []
    for segment in sorted(segments, key=lambda s: s.start):
        if not segment.words:
            pieces.append((segment, []))
        for word in segment.words:
            owner, current = pieces[-1] if pieces else (segment, [])
            if current and (segment.speaker == owner.speaker
                            and word.start - current[-1].end < max_pause_s
                            and not ends_sentence(current[-1].word)):
                current.append(word)
            else:
                pieces.append((segment, [word]))
    origin = {id(word): segment for segment in segments for word in segment.words}
    lines = []
    for segment, words in pieces:
        if not words:
            lines.append(replace(segment))
            continue
        for part in split_long(words, max_line_s):
            lines.append(line_from(part, [origin[id(word)] for word in part]))
    for index, line in enumerate(lines):
        line.id = index
    return lines


def split_long(words: list[Word], max_line_s: float) -> list[list[Word]]:
    """A sentence longer than ``max_line_s`` cut at the clause end nearest its middle (else
    its longest pause), recursively, so each part is a whole clause where there is one."""
    if len(words) < 2 or words[-1].end - words[0].start <= max_line_s:
        return [words]
    middle = (words[0].start + words[-1].end) / 2
    cuts = range(1, len(words))  # cut before words[k]
    clause = [k for k in cuts if ends_clause(words[k - 1].word)]
    if clause:
        k = min(clause, key=lambda k: abs(words[k].start - middle))
    else:
        k = max(cuts, key=lambda k: (words[k].start - words[k - 1].end,
                                     -abs(words[k].start - middle)))
    return split_long(words[:k], max_line_s) + split_long(words[k:], max_line_s)


def line_from(words: list[Word], sources: list[Segment]) -> Segment:
    """A line made of ``words``, taken from the segments ``sources`` (one per word): its
    confidence is that of the least sure segment it draws words from, so a line the QA
    page should flag stays flagged."""
    first = sources[0]
    return Segment(
        id=0,
        start=words[0].start,
        end=words[-1].end,
        text="".join(w.word for w in words).strip(),
        words=list(words),
        avg_logprob=min(s.avg_logprob for s in sources),
        no_speech_prob=max(s.no_speech_prob for s in sources),
        speaker=first.speaker,
        low_confidence=any(s.low_confidence for s in sources),
    )


def sentence_share(segments: list[Segment]) -> float:
    """Share of lines that end at sentence-final punctuation (for logs and tests)."""
    if not segments:
        return 1.0
    return sum(ends_sentence(s.text) for s in segments) / len(segments)
