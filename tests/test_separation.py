"""Separation: real Piper speech over generated music, through the real Spleeter weights.

The signal is known part by part (speech alone, music alone), so what ends up where can be
measured instead of listened to:

- **speech left in the bed**: the bed is ``mix − vocals``, which the model makes by
  masking the mix's spectrum. The mask it applied is recovered per time-frequency cell
  as ``bed / mix`` (same STFT as the model: 4096/1024 at 44.1 kHz) and applied to the
  speech alone: the original speech the bed still carries, without counting music that
  the vocals took away (that loss is the second figure). Re-analysing the bed smears the
  mask a little, so this reads about 2 dB worse than the model's own mask applied to the
  speech (-11.8 against -13.6 dB here): conservative.
- **SI-SDR** of the vocals against the speech: the usual scale-invariant score, which
  counts every error (music in the vocals, speech missing from them).

At equal RMS over this music, Spleeter leaves the speech 12-14 dB down in the bed, not
20: its ratio mask is soft wherever voice and chords share a cell. A single-tap
projection (``<bed, speech>² / |speech|⁴``) would report -21.8 dB, but it only counts the
part of the leak that is a scaled copy of the speech, so it is not used.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from conversation import LINES
from demo_media import speak
from dubflow import separation
from dubflow.errors import ModelError

BPM = 120
CHORDS = [(261.63, 329.63, 392.00), (196.00, 246.94, 293.66), (220.00, 261.63, 329.63),
          (174.61, 220.00, 261.63)]  # C, G, Am, F: two seconds each


@functools.cache
def _speech_22k(seconds: float) -> np.ndarray:
    """Piper lines with short pauses until ``seconds`` (looped past what was spoken)."""
    pieces, total = [], 0.0
    for text in LINES[:4]:
        audio, rate = speak(text)
        pieces += [audio, np.zeros(int(0.3 * rate), np.float32)]
        total += len(audio) / rate + 0.3
        if total >= seconds:
            break
    track = np.concatenate(pieces)
    return np.resize(track, int(seconds * rate)).astype(np.float32)


def speech_track(rate: int, seconds: float) -> np.ndarray:
    """Mono Piper speech (its own band stops at 11 kHz) at ``rate``."""
    g = math.gcd(rate, 22_050)
    audio = resample_poly(_speech_22k(seconds), rate // g, 22_050 // g).astype(np.float32)
    return np.pad(audio, (0, max(0, int(seconds * rate) - len(audio))))[:int(seconds * rate)]


def _tone(phase: np.ndarray, harmonics: int = 6) -> np.ndarray:
    """A bright harmonic tone (sawtooth-like) from its running phase."""
    return sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))


def music_track(rate: int, seconds: float, channels: int = 2) -> np.ndarray:
    """Chords, bass, kick and hi-hat at 120 bpm: harmonic tones with a beat, full band."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    beat_phase = (t * BPM / 60) % 1.0 * 60 / BPM  # seconds since the last beat
    chord = np.asarray(CHORDS)[(t // 2).astype(int) % len(CHORDS)]
    pad = sum(_tone(2 * np.pi * np.cumsum(chord[:, i]) / rate) for i in range(3))
    pad *= 0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)
    bass_phase = 2 * np.pi * np.cumsum(chord[:, 0] / 2) / rate
    bass = (np.sin(bass_phase) + 0.5 * np.sin(2 * bass_phase)) * np.exp(-beat_phase / 0.25)
    kick = np.sin(2 * np.pi * (50 * beat_phase + 40 * (1 - np.exp(-beat_phase / 0.03))))
    kick *= np.exp(-beat_phase / 0.12)
    off = ((t * BPM / 60) + 0.5) % 1.0 * 60 / BPM
    hat = np.random.default_rng(0).normal(size=n) * np.exp(-off / 0.02)
    hat = np.diff(hat, prepend=0.0)  # a crude high-pass: hi-hats live above 5 kHz
    left = 0.5 * pad + 0.7 * bass + kick + 0.3 * hat
    right = 0.6 * pad + 0.7 * bass + kick + 0.2 * hat
    stereo = np.stack([left, right], axis=1)
    return (stereo if channels == 2 else stereo.mean(axis=1, keepdims=True)).astype(np.float32)


def speech_over_music(rate: int, seconds: float, channels: int):
    """(mix, speech, music), each (frames, channels); music at the speech's RMS, peak 0.5."""
    speech = np.repeat(speech_track(rate, seconds)[:, None], channels, axis=1)
    music = music_track(rate, seconds, channels)
    music *= np.sqrt(np.mean(speech**2) / np.mean(music**2))
    scale = 0.5 / np.abs(speech + music).max()
    speech, music = speech * scale, music * scale
    return (speech + music).astype(np.float32), speech.astype(np.float32), music


def _stft(audio: np.ndarray) -> torch.Tensor:
    return torch.stft(torch.from_numpy(np.ascontiguousarray(audio.T)), 4096, 1024,
                      window=torch.hann_window(4096), return_complex=True)


def leak_figures(mix, speech, music, bed) -> dict:
    """Speech left in the bed and music lost from it, dB relative to each alone (44.1 kHz)."""
    mix_spec, bed_spec = _stft(mix), _stft(bed)
    gain = bed_spec * mix_spec.conj() / (mix_spec.abs() ** 2 + 1e-9)  # the bed's mask
    speech_spec, music_spec = _stft(speech), _stft(music)
    leak = (gain * speech_spec).abs().pow(2).sum() / speech_spec.abs().pow(2).sum()
    lost = ((1 - gain) * music_spec).abs().pow(2).sum() / music_spec.abs().pow(2).sum()
    residual = np.sum((bed - music) ** 2) / np.sum(speech**2)  # every error, one number
    return {"speech_leak_db": 10 * math.log10(float(leak)),
            "music_loss_db": 10 * math.log10(float(lost)),
            "bed_error_db": 10 * math.log10(float(residual))}


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (all channels as one signal)."""
    estimate, reference = estimate.ravel().astype(np.float64), reference.ravel()
    target = reference * (estimate @ reference) / (reference @ reference)
    return 10 * math.log10(float(target @ target) / float(np.sum((estimate - target) ** 2)))


def snr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    noise = np.sum((estimate.astype(np.float64) - reference) ** 2)
    return 10 * math.log10(float(np.sum(reference.astype(np.float64) ** 2)) / max(noise, 1e-30))


# ---------------------------------------------------------------------------------------


def test_missing_weights_is_one_sentence(tmp_path):
    with pytest.raises(ModelError) as error:
        separation.check_weights(tmp_path / "nowhere")
    message = str(error.value)
    assert "testcheckpoint0.ckpt" in message and "nowhere" in message
    assert separation.WEIGHTS_PIN in message and "make setup" in message
    assert "\n" not in message and message.endswith(".") and ". " not in message


def test_installed_weights_are_found():
    separation.check_weights()
    assert separation.weights_path().is_dir()


@pytest.mark.model
def test_speech_is_removed_from_the_bed():
    mix, speech, music = speech_over_music(44_100, 12.0, 2)
    vocals = separation.separate_vocals(mix, 44_100, threads=1)
    bed = separation.bed_from(mix, vocals)
    figures = leak_figures(mix, speech, music, bed)
    print(figures, "SI-SDR", si_sdr(vocals, speech))
    assert figures["speech_leak_db"] <= -10.0  # measured -11.8 (see the module docstring)
    assert figures["music_loss_db"] <= -8.0  # measured -10.0
    assert si_sdr(vocals, speech) >= 8.0  # measured 8.7
    np.testing.assert_allclose(bed + vocals, mix, atol=1e-6)


@pytest.mark.model
@pytest.mark.parametrize("rate, channels", [(48_000, 2), (16_000, 1)])
def test_output_keeps_rate_channels_and_length(tmp_path, rate, channels):
    mix, speech, _ = speech_over_music(rate, 12.0, channels)
    mix = mix[:-123]  # not a whole number of hops at any rate
    source = tmp_path / "source.wav"
    sf.write(source, mix, rate, subtype="PCM_24")
    stats = separation.separate_file(source, tmp_path / "bed.wav")
    info = sf.info(tmp_path / "bed.wav")
    assert (info.samplerate, info.channels, info.frames) == (rate, channels, len(mix))
    assert info.subtype == "PCM_24"
    written, _ = sf.read(source, dtype="float32", always_2d=True)
    bed, _ = sf.read(tmp_path / "bed.wav", dtype="float32", always_2d=True)
    vocals = written - bed  # what the stage took out of the source
    assert si_sdr(vocals, speech[:-123]) >= 8.0  # time-aligned: a shift would ruin this
    assert stats["seconds"] == pytest.approx(len(mix) / rate, abs=1e-3)
    assert 0 < stats["rtf"] < 1 and stats["bed_peak_dbfs"] < 0


@pytest.mark.model
def test_chunks_match_one_pass():
    mix, _, _ = speech_over_music(48_000, 70.0, 2)
    whole = separation.separate_vocals(mix, 48_000, chunk_seconds=120)
    chunked = separation.separate_vocals(mix, 48_000, chunk_seconds=30)
    print("chunk seam SNR", snr_db(chunked, whole))
    assert chunked.shape == whole.shape == mix.shape
    assert snr_db(chunked, whole) > 60.0


def _level_db(audio: np.ndarray, reference: np.ndarray, t0: float, t1: float,
              rate: int) -> float:
    """How much of ``reference`` (a known part of the source) ``audio`` holds in [t0, t1),
    in dB: 0 is all of it, at the level it has in the source."""
    a, r = audio[int(t0 * rate):int(t1 * rate)], reference[int(t0 * rate):int(t1 * rate)]
    return 20 * math.log10(max(abs(float(a @ r) / float(r @ r)), 1e-9))


@pytest.mark.model
def test_original_dialogue_returns_where_no_line_is_voiced(tmp_path):
    """Music throughout, speech at 1 s (a line the dub voices) and at 6 s (one it does not:
    a song, a shout, a line emptied in review). With mix.restore_dialogue the second comes
    back as it was in the source; under the dub line nothing of the original is added."""
    import mix
    from conftest import default_config
    from dubflow import mix_control

    rate, pad = 48_000, mix_control.RESTORE_PAD_S
    first = speak("The storm moved north during the night and the roads are open again.")
    second = speak("Nobody expected the meeting to last for three whole hours.")
    dub = speak("Good evening, and welcome back to the news at nine.")
    seconds, starts = 11.0, (1.0, 6.0)
    speech = np.zeros(int(seconds * rate), np.float32)
    ends = []
    for start, (audio, voice_rate) in zip(starts, (first, second)):
        g = math.gcd(rate, voice_rate)
        audio = resample_poly(audio, rate // g, voice_rate // g).astype(np.float32)
        speech[int(start * rate):int(start * rate) + len(audio)] = audio
        ends.append(round(start + len(audio) / rate, 3))
    music = music_track(rate, seconds, 2).mean(axis=1)
    music *= np.sqrt(np.mean(speech[speech != 0] ** 2) / np.mean(music**2))
    scale = 0.5 / np.abs(speech + music).max()
    speech, music = speech * scale, music * scale
    source = tmp_path / "source.wav"
    sf.write(source, np.repeat((speech + music)[:, None], 2, axis=1), rate, subtype="PCM_24")
    separation.separate_file(source, tmp_path / "bed.wav")

    tts = tmp_path / "tts"
    tts.mkdir()
    sf.write(tts / "0001.wav", dub[0], dub[1], subtype="PCM_16")
    rows = [{"id": "0001", "speaker": "SPEAKER_00", "start": starts[0], "end": ends[0],
             "text": "line 1", "wav": "0001.wav", "duration_s": len(dub[0]) / dub[1],
             "sample_rate": dub[1]},
            {"id": "0002", "speaker": "SPEAKER_01", "start": starts[1], "end": ends[1],
             "text": "", "wav": None}]
    (tts / "lines.json").write_text(json.dumps(rows))

    def dub_track(restore: bool) -> tuple[np.ndarray, dict]:
        out = tmp_path / ("restored" if restore else "plain")
        settings = {**default_config()["mix"], "restore_dialogue": restore}
        report = mix.run(tmp_path / "bed.wav", tts, out / "dub.wav", out / "fit.json",
                         settings, original_wav=source)
        audio, written_rate = sf.read(out / "dub.wav", dtype="float64", always_2d=True)
        assert written_rate == rate
        audio = audio.mean(axis=1)
        # the loudness step's gain, from the music alone between the two lines
        gain = float(audio[int(4.6 * rate):int(5.4 * rate)] @ music[int(4.6 * rate):int(5.4 * rate)]
                     / (music[int(4.6 * rate):int(5.4 * rate)] @ music[int(4.6 * rate):int(5.4 * rate)]))
        return audio / gain, report

    restored, report = dub_track(True)
    plain, plain_report = dub_track(False)
    assert report["restored"] == [[round(starts[1] - pad, 3), round(ends[1] + pad, 3)]]
    assert plain_report["restored"] == []
    in_gap, under_line = (starts[1], ends[1]), (starts[0], report["lines"][0]["start"]
                                                + report["lines"][0]["played_s"])
    figures = {
        "gap_restored_db": _level_db(restored, speech, *in_gap, rate),
        "gap_plain_db": _level_db(plain, speech, *in_gap, rate),
        "gap_restored_vs_source_snr_db": snr_db(
            restored[int(in_gap[0] * rate):int(in_gap[1] * rate)],
            (speech + music)[int(in_gap[0] * rate):int(in_gap[1] * rate)]),
        "line_restored_db": _level_db(restored, speech, *under_line, rate),
        "line_plain_db": _level_db(plain, speech, *under_line, rate),
    }
    print(figures)
    # in the gap the original speech is back, the source itself; without the option, gone
    assert figures["gap_restored_db"] > -1.0
    assert figures["gap_restored_vs_source_snr_db"] > 20.0
    assert figures["gap_plain_db"] < -10.0
    # under the dub line nothing of the original is added back (what is left is the bed's
    # own leak, ducked: the same with the option off), and the original returns only
    # RESTORE_GUARD_S after the line, whose voice is done by then
    assert figures["line_restored_db"] < -20.0
    assert abs(figures["line_restored_db"] - figures["line_plain_db"]) < 1.0
    assert (report["restored"][0][0]
            >= max(under_line[1], ends[0]) + mix_control.RESTORE_GUARD_S)


@pytest.mark.model
def test_speech_is_20_db_down_in_the_bed_at_film_levels():
    """Dialogue is usually mixed well above the music (here 10 dB): there the bed keeps
    less than a hundredth of the speech's power, by the conservative per-cell measure."""
    mix, speech, music = speech_over_music(44_100, 12.0, 2)
    music = music * 10 ** (-10 / 20)
    mix = (speech + music).astype(np.float32)
    bed = separation.bed_from(mix, separation.separate_vocals(mix, 44_100, threads=1))
    figures = leak_figures(mix, speech, music, bed)
    print(figures)
    assert figures["speech_leak_db"] <= -20.0  # measured -20.9
    assert figures["music_loss_db"] <= -4.0  # measured -4.9


def _under_line_leak_db(track: np.ndarray, source: np.ndarray, speech: np.ndarray,
                        gain: float, span: tuple[int, int]) -> float:
    """The original speech left in ``track`` over frames ``span``, dB against the source:
    the track's per-cell gain over the source (as in :func:`leak_figures`) applied to the
    speech alone, with the loudness step's ``gain`` taken out."""
    a, b = span
    track_spec, source_spec = _stft(track[a:b] / gain), _stft(source[a:b])
    cell_gain = track_spec * source_spec.conj() / (source_spec.abs() ** 2 + 1e-9)
    speech_spec = _stft(speech[a:b])
    left = (cell_gain * speech_spec).abs().pow(2).sum() / speech_spec.abs().pow(2).sum()
    return 10 * math.log10(float(left))


@pytest.mark.model
@pytest.mark.parametrize("music_db", [0.0, -10.0])
def test_original_voices_are_30_db_under_the_dub(tmp_path, music_db):
    """Speech over music (equal level: the hard case; 10 dB under: a film's usual mix),
    separated, and one dub line over the speech. The dub line's audio is silence of the
    line's length: the voice is only added to the bed, so what is left under it is the bed
    alone, ducked. With the defaults the original speech is 30 dB or more down there; the
    broadband duck alone leaves it short of that at equal level."""
    import mix
    from conftest import default_config

    rate = 48_000
    speech = speech_track(rate, 9.0)
    speech[: int(1.0 * rate)] = 0.0  # music alone for a second: the loudness reference
    music = music_track(rate, 9.0, 2).mean(axis=1)
    music *= np.sqrt(np.mean(speech[speech != 0] ** 2) / np.mean(music**2)) * 10 ** (music_db / 20)
    scale = 0.5 / np.abs(speech + music).max()
    speech, music = speech * scale, music * scale
    source = np.repeat((speech + music)[:, None], 2, axis=1).astype(np.float32)
    sf.write(tmp_path / "source.wav", source, rate, subtype="PCM_24")
    separation.separate_file(tmp_path / "source.wav", tmp_path / "bed.wav")

    tts = tmp_path / "tts"
    tts.mkdir()
    line_s = 7.5
    sf.write(tts / "0001.wav", np.zeros(int(line_s * 24_000), np.float32), 24_000,
             subtype="PCM_16")
    (tts / "lines.json").write_text(json.dumps([
        {"id": "0001", "speaker": "SPEAKER_00", "start": 1.2, "end": 1.2 + line_s,
         "text": "line", "wav": "0001.wav", "duration_s": line_s, "sample_rate": 24_000}]))

    def leak_under_line(**overrides) -> float:
        out = tmp_path / "-".join(f"{k}{v}" for k, v in overrides.items())
        settings = {**default_config()["mix"], **overrides}
        mix.run(tmp_path / "bed.wav", tts, out / "dub.wav", out / "fit.json", settings)
        track, written_rate = sf.read(out / "dub.wav", dtype="float64", always_2d=True)
        assert written_rate == rate
        track = track.mean(axis=1)
        reference = slice(int(0.2 * rate), int(0.9 * rate))  # music alone, not ducked
        gain = float(track[reference] @ music[reference] / (music[reference] @ music[reference]))
        span = (int(1.6 * rate), int((1.2 + line_s - 0.4) * rate))  # fully ducked
        return _under_line_leak_db(track, speech + music, speech, gain, span)

    figures = {"defaults": leak_under_line(),
               "broadband duck only": leak_under_line(band_duck_db=0)}
    print(music_db, figures)
    assert figures["defaults"] <= -30.0
    assert figures["broadband duck only"] > figures["defaults"] + 5.0


# --- DTLN (mix.separation: dtln) -------------------------------------------------------

def effects_track(rate: int, seconds: float) -> np.ndarray:
    """Mono effects: a 50 Hz hum under bursts of broadband noise (rain, traffic, a crowd)."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    bursts = np.random.default_rng(0).normal(size=n) * (np.sin(2 * np.pi * 0.3 * t) > 0.3)
    return (0.5 * bursts + 0.5 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)


def test_dtln_missing_model_is_one_sentence(tmp_path):
    from dubflow import dtln

    with pytest.raises(ModelError) as error:
        dtln.check_model(tmp_path / "dtln")
    message = str(error.value)
    assert "model_1.onnx" in message and "make setup" in message and "\n" not in message
    (tmp_path / "dtln").mkdir()
    for name in dtln.FILES:
        (tmp_path / "dtln" / name).write_bytes(b"not a model")
    with pytest.raises(ModelError, match="damaged"):
        dtln.check_model(tmp_path / "dtln")


def test_dtln_model_check_trusts_its_stamp_only_for_untouched_files(tmp_path):
    """The stamp spares a hash per run; a damaged stamp only costs the hash, and a file
    changed in place (same size) is caught."""
    import shutil

    from dubflow import dtln
    from dubflow.model_stamp import STAMP_FILE

    folder = tmp_path / "dtln"
    shutil.copytree(separation_models() / "dtln", folder)
    dtln.check_model(folder)
    (folder / STAMP_FILE).write_text("{not json")
    dtln.check_model(folder)
    data = bytearray((folder / "model_1.onnx").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model_1.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model_1.onnx is damaged .*make setup"):
        dtln.check_model(folder)


@pytest.mark.model
def test_dtln_takes_the_speech_out_of_effects_and_keeps_them(tmp_path):
    """Speech over effects at the same level, stereo 44.1 kHz, through the stage itself:
    most of the speech leaves the bed and the effects stay (Spleeter, a music model,
    takes much more of them with it)."""
    import separate

    rate = 44_100
    speech = np.repeat(speech_track(rate, 12.0)[:, None], 2, axis=1)
    effects = np.repeat(effects_track(rate, 12.0)[:, None], 2, axis=1)
    effects *= np.sqrt(np.mean(speech**2) / np.mean(effects**2))
    scale = 0.5 / np.abs(speech + effects).max()
    speech, effects = speech * scale, effects * scale
    sf.write(tmp_path / "source.wav", speech + effects, rate, subtype="FLOAT")
    stats = separate.run(tmp_path / "source.wav", tmp_path / "bed.wav",
                         tmp_path / "separation.json", "dtln", threads=1,
                         dtln_model=separation_models() / "dtln")
    bed, _ = sf.read(tmp_path / "bed.wav", dtype="float32", always_2d=True)
    figures = leak_figures(speech + effects, speech, effects, bed)
    print(figures, stats)
    assert figures["speech_leak_db"] <= -15.0  # measured -18.8
    assert figures["music_loss_db"] <= -15.0  # the effects kept: measured -18.4
    assert stats["method"] == "dtln" and stats["bleed_db"] is not None and stats["bleed_db"] < -10


@pytest.mark.model
def test_dtln_takes_the_speech_from_the_centre_of_51(tmp_path):
    """5.1 with the dialogue in the centre channel only: the speech leaves the centre,
    the other channels keep what they had; rate, channels and length are the source's."""
    from dubflow import dtln

    rate = 48_000
    speech = speech_track(rate, 8.0)
    effects = effects_track(rate, 8.0)
    effects *= 0.3 * np.sqrt(np.mean(speech**2) / np.mean(effects**2))
    source = np.repeat(effects[:, None], 6, axis=1)
    source[:, 2] += speech
    source = source[:-77]  # not a whole number of DTLN blocks
    vocals = dtln.separate_vocals(source, rate, folder=separation_models() / "dtln")
    assert vocals.shape == source.shape
    bed = source - vocals
    centre_left = si_sdr(bed[:, 2], effects[:-77])  # what is left in the centre: the effects
    print("centre bed vs effects SI-SDR", centre_left, np.abs(vocals[:, [0, 1, 3, 4, 5]]).max())
    assert centre_left > 5.0  # with the speech still in it: 20*log10(0.3) ~ -10 dB
    assert np.abs(vocals[:, [0, 1, 3, 4, 5]]).max() < 0.05 * np.abs(vocals[:, 2]).max()


def separation_models() -> Path:
    return Path(__file__).resolve().parents[1] / "models"
