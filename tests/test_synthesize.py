"""Synthesis with the real Piper voice and the real espeak-ng: voices, cache, folder.

Every test has its own cache folder (tmp_path), so nothing depends on test order; the
Piper voice itself is loaded once per process (tts_backends.load_piper).
"""

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import synthesize
from dubflow import tts_backends as tb
from dubflow import voices
from dubflow.errors import ConfigError, InputError, ModelError

EN = ["Good morning. The train is leaving soon.", "Please remember your ticket.",
      "The weather is cold today."]
PT = ["Bom dia a todos, obrigado por terem vindo.", "O comboio parte daqui a pouco."]
HAS_COQUI = importlib.util.find_spec("TTS") is not None


def write_translation(path: Path, texts: list[str], language: str,
                      speakers: list[str] | None = None) -> Path:
    lines = [{"id": f"{i + 1:04d}", "speaker": (speakers or ["SPEAKER_00"] * len(texts))[i],
              "start": 3.0 * i + 1.0, "end": 3.0 * i + 3.5, "source": "...", "text": text,
              "edited": False} for i, text in enumerate(texts)]
    path.write_text(json.dumps({"source_language": "xx", "target_language": language,
                                "backend": "test", "model": "test", "lines": lines}))
    return path


def tts_config(tmp_path: Path, **overrides) -> dict:
    """espeak-ng unless a test asks for another backend: it is the fastest, and the voice
    machinery (slots, variants, cache) is the same for all; `auto` (Kokoro) has its tests."""
    return {"backend": "espeak", "voices": {}, "piper_voices": {}, "speed": 1.0,
            "max_speed_boost": 1.0,  # no second, faster take unless a test asks for one
            "cache_dir": str(tmp_path / "cache"), **overrides}


