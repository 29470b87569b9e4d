"""Voices matched to speakers by pitch, from the measured catalogue (no synthesis here)."""

from __future__ import annotations

import numpy as np
import pytest

from dubflow import voices
from dubflow.errors import ModelError
from dubflow.pitch import median_f0, octaves_apart
from dubflow.voice_match import (REGISTER_SPLIT_HZ, catalogue_voices, kokoro_is_better, match,
                                 spec_of, speaker_pitches)

FAKE = [{"name": "low_clear", "f0_hz": 100.0, "wer": 0.05},
        {"name": "low_murky", "f0_hz": 130.0, "wer": 0.40},
        {"name": "high_a", "f0_hz": 230.0, "wer": 0.10},
        {"name": "high_b", "f0_hz": 300.0, "wer": 0.15}]


def tone(f0: float, seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sign(np.sin(2 * np.pi * f0 * t))).astype(np.float32)  # rich in harmonics


def test_each_speaker_gets_the_clear_voice_nearest_their_pitch_in_their_register():
    chosen = match(["A", "B", "C"], {"A": 210.0, "B": 95.0, "C": 290.0}, FAKE)
    assert {s: v["name"] for s, v in chosen.items()} == {
        "A": "high_a", "B": "low_clear", "C": "high_b"}
    # the murky voice is skipped while a clear one of the register is free
    assert "low_murky" not in [v["name"] for v in chosen.values()]


def test_voices_are_distinct_and_run_out_honestly():
    chosen = match(["A", "B", "C", "D", "E"], {s: 120.0 for s in "ABCDE"}, FAKE)
    names = [v["name"] for v in chosen.values()]
    assert len(names) == len(set(names)) == 4 and "E" not in chosen
    taken = match(["A"], {"A": 100.0}, FAKE, taken=[spec_of(FAKE[0])])
    assert taken["A"]["name"] == "low_murky"  # the clear one is hand-mapped to another


def test_speaker_pitch_is_measured_on_their_own_lines():
    rate = 16000
    audio = np.concatenate([tone(110, 2.0), tone(220, 2.0), tone(110, 0.3)])
    pitches = speaker_pitches(audio, rate, [("low", 0.0, 2.0), ("high", 2.0, 4.0),
                                            ("short", 4.0, 4.3)])
    assert pitches["low"] == pytest.approx(110, rel=0.03)
    assert pitches["high"] == pytest.approx(220, rel=0.03)
    assert pitches["short"] is None  # too little speech to say
    assert octaves_apart(110, 220) == pytest.approx(1.0)
    assert np.isnan(median_f0(np.zeros(rate, np.float32), rate))


def test_the_shipped_catalogue_beats_espeak_and_covers_both_registers():
    for language in ("pt", "es", "en"):
        voices_ = catalogue_voices(language)
        assert kokoro_is_better(language), language
        assert any(v["f0_hz"] < REGISTER_SPLIT_HZ for v in voices_), language
        assert any(v["f0_hz"] > REGISTER_SPLIT_HZ for v in voices_), language
        assert all(0.5 <= v["speed"] <= 2.0 for v in voices_)


def test_auto_gives_a_low_and_a_high_speaker_voices_within_half_an_octave(tmp_path):
    tts = voices.settings({"backend": "auto", "cache_dir": str(tmp_path)})
    pitches = {"SPEAKER_00": 205.0, "SPEAKER_01": 105.0}
    chosen = voices.assign(["SPEAKER_00", "SPEAKER_01"], "pt", tts, pitches=pitches)
    by_name = {spec_of(v): v for v in catalogue_voices("pt")}
    for speaker, spec in chosen.items():
        assert spec in by_name, spec
        assert octaves_apart(by_name[spec]["f0_hz"], pitches[speaker]) <= 0.5, (speaker, spec)
    assert chosen["SPEAKER_00"] != chosen["SPEAKER_01"]


def test_a_hand_mapped_voice_and_a_default_still_win(tmp_path):
    tts = voices.settings({"backend": "auto", "cache_dir": str(tmp_path),
                           "voices": {"pt": {"SPEAKER_01": "espeak:pt-br+f3"}}})
    chosen = voices.assign(["SPEAKER_00", "SPEAKER_01"], "pt", tts,
                           pitches={"SPEAKER_00": 100.0, "SPEAKER_01": 100.0})
    assert chosen["SPEAKER_01"] == "espeak:pt-br+f3"
    assert chosen["SPEAKER_00"].startswith("kokoro:jm_kumo")


def test_a_missing_kokoro_model_stops_the_run_with_one_sentence(tmp_path):
    tts = {"backend": "auto", "kokoro_model": str(tmp_path / "nowhere")}
    with pytest.raises(ModelError, match=r"Kokoro model file .*nowhere.*`make setup`"):
        voices.check_voices("pt", tts)


def test_a_long_speaking_part_is_measured_on_lines_spread_over_the_whole_video():
    """Past MAX_PITCH_S the median comes from lines across the video, not its start:
    30 s at 100 Hz then 90 s at 200 Hz is mostly a 200 Hz voice."""
    from dubflow import voice_match

    rate = 16000
    audio = np.concatenate([tone(100.0, 30.0), tone(200.0, 90.0)])
    spans = [("A", t, t + 2.0) for t in np.arange(0.0, 120.0, 2.0)][::-1]  # any order
    assert 4 * voice_match.MAX_PITCH_S <= 120.0
    assert speaker_pitches(audio, rate, spans)["A"] == pytest.approx(200.0, rel=0.03)
