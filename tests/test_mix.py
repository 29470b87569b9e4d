"""The mix stage: the timing plan (fit.py) by unit tests, the stage on real audio.

The end-to-end tests mix real Piper speech over a generated bed with the real ffmpeg, and
measure the result the way a listener or a broadcaster would: where each line starts,
how far the bed dips under a line and comes back, integrated loudness with pyloudnorm,
true peak by 4x oversampling.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from scipy.signal import butter, resample_poly, sosfiltfilt

from dubflow import fit, mix_control, mix_lines, mix_render, mix_settings, mix_track
import mix
from dubflow.errors import ConfigError, InputError
from dubflow.ffmpeg_safe import file_arg, probe, run_ffmpeg
from conftest import default_config

BED_HZ = 60.0  # below a male voice's pitch, so the bed can be measured under speech
RATE = 48_000


# --------------------------------------------------------------------------------------
# fit.plan
# --------------------------------------------------------------------------------------


def line(id, start, end, natural, wav=True):
    return {"id": id, "start": start, "end": end, "duration_s": natural,
            "wav": f"{id}.wav" if wav else None}


def by_id(placements):
    return {p.id: p for p in placements}


def test_line_that_fits_is_left_alone_and_short_lines_are_not_stretched():
    p = fit.plan([line("a", 1.0, 4.0, 1.0), line("b", 10.0, 12.0, 2.0)], 1.25, 20.0)
    assert [x.id for x in p] == ["a", "b"]
    a = p[0]
    assert (a.start, a.slot_s, a.speed, a.borrowed_s, a.trimmed_s, a.flags) == (1.0, 3.0, 1.0, 0.0, 0.0, [])
    assert a.played_s == 1.0  # not stretched to the 3 s slot
    assert a.available_s == pytest.approx(10.0 - 0.05 - 1.0)
    assert p[1].flags == [] and p[1].played_s == 2.0  # exactly the slot


def test_long_line_borrows_the_silence_after_it_first():
    a = fit.plan([line("a", 1.0, 2.0, 1.6), line("b", 5.0, 6.0, 0.5)], 1.25, 10.0)[0]
    assert a.flags == ["borrowed"]
    assert a.speed == 1.0 and a.trimmed_s == 0.0
    assert a.borrowed_s == pytest.approx(0.6)
    assert a.start == 1.0  # never shifted


def test_then_speeds_up_within_the_bound():
    # 2.4 s of speech, 2.0 s of room before the next line (minus the gap): speed 1.2.
    a = fit.plan([line("a", 1.0, 2.0, 2.4), line("b", 3.05, 4.0, 0.5)], 1.25, 10.0)[0]
    assert a.flags == ["borrowed", "sped_up"]
    assert a.speed == pytest.approx(1.2)
    assert a.trimmed_s == 0.0
    assert a.played_s == pytest.approx(2.0)
    assert a.borrowed_s == pytest.approx(1.0)


def test_exactly_max_speedup_is_not_trimmed():
    a = fit.plan([line("a", 0.0, 2.0, 2.5), line("b", 2.05, 3.0, 0.5)], 1.25, 10.0)[0]
    assert a.speed == pytest.approx(1.25)
    assert a.flags == ["sped_up"]
    assert a.trimmed_s == 0.0


def test_only_then_trims_and_flags():
    a = fit.plan([line("a", 0.0, 2.0, 4.0), line("b", 2.05, 3.0, 0.5)], 1.25, 10.0)[0]
    assert a.speed == 1.25
    assert a.flags == ["sped_up", "trimmed"]
    assert a.trimmed_s == pytest.approx(4.0 / 1.25 - 2.0)
    assert a.played_s == pytest.approx(2.0)


def test_last_line_borrows_up_to_the_media_end():
    a = fit.plan([line("a", 8.0, 9.0, 1.8)], 1.25, 10.0)[0]
    assert a.available_s == pytest.approx(2.0)  # no gap after the last line
    assert a.flags == ["borrowed"] and a.borrowed_s == pytest.approx(0.8)
    b = fit.plan([line("a", 8.0, 9.0, 3.0)], 1.25, 10.0)[0]
    assert b.flags == ["borrowed", "sped_up", "trimmed"]
    assert b.played_s == pytest.approx(2.0)


def test_zero_length_slot_borrows():
    a = fit.plan([line("a", 3.0, 3.0, 1.0), line("b", 6.0, 7.0, 0.5)], 1.25, 10.0)[0]
    assert a.slot_s == 0.0
    assert a.flags == ["borrowed"] and a.borrowed_s == pytest.approx(1.0)


def test_lines_without_wav_are_skipped_and_do_not_block_borrowing():
    p = fit.plan([line("a", 0.0, 1.0, 2.0), line("x", 1.2, 1.8, 0.0, wav=False),
                  line("b", 4.0, 5.0, 0.5)], 1.25, 10.0)
    assert [x.id for x in p] == ["a", "b"]
    assert p[0].flags == ["borrowed"]


def test_unsorted_and_overlapping_source_lines_never_overlap_in_the_dub():
    # Two people talking at once: b starts inside a's slot, so a gets only up to b.
    p = by_id(fit.plan([line("b", 2.0, 4.0, 1.0), line("a", 1.0, 3.0, 1.5)], 1.25, 10.0))
    assert p["a"].available_s == pytest.approx(0.95)
    assert p["a"].end <= p["b"].start
    assert "trimmed" in p["a"].flags and p["a"].borrowed_s == 0.0


def test_line_past_the_media_end_has_no_room():
    a = fit.plan([line("a", 12.0, 13.0, 1.0)], 1.25, 10.0)[0]
    assert a.available_s == 0.0 and a.played_s == 0.0 and "trimmed" in a.flags


def test_random_plans_keep_every_promise():
    rng = random.Random(7)
    for _ in range(200):
        lines, t = [], 0.0
        for i in range(rng.randint(0, 12)):
            t += rng.uniform(0.0, 3.0)
            lines.append(line(str(i), round(t, 3), round(t + rng.uniform(0, 3), 3),
                              rng.uniform(0.0, 6.0), wav=rng.random() > 0.1))
        end = t + rng.uniform(0.0, 5.0)
        placements = fit.plan(lines, 1.25, end)
        assert len(placements) == sum(1 for x in lines if x["wav"])
        for p in placements:
            assert 1.0 <= p.speed <= 1.25
            assert p.played_s <= p.available_s + 1e-9
            assert ("trimmed" in p.flags) == (p.trimmed_s > 0)
            if "trimmed" not in p.flags:  # nothing cut
                assert p.played_s == pytest.approx(p.natural_s / p.speed)
            if p.speed > 1.0:  # only lines that need it are sped up
                assert p.natural_s > p.available_s
            if p.speed < 1.25:  # trimming only after the full speed-up
                assert "trimmed" not in p.flags
            if p.natural_s <= min(p.slot_s, p.available_s):  # fits: as is
                assert p.flags == [] and p.played_s == p.natural_s
        for a, b in itertools.pairwise(placements):
            assert a.end <= max(a.start, b.start - 0.05) + 1e-9


def test_placement_row_is_json_ready():
    row = fit.plan([line("a", 1.0, 2.0, 1.23456789)], 1.25, 10.0)[0].to_dict()
    assert row == {"id": "a", "start": 1.0, "slot_s": 1.0, "available_s": 9.0,
                   "natural_s": 1.235, "borrowed_s": 0.235, "speed": 1.0, "trimmed_s": 0.0,
                   "flags": ["borrowed"], "lead_s": 0.0}
    json.dumps(row)


def test_a_line_that_does_not_fit_leads_into_the_silence_before_it_then_speeds_up():
    lines = [line("a", 0.0, 1.0, 0.8), line("b", 3.0, 4.0, 1.6), line("c", 4.2, 6.0, 1.0)]
    a, b, c = fit.plan(lines, 1.25, 10.0, 0.05, max_lead_s=0.3)
    # b has 1.15 s before c; it starts 0.3 s early (a ended at 0.8 s), then is sped up.
    assert a.flags == [] and b.lead_s == pytest.approx(0.3) and b.start == pytest.approx(2.7)
    assert b.available_s == pytest.approx(1.45) and b.speed == pytest.approx(1.6 / 1.45)
    assert b.flags == ["borrowed", "led", "sped_up"] and b.trimmed_s == 0.0
    # never into the line before: a lead stops at the previous line's end plus the gap
    tight = fit.plan([line("a", 0.0, 1.0, 1.0), line("b", 1.1, 1.5, 1.0)], 1.25, 1.6, 0.05,
                     max_lead_s=0.3)
    assert tight[1].lead_s == pytest.approx(0.05) and tight[1].start >= tight[0].end + 0.05 - 1e-9
    # a line that fits does not move
    assert fit.plan([line("a", 2.0, 3.0, 0.5)], 1.25, 10, max_lead_s=0.3)[0].start == 2.0


# --------------------------------------------------------------------------------------
# mix helpers
# --------------------------------------------------------------------------------------


def test_envelope_ducks_under_lines_and_comes_back():
    intervals = mix_control.duck_intervals(
        fit.plan([line("a", 1.0, 2.0, 1.0), line("b", 4.0, 5.0, 1.0)], 1.25, 10.0))
    assert intervals == [(1.0, 2.0), (4.0, 5.0)]
    gain = mix_control.gain_envelope(0, 6 * 100, 100, intervals, 12.0)
    db = 20 * np.log10(gain)
    assert db[50] == 0.0 and db[300] == 0.0  # before and between lines
    assert db[150] == pytest.approx(-12.0) and db[450] == pytest.approx(-12.0)
    assert db[100] == pytest.approx(-12.0)  # fully down when the line starts
    assert -12.0 < db[210] < 0.0  # coming back up over the release
    # The same samples, asked for in pieces, are the same (blocks must join seamlessly).
    pieces = np.concatenate([mix_control.gain_envelope(i, 50, 100, intervals, 12.0)
                             for i in range(0, 600, 50)])
    np.testing.assert_array_equal(pieces, gain)


def test_close_lines_share_one_dip():
    p = fit.plan([line("a", 1.0, 2.0, 1.0), line("b", 2.2, 3.0, 0.8)], 1.25, 10.0)
    assert mix_control.duck_intervals(p) == [(1.0, pytest.approx(3.0))]


def test_control_track_places_lines_sample_exactly_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(mix_control, "BLOCK_S", 0.01)  # 10-sample blocks at 1 kHz
    rate = 1000
    lines = iter([(5, np.full(12, 0.5, np.float32)), (17, np.full(3, 0.25, np.float32)),
                  (40, np.full(30, 1.0, np.float32))])
    path = tmp_path / "control.wav"
    mix_control.write_control(path, rate, 100, lines, [], 12.0)
    data, sr = sf.read(path, dtype="float32")
    assert sr == rate and data.shape == (100, 2)
    voice = data[:, 0]
    expected = np.zeros(100, np.float32)
    expected[5:17], expected[17:20], expected[40:70] = 0.5, 0.25, 1.0
    np.testing.assert_array_equal(voice, expected)
    np.testing.assert_array_equal(data[:, 1], 1.0)


def test_restored_spans_are_the_unvoiced_lines_kept_away_from_voiced_ones():
    lines = [line("a", 1.0, 3.0, 1.5), line("b", 3.5, 6.0, 0.0, wav=False),
             line("c", 6.2, 7.0, 0.5), line("d", 9.0, 10.0, 0.0, wav=False),
             line("e", 10.1, 10.3, 0.0, wav=False)]
    placements = fit.plan(lines, 1.25, 12.0)
    spans = mix_control.restore_spans(lines, placements, 12.0)
    guard, pad = mix_control.RESTORE_GUARD_S, mix_control.RESTORE_PAD_S
    # b: from a's end + guard to c's start - guard; d and e padded and merged into one
    assert [x for span in spans for x in span] == pytest.approx(
        [3.0 + guard, 6.2 - guard, 9.0 - pad, 10.3 + pad])
    # a voiced line's own source span is never restored, even where its dub is silent
    assert mix_control.restore_spans([line("a", 1.0, 5.0, 1.0)], fit.plan(
        [line("a", 1.0, 5.0, 1.0)], 1.25, 6.0), 6.0) == []
    # a gap too short for the crossfades is left alone
    tight = [line("a", 0.0, 1.0, 1.0), line("b", 1.0, 1.6, 0.0, wav=False),
             line("c", 1.6, 3.0, 1.0)]
    assert mix_control.restore_spans(tight, fit.plan(tight, 1.25, 4.0), 4.0) == []


def test_control_track_crossfades_bed_and_original(tmp_path):
    rate = 1000
    path = tmp_path / "control.wav"
    mix_control.write_control(path, rate, 4000, iter([]), [], 12.0, [(1.0, 2.0)])
    data, _ = sf.read(path, dtype="float32")
    bed, original = data[:, 1], data[:, 2]
    np.testing.assert_allclose(bed + original, 1.0, atol=1e-6)  # a crossfade, no dip
    assert original[:1000].max() == 0 and original[1050:1950].min() == 1.0
    assert original[2000:].max() == 0
    ramp = original[1000:1051]
    assert np.all(np.diff(ramp) > 0) and ramp[-1] == 1.0


def test_restore_applies_over_a_separated_bed_only():
    assert mix_settings.settings({"separation": "spleeter"}).restore_dialogue is True
    assert mix_settings.settings({"separation": "spleeter",
                         "restore_dialogue": False}).restore_dialogue is False
    assert mix_settings.settings({"separation": "none"}).restore_dialogue is False


def test_trimmed_line_fades_out():
    audio = mix_lines.fade_out(np.ones(100, np.float32), 10)
    assert audio[89] == 1.0 and audio[-1] == 0.0 and np.all(np.diff(audio[90:]) < 0)


def test_bad_settings_are_one_sentence_config_errors():
    """Ranges come from the schema, also for a section passed by hand."""
    with pytest.raises(ConfigError, match=r"'mix.separation' is invalid: 'demucs' is not one of"):
        mix_settings.settings({"separation": "demucs"})
    with pytest.raises(ConfigError, match=r"'mix.loudness' is invalid: 'netflix'"):
        mix_settings.settings({"loudness": "netflix"})
    with pytest.raises(ConfigError, match="'mix.channels' is invalid: 3"):
        mix_settings.settings({"channels": 3})
    with pytest.raises(ConfigError, match="mix.true_peak_db"):
        mix_settings.settings({"true_peak_db": 2})


def test_settings_resolve_presets_and_auto():
    assert mix_settings.settings({"separation": "spleeter"}).duck_db == 10.0
    assert mix_settings.settings({"separation": "none"}).duck_db == 12.0
    assert mix_settings.settings({"separation": "spleeter", "duck_db": 3}).duck_db == 3.0
    assert mix_settings.settings({"loudness": "atsc-a85"}).target_lufs == -24.0
    assert mix_settings.settings({"loudness": "atsc-a85", "true_peak_db": -3}).true_peak_db == -3.0
    assert mix_settings.settings(default_config()["mix"]) == mix_settings.settings(None)


EBUR128_SILENCE = """[Parsed_ebur128_0 @ 0x7f36d0001c00] Summary:

  Integrated loudness:
    I:         -70.0 LUFS
    Threshold:   0.0 LUFS

  Loudness range:
    LRA:         0.0 LU
    Threshold:   0.0 LUFS
    LRA low:     0.0 LUFS
    LRA high:    0.0 LUFS

  True peak:
    Peak:       -inf dBFS
