"""Subtitle cues: readable length, timed by words, both formats parse back."""

import json

import pysubs2

import subtitles
from conftest import default_config


def word_segment(text, start=0.0, per_word=0.4):
    words, t = [], start
    for token in text.split():
        words.append({"start": round(t, 3), "end": round(t + per_word * 0.9, 3), "word": " " + token})
        t += per_word
    return {"start": start, "end": t, "text": text, "words": words}


def subs(**changes) -> dict:
    """The workflow's subtitles section (schema defaults) with a few keys changed."""
    return {**default_config()["subtitles"], **changes}


LONG = (
    "This is a very long segment that Whisper could return when somebody talks for a "
    "while without stopping, and it must be cut into several cues. Each one short enough "
    "to read, and each one shown only while its words are being spoken on screen."
)


def test_long_segment_is_cut_into_readable_cues():
    cues = subtitles.build_cues([word_segment(LONG)], subs())
    assert len(cues) >= 3
    for cue in cues:
        lines = cue.text.split("\n")
        assert len(lines) <= 2
        assert all(len(line) <= 42 for line in lines), lines
        assert cue.end - cue.start <= 7.0 + 1e-6
    # every word survives, in order
    assert " ".join(c.text.replace("\n", " ") for c in cues) == LONG
    # cues follow each other without overlap
    assert all(a.end <= b.start + 1e-6 for a, b in zip(cues, cues[1:]))


def test_cue_times_come_from_words():
    segment = word_segment("Hello there. General Kenobi, you are a bold one.", start=10.0)
    cues = subtitles.build_cues([segment], subs())
    assert cues[0].start == 10.0
    assert cues[-1].end == segment["words"][-1]["end"]


def test_breaks_after_punctuation_when_possible():
    text = "I never said that to anyone, not once. But you heard it from somebody else anyway."
    cues = subtitles.build_cues([word_segment(text)], subs(max_lines=1))
    assert cues[0].text.endswith((",", "."))


def test_segment_without_words_is_spread_by_length():
    cues = subtitles.build_cues([{"start": 2.0, "end": 6.0, "text": "Olá, tudo bem? Vamos começar."}], subs())
    assert len(cues) == 1 and cues[0].start == 2.0 and abs(cues[0].end - 6.0) < 1e-6


def test_wrap_balances_lines():
    assert subtitles.wrap("short", 42, 2) == "short"
    wrapped = subtitles.wrap("one two three four five six seven eight nine ten eleven", 42, 2)
    first, second = wrapped.split("\n")
    assert abs(len(first) - len(second)) <= 6


def test_run_writes_srt_and_vtt_that_parse_back(tmp_path):
    transcript = {"language": "en", "segments": [word_segment("Hello world.", 1.0),
                                                  word_segment("Ünïcode — fine; \"quotes\" too.", 3.0)]}
    src = tmp_path / "transcript.json"
    src.write_text(json.dumps(transcript, ensure_ascii=False), encoding="utf-8")
    subtitles.run(src, default_config()["subtitles"],
                  srt_path=tmp_path / "x.en.srt", vtt_path=tmp_path / "x.en.vtt")
    for suffix in ("srt", "vtt"):
        parsed = pysubs2.load(str(tmp_path / f"x.en.{suffix}"), encoding="utf-8")
        assert [e.plaintext for e in parsed] == ["Hello world.", 'Ünïcode — fine; "quotes" too.']
        assert parsed[0].start == 1000
    assert (tmp_path / "x.en.vtt").read_text().startswith("WEBVTT")


def test_empty_transcript_gives_empty_but_valid_files(tmp_path):
    src = tmp_path / "t.json"
    src.write_text(json.dumps({"language": "en", "segments": []}))
    subtitles.run(src, default_config()["subtitles"],
                  srt_path=tmp_path / "e.srt", vtt_path=tmp_path / "e.vtt")
    assert len(pysubs2.load(str(tmp_path / "e.srt"), format_="srt")) == 0
    assert (tmp_path / "e.vtt").read_text().startswith("WEBVTT")


def test_edited_text_wins_over_stale_word_times():
    segment = word_segment("The train leaves at nine.", start=1.0)
    segment["text"] = "The train leaves at ten."  # a hand correction in transcript.json
    cues = subtitles.build_cues([segment], subs())
    assert cues[0].text == "The train leaves at ten."
    assert cues[0].start == 1.0 and abs(cues[-1].end - segment["end"]) < 1e-6


def test_fast_cue_is_extended_into_the_gap_to_be_readable():
    # 34 characters spoken in 1 s (34 cps); 3 s of silence follow
    segments = [word_segment("Quick words, spoken far too fast.", 0.0, per_word=0.2),
                word_segment("Next line.", 5.0)]
    cues = subtitles.build_cues(segments, subs(max_cps=17.0))
    first = cues[0]
    assert first.start == 0.0
    assert first.end - first.start >= len(first.text) / 17.0 - 1e-6
    assert first.end <= cues[1].start - 0.08 + 1e-6


