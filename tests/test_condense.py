"""Condensing lines predicted not to fit their time: the pure rules, then the real stage
(Bergamot en->pt) on a line too long for its slot."""

from __future__ import annotations

import json

import pytest

import translate
from conftest import default_config
from dubflow.condense import Span, drop_fillers, predicted_s, rooms, shorten

CONDENSE = default_config()["translation"]["condense"]
EN_FILLERS = CONDENSE["fillers"]["en"]


@pytest.mark.parametrize("text, expected", [
    ("Okay. I thought you know", "I thought you know"),
    ("Well, I mean, it is, you know, fine.", "It is, fine."),
    ("So, like, what now?", "What now?"),
    ("Um, yes.", "Yes."),
    ("It works well.", "It works well."),  # "well" is no filler here
    ("Do you know him?", "Do you know him?"),
    ("I think so.", "I think so."),
    ("Oh!", "Oh!"),  # nothing would be left: keep the line
    ("At least you know, they call me a stranger.", "At least they call me a stranger."),
])
def test_fillers_go_only_where_they_stand_as_fillers(text, expected):
    assert drop_fillers(text, EN_FILLERS) == expected


def test_shortening_table_keeps_whole_words_and_the_capital():
    table = CONDENSE["shorten"]["pt"]
    assert shorten("Para mim, neste momento você está bem.", table) == "Pra mim, agora você tá bem."
    assert shorten("Parabéns!", table) == "Parabéns!"  # "para" inside a word stays


def test_room_is_the_slot_and_the_silence_after_it():
    spans = [Span("a", 0.0, 1.0), Span("b", 1.5, 2.0), Span("c", 5.0, 6.0)]
    assert rooms(spans) == pytest.approx({"a": 1.45, "b": 3.45, "c": float("inf")})
    assert predicted_s("Olá, tudo bem?", 10) == pytest.approx(1.0)  # letters only


def test_a_line_too_long_for_its_slot_is_translated_again_without_fillers(tmp_path):
    long = "Well, you know, I really think that we should go back home right now, okay?"
    segments = [
        {"start": 1.0, "end": 3.0, "speaker": "A", "text": long, "words": []},
        {"start": 3.2, "end": 6.0, "speaker": "B", "text": "Yes.", "words": []},
        {"start": 8.0, "end": 14.0, "speaker": "A", "text": long, "words": []},  # has room
    ]
    transcript = tmp_path / "transcript.json"
    transcript.write_text(json.dumps({"language": "en", "duration_s": 15.0,
                                      "segments": segments}))
    config = default_config()["translation"]
    config["cache_dir"] = str(tmp_path / "cache")
    out = translate.run(transcript, tmp_path / "translation.json", "pt", config,
                        speed_boost=1.25)
    tight, _, roomy = out["lines"]
    assert tight["condensed_source"] == "I really think that we should go back home right now?"
    assert tight["full_text"] == roomy["text"] and roomy["full_text"] is None
    assert len(tight["text"]) < len(tight["full_text"])
    saved = json.loads((tmp_path / "translation.json").read_text())
    assert saved["lines"][0]["text"] == tight["text"] and saved["duration_s"] == 15.0
    off = dict(config, condense=dict(config["condense"], enabled=False))
    plain = translate.run(transcript, tmp_path / "plain.json", "pt", off)
    assert plain["lines"][0]["full_text"] is None
    assert plain["lines"][0]["text"] == roomy["text"]