[out#0/null @ 0x55e4c2bc6f40] video:0KiB audio:562KiB"""


def test_ebur128_summary_reads_silence():
    figures = mix_render.ebur128_summary("[ebur128] earlier noise\n" + EBUR128_SILENCE)
    assert figures == {"i": -70.0, "thresh": 0.0, "lra": 0.0, "tp": float("-inf")}


# --------------------------------------------------------------------------------------
# The stage on real audio
# --------------------------------------------------------------------------------------


def make_source(path: Path, seconds: float, *, layout: str = "stereo", rate: int = RATE,
                bed: str = "tone", level: float = 0.25) -> Path:
    """A bed like the extract stage writes it: pcm_s24le WAV at its own rate and layout."""
    sources = {
        "tone": f"sine=frequency={BED_HZ:g}:sample_rate={rate}:duration={seconds}",
        "noise": f"anoisesrc=color=pink:sample_rate={rate}:duration={seconds}:seed=1",
        "silence": f"anullsrc=sample_rate={rate}:channel_layout=mono,atrim=duration={seconds}",
    }
    run_ffmpeg(["-f", "lavfi", "-i", sources[bed],
                "-af", f"volume={level},aformat=channel_layouts={layout}",
                "-c:a", "pcm_s24le", "-rf64", "auto", file_arg(path)],
               stage="test", path=path)
    return path


def write_tts(folder: Path, lines: list[tuple[float, float, np.ndarray, int]]) -> Path:
    """A synthesize-stage folder: one wav per (start, end, audio, rate) and lines.json."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (start, end, audio, rate) in enumerate(lines):
        name = f"{i + 1:04d}.wav"
        sf.write(folder / name, audio, rate, subtype="PCM_16")
        rows.append({"id": f"{i + 1:04d}", "speaker": "SPEAKER_00", "start": start, "end": end,
                     "text": f"line {i + 1}", "voice": "test", "backend": "test", "wav": name,
                     "duration_s": len(audio) / rate, "sample_rate": rate,
                     "cache_key": str(i), "cached": False})
    (folder / "lines.json").write_text(json.dumps(rows))
    return folder


def tone(seconds: float, rate: int = 16000, hz: float = 700.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.4 * np.sin(2 * np.pi * hz * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    ramp = min(len(audio) // 2, int(0.005 * rate))
    audio[:ramp] *= np.linspace(0, 1, ramp)
    audio[len(audio) - ramp:] *= np.linspace(1, 0, ramp)
    return audio.astype(np.float32)


def mix_config(**changes) -> dict:
    """The workflow's mix section, over the original mix (these sources have no separated
    bed) and without early starts (the fitting cases here are sized without them)."""
    return {**default_config()["mix"], "separation": "none", "max_lead_s": 0.0, **changes}


def run_stage(tmp: Path, source: Path, tts: Path, dub_track: Path | None = None,
              **mix_settings) -> tuple[dict, np.ndarray, int]:
    report = mix.run(source, tts, tmp / "dub.wav", tmp / "fit.json", mix_config(**mix_settings),
                     dub_track=dub_track, tempo_cache=tmp / "tempo")
    assert json.loads((tmp / "fit.json").read_text()) == report
    audio, rate = sf.read(tmp / "dub.wav", dtype="float64", always_2d=True)
    return report, audio, rate


def true_peak_db(audio: np.ndarray) -> float:
    return float(20 * np.log10(np.abs(resample_poly(audio, 4, 1, axis=0)).max()))


def loudness(audio: np.ndarray, rate: int) -> float:
    """BS.1770 integrated loudness; for 5.1 without the LFE (pyloudnorm takes L R C Ls Rs).
    pyloudnorm stops at five channels, so 7.1 is measured by ffmpeg's ebur128 meter."""
    if audio.shape[1] == 6:
        audio = audio[:, [0, 1, 2, 4, 5]]
    if audio.shape[1] == 8:
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            wav = Path(scratch) / "seven.wav"
            sf.write(str(wav), audio, rate, subtype="FLOAT")
            run = run_ffmpeg(["-i", file_arg(wav), "-af", "ebur128=peak=true", "-f", "null", "-"],
                             stage="test", path=wav)
        return mix_render.ebur128_summary(run.stderr)["i"]
    return pyloudnorm.Meter(rate).integrated_loudness(audio)