def test_too_fast_cues_of_one_speaker_merge_and_never_overlap():
    segments = [word_segment("A rapid first remark.", 0.0, per_word=0.15),
                word_segment("And a rapid second.", 0.65, per_word=0.15),
                word_segment("Then somebody else.", 1.3, per_word=0.15)]
    segments[2]["speaker"] = "SPEAKER_01"
    for s in segments[:2]:
        s["speaker"] = "SPEAKER_00"
    cues = subtitles.build_cues(segments, subs(max_cps=17.0))
    assert cues[0].text.replace("\n", " ") == "A rapid first remark. And a rapid second."
    assert cues[1].text == "Then somebody else."  # other speakers are never merged in
    assert all(a.end <= b.start + 1e-9 for a, b in zip(cues, cues[1:]))


def test_speaker_labels_mark_each_change_of_speaker():
    segments = [dict(word_segment("Hello.", 0.0), speaker="SPEAKER_00"),
                dict(word_segment("Still me.", 2.0), speaker="SPEAKER_00"),
                dict(word_segment("Hi there.", 4.0), speaker="SPEAKER_01")]
    cues = subtitles.build_cues(segments, subs(speaker_labels=True,
                                speaker_names={"SPEAKER_01": "Ana"}))
    assert [c.text for c in cues] == ["Speaker 1: Hello.", "Still me.", "Ana: Hi there."]


def test_ass_is_written_when_asked(tmp_path):
    src = tmp_path / "t.json"
    src.write_text(json.dumps({"lines": [{"id": "0001", "start": 1.0, "end": 3.0,
                                          "text": "Olá mundo."}]}))
    subtitles.run(src, default_config()["subtitles"],
                  ass_path=tmp_path / "a.ass")
    parsed = pysubs2.load(str(tmp_path / "a.ass"), encoding="utf-8")
    assert [e.plaintext for e in parsed] == ["Olá mundo."] and parsed[0].start == 1000


def test_no_cue_ends_after_the_media():
    """A one-word cue 'now.' at 29.6 s of a 30.0 s video ran to 30.6 s and made the mkv
    30.6 s long; cues stop at the media's end."""
    segments = [{"start": 29.6, "end": 29.9, "text": "now.", "words": []}]
    cues = subtitles.build_cues(segments, subs(), media_end=30.0)
    assert [c.text for c in cues] == ["now."] and cues[0].end == 30.0
    assert subtitles.build_cues(segments, subs())[0].end == 30.6  # without the limit
    late = [{"start": 30.2, "end": 30.5, "text": "ghost", "words": []}]
    assert subtitles.build_cues(late, subs(), media_end=30.0) == []


def test_fast_line_starts_early_then_uses_the_condensed_text():
    text = "Eu acho que nós deveríamos voltar para casa agora mesmo"  # 55 characters
    tight = {"start": 10.0, "end": 12.0, "text": text, "words": []}
    before = {"start": 5.0, "end": 8.0, "text": "Olá.", "words": []}
    after = {"start": 12.1, "end": 14.0, "text": "Sim.", "words": [], "speaker": "B"}
    cues = subtitles.build_cues([before, tight, after], subs(max_lead_s=0.5))
    assert cues[1].start == 9.5 and subtitles.cps(cues[1]) > 21  # early, still too fast
    condensed = dict(tight, text="Vamos voltar para casa já", full_text=text)
    cues = subtitles.build_cues([before, condensed, after], subs(max_lead_s=0.5))
    assert cues[1].text.replace("\n", " ") == "Vamos voltar para casa já"
    assert all(subtitles.cps(c) <= 21 for c in cues)


def test_a_fast_cue_takes_time_the_cue_before_can_spare():
    """Dense speech: no silence between cues, but the previous cue reads slowly enough
    to give a little of its time to the fast one after it."""
    slow = {"start": 12.5, "end": 15.65, "text": "That is funny, because I feel the same way "
            "every single day.", "words": [], "speaker": "A"}
    fast = {"start": 15.73, "end": 18.07, "text": "Do you want to get some coffee before "
            "the next call?", "words": [], "speaker": "B"}
    after = {"start": 18.15, "end": 22.2, "text": "Sure.", "words": [], "speaker": "A"}
    cues = subtitles.build_cues([slow, fast, after], subs(min_gap_s=0.08))
    assert all(subtitles.cps(c) <= 21.0 + 1e-6 for c in cues), cues
    assert cues[0].end + 0.08 <= cues[1].start + 1e-9 and cues[1].start < 15.73
