"""Lines shaped like sentences, rebuilt from Whisper's words (pure; no model)."""

from __future__ import annotations

from conftest import default_config
from dubflow.records import Segment, Word
from dubflow.sentences import sentence_lines, sentence_share


def regroup(segments: list[Segment], **changes) -> list[Segment]:
    """sentence_lines with the workflow's asr section (schema defaults), a few keys changed."""
    asr = {**default_config()["asr"], **changes}
    return sentence_lines(segments, asr["line_max_pause_s"], asr["line_max_s"])


def segment(words: list[tuple[float, float, str]], speaker: str | None = "A",
            logprob: float = -0.2, low: bool = False) -> Segment:
    ws = [Word(s, e, w, 0.9) for s, e, w in words]
    return Segment(0, ws[0].start, ws[-1].end, "".join(w.word for w in ws).strip(), ws,
                   logprob, 0.01, speaker, low)


def timed(text: str, start: float, speaker: str | None = "A", step: float = 0.3, **kw):
    words, t = [], start
    for token in text.split():
        words.append((round(t, 3), round(t + step - 0.05, 3), " " + token))
        t += step
    return segment(words, speaker, **kw)


def texts(lines):
    return [line.text for line in lines]


def test_a_sentence_cut_by_whisper_is_whole_again():
    # The real call: "...not much difference. At" | "least you know they call me a Yankee."
    lines = regroup([
        timed("There is not much difference. At", 0.0),
        timed("least you know they call me a Yankee.", 2.0),
    ])
    assert texts(lines) == ["There is not much difference.",
                            "At least you know they call me a Yankee."]
    assert [line.id for line in lines] == [0, 1]
    assert lines[1].start == 1.5 and lines[1].words[0].word == " At"


def test_speaker_change_always_ends_a_line_even_mid_sentence():
    lines = regroup([timed("I thought you", 0.0, "A"), timed("know it well.", 1.0, "B")])
    assert [(line.speaker, line.text) for line in lines] == [
        ("A", "I thought you"), ("B", "know it well.")]


def test_a_long_pause_without_punctuation_ends_a_line():
    lines = regroup([timed("so we went home", 0.0), timed("and then it rained.", 3.5)],
                    line_max_pause_s=1.5)
    assert texts(lines) == ["so we went home", "and then it rained."]
    short = regroup([timed("so we went home", 0.0), timed("and then it rained.", 1.6)],
                    line_max_pause_s=1.5)
    assert texts(short) == ["so we went home and then it rained."]


def test_long_sentence_is_cut_at_the_clause_nearest_its_middle():
    text = ("When we finally got to the station, after the long walk in the rain, "
            "the last train had already left without us.")
    lines = regroup([timed(text, 0.0, step=0.5)], line_max_s=6.0)
    assert all(line.end - line.start <= 6.0 for line in lines)
    assert all(line.text.endswith((",", ".")) for line in lines), texts(lines)
    assert " ".join(texts(lines)) == text


def test_long_sentence_without_clauses_is_cut_at_its_longest_pause_never_in_a_word():
    words = [(i * 0.5, i * 0.5 + 0.4, f" w{i}") for i in range(10)]
    words += [(6.0 + i * 0.5, 6.4 + i * 0.5, f" v{i}") for i in range(10)]
    words[-1] = (words[-1][0], words[-1][1], " v9.")
    lines = regroup([segment(words)], line_max_s=8.0)
    assert texts(lines)[0].endswith("w9") and texts(lines)[1].startswith("v0")


def test_confidence_of_a_merged_line_is_its_least_sure_source():
    lines = regroup([timed("It was fine. But", 0.0, logprob=-0.1),
                            timed("then it broke.", 1.5, logprob=-1.4, low=True)])
    assert lines[0].low_confidence is False and lines[1].low_confidence is True
    assert lines[1].avg_logprob == -1.4


def test_sentence_share_counts_lines_ending_a_sentence():
    lines = regroup([timed('He said "no." Then', 0.0), timed("left", 1.5, "B")])
    assert texts(lines) == ['He said "no."', "Then", "left"]
    assert sentence_share(lines) == 1 / 3