def bed_level_db(audio: np.ndarray, rate: int, t0: float, t1: float) -> float:
    """Amplitude of the bed tone alone in [t0, t1), in dB (a lock-in on BED_HZ)."""
    x = audio[int(t0 * rate):int(t1 * rate)].mean(axis=1)
    t = np.arange(len(x)) / rate
    return float(20 * np.log10(2 * abs(np.mean(x * np.exp(-2j * np.pi * BED_HZ * t)))))


def voice_envelope(audio: np.ndarray, rate: int) -> np.ndarray:
    """Voice loudness per 5 ms, with the low bed tone filtered away."""
    sos = butter(6, 200, "highpass", fs=rate, output="sos")
    x = sosfiltfilt(sos, audio.mean(axis=1) if audio.ndim == 2 else audio)
    hop = rate // 200
    return np.abs(x[: len(x) // hop * hop]).reshape(-1, hop).max(axis=1)


def first_sound(env: np.ndarray, t0: float, t1: float, level: float) -> float:
    """First 5 ms frame in [t0, t1) louder than ``level``, in seconds."""
    frames = env[int(t0 * 200):int(t1 * 200)]
    above = np.flatnonzero(frames > level)
    assert above.size, f"no sound between {t0} and {t1}"
    return t0 + above[0] / 200


@pytest.fixture(scope="module")
def speech_mix(tmp_path_factory):
    """Five Piper lines over a 60 Hz bed: one fits, one is short, one borrows, one is
    sped up, one is too long even then; the bed has long gaps between most lines."""
    from demo_media import speak

    tmp = tmp_path_factory.mktemp("speech_mix")
    texts = [
        "Good evening, and welcome back.",
        "Yes.",
        "The storm moved north during the night and the roads are open again.",
        "Please keep your tickets ready when the train arrives at the platform.",
        "Nobody expected the meeting to last for three whole hours this afternoon.",
        "Thank you, that is all for tonight.",
    ]
    spoken = [speak(text) for text in texts]
    n = [len(a) / r for a, r in spoken]
    starts, ends = [], []
    t = 1.0
    # fits: a slot longer than the line
    starts.append(t); ends.append(t + n[0] + 0.8); t = ends[-1] + 1.5
    # short: 0.5 s of speech in a 2.5 s slot
    starts.append(t); ends.append(t + 2.5); t = ends[-1] + 1.5
    # borrows: slot 80 % of the line, next line well after it
    starts.append(t); ends.append(t + 0.8 * n[2]); t = t + n[2] + 1.5
    # sped up: slot 70 %, next line after 1/1.15 of it
    starts.append(t); ends.append(t + 0.7 * n[3]); t = t + n[3] / 1.15 + mix_lines.GAP_S
    # trimmed: needs 1.6x, gets 1.25x and a cut
    starts.append(t); ends.append(t + 0.5 * n[4]); t = t + n[4] / 1.6 + mix_lines.GAP_S
    # last line, then silence of the bed to the end
    starts.append(t); ends.append(t + n[5] + 0.2)
    media = round(ends[-1] + 1.5, 3)
    lines = [(round(s, 3), round(e, 3), a, r) for s, e, (a, r) in zip(starts, ends, spoken)]
    source = make_source(tmp / "source.wav", media)
    tts = write_tts(tmp / "tts", lines)
    report, audio, rate = run_stage(tmp, source, tts, dub_track=tmp / "dub.mka")
    return {"tmp": tmp, "report": report, "audio": audio, "rate": rate, "lines": lines,
            "media": media}


def test_fit_report_flags_each_kind_of_line(speech_mix):
    report = speech_mix["report"]
    rows = report["lines"]
    assert [r["flags"] for r in rows] == [
        [], [], ["borrowed"], ["borrowed", "sped_up"], ["borrowed", "sped_up", "trimmed"], []]
    assert rows[1]["played_s"] == rows[1]["natural_s"] < rows[1]["slot_s"]  # not stretched
    assert 1.1 < rows[3]["speed"] < 1.2
    assert rows[4]["speed"] == 1.25 and rows[4]["trimmed_s"] > 0.3
    cut = rows[4]["cut"]  # cut between two words, and the report says which were lost
    assert cut["at_pause"] and 0 < cut["dropped_share"] < 1, cut
    assert cut["kept_s"] <= rows[4]["available_s"] + 0.001
    assert all("cut" not in row for i, row in enumerate(rows) if i != 4)
    assert report["summary"] == {"lines": 6, "borrowed": 3, "led": 0, "sped_up": 2,
                                 "trimmed": 1, "max_speed": 1.25}
    for (start, _, _, _), row in zip(speech_mix["lines"], rows):
        assert row["start"] == start and row["text"] and row["speaker"] and row["voice"]
    for a, b in itertools.pairwise(rows):
        assert a["start"] + a["played_s"] <= b["start"] - mix_lines.GAP_S + 0.002


def test_every_line_starts_at_its_source_time(speech_mix):
    audio, rate = speech_mix["audio"], speech_mix["rate"]
    env = voice_envelope(audio, rate)
    level = 0.1 * env.max()
    previous_end = 0.0
    for (start, _, wav, wav_rate), row in zip(speech_mix["lines"], speech_mix["report"]["lines"]):
        own = voice_envelope(resample_poly(wav, RATE, wav_rate), RATE)
        lead = first_sound(own, 0, len(own) / 200, 0.1 * own.max()) / row["speed"]
        heard = first_sound(env, max(start - 0.5, previous_end + 0.01), start + row["played_s"],
                            level)
        previous_end = start + row["played_s"]
        assert abs(heard - (start + lead)) < 0.1, (row["id"], heard, start, lead)


def test_lines_are_fitted_in_the_audio_too(speech_mix):
    """The sped-up line ends about when planned; the trimmed one is silent before the next."""
    audio, rate = speech_mix["audio"], speech_mix["rate"]
    env = voice_envelope(audio, rate)
    rows = speech_mix["report"]["lines"]
    sped, cut, following = rows[3], rows[4], rows[5]
    tail = env[int((sped["start"] + sped["played_s"] + 0.02) * 200):int(cut["start"] * 200)]
    assert tail.max() < 0.05 * env.max()
    gap = env[int((cut["start"] + cut["played_s"] + 0.01) * 200):int(following["start"] * 200)]
    assert gap.max() < 0.05 * env.max()
    # the fade: the last 30 ms of the trimmed line get quieter towards the cut
    end = cut["start"] + cut["played_s"]
    assert env[int((end - 0.01) * 200)] < 0.5 * env[int((end - 0.2) * 200):int((end - 0.05) * 200)].max()


def test_bed_ducks_under_lines_and_comes_back_between_them(speech_mix):
    audio, rate, rows = speech_mix["audio"], speech_mix["rate"], speech_mix["report"]["lines"]
    before = bed_level_db(audio, rate, 0.2, 0.8)
    inside = [bed_level_db(audio, rate, r["start"] + 0.15, r["start"] + r["played_s"] - 0.05)
              for r in rows if r["played_s"] > 0.4]
    # the middle of every gap longer than a second, clear of the ramps
    between = []
    for a, b in itertools.pairwise(rows):
        gap_start, gap_end = a["start"] + a["played_s"], b["start"]
        if gap_end - gap_start > 1.0:
            middle = (gap_start + gap_end) / 2
            between.append(bed_level_db(audio, rate, middle - 0.2, middle + 0.2))
    assert len(inside) >= 4 and len(between) >= 3
    for level in between:  # the bed is back to where it was before the first line
        assert abs(level - before) < 0.5, (level, before)
    for level in inside:  # and duck_db under every line
        assert before - level == pytest.approx(12.0, abs=1.0), (level, before)


def test_dub_is_at_target_loudness_and_true_peak(speech_mix):
    audio, rate, report = speech_mix["audio"], speech_mix["rate"], speech_mix["report"]
    info = sf.info(speech_mix["tmp"] / "dub.wav")
    assert (info.samplerate, info.channels, info.subtype) == (48000, 2, "PCM_24")
    assert abs(info.frames / rate - speech_mix["media"]) < 0.05
    assert loudness(audio, rate) == pytest.approx(-16.0, abs=1.0)
    assert true_peak_db(audio) <= -1.0
    lufs = report["loudness"]
    assert lufs["target_lufs"] == -16 and lufs["true_peak_db"] == -1
    assert lufs["output_i"] == pytest.approx(-16.0, abs=1.0) and lufs["output_tp"] <= -1.0
    assert lufs["input_i"] is not None
    # Piper's peaks are too high for one constant gain: peaks were limited, not compressed.
    assert lufs["normalization"] == "limited" and lufs["limited_db"] > 0


def clicks_between_samples(path: Path, click_s: float, rate: int = 48000) -> Path:
    """Quiet noise with a 12 kHz click each second, at 45 degrees: every sample of a click
    is 3 dB under its true peak, which only a 4x oversampled meter sees."""
    t = np.arange(int(rate * 8.0)) / rate
    bed = 0.02 * np.random.default_rng(3).standard_normal(len(t))
    clicks = (t % 1.0) < click_s
    bed[clicks] = 0.9 * np.sin(2 * np.pi * 12000 * t[clicks] + np.pi / 4)
    sf.write(path, np.stack([bed, bed], axis=1), rate, subtype="PCM_24")
    return path


def test_peaks_between_samples_are_limited_again_at_192_khz(tmp_path, caplog):
    """The limiter at 48 kHz sees samples only and cannot hold these clicks; the file
    must still meet the ceiling (redone at 192 kHz), and the log says so."""
    source = clicks_between_samples(tmp_path / "source.wav", 0.005)
    with caplog.at_level(logging.INFO, logger="dubflow.mix_render"):
        report, audio, _ = run_stage(tmp_path, source, write_tts(tmp_path / "tts", []))
    assert "limiting again at 192000 Hz" in caplog.text
    assert report["loudness"]["normalization"] == "limited"
    assert report["loudness"]["output_tp"] <= -1.0
    assert true_peak_db(audio) <= -1.0  # (loudness: -18 LUFS; 8.7 dB of clicks limited)


def test_one_gain_over_the_ceiling_between_samples_goes_to_the_limiter(tmp_path, caplog):
    """Pass 1 reads sample peaks: here they allow one gain, the true peak does not. The
    written file's true peak is checked, so the limiter still takes over."""
    source = clicks_between_samples(tmp_path / "source.wav", 0.009)
    with caplog.at_level(logging.INFO, logger="dubflow.mix_render"):
        report, audio, _ = run_stage(tmp_path, source, write_tts(tmp_path / "tts", []))
    assert "over the -1.0 ceiling" in caplog.text
    assert report["loudness"]["normalization"] == "limited"
    assert true_peak_db(audio) <= -1.0


def test_no_temporary_files_are_left_next_to_the_dub(speech_mix):
    assert sorted(p.name for p in speech_mix["tmp"].iterdir()) == [
        "dub.mka", "dub.wav", "fit.json", "source.wav", "tempo", "tts"]


def decode(path: Path) -> np.ndarray:
    """Any audio file as float samples (frames x channels), through a temporary wav."""
    wav = path.with_suffix(".decoded.wav")
    run_ffmpeg(["-i", file_arg(path), "-c:a", "pcm_f32le", file_arg(wav)], stage="test", path=path)
    audio, _ = sf.read(wav, dtype="float64", always_2d=True)
    wav.unlink()
    return audio


def test_the_mkv_track_is_the_dub_encoded(speech_mix):
    """dub.mka is dub.wav encoded by the mix, so mux only copies it."""
    track = probe(speech_mix["tmp"] / "dub.mka", stage="test")
    (stream,) = track.streams
    assert (stream.codec_name, stream.channels, stream.sample_rate) == ("aac", 2, 48000)
    assert abs(track.duration_s - speech_mix["media"]) < 0.05
    decoded = decode(speech_mix["tmp"] / "dub.mka")
    n = min(len(decoded), len(speech_mix["audio"]))
    assert np.corrcoef(decoded[:n, 0], speech_mix["audio"][:n, 0])[0, 1] > 0.99


def test_sped_up_lines_come_from_the_cache_the_second_time(speech_mix, tmp_path):
    cached = sorted((speech_mix["tmp"] / "tempo").rglob("*.wav"))
    assert len(cached) == 2  # the two sped-up lines
    stamps = [p.stat().st_mtime_ns for p in cached]
    source, tts = speech_mix["tmp"] / "source.wav", speech_mix["tmp"] / "tts"
    again = mix.run(source, tts, tmp_path / "dub.wav", tmp_path / "fit.json", mix_config(),
                    tempo_cache=speech_mix["tmp"] / "tempo")
    assert again["lines"] == speech_mix["report"]["lines"]
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    audio, _ = sf.read(tmp_path / "dub.wav", dtype="float64", always_2d=True)
    assert np.array_equal(audio, speech_mix["audio"])


def test_lines_at_another_rate_than_most_land_at_their_time(tmp_path):
    """The control track runs at the rate of most lines (here 22.05 kHz); a 16 kHz line
    is resampled on its own and must start where the others would."""
    lines = [(1.0, 2.0, tone(0.8, 22050), 22050), (3.0, 4.0, tone(0.8, 16000), 16000),
             (5.0, 6.0, tone(0.8, 22050), 22050)]
    source = make_source(tmp_path / "source.wav", 7.0, bed="silence")
    report, audio, rate = run_stage(tmp_path, source, write_tts(tmp_path / "tts", lines))
    assert mix_lines.voice_rate(json.loads((tmp_path / "tts" / "lines.json").read_text()),
                                mix_settings.settings({})) == 22050
    env = voice_envelope(audio, rate)
    for start, end, _, _ in lines:
        assert abs(first_sound(env, start - 0.5, end, 0.1 * env.max()) - start) < 0.01
    assert rate == 48000 and len(audio) == pytest.approx(7.0 * rate, abs=rate * 0.01)


@pytest.mark.parametrize("layout, channels_out", [("5.1", (2, 6)), ("7.1", (8,))])
def test_surround_source_and_surround_dub(tmp_path, layout, channels_out):
    """A 5.1 source at 44.1 kHz: downmixed to a stereo dub, or kept 5.1 with the voice
    centred; a 7.1 source kept 7.1, the voice centred too."""
    source = make_source(tmp_path / "source.wav", 8.0, layout=layout, rate=44100, bed="noise",
                         level=0.3)
    tts = write_tts(tmp_path / "tts", [(1.0, 3.0, tone(1.5), 16000), (5.0, 6.0, tone(1.2), 22050)])
    for channels in channels_out:
        out = tmp_path / f"out{channels}"
        track = out / "dub.mka"  # the mkv's AAC track too, in the same layout
        report, audio, rate = run_stage(out, source, tts, dub_track=track, channels=channels)
        encoded = probe(track, stage="test").audio_streams[0]
        assert encoded.channels == channels and encoded.codec_name == "aac", encoded
        assert audio.shape[1] == channels and rate == 48000
        assert loudness(audio, rate) == pytest.approx(-16.0, abs=1.0)
        assert true_peak_db(audio) <= -1.0
        assert report["summary"]["lines"] == 2
        env = voice_envelope(audio, rate)
        assert first_sound(env, 0.5, 2.0, 0.5 * env.max()) == pytest.approx(1.0, abs=0.1)
        assert first_sound(env, 4.5, 6.0, 0.5 * env.max()) == pytest.approx(5.0, abs=0.1)
    centre = audio[int(1.2 * rate):int(2.4 * rate)]
    voice_by_channel = voice_envelope(centre[:, [2]], rate).mean(), voice_envelope(centre[:, [0]], rate).mean()
    assert voice_by_channel[0] > 3 * voice_by_channel[1]  # the voice is in FC, not in FL


@pytest.mark.parametrize("bed", ["noise", "tone"])
def test_no_lines_gives_the_normalised_original_with_a_warning(tmp_path, caplog, bed):
    source = make_source(tmp_path / "source.wav", 6.0, bed=bed, level=0.05)
    tts = write_tts(tmp_path / "tts", [])
    with caplog.at_level(logging.WARNING, logger="mix"):
        report, audio, rate = run_stage(tmp_path, source, tts)
    assert "no lines to place" in caplog.text
    assert report["summary"]["lines"] == 0 and report["lines"] == []
    assert loudness(audio, rate) == pytest.approx(-16.0, abs=1.0)
    assert true_peak_db(audio) <= -1.0
    if bed == "tone":
        # a steady tone has a loudness range of 0, which loudnorm took for "not
        # measured" and so refused its linear mode: one gain must still be the answer
        assert report["loudness"]["normalization"] == "linear"
        assert report["loudness"]["output_i"] == pytest.approx(-16.0, abs=0.2)


def test_silent_input_is_written_without_normalisation(tmp_path, caplog):
    source = make_source(tmp_path / "source.wav", 4.0, bed="silence", layout="mono")
    tts = write_tts(tmp_path / "tts", [])
    with caplog.at_level(logging.WARNING, logger="dubflow.mix_render"):
        report, audio, rate = run_stage(tmp_path, source, tts)
    assert "silent" in caplog.text
    assert report["loudness"]["normalization"] == "skipped"
    assert report["loudness"]["input_i"] is None and report["loudness"]["output_i"] is None
    assert rate == 48000 and audio.shape == (4 * 48000, 1) and not np.any(audio)


def test_very_quiet_bed_is_normalised_without_trouble(tmp_path):
    source = make_source(tmp_path / "source.wav", 4.0, bed="noise", level=0.005)
    report, audio, rate = run_stage(tmp_path, source, write_tts(tmp_path / "tts", []))
    assert -70 < report["loudness"]["input_i"] < -45
    assert loudness(audio, rate) == pytest.approx(-16.0, abs=1.0)
    assert true_peak_db(audio) <= -1.0


def test_speech_over_silence_is_normalised(tmp_path):
    source = make_source(tmp_path / "source.wav", 5.0, bed="silence", layout="mono")
    tts = write_tts(tmp_path / "tts", [(1.0, 3.0, tone(2.0), 22050)])
    report, audio, rate = run_stage(tmp_path, source, tts)
    assert report["summary"]["lines"] == 1
    assert loudness(audio, rate) == pytest.approx(-16.0, abs=1.0)
    assert true_peak_db(audio) <= -1.0


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_bad_tts_wav_is_one_sentence_and_leaves_nothing(tmp_path, damage):
    source = make_source(tmp_path / "source.wav", 4.0)
    tts = write_tts(tmp_path / "tts", [(0.5, 1.5, tone(0.8), 16000), (2.0, 3.0, tone(0.8), 16000)])
    bad = tts / "0002.wav"
    if damage == "garbage":
        bad.write_bytes(b"RIFF\x00\x00not really a wave file at all")
    else:
        bad.unlink()
    with pytest.raises(InputError) as caught:
        mix.run(source, tts, tmp_path / "out" / "dub.wav", tmp_path / "out" / "fit.json", mix_config())
    message = str(caught.value)
    assert str(bad) in message and "synthesize" in message and "stage mix" in message
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_lines_json_is_an_input_error(tmp_path):
    source = make_source(tmp_path / "source.wav", 2.0)
    (tmp_path / "tts").mkdir()
    with pytest.raises(InputError, match=r"lines.json is missing \(stage mix\); run the "
                                         r"synthesize stage"):
        mix.run(source, tmp_path / "tts", tmp_path / "dub.wav", tmp_path / "fit.json", mix_config())
    (tmp_path / "tts" / "lines.json").write_text('[{"id": "1", "start": 1.0}]')
    with pytest.raises(InputError, match=r"line 1 of .*lines.json lacks an 'id' or has "
                                         r"non-numeric times \(stage mix\)"):
        mix.run(source, tmp_path / "tts", tmp_path / "dub.wav", tmp_path / "fit.json", mix_config())
    (tmp_path / "tts" / "lines.json").write_text('[{"id": "1", "start": -1.0, "end": 1.0}]')
    with pytest.raises(InputError, match=r"line 1 of .*lines.json starts at -1.0 s, before "
                                         r"the video \(stage mix\)"):
        mix.run(source, tmp_path / "tts", tmp_path / "dub.wav", tmp_path / "fit.json", mix_config())
    assert not (tmp_path / "dub.wav").exists()


def test_a_cut_falls_in_the_last_pause_between_words_that_fits():
    rate = 16000
    word = np.sin(2 * np.pi * 200 * np.arange(int(0.3 * rate)) / rate).astype(np.float32)
    pause = np.zeros(int(0.1 * rate), dtype=np.float32)
    audio = np.concatenate([word, pause, word, pause, word])  # words end 0.3, 0.7, 1.1 s
    cut = mix_lines.last_pause(audio, int(0.9 * rate), rate)  # room ends inside the third word
    assert 0.7 * rate <= cut <= 0.8 * rate  # in the second pause, not in a word
    assert mix_lines.speech_share_after(audio, cut, rate) == pytest.approx(1 / 3, abs=0.05)
    one_word = np.concatenate([word, word, word])
    assert mix_lines.last_pause(one_word, int(0.5 * rate), rate) == int(0.5 * rate)  # no pause
    record = mix.cut_record({"kept_s": 0.75, "at_pause": True, "dropped_share": 1 / 3},
                            "um dois três")
    assert record["dropped_words"] == "três"


@pytest.mark.parametrize("preset, lufs, peak", [("ebu-r128", -23.0, -1.0),
                                                ("atsc-a85", -24.0, -2.0)])
def test_loudness_presets_are_met_on_the_track_as_written(speech_mix, tmp_path, preset,
                                                          lufs, peak):
    """Measured on the AAC track the mkv gets, decoded as a player would."""
    source, tts = speech_mix["tmp"] / "source.wav", speech_mix["tmp"] / "tts"
    report, _, _ = run_stage(tmp_path, source, tts, dub_track=tmp_path / "dub.mka",
                             loudness=preset)
    assert (report["loudness"]["target_lufs"], report["loudness"]["true_peak_db"]) == (lufs, peak)
    decoded = tmp_path / "decoded.wav"
    run_ffmpeg(["-i", file_arg(tmp_path / "dub.mka"), "-c:a", "pcm_f32le", file_arg(decoded)],
               stage="test", path=decoded)
    audio, rate = sf.read(decoded, dtype="float64", always_2d=True)
    assert loudness(audio, rate) == pytest.approx(lufs, abs=0.5)
    assert true_peak_db(audio) <= peak + 0.15  # AAC may overshoot the mix's margin a little


def test_every_dub_layout_has_a_bitrate():
    assert set(mix_track.DUB_BITRATE) == set(mix_settings.LAYOUTS) == set(mix_render.VOICE_PAN)


def test_channels_auto_follows_the_source_layout():
    assert mix_settings.settings({}, source_channels=6).channels == 6
    assert mix_settings.settings({}, source_channels=1).channels == 1
    assert mix_settings.settings({}, source_channels=8).channels == 8
    assert mix_settings.settings({}, source_channels=4).channels == 2  # quad: stereo
    assert mix_settings.settings({"channels": 2}, source_channels=6).channels == 2


def test_speech_band_is_lined_up_with_the_bed_and_the_preview_hears_the_same(tmp_path):
    """The mix subtracts the bed's speech band from the bed, so the band must be in phase
    with it, sample for sample (a one-sample slip would leave the band at full level at
    high frequencies); and the review preview's own band must match the mix's."""
    rate = 48_000
    noise = np.random.default_rng(1).normal(scale=0.1, size=rate * 2).astype(np.float32)
    sf.write(tmp_path / "noise.wav", noise, rate, subtype="FLOAT")
    cfg = mix_settings.settings(default_config()["mix"], 1)
    graph = "[0:a]" + mix_render.speech_band(rate) + "[out]"
    run_ffmpeg(["-i", file_arg(tmp_path / "noise.wav"), "-filter_complex", graph,
                "-map", "[out]", "-c:a", "pcm_f32le", file_arg(tmp_path / "band.wav")],
               stage="mix", path=tmp_path / "noise.wav")
    band, _ = sf.read(tmp_path / "band.wav", dtype="float32")
    # the FIR's tail runs on past the bed; the mix's amix stops at the bed's end
    assert len(band) >= len(noise) and cfg.band_duck_db == 10.0
    band = band[:len(noise)]
    spectrum = lambda x: np.abs(np.fft.rfft(x[rate // 2: -rate // 2]))  # noqa: E731
    ratio = spectrum(band) / spectrum(noise)
    hz = np.fft.rfftfreq(rate, 1 / rate)
    assert 0.8 < np.median(ratio[(hz > 300) & (hz < 2000)]) < 1.2  # the band passes
    assert np.median(ratio[(hz > 6000)]) < 0.05 and np.median(ratio[hz < 60]) < 0.05
    # in phase: the bed minus its band has (almost) nothing left in the band
    rest = spectrum(noise - band)[(hz > 300) & (hz < 2000)]
    assert np.median(rest / spectrum(noise)[(hz > 300) & (hz < 2000)]) < 0.1
    preview = mix_render.speech_band_of(noise, rate)
    inner = slice(rate // 4, -rate // 4)
    difference = np.sum((preview[inner] - band[inner]) ** 2) / np.sum(band[inner] ** 2)
    assert 10 * np.log10(difference) < -20  # the same band, to within 1 %


def test_a_remix_reuses_the_last_gain_in_one_pass_and_checks_it(speech_mix, tmp_path, caplog,
                                                                 monkeypatch):
    """The second mix of the same video writes in one pass with the first's gain, meters
    the mix before it in that pass, and gives the same figures; a memo whose gain no longer
    fits, or from other settings, or unreadable, is measured again."""
    tts, source = speech_mix["tmp"] / "tts", speech_mix["tmp"] / "source.wav"
    memo = tmp_path / "gain" / "v.pt.json"
    passes = []
    real_pass = mix_render.ffmpeg_pass
    # render_normalised looks ffmpeg_pass up in mix_render, where it is defined
    monkeypatch.setattr(mix_render, "ffmpeg_pass",
                        lambda *a, **k: passes.append(a[3]) or real_pass(*a, **k))

    def remix(out: str, **settings) -> dict:
        passes.clear()
        return mix.run(source, tts, tmp_path / out / "dub.wav", tmp_path / out / "fit.json",
                       mix_config(**settings), tempo_cache=tmp_path / "tempo", gain_memo=memo)

    first = remix("first")["loudness"]
    assert len(passes) >= 2 and json.loads(memo.read_text())["normalization"] == "limited"
    with caplog.at_level(logging.INFO):
        second = remix("second")["loudness"]
    assert len(passes) == 1 and "reused the previous mix's gain" in caplog.text
    assert second == first  # same gain, same file: the meters read the same
    a, _ = sf.read(tmp_path / "first" / "dub.wav")
    b, _ = sf.read(tmp_path / "second" / "dub.wav")
    np.testing.assert_array_equal(a, b)

    data = json.loads(memo.read_text())
    memo.write_text(json.dumps({**data, "gain_db": data["gain_db"] + 6.0}))  # far off now
    third = remix("third")["loudness"]
    assert len(passes) >= 3 and third["output_i"] == pytest.approx(first["output_i"], abs=0.2)
    assert third["gain_db"] == pytest.approx(first["gain_db"], abs=0.2)
    remix("other", target_lufs=-23.0)  # other settings: the memo is not used
    assert len(passes) >= 2
    memo.write_text(json.dumps({k: v for k, v in data.items() if k != "limiter_rate"}))
    remix("no rate")  # 'limited' without its limiter's rate: unreadable, measured again
    assert len(passes) >= 2
    memo.write_text("{not json")
    remix("broken")
    assert len(passes) >= 2 and json.loads(memo.read_text())["settings"]["target_lufs"] == -16.0


def test_meters_are_told_apart_whatever_order_ffmpeg_prints_them(tmp_path):
    """ffmpeg prints the graph's last meter first (and 5.1 prints a dropped graph's meters
    too): each meter's own last summary is read, in graph order."""
    source = tmp_path / "tone.wav"
    t = np.arange(48000 * 3) / 48000
    sf.write(source, 0.25 * np.sin(2 * np.pi * 440 * t), 48000)
    graph = ("[0:a]" + mix_render.metered_before(mix_render.gain_filter(6.0)) + ","
             + mix_render.METER + "[out]")
    result = run_ffmpeg(["-i", file_arg(source), "-filter_complex", graph, "-map", "[out]",
                         "-f", "null", "-"], stage="mix", path=source)
    before, after = mix_render.ebur128_summaries(result.stderr)
    assert after["i"] - before["i"] == pytest.approx(6.0, abs=0.15)
    assert mix_render.ebur128_summary(result.stderr) == after
