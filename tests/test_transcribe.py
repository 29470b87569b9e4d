"""Transcription with the real Whisper models on real (Piper) speech."""

import json

import numpy as np

import pytest

import transcribe
from conftest import BASE, TEST_LINES, default_asr
from demo_media import DEMO_LINES, speech_track, word_error_rate
from dubflow.errors import InputError, ModelError
from extract import extract
from dubflow.ffmpeg_safe import file_arg, run_ffmpeg
from dubflow.wav import ANALYSIS_RATE, read_analysis_wav

pytestmark = pytest.mark.model  # loads Whisper


@pytest.fixture(scope="module")
def speech_wav(speech_video, tmp_path_factory):
    video, spoken = speech_video
    out = tmp_path_factory.mktemp("tr")
    extract(video, out / "audio.wav", out / "source.wav")
    return out / "audio.wav", spoken


def test_words_and_times_match_what_was_spoken(speech_wav, tiny_asr, tmp_path):
    wav, spoken = speech_wav
    result = transcribe.run(wav, tmp_path / "transcript.json", tiny_asr, "auto", threads=2)
    assert result.language == "en" and result.language_source == "detected"
    assert result.language_probability > 0.5
    segments = [s.__dict__ for s in result.segments]
    assert word_error_rate(TEST_LINES, segments) <= 0.10
    words = [w for s in result.segments for w in s.words]
    assert all(0 <= w.probability <= 1 and w.start <= w.end for w in words)
    # every word lies inside the span of the line that contains it (±0.5 s)
    first_line_words = len(TEST_LINES[0].split())
    assert abs(words[0].start - spoken[0].start) < 0.5
    assert abs(words[first_line_words].start - spoken[1].start) < 0.5
    saved = json.loads((tmp_path / "transcript.json").read_text())
    assert set(saved["segments"][0]) >= {"start", "end", "text", "words", "speaker",
                                         "avg_logprob", "no_speech_prob", "low_confidence"}


def test_base_model_on_the_demo_lines(tmp_path, tiny_asr):
    """The default multilingual model meets the demo's WER bound on the demo script."""
    speech_track(DEMO_LINES, tmp_path / "demo22k.wav")
    run_ffmpeg(["-i", file_arg(tmp_path / "demo22k.wav"), "-ar", "16000",
                file_arg(tmp_path / "demo.wav")], stage="test", path=tmp_path / "demo22k.wav")
    asr = dict(tiny_asr, model=str(BASE))
    result = transcribe.transcribe(tmp_path / "demo.wav", asr, "auto", threads=2)
    assert result.language == "en"
    assert word_error_rate(DEMO_LINES, [s.__dict__ for s in result.segments]) <= 0.10


def test_forced_language_is_recorded(speech_wav, tiny_asr):
    result = transcribe.transcribe(speech_wav[0], tiny_asr, "en", threads=2)
    assert result.language_source == "configured" and result.language_probability is None


def test_silence_gives_an_empty_transcript(silent_video, tiny_asr, tmp_path):
    extract(silent_video, tmp_path / "a.wav", tmp_path / "s.wav")
    result = transcribe.transcribe(tmp_path / "a.wav", tiny_asr, "auto", threads=2)
    assert result.segments == [] and result.language == "und"


def test_missing_model_folder(tmp_path, tiny_asr, speech_wav):
    with pytest.raises(ModelError, match="make setup"):
        transcribe.transcribe(speech_wav[0], dict(tiny_asr, model=str(tmp_path / "no")), "auto")


def test_wrong_sample_rate_is_refused(tmp_path, tiny_asr):
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "x.wav", np.zeros(44100), 44100)
    with pytest.raises(InputError, match="44100 Hz"):
        transcribe.transcribe(tmp_path / "x.wav", tiny_asr)


def test_glossary_feeds_hotwords_and_prompt(tmp_path):
    glossary = tmp_path / "terms.txt"
    glossary.write_text("# the show's names\nAmélie\nMontmartre  # a place\n\n")
    prompt, hotwords = transcribe.decoding_hints(default_asr(glossary=str(glossary),
                                                             hotwords="Nino"))
    assert hotwords == "Nino Amélie Montmartre" and prompt == "Amélie, Montmartre."
    prompt, _ = transcribe.decoding_hints(default_asr(glossary=str(glossary),
                                                      initial_prompt="Hi."))
    assert prompt == "Hi."
    assert transcribe.decoding_hints(default_asr()) == (None, None)
    with pytest.raises(InputError, match="asr.glossary"):
        transcribe.decoding_hints(default_asr(glossary=str(tmp_path / "missing.txt")))


def test_windows_cut_long_audio_in_its_quietest_spots():
    rate = ANALYSIS_RATE
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, 25 * 60 * rate).astype(np.float32)  # 25 minutes of "speech"
    for quiet_at in (9 * 60 + 50, 20 * 60 + 12):  # a pause near each 10-minute mark
        audio[quiet_at * rate: (quiet_at + 1) * rate] = 0
    cuts = transcribe.windows(audio)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))  # contiguous, nothing lost
    assert [round(end / rate) for _, end in cuts[:-1]] == [9 * 60 + 50, 20 * 60 + 12]
    assert transcribe.windows(audio[: 14 * 60 * rate]) == [(0, 14 * 60 * rate)]


def test_windowed_transcription_keeps_words_and_absolute_times(speech_wav, tiny_asr,
                                                               monkeypatch):
    """The speech cut into windows near the pause between its lines: same words, same times."""
    wav, spoken = speech_wav
    whole = transcribe.transcribe(wav, tiny_asr, "auto", threads=2)
    monkeypatch.setattr(transcribe, "WINDOW_S", (spoken[0].end + spoken[1].start) / 2)
    monkeypatch.setattr(transcribe, "CUT_SEARCH_S", 1.0)
    cut = transcribe.transcribe(wav, tiny_asr, "auto", threads=2)
    assert len(transcribe.windows(read_analysis_wav(wav, "transcribe"))) > 1
    assert cut.language == whole.language == "en"
    assert word_error_rate(TEST_LINES, [s.__dict__ for s in cut.segments]) <= 0.10
    first = [w for s in cut.segments for w in s.words][0]
    assert abs(first.start - spoken[0].start) < 0.5
    second_line = [w for s in cut.segments for w in s.words][len(TEST_LINES[0].split())]
    assert abs(second_line.start - spoken[1].start) < 0.5
