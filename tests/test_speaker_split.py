"""Word-level speaker labels and segment cuts at speaker changes."""

from dubflow.rttm import Turn, format_rttm, read_rttm, recording_id
from dubflow.speaker_split import split_by_speaker
from transcribe import Segment, Word


def segment(words, id=0):
    ws = [Word(s, e, f" {t}", 0.9) for s, e, t in words]
    return Segment(id, ws[0].start, ws[-1].end, "".join(w.word for w in ws).strip(), ws, -0.2, 0.01)


def test_segment_spanning_two_speakers_is_cut_at_the_change():
    seg = segment([(0.0, 0.4, "Are"), (0.5, 0.9, "you"), (1.0, 1.4, "coming?"),
                   (1.8, 2.2, "Yes,"), (2.3, 2.8, "wait.")])
    turns = [Turn(0.0, 1.5, "SPEAKER_00"), Turn(1.7, 3.0, "SPEAKER_01")]
    out = split_by_speaker([seg], turns)
    assert [(s.speaker, s.text) for s in out] == [("SPEAKER_00", "Are you coming?"),
                                                   ("SPEAKER_01", "Yes, wait.")]
    assert out[0].end == 1.4 and out[1].start == 1.8
    assert [s.id for s in out] == [0, 1]


def test_word_goes_to_the_turn_that_overlaps_it_most():
    seg = segment([(1.0, 2.0, "overlapping")])
    turns = [Turn(0.0, 1.3, "A"), Turn(1.2, 3.0, "B")]
    assert split_by_speaker([seg], turns)[0].speaker == "B"


def test_word_in_a_gap_takes_the_nearest_turn():
    seg = segment([(0.0, 0.4, "one"), (2.05, 2.3, "two")])
    turns = [Turn(0.0, 0.5, "A"), Turn(2.4, 3.0, "B")]
    assert [s.speaker for s in split_by_speaker([seg], turns)] == ["A", "B"]


def test_far_word_follows_its_neighbours():
    seg = segment([(0.0, 0.4, "one"), (5.0, 5.4, "two")])
    assert [s.speaker for s in split_by_speaker([seg], [Turn(0.0, 0.5, "A")])] == ["A"]


def test_sentence_start_stretched_across_a_pause_goes_to_the_next_turn_and_is_clipped():
    """Measured: "recordings. The studio" gave "The" 27.03-28.13 s, though the reply began
    at 28.07 s; by overlap it went to the previous speaker, and the line started 1 s early."""
    seg = segment([(25.4, 27.03, "recordings."), (27.03, 28.13, "The"), (28.13, 28.5, "studio")])
    turns = [Turn(24.06, 27.28, "A"), Turn(28.04, 31.1, "B")]
    out = split_by_speaker([seg], turns)
    assert [(s.speaker, s.text, s.start) for s in out] == [("A", "recordings.", 25.4),
                                                           ("B", "The studio", 28.04)]


def test_sentence_end_stretched_into_the_next_turn_stays_with_its_own():
    seg = segment([(1.0, 1.5, "See"), (1.5, 3.0, "you."), (3.1, 3.5, "Bye")])
    turns = [Turn(0.9, 2.0, "A"), Turn(2.2, 4.0, "B")]
    out = split_by_speaker([seg], turns)
    assert [(s.speaker, s.text, s.end) for s in out] == [("A", "See you.", 2.0),
                                                         ("B", "Bye", 3.5)]


def test_sentence_edge_slightly_outside_its_turn_is_not_moved():
    seg = segment([(0.95, 1.4, "Hello"), (1.4, 1.8, "there.")])
    out = split_by_speaker([seg], [Turn(1.0, 1.85, "A")])
    assert (out[0].start, out[0].end) == (0.95, 1.8)


def test_no_turns_leaves_segments_alone():
    seg = segment([(0.0, 0.4, "hi")])
    assert split_by_speaker([seg], []) == [seg]


def test_rttm_round_trip_with_awkward_names(tmp_path):
    turns = [Turn(1.5, 2.25, "SPEAKER_01"), Turn(0.0, 1.0, "SPEAKER_00")]
    text = format_rttm(turns, "it's ep 1; ünï")
    assert text.splitlines()[0] == "SPEAKER it's_ep_1;_ünï 1 0.000 1.000 <NA> <NA> SPEAKER_00 <NA> <NA>"
    (tmp_path / "a.rttm").write_text(text)
    assert read_rttm(tmp_path / "a.rttm") == sorted(turns, key=lambda t: t.start)
    assert recording_id("  ") == "recording"