def median_f0(audio: np.ndarray, rate: int) -> float:
    """Median pitch of the voiced 40 ms frames (autocorrelation, 60-400 Hz)."""
    n, found = int(0.04 * rate), []
    for i in range(0, len(audio) - n, n // 2):
        x = audio[i:i + n] - audio[i:i + n].mean()
        if np.sqrt(np.mean(x ** 2)) < 0.02:
            continue
        c = np.correlate(x, x, "full")[n - 1:]
        lo, hi = int(rate / 400), int(rate / 60)
        k = lo + int(np.argmax(c[lo:hi]))
        if c[k] > 0.5 * c[0]:
            found.append(rate / k)
    return float(np.median(found))


# ---------------------------------------------------------------------------------------
# The stage on real voices
# ---------------------------------------------------------------------------------------


@pytest.mark.model
def test_english_lines_with_piper(tmp_path):
    source = write_translation(tmp_path / "translation.json", [EN[0], "", EN[1]], "en")
    out = tmp_path / "work" / "tts"
    entries = synthesize.run(source, out, "en", tts_config(tmp_path, backend="piper"), threads=2)
    assert sorted(p.name for p in out.iterdir()) == ["0001.wav", "0003.wav", "lines.json",
                                                     "voices.json"]
    assert json.loads((out / "lines.json").read_text()) == entries
    assert [e["wav"] for e in entries] == ["0001.wav", None, "0003.wav"]
    for entry in (entries[0], entries[2]):
        assert entry["voice"] == "piper:joe" and entry["backend"] == "piper"
        assert entry["cached"] is False and len(entry["cache_key"]) == 64
        info = sf.info(str(out / entry["wav"]))
        assert info.channels == 1 and info.samplerate == entry["sample_rate"] == 22050
        assert abs(info.frames / info.samplerate - entry["duration_s"]) < 1e-3
        assert 0.8 < entry["duration_s"] < 4.0
        audio, _ = sf.read(str(out / entry["wav"]))
        assert np.max(np.abs(audio)) > 0.3  # speech at a normal level, not silence
    assert entries[1]["duration_s"] is None and entries[1]["text"] == ""
    # the outputs are hard links into the cache, not copies, and read-only
    assert (out / "0001.wav").stat().st_nlink == 2
    assert (out / "0001.wav").stat().st_mode & 0o222 == 0
    assert synthesize.cache_path(tmp_path / "cache", entries[0]["cache_key"]).is_file()


def test_portuguese_lines_with_espeak(tmp_path):
    source = write_translation(tmp_path / "translation.json", PT, "pt")
    entries = synthesize.run(source, tmp_path / "tts", "pt", tts_config(tmp_path))
    assert [e["voice"] for e in entries] == ["espeak:pt-br", "espeak:pt-br"]
    for entry in entries:
        info = sf.info(str(tmp_path / "tts" / entry["wav"]))
        assert info.samplerate == 22050 and info.channels == 1
        assert abs(info.frames / info.samplerate - entry["duration_s"]) < 1e-3
        assert entry["duration_s"] > 1.0


def test_two_speakers_get_two_audibly_different_voices(tmp_path):
    text = "Bom dia a todos, obrigado por terem vindo tão cedo hoje."
    source = write_translation(tmp_path / "t.json", [text, text], "pt",
                               ["SPEAKER_00", "SPEAKER_01"])
    entries = synthesize.run(source, tmp_path / "tts", "pt", tts_config(tmp_path))
    assert entries[0]["voice"] != entries[1]["voice"]
    assert entries[0]["cache_key"] != entries[1]["cache_key"]
    pitches = [median_f0(*sf.read(str(tmp_path / "tts" / e["wav"]), dtype="float32"))
               for e in entries]
    assert pitches[1] > 1.5 * pitches[0]  # a male and a female voice, an octave apart


@pytest.mark.model
def test_auto_voices_two_english_speakers_with_two_kokoro_voices(tmp_path):
    source = write_translation(tmp_path / "t.json", EN[:2], "en", ["SPEAKER_00", "SPEAKER_01"])
    entries = synthesize.run(source, tmp_path / "tts", "en", tts_config(tmp_path, backend="auto"))
    assert all(e["voice"].startswith("kokoro:") for e in entries)
    assert entries[0]["voice"] != entries[1]["voice"]
    assert all(sf.info(str(tmp_path / "tts" / e["wav"])).samplerate == 24000 for e in entries)
    report = json.loads((tmp_path / "tts" / "voices.json").read_text())
    assert set(report) == {"SPEAKER_00", "SPEAKER_01"}
    assert all(v["voice_f0_hz"] for v in report.values())


@pytest.mark.model
def test_same_input_twice_gives_identical_bytes_from_cache(tmp_path, caplog):
    source = write_translation(tmp_path / "t.json", EN[:2], "en")
    tts = tts_config(tmp_path, backend="piper")
    first = synthesize.run(source, tmp_path / "a", "en", tts)
    with caplog.at_level(logging.INFO, logger="synthesize"):
        second = synthesize.run(source, tmp_path / "b", "en", tts)
    assert all(e["cached"] for e in second)
    assert "2 lines: 0 synthesized, 2 from cache" in caplog.text
    for a, b in zip(first, second):
        assert (tmp_path / "a" / a["wav"]).read_bytes() == (tmp_path / "b" / b["wav"]).read_bytes()
    # Piper itself is repeatable (noise at 0): an empty cache gives the same bytes too.
    fresh = synthesize.run(source, tmp_path / "c", "en", tts_config(tmp_path / "other", backend="piper"))
    assert not any(e["cached"] for e in fresh)
    assert (tmp_path / "c" / "0001.wav").read_bytes() == (tmp_path / "a" / "0001.wav").read_bytes()


@pytest.mark.model
def test_one_line_edit_synthesizes_one_line(tmp_path, caplog):
    tts = tts_config(tmp_path)
    source = write_translation(tmp_path / "t.json", EN, "en")
    before = synthesize.run(source, tmp_path / "tts", "en", tts)
    edited = [EN[0], "Please remember your umbrella.", EN[2]]
    write_translation(source, edited, "en")
    with caplog.at_level(logging.INFO, logger="synthesize"):
        after = synthesize.run(source, tmp_path / "tts", "en", tts)
    assert [e["cached"] for e in after] == [True, False, True]
    assert "3 lines: 1 synthesized, 2 from cache" in caplog.text
    assert after[1]["cache_key"] != before[1]["cache_key"]
    assert [a["cache_key"] for a in after[::2]] == [b["cache_key"] for b in before[::2]]
    assert json.loads((tmp_path / "tts" / "lines.json").read_text())[1]["text"] == edited[1]


def test_repeated_line_is_made_once(tmp_path):
    source = write_translation(tmp_path / "t.json", ["Yes.", "Yes."], "en")
    entries = synthesize.run(source, tmp_path / "tts", "en", tts_config(tmp_path), threads=2)
    assert [e["cached"] for e in entries] == [False, True]
    assert entries[0]["cache_key"] == entries[1]["cache_key"]


def test_speed_changes_duration_and_key(tmp_path):
    source = write_translation(tmp_path / "t.json", PT[:1], "pt")
    normal = synthesize.run(source, tmp_path / "a", "pt", tts_config(tmp_path))[0]
    fast = synthesize.run(source, tmp_path / "b", "pt", tts_config(tmp_path, speed=1.5))[0]
    assert fast["cache_key"] != normal["cache_key"]
    assert fast["duration_s"] < 0.8 * normal["duration_s"]


@pytest.mark.model
def test_piper_backend_shifts_the_voice_for_a_second_speaker(tmp_path):
    source = write_translation(tmp_path / "t.json", [EN[0], EN[0]], "en",
                               ["SPEAKER_00", "SPEAKER_01"])
    entries = synthesize.run(source, tmp_path / "tts", "en", tts_config(tmp_path, backend="piper"))
    assert [e["voice"] for e in entries] == ["piper:joe", "piper:joe@shift=1.3"]
    f0 = [median_f0(*sf.read(str(tmp_path / "tts" / e["wav"]), dtype="float32")) for e in entries]
    assert 1.15 < f0[1] / f0[0] < 1.45
    assert abs(entries[1]["duration_s"] / entries[0]["duration_s"] - 1) < 0.15  # same tempo


# ---------------------------------------------------------------------------------------
# The output folder
# ---------------------------------------------------------------------------------------


def test_empty_translation_gives_empty_folder(tmp_path):
    source = write_translation(tmp_path / "t.json", [], "pt")
    assert synthesize.run(source, tmp_path / "tts", "pt", tts_config(tmp_path)) == []
    assert sorted(p.name for p in (tmp_path / "tts").iterdir()) == ["lines.json", "voices.json"]
    assert json.loads((tmp_path / "tts" / "lines.json").read_text()) == []


def test_failure_on_line_two_leaves_no_partial_folder(tmp_path, monkeypatch):
    source = write_translation(tmp_path / "t.json", PT, "pt")
    out = tmp_path / "work" / "tts"
    synthesize.run(source, out, "pt", tts_config(tmp_path))
    old = (out / "lines.json").read_text()
    write_translation(source, [PT[0] + " Hoje.", PT[1] + " Amanhã."], "pt")
    calls = []

    def fail_on_second(self, text, spec, speed=1.0):
        calls.append(text)
        if len(calls) == 2:
            raise RuntimeError("killed on line 2")
        return real(self, text, spec, speed)

    real = tb.ESpeakBackend.synthesize
    monkeypatch.setattr(tb.ESpeakBackend, "synthesize", fail_on_second)
    with pytest.raises(RuntimeError, match="line 2"):
        synthesize.run(source, out, "pt", tts_config(tmp_path))
    assert sorted(p.name for p in out.parent.iterdir()) == ["tts"]  # no .tts.*.partial
    assert (out / "lines.json").read_text() == old
    # the line made before the failure is in the cache: the re-run only makes line 2
    monkeypatch.setattr(tb.ESpeakBackend, "synthesize", real)
    entries = synthesize.run(source, out, "pt", tts_config(tmp_path))
    assert [e["cached"] for e in entries] == [True, False]


def test_stale_partial_folder_of_a_killed_job_is_removed(tmp_path):
    stale = tmp_path / ".tts.abc123xy.partial"
    stale.mkdir()
    (stale / "0001.wav").write_bytes(b"half")
    source = write_translation(tmp_path / "t.json", [], "pt")
    synthesize.run(source, tmp_path / "tts", "pt", tts_config(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json", "tts"]


# ---------------------------------------------------------------------------------------
# Bad input and bad config
# ---------------------------------------------------------------------------------------


def test_unknown_backend_in_a_voice_names_the_key(tmp_path):
    source = write_translation(tmp_path / "t.json", PT, "pt", ["SPEAKER_00", "SPEAKER_01"])
    tts = tts_config(tmp_path, voices={"pt": {"SPEAKER_01": "festival:pt"}})
    for call in (lambda: voices.check_voices("pt", tts),
                 lambda: synthesize.run(source, tmp_path / "tts", "pt", tts)):
        with pytest.raises(ConfigError, match=r"tts\.voices\.pt\.SPEAKER_01.*piper:, espeak: or coqui:"):
            call()
    assert not (tmp_path / "tts").exists()


def test_missing_piper_file_names_the_key(tmp_path):
    tts = tts_config(tmp_path, voices={"pt": {"SPEAKER_02": f"piper:{tmp_path}/none.onnx"}})
    with pytest.raises(ConfigError, match=r"tts\.voices\.pt\.SPEAKER_02 .*does not exist"):
        voices.check_voices("pt", tts)
    tts = tts_config(tmp_path, piper_voices={"ana": str(tmp_path / "ana.onnx")})
    with pytest.raises(ConfigError, match=r"tts\.piper_voices\.ana"):
        voices.check_voices("pt", tts)
    with pytest.raises(ConfigError, match="not installed"):
        voices.check_voices("en", tts_config(tmp_path, voices={"en": {"default": "piper:nobody"}}))


def test_piper_voice_in_the_wrong_language(tmp_path):
    tts = tts_config(tmp_path, voices={"pt": {"SPEAKER_00": "piper:joe"}})
    with pytest.raises(ConfigError, match="speaks 'en', not 'pt'"):
        voices.check_voices("pt", tts)


def test_bad_espeak_voice_and_parameters(tmp_path):
    for spec, message in [("espeak:pt+zz9", "does not have"), ("espeak:qq-nonsense", "does not have"),
                          ("espeak:pt@pitch=300", "from 0 to 100"),
                          ("espeak:pt@shift=1.2", "take only pitch, rate")]:
        with pytest.raises(ConfigError, match=message):
            voices.check_voices("pt", tts_config(tmp_path, voices={"pt": {"SPEAKER_00": spec}}))


def test_language_espeak_does_not_know(tmp_path):
    with pytest.raises(ConfigError, match="espeak-ng has no voice for the language 'xx'"):
        voices.check_voices("xx", tts_config(tmp_path))
    source = write_translation(tmp_path / "t.json", ["hello"], "xx")
    with pytest.raises(ConfigError, match="'xx'"):
        synthesize.run(source, tmp_path / "tts", "xx", tts_config(tmp_path))
    with pytest.raises(ConfigError, match="no Piper voice speaks 'pt'"):
        voices.check_voices("pt", tts_config(tmp_path, backend="piper"))


def test_checks_pass_for_the_defaults(tmp_path):
    for language in ("en", "pt", "es", "de", "fr", "zh"):
        voices.check_voices(language, tts_config(tmp_path))
    voices.check_voices("en", tts_config(tmp_path, backend="piper"))
    voices.check_voices("pt", tts_config(tmp_path, backend="espeak", voices={
        "pt": {"SPEAKER_00": "espeak:pt-br+m3", "default": "espeak:pt@pitch=60,rate=160"}}))


def test_bad_config_values(tmp_path):
    with pytest.raises(ConfigError, match="tts.backend"):
        voices.check_voices("pt", tts_config(tmp_path, backend="festival"))
    with pytest.raises(ConfigError, match="tts.speed"):
        voices.check_voices("pt", tts_config(tmp_path, speed=0))


def test_bad_translation_files(tmp_path):
    tts = tts_config(tmp_path)
    with pytest.raises(InputError, match=r"missing\.json is missing .*run the translate stage"):
        synthesize.run(tmp_path / "missing.json", tmp_path / "tts", "pt", tts)
    (tmp_path / "garbled.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot be read as JSON"):
        synthesize.run(tmp_path / "garbled.json", tmp_path / "tts", "pt", tts)
    (tmp_path / "bad.json").write_text('{"lines": 3}')
    with pytest.raises(InputError, match="no 'lines' list"):
        synthesize.run(tmp_path / "bad.json", tmp_path / "tts", "pt", tts)
    (tmp_path / "dup.json").write_text(json.dumps({"lines": [{"id": "1", "text": "a"}] * 2}))
    with pytest.raises(InputError, match="used twice"):
        synthesize.run(tmp_path / "dup.json", tmp_path / "tts", "pt", tts)
    (tmp_path / "path.json").write_text(json.dumps({"lines": [{"id": "../x", "text": "a"}]}))
    with pytest.raises(InputError, match="cannot name a file"):
        synthesize.run(tmp_path / "path.json", tmp_path / "tts", "pt", tts)
    assert not (tmp_path / "tts").exists()


# ---------------------------------------------------------------------------------------
# Voice choice (no synthesis)
# ---------------------------------------------------------------------------------------


def test_voices_follow_speaker_numbers_and_never_repeat(tmp_path):
    tts = voices.settings(tts_config(tmp_path))
    alone = voices.assign(["SPEAKER_03"], "pt", tts)
    together = voices.assign(["SPEAKER_00", "SPEAKER_03", "SPEAKER_07"], "pt", tts)
    assert alone["SPEAKER_03"] == together["SPEAKER_03"]  # stable whoever else speaks
    many = voices.assign([f"SPEAKER_{i:02d}" for i in range(40)], "pt", tts)
    assert len(set(many.values())) == 40
    assert many["SPEAKER_00"] == "espeak:pt-br" and many["SPEAKER_01"] == "espeak:pt-br+f3"


def test_mapped_voices_are_kept_out_of_the_automatic_list(tmp_path):
    tts = voices.settings(tts_config(tmp_path, voices={"pt": {"SPEAKER_05": "espeak:pt-br+f3"}}))
    chosen = voices.assign(["SPEAKER_01", "SPEAKER_05"], "pt", tts)
    assert chosen == {"SPEAKER_05": "espeak:pt-br+f3", "SPEAKER_01": "espeak:pt-br+m7@pitch=20"}


def test_default_voice_starts_the_list(tmp_path):
    tts = voices.settings(tts_config(tmp_path, voices={"pt": {"default": "espeak:pt"}}))
    chosen = voices.assign(["SPEAKER_00", "SPEAKER_01", "narrator"], "pt", tts)
    assert chosen["SPEAKER_00"] == "espeak:pt"
    assert chosen["SPEAKER_01"] == "espeak:pt+f3"  # variants of the default's voice
    assert len(set(chosen.values())) == 3


def test_speaker_slots():
    assert voices.speaker_slots(["SPEAKER_02", "SPEAKER_00"]) == {"SPEAKER_00": 0, "SPEAKER_02": 2}
    slots = voices.speaker_slots(["SPEAKER_01", "SPEAKER_1", "bob"])
    assert sorted(slots.values()) == [0, 1, 2] and slots["SPEAKER_01"] == 1


def test_piper_backend_runs_out_of_voices_with_a_clear_error(tmp_path):
    tts = voices.settings(tts_config(tmp_path, backend="piper"))
    with pytest.raises(ConfigError, match=r"too few for speaker SPEAKER_13.*tts\.voices\.en"):
        voices.assign([f"SPEAKER_{i:02d}" for i in range(14)], "en", tts)


def test_spec_strings():
    assert str(tb.parse_spec(" espeak-ng:pt-br+f3@rate=160,pitch=60 ")) == \
        "espeak:pt-br+f3@pitch=60,rate=160"
    assert str(tb.parse_spec("coqui")) == "coqui"
    assert tb.parse_spec("coqui:Ana Florence").name == "Ana Florence"
    assert tb.parse_spec("piper:/v/a@b.onnx").name == "/v/a@b.onnx"
    assert tb.parse_spec("piper:x@speaker=narrator").param("speaker") == "narrator"
    for bad in ("", "espeak:", "festival:pt", "piper:joe@pitch=3", "piper:joe@shift=9"):
        with pytest.raises(ValueError):
            tb.parse_spec(bad)


# ---------------------------------------------------------------------------------------
# Coqui (optional)
# ---------------------------------------------------------------------------------------


def fake_coqui_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model": "vits"}')
    (folder / "model.pth").write_bytes(b"not really")
    return folder


def test_coqui_model_folder_missing(tmp_path):
    tts = tts_config(tmp_path, backend="coqui", coqui={"model_dir": str(tmp_path / "xtts")})
    with pytest.raises(ModelError, match=r"xtts \(config key tts\.coqui\.model_dir\) does not exist"):
        voices.check_voices("pt", tts)
    with pytest.raises(ModelError, match="tts.coqui.model_dir is not set"):
        voices.check_voices("pt", tts_config(tmp_path, backend="coqui"))


def test_coqui_model_that_does_not_speak_the_language(tmp_path):
    folder = fake_coqui_folder(tmp_path / "xtts")
    (folder / "config.json").write_text(json.dumps({"model": "xtts", "languages": ["en", "zh-cn"]}))
    tts = tts_config(tmp_path, backend="coqui", coqui={"model_dir": str(folder)})
    with pytest.raises(ConfigError, match="does not speak 'pt'"):
        voices.check_voices("pt", tts)
    with pytest.raises(ConfigError, match="does not speak 'pt'"):
        voices.check_voices("pt", tts_config(tmp_path, coqui={"model_dir": str(folder)},
                                                 voices={"pt": {"SPEAKER_00": "coqui"}}))
    if not HAS_COQUI:
        with pytest.raises(ModelError, match="coqui-tts"):
            voices.check_voices("zh", tts)  # 'zh' is XTTS's 'zh-cn'


@pytest.mark.skipif(HAS_COQUI, reason="coqui-tts is installed")
def test_coqui_not_installed_says_how_to_install(tmp_path):
    folder = fake_coqui_folder(tmp_path / "model")
    tts = tts_config(tmp_path, backend="coqui", coqui={"model_dir": str(folder)})
    with pytest.raises(ModelError, match=r'pip install -e "\.\[coqui\]"'):
        voices.check_voices("pt", tts)
    with pytest.raises(ModelError, match=r'pip install -e "\.\[coqui\]"'):
        tb.CoquiBackend(folder)
    source = write_translation(tmp_path / "t.json", PT, "pt")
    with pytest.raises(ModelError, match=r'pip install -e "\.\[coqui\]"'):
        synthesize.run(source, tmp_path / "tts", "pt", tts)
    assert not (tmp_path / "tts").exists()


def tiny_vits_folder(folder: Path) -> Path:
    """A randomly initialised two-speaker VITS, small enough to build in a test."""
    import torch
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    folder.mkdir(parents=True)
    (folder / "speakers.json").write_text(json.dumps({"ana": 0, "bruno": 1}))
    args = VitsArgs(
        hidden_channels=16, hidden_channels_ffn_text_encoder=32, num_layers_text_encoder=1,
        resblock_kernel_sizes_decoder=[3], resblock_dilation_sizes_decoder=[[1, 3, 5]],
        upsample_rates_decoder=[8, 8, 4], upsample_initial_channel_decoder=32,
        upsample_kernel_sizes_decoder=[16, 16, 8], num_layers_flow=1,
        num_layers_posterior_encoder=1, use_sdp=False, init_discriminator=False,
        use_speaker_embedding=True, speaker_embedding_channels=8,
        speakers_file=str(folder / "speakers.json"))
    config = VitsConfig(
        model_args=args, use_phonemes=False, text_cleaner="basic_cleaners",
        audio=BaseAudioConfig(sample_rate=16000, hop_length=256, win_length=1024,
                              fft_size=1024, num_mels=80),
        use_speaker_embedding=True, speakers_file=str(folder / "speakers.json"))
    torch.manual_seed(0)
    model = Vits(config)
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return folder


@pytest.mark.skipif(not HAS_COQUI, reason="coqui-tts (the optional [coqui] extra) is not installed")
def test_coqui_loads_a_local_vits_folder(tmp_path):
    folder = tiny_vits_folder(tmp_path / "vits")
    tts = tts_config(tmp_path, backend="coqui", coqui={"model_dir": str(folder)})
    voices.check_voices("en", tts)
    source = write_translation(tmp_path / "t.json", ["Hello there.", "How are you?"], "en",
                               ["SPEAKER_00", "SPEAKER_01"])
    entries = synthesize.run(source, tmp_path / "tts", "en", tts, threads=2)
    assert [e["voice"] for e in entries] == ["coqui:ana", "coqui:bruno"]
    for entry in entries:
        info = sf.info(str(tmp_path / "tts" / entry["wav"]))
        assert info.samplerate == 16000 and info.frames > 0
    again = synthesize.run(source, tmp_path / "tts2", "en", tts)
    assert all(e["cached"] for e in again)
    bad = tts_config(tmp_path, backend="coqui", coqui={"model_dir": str(folder)},
                     voices={"en": {"SPEAKER_00": "coqui:zoe"}})
    with pytest.raises(ConfigError, match="Coqui speaker 'zoe'"):
        synthesize.run(source, tmp_path / "tts3", "en", bad)


def test_clone_references_use_each_speakers_clean_speech(tmp_path):
    rate = 16000
    audio = np.zeros(40 * rate, dtype=np.float32)
    audio[: 20 * rate] = 0.1
    audio[20 * rate:] = -0.1
    sf.write(str(tmp_path / "audio.wav"), audio, rate, subtype="PCM_16")
    lines = [synthesize.Line("1", "A", 0.0, 5.0, "a"), synthesize.Line("2", "A", 6.0, 10.0, "b"),
             synthesize.Line("3", "B", 9.0, 12.0, "c"),  # overlaps A's line 2
             synthesize.Line("4", "B", 20.0, 22.0, "d"), synthesize.Line("5", "C", 30.0, 31.0, "e")]
    refs = synthesize.clone_references(lines, tmp_path / "audio.wav", tmp_path, ["A", "B", "C"])
    assert set(refs) == {"A"}  # B has 2 s of clean speech, C 1 s: too little to clone
    ref, _ = sf.read(str(refs["A"][0]))
    assert abs(len(ref) / rate - 5.2) < 0.01  # line 1 only (+ gap); line 2 overlaps B


def test_no_future_import_in_the_stage_script():
    """Snakemake's script: prepends a preamble, after which __future__ imports fail."""
    source = Path(synthesize.__file__).read_text()
    assert "from __future__" not in source
    assert 'if "snakemake" in globals():' in source


def test_finish_audio_trims_and_levels():
    rate = 22050
    tone = 0.05 * np.sin(2 * np.pi * 200 * np.arange(rate) / rate)
    padded = np.concatenate([np.zeros(rate // 2), tone, np.zeros(rate // 2)]).astype(np.float32)
    out = synthesize.finish_audio(padded, rate)
    assert abs(len(out) / rate - 1.06) < 0.01
    rms = 20 * np.log10(np.sqrt(np.mean(out ** 2)))
    assert abs(rms - synthesize.TARGET_RMS_DBFS) < 0.5
    assert len(synthesize.finish_audio(np.zeros(100, dtype=np.float32), rate)) > 0


def test_a_line_too_long_for_its_room_is_spoken_again_faster(tmp_path):
    """The first line has 1.2 s before the next starts; at its own pace it needs more, so
    the voice is asked for up to 1.25x; the second line has room and is left alone."""
    long_text = "Bom dia a todos, obrigado por terem vindo tão cedo hoje de manhã."
    path = tmp_path / "translation.json"
    lines = [{"id": "0001", "speaker": "SPEAKER_00", "start": 1.0, "end": 2.0,
              "source": "...", "text": long_text, "edited": False},
             {"id": "0002", "speaker": "SPEAKER_00", "start": 2.25, "end": 6.0,
              "source": "...", "text": "Sim.", "edited": False}]
    path.write_text(json.dumps({"target_language": "pt", "lines": lines}))
    plain = synthesize.run(path, tmp_path / "plain", "pt", tts_config(tmp_path))
    boosted = synthesize.run(path, tmp_path / "tts", "pt",
                             tts_config(tmp_path, max_speed_boost=1.25))
    assert "engine_speed" not in plain[0] and plain[0]["duration_s"] > 1.2 * 1.25
    assert boosted[0]["engine_speed"] == 1.25
    assert boosted[0]["duration_s"] < plain[0]["duration_s"] / 1.15
    assert "engine_speed" not in boosted[1]
    assert boosted[1]["duration_s"] == plain[1]["duration_s"]


@pytest.mark.model
def test_a_kokoro_line_predicted_too_long_is_spoken_faster_at_once(tmp_path, caplog):
    """Kokoro's own duration prediction picks the speed that fits: one synthesis per line,
    and the line lands within a few hundredths of a second of its room."""
    long_text = "Bom dia a todos, obrigado por terem vindo tão cedo hoje de manhã."
    path = tmp_path / "translation.json"
    lines = [{"id": "0001", "speaker": "SPEAKER_00", "start": 1.0, "end": 2.5,
              "source": "...", "text": long_text, "edited": False},
             {"id": "0002", "speaker": "SPEAKER_00", "start": 2.8, "end": 6.0,
              "source": "...", "text": "Sim.", "edited": False}]
    path.write_text(json.dumps({"target_language": "pt", "lines": lines}))
    tts = tts_config(tmp_path, backend="auto", max_speed_boost=1.3)
    with caplog.at_level(logging.INFO, logger="synthesize"):
        entries = synthesize.run(path, tmp_path / "tts", "pt", tts)
    assert entries[0]["engine_speed"] == pytest.approx(1.3) and "engine_speed" not in entries[1]
    assert "2 synthesized" in caplog.text and "0 of them synthesized a second time" in caplog.text


@pytest.mark.model
def test_a_kokoro_line_a_little_too_long_is_sped_up_just_enough(tmp_path, monkeypatch):
    """Between its own pace and the cap, the speed asked for is the slowest that fits."""
    from dubflow import kokoro_voice as kv

    text = "Vamos rever os números do trimestre antes da reunião com o cliente."
    tts = voices.settings(tts_config(tmp_path, backend="auto", max_speed_boost=1.3))
    engines = synthesize.Engines(tts, "pt", 1)
    voice = voices.resolve("kokoro:jf_nezumi", tts, "pt", "tts.voices.pt.default")
    pace = voice.spec.number("speed", 1.0)  # the voice's calibrated pace is speed 1.0
    timing = kv.timing(str(voice.model_path))
    natural = timing.seconds(text, "jf_nezumi", "pt", pace)
    room = natural / 1.15
    speed = synthesize.predicted_speed(text, room, voice, tts, engines)
    # Kokoro rounds each phoneme to whole 25 ms frames, so its length falls in steps:
    # asking for 1.15 gives less than 1/1.15 of the length, and the answer is a bit faster
    assert 1.15 <= speed < 1.3
    assert timing.seconds(text, "jf_nezumi", "pt", speed * pace) <= room
    assert timing.seconds(text, "jf_nezumi", "pt", (speed - 0.01) * pace) > room
    made, rate = engines.synthesize(voice, text, speed, None, 1)
    assert abs(len(synthesize.finish_audio(made, rate)) / rate - room) < 0.25
    assert synthesize.predicted_speed(text, natural + 0.1, voice, tts, engines) == 1.0
    # remembered: a re-run (after an edit elsewhere) does not predict this line again
    monkeypatch.setattr(kv, "timing", None)  # would fail if called
    assert synthesize.predicted_speed(text, room, voice, tts, engines) == speed


def test_kokoro_cache_key_names_the_served_graph(tmp_path):
    """Audio made by upstream's int8 graph is never reused for the float-convolution one:
    the voice identity (part of every line's key) is the served file's path, size and mtime."""
    from dubflow import kokoro_voice as kv

    tts = voices.settings(tts_config(tmp_path, backend="kokoro"))
    voice = voices.resolve("kokoro:jf_gongitsune", tts, "pt", "tts.voices.pt.default")
    assert kv.MODEL_FILE in voice.identity and kv.JOINED_FILE not in voice.identity
    key = synthesize.cache_key("Olá.", voice, 1.0, "pt")
    int8 = voices.Voice(voice.spec, voice.model_path, voice.config_path,
                        voice.identity.replace(kv.MODEL_FILE, kv.JOINED_FILE))
    assert synthesize.cache_key("Olá.", int8, 1.0, "pt") != key
